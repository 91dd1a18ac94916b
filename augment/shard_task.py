"""The task a worker runs: build one shard from its positions in the split's build order.

A task opens the dataset itself (``augment.dataset_cache``) and loads its own samples, so no pixels or sample
lists cross process boundaries. It writes the shard under a temp name and renames it, records it in the journal
and returns its record. Randomness is per sample (``augment.rng``), so the shard's bytes are the same whatever
process runs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from augment import journal, mask_sources, shifted_tests
from augment.config import BuildConfig
from augment.contract import schema
from augment.contract.shards import write_shard
from augment.dataset_cache import DatasetCache, cached_dataset
from augment.datasets import Dataset, Sample
from augment.errors import BuildError
from augment.read import SourceError
from augment.records import Holes, donor_masks, fill_models, make_record


def build_shard(
    config: BuildConfig, factory: Callable[..., Dataset] | None, out: Path, task: journal.Task, augmented: bool
) -> dict[str, Any]:
    """Build one shard from positions ``task.start:task.stop`` of the split's build order (``augment.plan``); runs
    in a worker process (or on a dask worker). Errors name the sample by its source index.

    Writes the shard (temp name, then rename), then its journal record, and returns the record: the shard's manifest
    entry plus per-label counts, skipped inputs, the shuffle pool's members left out and the encoder versions the
    bytes came from.
    """
    samples = ShardSamples(cached_dataset(config, factory), task, augmented)
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
    if samples.values is not None:  # the pool's members left out, for the manifest (augment.pool.used_members)
        done["pool_left_out"] = [[position, why] for position, why in samples.values.left_out]
    journal.record_done(out, task, done)
    return done


class ShardSamples:
    """The records of one task's samples, in build order; counts their labels and the inputs skipped as bad."""

    def __init__(self, cache: DatasetCache, task: journal.Task, augmented: bool) -> None:
        self.config, self.dataset, self.split, self.augmented = cache.config, cache.dataset, task.split, augmented
        self.generated = cache.generated.get(task.split)  # a shifted test split: its samples are its base's variants
        self.donors = cache.donors[self.generated.base if self.generated else task.split]
        self.indices = cache.orders[task.split][task.start : task.stop].tolist()
        self.values = cache.pool(task.split) if augmented else None  # loaded before the shard file is opened
        self.labels: Counter[int] = Counter()
        self.sources: Counter[str] = Counter()  # samples per mask_source ("none": no object)
        self.rejects: list[dict[str, str]] = []

    def guarded(self, i: int, fn, *args):  # noqa: ANN001, ANN202
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

    def load(self, i: int) -> Sample:
        """Sample ``i`` of the split as loaded; for a shifted test split, its base sample (made a variant later)."""
        if self.generated is None:
            return self.dataset.load(self.split, i)
        return self.dataset.load(self.generated.base, int(self.generated.indices[i]))

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

    def records(self) -> Iterator[dict[str, bytes]]:
        config, dataset = self.config, self.dataset
        # model methods and model mask sources work on a batch of samples at once; the rest one sample at a time
        batched = (self.augmented and config.model_methods()) or config.mask_source().batched
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
                    dataset,
                    config,
                    self.augmented,
                    self.donors,
                    fills.get(sample.key),
                    self.values,
                    sample_holes,
                )
                if record is None:
                    continue
                self.labels[sample.label] += 1
                self.sources[sample.mask_source if sample_holes.has_object else "none"] += 1
                yield record
