"""Benchmark 1: `augment build` throughput per infill method against the bare decode-resize-encode pass.

Compares, through the CLI on the same source tree (N synthetic 500x375 JPEGs with PNG masks in the ``folder``
layout, stored at 256x256, ``--workers 1`` so that it is the cost on one core):

- *bare*: the same build with no CF/F method: read, decode, resize, mask, encode and write the original only;
- *floor*: the bare build plus one more JPEG encoded and written per sample, with no infill (a bench-only method,
  ``copy``, that stores the original again): what any CF or F method costs at the least;
- one build per registered method that runs without a model (CF grey/random/shuffle/tile/telea, F
  random/shuffle/mixed-rand/bank), which adds computing and encoding one CF or F image per sample (mixed-rand also
  loads a donor image; bank draws its background from the source photos themselves, ``--backgrounds`` the source
  folder, and decodes one per sample).

Every build runs ``augment build`` in a fresh process of this script (``--cli``), which registers ``copy`` first,
so that all cases pay the same start-up.

``cagan`` needs weights and is measured by ``bench/cagan.py``. Within each round every case runs once, in a
rotated order, so that load from other jobs on the machine hits every case alike; the figures are medians over
the rounds. The fixed cost of a CLI run (process start, imports, manifest; measured as the bare build of 5
images) is subtracted, so img/s and the ratio describe the per-image work.

    .venv/bin/python bench/build.py            # make bench
    .venv/bin/python bench/build.py --quick    # a fast check that it runs
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, OtherLoad, median, write_folder_tree

from augment import infill

FLOOR = "copy"  # the bench-only method of the encode floor


def register_floor() -> None:
    """Register ``copy``: the original stored again, so its build encodes and writes one more JPEG, nothing else."""

    @infill.register(FLOOR, roles=(infill.CF,), stochastic=False, summary="bench only: the original, encoded again")
    def copy(image, hole, rng):
        return image

    del copy


def cases() -> list[tuple[str, str]]:
    """(role, method) for the bare pass, the floor and every registered method that runs without a model."""
    found = [
        (role, name)
        for name, m in infill.INFILLS.items()
        if not m.needs_model and name != FLOOR
        for role in infill.ROLES
        if role in m.roles
    ]
    return [("-", "bare"), ("cf", FLOOR), *sorted(found, key=lambda c: c[0])]  # CF first, then F, registry order


def build(imgs: Path, masks: Path, out: Path, size: int, role: str, method: str) -> float:
    flags = {"cf": ["--infill", method], "f": ["--factual", method]}.get(role, [])
    if method in infill.INFILLS and infill.INFILLS[method].needs_background:  # bank: the source photos as its bank
        flags += ["--backgrounds", imgs]
    command = [
        sys.executable,
        __file__,
        "--cli",
        "build",
        "--dataset",
        "folder",
        "--root",
        imgs,
        "--masks",
        masks,
        "--image-size",
        size,
        *flags,
        "--workers",
        1,
        "--out",
        out,
        "--overwrite",
        "-q",
    ]
    start = time.perf_counter()
    subprocess.run(list(map(str, command)), check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="source images per build")
    parser.add_argument("--size", type=int, default=256, help="stored image size")
    parser.add_argument("--rounds", type=int, default=5, help="median over R rounds")
    parser.add_argument("--quick", action="store_true", help="20 images, 1 round: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 20, 1
    other = OtherLoad()
    work = OUT / "build"
    imgs, masks = write_folder_tree(work / "src", args.images)
    tiny_imgs, tiny_masks = write_folder_tree(work / "src-tiny", 5)
    todo = cases()
    times: dict[tuple[str, str], list[float]] = {c: [] for c in todo}
    fixed = []
    for r in range(args.rounds):
        fixed.append(build(tiny_imgs, tiny_masks, work / "shards-tiny", args.size, "-", "bare"))
        for role, method in todo[r % len(todo) :] + todo[: r % len(todo)]:
            times[role, method].append(build(imgs, masks, work / f"shards-{role}-{method}", args.size, role, method))
    t0 = 0.0 if args.quick else median(fixed)  # with 20 images the fixed cost is most of the time
    net = {c: max(median(t) - t0, 1e-9) for c, t in times.items()}
    bare, floor = net["-", "bare"], net["cf", FLOOR]
    print(
        f"\n[1] augment build --dataset folder: {args.images} JPEGs 500x375 -> {args.size}x{args.size}, --workers 1, "
        f"median of {args.rounds} rounds"
    )
    print(
        f"    fixed cost of a CLI build ({t0:.2f} s: start, imports, manifest) subtracted from every wall time; "
        f"floor = bare + one more JPEG encoded and written per sample (cf {FLOOR})"
    )
    print(
        f"{'role':<4} {'method':<11} {'wall s':>7} {'img/s':>7} {'x bare time':>12} {'x floor time':>13} "
        f"{'ms/img over floor':>18}"
    )
    for (role, method), seconds in net.items():
        print(
            f"{role:<4} {method:<11} {median(times[role, method]):>7.2f} {args.images / seconds:>7.1f} "
            f"{seconds / bare:>11.2f}x {seconds / floor:>12.2f}x "
            f"{1000 * (seconds - floor) / args.images:>18.2f}"
        )
    print(other.line())
    for role, method in todo:
        shutil.rmtree(work / f"shards-{role}-{method}", ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cli"]:  # one build, as `augment build`, with the floor's method registered
        register_floor()
        from augment.cli import app

        app(sys.argv[2:], prog_name="augment")
    else:
        main()
