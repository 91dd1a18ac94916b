"""Waterbirds, CCT, COCO, folder and IN-9 releases with the names the releases really use, and worse: CUB's
``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``, CCT's UUID image ids, COCO's
``000000391895.jpg``, IN-9's ``02_wheeled vehicle/fg_n02814533_31417_bg_n02120079_1619.JPEG``, spaces, dots, commas,
non-ASCII (``Rüppell's warbler``, ``café``), names that differ only in characters the key rule rewrites (``a b``,
``a-b``, ``a.b``, ``a_b``), names long enough that ``safe_key`` hashes them, and folder names whose parts join alike
(``sea_lion/0001.jpg`` and ``sea/lion_0001.jpg``). Every key-based mechanism is checked on them: the keys, the build
(verify, workers 1 vs 2), ``--train-fraction``, the saliency subset and the ``--shifted-tests`` pairs; and, on IN-9's
own test variants, the object each image shows. The images are crops of scikit-image's sample photographs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from upstream import IN9_RELEASE, make_in9_release

from augment.cli import app
from augment.contract import schema
from augment.contract.shards import iter_records
from augment.datasets import get_dataset
from augment.datasets.files import MAX_KEY, safe_key
from augment.datasets.in9 import TEST_VARIANTS
from augment.masks import mask_to_box
from augment.shifted_tests import variant_key
from train.data import Fields, ShardStream, in_subset, loader, prepare
from train.evaluate import SaliencySubset

runner = CliRunner()
KEY = re.compile(r"[A-Za-z0-9_-]+")  # a webdataset key: no dot (it splits the field name), no slash
W, H = 48, 40  # the source images (CCT's are 64 x 48, 1/32 of the size its JSONs declare)
SIZE = 32  # stored image size of the builds
EXPECTED_KEYS = {  # readable release names keep their readable keys (a change would re-key existing builds)
    "waterbirds": {"train_1", "test_original_7", "test_flip_8"},
    "cct": {"train_5968c0f9-23d2-11e8-a6a3-ec086b02610b_1", "train_59a1f2b4-23d2-11e8-a6a3-ec086b02610b_3"},
    "in9": {
        "train_00_dog_n02085620_10026",
        "val_08_fish_n01440764_10027",
        "original_01_bird_n01530575_31416",
        "mixed_next_00_dog_fg_n02085620_31415_bg_n01530575_1414",
    },
}


# ---- photographs --------------------------------------------------------------------------------------------------


@cache
def photographs() -> tuple[np.ndarray, ...]:
    data = pytest.importorskip("skimage.data")
    return (
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.immunohistochemistry(),
        data.hubble_deep_field(),
        data.retina(),
        data.cat(),
    )


def photo(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """A w x h crop of a sample photograph (which one, and where, by ``seed``)."""
    source = photographs()[seed % len(photographs())]
    ph, pw = source.shape[:2]
    side = min(ph, pw) // 2
    y, x = (seed * 37) % (ph - side), (seed * 53) % (pw - side)
    return np.asarray(Image.fromarray(source[y : y + side, x : x + side]).resize((w, h), Image.BILINEAR))


def ellipse(seed: int, w: int = W, h: int = H, scale: float = 1.0) -> np.ndarray:
    """An object mask whose place depends on ``seed``: a sample that reads another file's mask is caught."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx = 12 + seed * 5 % (h - 24), 12 + seed * 7 % (w - 24)
    return ((yy - cy) / (7 * scale)) ** 2 + ((xx - cx) / (9 * scale)) ** 2 <= 1


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    image.save(path, "JPEG", quality=92) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path, "PNG")


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


# ---- the releases -------------------------------------------------------------------------------------------------


@dataclass
class Release:
    """A dataset written in its release layout, and what an adapter must make of it.

    ``truth[split][(path, class name)]`` is the sample's object (a bool mask at the source size, the boxes' union for
    box-only samples) or None (a plain sample); ``options`` are the adapter's options, ``args`` the same for the CLI.
    """

    name: str
    options: dict
    args: list[str]
    truth: dict[str, dict[tuple[str, str], np.ndarray | None]]
    alike: list[set[tuple[str, str]]]  # groups of samples (split, path) whose names sanitise alike: keys must differ
    native: int = H  # --image-size that keeps the source size with --resize short
    objects: dict[str, str] | None = None  # IN-9: the test object's stem by class folder


