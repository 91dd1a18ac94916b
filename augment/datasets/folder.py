"""An ImageFolder tree with a parallel mask tree and/or a CSV of boxes: the shape of most in-house datasets.

    <root>/<split>/<class>/<image>                 e.g. train/cat/001.jpg, val/dog/007.png
    <masks>/<split>/<class>/<image stem>.png       optional: non-zero = object, same size as the image
    <boxes>.csv                                    optional (default <root>/boxes.csv): columns path,x0,y0,x1,y1,
                                                   path relative to <root>, one row per box, pixels of the image

Classes are the class folder names across all splits, sorted. An image with neither a mask nor a box is a
plain sample (no CF/F; the manifest counts them). Only ``train`` gets CF/F images.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated

from augment.datasets import Flag, register
from augment.datasets.files import (
    IMAGE_SUFFIXES,
    MASKS,
    MAX_IMAGE_PIXELS,
    RESIZE,
    ROOT,
    FileDataset,
    Item,
    MaskFile,
    Rejects,
    file_options,
    image_files,
    safe_key,
)
from augment.read import DEFAULT_MAX_IMAGE_PIXELS, read_text

BOX_COLUMNS = ("path", "x0", "y0", "x1", "y1")
BOXES = Flag("folder: CSV of boxes (path,x0,y0,x1,y1) [default: <root>/boxes.csv].", Path)


def read_boxes(path: Path, known: set[str], rejects: Rejects) -> dict[str, list[list[float]]]:
    with io.StringIO(read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected {list(BOX_COLUMNS)}")
        boxes: dict[str, list[list[float]]] = {}
        for line, row in enumerate(reader, start=2):
            if row["path"] not in known:
                rejects.add(path, f"line {line}: {row['path']!r} is not an image under the root")
                continue
            try:
                box = [float(row[c]) for c in BOX_COLUMNS[1:]]  # NaN parses, and is refused with its file at load
            except (TypeError, ValueError):
                rejects.add(path, f"line {line}: box {[row[c] for c in BOX_COLUMNS[1:]]} is not four numbers")
                continue
            boxes.setdefault(row["path"], []).append(box)
    return boxes


def scan(root: Path, masks: Path | None, boxes_csv: Path | None, rejects: Rejects):
    not_splits = {masks.resolve()} if masks else set()  # a mask tree kept inside the root is not a split
    splits = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.resolve() not in not_splits),
        key=lambda p: (p.name != "train", p.name),
    )
    classes = sorted({c.name for s in splits for c in s.iterdir() if c.is_dir() and not c.name.startswith(".")})
    if not classes:
        raise FileNotFoundError(f"--root {root}: no <split>/<class>/ folders (expected e.g. train/cat/001.jpg)")
    found: dict[str, list[tuple[int, Path]]] = {}
    for split_dir in splits:
        rows = found.setdefault(split_dir.name, [])
        for label, name in enumerate(classes):
            class_dir = split_dir / name
            if not class_dir.is_dir():
                continue
            others = [
                p
                for p in class_dir.iterdir()
                if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES)
            ]
            for p in sorted(others):
                reason = (
                    "a folder inside a class folder is not read (expected <root>/<split>/<class>/<image>)"
                    if p.is_dir()
                    else f"not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})"
                )
                rejects.add(p, reason, split_dir.name)
            files = image_files(class_dir)
            if not files:
                rejects.add(class_dir, "class folder with no images", split_dir.name)
            rows.extend((label, p) for p in files)
    known = {str(p.relative_to(root)) for rows in found.values() for _, p in rows}
    boxes = read_boxes(boxes_csv, known, rejects) if boxes_csv else {}
    items: dict[str, list[Item]] = {}
    plain = 0
    for split, rows in found.items():
        for label, path in rows:
            rel = str(path.relative_to(root))
            mask_path = masks / split / classes[label] / f"{path.stem}.png" if masks else None
            mask = MaskFile(str(mask_path)) if mask_path is not None and mask_path.is_file() else None
            item_boxes = boxes.get(rel)
            plain += mask is None and not item_boxes
            key = safe_key(split, classes[label], path.name, free=True)  # folder names may hold "_" themselves
            items.setdefault(split, []).append(Item(key, label, rel, mask=mask, boxes=item_boxes))
    return (
        tuple(classes),
        items,
        {
            "plain_samples": plain,
            "masks": str(masks) if masks else None,
            "boxes": str(boxes_csv) if boxes_csv else None,
        },
    )


@register("folder", "ImageFolder tree <root>/<split>/<class>/ + mask tree (--masks) and/or boxes CSV (--boxes)")
def make_folder(
    *,
    seed: int = 0,
    image_size: int | None = None,
    on_error: str = "fail",
    root: Annotated[str | None, ROOT] = None,
    masks: Annotated[str | None, MASKS] = None,
    boxes: Annotated[str | None, BOXES] = None,
    resize: Annotated[str, RESIZE] = "squash",
    max_image_pixels: Annotated[int, MAX_IMAGE_PIXELS] = DEFAULT_MAX_IMAGE_PIXELS,
) -> FileDataset:
    root_path = file_options(root, "folder")
    mask_root = Path(masks) if masks else None
    if mask_root is not None and not mask_root.is_dir():
        raise FileNotFoundError(f"--masks {mask_root}: folder not found")
    boxes_csv = Path(boxes) if boxes else (root_path / "boxes.csv" if (root_path / "boxes.csv").is_file() else None)
    if boxes_csv is not None and not boxes_csv.is_file():
        raise FileNotFoundError(f"--boxes {boxes_csv}: file not found")
    rejects = Rejects(on_error)
    classes, items, params = scan(root_path, mask_root, boxes_csv, rejects)
    return FileDataset(
        name="folder",
        root=str(root_path),
        classes=classes,
        items=items,
        image_size=image_size,
        resize_mode=resize,
        max_image_pixels=max_image_pixels,
        params=params,
        rejects=rejects.items,
    )
