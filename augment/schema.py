"""The shard schema and the manifest, declared in one place (documented in docs/FORMAT.md).

A build writes ``<out>/<split>/shard-NNNNNN.tar`` (plain tar, webdataset layout) and ``<out>/manifest.json``.
Each record is one source image, keyed by ``__key__`` (no dots), with the fields below.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from augment import encode, infill

FORMAT = "cfaug-shards"
FORMAT_VERSION = 3  # what this tool writes; 3: shuffle draws from the split's value pool (augment.pool)
READ_VERSIONS = (1, 2, 3)  # 2: samples in a seeded random order (1: source order); 1 and 2: shuffle was per-image
POOLED_SHUFFLE_SINCE = 3  # before, the fields named ``shuffle`` hold what is now ``shuffle-image``
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"  # one JSON object per skipped source input: split, path, reason

# Fields of every record.
IMAGE = "jpg"  # the original image, RGB JPEG at the stored size
LABEL = "cls"  # the integer label, ASCII
META = "json"  # sample metadata, keys in SAMPLE_JSON
# Fields of a record whose sample has an object annotation (mask or boxes).
MASK = "mask.png"  # 8-bit PNG, 255 = object (the exact segmentation, else the union of boxes)
BASE_FIELDS = (IMAGE, LABEL, META)

SAMPLE_JSON = {
    "key": "the record's __key__",
    "label": "integer label, index into the manifest's dataset.classes",
    "class_name": "the label's name",
    "split": "the split the record is stored in",
    "group": "integer group for worst-group metrics (e.g. class x background), or null",
    "source": "where the sample came from: a path relative to the dataset root, or a generator recipe",
    "width": "stored image width in pixels",
    "height": "stored image height in pixels",
    "boxes": "object boxes [[x0, y0, x1, y1], ...] in stored pixels, x1/y1 exclusive; [] when none",
    "has_object": "whether the sample has an object annotation (then mask.png and the CF/F fields exist)",
    "has_segmentation": "whether mask.png is an object outline, the dataset's or one made by --masks-from (else it "
    "is the union of boxes)",
    "mask_source": "where mask.png came from (augment build --masks-from): annotation, box, grabcut, sam, cam; "
    "null without an object (builds before --masks-from lack the key)",
    "mask_gate": "why a produced mask failed the quality gate and the sample fell back to its boxes, else null",
    "shifted": "in a shifted test split (augment build --shifted-tests): base_split, base_key (the record of the "
    "original image), variant, and for the mixed variants donor_key, donor_label and donor_class (whose background "
    "was pasted in); else null (builds before --shifted-tests lack the key)",
    "object_id": "the object the image shows, equal in each of the dataset's own test variants of it (IN-9: "
    "<class folder>/<stem of the foreground image>; synthetic: <index>): the background reliance pairs images on it; "
    "null where the adapter pairs nothing (builds before it lack the key)",
    "meta": "adapter-specific facts (e.g. the synthetic background family; in a shifted split, the base sample's)",
}

TAR_MTIME = 0  # fixed tar header fields: same inputs give byte-identical shards
TAR_USER = "augment"
TAR_MODE = 0o444


def shard_path(split: str, index: int) -> str:
    """The shard's path relative to the build folder."""
    return f"{split}/shard-{index:06d}.tar"


def augment_fields(cf: list[str], f: list[str], copies: int) -> list[str]:
    """The CF/F fields of an annotated record in an augmented split, e.g. ``cf.tile.jpg``, ``f.shuffle.0.jpg``."""
    return [n for m in cf for n in infill.field_names(m, infill.CF, copies)] + [
        n for m in f for n in infill.field_names(m, infill.F, copies)
    ]


def record_fields(has_object: bool, augmented: bool, cf: list[str], f: list[str], copies: int) -> list[str]:
    """Exactly the fields one record must carry."""
    if not has_object:
        return list(BASE_FIELDS)
    return [*BASE_FIELDS, MASK, *(augment_fields(cf, f, copies) if augmented else [])]


def encoding() -> dict[str, Any]:
    """The fixed encoder settings, recorded in the manifest."""
    return {
        "jpeg_quality": encode.JPEG_QUALITY,
        "jpeg_subsampling": "4:4:4",
        "png_compress_level": encode.PNG_COMPRESS_LEVEL,
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Write ``<out>/manifest.json`` atomically (temp name, then rename)."""
    path = out / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")  # insertion order: splits as built
    os.replace(tmp, path)
    return path


def write_rejects(out: Path, rejects: list[dict[str, str]]) -> Path:
    """Write ``<out>/rejects.jsonl`` atomically, sorted so that the file is the same for every worker count."""
    path = out / REJECTS
    tmp = path.with_name(path.name + ".tmp")
    rows = sorted(rejects, key=lambda r: (r.get("split", ""), r["path"], r["reason"]))
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    os.replace(tmp, path)
    return path


def read_manifest(out: Path) -> dict[str, Any]:
    """Load and check ``<out>/manifest.json``; errors name the file and what was expected."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; expected the output folder of `augment build`")
    return parse_manifest(path.read_bytes(), path)


def parse_manifest(data: bytes, where: Path | str) -> dict[str, Any]:
    """Parse and check a manifest's bytes read from ``where`` (a file or a URL, named in the errors)."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: not valid JSON ({e}); rebuild with `augment build`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{where}: format {got!r}, expected {FORMAT!r} (the manifest.json of an `augment build`)")
    version = manifest.get("format_version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise ValueError(
            f"{where}: format_version {version!r}, this tool reads {', '.join(map(str, READ_VERSIONS))}; "
            "rebuild the shards with this version of `augment build`"
        )
    check_structure(where, manifest)
    return manifest


def check_structure(path: Path | str, manifest: dict[str, Any]) -> None:
    """The keys and types readers rely on; shard paths must stay inside the build folder."""

    def need(obj: Any, key: str, kind: type, where: str) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # bool is an int
            raise ValueError(f"{path}: {where}{key} is missing or not a {kind.__name__}")
        return value

    for key, kind in (("dataset", dict), ("splits", dict), ("seed", int), ("methods", dict), ("options", dict),
                      ("num_samples", int)):  # fmt: skip
        need(manifest, key, kind, "")
    need(manifest["dataset"], "classes", list, "dataset.")
    for split, info in manifest["splits"].items():
        where = f"splits.{split}."
        need(info, "augmented", bool, where)
        need(info, "num_samples", int, where)
        need(info, "per_class", dict, where)
        for i, shard in enumerate(need(info, "shards", list, where)):
            at = f"{where}shards[{i}]."
            rel = need(shard, "path", str, at)
            need(shard, "num_samples", int, at), need(shard, "bytes", int, at), need(shard, "sha256", str, at)
            if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.startswith(f"{split}/"):
                raise ValueError(f"{path}: {at}path {rel!r} must be a relative path inside the split folder {split}/")


def environment() -> dict[str, str | None]:
    """Versions of what decides the shard bytes: the JPEG/PNG encoders, and the generators behind the draws."""
    import cv2
    import numpy
    import PIL
    from PIL import features

    return {
        "pillow": PIL.__version__,
        "libjpeg": features.version("jpg"),
        "zlib": features.version("zlib"),
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
    }