WATERBIRDS_ROWS = [  # img_id, img_filename as in the release's metadata.csv (and worse), y, split, place
    (1, "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", 1, 0, 1),
    (2, "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 1, 0, 0),
    (3, "126.Nelson_Sharp_tailed_Sparrow/Nelson_Sharp_Tailed_Sparrow_0001_796906.jpg", 0, 0, 0),
    (4, "126.Nelson_Sharp_tailed_Sparrow/Nelson_Sharp_Tailed_Sparrow_0002_796913.jpg", 0, 0, 1),
    (5, "201.Rüppell's warbler/Rüppell's warbler 0001 (café).jpg", 0, 1, 0),
    (6, "060.Glaucous_winged_Gull/Glaucous_Winged_Gull_0001_44575.jpg", 1, 1, 1),
    (7, "060.Glaucous_winged_Gull/Glaucous_Winged_Gull_0002_44576.jpg", 1, 2, 1),
    (8, "094.White_breasted_Nuthatch/White_Breasted_Nuthatch_0012_86126.jpg", 0, 2, 1),
    (9, "201.Rüppell's warbler/a b.c.jpg", 0, 2, 0),
    (10, "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg", 1, 2, 0),
]


def make_waterbirds(base: Path) -> Release:
    """waterbird_complete95_forest2water2/ (metadata.csv, <img_filename>) and segmentations/ beside it, soft-edged."""
    root = base / "waterbird_complete95_forest2water2"
    lines: list[list] = [["img_id", "img_filename", "y", "split", "place", "place_filename"]]
    truth: dict[str, dict] = {}
    for img_id, filename, y, split, place in WATERBIRDS_ROWS:
        save(root / filename, photo(img_id))
        soft = np.zeros((H, W), np.uint8)
        for scale, value in ((1.3, 60), (1.0, 200)):  # a rim under half the maximum, then the bird
            soft[ellipse(img_id, scale=scale)] = value
        save(base / "segmentations" / Path(filename).with_suffix(".png"), soft)
        place_filename = f"/o/ocean/{img_id:08d}.jpg" if place else f"/b/bamboo_forest/{img_id:08d}.jpg"
        lines.append([img_id, filename, y, split, place, place_filename])
        names = [("train", "val", "test")[split]] + ([("test_original" if y == place else "test_flip")] * (split == 2))
        for name in names:
            truth.setdefault(name, {})[(filename, ("landbird", "waterbird")[y])] = soft >= 100  # half of 200
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)  # quotes a name only where it must, as pandas did
    (root / "metadata.csv").write_text(text.getvalue(), encoding="utf-8")
    return Release("waterbirds", {"root": str(root)}, ["--root", str(root)], truth, alike=[])


CCT_DECLARED = (2048, 1536)  # the JSONs' full resolution; the files are 64 x 48: boxes scale by 1/32
CCT_CATEGORIES = [
    {"id": 1, "name": "opossum"},
    {"id": 3, "name": "raccoon"},
    {"id": 30, "name": "empty"},
    {"id": 34, "name": "deer"},
    {"id": 51, "name": "Rüppell's fox"},
]
LONG_ID = "loc_0033_seq_6f2161b4-5567-11e8-a7e1-dca9047ef277_frame_000{}_of_0003_cam_north-east"
CCT_IMAGES = {  # split -> image id -> [(category id, [x, y, w, h] in declared pixels, or None)]
    "train": {
        "5968c0f9-23d2-11e8-a6a3-ec086b02610b": [(1, [320, 320, 640, 320]), (1, [960, 640, 320, 480])],
        "59a1f2b4-23d2-11e8-a6a3-ec086b02610b": [(1, [0, 0, 512, 512]), (3, [1280, 768, 640, 640])],
        "58a2b7c4-23d2-11e8-a6a3-ec086b02610b": [(30, None)],  # empty: left out
        "a b": [(34, [64, 96, 640, 512])],
        "a-b": [(34, [256, 320, 640, 512])],
        "a.b": [(51, [512, 160, 640, 512])],
        "a_b": [(51, [640, 448, 640, 512])],
        LONG_ID.format(1): [(3, [128, 128, 768, 640])],
        LONG_ID.format(2): [(3, [896, 512, 768, 640])],
        "Rüppell's fox, cámara 12 (nuit) 5a0c9a8e-23d2-11e8-a6a3-ec086b02610b": [(51, [384, 640, 896, 576])],
        "5a5e5c52-23d2-11e8-a6a3-ec086b02610b": [(34, None)],  # no box: a plain sample
    },
    "cis_val": {
        "59d5b3d2-23d2-11e8-a6a3-ec086b02610b": [(3, [640, 320, 640, 640])],
        "59d5b3d3-23d2-11e8-a6a3-ec086b02610b": [(1, [320, 320, 640, 640])],
    },
    "cis_test": {
        "5998cfa4-23d2-11e8-a6a3-ec086b02610b": [(1, [320, 320, 896, 640])],
        "59b93afb-23d2-11e8-a6a3-ec086b02610b": [(3, [960, 512, 768, 640])],
        "café.test 59b93afb": [(3, [128, 640, 768, 640])],
        "5a1c8f3e-23d2-11e8-a6a3-ec086b02610b": [(34, [640, 128, 896, 768])],
    },
    "trans_val": {"5a2af4ab-23d2-11e8-a6a3-ec086b02610b": [(34, [320, 320, 640, 640]), (51, [1280, 640, 512, 512])]},
    "trans_test": {
        "5a30e2f8-23d2-11e8-a6a3-ec086b02610b": [(51, [640, 640, 640, 640])],
        "5a30e2f9-23d2-11e8-a6a3-ec086b02610b": [(1, [960, 320, 640, 640])],
    },
}


