"""One sample's shard record: the original image, its label, metadata and object mask, and every CF/F image.

A sample's two holes (``augment.masks``) are computed once, as :class:`Holes`, and shared by the batched model
infills (:func:`fill_models`) and the per-sample ones (:func:`make_record`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from augment import infill, mask_sources, masks
from augment.config import BuildConfig
from augment.contract import encode, schema
from augment.datasets import Dataset, Sample
from augment.donors import Donors, load_donor
from augment.pool import ValuePool
from augment.rng import sample_rng


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


def sample_json(sample: Sample, has_object: bool) -> bytes:
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
    return json.dumps(meta, sort_keys=True).encode()


def donor_masks(config: BuildConfig) -> Callable[[Sample], Sample] | None:
    """How a mixed-rand donor gets its object: as loaded, unless the mask source finds objects without boxes (cam),
    whose donors need it run on them too (the others keep each sample's boxes, which give the donor's hole)."""
    if config.mask_source().needs_box:
        return None
    return lambda donor: mask_sources.refine([donor], config)[0]


def make_record(
    sample: Sample,
    dataset: Dataset,
    config: BuildConfig,
    augmented: bool,
    donors: Donors | None,
    model_fills: dict[str, np.ndarray] | None = None,
    values: ValuePool | None = None,
    holes: Holes | None = None,
) -> dict[str, bytes]:
    """One shard record: the original, its mask and metadata, and every requested CF/F image.

    ``model_fills`` holds the images of model methods, already filled in a batch by :func:`fill_models`;
    ``values`` is the split's value pool (``augment.pool``) for the methods that draw from it (shuffle); ``holes``
    are the sample's (computed here when not given).
    """
    holes = Holes.of(sample) if holes is None else holes
    record: dict[str, Any] = {
        "__key__": sample.key,
        schema.IMAGE: encode.encode_jpeg(sample.image),
        schema.LABEL: str(sample.label).encode(),
        schema.META: sample_json(sample, holes.has_object),
    }
    if not holes.has_object:
        return record
    record[schema.MASK] = encode.encode_mask(holes.object_mask())
    if not augmented:
        return record
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
                record[field_name] = encode.encode_jpeg(method.fill(sample.image, hole, rng, **kwargs))
    return record


def fill_models(samples: list[Sample], holes: list[Holes], config: BuildConfig) -> dict[str, dict[str, np.ndarray]]:
    """{sample key: {method: filled image}} for every model method, one batched call per method over the
    samples with an object; ``holes[i]`` are ``samples[i]``'s."""
    methods = config.model_methods()
    todo = [(sample, h.cf) for sample, h in zip(samples, holes, strict=True) if h.has_object]
    if not methods or not todo:
        return {}
    fills: dict[str, dict[str, np.ndarray]] = {s.key: {} for s, _ in todo}
    for name in methods:
        method = infill.INFILLS[name]
        inpainter = method.model.runner(config.model_weights(name), config.device, config.batch_size)
        images = method.batch([s.image for s, _ in todo], [h for _, h in todo], inpainter=inpainter)
        for (sample, _), image in zip(todo, images, strict=True):
            fills[sample.key][name] = image
    return fills
