"""Any COCO instances JSON plus an image root, turned into a classification dataset with object masks.

    augment build --dataset coco --root /data/images --annotations instances.json [--val-fraction 0.1]
    augment build --dataset coco --root /data/images --annotations train=train.json --annotations val=val.json

- Each image's label is a category chosen by ``--label-from``: ``largest`` (the category of its largest
  non-crowd annotation, the default) or ``area`` (the category with the most total area). Ties go to the
  lowest category id. Labels are all categories sorted by id.
- The object is every annotation of that category: polygon and RLE segmentations (decoded with pycocotools,
  COCO's own rasteriser) become the mask, and an annotation with only a box contributes its box.
- Images without a usable annotation have no label and are left out (counted in the manifest).
- One JSON: all of it is ``train``, minus a seeded ``--val-fraction`` for ``val``. Several JSONs: one per split.
  Only ``train`` gets CF/F images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from augment.datasets import Flag, register
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
from augment.read import DEFAULT_MAX_IMAGE_PIXELS, Decoded, SourceError, fit_mask

LABEL_RULES = ("largest", "area")
ANNOTATIONS = Flag("coco: instances JSON; repeat as SPLIT=PATH for one JSON per split.", list, metavar="<[split=]path>")
LABEL_FROM = Flag(
    "coco: the image label is the category of the largest annotation, or with the most total area.",
    choices=LABEL_RULES,
)
VAL_FRACTION = Flag("coco with one JSON: fraction of images held out as val (seeded).", float, min=0.0, max=1.0)


@dataclass(frozen=True)
class CocoMask:
    """The union of COCO segmentations (polygons, RLE) and bare boxes, drawn at the JSON's image size."""

    json_path: str
    segmentations: tuple[Any, ...]  # each a polygon list, an RLE dict, or None (then the matching box is used)
    bboxes: tuple[tuple[float, float, float, float], ...]  # [x, y, w, h] per annotation
    size: tuple[int, int]  # (W, H) declared in the JSON

    @property
    def segmented(self) -> bool:
        """Whether any annotation outlines its object (else the mask is only the boxes)."""
        return any(s is not None for s in self.segmentations)

    def read(self, decoded: Decoded, image_path: Path) -> np.ndarray:
        from pycocotools import mask as coco_mask  # deferred: only COCO builds need it

        w, h = self.size
        mask = np.zeros((h, w), dtype=bool)
        for seg, (x, y, bw, bh) in zip(self.segmentations, self.bboxes, strict=True):
            try:
                if seg:
                    rle = seg
                    if isinstance(seg, list):  # polygons
                        rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
                    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                        rle = coco_mask.frPyObjects(seg, h, w)
                    mask |= coco_mask.decode(rle).astype(bool)
                else:
                    mask[
                        max(int(y), 0) : max(int(np.ceil(y + bh)), 0), max(int(x), 0) : max(int(np.ceil(x + bw)), 0)
                    ] = True
            except Exception as e:  # pycocotools raises a bare Exception on a malformed polygon
                raise SourceError(self.json_path, f"unreadable segmentation for {image_path.name} ({e})") from e
        return fit_mask(self.json_path, mask.astype(np.uint8), decoded, rescale=True).astype(bool)

    def files(self) -> list[str]:
        return []


def load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--annotations {path}: file not found")
    return load_coco_json(path, "COCO instances")


def parse_annotations(annotations: list[str]) -> dict[str, Path]:
    """``["a.json"]`` -> {"": a.json}; ``["train=a.json", "val=b.json"]`` -> one per split."""
    if not annotations:
        raise ValueError("--dataset coco needs --annotations, a COCO instances JSON (or SPLIT=PATH per split)")
    named = [a.partition("=") for a in annotations]
    if len(annotations) == 1 and not named[0][1]:
        return {"": Path(annotations[0])}
    if not all(sep and split for split, sep, _ in named):
        raise ValueError(f"--annotations: got {annotations}; with several JSONs, name each as SPLIT=PATH")
    for split, _, _ in named:
        if split != safe_key(split):
            raise ValueError(f"--annotations: split name {split!r} may only hold letters, digits, '-' and '_'")
    return {split: Path(path) for split, _, path in named}


