"""``augment build``: read -> mask -> infill -> encode -> write, one shard per task, in parallel.

The run: fix the plan (``augment.runner.plan``: the manifest header and one task per shard of each split's seeded
build order), prepare ``--out`` (``augment.runner.resume``: start, resume or refuse), run the tasks that are left
(``augment.runner.task``, each running its samples through ``augment.pipeline``, on the executors of
``augment.runner.executors``), check what came back, and write the manifest last: a folder without one is an
unfinished build, and running the same command again resumes it (``augment.runner.journal``). Randomness is per
sample (``augment.rng``), so the shards are byte-identical whatever runs them: one process, ``workers`` local
processes, a dask cluster, or slices (``shard_range``) merged later.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from augment import options
from augment.config import BuildConfig
from augment.contract import schema
from augment.datasets import DATASETS
from augment.errors import BuildError
from augment.runner import journal
from augment.runner.cache import cached_dataset, open_dataset
from augment.runner.executors import connect, run_tasks
from augment.runner.plan import make_plan, parse_shard_range
from augment.runner.resume import Resume, prepare_out
from augment.runner.task import build_shard


def build(
    out: Path,
    config: BuildConfig,
    *,
    workers: int = 1,
    overwrite: bool = False,
    command: str = "",
    progress: bool = True,
    scheduler: str | None = None,
    shard_range: str | None = None,
) -> dict[str, Any]:
    """Run a build into ``out`` and return its manifest (for a ``shard_range`` slice: a summary of the slice).

    Resumable: a build of the same plan found in ``out`` keeps its intact shards (see :mod:`augment.runner.journal`).
    """
    options.check(config)
    out = Path(out).absolute()  # dask workers may run elsewhere: they need the shared path, not ours
    dataset = open_dataset(config)  # an unknown name or option fails here, listing the valid ones
    factory = DATASETS[config.dataset].factory
    cache = cached_dataset(config, factory, dataset)  # this process's tasks (workers=1) reuse the dataset scanned here
    plan = make_plan(config, dataset, command, cache.banks)
    say_shifted_tests(schema.parse_shifted_tests({**plan.header, "splits": plan.splits}))  # the readers' parser
    selected = parse_shard_range(shard_range, len(plan.tasks)) or (0, len(plan.tasks))
    mine, sliced = plan.tasks[selected[0] : selected[1]], shard_range is not None
    with connect(scheduler) as client:  # a --scheduler that does not answer fails here, before --out is touched
        return build_into(out, config, plan, mine, selected, overwrite, progress, client, workers, sliced)


def build_into(
    out: Path,
    config: BuildConfig,
    plan: journal.Plan,
    mine: list[journal.Task],
    selected: tuple[int, int],
    overwrite: bool,
    progress: bool,
    client: Any,
    workers: int,
    sliced: bool,
) -> dict[str, Any]:
    """The part of :func:`build` that writes: prepare ``out``, build the tasks of ``mine`` that are left (on the
    dask ``client``, or ``workers`` local processes), and write the manifest (or, ``sliced``, sum up the slice)."""
    resume = prepare_out(out, plan, overwrite, mine, sliced=sliced)
    todo = [t for t in mine if t.name not in resume.keep]
    journal.remove_temp_files(out, todo)  # left by a killed run
    bar = progress_bar(out, config, resume, len(mine), todo, progress)
    factory = DATASETS[config.dataset].factory
    calls = [(config, factory, out, t, plan.splits[t.split]["augmented"]) for t in todo]
    records = {**resume.keep, **run_shards(out, plan, todo, calls, bar, workers, client)}
    if resume.manifest is not None:  # a finished build run again: rebuilt shards must match their manifest entries
        check_rebuilt(out, todo, records, resume.expected)
        shutil.rmtree(journal.journal(out), ignore_errors=True)
        return resume.manifest
    if sliced:
        done = set(journal.read_done(out)) & {t.name for t in plan.tasks}
        return {
            "slice": list(selected),
            "built": len(todo),
            "kept": len(mine) - len(todo),
            "shards_done": len(done),
            "shards_total": len(plan.tasks),
            "samples": sum(records[t.name]["shard"]["num_samples"] for t in mine),
        }
    return journal.finish(out, plan, records)


def say_shifted_tests(section: schema.ShiftedTests | None) -> None:
    """One line on stderr per test split that --shifted-tests makes no variants of, and why, and per base split
    whose samples with boxes only it leaves out."""
    if section is None:
        return
    for split, why in section.skipped.items():
        print(f"augment build: --shifted-tests: no variants of {split}: {why}", file=sys.stderr, flush=True)
    for split, which in section.left_out.items():
        print(f"augment build: --shifted-tests: in {split}, {which}", file=sys.stderr, flush=True)
    if not section.pairs:
        print(
            "augment build: --shifted-tests: no test split has object masks, so no shifted test split is written",
            file=sys.stderr,
            flush=True,
        )


def progress_bar(
    out: Path, config: BuildConfig, resume: Resume, n_mine: int, todo: list[journal.Task], progress: bool
) -> tqdm:
    """The bar over the samples of ``todo`` (of the ``n_mine`` tasks of this run); hidden with ``progress`` off or
    nothing to build, and then a resumed build says in one line how many shards it kept."""
    n_kept = n_mine - len(todo)
    desc = f"augment build {config.dataset}" + (f" (resuming: {n_kept} shards kept)" if resume.keep else "")
    bar_shown = progress and bool(todo)
    if resume.keep and not bar_shown and (todo or resume.manifest is None):  # -q, or nothing left but the manifest
        print(f"augment build: resuming {out}: {n_kept} of {n_mine} shards kept", file=sys.stderr, flush=True)
    return tqdm(total=sum(t.stop - t.start for t in todo), unit="img", desc=desc, disable=not bar_shown)


def run_shards(
    out: Path,
    plan: journal.Plan,
    todo: list[journal.Task],
    calls: list[tuple],
    bar: tqdm,
    workers: int,
    client: Any,
) -> dict[str, dict[str, Any]]:
    """Build the shards of ``todo`` (``calls`` are their :func:`build_shard` arguments) and return their records by
    task name. A failed or interrupted run removes the temp files of unfinished shards; its BuildError says that
    re-running the command resumes."""
    records: dict[str, dict[str, Any]] = {}
    try:
        with bar:
            for record in run_tasks(build_shard, calls, workers, client):
                if record["environment"] != plan.header["environment"]:
                    raise BuildError(
                        f"{record['shard']['path']}: built with {record['environment']}, but the build "
                        f"started with {plan.header['environment']}; the bytes would differ: give every "
                        "worker the same versions"
                    )
                records[record["task"]] = record
                bar.update(record["attempted"])
    except BaseException as e:
        journal.remove_temp_files(out, todo)  # of tasks whose workers joblib stopped mid-shard
        if not isinstance(e, BuildError):
            raise
        kept = len(journal.read_done(out))
        raise BuildError(
            f"{e}. {kept} finished shards are kept in {out}: re-running the same command resumes "
            "(after changing the source or the options, pass --overwrite)"
        ) from e
    return records


def check_rebuilt(
    out: Path, todo: list[journal.Task], records: dict[str, dict[str, Any]], expected: dict[str, str]
) -> None:
    """A shard of a finished build, rebuilt, must be the bytes its manifest entry names."""
    for task in todo:
        if records[task.name]["shard"]["sha256"] != expected[task.name]:
            raise BuildError(
                f"{out / task.path}: rebuilt, but its sha256 differs from {schema.MANIFEST}; this "
                "machine does not reproduce the build (compare the environment in `augment info "
                "--json`)"
            )


def merge(out: Path) -> dict[str, Any]:
    """Write the manifest of a build made in slices (``--shard-range``), once every slice is done."""
    out = Path(out)
    plan = journal.read_plan(out)
    if plan is None:
        if (out / schema.MANIFEST).is_file():
            return schema.read_manifest(out)  # merged already
        raise BuildError(
            f"{out}: no build plan ({journal.JOURNAL}/{journal.PLAN}); expected the --out folder of "
            "`augment build --shard-range ...`"
        )
    records = journal.read_done(out)
    done = {t.name for t in plan.tasks if journal.intact(out, records.get(t.name))}
    if len(done) < len(plan.tasks):
        raise BuildError(
            f"{out}: {len(plan.tasks) - len(done)} of {len(plan.tasks)} shards are not built or fail "
            f"their checksum; build them with --shard-range {journal.missing_ranges(plan, done)} "
            "(the same command otherwise), then merge again"
        )
    for task in plan.tasks:
        if records[task.name]["environment"] != plan.header["environment"]:
            raise BuildError(
                f"{out / task.path}: built with {records[task.name]['environment']}, other shards with "
                f"{plan.header['environment']}; rebuild it where the versions match"
            )
    return journal.finish(out, plan, records)
