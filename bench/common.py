"""Helpers shared by the benchmarks: where outputs go, timed CLI runs, source images, process-tree memory.

The benchmarks drive whole pipelines through the installed CLIs (``augment``, ``train``) so that they measure
what a user runs and do not depend on internal function signatures.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

OUT = Path(__file__).resolve().parent / "out"  # `make clean` removes it; ignored by git
BIN = Path(sys.executable).parent  # the venv's bin/, which holds the `augment` and `train` entry points
CLASSES = ("circle", "square", "triangle", "cross", "star")


def machine() -> str:
    """The CPU, its cores and the current load: the figures depend on all three."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {load} (1/5/15 min)"


class OtherLoad:
    """How much of the machine other jobs used while a benchmark ran: the CPU time the whole machine spent busy
    (/proc/stat) minus that of this process and its descendants (getrusage), over wall time x cores. The load
    average would count the benchmark's own workers too."""

    def __init__(self):
        self.start = self.snapshot()

    @staticmethod
    def snapshot() -> tuple[float, float, float]:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = sum(
            r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        )
        return time.monotonic(), busy, own

    def line(self) -> str:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self.snapshot()
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / ((t1 - t0) * os.cpu_count())
        return f"    other jobs on the machine used {other:.0%} of its {os.cpu_count()} cores meanwhile"


def git(*args: str) -> list[str]:
    """The output lines of a git command in this checkout: which commits (and uncommitted edits) a run measured."""
    out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parent)
    return out.stdout.splitlines()


def one_thread_worker() -> None:
    """A spawned benchmark worker's initializer: this folder importable (parity, photos) and one torch thread, so
    that ``--jobs`` runs share the cores without stalling each other."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    torch.set_num_threads(1)


def spawned(jobs: int, calls: list[tuple[Callable[..., Any], tuple]]) -> list[Any]:
    """Each ``(function, args)`` of ``calls`` run in a pool of ``jobs`` spawned one-thread workers
    (:func:`one_thread_worker`); their results in the order of ``calls``. Spawned, not forked: a forked child
    inherits the parent's torch threads in a state it cannot use."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=one_thread_worker) as pool:
        futures = [pool.submit(function, *args) for function, args in calls]
        return [future.result() for future in futures]


def quiet_fit(config: Any) -> tuple[dict[str, Any], float]:
    """``train fit`` of ``config`` (a ``train.config.Config``) into a fresh ``config.out``, the trainer's log at
    WARNING and its warnings silenced, as a benchmark worker runs it: (its results, seconds)."""
    import logging
    import warnings

    from train import train as trainer

    logging.getLogger("train").setLevel(logging.WARNING)
    shutil.rmtree(config.out, ignore_errors=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = trainer.fit(config, progress=False)
    return results, time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def mean_sd(values: list[float]) -> list[float]:
    """[mean, sample standard deviation] of a row's values over seeds (sd 0 for one value): what the reports store."""
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def slug(name: str) -> str:
    """A row name as a folder name: letters and digits kept, every other character a dash."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def cli(tool: str, *args: object, monitor: bool = False) -> tuple[float, float]:
    """Run ``tool args`` to completion; (wall seconds, peak RSS bytes of its process tree, or 0 unless ``monitor``)."""
    cmd = [str(BIN / tool), *map(str, args)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = TreePeak(proc.pid) if monitor else None
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    rss = peak.stop() if peak else 0.0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{out}\n{err}")
    return seconds, rss


class TreePeak:
    """Polls a process and all its descendants (e.g. joblib workers) and keeps the peak of their summed RSS.

    RSS counts a shared page in every process that maps it, so the sum over-states the memory in use; it is the
    conservative figure, and the same over-statement applies to both sides of a comparison.
    """

    def __init__(self, pid: int, interval: float = 0.01):
        self.root, self.interval, self.peak = psutil.Process(pid), interval, 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        while not self.done.is_set():
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:  # the root has exited
                return
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:  # a worker that exited between listing and reading
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.peak


def write_folder_tree(root: Path, n: int, width: int = 500, height: int = 375) -> tuple[Path, Path]:
    """``n`` synthetic photos as ``imgs/train/<class>/<i>.jpg`` (width x height) plus ``masks/...png``.

    The layout is the ``folder`` dataset's (docs/DATASETS.md); the default size is a typical ImageNet / IN-9
    JPEG, so a build does the decode and resize work of a real dataset. Kept between runs (``done-N`` marker).
    """
    from augment.contract.encode import encode_jpeg, encode_mask
    from augment.datasets import get_dataset

    imgs, masks, marker = root / "imgs", root / "masks", root / f"done-{n}-{width}x{height}"
    if marker.exists():
        return imgs, masks
    shutil.rmtree(root, ignore_errors=True)  # another N or size: start over
    data = get_dataset("synthetic", size=n, image_size=width)
    for i in range(n):
        sample = data.load("train", i)
        name = CLASSES[sample.label]
        (imgs / "train" / name).mkdir(parents=True, exist_ok=True)
        (masks / "train" / name).mkdir(parents=True, exist_ok=True)
        # squashed from square to width x height, so that the object is never cropped away
        image = Image.fromarray(sample.image).resize((width, height), Image.Resampling.BILINEAR)
        mask = Image.fromarray(sample.mask).resize((width, height), Image.Resampling.NEAREST)
        (imgs / "train" / name / f"{i:06d}.jpg").write_bytes(encode_jpeg(np.asarray(image)))
        (masks / "train" / name / f"{i:06d}.png").write_bytes(encode_mask(np.asarray(mask)))
    marker.touch()
    return imgs, masks


if __name__ == "__main__":
    print(machine())
