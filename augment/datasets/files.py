"""The shared base of the file-backed adapters: scanned items, and one load path for all of them.

An adapter scans its source layout once (in the main process) into ``Item``s: a key, a label, an image path and
where the object annotation comes from. ``FileDataset.load`` then reads any item in any worker process through
``augment.read``: decode upright, read the mask, validate the boxes, resize everything together.

A soft mask (``MaskFile(path, soft=True)``, Waterbirds' CUB segmentations) gives two regions: the object
(``augment.read.soft_object``: at least half the mask's maximum), which is the sample's mask (the F hole's
complement, the stored ``mask.png``), and its extent (every non-zero pixel), whose rectangle is added to the
sample's boxes so that the CF hole (``augment.masks.cf_hole``: the union of the boxes) still spans the soft rim.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from augment.config import ON_ERROR
from augment.datasets import Flag, Frame, Ref, Sample, SplitPlan
from augment.masks import mask_to_box
from augment.read import (
    DEFAULT_MAX_IMAGE_PIXELS,
    RESIZE_MODES,
    Decoded,
    SourceError,
    check_boxes,
    read_image,
    read_mask,
    read_soft_mask,
    read_text,
    resize,
    target_size,
    upright_boxes,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# The options every file adapter takes, declared once (``augment.datasets.Flag``; `augment build` shows them).
ROOT = Flag("Dataset folder, as released upstream (see docs/DATASETS.md).", Path)
MASKS = Flag("Mask folder (waterbirds: default <root>/../segmentations; folder).", Path)
RESIZE = Flag(
    "File datasets: squash to SIZE x SIZE, or short side to SIZE keeping the aspect [default: {default}].",
    choices=RESIZE_MODES,
)
MAX_IMAGE_PIXELS = Flag("Refuse larger images as decompression bombs [default: PIL's {default}].", int, min=1)


class MaskSource(Protocol):
    """Where an item's object mask comes from; ``read`` returns a bool mask on the upright image."""

    def read(self, decoded: Decoded, image_path: Path) -> np.ndarray: ...

    def files(self) -> list[str]: ...


@runtime_checkable
class ExtentMaskSource(MaskSource, Protocol):
    """A mask source that may also report an extent: annotated pixels beyond the object (a soft mask's rim).

    ``read_with_extent`` returns ``(object, extent or None)``, both bool on the upright image; ``FileDataset.load``
    adds the extent's rectangle to the sample's boxes, so the CF hole spans it while the F hole keeps to the object.
    """

    def read_with_extent(self, decoded: Decoded, image_path: Path) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass(frozen=True, repr=False)
