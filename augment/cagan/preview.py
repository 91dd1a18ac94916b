"""``augment cagan preview``: original | hole | CAGAN | tile, for a few samples of a build, as one PNG.

The hole is the one the build uses for CF images: the object's rectangle (``masks.cf_hole`` of the boxes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augment import masks
from augment.contract import encode, schema
from augment.infill import get_infill
from augment.preview import draw_sheet, pick_records

COLUMNS = ("original", "hole", "cagan", "tile")


def preview(
    weights: Path, shards: Path, dest: Path, split: str = "val", rows: int = 8, cell: int = 128, device: str = "auto"
) -> Path:
    """Draw the sheet into ``dest``; ``split`` is a split of the build (held out from training by default)."""
    from augment.cagan.inpaint import cached

    manifest = schema.read_manifest(shards)
    if split not in manifest["splits"]:
        raise ValueError(f"--split {split!r}: not in {shards}; valid choices: {', '.join(manifest['splits'])}")
    records = pick_records(
        shards, manifest["splits"][split]["shards"], rows, len(manifest["dataset"]["classes"]), manifest["image_size"]
    )
    if not records:
        raise ValueError(f"{shards}/{split}: no annotated samples to preview")
    images, holes, names = [], [], []
    for key, fields in records:
        image = encode.decode_image(fields[schema.IMAGE])
        meta = json.loads(fields[schema.META])
        boxes = np.array(meta["boxes"], dtype=np.int64).reshape(-1, 4)
        images.append(image)
        holes.append(masks.cf_hole(encode.decode_mask(fields[schema.MASK]), boxes, image.shape[:2]))
        names.append(f"{key}\n{meta['class_name']}")
    filled = get_infill("cagan").batch(images, holes, inpainter=cached(weights, device))
    tile = get_infill("tile").fill
    sheet_rows = [
        (
            name,
            [image, np.where(hole[..., None], np.uint8(128), image), done, tile(image, hole, np.random.default_rng(0))],
        )
        for image, hole, done, name in zip(images, holes, filled, names, strict=True)
    ]
    title = (
        f"augment cagan preview of {shards}: split {split!r}, the CF hole (grey) filled by CAGAN "
        f"({Path(weights).name}) and by tile"
    )
    return draw_sheet(list(COLUMNS), sheet_rows, dest, cell, title=title)