def make_cct(root: Path) -> Release:
    """eccv_18_all_images_sm/<id>.jpg and eccv_18_annotation_files/<split>_annotations.json."""
    names = {c["id"]: c["name"] for c in CCT_CATEGORIES}
    truth: dict[str, dict] = {}
    seed = 0
    for split, images in CCT_IMAGES.items():
        data = {"info": {"version": "ECCV18"}, "images": [], "annotations": [], "categories": CCT_CATEGORIES}
        for image_id, anns in images.items():
            seed += 1
            file_name = f"{image_id}.jpg"
            save(root / "eccv_18_all_images_sm" / file_name, photo(seed, 64, 48))
            data["images"].append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": CCT_DECLARED[0],
                    "height": CCT_DECLARED[1],
                    "location": 33 + seed % 3,
                    "seq_id": f"seq-{seed}",
                    "frame_num": 1,
                    "seq_num_frames": 1,
                    "date_captured": "2013-01-02 03:04:05",
                    "rights_holder": "Justin Brown",
                }
            )
            for n, (cat, bbox) in enumerate(anns):
                ann = {"id": f"{image_id}-{n}", "image_id": image_id, "category_id": cat}
                data["annotations"].append(ann | ({"bbox": bbox} if bbox else {}))
                if cat == 30:
                    continue
                obj = truth.setdefault(split, {}).setdefault((f"eccv_18_all_images_sm/{file_name}", names[cat]), None)
                if bbox is not None:
                    region = np.zeros((48, 64), bool) if obj is None else obj
                    x, y, w, h = (v // 32 for v in bbox)
                    region[y : y + h, x : x + w] = True
                    truth[split][(f"eccv_18_all_images_sm/{file_name}", names[cat])] = region
        write_json(root / "eccv_18_annotation_files" / f"{split}_annotations.json", data)
    folder = "eccv_18_all_images_sm/"
    alike = [
        {("train", f"{folder}{n}.jpg") for n in ("a b", "a-b", "a.b", "a_b")},
        {("train", f"{folder}{LONG_ID.format(i)}.jpg") for i in (1, 2)},
    ]
    # boxes only: --masks-from grabcut outlines the objects, so that the test splits are bases of --shifted-tests
    return Release("cct", {"root": str(root)}, ["--root", str(root), "--masks-from", "grabcut"], truth, alike, 48)


COCO_CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "animal", "id": 17, "name": "cat"},
    {"supercategory": "animal", "id": 18, "name": "dog"},
    {"supercategory": "food", "id": 61, "name": "café crème"},
]
COCO_IMAGES = [  # id, file_name, category ids of its annotations (the first is the largest)
    (391895, "000000391895.jpg", [1, 18]),
    (522418, "000000522418.jpg", [17]),
    (184613, "000000184613.jpg", [18, 1]),
    (318219, "000000318219.jpg", [1]),
    (554625, "000000554625.jpg", [17]),
    (397133, "000000397133.jpg", [61]),
    (37777, "000000037777.jpg", [18]),
    (87038, "000000087038.jpg", [61, 17]),
    (174482, "000000174482.jpg", [1]),
    (403385, "000000403385.jpg", [17]),
    (6818, "000000006818.jpg", [18]),
    (480985, "000000480985.jpg", [61]),
    ("a b", "export/a b.jpg", [17]),  # COCO-format exports of other datasets: string ids, sub-folders, any name
    ("a-b", "export/a-b.jpg", [18]),
    ("a.b", "export/a.b.jpg", [1]),
    ("a_b", "export/a_b.jpg", [61]),
    (
        "IMG_20190704_Rüppell's warbler, Kibale National Park (Uganda) 0001.JPG",
        "export/Rüppell's warbler/IMG_20190704_Rüppell's warbler, Kibale National Park (Uganda) 0001.JPG",
        [1],
    ),
    (
        "IMG_20190704_Rüppell's warbler, Kibale National Park (Uganda) 0002.JPG",
        "export/Rüppell's warbler/IMG_20190704_Rüppell's warbler, Kibale National Park (Uganda) 0002.JPG",
        [17],
    ),
]
COCO_VAL_FRACTION = 0.4


