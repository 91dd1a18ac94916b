"""``augment build``: read -> mask -> infill -> encode -> write, one shard per task, in parallel.

Each split's samples are put in a seeded random order (:func:`build_order`, a pure function of the seed, the split
and its size) and then cut into shards of ``shard_size``, so that every shard is a random sample of its split even
when the source lists its images class by class. A task builds one shard from scratch (it opens the dataset,
derives the order and loads its samples itself, so no pixels or sample lists cross process boundaries),
writes it under a temp name and renames it, records it in the journal and returns its count and sha256. Randomness
is per sample (``augment.rng``), so the shards are byte-identical whatever runs them: one process, ``workers``
local processes, a dask cluster, or slices (``shard_range``) merged later. The manifest is written last: a folder
without one is an unfinished build, and running the same command again resumes it (``augment.journal``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

import augment
from augment import encode, infill, journal, masks, orphans, pool, schema
from augment.datasets import DATASETS, Dataset, Sample, get_dataset
from augment.datasets.files import ON_ERROR
from augment.diff import diff_dicts
from augment.infill.mixed_rand import Donor
from augment.pool import ValuePool
from augment.read import SourceError
from augment.rng import sample_rng
from augment.shards import sha256_file, write_shard

MAX_DONOR_DRAWS = 20
DEVICES = ("auto", "cpu", "cuda")


class BuildError(Exception):
    """A build that cannot go on; the message names the sample or file and the fix."""


class OutFolderError(BuildError):
    """``--out`` cannot be used as it is (a usage error: exit code 2)."""


@dataclass
class BuildConfig:
    """The resolved options of one build; recorded in the manifest."""

    dataset: str = "synthetic"
    infill: list[str] = field(default_factory=list)  # CF methods
    factual: list[str] = field(default_factory=list)  # F methods
    copies: int = 1  # draws stored per stochastic method
    seed: int = 0
    image_size: int | None = None  # None: the dataset's default
    shard_size: int = 1000  # samples per shard
    on_error: str = "fail"  # bad source inputs: "fail" stops the build, "skip" records them in rejects.jsonl
    dataset_options: dict[str, Any] = field(default_factory=dict)  # adapter options (--size, --bias, ...)
    cagan_weights: str | None = None  # for --infill cagan: None = the only file in cagan_weights/
    device: str = "auto"  # where model infills run: auto | cpu | cuda
    batch_size: int = 16  # images per model call (model infills only)

    def model_methods(self) -> list[str]:
        return [n for n in self.infill if infill.INFILLS[n].needs_model]

    def needs_pool(self) -> bool:
        """Whether a requested method (``shuffle``) fills from the split's value pool."""
        return any(infill.INFILLS[n].needs_pool for n in (*self.infill, *self.factual))

    def validate(self) -> None:
        for name in self.infill:
            infill.get_infill(name, infill.CF)
        for name in self.factual:
            infill.get_infill(name, infill.F)
        for flag, names in (("--infill", self.infill), ("--factual", self.factual)):
            dup = [n for n, c in Counter(names).items() if c > 1]
            if dup:
                raise ValueError(f"{flag} {dup[0]!r} given twice; each method is stored once (use --copies for more)")
        if self.copies < 1:
            raise ValueError(f"--copies: got {self.copies}, expected at least 1")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"--on-error: got {self.on_error!r}, expected one of {', '.join(ON_ERROR)}")
        if self.seed < 0:
            raise ValueError(f"--seed: got {self.seed}, expected a non-negative integer")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size: got {self.shard_size}, expected at least 1 sample per shard")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size: got {self.batch_size}, expected at least 1")
        if self.device not in DEVICES:
            raise ValueError(f"--device: got {self.device!r}, expected one of {', '.join(DEVICES)}")
        if self.model_methods():
            from augment.cagan.inpaint import resolve_device
            from augment.cagan.weights import default_weights, read_metadata

            if self.cagan_weights is None:
                self.cagan_weights = str(default_weights())
            resolve_device(self.device)  # asking for CUDA without one fails here, before any work
            weights = Path(self.cagan_weights)
            if not weights.is_file():
                from augment.cagan.weights import HOW_TO_GET, WeightsError

                raise WeightsError(f"--cagan-weights {weights}: no such file; {HOW_TO_GET}")
            read_metadata(weights)


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


