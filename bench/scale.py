"""Benchmarks 4 and 5: peak memory of `augment build` at N and 10N images, and the speed-up of ``--workers 2``.

[4] The same build (synthetic, 64 px, CF tile + F shuffle, ``--workers 2``, default shard size) at ``--size N``
and ``--size 10N``. A thread polls the whole process tree every 10 ms (the CLI process and its worker
processes) and keeps the peak of their summed RSS. Each worker streams its samples into its shard and returns only
a checksum, so the peak should not grow with N: the ratio should be about 1. RSS counts shared library pages
once per process, so the sum over-states the memory in use, equally at N and 10N.

[5] One build (synthetic, 64 px, CF tile + F shuffle, ``--shard-size 100``, so that there are tens of tasks)
with ``--workers 1`` and ``--workers 2``, alternating, median wall time (process start included). On 2 cores
the ideal is 2x; the workers' start-up, the tail when fewer tasks than workers remain, and any other load on
the machine lower it.

    .venv/bin/python bench/scale.py            # make bench
    .venv/bin/python bench/scale.py --quick
"""

from __future__ import annotations

import argparse

from common import OUT, OtherLoad, cli, median

MIB = 2**20


def build(size: int, out: str, *extra: object, monitor: bool = False) -> tuple[float, float]:
    return cli(
        "augment",
        "build",
        "--dataset",
        "synthetic",
        "--size",
        size,
        "--image-size",
        64,
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        *extra,
        "--out",
        OUT / "scale" / out,
        "--overwrite",
        "-q",
        monitor=monitor,
    )


STARTUP = """
import os, time
import augment.runner.task  # what the build's process has imported when it starts its workers
from augment.runner import executors
from joblib import Parallel, delayed
def pid():
    return os.getpid()
def load():
    import augment.runner.task
    return os.getpid()
t0 = time.perf_counter()
assert executors.forking_is_safe()
list(executors.forked(pid, [()] * 2, 2))
t1 = time.perf_counter()
list(Parallel(n_jobs=2)(delayed(pid)() for _ in range(2)))
t2 = time.perf_counter()
list(Parallel(n_jobs=2)(delayed(load)() for _ in range(2)))
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def worker_startup() -> tuple[float, float, float]:
    """(seconds to fork two workers and get a result, as a build does; seconds to spawn two loky workers, used
    where forking is not safe; seconds for those to import what a shard task runs), in a fresh process."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True, check=True)
    forked, spawn, imports = map(float, done.stdout.split())
    return forked, spawn, imports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="the small build's --size; the large one is 10x")
    parser.add_argument("--speedup-size", type=int, default=1500, help="--size of the workers 1 vs 2 build")
    parser.add_argument("--rounds", type=int, default=3, help="median (time) / max (memory) over R rounds")
    parser.add_argument("--quick", action="store_true", help="N = 20, 1 round: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.speedup_size, args.rounds = 20, 100, 1
    other = OtherLoad()

    peaks: dict[int, list[float]] = {args.n: [], 10 * args.n: []}
    walls: dict[int, list[float]] = {1: [], 2: []}
    fixed: dict[int, list[float]] = {1: [], 2: []}  # the same build at --size 5: start, imports, worker spawn
    for r in range(args.rounds):  # alternate, and flip the order every round
        for size in list(peaks)[:: 1 if r % 2 == 0 else -1]:
            peaks[size].append(build(size, f"rss-{size}", "--workers", 2, monitor=True)[1])
        for workers in list(walls)[:: 1 if r % 2 == 0 else -1]:
            for size, times in ((args.speedup_size, walls), (5, fixed)):
                times[workers].append(build(size, f"workers-{workers}", "--workers", workers, "--shard-size", 100)[0])
    small, large = (max(peaks[s]) / MIB for s in peaks)
    print(f"\n[4] peak RSS of the augment build process tree (CLI + its workers), --workers 2, max of {args.rounds}")
    print(f"    --size {args.n}: {small:.0f} MiB   --size {10 * args.n}: {large:.0f} MiB   ratio {large / small:.2f}x")
    (one, two), (f1, f2) = (median(walls[w]) for w in (1, 2)), (median(fixed[w]) for w in (1, 2))
    shards = -(-args.speedup_size // 100) + 5 * -(-(args.speedup_size // 5) // 100)  # train, val + 4 test splits
    print(
        f"\n[5] augment build --size {args.speedup_size} ({2 * args.speedup_size} samples, {shards} shards), "
        f"median of {args.rounds}"
    )
    print(
        f"    wall time:   --workers 1: {one:.2f} s   --workers 2: {two:.2f} s   speed-up: {one / two:.2f}x "
        "(ideal 2x on 2 cores)"
    )
    print(
        f"    fixed cost (--size 5): {f1:.2f} s and {f2:.2f} s; without it: {one - f1:.2f} s vs {two - f2:.2f} s, "
        f"speed-up {(one - f1) / (two - f2):.2f}x"
    )
    forked, spawn, imports = (
        median(list(v)) for v in zip(*[worker_startup() for _ in range(args.rounds)], strict=True)
    )
    print(
        f"    start-up of the 2 workers: forked from the build (what it does on Linux): {forked:.3f} s; "
        f"loky's fresh interpreters (used where forking is not safe): spawn {spawn:.2f} s, then {imports:.2f} s "
        "importing a shard task's code (numpy, OpenCV, Pillow, augment)"
    )
    print(other.line())


if __name__ == "__main__":
    main()
