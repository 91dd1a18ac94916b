"""Donors: a sample of the same split whose background is pasted behind another sample's object, drawn in O(1) and
loaded on demand. ``mixed-rand`` draws one of another class; the shifted test splits (``augment.shifted_tests``) also
draw one of the same class and one of the next class."""

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

    def pick_same(self, label: int, rng: np.random.Generator, exclude: int) -> int | None:
        """A uniformly drawn sample index with ``label`` other than ``exclude``; ``exclude`` itself when it is the
        only eligible sample of its class, None when the class has none."""
        lo, hi = self.start.get(label, 0), self.stop.get(label, 0)
        block = self.order[lo:hi]  # ascending: ``of`` sorts the eligible indices stably by label
        at = int(np.searchsorted(block, exclude))
        present = at < len(block) and int(block[at]) == exclude
        n = len(block) - present
        if n == 0:
            return exclude if present else None
        r = int(rng.integers(n))
        return int(block[r + 1 if present and r >= at else r])

    def next_label(self, label: int) -> int | None:
        """The first label after ``label`` (cyclically, as in c + 1 mod K) that has eligible samples; None when no
        other label has any."""
        present = sorted(self.start)
        later = [c for c in present if c > label] or [c for c in present if c < label]
        return later[0] if later else None

    def pick_next(self, label: int, rng: np.random.Generator) -> int | None:
        """A uniformly drawn sample index of :meth:`next_label`, or None when the split has a single class."""
        other = self.next_label(label)
        if other is None:
            return None
        lo, hi = self.start[other], self.stop[other]
        return int(self.order[lo + int(rng.integers(hi - lo))])


def load_donor(
    sample: Sample,
    dataset: Dataset,
    donors: Donors | None,
    rng: np.random.Generator,
    on_error: str,
    refine: Callable[[Sample], Sample] | None = None,
) -> Donor:
    """Draw and load a donor of another class from the sample's split (for mixed-rand); see :func:`draw_donor`."""
    pick = None if donors is None else (lambda r: donors.pick(sample.label, r))
    other, hole = draw_donor(sample, sample.split, dataset, pick, rng, on_error, refine)
    return Donor(other.image, hole)


def draw_donor(
    sample: Sample,
    split: str,
    dataset: Dataset,
    pick: Callable[[np.random.Generator], int | None] | None,
    rng: np.random.Generator,
    on_error: str,
    refine: Callable[[Sample], Sample] | None = None,
    purpose: str = "mixed-rand",
    wanted: str = "another class",
) -> tuple[Sample, np.ndarray]:
    """A donor for ``sample``, drawn by ``pick(rng)`` (an index into ``split``) and loaded: ``(donor, its CF hole)``.

    A donor without an object is replaced by another draw from the same generator, and so, with
    ``on_error="skip"``, is a donor that fails to load. ``refine`` gives a loaded donor its object when the mask
    source finds one without a box (``--masks-from cam``). ``purpose`` names the donor's use in errors, and
    ``wanted`` the class ``pick`` draws from.
    """
    for _ in range(MAX_DONOR_DRAWS):
        index = None if pick is None else pick(rng)
        if index is None:
            raise BuildError(f"{sample.split}/{sample.key}: {purpose} needs a sample of {wanted} in the split")
        try:
            other = dataset.load(split, index)
        except SourceError:
            if on_error == "skip":
                continue
            raise
        except Exception as e:  # name the donor, not only the sample being augmented
            raise BuildError(
                f"{split} sample {index} of {dataset.name} (the {purpose} donor of "
                f"{sample.key}): {type(e).__name__}: {e}"
            ) from e
        if refine is not None:
            other = refine(other)
        hole = masks.cf_hole(other.mask, other.boxes, other.image.shape[:2])
        if hole is not None:
            return other, hole
    raise BuildError(
        f"{sample.split}/{sample.key}: {MAX_DONOR_DRAWS} {purpose} donors in a row failed to load or had no object"
    )