class MaskFile:
    """A mask image or ``.npy`` array beside the dataset.

    Non-zero = object; with ``soft``, object = at least half the mask's maximum (``augment.read.soft_object``) and
    every non-zero pixel is the extent the CF rectangle spans.
    """

    path: str
    soft: bool = False

    def read(self, decoded: Decoded, image_path: Path) -> np.ndarray:
        return self.read_with_extent(decoded, image_path)[0]

    def read_with_extent(self, decoded: Decoded, image_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        if self.soft:
            return read_soft_mask(Path(self.path), decoded)
        return read_mask(Path(self.path), decoded), None  # the object is the whole annotation: no extra extent

    def files(self) -> list[str]:
        return [self.path]

    def __repr__(self) -> str:  # the fingerprint hashes it: a hard mask keeps the repr it had before ``soft``
        return f"MaskFile(path={self.path!r}" + (", soft=True)" if self.soft else ")")


def read_object(source: MaskSource, decoded: Decoded, image_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A source's object mask and its extent (None: the object is all there is), both on the upright image."""
    if isinstance(source, ExtentMaskSource):
        return source.read_with_extent(decoded, image_path)
    return source.read(decoded, image_path), None


def add_extent_box(
    boxes: np.ndarray | None, space: tuple[int, int], extent: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """``boxes`` (in ``space`` pixels) plus the rectangle around ``extent`` (a mask on the upright image of
    ``size``), in ``space`` pixels. The CF hole is the union of the boxes, so it then spans the whole extent; an
    item's own boxes are kept."""
    box = mask_to_box(extent).astype(np.float64)[None]
    if boxes is None:
        return box, size
    sx, sy = space[0] / size[0], space[1] / size[1]
    return np.concatenate([boxes, box * [sx, sy, sx, sy]]), space


@dataclass
class Item:
    """One sample as scanned: no pixels yet."""

    key: str
    label: int
    path: str  # the image, relative to the dataset root
    group: int | None = None
    mask: MaskSource | None = None
    boxes: list[list[float]] | None = None  # [x0, y0, x1, y1] in ``box_space`` pixels
    box_space: tuple[int, int] | None = None  # (W, H) an annotation file declares; None = the image's own size
    meta: dict[str, Any] = field(default_factory=dict)
    object_id: str | None = None  # Sample.object_id: the object across the dataset's own test variants
    location: str | None = None  # Sample.location: the camera location (CCT)


MAX_KEY = 64  # a tar member name is at most 100 characters: key + ".f.mixed-rand.0.jpg" must fit


def safe_key(*parts: object, free: bool = False) -> str:
    """A webdataset key from parts: no dots or slashes (they would split the field name). A key that had to be
    changed, or is long, keeps its first characters and ends in a hash of the original text, so distinct names
    (``a.b`` and ``a-b``) stay distinct keys. A name that is not UTF-8 (read as surrogate escapes) hashes its bytes.

    ``free``: the parts are free-form names that may hold "_" themselves (a folder tree's split, class and file), so
    that two different names can join to one text (``sea_lion`` + ``0001.jpg`` and ``sea`` + ``lion_0001.jpg``).
    Where a part before the last holds "_", the key then ends in a hash of the parts one by one, not of their join.
    Without it (fixed split names and ids), keys stay as they were."""
    texts = [str(p) for p in parts]
    raw = "_".join(texts)
    key = "_".join(re.sub(r"[^A-Za-z0-9_-]", "-", t) for t in texts)
    joined_alike = free and any("_" in t for t in texts[:-1])
    if key != raw or len(key) > MAX_KEY or joined_alike:
        # sanitising could make two names equal: a hash of the original keeps them apart
        text = json.dumps(texts) if joined_alike else raw
        key = key[: MAX_KEY - 13] + "-" + hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return key


class Rejects:
    """Scan-time bad inputs: raised at once with ``fail``, collected with ``skip``."""

    def __init__(self, on_error: str):
        if on_error not in ON_ERROR:
            raise ValueError(f"--on-error: got {on_error!r}, expected one of {', '.join(ON_ERROR)}")
        self.on_error = on_error
        self.items: list[dict[str, str]] = []

    def add(self, path: Path | str, reason: str, split: str = "") -> None:
        if self.on_error == "fail":
            raise SourceError(path, reason)
        self.items.append({"split": split, "path": str(path), "reason": reason})


@dataclass
class FileDataset:
    """A scanned file-backed dataset; see the module docstring."""

    name: str
    root: str
    classes: tuple[str, ...]
    items: dict[str, list[Item]]
    augmented: tuple[str, ...] = ("train",)  # the splits that get CF/F images
    image_size: int | None = None  # None: default_image_size
    resize_mode: str = "squash"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    params: dict[str, Any] = field(default_factory=dict)  # adapter facts for the manifest (label map, bg_gap, ...)
    rejects: list[dict[str, str]] = field(default_factory=list)  # skipped while scanning
    shifted_splits: tuple[str, ...] = ()  # splits whose background is changed already: no base of --shifted-tests
    empty: dict[str, list[Item]] = field(default_factory=dict)  # object-free images per split (CCT's empty frames)

    default_image_size = 256

    def __post_init__(self) -> None:
        if self.image_size is None:
            self.image_size = self.default_image_size
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"--resize: got {self.resize_mode!r}, expected one of {', '.join(RESIZE_MODES)}")
        if self.image_size < 16:
            raise ValueError(f"--image-size: got {self.image_size}, expected at least 16")

    def splits(self) -> dict[str, SplitPlan]:
        return {
            split: SplitPlan(
                tuple(Ref(i.key, i.label, annotated(i), segmented(i), i.location) for i in items),
                augment=split in self.augmented,
            )
            for split, items in self.items.items()
        }

    def load(self, split: str, index: int) -> Sample:
        item = self.items[split][index]
        path = Path(self.root) / item.path
        decoded = read_image(path, self.max_image_pixels)
        mask, extent = read_object(item.mask, decoded, path) if item.mask is not None else (None, None)
        if mask is not None and not mask.any():
            if split in self.augmented:  # a training image whose object mask is empty cannot give CF/F images
                raise SourceError(item.mask.files()[0] if item.mask.files() else path, "empty mask: no object pixel")
            mask, extent = None, None  # evaluation splits keep the image, as a sample without an object
        boxes, space = None, decoded.size
        if item.boxes is not None and len(item.boxes):
            boxes, space = upright_boxes(np.asarray(item.boxes, dtype=np.float64), item.box_space, decoded)
            boxes = check_boxes(path, boxes, space)
        if extent is not None and extent.any():
            boxes, space = add_extent_box(boxes, space, extent, decoded.size)
        out_size = target_size(decoded.size, self.image_size, self.resize_mode)
        image, mask, boxes = resize(decoded.image, mask, boxes, space, out_size)
        return Sample(
            key=item.key,
            image=image,
            label=item.label,
            class_name=self.classes[item.label],
            split=split,
            source=item.path,
            mask=mask,
            boxes=boxes,
            group=item.group,
            meta=item.meta,
            object_id=item.object_id,
            location=item.location,
        )

    def empty_frames(self, split: str) -> list[Frame]:
        """The split's object-free images (``empty``), for ``--backgrounds dataset``."""
        return [
            Frame(i.key, i.path, file_size(Path(self.root) / i.path), i.location) for i in self.empty.get(split, [])
        ]

    def load_empty(self, split: str, index: int) -> np.ndarray:
        """Object-free image ``index`` of the split, read and resized as the samples are (``load``)."""
        decoded = read_image(Path(self.root) / self.empty[split][index].path, self.max_image_pixels)
        out_size = target_size(decoded.size, self.image_size, self.resize_mode)
        return resize(decoded.image, None, None, decoded.size, out_size)[0]

    def fingerprint(self) -> str:
        """sha256 over every item (key, label, annotation) and the path and size of every file it reads.

        File contents are not hashed (that would read the whole dataset); a changed, added or removed file of a
        different size, or any annotation change, changes the fingerprint.
        """
        digest = hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode())
        for split, items in self.items.items():
            for item in items:
                files = [str(Path(self.root) / item.path), *(item.mask.files() if item.mask else [])]
                sizes = [file_size(f) for f in files]
                row = [
                    split,
                    item.key,
                    item.label,
                    item.path,
                    item.group,
                    item.boxes,
                    item.box_space,
                    sizes,
                    repr(item.mask),
                ]
                digest.update(json.dumps(row, default=str).encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "image_size": self.image_size,
            "resize": self.resize_mode,
            "max_image_pixels": self.max_image_pixels,
            "split_sizes": {s: len(v) for s, v in self.items.items()},
            "augmented_splits": list(self.augmented),
            **self.params,
        }


def file_size(path: Path | str) -> int:
    """The file's size in bytes, -1 when it is missing (what the fingerprints hash instead of contents)."""
    return os.stat(path).st_size if os.path.exists(path) else -1


def annotated(item: Item) -> bool:
    """Whether the item has an object annotation: a mask or boxes."""
    return item.mask is not None or bool(item.boxes)


def segmented(item: Item) -> bool:
    """Whether the item's annotation outlines its object (a mask that is more than its boxes)."""
    return item.mask is not None and getattr(item.mask, "segmented", True)


def load_coco_json(path: Path, kind: str) -> dict[str, Any]:
    """A COCO-style JSON (``kind`` names the flavour in errors), checked for the keys the adapters read."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level is a {type(data).__name__}, expected a {kind} object")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"{path}: missing or non-list keys {missing}; expected {kind} JSON")
    return data


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def file_options(root: Path | str | None, name: str) -> Path:
    """Check the ``--root`` every file-backed adapter needs."""
    if root is None:
        raise ValueError(f"--dataset {name} needs --root, the folder the dataset was unpacked into")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root}: folder not found")
    return root
