"""The value pool of a split: pixel values of many of its images, from which ``shuffle`` fills a hole.

The paper's code permutes every value of a whole training batch and pastes the hole's share, so a hole gets about
31/32 of its values from other images. Drawing from one image's own values instead keeps its colour histogram, which
on photographs is mostly its background's, the very cue that F images are meant to break. A batch-wide permutation
would make the bytes depend on the batch; a fixed, seeded pool per split has the same effect and does not:

- **Members**: ``POOL_IMAGES`` (64, the paper's batch is 32-64) samples of the split, drawn by :func:`members` from
  the build seed and the split (every sample when the split is smaller). A member that fails to load with
  ``--on-error skip`` is left out; every process leaves out the same ones.
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
from dataclasses import dataclass

import numpy as np

from augment.rng import sample_rng

POOL_IMAGES = 64
POOL_VALUES = 1 << 20


@dataclass(frozen=True)
class ValuePool:
    """The flat uint8 values a ``shuffle`` hole is filled from, and the keys of the samples they came from."""

    values: np.ndarray
    keys: tuple[str, ...]

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` values drawn uniformly with replacement."""
        if self.values.size == 0:
            raise ValueError("the shuffle pool is empty: no member image of the split could be loaded")
        return self.values[rng.integers(self.values.size, size=n)]


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


def load_pool(seed: int, split: str, n: int, load: Callable[[int], tuple[str, np.ndarray] | None]) -> ValuePool:
    """The pool of a split of ``n`` samples; ``load(i)`` gives sample i's ``(key, image)``, or None to leave it out."""
    loaded = [load(int(i)) for i in members(seed, split, n)]
    return make_pool(seed, [m for m in loaded if m is not None])


def describe() -> dict[str, object]:
    """The pool's parameters, for the manifest."""
    return {"images": POOL_IMAGES, "values": POOL_VALUES, "per_image": POOL_VALUES // POOL_IMAGES,
            "draw": "uniform with replacement"}  # fmt: skip