def make_coco(base: Path) -> Release:
    """val2017/<file_name> and annotations/instances_val2017.json (polygons; crowd RLE), read with --val-fraction."""
    from pycocotools import mask as coco_mask

    from augment.datasets.coco import held_out

    root = base / "val2017"
    names = {c["id"]: c["name"] for c in COCO_CATEGORIES}
    data = {"info": {"year": 2017}, "licenses": [], "images": [], "annotations": [], "categories": COCO_CATEGORIES}
    truth: dict[str, dict] = {}
    for n, (image_id, file_name, cats) in enumerate(COCO_IMAGES):
        save(root / file_name, photo(n))
        data["images"].append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": W,
                "height": H,
                "license": 1,
                "coco_url": f"http://images.cocodataset.org/val2017/{file_name}",
                "date_captured": "2013-11-14 17:02:52",
            }
        )
        objects = []
        for k, cat in enumerate(cats):
            region = ellipse(n + 3 * k, scale=1.0 - 0.4 * k)  # the first annotation is the largest
            ys, xs = np.nonzero(region)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            polygon = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
            data["annotations"].append(
                {
                    "id": 1000 * n + k,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": [polygon],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "iscrowd": 0,
                }
            )
            if cat == cats[0]:
                objects.append(coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([polygon], H, W))).astype(bool))
        split = "val" if held_out(0, image_id, COCO_VAL_FRACTION) else "train"
        truth.setdefault(split, {})[(file_name, names[cats[0]])] = np.logical_or.reduce(objects)
    crowd = {
        "id": 99,
        "image_id": 391895,
        "category_id": 1,
        "iscrowd": 1,
        "area": 20.0,
        "bbox": [0, 0, 5, 4],
        "segmentation": {"size": [H, W], "counts": [0, 4, 36, 4, 36, 4, 36, 4, 36, 4, H * W - 164]},
    }
    data["annotations"].append(crowd)  # a crowd region: never the label, and part of the object
    truth["train" if not held_out(0, 391895, COCO_VAL_FRACTION) else "val"][("000000391895.jpg", "person")][:4, :5] = 1
    annotations = base / "annotations" / "instances_val2017.json"
    write_json(annotations, data)
    options = {"root": str(root), "annotations": [str(annotations)], "val_fraction": COCO_VAL_FRACTION}
    split_of = {path: split for split, samples in truth.items() for path, _ in samples}
    alike = [{(split_of[f"export/{n}.jpg"], f"export/{n}.jpg") for n in ("a b", "a-b", "a.b", "a_b")}]
    args = ["--root", str(root), "--annotations", str(annotations), "--val-fraction", str(COCO_VAL_FRACTION)]
    return Release("coco", options, args, truth, alike)


ALBATROSS, SPARROW = "Black_Footed_Albatross", "Nelson_Sharp_Tailed_Sparrow"
FOLDER_FILES = {  # class -> {split: [file names]}: CUB as an ImageFolder tree, and worse
    "001.Black_footed_Albatross": {
        "train": [f"{ALBATROSS}_0046_18.jpg", f"{ALBATROSS}_0009_34.jpg"],
        "val": [f"{ALBATROSS}_0002_55.jpg"],
        "test": [f"{ALBATROSS}_0076_417.jpg", f"{ALBATROSS}_0031_100.jpg"],
    },
    "126.Nelson_Sharp_tailed_Sparrow": {
        "train": [f"{SPARROW}_0001_796906.jpg", f"{SPARROW}_0002_796913.jpg"],
        "test": [f"{SPARROW}_0003_796920.jpg"],
    },
    "Rüppell's warbler": {
        "train": ["Rüppell's warbler 01.jpg", "Rüppell's warbler 02.JPEG"],
        "val": ["crème, brûlée.jpg"],
        "test": ["Rüppell's warbler 03.png"],
    },
    "café": {"train": ["a b.jpg", "a-b.jpg", "a.b.jpg", "a_b.jpg", "x.jpg", "x.JPG"], "test": ["café.jpg"]},
    "sea": {"train": ["lion_0001.jpg"], "test": ["lion_0002.jpg"]},  # sea/lion_0001.jpg and sea_lion/0001.jpg
    "sea_lion": {"train": ["0001.jpg"], "test": ["0002.jpg"]},
}
FOLDER_BOXES = {"val/Rüppell's warbler/crème, brûlée.jpg"}  # boxes.csv only, no mask: a box-only sample


def make_folder(base: Path) -> Release:
    """images/<split>/<class>/<image>, masks/<split>/<class>/<stem>.png, images/boxes.csv (quoted paths)."""
    root, masks = base / "images", base / "masks"
    truth: dict[str, dict] = {}
    rows = []
    seed = 0
    for cls, splits in FOLDER_FILES.items():
        for split, files in splits.items():
            for name in files:
                seed += 1
                rel = f"{split}/{cls}/{name}"
                save(root / rel, photo(seed))
                obj = ellipse(seed)
                stem = masks / split / cls / f"{Path(name).stem}.png"
                if rel in FOLDER_BOXES:
                    x0, y0, x1, y1 = mask_to_box(obj).tolist()
                    rows.append([rel, x0, y0, x1, y1])
                    obj = np.zeros_like(obj)
                    obj[y0:y1, x0:x1] = True
                elif stem.exists():  # x.jpg and x.JPG: one stem, one mask, as documented
                    obj = np.asarray(Image.open(stem)) > 0
                else:
                    save(stem, obj.astype(np.uint8) * 255)
                truth.setdefault(split, {})[(rel, cls)] = obj
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([["path", "x0", "y0", "x1", "y1"], *rows])
    (root / "boxes.csv").write_text(text.getvalue(), encoding="utf-8")
    alike = [
        {("train", f"train/café/{n}") for n in ("a b.jpg", "a-b.jpg", "a.b.jpg", "a_b.jpg")},
        {("train", "train/café/x.jpg"), ("train", "train/café/x.JPG")},
        {("train", "train/sea/lion_0001.jpg"), ("train", "train/sea_lion/0001.jpg")},
        {("test", "test/sea/lion_0002.jpg"), ("test", "test/sea_lion/0002.jpg")},
        {
            ("train", f"train/126.Nelson_Sharp_tailed_Sparrow/{name}")
            for name in FOLDER_FILES["126.Nelson_Sharp_tailed_Sparrow"]["train"]
        },
    ]
    return Release(
        "folder", {"root": str(root), "masks": str(masks)}, ["--root", str(root), "--masks", str(masks)], truth, alike
    )


