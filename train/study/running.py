"""Training a study's runs, several side by side, and reusing what an earlier study left.

A run whose results.json exists with the same config and build is reused; one with a checkpoint but no results
resumes from it. So a study re-run after a crash loses at most the epoch in progress. A config.json from before
``from_scratch`` existed reads as the run was (``train.config.recorded``).
"""

from __future__ import annotations

import json
import logging
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
            raise ValueError(f"{folder}: holds a run on another build of {spec.config.shards} (its manifest sha256 "
                             "differs); delete the study folder or choose another --out")  # fmt: skip
    log.info("study: %s %s", "resuming" if resume else "training", folder)
    fit(spec.config, resume=resume)


def run_all(specs: list[RunSpec], jobs: int) -> None:
    """Run ``specs``, ``jobs`` at a time: each in its own process with its share of the cores (several small runs
    side by side use a CPU better than one run on every core)."""
    todo = [s for s in specs if not finished(s)]
    if jobs == 1 or len(todo) <= 1:
        for spec in specs:
            run(spec)
        return
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # a clean process: no torch thread pool inherited
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=start_worker, initargs=(threads,)) as pool:
        for future in [pool.submit(run, spec) for spec in todo]:
            future.result()  # the first failure stops the study (finished runs are kept)


def start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
