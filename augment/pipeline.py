"""One sample's path through the build, top to bottom: load, mask source, variant, holes, fills, record.

:class:`Pipeline` takes plain inputs (the options, the opened dataset, a split and the source indices of its samples
in build order, the split's donors and value pool) and yields the samples' shard records; the runner
(``augment.runner``) decides which samples, where, and writes the shard. The steps, in the order they run:

1. **load** the sample (``Dataset.load``); for a shifted test split, its base sample;
2. **mask**: refine its object mask with ``--masks-from`` (``augment.mask_sources``; one call per batch);
3. **variant**: for a shifted test split, the Backgrounds Challenge variant of the sample (``augment.shifted_tests``);
4. **holes**: its CF hole and F hole (``augment.masks``), computed once and shared by every fill;
5. **fills**: the model infills, batched (:func:`fill_models`), then each per-sample CF/F method (:func:`make_record`),
   every draw from the sample's own generator (``augment.rng``): donors, pool values and the bank's backgrounds
   (``augment.backgrounds``) too;
6. **record**: the encoded original, label, metadata (naming each bank background drawn), mask and CF/F images
   (``augment.contract.encode``).

A bad source input is skipped (``--on-error skip``, noted in ``rejects``) or stops the build naming the sample.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from augment import infill, mask_sources, masks, options, shifted_tests
from augment.backgrounds import Bank, Draws
from augment.config import BuildConfig
from augment.contract import encode, schema
from augment.datasets import Dataset, Sample
from augment.donors import Donors, load_donor
from augment.errors import BuildError
from augment.pool import ValuePool
from augment.read import SourceError
from augment.rng import sample_rng

T = TypeVar("T")


class Pipeline:
    """The records of one run of samples of a split, in the given order; counts their labels and mask sources, and
    notes the inputs skipped as bad; ``bank`` is the split's background bank (``--factual bank``), whose draws it
    counts (``draws``)."""

    def __init__(
        self,
        config: BuildConfig,
        dataset: Dataset,
        split: str,
        indices: list[int],
        *,
        augmented: bool,
        donors: Donors | None,
        values: ValuePool | None = None,
        generated: shifted_tests.Generated | None = None,
        bank: Bank | None = None,
    ) -> None:
        self.config, self.dataset, self.split, self.indices = config, dataset, split, indices
        self.draws = Draws(bank, config.on_error) if bank is not None and augmented else None
        self.augmented, self.donors, self.values = augmented, donors, values
        self.generated = generated  # a shifted test split: its samples are its base split's variants
        self.labels: Counter[int] = Counter()
        self.sources: Counter[str] = Counter()  # samples per mask_source ("none": no object)
        self.rejects: list[dict[str, str]] = []

    def records(self) -> Iterator[dict[str, bytes]]:
        config = self.config
        # model methods and model mask sources work on a batch of samples at once; the rest one sample at a time
        batched = (self.augmented and options.model_methods(config)) or options.mask_source(config).batched
        step = config.batch_size if batched else 1
        for first in range(0, len(self.indices), step):
            loaded = [(i, self.guarded(i, self.load, i)) for i in self.indices[first : first + step]]
            loaded = [(i, sample) for i, sample in loaded if sample is not None]
            loaded = list(zip([i for i, _ in loaded], self.masked([s for _, s in loaded]), strict=True))
            if self.generated is not None:
                loaded = [(i, self.guarded(i, self.variant, i, sample)) for i, sample in loaded]
                loaded = [(i, sample) for i, sample in loaded if sample is not None]
            holes = [self.guarded(i, Holes.of, sample) for i, sample in loaded]  # once per sample, for both fills
            fills = fill_models([s for _, s in loaded], holes, config) if self.augmented else {}
            for (i, sample), sample_holes in zip(loaded, holes, strict=True):
                record = self.guarded(
                    i,
                    make_record,
                    sample,
                    self.dataset,
                    config,
                    self.augmented,
                    self.donors,
                    fills.get(sample.key),
                    self.values,
                    sample_holes,
                    self.draws,
                )
                if record is None:
                    continue
                self.labels[sample.label] += 1
                self.sources[sample.mask_source if sample_holes.has_object else "none"] += 1
                yield record

    def load(self, i: int) -> Sample:
        """Sample ``i`` of the split as loaded; for a shifted test split, its base sample (made a variant later)."""
        if self.generated is None:
            return self.dataset.load(self.split, i)
        return self.dataset.load(self.generated.base, int(self.generated.indices[i]))

    def masked(self, samples: list[Sample]) -> list[Sample]:
        """``samples`` with the masks of ``--masks-from`` (one call for the batch); a failure names the batch."""
        if not samples:
            return []
        try:
            return mask_sources.refine(samples, self.config)
        except Exception as e:  # a model error, not a bad input: it stops the build
            keys = f"{samples[0].key}" + (f" .. {samples[-1].key}" if len(samples) > 1 else "")
            raise BuildError(
                f"{self.split} samples {keys} of {self.dataset.name}: --masks-from "
                f"{self.config.masks_from}: {type(e).__name__}: {e}"
            ) from e

    def variant(self, i: int, base: Sample) -> Sample | None:
        """For a shifted test split, the variant of ``base`` (its masked base sample); None, noted as a reject, when
        the base sample turns out to have no object mask (no object, or a produced mask that fell back to the box)."""
        g, config = self.generated, self.config
        sample = shifted_tests.make_variant(
            base,
            int(g.indices[i]),
            self.split,
            g.variant,
            self.dataset,
            self.donors,
            config.seed,
            config.on_error,
            donor_masks(config),
        )
        if sample is None:
            why = (
                f"its {config.masks_from} mask fell back to the box ({base.mask_gate})"
                if base.mask_gate
                else "no object mask once loaded"
            )
            self.rejects.append(
                {"split": self.split, "path": base.source, "reason": f"{why}: left out of {self.split}"}
            )
        return sample

    def guarded(self, i: int, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)`` for sample ``i``; bad inputs are skipped (``None``) or stop the build, naming the sample."""
        try:
            return fn(*args)
        except SourceError as e:
            if self.config.on_error == "skip":
                self.rejects.append({"split": self.split, "path": e.path, "reason": e.reason})
                return None
            raise BuildError(f"{e} (pass --on-error skip to record bad inputs in rejects.jsonl and go on)") from e
        except BuildError:
            raise
        except Exception as e:  # fail fast, naming the sample
            raise BuildError(f"{self.split} sample {i} of {self.dataset.name}: {type(e).__name__}: {e}") from e


