"""One sample's shard record: the original image, its label, metadata and object mask, and every CF/F image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from augment import encode, infill, masks, schema
from augment.config import BuildConfig
from augment.datasets import Dataset, Sample
from augment.donors import Donors, load_donor
from augment.pool import ValuePool
from augment.rng import sample_rng


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
        "meta": sample.meta,
    }
    return json.dumps(meta, sort_keys=True).encode()


def make_record(
    sample: Sample, dataset: Dataset, config: BuildConfig, augmented: bool, donors: Donors | None,
    model_fills: dict[str, np.ndarray] | None = None, values: ValuePool | None = None,
) -> dict[str, bytes]:  # fmt: skip
    """One shard record: the original, its mask and metadata, and every requested CF/F image.

    ``model_fills`` holds the images of model methods (cagan), already filled in a batch by :func:`fill_models`;
    ``values`` is the split's value pool (``augment.pool``) for the methods that draw from it (shuffle).
    """
    shape = sample.image.shape[:2]
    cf_hole = masks.cf_hole(sample.mask, sample.boxes, shape)
    f_hole = masks.f_hole(sample.mask, sample.boxes, shape)
    has_object = cf_hole is not None and f_hole is not None
    record: dict[str, Any] = {
        "__key__": sample.key,
        schema.IMAGE: encode.encode_jpeg(sample.image),
        schema.LABEL: str(sample.label).encode(),
        schema.META: sample_json(sample, has_object),
    }
    if not has_object:
        return record
    record[schema.MASK] = encode.encode_mask(masks.object_mask(sample.mask, sample.boxes, shape))
    if not augmented:
        return record
    for role, names, hole in ((infill.CF, config.infill, cf_hole), (infill.F, config.factual, f_hole)):
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
                    kwargs["donor"] = load_donor(sample, dataset, donors, rng, config.on_error)
                record[field_name] = encode.encode_jpeg(method.fill(sample.image, hole, rng, **kwargs))
    return record


def fill_models(samples: list[Sample], config: BuildConfig) -> dict[str, dict[str, np.ndarray]]:
    """{sample key: {method: filled image}} for every model method (cagan), one batched call per method."""
    methods = config.model_methods()
    todo = []
    for sample in samples:
        hole = masks.cf_hole(sample.mask, sample.boxes, sample.image.shape[:2])
        if hole is not None and masks.f_hole(sample.mask, sample.boxes, sample.image.shape[:2]) is not None:
            todo.append((sample, hole))
    if not methods or not todo:
        return {}
    from augment.cagan.inpaint import cached

    inpainter = cached(Path(config.cagan_weights), config.device, config.batch_size)
    fills: dict[str, dict[str, np.ndarray]] = {s.key: {} for s, _ in todo}
    for name in methods:
        images = infill.INFILLS[name].batch([s.image for s, _ in todo], [h for _, h in todo], inpainter=inpainter)
        for (sample, _), image in zip(todo, images, strict=True):
            fills[sample.key][name] = image
    return fills
