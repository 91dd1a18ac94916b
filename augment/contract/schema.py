"""The shard schema and the manifest, declared in one place (documented in docs/FORMAT.md).

A build writes ``<out>/<split>/shard-NNNNNN.tar`` (plain tar, webdataset layout) and ``<out>/manifest.json``.
Each record is one source image, keyed by ``__key__`` (no dots), with the fields below.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augment.contract import encode
from augment.contract.files import UnsafeFile, read_small, write_text_atomic

FORMAT = "cfaug-shards"
FORMAT_VERSION = 3  # what this tool writes; 3: shuffle draws from the split's value pool (augment.pool)
READ_VERSIONS = (1, 2, 3)  # 2: samples in a seeded random order (1: source order); 1 and 2: shuffle was per-image
POOLED_SHUFFLE_SINCE = 3  # first format whose ``shuffle`` fields are pooled; an older build's hold ``shuffle-image``
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"  # one JSON object per skipped source input: split, path, reason
MAX_MANIFEST_BYTES = 64 << 20  # any manifest.json, local or remote, checked before it is read (verify, info, train)
MAX_IMAGE_SIZE = math.isqrt(encode.MAX_PIXELS)  # 6324: an image_size whose square is over MAX_PIXELS holds no image
MAX_GROUP = 2**31 - 1  # a record's group: an int32 in every batch and metric

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
    "bank": "in a record with f.bank fields (augment build --factual bank), per field its background: source "
    "(folder or dataset), path and sha256 (a folder's file) or key, path and location (an empty frame of the "
    "dataset), rule (any, same-class-location, other-location), scaled [W, H] and crop [x0, y0, x1, y1]; "
    "records without f.bank fields lack the key",
}

TAR_MTIME = 0  # fixed tar header fields: same inputs give byte-identical shards
TAR_USER = "augment"
TAR_MODE = 0o444


def shard_path(split: str, index: int) -> str:
    """The shard's path relative to the build folder."""
    return f"{split}/shard-{index:06d}.tar"