IN9_OWN_TESTS = ("original", "mixed_same", "mixed_rand", "mixed_next")  # the variants the release fixture writes


def make_in9(base: Path) -> Release:
    """bg_challenge/ as released (``upstream.make_in9_release``): nine class folders, two with a space, wnid stems,
    mixed files ``fg_<stem>_bg_<wnid>_<n>.JPEG``. Test masks are fg_mask/*.npy; val has no no_fg (plain samples).

    A train mask is what the adapter's rule (``object_from_no_fg``) makes of that file's original and its own no_fg:
    both are JPEG, so it misses or adds a few edge pixels of the drawn object (checked here to stay near it). Each
    class draws its object elsewhere, and in most classes those few pixels differ between its two train files: a
    sample that reads another class's no_fg is caught, and in those classes one that reads its neighbour's."""
    from augment.datasets.in9 import object_from_no_fg
    from augment.read import read_image

    root = base / "bg_challenge"
    stems = make_in9_release(root)
    truth: dict[str, dict] = {}
    for folder in IN9_RELEASE:
        name = folder.split("_", 1)[1]  # the adapter's class name: "wheeled vehicle"
        obj = np.load(root / "test/fg_mask/val" / folder / f"{stems[folder]}.npy")  # one object per class
        for path in sorted((root / "train/original/train" / folder).iterdir()):
            no_fg = root / "train/no_fg/train" / folder / path.name
            derived = object_from_no_fg(read_image(path).image, read_image(no_fg).image)
            assert (derived & obj).sum() >= 0.9 * (derived | obj).sum(), f"{path}: no_fg no longer shows the object"
            truth.setdefault("train", {})[(path.relative_to(root).as_posix(), name)] = derived
        for path in sorted((root / "train/original/val" / folder).iterdir()):
            truth.setdefault("val", {})[(path.relative_to(root).as_posix(), name)] = None
        for variant in IN9_OWN_TESTS:
            (path,) = (root / "test" / variant / "val" / folder).iterdir()
            truth.setdefault(variant, {})[(path.relative_to(root).as_posix(), name)] = obj
    return Release("in9", {"root": str(root)}, ["--root", str(root)], truth, alike=[], objects=stems)


MAKERS: dict[str, Callable[[Path], Release]] = {
    "waterbirds": make_waterbirds,
    "cct": make_cct,
    "coco": make_coco,
    "folder": make_folder,
    "in9": make_in9,
}


# ---- builds -------------------------------------------------------------------------------------------------------


