"""The background bank of ``--factual bank``: where its backgrounds come from, how one is drawn for a sample, and what
the manifest and each record say of it.

- **Sources** (``--backgrounds``): a folder of the user's photos, searched recursively for image files
  (``augment.datasets.files.IMAGE_SUFFIXES``), each read as a source image is (``augment.read``: EXIF orientation,
  every mode to RGB, the decompression-bomb limit of ``--max-image-pixels``); or ``dataset``: the object-free images
  of the split being built (``Dataset.empty_frames``, CCT's empty frames), read and resized as its samples are. Only
  the split's own frames are drawn, so a training image never gets a background of an evaluation split.
- **Rules** (``--background-rule``, :data:`DRAW`): ``any`` draws uniformly from the bank; ``same-class-location``
  (Gao et al., ICML 2023, "Copy-Paste, Same Y") draws a location uniformly among the split's locations, other than
  the sample's own, where the sample's class occurs and that have empty frames, then one of its frames uniformly.
  Where no such location exists, the fallback (:data:`FALLBACK`) is a location drawn among all the other locations
  with empty frames; each split's manifest entry counts the draws of each kind (``background_draws``). A sample is
  never given a frame of its own location: a build where that could not be kept (the frames all at one location
  where samples are) is refused before any work, as is one whose dataset has no locations.
- **Draws** come from the sample's own generator (``sample_rng(seed, key, "f", "bank", copy)``): the frame, then the
  crop offset of the resize rule (``augment.infill.bank``), so the bytes do not depend on workers or order. A file
  that fails to load stops the build, or with ``--on-error skip`` is left out (listed once in rejects.jsonl) and the
  draw made again, up to ``MAX_DRAWS`` times.
- **Records**: the record's json names each f.bank field's background (``bank``): the file relative to the bank root
  and its sha256 (a folder), or the frame's key, path and location (``dataset``); the rule that drew it, the scaled
  size and the crop. The manifest's ``backgrounds`` records the bank: its source, root, number of files, a
  fingerprint of the file list and sizes, and the rule.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from augment import options
from augment.config import ANY, BANK_FROM_DATASET, SAME_CLASS_LOCATION, BuildConfig
from augment.contract.shards import sha256_file
from augment.datasets import Dataset, Frame, Sample, SplitPlan
from augment.datasets.files import IMAGE_SUFFIXES, file_size
from augment.errors import BuildError
from augment.infill.bank import RESIZE_RULE, Background, cover_size
from augment.read import DEFAULT_MAX_IMAGE_PIXELS, SourceError, read_image

FOLDER = "folder"  # the source of a bank of the user's photos (the other: BANK_FROM_DATASET)
MAX_DRAWS = 20
OTHER_LOCATION = "other-location"  # how a draw was made: ANY, SAME_CLASS_LOCATION (the rules), or this fallback
DRAW = {
    ANY: "a background drawn uniformly among the bank's files (--backgrounds dataset: the split's empty frames)",
    SAME_CLASS_LOCATION: "an empty frame of the split, from a location drawn uniformly among its locations other "
    "than the sample's own where the sample's class occurs and that have empty frames, then uniformly among that "
    "location's frames",
}
FALLBACK = (
    "where no other location of the sample's class has empty frames: a location drawn uniformly among all the "
    "split's other locations with empty frames (counted as other-location); never the sample's own location"
)


@dataclass
class Bank:
    """The backgrounds one augmented split draws from, and how (``rule``)."""

    source: str  # FOLDER or BANK_FROM_DATASET
    root: Path
    split: str
    frames: tuple[Frame, ...]
    rule: str
    fingerprint: str
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    load_empty: Callable[[str, int], np.ndarray] | None = None  # the dataset's, for source "dataset"
    class_locations: dict[int, tuple[str, ...]] = field(default_factory=dict)  # same-class-location: label -> locs
    by_location: dict[str, np.ndarray] = field(default_factory=dict)  # location -> its frames' indices
    hashes: dict[int, str] = field(default_factory=dict)  # this process's sha256 of the folder files read

    def pick(self, sample: Sample, rng: np.random.Generator) -> tuple[int, str]:
        """The index of a frame for ``sample`` and how it was drawn (``any``, ``same-class-location`` or the
        fallback ``other-location``)."""
        if self.rule == ANY:
            return int(rng.integers(len(self.frames))), ANY
        own = sample.location
        how = SAME_CLASS_LOCATION
        places = [loc for loc in self.class_locations.get(sample.label, ()) if loc != own and loc in self.by_location]
        if not places:
            how, places = OTHER_LOCATION, [loc for loc in self.by_location if loc != own]
        if not places:  # refused before any work (check_locations); kept as a guard
            raise BuildError(f"{sample.split}/{sample.key}: no empty frame outside its location {own!r} to draw")
        frames = self.by_location[places[int(rng.integers(len(places)))]]
        return int(frames[int(rng.integers(len(frames)))]), how

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame ``index`` as uint8 RGB and what a record says of it; SourceError when it cannot be read."""
        frame = self.frames[index]
        if self.source == BANK_FROM_DATASET:
            image = self.load_empty(self.split, index)
            return image, {"source": self.source, "key": frame.key, "path": frame.path, "location": frame.location}
        path = self.root / frame.path
        image = read_image(path, self.max_pixels).image
        if index not in self.hashes:
            self.hashes[index] = sha256_file(path)
        return image, {"source": self.source, "path": frame.path, "sha256": self.hashes[index]}


