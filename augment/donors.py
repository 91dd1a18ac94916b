"""Donors for ``mixed-rand``: a sample of another class from the same split, drawn in O(1) and loaded on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from augment import masks
from augment.datasets import Dataset, Sample
from augment.errors import BuildError
from augment.infill.mixed_rand import Donor
from augment.read import SourceError

MAX_DONOR_DRAWS = 20


@dataclass(frozen=True)
class Donors:
    """Labels of one split sorted into blocks, to draw "a sample of another class" in O(1)."""

    order: np.ndarray  # sample indices sorted by label
    start: dict[int, int]  # label -> first position in ``order``
    stop: dict[int, int]

    @classmethod
    def of(cls, labels: np.ndarray, eligible: np.ndarray | None = None) -> Donors:
        """Index ``labels``; only ``eligible`` samples (default: all) can be drawn."""
        candidates = np.arange(len(labels)) if eligible is None else np.flatnonzero(eligible)
        order = candidates[np.argsort(labels[candidates], kind="stable")]
        values, first, counts = np.unique(labels[order], return_index=True, return_counts=True)
        keys = values.tolist()
        return cls(
            order,
            dict(zip(keys, first.tolist(), strict=True)),
            dict(zip(keys, (first + counts).tolist(), strict=True)),
        )

    def pick(self, label: int, rng: np.random.Generator) -> int | None:
        """A uniformly drawn sample index with another label, or None when the split has a single class."""
        lo, hi = self.start.get(label, 0), self.stop.get(label, 0)
        n_others = len(self.order) - (hi - lo)
        if n_others == 0:
            return None
        r = int(rng.integers(n_others))
        return int(self.order[r if r < lo else r + (hi - lo)])


def load_donor(
    sample: Sample, dataset: Dataset, donors: Donors | None, rng: np.random.Generator, on_error: str,
    refine: Callable[[Sample], Sample] | None = None,
) -> Donor:  # fmt: skip
    """Draw and load a donor of another class from the sample's split (for mixed-rand).

    A donor without an object is replaced by another draw from the same generator, and so, with
    ``on_error="skip"``, is a donor that fails to load. ``refine`` gives a loaded donor its object when the mask
    source finds one without a box (``--masks-from cam``).
    """
    for _ in range(MAX_DONOR_DRAWS):
        index = None if donors is None else donors.pick(sample.label, rng)
        if index is None:
            raise BuildError(f"{sample.split}/{sample.key}: mixed-rand needs a sample of another class in the split")
        try:
            other = dataset.load(sample.split, index)
        except SourceError:
            if on_error == "skip":
                continue
            raise
        except Exception as e:  # name the donor, not only the sample being augmented
            raise BuildError(f"{sample.split} sample {index} of {dataset.name} (the mixed-rand donor of "
                             f"{sample.key}): {type(e).__name__}: {e}") from e  # fmt: skip
        if refine is not None:
            other = refine(other)
        hole = masks.cf_hole(other.mask, other.boxes, other.image.shape[:2])
        if hole is not None:
            return Donor(other.image, hole)
    raise BuildError(
        f"{sample.split}/{sample.key}: {MAX_DONOR_DRAWS} mixed-rand donors in a row failed to load or had no object"
    )
