"""``augment preview``: a contact sheet of a build, for looking rather than reading.

Rows are samples (one per class first, then more), columns are original | mask | each CF field | each F field.
The mask column shows the object in white and its boxes (the CF hole) in red; under a key, the background of its
first f.bank image is named (``bg:``, the bank's file or frame). A title names the build and split, a
legend under the grid says what the red box and a field's copy suffix (``f.shuffle.0``) are.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from augment.contract import encode, schema
from augment.contract.shards import Limits, ShardError, iter_records, parse_json

LABEL_HEIGHT = 14
CAPTION_WIDTH = 96
LINE_HEIGHT = 14  # a line of title or legend text
BOX_COLOUR = (255, 0, 0)
BANK_NAME = 14  # characters of a bank background's name under a key
Record = tuple[str, str, dict[str, bytes]]  # (shard path, key, fields)


def sample_meta(path: str, key: str, fields: dict[str, bytes]) -> tuple[dict, int]:
    """The json object and label of a record; ShardError naming the sample when either is missing or malformed."""
    if schema.META not in fields or schema.LABEL not in fields:
        missing = [f for f in (schema.META, schema.LABEL) if f not in fields]
        raise ShardError(
            path,
            f"no {' or '.join(missing)} field (it holds {', '.join(sorted(fields)) or 'nothing'});"
            f" every sample of a build has {schema.META} and {schema.LABEL}",
            key=key,
        )
    try:
        meta = parse_json(fields[schema.META])
    except ValueError as e:
        raise ShardError(path, f"field {schema.META!r} is not valid JSON ({e})", key=key) from None
    if not isinstance(meta, dict):
        raise ShardError(path, f"field {schema.META!r} holds a {type(meta).__name__}, expected an object", key=key)
    try:
        label = schema.parse_label(fields[schema.LABEL])  # the rule of verify and the trainer
    except ValueError as e:
        raise ShardError(path, f"field {schema.LABEL!r}: {e}", key=key) from None
    return meta, label


def pick(out: Path, shards: list[dict], rows: int, classes: int, image_size: int) -> list[Record]:
    """Up to ``rows`` annotated records, with their shard: the first of each class, then the next ones in shard
    order (images bounded by the build's ``image_size``: shards may come from strangers)."""
    firsts: dict[int, Record] = {}
    rest = []
    limits = Limits.for_image_size(image_size)
    records = (
        (str(out / s["path"]), key, fields)
        for s in shards
        for key, fields in iter_records(out / s["path"], limits=limits, inside=out)
    )
    for record in itertools.islice(records, rows * 50):  # bounded scan: a preview never reads a whole build
        meta, label = sample_meta(*record)
        if not meta.get("has_object"):
            continue
        if label in firsts:
            rest.append(record)
        else:
            firsts[label] = record
        if len(firsts) >= min(classes, rows) and len(firsts) + len(rest) >= rows:
            break
    return [*firsts.values(), *rest][:rows]


def pick_records(
    out: Path, shards: list[dict], rows: int, classes: int, image_size: int
) -> list[tuple[str, dict[str, bytes]]]:
    """As :func:`pick`, as ``(key, fields)`` pairs."""
    return [(key, fields) for _, key, fields in pick(out, shards, rows, classes, image_size)]


def mask_cell(fields: dict[str, bytes]) -> np.ndarray:
    mask = encode.decode_mask(fields[schema.MASK])
    img = Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2))
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in json.loads(fields[schema.META])["boxes"]:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=BOX_COLOUR)
    return np.asarray(img)


def cells_of(record: Record, columns: list[str], pixels: int) -> tuple[str, list[np.ndarray]]:
    """The caption and images of one row; ShardError naming the sample and field that cannot be drawn."""
    path, key, fields = record
    meta, _ = sample_meta(path, key, fields)
    cells = []
    for name in columns:
        if name not in fields:
            raise ShardError(path, f"no {name!r} field; the manifest lists it for this split", key=key)
        try:
            if name == schema.MASK:
                cells.append(mask_cell(fields))
            else:
                cells.append(encode.decode_image(fields[name], pixels))
        except (OSError, ValueError, KeyError, TypeError) as e:  # a bad image, or json boxes of the wrong shape
            what = f"{name!r} and json boxes" if name == schema.MASK else repr(name)
            raise ShardError(path, f"field {what} cannot be drawn ({type(e).__name__}: {e})", key=key) from None
    source = meta.get("mask_source")  # builds before --masks-from have none
    caption = f"{key}\n{meta.get('class_name', '?')}" + (f"\nmask: {source}" if source else "")
    return caption + "".join(f"\nbg: {name}" for name in bank_donors(meta, columns)[:1]), cells