def load_donor(
    sample: Sample, dataset: Dataset, donors: Donors | None, rng: np.random.Generator, on_error: str
) -> Donor:
    """Draw and load a donor of another class from the sample's split (for mixed-rand).

    A donor without an object is replaced by another draw from the same generator, and so, with
    ``on_error="skip"``, is a donor that fails to load.
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
        hole = masks.cf_hole(other.mask, other.boxes, other.image.shape[:2])
        if hole is not None:
            return Donor(other.image, hole)
    raise BuildError(
        f"{sample.split}/{sample.key}: {MAX_DONOR_DRAWS} mixed-rand donors in a row failed to load or had no object"
    )


# ---- one shard: the task a worker runs ----------------------------------------------------------------------------


def build_order(seed: int, split: str, n: int) -> np.ndarray:
    """The order in which a split's ``n`` samples are stored: shard position ``p`` holds source sample ``order[p]``.

    A seeded permutation from its own generator (keyed by the build seed, ``"order"`` and the split, never the global
    RNG), so every process that builds a shard derives the same one, whatever the workers, slices or resumes.
    Sources list their samples class by class (IN-9 folders) or grouped (Waterbirds by species, CCT by location):
    cut in source order, a shard would hold a few classes, and so would the trainer's batches (issue #12).
    """
    return sample_rng(seed, "order", split).permutation(n)


@dataclass
class Job:
    """What every task of one build needs in a worker process: the dataset, each split's donor index (over source
    indices), each split's build order, and each split's value pool (made on first use: 64 decodes)."""

    dataset: Dataset
    donors: dict[str, Donors | None]
    orders: dict[str, np.ndarray]
    config: BuildConfig
    pools: dict[str, ValuePool] = field(default_factory=dict)

    def pool(self, split: str) -> ValuePool | None:
        """The split's value pool, or None when no requested method uses one."""
        if not self.config.needs_pool():
            return None
        if split not in self.pools:
            n = len(self.orders[split])  # the split's size, without scanning its plan again
            self.pools[split] = pool.load_pool(self.config.seed, split, n, lambda i: self.pool_member(split, i))
        return self.pools[split]

    def pool_member(self, split: str, index: int) -> tuple[str, np.ndarray] | None:
        """Sample ``index``'s (key, image) for the pool; a bad input is left out with ``skip``, else stops the build."""
        try:
            sample = self.dataset.load(split, index)
        except SourceError as e:
            if self.config.on_error == "skip":
                return None
            raise BuildError(f"{e} (a member of the {split} split's shuffle pool; pass --on-error skip to leave bad "
                             "inputs out)") from e  # fmt: skip
        except Exception as e:
            raise BuildError(f"{split} sample {index} of {self.dataset.name} (a member of the shuffle pool): "
                             f"{type(e).__name__}: {e}") from e  # fmt: skip
        return sample.key, sample.image


_JOBS: dict[str, Job] = {}  # this process's Job, keyed by the build config: made once, reused by its tasks


def open_dataset(config: BuildConfig, factory: Callable[..., Dataset] | None = None) -> Dataset:
    """The build's dataset. Workers get the registered ``factory`` itself, which also covers datasets that were
    registered at run time (tests) and so are not in a fresh worker's registry."""
    options = dict(seed=config.seed, image_size=config.image_size, on_error=config.on_error, **config.dataset_options)
    return get_dataset(config.dataset, **options) if factory is None else factory(**options)


