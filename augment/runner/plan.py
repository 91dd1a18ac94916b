"""What is fixed before the first pixel: the manifest header, one task per shard, and each split's build order.

Each split's samples are stored in a seeded random order (:func:`build_order`, a pure function of the seed, the
split and its size) and cut into shards of ``shard_size``, so every shard is a random sample of its split even when
the source lists its images class by class. A task names positions in that order, not source indices, so no sample
list is stored: every process that builds a shard derives the order itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

import augment
from augment import backgrounds, infill, mask_sources, options, pool, shifted_tests
from augment.backgrounds import Bank
from augment.config import BuildConfig
from augment.contract import schema
from augment.datasets import Dataset
from augment.errors import BuildError
from augment.rng import sample_rng
from augment.runner import journal
from augment.runner.provenance import git_sha, model_provenance


def build_order(seed: int, split: str, n: int) -> np.ndarray:
    """The order in which a split's ``n`` samples are stored: shard position ``p`` holds source sample ``order[p]``.

    A seeded permutation from its own generator (keyed by the build seed, ``"order"`` and the split, never the global
    RNG), so every process that builds a shard derives the same one, whatever the workers, slices or resumes.
    Sources list their samples class by class (IN-9 folders) or grouped (Waterbirds by species, CCT by location):
    cut in source order, a shard would hold a few classes, and so would the trainer's batches.
    """
    return sample_rng(seed, "order", split).permutation(n)


def check_unique_keys(plans: dict) -> None:
    """Two samples with one key would write one record twice; refuse before anything is written."""
    seen: dict[str, str] = {}
    for split, plan in plans.items():
        for ref in plan.refs:
            if ref.key in seen:
                raise BuildError(
                    f"sample key {ref.key!r} occurs twice ({seen[ref.key]} and {split}); the dataset "
                    "adapter must give every sample its own key"
                )
            seen[ref.key] = split


def make_plan(config: BuildConfig, dataset: Dataset, command: str, banks: dict[str, Bank]) -> journal.Plan:
    """The manifest header and one task per shard, in split order, then shard order; a task's ``start:stop`` are
    positions in the split's build order (:func:`build_order`), not source indices. ``banks``: the background bank
    of each augmented split (``backgrounds.open_banks``, opened once with the process's dataset cache, which has
    also refused duplicate keys)."""
    every = options.splits(config, dataset)
    plans = every.plans
    bank = backgrounds.manifest_section(banks)
    header = {
        "format": schema.FORMAT,
        "format_version": schema.FORMAT_VERSION,
        "tool": {"name": "augment", "version": augment.__version__, "git_sha": git_sha()},
        "command": command,
        "options": json.loads(json.dumps(asdict(config))),
        "seed": config.seed,
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint(),
            "params": dataset.describe(),
            "classes": list(dataset.classes),
        },
        "image_size": config.image_size or dataset.default_image_size,
        "methods": {
            "cf": config.infill,
            "f": config.factual,
            "copies": config.copies,
            **({"pool": pool_header(config, plans)} if options.needs_pool(config) else {}),
        },
        "encoding": schema.encoding(),
        "environment": schema.environment(),
        "models": model_provenance(config),
        "masks": mask_sources.describe(config.masks_from, config.mask_weights, config.device, config.batch_size),
        **({"shifted_tests": shifted_tests.manifest_section(every)} if config.shifted_tests else {}),
        **({"backgrounds": bank} if bank is not None else {}),
    }
    tasks, splits = [], {}
    for split, plan in plans.items():
        for index, start in enumerate(range(0, len(plan.refs), config.shard_size)):
            tasks.append(journal.Task(split, index, start, min(start + config.shard_size, len(plan.refs))))
        fields = record_fields(True, plan.augment, config.infill, config.factual, config.copies)
        splits[split] = {"augmented": plan.augment, "fields": fields}
    rejects = list(getattr(dataset, "rejects", []))  # found while scanning the source
    return journal.Plan(json.loads(json.dumps(header)), tasks, splits, rejects)


def pool_header(config: BuildConfig, plans: dict) -> dict[str, Any]:
    """The value pool's parameters and, per augmented split, the keys of its members (``augment.pool``)."""
    keys = {
        split: [plan.refs[i].key for i in pool.members(config.seed, split, len(plan.refs))]
        for split, plan in plans.items()
        if plan.augment
    }
    return {**pool.describe(), "members": keys}


def parse_shard_range(text: str | None, total: int) -> tuple[int, int] | None:
    """``A:B`` (B exclusive, ``A:`` = to the end) -> (A, B), checked against the build's number of shards."""
    if text is None:
        return None
    try:
        a, b = text.split(":")
        start, stop = int(a), int(b) if b else total
    except ValueError:
        raise ValueError(f"--shard-range: got {text!r}, expected START:STOP, e.g. 0:{total}") from None
    if not 0 <= start < stop <= total:
        raise ValueError(
            f"--shard-range {text}: the build has {total} shards, numbered 0:{total}; "
            "expected 0 <= START < STOP <= that"
        )
    return start, stop


def augment_fields(cf: list[str], f: list[str], copies: int) -> list[str]:
    """The CF/F fields of an annotated record in an augmented split, e.g. ``cf.tile.jpg``, ``f.shuffle.0.jpg``."""
    return [n for m in cf for n in infill.field_names(m, infill.CF, copies)] + [
        n for m in f for n in infill.field_names(m, infill.F, copies)
    ]


def record_fields(has_object: bool, augmented: bool, cf: list[str], f: list[str], copies: int) -> list[str]:
    """Exactly the fields one record must carry: what the manifest lists as a split's ``fields`` (those of a record
    with an object), from which every reader takes them (``schema.RecordCheck``)."""
    if not has_object:
        return list(schema.BASE_FIELDS)
    return [*schema.BASE_FIELDS, schema.MASK, *(augment_fields(cf, f, copies) if augmented else [])]
