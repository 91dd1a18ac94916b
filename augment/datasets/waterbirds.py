"""Waterbirds (Sagawa et al. 2020), read as released.

    <root>/metadata.csv               img_id, img_filename, y (0 land, 1 water bird), split (0/1/2 = train/val/test),
                                      place (0 land, 1 water), place_filename
    <root>/<img_filename>             the images
    <masks>/<img_filename>.png        CUB-200-2011 segmentations, greyscale with soft edges
                                      (default ``<masks>``: ``segmentations/`` beside the root)

Splits ``train``, ``val``, ``test``, plus ``test_original`` (y == place) and ``test_flip`` (y != place).
``group = 2 * y + place``. Only ``train`` gets CF/F images.

The segmentations are soft masks (``MaskFile(..., soft=True)``): the bird is the pixels at least half the mask's
maximum (``augment.read.soft_object``), so F images and the stored mask leave out the soft rim, which is mostly
the original background; the CF rectangle still spans every non-zero pixel, rim included (``SOFT_MASK_RULE``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated

from augment.datasets import register
from augment.datasets.files import (
    MASKS,
    MAX_IMAGE_PIXELS,
    RESIZE,
    ROOT,
    FileDataset,
    Item,
    MaskFile,
    Rejects,
    file_options,
    safe_key,
)
from augment.read import DEFAULT_MAX_IMAGE_PIXELS, SOFT_MASK_RULE, read_text

COLUMNS = ("img_id", "img_filename", "y", "split", "place")
SPLITS = {0: "train", 1: "val", 2: "test"}
CLASSES = ("landbird", "waterbird")
GROUPS = {"0": "landbird on land", "1": "landbird on water", "2": "waterbird on land", "3": "waterbird on water"}


def read_metadata(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; --root should be the waterbird_complete95_forest2water2 folder")
    with io.StringIO(read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected {list(COLUMNS)} (+ place_filename)")
        return list(reader)


def scan(root: Path, masks: Path, rejects: Rejects) -> dict[str, list[Item]]:
    metadata = root / "metadata.csv"
    items: dict[str, list[Item]] = {name: [] for name in (*SPLITS.values(), "test_original", "test_flip")}
    for line, row in enumerate(read_metadata(metadata), start=2):
        try:
            y, split, place = int(row["y"]), int(row["split"]), int(row["place"])
            if y not in (0, 1) or place not in (0, 1) or split not in SPLITS:
                raise ValueError("y and place must be 0 or 1, split 0, 1 or 2")
            if not (row.get("img_filename") or "").strip():
                raise ValueError("img_filename is empty")
        except (TypeError, ValueError) as e:
            rejects.add(
                metadata, f"line {line}: {e} (got y={row['y']!r}, split={row['split']!r}, place={row['place']!r})"
            )
            continue
        filename = row["img_filename"]
        mask = MaskFile(str(masks / Path(filename).with_suffix(".png")), soft=True)
        meta = {"place": place, "place_filename": row.get("place_filename")}
        names = [SPLITS[split]] + ([("test_original" if y == place else "test_flip")] if split == 2 else [])
        for name in names:
            items[name].append(Item(safe_key(name, row["img_id"]), y, filename, 2 * y + place, mask, meta=meta))
    if not items["train"]:
        raise ValueError(f"{metadata}: no rows with split 0 (train)")
    return items


@register("waterbirds", "Waterbirds (metadata.csv + CUB segmentations): groups (y, place), test_original/test_flip")
def make_waterbirds(
    *,
    seed: int = 0,
    image_size: int | None = None,
    on_error: str = "fail",
    root: Annotated[str | None, ROOT] = None,
    masks: Annotated[str | None, MASKS] = None,
    resize: Annotated[str, RESIZE] = "squash",
    max_image_pixels: Annotated[int, MAX_IMAGE_PIXELS] = DEFAULT_MAX_IMAGE_PIXELS,
) -> FileDataset:
    root_path = file_options(root, "waterbirds")
    mask_root = Path(masks) if masks else root_path.parent / "segmentations"
    if not mask_root.is_dir():
        raise FileNotFoundError(f"--masks {mask_root}: folder not found (the CUB-200-2011 segmentations/ folder)")
    rejects = Rejects(on_error)
    return FileDataset(
        name="waterbirds",
        root=str(root_path),
        classes=CLASSES,
        items=scan(root_path, mask_root, rejects),
        image_size=image_size,
        resize_mode=resize,
        max_image_pixels=max_image_pixels,
        params={
            "masks": str(mask_root),
            "mask_threshold": SOFT_MASK_RULE,
            "groups": GROUPS,
            "evaluation": {"worst_group": True, "flip": {"original": "test_original", "shifted": "test_flip"}},
        },
        rejects=rejects.items,
    )
