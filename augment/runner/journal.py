"""The build journal in ``<out>/.build/``: what makes a build resumable, sliceable and mergeable.

- ``plan.json``: the build's header (every manifest key fixed before the first pixel: options, source
  fingerprint, tool, encoder versions, ...) and its task list, one task per shard in a fixed global order. A task
  names positions in its split's build order, which every worker derives from the seed (no sample list is stored).
- ``done/<split>-NNNNNN.json``: one record per finished shard (path, count, bytes, sha256, labels, rejects, the
  shuffle pool's members left out), written atomically by the worker right after the shard's own atomic rename.

Re-running the same command keeps every shard whose file matches its record and rebuilds the rest, so a build
killed at any moment (SIGKILL included) ends byte-identical to an uninterrupted one; local workers exit with the
main process (``augment.runner.orphans``), so a re-run never races a worker of the killed run, and it removes the temp
files that workers stopped mid-shard left (:func:`remove_temp_files`). ``--shard-range`` builds a slice of the
tasks; ``augment merge`` writes the manifest once every slice is done. The manifest is assembled from the header and
the records in task order, so it is the same bytes however the work was cut or scheduled. Once it is written,
``.build/`` is removed.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augment import pool
from augment.contract import schema
from augment.contract.files import write_text_atomic
from augment.contract.shards import sha256_file
from augment.errors import BuildError

JOURNAL = ".build"
PLAN = "plan.json"
DONE = "done"


@dataclass(frozen=True)
class Task:
    """One shard: positions ``start:stop`` of ``split`` in its build order (``augment.runner.plan.build_order``, a
    seeded permutation of the source order), stored as shard number ``index`` of that split."""

    split: str
    index: int
    start: int
    stop: int

    @property
    def path(self) -> str:
        return schema.shard_path(self.split, self.index)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"


@dataclass
class Plan:
    """Everything decided before building: the manifest header, the tasks, per-split facts, scan-time rejects."""

    header: dict[str, Any]
    tasks: list[Task]
    splits: dict[str, dict[str, Any]]  # split -> {"augmented": bool, "fields": [...]}
    scan_rejects: list[dict[str, str]]  # bad inputs found while scanning the source

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "tasks": [[t.split, t.index, t.start, t.stop] for t in self.tasks],
            "splits": self.splits,
            "scan_rejects": self.scan_rejects,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(data["header"], [Task(*t) for t in data["tasks"]], data["splits"], data["scan_rejects"])

    def same_as(self, other: Plan) -> list[str]:
        """How ``other`` differs from this plan (empty: the same build)."""
        from augment.runner.diff import diff_dicts

        changes = diff_dicts(self.header, other.header)
        if not changes and self.to_json() != other.to_json():
            changes.append("the shard plan (samples per shard or per split)")
        return changes


def journal(out: Path) -> Path:
    return Path(out) / JOURNAL


def atomic_json(path: Path, data: Any) -> None:
    """Write JSON via a temp name unique to this process, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n", fsync=True, unique=True)


def write_plan(out: Path, plan: Plan) -> None:
    atomic_json(journal(out) / PLAN, plan.to_json())


def read_plan(out: Path) -> Plan | None:
    path = journal(out) / PLAN
    if not path.is_file():
        return None
    try:
        return Plan.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable build plan ({e}); pass --overwrite to start the build again") from None


def record_done(out: Path, task: Task, record: dict[str, Any]) -> None:
    """Called by the worker once the shard has its final name."""
    atomic_json(journal(out) / DONE / f"{task.name}.json", record)