def job_for(config: BuildConfig, factory: Callable[..., Dataset] | None, dataset: Dataset | None = None) -> Job:
    """This process's Job for ``config``, made on first use: only the small config crosses process boundaries, never
    the dataset's sample list or the donor arrays, which grow with the dataset."""
    key = json.dumps(asdict(config), sort_keys=True, default=str)
    if key not in _JOBS:
        _JOBS.clear()
        dataset = dataset or open_dataset(config, factory)
        donors, orders = {}, {}
        for split, plan in dataset.splits().items():
            orders[split] = build_order(config.seed, split, len(plan.refs))
            labels = np.array([r.label for r in plan.refs], dtype=np.int64)
            annotated = np.array([r.annotated for r in plan.refs], dtype=bool)
            # mixed-rand donors must have an object rectangle to tile over, or their object would leak in
            donors[split] = Donors.of(labels, annotated) if plan.augment and config.factual else None
        _JOBS[key] = Job(dataset, donors, orders, config)
    return _JOBS[key]


def build_shard(
    config: BuildConfig, factory: Callable[..., Dataset] | None, out: Path, task: journal.Task, augmented: bool
) -> dict[str, Any]:
    """Build one shard from positions ``task.start:task.stop`` of the split's build order (:func:`build_order`); runs
    in a worker process (or on a dask worker). Errors name the sample by its source index.

    Writes the shard (temp name, then rename), then its journal record, and returns the record: the shard's manifest
    entry plus per-label counts, skipped inputs and the encoder versions the bytes came from.
    """
    job = job_for(config, factory)
    dataset, donors, split = job.dataset, job.donors[task.split], task.split
    labels: Counter[int] = Counter()
    rejects: list[dict[str, str]] = []

    def guarded(i: int, fn, *args):  # noqa: ANN001, ANN202
        """``fn(*args)`` for sample ``i``; bad inputs are skipped (``None``) or stop the build, naming the sample."""
        try:
            return fn(*args)
        except SourceError as e:
            if config.on_error == "skip":
                rejects.append({"split": split, "path": e.path, "reason": e.reason})
                return None
            raise BuildError(f"{e} (pass --on-error skip to record bad inputs in rejects.jsonl and go on)") from e
        except BuildError:
            raise
        except Exception as e:  # fail fast, naming the sample
            raise BuildError(f"{split} sample {i} of {dataset.name}: {type(e).__name__}: {e}") from e

    # model methods fill a batch of samples at once; the others go one sample at a time
    step = config.batch_size if augmented and config.model_methods() else 1

    indices = job.orders[split][task.start : task.stop].tolist()
    values = job.pool(split) if augmented else None

    def records():
        for first in range(0, len(indices), step):
            loaded = [(i, guarded(i, dataset.load, split, i)) for i in indices[first : first + step]]
            loaded = [(i, sample) for i, sample in loaded if sample is not None]
            fills = fill_models([s for _, s in loaded], config) if augmented else {}
            for i, sample in loaded:
                record = guarded(i, make_record, sample, dataset, config, augmented, donors, fills.get(sample.key),
                                 values)  # fmt: skip
                if record is None:
                    continue
                labels[sample.label] += 1
                yield record

    info = write_shard(out / task.path, records())
    done = {"task": task.name, "attempted": task.stop - task.start, "labels": journal.label_counts(labels),
            "rejects": rejects, "shard": {"path": task.path, **info}, "environment": schema.environment()}  # fmt: skip
    journal.record_done(out, task, done)
    return done


def run_tasks(calls: list[tuple], workers: int, scheduler: str | None) -> Iterator[dict[str, Any]]:
    """Run ``build_shard(*args)`` for every args tuple, yielding results as they finish: on local processes (joblib's
    loky backend), or on the dask.distributed cluster at ``scheduler``.

    A local worker exits when this process dies, even by SIGKILL (``augment.orphans``): left running, it would go on
    building shards nobody collects, into the folder a re-run is using. Dask workers are left alone: they may be on
    other machines, and outlive a client by design.
    """
    if scheduler is None:
        main = os.getpid()
        tasks = (delayed(orphans.child_task)(main, build_shard, *a) for a in calls)
        yield from Parallel(n_jobs=workers, return_as="generator_unordered")(tasks)
        return
    from distributed import Client, as_completed

    try:
        client = Client(scheduler, timeout="20s")
    except OSError as e:
        raise BuildError(f"--scheduler {scheduler}: no dask scheduler answered ({e}); start one with `dask scheduler` "
                         f"and workers with `dask worker {scheduler}`, then build again") from None  # fmt: skip
    with client:
        futures = [client.submit(build_shard, *a, pure=False) for a in calls]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)


