"""Training a study's runs, several side by side, and reusing what an earlier study left.

A run whose results.json exists with the same config and build is reused; one with a checkpoint but no results
resumes from it. So a study re-run after a crash loses at most the epoch in progress. A config.json from before
``from_scratch`` existed reads as the run was (``train.config.recorded``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from train.config import recorded
from train.study.specs import RunSpec

log = logging.getLogger("train")


def finished(spec: RunSpec) -> bool:
    """A run whose results exist for exactly this config and this build (the manifest's sha256: shards rebuilt by
    another version of augment, or from changed data, give other results under the same config)."""
    from train.data import manifest_sha256

    folder = Path(spec.config.out)
    if not (folder / "results.json").is_file() or not (folder / "config.json").is_file():
        return False
    if recorded(json.loads((folder / "config.json").read_text())) != spec.config.to_dict():
        return False
    learnt_from = json.loads((folder / "results.json").read_text()).get("manifest_sha256")
    return learnt_from == manifest_sha256(spec.config.shards)


def run(spec: RunSpec) -> None:
    """Train and evaluate one run, or reuse/resume it."""
    from train.train import fit

    folder = Path(spec.config.out)
    if finished(spec):
        log.info("study: reusing %s", folder)
        return
    resume = (folder / "last.pt").is_file()
    if resume and (folder / "config.json").is_file():
        if recorded(json.loads((folder / "config.json").read_text())) != spec.config.to_dict():
            raise ValueError(f"{folder}: holds a run of another config; delete it or choose another --out")
        if (folder / "results.json").is_file():  # finished, but not on this build (else finished() was true)
            raise ValueError(
                f"{folder}: holds a run on another build of {spec.config.shards} (its manifest sha256 "
                "differs); delete the study folder or choose another --out"
            )
    fit(spec.config, resume=resume)


class Tally:
    """The study's progress in log lines: ``run k of N: <row> seed s`` as each run starts (or is reused), and, once
    a run has finished here, its time and the time left. The estimate assumes every run left takes the mean time of
    those trained so far, ``jobs`` at a time (runs an earlier study finished count as left until they are reached,
    so it errs long)."""

    def __init__(self, total: int, jobs: int = 1) -> None:
        self.total, self.jobs, self.started, self.ended = total, jobs, 0, 0
        self.took: list[float] = []
        self.running: dict[int, float] = {}  # run number -> its start (time.monotonic)

    @staticmethod
    def label(spec: RunSpec) -> str:
        return f"{spec.row} seed {spec.seed}" + (f", {spec.fraction:g} of train" if spec.fraction != 1.0 else "")

    def reused(self, spec: RunSpec) -> None:
        self.started += 1
        self.ended += 1
        log.info("study: run %d of %d: %s: reusing %s", self.started, self.total, self.label(spec), spec.config.out)

    def start(self, spec: RunSpec) -> int:
        self.started += 1
        self.running[self.started] = time.monotonic()
        how = "resuming" if (Path(spec.config.out) / "last.pt").is_file() else "training"
        log.info("study: run %d of %d: %s: %s in %s", self.started, self.total, self.label(spec), how, spec.config.out)
        return self.started

    def done(self, number: int, spec: RunSpec) -> None:
        now = time.monotonic()
        self.took.append(now - self.running.pop(number))
        self.ended += 1
        left = self.left(now)
        log.info(
            "study: run %d of %d done in %s: %s%s",
            number,
            self.total,
            duration(self.took[-1]),
            self.label(spec),
            f"; {self.total - self.ended} to go, about {duration(left)} left" if self.ended < self.total else "",
        )

    def left(self, now: float) -> float:
        """Seconds until the last run ends: the runs not started, and the rest of those running, ``jobs`` at a time
        (never less than the longest rest of a running one)."""
        mean = sum(self.took) / len(self.took)
        rests = [max(mean - (now - t), 0.0) for t in self.running.values()]
        waiting = self.total - self.ended - len(self.running)
        return max((mean * waiting + sum(rests)) / self.jobs, max(rests, default=0.0))


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h04m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s // 60 % 60:02d}m"


def run_all(specs: list[RunSpec], jobs: int, tally: Tally | None = None) -> None:
    """Run ``specs``, ``jobs`` at a time: each in its own process with its share of the cores (several small runs
    side by side use a CPU better than one run on every core). ``tally`` numbers the runs across calls (default:
    these runs alone) and logs the time left."""
    tally = tally or Tally(len(specs), jobs)
    todo = []
    for spec in specs:
        if finished(spec):
            tally.reused(spec)
        else:
            todo.append(spec)
    if jobs == 1 or len(todo) <= 1:
        for spec in todo:
            number = tally.start(spec)
            run(spec)
            tally.done(number, spec)
        return
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # a clean process: no torch thread pool inherited
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=start_worker, initargs=(threads,)) as pool:
        running: dict = {}  # future -> (run number, spec)
        queue = list(todo)
        while queue or running:
            while queue and len(running) < jobs:  # submitted when a process is free: it starts now
                spec = queue.pop(0)
                running[pool.submit(run, spec)] = (tally.start(spec), spec)
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                number, spec = running.pop(future)
                future.result()  # the first failure stops the study (finished runs are kept; running ones end)
                tally.done(number, spec)


def start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
