"""The build's dataset, opened once per process, with what every task of the build derives from it.

A task receives only the small config; the worker opens the dataset itself and keeps it, with each split's build
order, donor index, value pool and background bank, for the build's later tasks. Sample lists and donor arrays,
which grow with the dataset, never cross process boundaries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from augment import backgrounds, options, pool
from augment.backgrounds import Bank
from augment.config import BuildConfig
from augment.datasets import Dataset, get_dataset
from augment.donors import Donors
from augment.errors import BuildError
from augment.pool import ValuePool
from augment.read import SourceError
from augment.runner.plan import build_order, check_unique_keys
from augment.shifted_tests import Generated


@dataclass
class DatasetCache:
    """One build's opened dataset and, per split, its donor index (over source indices), its build order and its
    value pool (made on first use: 64 decodes) and background bank (``--factual bank``: the listing of its files);
    and which splits are generated shifted tests, of which base."""

    dataset: Dataset
    donors: dict[str, Donors | None]
    orders: dict[str, np.ndarray]
    config: BuildConfig
    generated: dict[str, Generated] = field(default_factory=dict)  # the shifted test splits, by name
    pools: dict[str, ValuePool] = field(default_factory=dict)
    banks: dict[str, Bank] = field(default_factory=dict)  # augmented split -> its background bank

    def pool(self, split: str) -> ValuePool | None:
        """The split's value pool, or None when no requested method uses one."""
        if not options.needs_pool(self.config):
            return None
        if split not in self.pools:
            n = len(self.orders[split])  # the split's size, without scanning its plan again
            self.pools[split] = pool.load_pool(self.config.seed, split, n, lambda i: self.pool_member(split, i))
        return self.pools[split]

    def pool_member(self, split: str, index: int) -> tuple[str, np.ndarray]:
        """Sample ``index``'s (key, image) for the pool; a bad input is left out with ``skip`` (raising
        :class:`pool.LeftOut`, saying why), else stops the build."""
        try:
            sample = self.dataset.load(split, index)
        except SourceError as e:
            if self.config.on_error == "skip":
                raise pool.LeftOut(e.reason) from e
            raise BuildError(
                f"{e} (a member of the {split} split's shuffle pool; pass --on-error skip to leave bad inputs out)"
            ) from e
        except Exception as e:
            raise BuildError(
                f"{split} sample {index} of {self.dataset.name} (a member of the shuffle pool): {type(e).__name__}: {e}"
            ) from e
        return sample.key, sample.image


_CACHE: dict[str, DatasetCache] = {}  # this process's cache, keyed by the build config: one build at a time


def open_dataset(config: BuildConfig, factory: Callable[..., Dataset] | None = None) -> Dataset:
    """The build's dataset. Workers get the registered ``factory`` itself, which also covers datasets that were
    registered at run time (tests) and so are not in a fresh worker's registry."""
    options = dict(seed=config.seed, image_size=config.image_size, on_error=config.on_error, **config.dataset_options)
    return get_dataset(config.dataset, **options) if factory is None else factory(**options)


def cached_dataset(
    config: BuildConfig, factory: Callable[..., Dataset] | None, dataset: Dataset | None = None
) -> DatasetCache:
    """This process's :class:`DatasetCache` for ``config``, made on first use (opened, or from ``dataset``); a cache
    of another config, or of another ``dataset`` than the one given (a new build in this process, which scanned its
    source anew), is dropped. Refuses duplicate sample keys, then an unusable background bank, before any work."""
    key = json.dumps(asdict(config), sort_keys=True, default=str)
    if key not in _CACHE or (dataset is not None and _CACHE[key].dataset is not dataset):
        _CACHE.clear()
        dataset = dataset or open_dataset(config, factory)
        donors, orders = {}, {}
        every = options.splits(config, dataset)
        check_unique_keys(every.plans)
        bases = set(every.bases())
        for split, plan in every.plans.items():
            orders[split] = build_order(config.seed, split, len(plan.refs))
            if split in every.generated:
                continue  # its donors are its base split's
            labels = np.array([r.label for r in plan.refs], dtype=np.int64)
            annotated = np.array([r.annotated for r in plan.refs], dtype=bool)
            if not options.mask_source(config).needs_box:  # cam finds objects in samples of labels only
                annotated[:] = True
            # donors (mixed-rand's, the mixed shifted tests') must have an object rectangle to tile over, or their
            # object would leak in
            wanted = (plan.augment and config.factual) or split in bases
            donors[split] = Donors.of(labels, annotated) if wanted else None
        banks = backgrounds.open_banks(config, dataset, every.plans)
        _CACHE[key] = DatasetCache(dataset, donors, orders, config, every.generated, banks=banks)
    return _CACHE[key]
