"""Caltech Camera Traps, ECCV'18 split (Beery et al. 2018), read as released.

    <root>/eccv_18_all_images_sm/<file_name>                      downsized images
    <root>/eccv_18_annotation_files/{train,cis_val,cis_test,trans_val,trans_test}_annotations.json

The JSONs are COCO-Camera-Traps: ``images[id, file_name, width, height, location]``,
``annotations[image_id, category_id, bbox = [x, y, w, h]]`` (bbox may be missing), ``categories[id, name]``.
Width, height and boxes are at the original resolution, so boxes are rescaled to the actual image.

- The category "empty" is dropped; the others, sorted by id, are labels 0..K-1 (the map is in the manifest).
- One sample per (image, category): several boxes of one category are united; two species give two samples.
- An annotation without a box leaves its sample without boxes: a plain sample, no CF/F.
- ``group`` indexes the camera location (the locations are in the manifest), and ``location`` (of samples and refs)
  is the image's ``location`` itself. Only ``train`` gets CF/F images.
- The images whose only category is "empty" are the split's empty frames (``empty_frames``, ``load_empty``): not
  samples, but the backgrounds of ``--factual bank --backgrounds dataset``, each with its location.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from augment.datasets import register
from augment.datasets.files import (
    MAX_IMAGE_PIXELS,
    RESIZE,
    ROOT,
    FileDataset,
    Item,
    Rejects,
    file_options,
    load_coco_json,
    safe_key,
)
from augment.read import DEFAULT_MAX_IMAGE_PIXELS

SPLITS = ("train", "cis_val", "cis_test", "trans_val", "trans_test")
IMAGES = "eccv_18_all_images_sm"
ANNOTATIONS = "eccv_18_annotation_files"
EMPTY = "empty"


def scan(
    root: Path, rejects: Rejects
) -> tuple[list[dict], dict[str, list[Item]], dict[str, list[Item]], dict[str, Any]]:
    folder = root / ANNOTATIONS
    files = {s: folder / f"{s}_annotations.json" for s in SPLITS if (folder / f"{s}_annotations.json").is_file()}
    if "train" not in files:
        raise FileNotFoundError(f"{folder / 'train_annotations.json'}: not found; --root should hold {ANNOTATIONS}/")
    data = {split: load_coco_json(path, "COCO-Camera-Traps") for split, path in files.items()}
    categories: dict[int, str] = {}
    for split, d in data.items():
        for i, cat in enumerate(d["categories"]):
            if not (isinstance(cat, dict) and isinstance(cat.get("id"), int) and "name" in cat):
                rejects.add(files[split], f"categories[{i}]: expected an object with an integer id and a name", split)
                continue
            categories.setdefault(cat["id"], str(cat["name"]))
    kept = sorted(c for c, name in categories.items() if name.lower() != EMPTY)
    label_of = {c: i for i, c in enumerate(kept)}
    locations = sorted({str(img.get("location")) for d in data.values() for img in d["images"]})
    group_of = {loc: i for i, loc in enumerate(locations)}

    items: dict[str, list[Item]] = {}
    empty: dict[str, list[Item]] = {}  # the empty frames per split
    dropped = 0
    for split, d in data.items():
        path = files[split]
        images = {}
        for i, img in enumerate(d["images"]):
            if not (isinstance(img, dict) and "id" in img):
                rejects.add(path, f"images[{i}]: expected an object with an id", split)
                continue
            images[str(img["id"])] = img
        per_image: dict[tuple[str, int], list[list[float] | None]] = {}
        empty_ids: set[str] = set()  # images with an "empty" annotation
        animals: set[str] = set()  # images with any other annotation, even one refused: no empty frame
        for i, ann in enumerate(d["annotations"]):
            if not isinstance(ann, dict):
                rejects.add(path, f"annotations[{i}]: expected an object", split)
                continue
            image_id, cat = str(ann.get("image_id")), ann.get("category_id")
            if image_id not in images:
                rejects.add(path, f"annotation {ann.get('id')!r} references unknown image_id {image_id!r}", split)
                continue
            if cat in label_of or cat not in categories:
                animals.add(image_id)
            if cat not in categories:
                rejects.add(path, f"annotation {ann.get('id')!r} references unknown category_id {cat!r}", split)
                continue
            if cat not in label_of:
                empty_ids.add(image_id)  # "empty"
                continue
            bbox = ann.get("bbox")
            if bbox is not None and not (
                isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
            ):
                rejects.add(path, f"annotation {ann.get('id')!r}: bbox {bbox!r} is not [x, y, w, h]", split)
                continue
            per_image.setdefault((image_id, cat), []).append(bbox)
        annotated = {image_id for image_id, _ in per_image}
        dropped += sum(1 for image_id in images if image_id not in annotated)
        rows = items.setdefault(split, [])
        for (image_id, cat), bboxes in sorted(per_image.items()):
            img = images[image_id]
            if not well_formed(img):
                rejects.add(path, f"image {image_id!r}: expected file_name and positive integer width/height", split)
                continue
            boxes = [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in bboxes if b is not None]
            rows.append(
                Item(
                    key=safe_key(split, image_id, cat),
                    label=label_of[cat],
                    path=f"{IMAGES}/{img['file_name']}",
                    group=group_of[str(img.get("location"))],
                    boxes=boxes or None,
                    box_space=(int(img["width"]), int(img["height"])) if boxes else None,
                    meta={"image_id": image_id, "category_id": cat, "location": img.get("location")},
                    location=location_of(img),
                )
            )
        frames = empty.setdefault(split, [])
        for image_id in sorted(empty_ids - animals):
            img = images[image_id]
            if not well_formed(img):
                rejects.add(path, f"image {image_id!r}: expected file_name and positive integer width/height", split)
                continue
            frames.append(
                Item(safe_key(split, image_id), -1, f"{IMAGES}/{img['file_name']}", location=location_of(img))
            )
    params = {
        "label_map": {str(c): {"label": label_of[c], "name": categories[c]} for c in kept},
        "locations": locations,
        "dropped_empty_or_unannotated_images": dropped,
        "empty_frames": {split: len(frames) for split, frames in empty.items()},
        "missing_splits": [s for s in SPLITS if s not in files],
        "evaluation": {
            "metric": "macro one-vs-rest AUC",
            "cis": ["cis_val", "cis_test"],
            "trans": ["trans_val", "trans_test"],
            "model_selection": "cis_val",
        },
    }
    return [{"id": c, "name": categories[c]} for c in kept], items, empty, params


def well_formed(img: dict) -> bool:
    """Whether an image entry has the file_name and positive integer width and height every image needs."""
    return isinstance(img.get("file_name"), str) and all(
        isinstance(img.get(k), int) and img[k] > 0 for k in ("width", "height")
    )


def location_of(img: dict) -> str | None:
    """The image's camera location as text (COCO Camera Traps stores a number or a string), None without one."""
    location = img.get("location")
    return None if location is None else str(location)


@register("cct", "Caltech Camera Traps ECCV'18 (COCO-Camera-Traps JSONs): boxes rescaled, 'empty' dropped")
def make_cct(
    *,
    seed: int = 0,
    image_size: int | None = None,
    on_error: str = "fail",
    root: Annotated[str | None, ROOT] = None,
    resize: Annotated[str, RESIZE] = "squash",
    max_image_pixels: Annotated[int, MAX_IMAGE_PIXELS] = DEFAULT_MAX_IMAGE_PIXELS,
) -> FileDataset:
    root_path = file_options(root, "cct")
    rejects = Rejects(on_error)
    categories, items, empty, params = scan(root_path, rejects)
    return FileDataset(
        name="cct",
        root=str(root_path),
        classes=tuple(c["name"] for c in categories),
        items=items,
        image_size=image_size,
        resize_mode=resize,
        max_image_pixels=max_image_pixels,
        params=params,
        rejects=rejects.items,
        empty=empty,
    )