@dataclass
class Draws:
    """One run of samples' draws from a bank (a shard's): counts per kind, and the files left out as bad."""

    bank: Bank
    on_error: str = "fail"
    counts: Counter[str] = field(default_factory=Counter)
    left_out: dict[str, str] = field(default_factory=dict)  # path -> why
    bad: set[int] = field(default_factory=set)  # the frames left out: drawn again, never read again

    def draw(self, sample: Sample, rng: np.random.Generator) -> tuple[Background, dict[str, Any]]:
        """A background for ``sample`` drawn with ``rng`` (the frame, then the crop offset), and its record."""
        h, w = sample.image.shape[:2]
        for _ in range(MAX_DRAWS):
            index, how = self.bank.pick(sample, rng)
            if index in self.bad:
                continue
            try:
                image, facts = self.bank.load(index)
            except SourceError as e:
                if self.on_error == "skip":
                    self.left_out[e.path] = f"{e.reason} (a background of --backgrounds, left out of the bank)"
                    self.bad.add(index)
                    continue
                raise SourceError(e.path, f"{e.reason} (a background of --backgrounds)") from None
            sw, sh = cover_size((image.shape[1], image.shape[0]), (w, h))
            x, y = int(rng.integers(sw - w + 1)), int(rng.integers(sh - h + 1))
            self.counts[how] += 1
            return Background(image, (x, y)), {**facts, "rule": how, "scaled": [sw, sh], "crop": [x, y, x + w, y + h]}
        raise BuildError(
            f"{sample.split}/{sample.key}: {MAX_DRAWS} backgrounds in a row failed to load from --backgrounds "
            f"{self.bank.root}"
        )

    def summary(self) -> dict[str, Any]:
        """What a shard's journal record keeps of its draws (``augment.runner.journal`` sums them)."""
        return {
            "fingerprint": self.bank.fingerprint,
            "draws": dict(sorted(self.counts.items())),
            "left_out": dict(sorted(self.left_out.items())),
        }


def fingerprint(rows: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, default=str).encode("utf-8", "surrogateescape")).hexdigest()


def folder_frames(root: Path) -> tuple[Frame, ...]:
    """The image files under ``root`` (recursively, by suffix), by their path relative to it."""
    found = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return tuple(Frame(rel, rel, file_size(p)) for rel, p in found if p.is_file())


