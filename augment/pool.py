"""The value pool of a split: pixel values of many of its images, from which ``shuffle`` fills a hole.

The paper's code permutes every value of a whole training batch and pastes the hole's share, so a hole gets about
31/32 of its values from other images. Drawing from one image's own values instead keeps its colour histogram, which
on photographs is mostly its background's, the very cue that F images are meant to break. A batch-wide permutation
would make the bytes depend on the batch; a fixed, seeded pool per split has the same effect and does not:

- **Members**: ``POOL_IMAGES`` (64, the paper's batch is 32-64) samples of the split, drawn by :func:`members` from
  the build seed and the split (every sample when the split is smaller). A member that fails to load with
  ``--on-error skip`` is left out; every process leaves out the same ones, and the manifest lists the members used
  (:func:`used_members`).
- **Values**: each member gives ``POOL_VALUES // POOL_IMAGES`` of its values (object and background, every channel),
  drawn without replacement by its own generator (keyed by the build seed and its sample key), or all of them when it
  has fewer. The pool is their concatenation: at most ``POOL_VALUES`` bytes, each member weighted alike whatever its
  size.
- **Draws**: a hole of n pixels gets 3n values drawn uniformly *with* replacement from the pool by the sample's own
  generator. Against a pool of ~10^6 values this is, for a hole, the same as the share of a permutation.

Each process builds the pool of a split once, on first use (64 decodes), so a shard never decodes 32 other images per
sample, and builds stay byte-identical for any ``--workers``, slices or dask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from augment.rng import sample_rng

POOL_IMAGES = 64
POOL_VALUES = 1 << 20


@dataclass(frozen=True)
class ValuePool:
    """The flat uint8 values a ``shuffle`` hole is filled from, the keys of the samples they came from, and the drawn
    members left out: (position among :func:`members`, why)."""

    values: np.ndarray
    keys: tuple[str, ...]
    left_out: tuple[tuple[int, str], ...] = ()

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` values drawn uniformly with replacement."""
        if self.values.size == 0:
            raise ValueError("the shuffle pool is empty: no member image of the split could be loaded")
        return self.values[rng.integers(self.values.size, size=n)]


class LeftOut(Exception):
    """Raised by :func:`load_pool`'s ``load`` to leave a member out (``--on-error skip``); the message says why."""


def members(seed: int, split: str, n: int, images: int = POOL_IMAGES) -> np.ndarray:
    """Source indices of the pool's members among a split's ``n`` samples, ascending."""
    return np.sort(sample_rng(seed, "shuffle-pool", split).choice(n, size=min(images, n), replace=False))


def member_values(seed: int, key: str, image: np.ndarray, share: int = POOL_VALUES // POOL_IMAGES) -> np.ndarray:
    """A member's contribution: ``share`` of its values without replacement (all of them when it has fewer)."""
    values = image.reshape(-1)
    if values.size <= share:
        return values.copy()
    return values[np.sort(sample_rng(seed, key, "shuffle-pool").choice(values.size, size=share, replace=False))]


def make_pool(seed: int, images: list[tuple[str, np.ndarray]]) -> ValuePool:
    """The pool from its loaded members, ``(key, image)`` in member order."""
    if not images:
        return ValuePool(np.zeros(0, np.uint8), ())
    parts = [member_values(seed, key, image) for key, image in images]
    return ValuePool(np.concatenate(parts), tuple(key for key, _ in images))


def load_pool(seed: int, split: str, n: int, load: Callable[[int], tuple[str, np.ndarray]]) -> ValuePool:
    """The pool of a split of ``n`` samples; ``load(i)`` gives sample i's ``(key, image)``, or raises
    :class:`LeftOut` to leave it out."""
    loaded, left_out = [], []
    for position, i in enumerate(members(seed, split, n)):
        try:
            loaded.append(load(int(i)))
        except LeftOut as e:
            left_out.append((position, str(e)))
    return replace(make_pool(seed, loaded), left_out=tuple(left_out))


def used_members(section: dict[str, Any], left_out: dict[str, list[list]]) -> dict[str, Any]:
    """The manifest's pool ``section`` with, per split, only the members used; the drawn ones left out (``left_out``:
    split -> [position, why] as the shards recorded them) go to ``left_out`` (key -> why), present only when any were,
    so a build without bad inputs keeps its bytes."""
    if not any(left_out.values()):
        return section
    members, skipped = {}, {}
    for split, drawn in section["members"].items():
        out = {drawn[position]: why for position, why in left_out.get(split, [])}
        members[split] = [key for key in drawn if key not in out]
        if out:
            skipped[split] = out
    return {**section, "members": members, "left_out": skipped}


def as_recorded(section: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The planned pool ``section`` less the members that a finished build's manifest (its pool section,
    ``recorded``) says were left out: what a re-run of that build compares the manifest with."""
    left_out = (recorded or {}).get("left_out", {})
    positions = {
        split: [[drawn.index(key), why] for key, why in left_out.get(split, {}).items() if key in drawn]
        for split, drawn in section["members"].items()
    }
    return used_members(section, positions)


def describe() -> dict[str, object]:
    """The pool's parameters, for the manifest."""
    return {
        "images": POOL_IMAGES,
        "values": POOL_VALUES,
        "per_image": POOL_VALUES // POOL_IMAGES,
        "draw": "uniform with replacement",
    }