def build(release: Release, out: Path, workers: int) -> None:
    args = [
        "build",
        "--dataset",
        release.name,
        *release.args,
        "--image-size",
        str(SIZE),
        "--infill",
        "tile",
        "--factual",
        "mixed-rand",
        "--shifted-tests",
        "--shard-size",
        "3",
        "--workers",
        str(workers),
        "--out",
        str(out),
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def read_split(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    records: dict[str, dict[str, bytes]] = {}
    for shard in schema.read_manifest(out)["splits"][split]["shards"]:
        for key, fields in iter_records(out / shard["path"]):
            assert key not in records, f"{split}: key {key} stored twice"
            records[key] = fields
    return records


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> Callable[[str], tuple[Release, Path]]:
    """The release of an adapter, and its build with --shifted-tests on one worker: made once per module."""
    done: dict[str, tuple[Release, Path]] = {}

    def get(name: str) -> tuple[Release, Path]:
        if name not in done:
            base = tmp_path_factory.mktemp(name)
            release = MAKERS[name](base / "release")
            build(release, base / "out", workers=1)
            done[name] = release, base / "out"
        return done[name]

    return get


@pytest.fixture(scope="module", params=list(MAKERS))
def built(request, builds) -> tuple[Release, Path]:
    return builds(request.param)


# ---- 1. keys ------------------------------------------------------------------------------------------------------


def test_keys_are_valid_unique_and_every_name_is_read_with_its_label_and_object(built) -> None:
    release, _ = built
    data = get_dataset(release.name, **release.options, image_size=release.native, resize="short")
    keys = {split: [i.key for i in items] for split, items in data.items.items()}
    every = [k for split_keys in keys.values() for k in split_keys]
    assert len(set(every)) == len(every), "two samples share a key"
    assert all(KEY.fullmatch(k) and len(k) <= MAX_KEY for k in every), [k for k in every if not KEY.fullmatch(k)]
    assert EXPECTED_KEYS.get(release.name, set()) <= set(every)
    assert release.name != "coco" or {"train_391895", "val_391895"} & set(every)
    for split, expected in release.truth.items():
        items = data.items[split]
        read = [(i.path, data.classes[i.label]) for i in items]
        assert sorted(read) == sorted(expected), f"{split}: a name dropped, added or labelled wrongly"
        for index, item in enumerate(items):
            sample = data.load(split, index)
            want = expected[(item.path, data.classes[item.label])]
            if want is None:
                assert sample.mask is None and sample.boxes is None, item.path
                continue
            got = sample.mask
            if got is None:  # box-only: the union of its boxes
                got = np.zeros(sample.image.shape[:2], bool)
                for x0, y0, x1, y1 in sample.boxes.tolist():
                    got[y0:y1, x0:x1] = True
            np.testing.assert_array_equal(got, want, err_msg=f"{split} {item.path}: another file's object")
    by_path = {(s, i.path): i.key for s, items in data.items.items() for i in items}
    for group in release.alike:
        assert len(group) > 1 and len({by_path[p] for p in group}) == len(group), group
    long = [k for k in every if len(k) == MAX_KEY]
    assert release.name == "waterbirds" or len(long) >= 2, "the longest names are not exercised"


def test_names_that_sanitise_or_join_alike_get_distinct_keys() -> None:
    # the last: Latin-1 bytes, as Python reads a file name that is not UTF-8
    names = [
        "a b.jpg",
        "a-b.jpg",
        "a.b.jpg",
        "a_b.jpg",
        "a b-jpg",
        "a/b.jpg",
        "café.jpg",
        "cafe\u0301.jpg",
        "caf\udce9.jpg",
    ]
    keys = [safe_key("train", "café", n) for n in names]
    assert len(set(keys)) == len(keys) and all(KEY.fullmatch(k) for k in keys)
    joined = [("train", "sea_lion", "0001.jpg"), ("train", "sea", "lion_0001.jpg"), ("train_sea", "lion", "0001.jpg")]
    keys = [safe_key(*parts, free=True) for parts in joined]  # the folder adapter's parts: all free-form names
    assert len(set(keys)) == len(keys) and all(KEY.fullmatch(k) for k in keys)
    assert safe_key("test_original", 7) == "test_original_7"  # fixed split names keep their readable keys
    long = "Nelson_Sharp_Tailed_Sparrow_0001_796906_Nelson_Sharp_Tailed_Sparrow_0001_796906.jpg"
    keys = [safe_key("train", "126.Nelson_Sharp_tailed_Sparrow", long.replace("0001", n)) for n in ("0001", "0002")]
    assert keys[0] != keys[1] and all(len(k) == MAX_KEY for k in keys) and keys[0][:51] == keys[1][:51]


# ---- 2. build, verify, workers ------------------------------------------------------------------------------------


def digests(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))
    }


def test_build_verifies_stores_every_key_and_two_workers_give_the_same_bytes(built, tmp_path: Path) -> None:
    release, out = built
    verified = runner.invoke(app, ["verify", str(out), "-q"])
    assert verified.exit_code == 0, verified.output
    manifest = schema.read_manifest(out)
    data = get_dataset(release.name, **release.options, image_size=SIZE)
    for split, plan in data.splits().items():
        stored = read_split(out, split)
        assert set(stored) == {r.key for r in plan.refs}, split
        for ref in plan.refs:
            meta = json.loads(stored[ref.key]["json"])
            assert (meta["key"], meta["label"], meta["class_name"]) == (ref.key, ref.label, data.classes[ref.label])
    assert manifest["splits"]["train"]["num_samples"] == len(release.truth["train"])
    build(release, tmp_path / "two", workers=2)
    assert digests(tmp_path / "two") == digests(out) and digests(out)


# ---- 3. --train-fraction ------------------------------------------------------------------------------------------


def test_train_fraction_keeps_nested_subsets_and_the_trainer_streams_them(built) -> None:
    _, out = built
    manifest = schema.read_manifest(out)
    keys = set(read_split(out, "train"))
    subsets = {f: {k for k in keys if in_subset(k, f)} for f in (0.25, 0.5, 0.75, 1.0)}
    assert subsets[0.25] <= subsets[0.5] <= subsets[0.75] <= subsets[1.0] == keys
    fields = Fields(cf=["tile"], f=["mixed-rand"])
    for fraction in (0.5, 0.75):
        every = ShardStream(out, manifest, "train", fields, train=False, crop=SIZE, fraction=fraction)
        streamed = [s["key"] for s in every]
        assert sorted(streamed) == sorted(subsets[fraction])  # each key of the subset once, no other
        stream = ShardStream(out, manifest, "train", fields, train=True, crop=SIZE, fraction=fraction, batch_size=1)
        trained = [s["key"] for s in stream]
        assert len(trained) == len(stream) == round(len(keys) * fraction) and set(trained) <= subsets[fraction]