def open_banks(config: BuildConfig, dataset: Dataset, plans: dict[str, SplitPlan]) -> dict[str, Bank]:
    """The bank of each augmented split, or {} without ``--factual bank``; a ValueError naming the flag when the
    bank is empty or the rule cannot be kept (before any work)."""
    if not options.needs_backgrounds(config):
        return {}
    augmented = [split for split, plan in plans.items() if plan.augment]
    max_pixels = getattr(dataset, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)  # the limit its samples are read with
    if config.backgrounds == BANK_FROM_DATASET:
        root = Path(str(getattr(dataset, "root", "."))).absolute()
        frames = {split: tuple(dataset_frames(dataset, split)) for split in augmented}
        rows = [[split, f.key, f.path, f.size, f.location] for split in augmented for f in frames[split]]
        load_empty = dataset.load_empty
    else:
        root = Path(config.backgrounds).absolute()
        listing = folder_frames(root)
        if not listing:
            raise ValueError(
                f"--backgrounds {config.backgrounds}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its "
                "subfolders; pass a folder of background photos"
            )
        frames = dict.fromkeys(augmented, listing)
        rows, load_empty = [[f.path, f.size] for f in listing], None
    print_ = fingerprint(rows)
    banks = {}
    for split in augmented:
        source = BANK_FROM_DATASET if config.backgrounds == BANK_FROM_DATASET else FOLDER
        bank = Bank(source, root, split, frames[split], config.background_rule, print_, max_pixels, load_empty)
        if config.background_rule == SAME_CLASS_LOCATION:
            check_locations(dataset, bank, plans[split])
        banks[split] = bank
    return banks


def dataset_frames(dataset: Dataset, split: str) -> list[Frame]:
    """The split's object-free images; a ValueError when the adapter has none there."""
    frames = dataset.empty_frames(split) if hasattr(dataset, "empty_frames") else []
    if not frames:
        raise ValueError(
            f"--backgrounds {BANK_FROM_DATASET}: --dataset {dataset.name} has no object-free images in its {split} "
            "split (cct's empty frames are); pass --backgrounds with a folder of background photos instead"
        )
    return frames


def check_locations(dataset: Dataset, bank: Bank, plan: SplitPlan) -> None:
    """Fill in the bank's locations for ``same-class-location``, or refuse (one line) a dataset without locations and
    a bank whose frames cannot keep a sample off its own location."""
    flag = f"--background-rule {SAME_CLASS_LOCATION}"
    refs = [r for r in plan.refs if r.annotated]  # the samples that get F images
    if not any(r.location is not None for r in plan.refs):
        raise ValueError(
            f"{flag}: --dataset {dataset.name} records no camera locations (cct does); use --background-rule {ANY}"
        )
    unplaced = sum(r.location is None for r in refs)
    if unplaced:
        raise ValueError(
            f"{flag}: {unplaced} samples of {bank.split} have no camera location; give every image a location or "
            f"use --background-rule {ANY}"
        )
    placed: dict[str, list[int]] = {}
    for i, frame in enumerate(bank.frames):
        if frame.location is not None:
            placed.setdefault(frame.location, []).append(i)
    if not placed:
        raise ValueError(f"{flag}: the empty frames of {bank.split} have no camera location; use --background-rule any")
    for location in sorted({r.location for r in refs}):
        if not set(placed) - {location}:
            raise ValueError(
                f"{flag}: every empty frame of {bank.split} is at location {location}, where samples are, and a "
                f"sample never gets a frame of its own location; use --background-rule {ANY}"
            )
    classes: dict[int, set[str]] = {}
    for r in plan.refs:
        if r.location is not None:
            classes.setdefault(r.label, set()).add(r.location)
    bank.class_locations = {label: tuple(sorted(locs)) for label, locs in sorted(classes.items())}
    bank.by_location = {loc: np.array(idx, dtype=np.int64) for loc, idx in sorted(placed.items())}


def manifest_section(banks: dict[str, Bank]) -> dict[str, Any] | None:
    """The manifest's ``backgrounds``: the bank's source, root, size, fingerprint and rule; None without a bank."""
    if not banks:
        return None
    first = next(iter(banks.values()))
    section: dict[str, Any] = {
        "source": first.source,
        "root": str(first.root),
        "files": len(first.frames) if first.source != BANK_FROM_DATASET else sum(len(b.frames) for b in banks.values()),
        "fingerprint": first.fingerprint,
        "rule": first.rule,
        "draw": DRAW[first.rule],
        "resize": RESIZE_RULE,
    }
    if first.source == BANK_FROM_DATASET:
        section["frames"] = {
            split: dict(sorted(Counter(str(f.location) for f in bank.frames).items())) for split, bank in banks.items()
        }
    if first.rule == SAME_CLASS_LOCATION:
        section["fallback"] = FALLBACK
    return section