@dataclass(frozen=True)
class Holes:
    """A sample's CF hole (its object's rectangle) and F hole (its background); None where it has no object."""

    cf: np.ndarray | None
    f: np.ndarray | None

    @classmethod
    def of(cls, sample: Sample) -> Holes:
        shape = sample.image.shape[:2]
        return cls(masks.cf_hole(sample.mask, sample.boxes, shape), masks.f_hole(sample.mask, sample.boxes, shape))

    @property
    def has_object(self) -> bool:
        """Whether the sample has both holes; only such samples get a mask and CF/F images."""
        return self.cf is not None and self.f is not None

    def object_mask(self) -> np.ndarray:
        """The exact object region (``masks.object_mask``): everything the F hole leaves, so not computed again."""
        return ~self.f


def fill_models(samples: list[Sample], holes: list[Holes], config: BuildConfig) -> dict[str, dict[str, np.ndarray]]:
    """{sample key: {method: filled image}} for every model method, one batched call per method over the
    samples with an object; ``holes[i]`` are ``samples[i]``'s."""
    methods = options.model_methods(config)
    todo = [(sample, h.cf) for sample, h in zip(samples, holes, strict=True) if h.has_object]
    if not methods or not todo:
        return {}
    fills: dict[str, dict[str, np.ndarray]] = {s.key: {} for s, _ in todo}
    for name in methods:
        method = infill.INFILLS[name]
        inpainter = method.model.runner(options.model_weights(config, name), config.device, config.batch_size)
        images = method.batch([s.image for s, _ in todo], [h for _, h in todo], inpainter=inpainter)
        for (sample, _), image in zip(todo, images, strict=True):
            fills[sample.key][name] = image
    return fills