# ---- the output folder ----------------------------------------------------------------------------------------------


def check_unique_keys(plans: dict) -> None:
    """Two samples with one key would write one record twice; refuse before anything is written."""
    seen: dict[str, str] = {}
    for split, plan in plans.items():
        for ref in plan.refs:
            if ref.key in seen:
                raise BuildError(f"sample key {ref.key!r} occurs twice ({seen[ref.key]} and {split}); the dataset "
                                 "adapter must give every sample its own key")  # fmt: skip
            seen[ref.key] = split


def our_files(out: Path) -> list[Path]:
    """Everything a build writes into ``out``: manifest, rejects, shards, their temp files, and the journal."""
    found = [out / schema.MANIFEST, out / schema.REJECTS, *out.glob("*.tmp"), *out.glob("*/shard-*.tar*"),
             *journal.journal(out).rglob("*")]  # fmt: skip
    return [p for p in found if p.is_file()]


def remove_build(out: Path) -> None:
    """Remove what a build wrote into ``out``, and the folders that become empty."""
    for p in our_files(out):
        p.unlink()
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


@dataclass
class Resume:
    """What ``prepare_out`` found: the records of shards to keep, and the manifest when the build was finished."""

    keep: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    expected: dict[str, str] = field(default_factory=dict)  # finished build: task name -> the manifest's sha256


def prepare_out(out: Path, plan: journal.Plan, overwrite: bool, mine: list[journal.Task], sliced: bool) -> Resume:
    """Start fresh in an empty ``out``, resume a build of the same plan there, or refuse; of the finished shards,
    only those of the tasks in ``mine`` are checked (a slice does not re-read the other slices' shards).

    Only an ``out`` holding nothing but files of a build is ever touched; ``overwrite`` replaces such a build.
    Slices may start at the same moment: they write the same plan, and never remove each other's folders.
    """
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in out.rglob("*") if not p.is_dir()]
    if set(files) - set(our_files(out)):
        raise OutFolderError(f"--out {out}: folder holds files that are not an augment build; refusing to touch it"
                             if overwrite else f"--out {out}: folder is not empty (it holds files); choose another "
                             "folder")  # fmt: skip
    if files and overwrite:
        if sliced:
            raise OutFolderError(f"--out {out}: --overwrite with --shard-range would delete the other slices' shards; "
                                 "empty the folder first")  # fmt: skip
        remove_build(out)
        files = []
    starting = all(p.parent == journal.journal(out) and p.name.endswith(".tmp") for p in files)  # another slice's plan
    if starting:
        if not sliced:
            remove_build(out)  # empty split folders of a build killed before its first shard
        journal.write_plan(out, plan)
        return Resume()

    finished = (out / schema.MANIFEST).is_file()
    if finished:
        try:
            manifest = schema.read_manifest(out)
        except ValueError as e:
            raise OutFolderError(f"{e}; pass --overwrite to replace the build") from None
        changes = diff_dicts({k: manifest.get(k) for k in plan.header}, plan.header)
        listed = {s["path"]: s for info in manifest["splits"].values() for s in info["shards"]}
        if not changes and sorted(listed) != sorted(t.path for t in plan.tasks):
            changes = ["the shard plan (samples per shard or per split)"]
    else:
        stored = journal.read_plan(out)
        if stored is None:
            raise OutFolderError(f"--out {out}: holds an unfinished build without a plan (from an older version of "
                                 "augment?); pass --overwrite to replace it")  # fmt: skip
        changes = stored.same_as(plan)
    if changes:
        what = "an earlier build" if finished else "an unfinished build"
        raise OutFolderError(
            f"--out {out}: folder is not empty (it holds {what} of another command; differs in "
            f"{'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}); pass --overwrite to replace it, or "
            "choose another folder"
        )
    if finished:  # a finished build of this very command: keep every intact shard, rebuild damaged ones
        keep = {t.name: {"shard": listed[t.path]} for t in mine if journal.intact(out, {"shard": listed[t.path]})}
        return Resume(keep, manifest, {t.name: listed[t.path]["sha256"] for t in mine})
    records = journal.read_done(out)
    return Resume({t.name: records[t.name] for t in mine if journal.intact(out, records.get(t.name))})


