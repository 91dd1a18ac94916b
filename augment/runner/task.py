"""The task a worker runs: build one shard from its positions in the split's build order.

A task opens the dataset itself (``augment.runner.cache``) and runs its own samples through the per-sample pipeline
(``augment.pipeline``), so no pixels or sample lists cross process boundaries. It writes the shard under a temp name
and renames it, records it in the journal and returns its record. Randomness is per sample (``augment.rng``), so the
shard's bytes are the same whatever process runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from augment.config import BuildConfig
from augment.contract import schema
from augment.contract.shards import write_shard
from augment.datasets import Dataset
from augment.pipeline import Pipeline
from augment.runner import journal
from augment.runner.cache import cached_dataset


def build_shard(
    config: BuildConfig, factory: Callable[..., Dataset] | None, out: Path, task: journal.Task, augmented: bool
) -> dict[str, Any]:
    """Build one shard from positions ``task.start:task.stop`` of the split's build order (``augment.runner.plan``);
    runs in a worker process (or on a dask worker). Errors name the sample by its source index.

    Writes the shard (temp name, then rename), then its journal record, and returns the record: the shard's manifest
    entry plus per-label counts, skipped inputs, the shuffle pool's members left out, the background bank's draws and
    the encoder versions the bytes came from.
    """
    cache = cached_dataset(config, factory)
    generated = cache.generated.get(task.split)
    samples = Pipeline(
        config,
        cache.dataset,
        task.split,
        cache.orders[task.split][task.start : task.stop].tolist(),
        augmented=augmented,
        donors=cache.donors[generated.base if generated else task.split],
        values=cache.pool(task.split) if augmented else None,  # loaded before the shard file is opened
        generated=generated,
        bank=cache.banks.get(task.split),
    )
    info = write_shard(out / task.path, samples.records())
    done = {
        "task": task.name,
        "attempted": task.stop - task.start,
        "labels": journal.label_counts(samples.labels),
        "mask_sources": dict(sorted(samples.sources.items())),
        "rejects": samples.rejects,
        "shard": {"path": task.path, **info},
        "environment": schema.environment(),
    }
    if samples.draws is not None:  # the bank's fingerprint, draws per kind and bad files (journal.assemble)
        done["backgrounds"] = samples.draws.summary()
    if samples.values is not None:  # the pool's members left out, for the manifest (augment.pool.used_members)
        done["pool_left_out"] = [[position, why] for position, why in samples.values.left_out]
    journal.record_done(out, task, done)
    return done