def make_record(
    sample: Sample,
    dataset: Dataset,
    config: BuildConfig,
    augmented: bool,
    donors: Donors | None,
    model_fills: dict[str, np.ndarray] | None = None,
    values: ValuePool | None = None,
    holes: Holes | None = None,
    draws: Draws | None = None,
) -> dict[str, bytes]:
    """One shard record: the original, its mask and metadata, and every requested CF/F image.

    ``model_fills`` holds the images of model methods, already filled in a batch by :func:`fill_models`;
    ``values`` is the split's value pool (``augment.pool``) for the methods that draw from it (shuffle); ``holes``
    are the sample's (computed here when not given); ``draws`` draws the backgrounds of ``bank`` from the split's
    bank, each named in the metadata.
    """
    holes = Holes.of(sample) if holes is None else holes
    record: dict[str, Any] = {
        "__key__": sample.key,
        schema.IMAGE: encode.encode_jpeg(sample.image),
        schema.LABEL: str(sample.label).encode(),
    }
    backgrounds: dict[str, dict[str, Any]] = {}  # f.bank field -> the background drawn for it
    if holes.has_object:
        record[schema.MASK] = encode.encode_mask(holes.object_mask())
        if augmented:
            record |= make_fills(sample, dataset, config, donors, model_fills, values, holes, draws, backgrounds)
    record[schema.META] = sample_json(sample, holes.has_object, backgrounds)
    return record


def make_fills(
    sample: Sample,
    dataset: Dataset,
    config: BuildConfig,
    donors: Donors | None,
    model_fills: dict[str, np.ndarray] | None,
    values: ValuePool | None,
    holes: Holes,
    draws: Draws | None,
    backgrounds: dict[str, dict[str, Any]],
) -> dict[str, bytes]:
    """The encoded CF/F images of a sample with an object; each bank background drawn is noted in
    ``backgrounds``."""
    record: dict[str, bytes] = {}
    for role, names, hole in ((infill.CF, config.infill, holes.cf), (infill.F, config.factual, holes.f)):
        for name in names:
            method = infill.INFILLS[name]
            if method.needs_model:
                (field_name,) = infill.field_names(name, role, config.copies)  # model methods are deterministic
                record[field_name] = encode.encode_jpeg(model_fills[name])
                continue
            for copy, field_name in enumerate(infill.field_names(name, role, config.copies)):
                rng = sample_rng(config.seed, sample.key, role, name, copy)
                kwargs: dict[str, Any] = {"pool": values} if method.needs_pool else {}
                if method.needs_donor:
                    kwargs["donor"] = load_donor(sample, dataset, donors, rng, config.on_error, donor_masks(config))
                if method.needs_background:
                    if draws is None:
                        raise BuildError(f"--factual {name}: the build opened no background bank for {sample.split}")
                    kwargs["background"], backgrounds[field_name] = draws.draw(sample, rng)
                record[field_name] = encode.encode_jpeg(method.fill(sample.image, hole, rng, **kwargs))
    return record


def sample_json(sample: Sample, has_object: bool, backgrounds: dict[str, dict[str, Any]] | None = None) -> bytes:
    """The record's metadata (``schema.META``): where the sample came from and what the build made of it; ``bank``
    names the background of each f.bank image, in records that have them only (so a build without them writes the
    bytes it wrote before the bank existed)."""
    boxes = [] if sample.boxes is None else np.asarray(sample.boxes).reshape(-1, 4).tolist()
    meta = {
        "key": sample.key,
        "label": sample.label,
        "class_name": sample.class_name,
        "split": sample.split,
        "group": sample.group,
        "source": sample.source,
        "width": int(sample.image.shape[1]),
        "height": int(sample.image.shape[0]),
        "boxes": boxes,
        "has_object": has_object,
        "has_segmentation": sample.mask is not None,
        "mask_source": sample.mask_source if has_object else None,
        "mask_gate": sample.mask_gate,
        "shifted": sample.shifted,
        "object_id": sample.object_id,
        "meta": sample.meta,
    }
    if backgrounds:
        meta["bank"] = backgrounds
    return json.dumps(meta, sort_keys=True).encode()


def donor_masks(config: BuildConfig) -> Callable[[Sample], Sample] | None:
    """How a mixed-rand donor gets its object: as loaded, unless the mask source finds objects without boxes (cam),
    whose donors need it run on them too (the others keep each sample's boxes, which give the donor's hole)."""
    if options.mask_source(config).needs_box:
        return None
    return lambda donor: mask_sources.refine([donor], config)[0]
