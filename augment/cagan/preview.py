"""``augment cagan preview``: original | hole | CAGAN | tile, for a few samples of a build, as one PNG.

The hole is the one the build uses for CF images: the object's rectangle (``masks.cf_hole`` of the boxes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from augment import encode, masks, schema
from augment.infill import get_infill
from augment.preview import CAPTION_WIDTH, LABEL_HEIGHT, pick_records

COLUMNS = ("original", "hole", "cagan", "tile")


def preview(weights: Path, shards: Path, dest: Path, split: str = "val", rows: int = 8, cell: int = 128,
            device: str = "auto") -> Path:  # fmt: skip
    """Draw the sheet into ``dest``; ``split`` is a split of the build (held out from training by default)."""
    from augment.cagan.inpaint import cached

    manifest = schema.read_manifest(shards)
    if split not in manifest["splits"]:
        raise ValueError(f"--split {split!r}: not in {shards}; valid choices: {', '.join(manifest['splits'])}")
    records = pick_records(shards, manifest["splits"][split]["shards"], rows, len(manifest["dataset"]["classes"]))
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
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (CAPTION_WIDTH + cell * len(COLUMNS), LABEL_HEIGHT + cell * len(images)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(COLUMNS):
        draw.text((CAPTION_WIDTH + c * cell + 2, 1), title, fill="black", font=font)
    for r, (image, hole, done, name) in enumerate(zip(images, holes, filled, names, strict=True)):
        y = LABEL_HEIGHT + r * cell
        draw.text((2, y + 2), name, fill="black", font=font)
        shown = np.where(hole[..., None], np.uint8(128), image)
        cells = (image, shown, done, tile(image, hole, np.random.default_rng(0)))
        for c, pixels in enumerate(cells):
            tile_img = Image.fromarray(pixels).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile_img, (CAPTION_WIDTH + c * cell, y))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return dest