def read_done(out: Path) -> dict[str, dict[str, Any]]:
    """Task name -> record, for every readable record (a record is written whole or not at all)."""
    records = {}
    for path in sorted((journal(out) / DONE).glob("*.json")):
        try:
            records[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue  # cannot happen with atomic writes; if it does, the shard is rebuilt
    return records


def intact(out: Path, record: dict[str, Any] | None) -> bool:
    """Whether the shard a record describes is on disk with the recorded size and sha256."""
    if not record:
        return False
    path = Path(out) / record["shard"]["path"]
    return (
        path.is_file()
        and path.stat().st_size == record["shard"]["bytes"]
        and sha256_file(path) == record["shard"]["sha256"]
    )


def remove_temp_files(out: Path, tasks: list[Task]) -> None:
    """Temp files of these tasks' shards and records, left by a killed run (other slices' files are not touched)."""
    for task in tasks:
        for tmp in [
            *(Path(out) / task.split).glob(f"shard-{task.index:06d}.tar*.tmp"),
            *(journal(out) / DONE).glob(f"{task.name}.json.*.tmp"),
        ]:
            tmp.unlink(missing_ok=True)


def missing_ranges(plan: Plan, done: set[str]) -> str:
    """Global task numbers without a finished shard, as ``--shard-range`` values: ``3:4 7:10``."""
    ranges, start = [], None
    for i, task in enumerate([*plan.tasks, None]):
        missing = task is not None and task.name not in done
        if missing and start is None:
            start = i
        elif not missing and start is not None:
            ranges.append(f"{start}:{i}")
            start = None
    return " ".join(ranges)


def assemble(
    plan: Plan, records: dict[str, dict[str, Any]], classes: list[str]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The manifest (the header, then per-split counts and shard entries in task order) and every reject."""
    splits = {
        name: {
            "augmented": info["augmented"],
            "num_samples": 0,
            "per_class": dict.fromkeys(classes, 0),
            "mask_sources": {},
            "fields": info["fields"],
            "shards": [],
        }
        for name, info in plan.splits.items()
    }
    rejects = list(plan.scan_rejects)
    bank = plan.header.get("backgrounds")
    bad: dict[str, str] = {}  # bank files left out as bad (--on-error skip), each listed once
    for task in plan.tasks:
        record = records[task.name]
        info = splits[task.split]
        if bank is not None and "backgrounds" in record:
            bad |= background_draws(task, record["backgrounds"], bank, info)
        info["shards"].append(record["shard"])
        info["num_samples"] += record["shard"]["num_samples"]
        for label, n in record["labels"].items():
            info["per_class"][classes[int(label)]] += n
        for source, n in record.get("mask_sources", {}).items():  # samples per mask_source ("none": no object)
            info["mask_sources"][source] = info["mask_sources"].get(source, 0) + n
        rejects.extend(record["rejects"])
    rejects += [{"split": "", "path": path, "reason": why} for path, why in sorted(bad.items())]
    total = sum(s["num_samples"] for s in splits.values())
    rejects_info = {"count": len(rejects), "file": schema.REJECTS if rejects else None}
    return {**with_used_pool(plan, records), "num_samples": total, "rejects": rejects_info, "splits": splits}, rejects


def background_draws(task: Task, done: dict[str, Any], bank: dict[str, Any], info: dict[str, Any]) -> dict[str, str]:
    """Add a shard's bank draws per kind to its split's ``background_draws`` and return the bank files it left out;
    a shard whose bank differs from the plan's (the folder changed during the build) stops the assembly."""
    if done["fingerprint"] != bank["fingerprint"]:
        raise BuildError(
            f"{task.path}: built from a --backgrounds bank of fingerprint {done['fingerprint'][:12]}, the build's is "
            f"{bank['fingerprint'][:12]}: the bank changed during the build; rebuild with --overwrite"
        )
    counts = info.setdefault("background_draws", {})
    for how, n in done["draws"].items():
        counts[how] = counts.get(how, 0) + n
    return done["left_out"]


def with_used_pool(plan: Plan, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The header, its shuffle pool listing the members used: the plan lists those drawn, before any was loaded."""
    methods = plan.header["methods"]
    if "pool" not in methods:
        return plan.header
    left_out: dict[str, list[list]] = {}
    for task in plan.tasks:
        mine = records[task.name].get("pool_left_out")  # absent: a split not augmented
        if mine is not None and left_out.setdefault(task.split, mine) != mine:
            raise BuildError(
                f"{task.path}: its shuffle pool left out members {mine} ([position, why]), other "
                f"{task.split} shards {left_out[task.split]}: the source changed during the build; "
                "rebuild with --overwrite"
            )
    return with_pool(plan.header, pool.used_members(methods["pool"], left_out))


def with_pool(header: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """``header`` with ``section`` as its shuffle pool."""
    return {**header, "methods": {**header["methods"], "pool": section}}


def finish(out: Path, plan: Plan, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write rejects.jsonl and manifest.json (last: its presence means the build is complete), drop the journal."""
    manifest, rejects = assemble(plan, records, plan.header["dataset"]["classes"])
    if rejects:
        schema.write_rejects(out, rejects)
    schema.write_manifest(out, manifest)
    shutil.rmtree(journal(out), ignore_errors=True)
    return manifest


def label_counts(labels: Counter[int]) -> dict[str, int]:
    """JSON-safe per-label counts, keyed by the label as a string."""
    return {str(k): v for k, v in sorted(labels.items())}