def held_out(seed: int, image_id: object, fraction: float) -> bool:
    """A seeded, order-independent coin for the val split."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def choose_label(anns: list[dict], rule: str) -> int:
    """The category of an image by ``rule``; ties go to the lowest category id."""
    area = {}
    for a in anns:
        value = float(a.get("area") or a["bbox"][2] * a["bbox"][3])
        cat = a["category_id"]
        area[cat] = max(area.get(cat, 0.0), value) if rule == "largest" else area.get(cat, 0.0) + value
    return min(area, key=lambda c: (-area[c], c))


def scan(files: dict[str, Path], rule: str, val_fraction: float, seed: int, rejects: Rejects):
    data = {split: load_json(path) for split, path in files.items()}
    categories: dict[int, str] = {}
    for split, d in data.items():
        for i, c in enumerate(d["categories"]):
            if not (isinstance(c, dict) and isinstance(c.get("id"), int) and "name" in c):
                rejects.add(files[split], f"categories[{i}]: expected an object with an integer id and a name")
                continue
            categories[c["id"]] = str(c["name"])
    order = sorted(categories)
    label_of = {c: i for i, c in enumerate(order)}
    items: dict[str, list[Item]] = {}
    unlabelled = 0
    for split, d in data.items():
        path = files[split]
        images = {img.get("id"): img for img in d["images"] if isinstance(img, dict) and img.get("id") is not None}
        per_image: dict[Any, list[dict]] = {}
        for i, ann in enumerate(d["annotations"]):
            if not isinstance(ann, dict):
                rejects.add(path, f"annotations[{i}]: expected an object")
                continue
            area = ann.get("area", 0)
            if area is not None and not isinstance(area, (int, float)):
                rejects.add(path, f"annotation {ann.get('id')!r}: area {area!r} is not a number")
                continue
            if ann.get("image_id") not in images:
                rejects.add(path, f"annotation {ann.get('id')!r} references unknown image_id {ann.get('image_id')!r}")
                continue
            if ann.get("category_id") not in categories:
                rejects.add(
                    path, f"annotation {ann.get('id')!r} references unknown category_id {ann.get('category_id')!r}"
                )
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                rejects.add(path, f"annotation {ann.get('id')!r}: bbox {bbox!r} is not [x, y, w, h]")
                continue
            per_image.setdefault(ann["image_id"], []).append(ann)
        for image_id, img in sorted(images.items(), key=lambda kv: str(kv[0])):
            anns = per_image.get(image_id, [])
            labelled = [a for a in anns if not a.get("iscrowd")]
            if not labelled:
                unlabelled += 1
                continue
            if not isinstance(img.get("file_name"), str) or not all(
                isinstance(img.get(k), int) and img[k] > 0 for k in ("width", "height")
            ):
                rejects.add(path, f"image {image_id!r}: expected file_name and positive integer width/height")
                continue
            cat = choose_label(labelled, rule)
            mine = [a for a in anns if a["category_id"] == cat]
            size = (img["width"], img["height"])
            name = split or ("val" if held_out(seed, image_id, val_fraction) else "train")
            items.setdefault(name, []).append(
                Item(
                    key=safe_key(name, image_id),
                    label=label_of[cat],
                    path=img["file_name"],
                    mask=CocoMask(
                        str(path),
                        tuple(a.get("segmentation") or None for a in mine),
                        tuple(tuple(a["bbox"]) for a in mine),
                        size,
                    ),
                    boxes=[
                        [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in mine
                    ],
                    box_space=size,
                    meta={"image_id": image_id, "category_id": cat},
                )
            )
    if not items:
        raise ValueError(f"{', '.join(map(str, files.values()))}: no image has a usable annotation")
    params = {
        "label_map": {str(c): {"label": label_of[c], "name": categories[c]} for c in order},
        "label_from": rule,
        "unlabelled_images": unlabelled,
        "annotations": {k or "all": str(v) for k, v in files.items()},
    }
    return tuple(categories[c] for c in order), items, params


@register("coco", "any COCO instances JSON + image folder: polygon/RLE masks, label from the main category")
def make_coco(
    *,
    seed: int = 0,
    image_size: int | None = None,
    on_error: str = "fail",
    root: Annotated[str | None, ROOT] = None,
    annotations: Annotated[list[str] | None, ANNOTATIONS] = None,
    label_from: Annotated[str, LABEL_FROM] = "largest",
    val_fraction: Annotated[float, VAL_FRACTION] = 0.0,
    resize: Annotated[str, RESIZE] = "squash",
    max_image_pixels: Annotated[int, MAX_IMAGE_PIXELS] = DEFAULT_MAX_IMAGE_PIXELS,
) -> FileDataset:
    root_path = file_options(root, "coco")
    if label_from not in LABEL_RULES:
        raise ValueError(f"--label-from: got {label_from!r}, expected one of {', '.join(LABEL_RULES)}")
    files = parse_annotations(annotations or [])
    if val_fraction and "" not in files:
        raise ValueError("--val-fraction applies to a single --annotations JSON; with SPLIT=PATH the splits are given")
    rejects = Rejects(on_error)
    classes, items, params = scan(files, label_from, val_fraction, seed, rejects)
    return FileDataset(
        name="coco",
        root=str(root_path),
        classes=classes,
        items=items,
        image_size=image_size,
        resize_mode=resize,
        max_image_pixels=max_image_pixels,
        params={**params, "val_fraction": val_fraction},
        rejects=rejects.items,
    )
