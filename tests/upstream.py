"""Tiny datasets written in exactly their upstream layouts, for the adapter tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

IN9_CLASSES = ("00_dog", "01_bird", "02_wheeled vehicle")


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A mid-bright, smooth-ish texture (JPEG-friendly), never near black."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(90, 200, size=3)
    wave = 30 * np.sin(x / rng.uniform(3, 6) + rng.uniform(0, 6))[..., None]
    return np.clip(base + wave + rng.normal(0, 4, (h, w, 3)), 60, 255).astype(np.uint8)


def ellipse_mask(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def save_jpeg(path: Path, image: np.ndarray, quality: int = 90, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, "JPEG", quality=quality, **kw)


def in9_object(seed: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """An image with a bright object (and a dark spot inside it) and the object's exact mask."""
    image = textured(h, w, seed)
    mask = ellipse_mask(h, w, h / 2 + seed % 3, w / 2 - seed % 4, h / 4, w / 4)
    image[mask] = (230, 60 + 20 * (seed % 5), 40)
    image[int(h / 2) : int(h / 2) + 2, int(w / 2) : int(w / 2) + 2] = 12  # dark object pixels: no_fg can't tell them
    return image, mask


def make_in9(root: Path, per_class: int = 2) -> dict[str, dict[str, np.ndarray]]:
    """A bg_challenge/ tree; returns the true object masks by split and key-ish (class, stem)."""
    truth: dict[str, dict[str, np.ndarray]] = {}
    seed = 0
    for c, folder in enumerate(IN9_CLASSES):
        for subset, n in (("train", per_class), ("val", 1)):
            for i in range(n):
                seed += 1
                stem = f"n0{c}_{subset}{i}"
                image, mask = in9_object(seed)
                save_jpeg(root / "train/original" / subset / folder / f"{stem}.JPEG", image)
                if subset == "train":  # val comes without no_fg, as a plain sample
                    no_fg = image.copy()
                    no_fg[mask] = 0
                    save_jpeg(root / "train/no_fg" / subset / folder / f"{stem}.JPEG", no_fg, quality=75)
                truth.setdefault(subset, {})[f"{folder}/{stem}"] = mask
        seed += 1
        stem = f"n0{c}_test"
        image, mask = in9_object(seed)
        other = IN9_CLASSES[(c + 1) % len(IN9_CLASSES)]
        names = {
            "original": f"{stem}.JPEG",
            "only_fg": f"{stem}.JPEG",
            "no_fg": f"{stem}.JPEG",
            "mixed_same": f"fg_{stem}_bg_n0{c}_x.JPEG",
            "mixed_rand": f"fg_{stem}_bg_n09_y.JPEG",
            "mixed_next": f"fg_{stem}_bg_n0{(c + 1) % 3}_{other[:2]}.JPEG",
        }
        for variant, name in names.items():
            pixels = image.copy()
            if variant != "original":
                pixels[~mask] = textured(40, 48, seed + 100)[~mask]
            save_jpeg(root / "test" / variant / "val" / folder / name, pixels)
            truth.setdefault(variant, {})[f"{folder}/{Path(name).stem}"] = mask
        npy = root / "test/fg_mask/val" / folder / f"{stem}.npy"
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, mask)
    return truth


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


WATERBIRDS_ROWS = [  # img_id, folder, y, split, place
    (1, "001.Black_footed_Albatross", 1, 0, 1),
    (2, "001.Black_footed_Albatross", 1, 0, 0),
    (3, "094.White_breasted_Nuthatch", 0, 0, 0),
    (4, "094.White_breasted_Nuthatch", 0, 0, 1),
    (5, "094.White_breasted_Nuthatch", 0, 1, 0),
    (6, "001.Black_footed_Albatross", 1, 1, 1),
    (7, "001.Black_footed_Albatross", 1, 2, 1),
    (8, "094.White_breasted_Nuthatch", 0, 2, 1),
]


WATERBIRDS_LEVELS = ((10, 8, 40), (9, 7, 127), (8, 6, 128), (7, 5, 255))  # (ry, rx, value), outermost first


