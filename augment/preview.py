"""``augment preview``: a contact sheet of a build, for looking rather than reading.

Rows are samples (one per class first, then more), columns are original | mask | each CF field | each F field.
The mask column shows the object in white and its boxes (the CF hole) in red.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from augment import encode, schema
from augment.shards import Limits, iter_records

LABEL_HEIGHT = 14
CAPTION_WIDTH = 96


def pick_records(
    out: Path, shards: list[dict], rows: int, classes: int, image_size: int
) -> list[tuple[str, dict[str, bytes]]]:
    """Up to ``rows`` annotated records: the first of each class, then the next ones in shard order (images bounded
    by the build's ``image_size``: shards may come from strangers)."""
    firsts: dict[int, tuple[str, dict[str, bytes]]] = {}
    rest = []
    limits = Limits.for_image_size(image_size)
    records = (r for shard in shards for r in iter_records(out / shard["path"], limits=limits))
    for key, fields in itertools.islice(records, rows * 50):  # bounded scan: a preview never reads a whole build
        if not json.loads(fields[schema.META])["has_object"]:
            continue
        label = int(fields[schema.LABEL])
        if label in firsts:
            rest.append((key, fields))
        else:
            firsts[label] = (key, fields)
        if len(firsts) >= min(classes, rows) and len(firsts) + len(rest) >= rows:
            break
    return [*firsts.values(), *rest][:rows]


def mask_cell(fields: dict[str, bytes]) -> np.ndarray:
    mask = encode.decode_mask(fields[schema.MASK])
    img = Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2))
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in json.loads(fields[schema.META])["boxes"]:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 0, 0))
    return np.asarray(img)


def preview(out: Path, dest: Path, split: str | None = None, rows: int = 8, cell: int = 128) -> Path:
    """Draw the contact sheet of ``split`` (default: the first augmented split) into ``dest`` (PNG)."""
    manifest = schema.read_manifest(out)
    splits = manifest["splits"]
    if split is None:
        split = next((s for s, v in splits.items() if v["augmented"]), next(iter(splits)))
    if split not in splits:
        raise ValueError(f"--split {split!r}: not in this build; valid choices: {', '.join(splits)}")
    columns = [schema.IMAGE, schema.MASK] + [f for f in splits[split]["fields"] if f.startswith(("cf.", "f."))]
    records = pick_records(Path(out), splits[split]["shards"], rows, len(manifest["dataset"]["classes"]),
                           manifest["image_size"])  # fmt: skip
    if not records:
        raise ValueError(f"{out}/{split}: no annotated samples to preview")
    titles = ["original" if n == schema.IMAGE else n.removesuffix(".jpg").removesuffix(".png") for n in columns]
    sheet_rows = []
    for key, fields in records:
        meta = json.loads(fields[schema.META])
        cells = [mask_cell(fields) if n == schema.MASK else encode.decode_image(fields[n]) for n in columns]
        sheet_rows.append((f"{key}\n{meta['class_name']}", cells))
    return draw_sheet(titles, sheet_rows, dest, cell)


def draw_sheet(titles: list[str], rows: list[tuple[str, list[np.ndarray]]], dest: Path, cell: int = 128) -> Path:
    """A PNG grid: one column per title, one row per (caption, images); each image scaled to cell x cell."""
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (CAPTION_WIDTH + cell * len(titles), LABEL_HEIGHT + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(titles):
        draw.text((CAPTION_WIDTH + c * cell + 2, 1), title, fill="black", font=font)
    for r, (caption, cells) in enumerate(rows):
        y = LABEL_HEIGHT + r * cell
        draw.text((2, y + 2), caption, fill="black", font=font)
        for c, pixels in enumerate(cells):
            tile = Image.fromarray(pixels).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (CAPTION_WIDTH + c * cell, y))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return dest