def bank_donors(meta: dict, columns: list[str]) -> list[str]:
    """The backgrounds of the record's f.bank columns, in column order, each as its file name (or frame key) cut to
    fit the caption; [] for a record without them."""
    bank = meta.get("bank")
    if not isinstance(bank, dict):
        return []
    names = []
    for column in columns:
        donor = bank.get(column)
        if isinstance(donor, dict):
            name = str(donor.get("key") or donor.get("path") or "?").rsplit("/", 1)[-1]
            names.append(name if len(name) <= BANK_NAME else "..." + name[3 - BANK_NAME :])
    return names


def preview(out: Path, dest: Path, split: str | None = None, rows: int = 8, cell: int = 128) -> Path:
    """Draw the contact sheet of ``split`` (default: the first augmented split) into ``dest`` (PNG). Raises
    ValueError for an option the build cannot serve, ShardError for bad data in it."""
    manifest = schema.read_manifest(out)
    splits = manifest["splits"]
    if split is None:
        split = next((s for s, v in splits.items() if v["augmented"]), next(iter(splits)))
    if split not in splits:
        raise ValueError(f"--split {split!r}: not in this build; valid choices: {', '.join(splits)}")
    columns = [schema.IMAGE, schema.MASK] + [f for f in splits[split]["fields"] if f.startswith(("cf.", "f."))]
    records = pick(
        Path(out), splits[split]["shards"], rows, len(manifest["dataset"]["classes"]), manifest["image_size"]
    )
    if not records:
        others = [s for s in splits if s != split]
        raise ValueError(
            f"--split {split}: no annotated samples to preview in {out}/{split}"
            + (f"; try --split {others[0]} (splits: {', '.join(splits)})" if others else "")
        )
    titles = ["original" if n == schema.IMAGE else n.removesuffix(".jpg").removesuffix(".png") for n in columns]
    pixels = Limits.for_image_size(manifest["image_size"]).pixels
    title = (
        f"augment preview of {out}: split {split!r}, {len(records)} annotated samples (the first of each class, "
        "then the next in shard order)"
    )
    return draw_sheet(
        titles,
        [cells_of(r, columns, pixels) for r in records],
        dest,
        cell,
        title=title,
        legend=sheet_legend(titles, manifest["methods"].get("copies", 1)),
    )


def shifted_preview(out: Path, dest: Path, base: str | None = None, rows: int = 8, cell: int = 128) -> Path:
    """The sheet of a ``--shifted-tests`` build's variants: rows = samples of ``base`` (default: the first base
    split), columns = original | each variant, each mixed column captioned with its donor's class."""
    manifest = schema.read_manifest(out)
    shifted = schema.parse_shifted_tests(manifest)
    if shifted is None or not shifted.pairs:
        raise ValueError(f"--shifted: {out} has no shifted test splits; build it with augment build --shifted-tests")
    pairs = shifted.pairs
    base = next(iter(pairs)) if base is None else base
    if base not in pairs:
        raise ValueError(f"--split {base!r}: no shifted test splits of it; splits with them: {', '.join(pairs)}")
    splits, limits = manifest["splits"], Limits.for_image_size(manifest["image_size"])
    records = pick(Path(out), splits[base]["shards"], rows, len(manifest["dataset"]["classes"]), manifest["image_size"])
    variants = pairs[base].variants
    found: dict[str, Record] = {}
    for variant, split in variants.items():  # each variant split's shards, until they gave the chosen samples'
        wanted = {f"{key}_{variant}" for _, key, _ in records}
        for shard in splits[split]["shards"]:
            path = Path(out) / shard["path"]
            found |= {
                key: (str(path), key, fields)
                for key, fields in iter_records(path, limits=limits, inside=out)
                if key in wanted
            }
            if wanted <= found.keys():
                break
    titles, table = ["original", *variants], []
    for path, key, fields in records:
        meta, _ = sample_meta(path, key, fields)
        cells, donors = [encode.decode_image(fields[schema.IMAGE], limits.pixels)], []
        for variant in variants:
            record = found.get(f"{key}_{variant}")
            if record is None:
                raise ShardError(path, f"no {variant} record {key}_{variant} in {variants[variant]}", key=key)
            info, _ = sample_meta(*record)
            cells.append(encode.decode_image(record[2][schema.IMAGE], limits.pixels))
            if (info.get("shifted") or {}).get("donor_class") is not None:
                donors.append(f"{variant.removeprefix('mixed_')}: {info['shifted']['donor_class']}")
        table.append((f"{key}\n{meta.get('class_name', '?')}\n" + "\n".join(donors), cells))
    title = (
        f"augment preview --shifted of {out}: split {base!r} and its Backgrounds Challenge variants "
        f"(augment build --shifted-tests), {len(table)} samples"
    )
    legend = [(None, f"{v}: {what}") for v, what in shifted.variants.items()]
    legend.append((None, "under each key: the class of each mixed variant's donor (same, rand, next)"))
    return draw_sheet(titles, table, dest, cell, title=title, legend=legend)