# ---- the build ------------------------------------------------------------------------------------------------------


def git_sha() -> str | None:
    """The source checkout's commit, when the tool runs from one."""
    try:
        root = Path(augment.__file__).resolve().parent.parent
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() or None if sha.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def model_provenance(config: BuildConfig) -> dict[str, Any]:
    """What a model infill ran with: weights file, its sha256 and metadata, device (bytes depend on all three)."""
    if not config.model_methods():
        return {}
    from augment.cagan.inpaint import resolve_device
    from augment.cagan.weights import read_metadata

    weights = Path(config.cagan_weights)
    return {"cagan": {"weights": str(weights), "sha256": sha256_file(weights), "metadata": read_metadata(weights),
                      "device": str(resolve_device(config.device)), "batch_size": config.batch_size}}  # fmt: skip


def make_plan(config: BuildConfig, dataset: Dataset, command: str) -> journal.Plan:
    """The manifest header and one task per shard, in split order, then shard order; a task's ``start:stop`` are
    positions in the split's build order (:func:`build_order`), not source indices."""
    plans = dataset.splits()
    check_unique_keys(plans)
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
            **({"pool": pool_header(config, plans)} if config.needs_pool() else {}),
        },
        "encoding": schema.encoding(),
        "environment": schema.environment(),
        "models": model_provenance(config),
    }
    tasks, splits = [], {}
    for split, plan in plans.items():
        for index, start in enumerate(range(0, len(plan.refs), config.shard_size)):
            tasks.append(journal.Task(split, index, start, min(start + config.shard_size, len(plan.refs))))
        fields = schema.record_fields(True, plan.augment, config.infill, config.factual, config.copies)
        splits[split] = {"augmented": plan.augment, "fields": fields}
    rejects = list(getattr(dataset, "rejects", []))  # found while scanning the source
    return journal.Plan(json.loads(json.dumps(header)), tasks, splits, rejects)


def pool_header(config: BuildConfig, plans: dict) -> dict[str, Any]:
    """The value pool's parameters and, per augmented split, the keys of its members (``augment.pool``)."""
    keys = {split: [plan.refs[i].key for i in pool.members(config.seed, split, len(plan.refs))]
            for split, plan in plans.items() if plan.augment}  # fmt: skip
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
        raise ValueError(f"--shard-range {text}: the build has {total} shards, numbered 0:{total}; "
                         "expected 0 <= START < STOP <= that")  # fmt: skip
    return start, stop


