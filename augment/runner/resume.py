"""The ``--out`` folder: start a build in it, resume the same build found there, or refuse to touch it.

Only a folder holding nothing but files of a build is ever changed. A build of the same plan keeps every shard
whose file matches its record (``augment.runner.journal``) and rebuilds the rest; a build of another command is refused
unless ``--overwrite`` replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augment import pool
from augment.contract import schema
from augment.errors import OutFolderError
from augment.runner import journal
from augment.runner.diff import diff_dicts

OURS = f"{schema.MANIFEST}, {schema.REJECTS}, <split>/shard-*.tar, {journal.JOURNAL}/"  # what is_ours accepts


def is_ours(out: Path, path: Path) -> bool:
    """Whether ``path`` (inside ``out``) is a file a build writes: manifest, rejects, shards, their temp files, or the
    journal. Decided by the name alone, so that a file another slice renames meanwhile is still recognised."""
    if path.parent == out:
        return path.name in (schema.MANIFEST, schema.REJECTS) or path.name.endswith(".tmp")
    if path.parent.parent == out and path.name.startswith("shard-") and ".tar" in path.name:
        return True
    return path.is_relative_to(journal.journal(out))


def our_files(out: Path) -> list[Path]:
    """Everything a build wrote into ``out`` (see :func:`is_ours`)."""
    return [p for p in out.rglob("*") if is_ours(out, p) and p.is_file()]


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
    files = claim_out(out, overwrite, sliced)
    starting = all(p.parent == journal.journal(out) and p.name.endswith(".tmp") for p in files)  # another slice's plan
    if starting:
        if not sliced:
            remove_build(out)  # empty split folders of a build killed before its first shard
        journal.write_plan(out, plan)
        return Resume()
    if (out / schema.MANIFEST).is_file():
        return resume_finished(out, plan, mine)
    return resume_unfinished(out, plan, mine)


def claim_out(out: Path, overwrite: bool, sliced: bool) -> list[Path]:
    """Make ``out`` if needed and return the files in it, after ``overwrite`` removed a build there; refuse a folder
    that holds anything but a build's files."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    # one listing, each name judged alone: slices started together create and rename files all the while
    files = [p for p in out.rglob("*") if not p.is_dir()]
    foreign = sorted(p for p in files if not is_ours(out, p))
    if foreign:
        which = (
            f"{foreign[0]} is not an augment build's file"
            if len(foreign) == 1
            else f"{foreign[0]} and {len(foreign) - 1} other file(s) are not an augment build's files"
        )
        if overwrite:
            raise OutFolderError(
                f"--out {out}: {which}; --overwrite only removes what a build wrote ({OURS}): move "
                f"{'it' if len(foreign) == 1 else 'them'} or choose another --out"
            )
        raise OutFolderError(f"--out {out}: folder is not empty (it holds files); choose another folder ({which})")
    if files and overwrite:
        if sliced:
            raise OutFolderError(
                f"--out {out}: --overwrite with --shard-range would delete the other slices' shards; "
                "empty the folder first"
            )
        remove_build(out)
        files = []
    return files


def resume_finished(out: Path, plan: journal.Plan, mine: list[journal.Task]) -> Resume:
    """A finished build of this very command: keep every intact shard of ``mine``, rebuild damaged ones (each must
    then match its manifest entry)."""
    try:
        manifest = schema.read_manifest(out)
    except ValueError as e:
        raise OutFolderError(f"{e}; pass --overwrite to replace the build") from None
    header, planned = plan.header, plan.header["methods"].get("pool")
    if planned is not None:  # the manifest lists the pool members used, the plan those drawn
        header = journal.with_pool(header, pool.as_recorded(planned, (manifest.get("methods") or {}).get("pool")))
    changes = diff_dicts({k: manifest.get(k) for k in header}, header)
    listed = {s["path"]: s for info in manifest["splits"].values() for s in info["shards"]}
    if not changes and sorted(listed) != sorted(t.path for t in plan.tasks):
        changes = ["the shard plan (samples per shard or per split)"]
    refuse_changes(out, changes, "an earlier build")
    keep = {t.name: {"shard": listed[t.path]} for t in mine if journal.intact(out, {"shard": listed[t.path]})}
    return Resume(keep, manifest, {t.name: listed[t.path]["sha256"] for t in mine})


def resume_unfinished(out: Path, plan: journal.Plan, mine: list[journal.Task]) -> Resume:
    """An unfinished build of the same plan: keep the shards of ``mine`` that match their journal records."""
    stored = journal.read_plan(out)
    if stored is None:
        raise OutFolderError(
            f"--out {out}: holds an unfinished build without a plan (from an older version of "
            "augment?); pass --overwrite to replace it"
        )
    refuse_changes(out, stored.same_as(plan), "an unfinished build")
    records = journal.read_done(out)
    return Resume({t.name: records[t.name] for t in mine if journal.intact(out, records.get(t.name))})


def refuse_changes(out: Path, changes: list[str], what: str) -> None:
    """Refuse a build in ``out`` when the build there (``what``) came from another command."""
    if changes:
        raise OutFolderError(
            f"--out {out}: folder is not empty (it holds {what} of another command; differs in "
            f"{'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}); pass --overwrite to replace it, or "
            "choose another folder"
        )