def encoding() -> dict[str, Any]:
    """The fixed encoder settings, recorded in the manifest."""
    return {
        "jpeg_quality": encode.JPEG_QUALITY,
        "jpeg_subsampling": "4:4:4",
        "png_compress_level": encode.PNG_COMPRESS_LEVEL,
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Write ``<out>/manifest.json`` atomically (temp name, then rename)."""
    return write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")  # insertion order: splits as built


def write_rejects(out: Path, rejects: list[dict[str, str]]) -> Path:
    """Write ``<out>/rejects.jsonl`` atomically, sorted so that the file is the same for every worker count."""
    rows = sorted(rejects, key=lambda r: (r.get("split", ""), r["path"], r["reason"]))
    return write_text_atomic(out / REJECTS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_manifest(out: Path) -> dict[str, Any]:
    """Load and check ``<out>/manifest.json``; errors name the file and what was expected. Only a regular file
    inside ``out`` of at most ``MAX_MANIFEST_BYTES`` is read (its size checked before reading)."""
    path = Path(out) / MANIFEST
    try:
        data = read_small(path, MAX_MANIFEST_BYTES, inside=out)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no manifest; expected the output folder of `augment build`") from None
    except UnsafeFile as e:
        raise ValueError(f"{path}: {e}") from None
    return parse_manifest(data, path)


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
    """The keys, types and bounds every reader relies on (augment's commands and the trainer alike): shard paths
    stay inside their split's folder and are listed once, ``image_size`` is one an image can have, the CF/F methods
    and fields are lists of names, and ``shifted_tests`` and ``dataset.params.evaluation`` name splits of the build
    in the shape the trainer reads. A number that must agree with the shards (counts, sizes) is checked where they
    are read."""

    def need(obj: Any, key: str, kind: type, where: str) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # bool is an int
            raise ValueError(f"{path}: {where}{key} is missing or not a {kind.__name__}")
        return value

    for key, kind in (
        ("dataset", dict),
        ("splits", dict),
        ("seed", int),
        ("methods", dict),
        ("options", dict),
        ("num_samples", int),
    ):
        need(manifest, key, kind, "")
    size = manifest.get("image_size")
    if type(size) is not int:
        raise ValueError(f"{path}: image_size is missing or not an int")
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"{path}: image_size {size}: expected the stored images' size in pixels, 1 to "
            f"{MAX_IMAGE_SIZE} (larger images hold over {encode.MAX_PIXELS} pixels)"
        )
    strings(path, "dataset.classes", need(manifest["dataset"], "classes", list, "dataset."))
    for role in ("cf", "f"):
        strings(path, f"methods.{role}", need(manifest["methods"], role, list, "methods."))
    if need(manifest["methods"], "copies", int, "methods.") < 1:
        raise ValueError(f"{path}: methods.copies {manifest['methods']['copies']}: expected at least 1")
    listed: dict[str, str] = {}
    for split, info in manifest["splits"].items():
        where = f"splits.{split}."
        need(info, "augmented", bool, where)
        need(info, "num_samples", int, where)
        need(info, "per_class", dict, where)
        strings(path, f"{where}fields", need(info, "fields", list, where))
        for i, shard in enumerate(need(info, "shards", list, where)):
            at = f"{where}shards[{i}]."
            rel = need(shard, "path", str, at)
            need(shard, "num_samples", int, at), need(shard, "bytes", int, at), need(shard, "sha256", str, at)
            if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.startswith(f"{split}/"):
                raise ValueError(f"{path}: {at}path {rel!r} must be a relative path inside the split folder {split}/")
            if shard["num_samples"] < 0 or shard["bytes"] < 0:
                raise ValueError(
                    f"{path}: {at}num_samples/bytes {shard['num_samples']}/{shard['bytes']}: expected counts >= 0"
                )
            if (first := listed.setdefault(os.path.normpath(rel), at[:-1])) != at[:-1]:
                raise ValueError(
                    f"{path}: {at}path {rel!r} is listed twice (also as {first}); a build lists each shard once"
                )
    check_shifted_tests(path, manifest)
    check_evaluation(path, manifest)


def strings(path: Path | str, key: str, values: list) -> None:
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"{path}: {key} holds a value that is not a string")


def check_shifted_tests(path: Path | str, manifest: dict[str, Any]) -> None:
    """``shifted_tests`` (``augment build --shifted-tests``), when present: the shape ``ShiftedTests`` declares,
    every split it names a split of the build (``parse_shifted_tests``, the one parser)."""
    parse_shifted_tests(manifest, path)


def check_evaluation(path: Path | str, manifest: dict[str, Any]) -> None:
    """``dataset.params.evaluation`` (the dataset's own paired splits, read by the trainer), when present: the shape
    ``Evaluation`` declares, each of ``bg_gap``, ``background_reliance`` and ``flip`` an object of split names
    (``parse_evaluation``, the one parser)."""
    parse_evaluation(manifest, path)


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a stranger's value in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- dataset.params.evaluation: the dataset's own test splits, declared once for every reader ------------------


@dataclass(frozen=True)
class BgGap:
    """``bg_gap``: BG-gap = acc(``same``) - acc(``rand``), the object on a background of its own class and of a
    random one (IN-9's and synthetic's mixed_same, mixed_rand)."""

    same: str
    rand: str


@dataclass(frozen=True)
class SplitPair:
    """``background_reliance`` or ``flip``: the split of the ``original`` images and the split that shows them on a
    ``shifted`` background (IN-9's original/mixed_next, Waterbirds' test_original/test_flip). ``background_class``:
    how the shifted background's class follows from the label (IN-9's and synthetic's "label + 1 mod K"), when the
    adapter recorded it."""

    original: str
    shifted: str
    background_class: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """The typed ``dataset.params.evaluation`` of a manifest (``parse_evaluation``): what each adapter declares about
    its own test splits, every key optional (a dataset without the section has the empty one). Keys other than these
    are kept in the manifest and read by nobody.

    - ``bg_gap`` (IN-9, synthetic) and ``background_reliance`` (IN-9, synthetic), ``flip`` (Waterbirds);
    - ``worst_group`` (Waterbirds): worst-group accuracy is the dataset's headline metric;
    - ``cis``, ``trans`` (CCT): the splits of seen and unseen camera locations, ``model_selection`` the split that
      picks the model, ``metric`` the dataset's headline metric in words.
    """

    bg_gap: BgGap | None = None
    background_reliance: SplitPair | None = None
    flip: SplitPair | None = None
    worst_group: bool = False
    cis: tuple[str, ...] = ()
    trans: tuple[str, ...] = ()
    model_selection: str | None = None
    metric: str | None = None

    def named_splits(self) -> list[str]:
        """Every split the section pairs up or lists (not ``model_selection``), in declaration order, once each: the
        candidates for the build's test splits (``train.splits.declared_test_splits``)."""
        names: list[str] = []
        if self.bg_gap is not None:
            names += [self.bg_gap.same, self.bg_gap.rand]
        for pair in (self.background_reliance, self.flip):
            if pair is not None:
                names += [pair.original, pair.shifted]
        return list(dict.fromkeys([*names, *self.cis, *self.trans]))

    def contradicting_splits(self) -> list[str]:
        """The splits whose background belongs to another class than the object: ``bg_gap.rand``,
        ``background_reliance.shifted`` and ``flip.shifted``, once each."""
        names = [
            self.bg_gap.rand if self.bg_gap else None,
            self.background_reliance.shifted if self.background_reliance else None,
            self.flip.shifted if self.flip else None,
        ]
        return [n for n in dict.fromkeys(names) if n is not None]


EVALUATION_KEY = "dataset.params.evaluation"
_PAIRS = (
    ("bg_gap", ("same", "rand")),
    ("background_reliance", ("original", "shifted")),
    ("flip", ("original", "shifted")),
)


def parse_evaluation(manifest: Mapping[str, Any], path: Path | str = MANIFEST) -> Evaluation:
    """The manifest's ``dataset.params.evaluation``, checked and typed; the empty ``Evaluation`` when the manifest
    has none (or an empty one). ValueError, one line naming ``path`` and the key, on any other shape."""
    dataset = manifest.get("dataset")
    params = (dataset.get("params") if isinstance(dataset, Mapping) else None) or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{path}: {EVALUATION_KEY}: expected an object")
    return evaluation_of(params.get("evaluation") or {}, path)


def evaluation_of(section: Evaluation | Mapping[str, Any] | None, path: Path | str = MANIFEST) -> Evaluation:
    """``section`` as an ``Evaluation``: one as is, None (or an empty value) as the empty one, a raw
    ``dataset.params.evaluation`` object parsed (``parse_evaluation``'s checks and messages)."""
    if isinstance(section, Evaluation):
        return section
    if not section:
        return Evaluation()
    if not isinstance(section, Mapping):
        raise ValueError(f"{path}: {EVALUATION_KEY}: expected an object")
    found: dict[str, Any] = {}
    for name, sides in _PAIRS:
        entry = section.get(name)
        if entry is None:
            continue
        if not (isinstance(entry, Mapping) and all(isinstance(entry.get(s), str) for s in sides)):
            raise ValueError(
                f"{path}: {EVALUATION_KEY}.{name}: expected an object with the split names {' and '.join(sides)}"
            )
        if name == "bg_gap":
            found[name] = BgGap(entry["same"], entry["rand"])
        else:
            background = entry.get("background_class")
            if background is not None and not isinstance(background, str):
                raise ValueError(f"{path}: {EVALUATION_KEY}.{name}.background_class {brief(background)}: expected text")
            found[name] = SplitPair(entry["original"], entry["shifted"], background)
    for name in ("cis", "trans"):
        names = section.get(name)
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: {EVALUATION_KEY}.{name} {brief(names)}: expected a list of split names")
        found[name] = tuple(names)
    for name, kind, expected in (
        ("worst_group", bool, "true or false"),
        ("model_selection", str, "a split name"),
        ("metric", str, "text"),
    ):
        value = section.get(name)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise ValueError(f"{path}: {EVALUATION_KEY}.{name} {brief(value)}: expected {expected}")
        found[name] = value
    return Evaluation(**found)


# ---- shifted_tests: the generated test splits of --shifted-tests, declared once for every reader ------------


@dataclass(frozen=True)
class ShiftedReliance:
    """A base's ``background_reliance``: its ``original`` split and the mixed splits that show its objects on
    another sample's background (mixed_next, then mixed_rand), the background's class read from each record's
    ``shifted.donor_label``."""

    original: str
    shifted: tuple[str, ...]


@dataclass(frozen=True)
class ShiftedBase:
    """``shifted_tests.pairs.<base>``: the base's ``original`` split, its ``variants`` (variant name -> split), and
    the splits of the two paired metrics the trainer computes from them, BG-gap (mixed_same against mixed_rand) and
    background reliance."""

    original: str
    variants: dict[str, str]
    bg_gap: BgGap
    background_reliance: ShiftedReliance


@dataclass(frozen=True)
class ShiftedTests:
    """The typed ``shifted_tests`` of a manifest (``parse_shifted_tests``), as ``augment build --shifted-tests``
    writes it (``augment.shifted_tests.manifest_section``): what each variant shows (``variants``, name -> text),
    the base splits in build order (``pairs``), the splits that got no variants and why (``skipped``), and the bases
    whose samples with boxes only got none (``left_out``; builds before it lack the key). Keys other than these
    (``background_reliance.background_class``) are kept in the manifest and read by nobody."""

    variants: dict[str, str]
    pairs: dict[str, ShiftedBase]
    skipped: dict[str, str]
    left_out: dict[str, str]

    def generated_splits(self) -> set[str]:
        """Every variant split of every base: the splits the build made, not the dataset's own."""
        return {split for base in self.pairs.values() for split in base.variants.values()}


def parse_shifted_tests(manifest: Mapping[str, Any], path: Path | str = MANIFEST) -> ShiftedTests | None:
    """The manifest's ``shifted_tests``, checked and typed; None when the manifest has none. Every split it names
    must be one of the manifest's ``splits``. ValueError, one line naming ``path`` and the key, on any other shape."""
    if "shifted_tests" not in manifest:
        return None
    section, splits = manifest["shifted_tests"], manifest["splits"]
    expected = "expected an object of the shape `augment build --shifted-tests` writes (docs/FORMAT.md, manifest.json)"

    def table(value: Any, where: str, values: type = str) -> dict:
        if not isinstance(value, dict) or not all(isinstance(v, values) for v in value.values()):
            raise ValueError(f"{path}: shifted_tests{where}: {expected}")
        return value

    def split_name(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in splits:
            raise ValueError(f"{path}: shifted_tests{where} {brief(value)}: expected a split of this build")
        return value

    table(section, "", object)
    variants = table(section.get("variants"), ".variants")
    skipped = table(section.get("skipped"), ".skipped")
    left_out = table(section.get("left_out", {}), ".left_out")
    pairs: dict[str, ShiftedBase] = {}
    for base, pair in table(section.get("pairs"), ".pairs", dict).items():
        at = f".pairs.{base}"
        split_name(base, ".pairs key")
        original = split_name(pair.get("original"), f"{at}.original")
        named = table(pair.get("variants"), f"{at}.variants")
        for variant, split in named.items():
            split_name(split, f"{at}.variants.{variant}")
        gap = table(pair.get("bg_gap"), f"{at}.bg_gap")
        same, rand = (split_name(gap.get(side), f"{at}.bg_gap.{side}") for side in ("same", "rand"))
        reliance = table(pair.get("background_reliance"), f"{at}.background_reliance", object)
        reliance_original = split_name(reliance.get("original"), f"{at}.background_reliance.original")
        shifted = reliance.get("shifted")
        if not isinstance(shifted, list) or not shifted:
            raise ValueError(f"{path}: shifted_tests{at}.background_reliance.shifted: {expected}")
        for i, split in enumerate(shifted):
            split_name(split, f"{at}.background_reliance.shifted[{i}]")
        pairs[base] = ShiftedBase(
            original, dict(named), BgGap(same, rand), ShiftedReliance(reliance_original, tuple(shifted))
        )
    return ShiftedTests(dict(variants), pairs, dict(skipped), dict(left_out))


# ---- the rules of a record, for every reader -------------------------------------------------------------------

LABEL_TEXT = re.compile(rb"\s*[0-9]{1,9}\s*")  # a cls member: ASCII digits (int() would also take '0_1', '+1', '١')


def parse_label(data: bytes) -> int:
    """The label a ``cls`` member holds; ValueError unless it is ASCII digits."""
    if not LABEL_TEXT.fullmatch(data):
        raise ValueError(f"{LABEL} holds {brief(data[:20])}, expected a class index in ASCII digits")
    return int(data)


def parse_meta(data: bytes) -> Any:
    """The JSON a ``json`` member holds; ValueError on anything malformed, nesting too deep included."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


@dataclass(frozen=True)
class Parsed:
    """What a reader takes from a valid record's json and cls (``RecordCheck.inspect``)."""

    label: int
    group: int  # -1: none
    has_object: bool
    pair_key: str  # shifted.base_key of a shifted record, else its own key
    donor_label: int  # shifted.donor_label of a mixed record, else -1
    object_id: str  # "" when the adapter recorded none


@dataclass
class Inspection:
    """What :meth:`RecordCheck.inspect` found: ``problems`` (empty: the record is valid), ``parsed`` (None unless
    valid), and ``images``, the image fields whose header passed (those a decoder may go on to decode)."""

    problems: list[str] = field(default_factory=list)
    parsed: Parsed | None = None
    images: list[str] = field(default_factory=list)


class RecordCheck:
    """The rules every record of one split must meet, without decoding a pixel: the one validator of ``augment
    verify`` and the trainer, so that what verify passes trains and what it refuses stops the trainer.

    ``cls`` is ASCII digits and agrees with json's ``label`` and ``class_name``; json's ``key`` and ``split`` are the
    record's; the record holds exactly the fields of the schema (its json's ``has_object``, the split's
    ``augmented`` and CF/F ``fields`` in the manifest); ``group`` is null or in [0, ``MAX_GROUP``]; the build's
    ``image_size`` lies between ``width`` and ``height`` (a squashed image is that size, a short-side resize has it
    as its shorter side) and every image field declares that size in its header, within ``pixels`` and, for a PNG,
    with its metadata within ``encode.PNG_TEXT_BYTES``; ``shifted`` and ``object_id`` are what the trainer pairs
    records on. Unique keys are the caller's to check (they span records)."""

    def __init__(self, manifest: dict[str, Any], split: str, pixels: int = encode.MAX_PIXELS):
        self.split, self.pixels = split, pixels
        self.classes, self.image_size = manifest["dataset"]["classes"], manifest["image_size"]
        # a record without an object holds the base fields; one with an object also its mask and, in an augmented
        # split, the CF/F fields its split lists in the manifest
        info = manifest["splits"][split]
        made = [n for n in info["fields"] if n.startswith(("cf.", "f."))] if info["augmented"] else []
        self.expected = {False: frozenset(BASE_FIELDS), True: frozenset([*BASE_FIELDS, MASK, *made])}

    def inspect(self, key: str, fields: Mapping[str, bytes], names: Collection[str] | None = None) -> Inspection:
        """The problems of record ``key`` (messages without the file or key), given the bytes of the fields read
        and the ``names`` of every field it holds (default: those read)."""
        found = Inspection()
        problems = found.problems
        try:
            meta, label = parse_meta(fields[META]), parse_label(fields[LABEL])
        except (KeyError, ValueError) as e:
            problems.append(f"unreadable {META}/{LABEL} ({type(e).__name__}: {e})")
            return found
        if not isinstance(meta, dict):
            problems.append(f"{META} holds a {type(meta).__name__}, expected an object")
            return found
        classes = self.classes
        if meta.get("key") != key or meta.get("split") != self.split:
            problems.append(f"json says key {brief(meta.get('key'))}, split {brief(meta.get('split'))}")
        said = meta.get("label")
        if type(said) is not int or said != label or label >= len(classes) or meta.get("class_name") != classes[label]:
            problems.append(f"label {label} / json {brief(said)} {brief(meta.get('class_name'))} disagree")
        has = meta.get("has_object")
        names = set(fields if names is None else names)
        if not isinstance(has, bool):
            problems.append(f"json has_object {brief(has)}: expected true or false")
        elif names != self.expected[has]:
            missing, extra = sorted(self.expected[has] - names), sorted(names - self.expected[has])
            problems.append(f"fields differ from the schema (missing {missing}, unexpected {extra})")
        group = meta.get("group")
        if group is not None and (type(group) is not int or not 0 <= group <= MAX_GROUP):
            problems.append(f"json group {brief(group)}: expected null or an integer in [0, {MAX_GROUP}]")
        width, height = meta.get("width"), meta.get("height")
        size = (height, width) if type(width) is int and type(height) is int else None
        if size is None:
            problems.append(f"json width/height {brief(width)}/{brief(height)}: expected integers")
        elif not min(size) <= self.image_size <= max(size):
            problems.append(
                f"json says {width} x {height} pixels; the build's image_size is {self.image_size}, "
                "which lies between an image's sides (the shorter one after a short-side resize)"
            )
        shifted = meta.get("shifted") or {}
        donor = shifted.get("donor_label", -1) if isinstance(shifted, dict) else None
        pair = shifted.get("base_key", key) if isinstance(shifted, dict) else None
        if type(donor) is not int or not -1 <= donor < len(classes) or not isinstance(pair, str):
            problems.append(f"json shifted {brief(shifted)}: expected base_key and a donor_label below {len(classes)}")
        object_id = meta.get("object_id") or ""
        if not isinstance(object_id, str):
            problems.append(f"json object_id {brief(object_id)}: expected a string or null")
        for name, data in sorted(fields.items()):
            if not name.endswith((".jpg", ".png")) and name != IMAGE:
                continue
            try:
                _, w, h = encode.check_header(data, self.pixels)
            except ValueError as e:
                problems.append(f"field {name!r}: {e}")
                continue
            if size is not None and (h, w) != size:
                problems.append(f"field {name!r} is {(h, w)}, json says {size}")
                continue
            found.images.append(name)
        if not problems:
            found.parsed = Parsed(label, -1 if group is None else group, has, pair, donor, object_id)
        return found


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