def test_train_fit_on_a_fraction_predicts_every_key_of_every_split(builds, tmp_path: Path) -> None:
    """One fit, on the tree with the most kinds of names: every split's records reach the predictions, and the
    shifted splits their pairs."""
    from train.cli import app as train_app

    _, out = builds("folder")
    run = tmp_path / "run"
    result = runner.invoke(
        train_app,
        [
            "fit",
            "--shards",
            str(out),
            "--preset",
            "demo",
            "--arch",
            "resnet8",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--train-fraction",
            "0.5",
            "--max-saliency-images",
            "0",
            "--workers",
            "0",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    predictions = np.load(run / "predictions.npz")
    splits = [s for s in schema.read_manifest(out)["splits"] if s != "train"]
    for split in splits:
        assert sorted(predictions[f"{split}.keys"].tolist()) == sorted(read_split(out, split)), split
    results = json.loads((run / "results.json").read_text())
    bases = results["shifted_tests"]["bases"]
    assert set(bases) == {"test", "val"} and "bg_gap" in bases["test"]


# ---- 4. the saliency subset ---------------------------------------------------------------------------------------


def eval_split(out: Path) -> str:
    """The split the saliency test takes: a test split of the build (IN-9's: original), else val."""
    splits = schema.read_manifest(out)["splits"]
    return next(s for s in ("test", "cis_test", "original", "val") if s in splits)


def test_the_saliency_subset_picks_the_same_images_by_key_in_any_order(built) -> None:
    _, out = built
    manifest = schema.read_manifest(out)
    split = eval_split(out)
    stream = ShardStream(out, manifest, split, Fields(), train=False, crop=SIZE)
    batches = [prepare(b, "cpu") for b in loader(stream, 2, 0, drop_last=False)]
    streamed = [k for b in batches for k in b["key"]]
    assert len(set(streamed)) == len(streamed) == manifest["splits"][split]["num_samples"]
    image_of = {k: b["image"][i] for b in batches for i, k in enumerate(b["key"])}
    masked = {k: int(b["label"][i]) for b in batches for i, k in enumerate(b["key"]) if b["has_object"][i]}
    classes = len(manifest["dataset"]["classes"])
    budget = len(masked) - 1  # not all of them: the choice matters

    def chosen(order: list[dict]) -> list[str]:
        subset = SaliencySubset(budget, classes)
        for batch in order:
            subset.offer(batch)
        images, _, labels = subset.chosen()
        picked = [next(k for k, v in image_of.items() if torch.equal(v, image)) for image in images]
        assert [masked[k] for k in picked] == labels.tolist()
        return picked

    def priority(key: str) -> tuple[int, str]:
        return int.from_bytes(hashlib.blake2b(f"saliency:{key}".encode(), digest_size=8).digest(), "big"), key

    per_class = -(-budget // classes)
    ranked = {
        c: sorted((k for k, label in masked.items() if label == c), key=priority)[:per_class]
        for c in sorted(set(masked.values()))
    }
    expected = [ranked[c][r] for r in range(per_class) for c in ranked if r < len(ranked[c])][:budget]
    assert chosen(batches) == chosen(batches[::-1]) == expected


# ---- 5. --shifted-tests -------------------------------------------------------------------------------------------


def test_every_shifted_record_pairs_with_a_base_record_of_its_split(built) -> None:
    release, out = built
    manifest = schema.read_manifest(out)
    pairs = manifest["shifted_tests"]["pairs"]
    expected_bases = {
        "waterbirds": {"val", "test", "test_original", "test_flip"},
        "folder": {"val", "test"},
        "coco": {"val"},
        "cct": {"cis_val", "cis_test", "trans_val", "trans_test"},
        "in9": {"original"},
    }
    assert set(pairs) == expected_bases[release.name], manifest["shifted_tests"]
    for base, pair in pairs.items():
        base_records = {k: json.loads(f["json"]) for k, f in read_split(out, base).items()}
        # CCT's boxes go to GrabCut, whose masks may fail its gate: such a sample keeps its box and gets no variant
        # (one cut along the box would not be the object's); the others have their masks
        outlined = {k for k, m in base_records.items() if m["has_object"] and m["has_segmentation"]}
        assert outlined or release.name == "cct", base
        for variant, split in pair["variants"].items():
            if not outlined:
                assert manifest["splits"].get(split, {}).get("num_samples", 0) == 0, split
                continue
            records = {k: json.loads(f["json"]) for k, f in read_split(out, split).items()}
            base_keys = [m["shifted"]["base_key"] for m in records.values()]
            assert sorted(base_keys) == sorted(outlined), (split, "a base without its variant, or one twice")
            for key, meta in records.items():
                info = meta["shifted"]
                original = base_records[info["base_key"]]
                assert (info["base_split"], info["variant"]) == (base, variant)
                assert key == variant_key(info["base_key"], variant)
                assert meta["label"] == original["label"] and meta["source"] == original["source"]
                if "donor_key" in info:
                    assert base_records[info["donor_key"]]["label"] == info["donor_label"]
            stream = ShardStream(out, manifest, split, Fields(), train=False, crop=SIZE)
            paired = {s["key"]: s["pair_key"] for s in stream}  # what the trainer pairs each record with
            assert paired == {k: m["shifted"]["base_key"] for k, m in records.items()}
    if release.name == "folder":  # the box-only val image gets no variant, and the manifest says so
        assert "1 of its" in manifest["shifted_tests"]["left_out"]["val"]
    if release.name == "in9":  # val has no no_fg, so no object: the base of nothing; the mixed splits are IN-9's own
        assert set(manifest["shifted_tests"]["skipped"]) == {"val"}, manifest["shifted_tests"]
        assert not [s for s in manifest["splits"] if s.partition(".")[0] in TEST_VARIANTS[1:] and "." in s]


# ---- 6. IN-9's own test variants: the object each image shows -----------------------------------------------------


def test_in9_test_variants_record_their_object_and_the_original_pairs_with_its_mixed_next(builds) -> None:
    """Every record of IN-9's own test variants carries ``object_id`` = ``<class folder>/<foreground stem>``, read
    from the file name, not the key (which the spaced folders and long mixed names rewrite); the trainer streams it,
    and background reliance pairs each class's original with its mixed_next by it."""
    release, out = builds("in9")
    manifest = schema.read_manifest(out)
    assert release.objects is not None and sorted(release.objects) == sorted(IN9_RELEASE)
    folders = list(IN9_RELEASE)
    by_class: dict[str, dict[int, str]] = {}
    for split in IN9_OWN_TESTS:
        records = {k: json.loads(f["json"]) for k, f in read_split(out, split).items()}
        assert len(records) == len(folders), split
        for key, meta in records.items():
            folder = Path(meta["source"]).parent.name
            assert folder == folders[meta["label"]], (split, meta["source"])
            assert meta["object_id"] == f"{folder}/{release.objects[folder]}", (split, key, meta["object_id"])
            by_class.setdefault(split, {})[meta["label"]] = meta["object_id"]
        rewritten = [k for k, m in records.items() if " " in m["source"]]
        assert len(rewritten) == 2 and all(re.search(r"-[0-9a-f]{12}$", k) for k in rewritten), (split, rewritten)
        if split != "original":  # fg_<stem>_bg_<wnid>_<n>: the spaced folders' keys are cut to MAX_KEY and hashed
            assert all(len(k) == MAX_KEY and "_bg_" not in k for k in rewritten), (split, rewritten)
        stream = ShardStream(out, manifest, split, Fields(), train=False, crop=SIZE)
        assert {s["key"]: s["object_id"] for s in stream} == {k: m["object_id"] for k, m in records.items()}
    assert by_class["original"] == by_class["mixed_next"] == by_class["mixed_same"] == by_class["mixed_rand"]
    assert len(set(by_class["original"].values())) == len(folders)  # one object per class: each pairs once
    evaluation = manifest["dataset"]["params"]["evaluation"]["background_reliance"]
    assert (evaluation["original"], evaluation["shifted"]) == ("original", "mixed_next")


# ---- file names that are not UTF-8 --------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_keyed(tmp_path: Path) -> None:
    """An archive made on another system can unpack Latin-1 names: Python reads them as surrogate escapes."""
    import os

    root, masks = tmp_path / "images", tmp_path / "masks"
    for split, cls in (("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "dog")):
        (root / split / cls).mkdir(parents=True)
        (masks / split / cls).mkdir(parents=True)
    names = [b"caf\xe9.jpg", "café.jpg".encode(), b"cafe.jpg"]
    for n, name in enumerate(names):
        for split, cls in (("train", "cat"), ("test", "dog")):
            path = os.path.join(os.fsencode(root / split / cls), name)
            Image.fromarray(photo(n)).save(path.decode("utf-8", "surrogateescape"), "JPEG")
            mask = os.path.join(os.fsencode(masks / split / cls), name[:-4] + b".png")
            Image.fromarray(ellipse(n).astype(np.uint8) * 255).save(mask.decode("utf-8", "surrogateescape"))
    for split, cls in (("train", "dog"), ("test", "cat")):
        save(root / split / cls / "plain.jpg", photo(7))
        save(masks / split / cls / "plain.png", ellipse(7).astype(np.uint8) * 255)
    data = get_dataset("folder", root=str(root), masks=str(masks), image_size=H, resize="short")
    keys = [i.key for items in data.items.values() for i in items]
    assert len(keys) == len(set(keys)) == 8 and all(KEY.fullmatch(k) for k in keys)
    for split, items in data.items.items():
        for index, item in enumerate(items):  # each name reads its own image's mask
            n = [os.fsdecode(name) for name in names].index(Path(item.path).name) if "plain" not in item.path else 7
            np.testing.assert_array_equal(data.load(split, index).mask, ellipse(n), err_msg=item.path)
    release = Release("folder", {}, ["--root", str(root), "--masks", str(masks)], {}, [])
    build(release, tmp_path / "out", workers=1)
    verified = runner.invoke(app, ["verify", str(tmp_path / "out"), "-q"])
    assert verified.exit_code == 0, verified.output
    assert len(read_split(tmp_path / "out", "train")) == 4 and len(read_split(tmp_path / "out", "test.only_fg")) == 4