def build(
    out: Path, config: BuildConfig, *, workers: int = 1, overwrite: bool = False, command: str = "",
    progress: bool = True, scheduler: str | None = None, shard_range: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run a build into ``out`` and return its manifest (for a ``shard_range`` slice: a summary of the slice).

    Resumable: a build of the same plan found in ``out`` keeps its intact shards (see :mod:`augment.journal`).
    """
    config.validate()
    out = Path(out).absolute()  # dask workers may run elsewhere: they need the shared path, not ours
    dataset = open_dataset(config)  # an unknown name or option fails here, listing the valid ones
    factory = DATASETS[config.dataset].factory
    plan = make_plan(config, dataset, command)
    job_for(config, factory, dataset)  # this process's tasks (workers=1) reuse the dataset scanned above
    selected = parse_shard_range(shard_range, len(plan.tasks)) or (0, len(plan.tasks))
    mine = plan.tasks[selected[0] : selected[1]]
    resume = prepare_out(out, plan, overwrite, mine, sliced=shard_range is not None)
    todo = [t for t in mine if t.name not in resume.keep]
    journal.remove_temp_files(out, todo)
    records = dict(resume.keep)

    calls = [(config, factory, out, t, plan.splits[t.split]["augmented"]) for t in todo]
    attempted = sum(t.stop - t.start for t in todo)
    n_kept = len(mine) - len(todo)
    desc = f"augment build {config.dataset}" + (f" (resuming: {n_kept} shards kept)" if resume.keep else "")
    bar_shown = progress and bool(todo)
    if resume.keep and not bar_shown and (todo or resume.manifest is None):  # -q, or nothing left but the manifest
        print(f"augment build: resuming {out}: {n_kept} of {len(mine)} shards kept", file=sys.stderr, flush=True)
    try:
        with tqdm(total=attempted, unit="img", desc=desc, disable=not bar_shown) as bar:
            for record in run_tasks(calls, workers, scheduler):
                if record["environment"] != plan.header["environment"]:
                    raise BuildError(f"{record['shard']['path']}: built with {record['environment']}, but the build "
                                     f"started with {plan.header['environment']}; the bytes would differ: give every "
                                     "worker the same versions")  # fmt: skip
                records[record["task"]] = record
                bar.update(record["attempted"])
    except BaseException as e:
        journal.remove_temp_files(out, todo)  # of tasks whose workers joblib stopped mid-shard
        if not isinstance(e, BuildError):
            raise
        kept = len(journal.read_done(out))
        raise BuildError(f"{e}. {kept} finished shards are kept in {out}: re-running the same command resumes "
                         "(after changing the source or the options, pass --overwrite)") from e  # fmt: skip

    if resume.manifest is not None:  # a finished build run again: rebuilt shards must match their manifest entries
        for task in todo:
            if records[task.name]["shard"]["sha256"] != resume.expected[task.name]:
                raise BuildError(f"{out / task.path}: rebuilt, but its sha256 differs from {schema.MANIFEST}; this "
                                 "machine does not reproduce the build (compare the environment in `augment info "
                                 "--json`)")  # fmt: skip
        shutil.rmtree(journal.journal(out), ignore_errors=True)
        return resume.manifest
    if shard_range is not None:
        done = set(journal.read_done(out)) & {t.name for t in plan.tasks}
        return {"slice": list(selected), "built": len(todo), "kept": len(mine) - len(todo),
                "shards_done": len(done), "shards_total": len(plan.tasks),
                "samples": sum(records[t.name]["shard"]["num_samples"] for t in mine)}  # fmt: skip
    return journal.finish(out, plan, records)


def merge(out: Path) -> dict[str, Any]:
    """Write the manifest of a build made in slices (``--shard-range``), once every slice is done."""
    out = Path(out)
    plan = journal.read_plan(out)
    if plan is None:
        if (out / schema.MANIFEST).is_file():
            return schema.read_manifest(out)  # merged already
        raise BuildError(f"{out}: no build plan ({journal.JOURNAL}/{journal.PLAN}); expected the --out folder of "
                         "`augment build --shard-range ...`")  # fmt: skip
    records = journal.read_done(out)
    done = {t.name for t in plan.tasks if journal.intact(out, records.get(t.name))}
    if len(done) < len(plan.tasks):
        raise BuildError(f"{out}: {len(plan.tasks) - len(done)} of {len(plan.tasks)} shards are not built or fail "
                         f"their checksum; build them with --shard-range {journal.missing_ranges(plan, done)} "
                         "(the same command otherwise), then merge again")  # fmt: skip
    for task in plan.tasks:
        if records[task.name]["environment"] != plan.header["environment"]:
            raise BuildError(f"{out / task.path}: built with {records[task.name]['environment']}, other shards with "
                             f"{plan.header['environment']}; rebuild it where the versions match")  # fmt: skip
    return journal.finish(out, plan, records)
