"""``augment build``: read -> mask -> infill -> encode -> write, one shard per task, in parallel.

Each split's samples are cut into shards of ``shard_size`` in dataset order. A task builds one shard from
scratch (it loads its samples itself, so no pixels cross process boundaries), writes it under a temp name and
renames it, and returns its count and sha256. Randomness is per sample (``augment.rng``), so the shards are
byte-identical whatever ``workers`` is. The manifest is written last: a folder without one is an unfinished build.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

import augment
from augment import encode, infill, masks, schema
from augment.datasets import Dataset, Sample, get_dataset
from augment.datasets.files import ON_ERROR
from augment.infill.mixed_rand import Donor
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
    model_fills: dict[str, np.ndarray] | None = None,
) -> dict[str, bytes]:  # fmt: skip
    """One shard record: the original, its mask and metadata, and every requested CF/F image.

    ``model_fills`` holds the images of model methods (cagan), already filled in a batch by :func:`fill_models`.
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
                kwargs = (
                    {"donor": load_donor(sample, dataset, donors, rng, config.on_error)} if method.needs_donor else {}
                )
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
        hole = masks.cf_hole(other.mask, other.boxes, other.image.shape[:2])
        if hole is not None:
            return Donor(other.image, hole)
    raise BuildError(
        f"{sample.split}/{sample.key}: {MAX_DONOR_DRAWS} mixed-rand donors in a row failed to load or had no object"
    )


def build_shard(
    dataset: Dataset, config: BuildConfig, out: Path, split: str, index: int, start: int, stop: int,
    augmented: bool, donors: Donors | None,
) -> dict[str, Any]:  # fmt: skip
    """Build one shard from samples ``start:stop`` of ``split``; runs in a worker process.

    Returns the shard's manifest entry plus what the build aggregates: per-label counts and skipped inputs.
    """
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

    def records():
        for first in range(start, stop, step):
            loaded = [(i, guarded(i, dataset.load, split, i)) for i in range(first, min(first + step, stop))]
            loaded = [(i, sample) for i, sample in loaded if sample is not None]
            fills = fill_models([s for _, s in loaded], config) if augmented else {}
            for i, sample in loaded:
                record = guarded(i, make_record, sample, dataset, config, augmented, donors, fills.get(sample.key))
                if record is None:
                    continue
                labels[sample.label] += 1
                yield record

    info = write_shard(out / schema.shard_path(split, index), records())
    return {"split": split, "index": index, "attempted": stop - start, "labels": labels, "rejects": rejects,
            "shard": {"path": schema.shard_path(split, index), **info}}  # fmt: skip


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
    """Everything a build writes into ``out``: manifest, rejects, shards, and their temp files."""
    found = [out / schema.MANIFEST, out / schema.REJECTS, *out.glob("*.tmp"), *out.glob("*/shard-*.tar*")]
    return [p for p in found if p.is_file()]


def remove_build(out: Path) -> None:
    """Remove what a build wrote into ``out``, and the split folders that become empty."""
    for p in our_files(out):
        p.unlink()
    for d in out.iterdir():
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then remove only what an earlier build wrote."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in out.rglob("*") if not p.is_dir()]
    if not files:  # empty, or only empty folders (a build killed before its first shard)
        remove_build(out)
        return
    ours = our_files(out)
    if not overwrite:
        what = "an earlier build" if (out / schema.MANIFEST).exists() else "an unfinished build" if ours else "files"
        raise OutFolderError(f"--out {out}: folder is not empty (it holds {what}); pass --overwrite to replace a "
                             "build there, or choose another folder")  # fmt: skip
    if not ours:
        raise OutFolderError(f"--out {out}: folder holds files that are not an augment build; refusing to touch it")
    remove_build(out)


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


def build(
    out: Path, config: BuildConfig, *, workers: int = 1, overwrite: bool = False, command: str = "",
    argv: list[str] | None = None, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Run a whole build into ``out`` and return its manifest."""
    config.validate()
    dataset = get_dataset(
        config.dataset, seed=config.seed, image_size=config.image_size, on_error=config.on_error,
        **config.dataset_options,
    )  # fmt: skip
    plans = dataset.splits()
    check_unique_keys(plans)
    prepare_out(out, overwrite)

    tasks, split_info = [], {}
    for split, plan in plans.items():
        labels = np.array([r.label for r in plan.refs], dtype=np.int64)
        annotated = np.array([r.annotated for r in plan.refs], dtype=bool)
        # mixed-rand donors must have an object rectangle to tile over, or their object would leak in
        donors = Donors.of(labels, annotated) if plan.augment and config.factual else None
        for index, start in enumerate(range(0, len(plan.refs), config.shard_size)):
            stop = min(start + config.shard_size, len(plan.refs))
            tasks.append(delayed(build_shard)(dataset, config, out, split, index, start, stop, plan.augment, donors))
        split_info[split] = {
            "augmented": plan.augment,
            "num_samples": 0,
            "per_class": dict.fromkeys(dataset.classes, 0),
            "fields": schema.record_fields(True, plan.augment, config.infill, config.factual, config.copies),
            "shards": [],
        }

    rejects = list(getattr(dataset, "rejects", []))  # found while scanning the source
    results = []
    attempted = sum(len(p.refs) for p in plans.values())
    try:
        with tqdm(total=attempted, unit="img", desc=f"augment build {config.dataset}", disable=not progress) as bar:
            for result in Parallel(n_jobs=workers, return_as="generator_unordered")(tasks):
                results.append(result)
                bar.update(result["attempted"])
    except BaseException:
        remove_build(out)  # a failed build leaves the folder as it found it (joblib has stopped its workers)
        raise
    for result in sorted(results, key=lambda r: (list(plans).index(r["split"]), r["index"])):
        info = split_info[result["split"]]
        info["shards"].append(result["shard"])
        info["num_samples"] += result["shard"]["num_samples"]
        for label, n in result["labels"].items():
            info["per_class"][dataset.classes[label]] += n
        rejects.extend(result["rejects"])
    if rejects:
        schema.write_rejects(out, rejects)
    total = sum(s["num_samples"] for s in split_info.values())

    manifest = {
        "format": schema.FORMAT,
        "format_version": schema.FORMAT_VERSION,
        "tool": {"name": "augment", "version": augment.__version__, "git_sha": git_sha()},
        "command": command,
        "argv": argv or [],
        "options": asdict(config),
        "seed": config.seed,
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint(),
            "params": dataset.describe(),
            "classes": list(dataset.classes),
        },
        "image_size": config.image_size or dataset.default_image_size,
        "methods": {"cf": config.infill, "f": config.factual, "copies": config.copies},
        "encoding": schema.encoding(),
        "environment": schema.environment(),
        "num_samples": total,
        "rejects": {"count": len(rejects), "file": schema.REJECTS if rejects else None},
        "models": model_provenance(config),
        "splits": split_info,
    }
    schema.write_manifest(out, manifest)
    return manifest