def make_waterbirds(base: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """<base>/waterbird_complete95_forest2water2/ with metadata.csv, and <base>/segmentations/ (soft edges).

    Returns each image's segmentation values: nested ellipses of ``WATERBIRDS_LEVELS``, so a soft rim of 40 and 127
    (under half of 255: background) around the bird (128 and 255, the yellow pixels of the image)."""
    root = base / "waterbird_complete95_forest2water2"
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    levels = {}
    for img_id, folder, y, split, place in WATERBIRDS_ROWS:
        filename = f"{folder}/{folder.split('.')[1]}_{img_id:04d}.jpg"
        image = textured(30, 40, img_id)
        image[ellipse_mask(30, 40, 15, 12 + img_id, 8, 6)] = (250, 240, 20)
        save_jpeg(root / filename, image)
        soft = np.zeros((30, 40), np.uint8)
        for ry, rx, value in WATERBIRDS_LEVELS:
            soft[ellipse_mask(30, 40, 15, 12 + img_id, ry, rx)] = value
        seg = base / "segmentations" / Path(filename).with_suffix(".png")
        seg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(soft).save(seg)
        levels[img_id] = soft
        lines.append(f"{img_id},{filename},{y},{split},{place},/b/bamboo_forest/{img_id}.jpg")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root, levels


CCT_DECLARED = (256, 192)  # full resolution in the JSON; the files are 4x smaller


def cct_image(root: Path, image_id: str, seed: int) -> dict:
    save_jpeg(root / "eccv_18_all_images_sm" / f"{image_id}.jpg", textured(48, 64, seed))
    return {"id": image_id, "file_name": f"{image_id}.jpg", "width": 256, "height": 192, "location": 10 + seed % 2 * 10}


def make_cct(root: Path) -> Path:
    cats = [{"id": 1, "name": "deer"}, {"id": 30, "name": "empty"}, {"id": 5, "name": "fox"}]
    ids = ["5968c0f9-23d2-11e8-a6a3-ec086b02610b", "b-two-species", "c-no-box", "d-empty"]
    train = {
        "images": [cct_image(root, i, n) for n, i in enumerate(ids)],
        "annotations": [
            {"id": "a1", "image_id": ids[0], "category_id": 1, "bbox": [40, 40, 40, 20]},
            {"id": "a2", "image_id": ids[0], "category_id": 1, "bbox": [100, 80, 40, 40]},  # union with a1
            {"id": "b1", "image_id": ids[1], "category_id": 1, "bbox": [0, 0, 64, 64]},
            {"id": "b2", "image_id": ids[1], "category_id": 5, "bbox": [160, 96, 80, 80]},
            {"id": "c1", "image_id": ids[2], "category_id": 5},  # no bbox: a plain sample
            {"id": "d1", "image_id": ids[3], "category_id": 30},  # empty: dropped
        ],
        "categories": cats,
    }
    folder = root / "eccv_18_annotation_files"
    write_json(folder / "train_annotations.json", train)
    for split, image_id, seed in (("cis_val", "e-cis", 11), ("trans_test", "f-trans", 12)):
        write_json(
            folder / f"{split}_annotations.json",
            {
                "images": [cct_image(root, image_id, seed)],
                "annotations": [
                    {"id": f"{image_id}1", "image_id": image_id, "category_id": 5, "bbox": [20, 20, 60, 60]}
                ],
                "categories": cats,
            },
        )
    return root


# A camera-trap release with locations and empty frames, in the COCO Camera Traps layout of make_cct: per split, the
# images as (image id, location, category id), category 30 "empty". Each location's frames show its own background
# (``trap_background``); an animal is a bright box on it. In train (locations 10, 20, 30, 40): deer at 10, 20 and 40,
# fox at 20 and 30, bobcat only at 30; empty frames at 10 (two), 20 and 30 (two), none at 40. cis_val (location 10)
# and trans_test (location 50, a location train never has) hold an animal and an empty frame each.
CCT_TRAPS = {
    "train": [
        ("deer-10a", 10, 1),
        ("deer-10b", 10, 1),
        ("deer-20", 20, 1),
        ("deer-40", 40, 1),
        ("fox-20", 20, 5),
        ("fox-30", 30, 5),
        ("bobcat-30", 30, 7),
        ("empty-10a", 10, 30),
        ("empty-10b", 10, 30),
        ("empty-20", 20, 30),
        ("empty-30a", 30, 30),
        ("empty-30b", 30, 30),
    ],
    "cis_val": [("deer-10c", 10, 1), ("empty-10c", 10, 30)],
    "trans_test": [("fox-50", 50, 5), ("empty-50", 50, 30)],
}
CCT_TRAP_CATEGORIES = [{"id": 1, "name": "deer"}, {"id": 5, "name": "fox"}, {"id": 7, "name": "bobcat"}]
CCT_TRAP_BOX = [64, 48, 96, 72]  # [x, y, w, h] at the declared 256x192: pixels 16:40 x 12:30 of the 64x48 file


def trap_background(location: int, n: int) -> np.ndarray:
    """The view of camera ``location`` (its own texture), shifted a little per frame ``n``."""
    return np.roll(textured(48, 64, 1000 + location), 2 * n, axis=1)


def make_cct_traps(root: Path) -> Path:
    """<root>/eccv_18_all_images_sm/ and eccv_18_annotation_files/ of ``CCT_TRAPS`` (see there)."""
    folder = root / "eccv_18_annotation_files"
    cats = [*CCT_TRAP_CATEGORIES, {"id": 30, "name": "empty"}]
    for split, rows in CCT_TRAPS.items():
        images, annotations = [], []
        for n, (image_id, location, category) in enumerate(rows):
            pixels = trap_background(location, n)
            if category != 30:
                x, y, w, h = (v // 4 for v in CCT_TRAP_BOX)
                pixels[y : y + h, x : x + w] = (250, 200 - 40 * (category % 4), 30)
            save_jpeg(root / "eccv_18_all_images_sm" / f"{image_id}.jpg", pixels)
            images.append(
                {"id": image_id, "file_name": f"{image_id}.jpg", "width": 256, "height": 192, "location": location}
            )
            annotation = {"id": f"a-{image_id}", "image_id": image_id, "category_id": category}
            annotations.append(annotation if category == 30 else {**annotation, "bbox": CCT_TRAP_BOX})
        write_json(
            folder / f"{split}_annotations.json", {"images": images, "annotations": annotations, "categories": cats}
        )
    return root


def coco_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def make_coco(root: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """images/ and instances.json: a polygon, a compressed RLE, an uncompressed RLE, a bare box, no annotation."""
    images, truth = root / "images", {}
    for i in range(1, 6):
        save_jpeg(images / f"{i:012d}.jpg", textured(40, 50, i))
    ellipse = ellipse_mask(40, 50, 20, 25, 10, 15)
    truth[2] = ellipse
    square = np.zeros((40, 50), bool)
    square[5:15, 30:45] = True
    truth[3] = square
    uncompressed = {"size": [40, 50], "counts": [int(v) for v in _runs(square)]}
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]],
            "area": 200,
            "bbox": [10, 10, 20, 10],
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 7,
            "segmentation": [],
            "area": 20,
            "bbox": [40, 30, 5, 4],
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 2,
            "category_id": 7,
            "segmentation": coco_rle(ellipse),
            "area": float(ellipse.sum()),
            "bbox": [10, 10, 30, 20],
            "iscrowd": 0,
        },
        {
            "id": 4,
            "image_id": 3,
            "category_id": 3,
            "segmentation": uncompressed,
            "area": 150,
            "bbox": [30, 5, 15, 10],
            "iscrowd": 0,
        },
        {"id": 5, "image_id": 4, "category_id": 7, "area": 80, "bbox": [2, 3, 10, 8], "iscrowd": 0},
    ]
    write_json(
        root / "instances.json",
        {
            "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 50, "height": 40} for i in range(1, 6)],
            "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        },
    )
    return images, truth


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts: alternating run lengths of 0s and 1s in column-major order."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts


def make_folder(root: Path) -> tuple[Path, Path]:
    """root/{train,val}/{cat,dog}/ images, masks/ tree for some, boxes.csv for one, an empty val/dog folder."""
    for rel, seed in (("train/cat/a.jpg", 1), ("train/cat/b.png", 2), ("train/dog/c.jpg", 3), ("val/cat/d.jpg", 4)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(textured(30, 40, seed)).save(path)
    (root / "val/dog").mkdir(parents=True)
    masks = root.parent / "masks"
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 7
    (masks / "train/cat").mkdir(parents=True)
    Image.fromarray(mask).save(masks / "train/cat/a.png")
    (root / "boxes.csv").write_text("path,x0,y0,x1,y1\ntrain/dog/c.jpg,4,5,20,25\ntrain/dog/c.jpg,22,2,30,9\n")
    return root, masks


def release_options(name: str, tmp: Path) -> dict:
    """The dataset options of adapter ``name`` on a tiny release in its upstream layout, written under ``tmp``
    (``synthetic``: a small size). The folder release holds an empty class folder and files that are no images, on
    purpose: build it with ``on_error="skip"``."""
    if name == "synthetic":
        return {"size": 20}
    if name == "in9":
        make_in9(tmp / "in9")
        return {"root": str(tmp / "in9")}
    if name == "waterbirds":
        return {"root": str(make_waterbirds(tmp / "waterbirds")[0])}
    if name == "cct":
        return {"root": str(make_cct(tmp / "cct"))}
    if name == "coco":
        images, _ = make_coco(tmp / "coco")
        return {"root": str(images), "annotations": [str(tmp / "coco" / "instances.json")]}
    if name == "folder":
        root, masks = make_folder(tmp / "folder" / "images")
        return {"root": str(root), "masks": str(masks)}
    raise ValueError(f"no tiny release of adapter {name!r} in tests/upstream.py: add one to release_options")


# The release's nine class folders (two with a space), a real WordNet id per class for its wnid-style file stems.
IN9_RELEASE = {
    "00_dog": "n02085620",
    "01_bird": "n01530575",
    "02_wheeled vehicle": "n02814533",
    "03_reptile": "n01641577",
    "04_carnivore": "n02120079",
    "05_insect": "n02165456",
    "06_musical instrument": "n02672831",
    "07_primate": "n02480495",
    "08_fish": "n01440764",
}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "immunohistochemistry")


def photo_background(name: str, h: int, w: int) -> np.ndarray:
    """A crop of one of scikit-image's sample photographs, resized to h x w, as RGB uint8."""
    from skimage import data

    image = getattr(data, name)()
    image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    side = min(image.shape[:2])
    return np.asarray(Image.fromarray(image[:side, :side]).resize((w, h), Image.BILINEAR))


def make_in9_release(root: Path, remove_original: str | None = None) -> dict[str, str]:
    """A bg_challenge/ tree as released: the nine class folders in class order, wnid-style stems
    (``n02814533_10026.JPEG``), mixed files named ``fg_<stem>_bg_<wnid>_<number>.JPEG``, a photographic background
    per class (scikit-image's photos) and a coloured object. Every class has two training images, one val image and
    one test object in every variant; mixed_next shows it on the next class's background. ``remove_original``: a
    class folder whose test original is left out (its mixed images then have nothing to pair with).

    Returns {class folder: the test object's stem}."""
    h, w = 40, 48
    folders = list(IN9_RELEASE)
    stems = {}
    for c, (folder, wnid) in enumerate(IN9_RELEASE.items()):
        background = photo_background(PHOTOS[c], h, w)
        mask = ellipse_mask(h, w, h / 2 + c % 3, w / 2 - c % 4, h / 4, w / 4)

        def with_object(bg: np.ndarray, c: int = c, mask: np.ndarray = mask) -> np.ndarray:
            image = bg.copy()
            image[mask] = (40 + 24 * c, 230 - 20 * c, 90 + 15 * (c % 3))
            return image

        for subset, n in (("train", 2), ("val", 1)):
            for i in range(n):
                stem = f"{wnid}_{10026 + 7 * i + (subset == 'val')}"
                image = with_object(np.roll(background, 5 * i, axis=1))
                save_jpeg(root / "train/original" / subset / folder / f"{stem}.JPEG", image)
                if subset == "train":
                    no_fg = image.copy()
                    no_fg[mask] = 0
                    save_jpeg(root / "train/no_fg" / subset / folder / f"{stem}.JPEG", no_fg, quality=75)
        stem = stems[folder] = f"{wnid}_{31415 + c}"
        nxt, other = (c + 1) % 9, (c + 4) % 9
        names = {
            "original": (f"{stem}.JPEG", background),
            "mixed_same": (f"fg_{stem}_bg_{wnid}_{2718 + c}.JPEG", np.roll(background, 9, axis=0)),
            "mixed_rand": (
                f"fg_{stem}_bg_{IN9_RELEASE[folders[other]]}_{1618 + c}.JPEG",
                photo_background(PHOTOS[other], h, w),
            ),
            "mixed_next": (
                f"fg_{stem}_bg_{IN9_RELEASE[folders[nxt]]}_{1414 + c}.JPEG",
                photo_background(PHOTOS[nxt], h, w),
            ),
        }
        for variant, (name, bg) in names.items():
            if not (variant == "original" and folder == remove_original):
                save_jpeg(root / "test" / variant / "val" / folder / name, with_object(bg))
        npy = root / "test/fg_mask/val" / folder / f"{stem}.npy"
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, mask)
    return stems