def sheet_legend(titles: list[str], copies: int) -> list[tuple[tuple[int, int, int] | None, str]]:
    """The legend of a preview: (swatch colour or None, text) per line, for the columns in ``titles``."""
    legend: list[tuple[tuple[int, int, int] | None, str]] = []
    if "mask" in titles:
        box = (
            "mask column: the object in white; red box = its bounding box(es), the hole a CF method fills (cf.*);"
            " F methods (f.*) replace everything outside the object"
        )
        legend.append((BOX_COLOUR, box))
        legend.append(
            (
                None,
                "mask: under each key, where its mask came from (augment build --masks-from; box = the "
                "F hole is everything outside the box)",
            )
        )
    bank = [t for t in titles if t.startswith("f.bank")]
    if bank:
        legend.append(
            (
                None,
                f"{bank[0]}: the object on a background from the bank (augment build --backgrounds); bg: under each "
                "key names the background of the first f.bank column (its json's bank names each one, with its sha256 "
                "or frame key, and the crop)",
            )
        )
    suffixed = [t for t in titles if re.fullmatch(r".+\.\d+", t)]
    if suffixed:
        legend.append(
            (
                None,
                f"{suffixed[0]}: a stochastic method's image is stored in K copies, .0, .1, ... (this "
                f"build: K = {copies}, set by augment build --copies K); training reads copy "
                "epoch % K",
            )
        )
    return legend


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """``text`` cut into lines that fit ``width`` pixels (words kept whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def draw_sheet(
    titles: list[str],
    rows: list[tuple[str, list[np.ndarray]]],
    dest: Path,
    cell: int = 128,
    title: str | None = None,
    legend: list[tuple[tuple[int, int, int] | None, str]] = (),
) -> Path:
    """A PNG grid: ``title`` above (wrapped), one column per title, one row per (caption, images), each image scaled
    to cell x cell; under it one ``legend`` line per (swatch colour, text), the swatch an outlined square."""
    font = ImageFont.load_default()
    width = CAPTION_WIDTH + cell * len(titles)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    head = wrap(measure, title, font, width - 4) if title else []
    swatch = LINE_HEIGHT  # a legend line starts with a swatch this wide, or as much blank
    keys = [(colour, wrap(measure, text, font, width - swatch - 8)) for colour, text in legend]
    top = LINE_HEIGHT * len(head) + (4 if head else 0)
    grid = LABEL_HEIGHT + cell * len(rows)
    foot = LINE_HEIGHT * sum(len(lines) for _, lines in keys) + (6 if keys else 0)
    sheet = Image.new("RGB", (width, top + grid + foot), "white")
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(head):
        draw.text((2, 2 + i * LINE_HEIGHT), line, fill="black", font=font)
    for c, column in enumerate(titles):
        draw.text((CAPTION_WIDTH + c * cell + 2, top + 1), column, fill="black", font=font)
    for r, (caption, cells) in enumerate(rows):
        y = top + LABEL_HEIGHT + r * cell
        draw.text((2, y + 2), caption, fill="black", font=font)
        for c, pixels in enumerate(cells):
            tile = Image.fromarray(pixels).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (CAPTION_WIDTH + c * cell, y))
    y = top + grid + 4
    for colour, lines in keys:
        if colour is not None:
            draw.rectangle([2, y + 1, swatch - 2, y + LINE_HEIGHT - 3], fill="black", outline=colour, width=2)
        for line in lines:
            draw.text((swatch + 4, y), line, fill="black", font=font)
            y += LINE_HEIGHT
    dest = Path(dest)
    if dest.is_dir():
        raise ValueError(
            f"--out {dest} is a folder; expected the path of the PNG to write, e.g. {dest / 'preview.png'}"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(dest, format="PNG")
    except OSError as e:
        raise ValueError(f"--out {dest}: cannot write it ({e.strerror or e}); choose a writable path") from None
    return dest
