"""Benchmark 6: how much of a training step the trainer spends waiting for data, at the default settings.

Builds the demo shards of ``make train`` (synthetic, 1000 training images at 40 px, CF tile/grey, F
shuffle/mixed-rand) and runs ``train fit --preset demo`` for a few epochs with the defaults (2 DataLoader
workers, batch 32, ResNet-18 at 35 x 35 crops, CPU), once without augmentation (Orig) and once with
``--cf tile --f shuffle``. Prints, per epoch, the two columns of ``log.csv`` that describe the input pipeline:

- ``data_wait_fraction``: the time the training loop spent blocked on ``next(loader)`` divided by that time
  plus the time of the steps themselves (forward, backward, optimiser). 0 means the workers always had the next
  batch ready; near 1 means the model waits for data. On a CPU-only machine the workers and the model share
  the same cores, so this also shows how much of the CPU decoding takes from training;
- ``img_per_s``: rows trained per second over the same time (originals plus their CF and F images).

Each epoch starts its workers anew (``persistent_workers=False``), which is part of epoch 0's and every later
epoch's wait.

    .venv/bin/python bench/trainer.py            # make bench
    .venv/bin/python bench/trainer.py --quick
"""

from __future__ import annotations

import argparse
import csv
import shutil

from common import OUT, OtherLoad, cli

RUNS = {"Orig": [], "CF(tile)+F(shuffle)": ["--cf", "tile", "--f", "shuffle"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="synthetic --size (make train's)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="--size 200, 1 epoch: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.epochs = 200, 1
    other = OtherLoad()
    work = OUT / "trainer"
    shards = work / "shards"
    cli(
        "augment",
        "build",
        "--dataset",
        "synthetic",
        "--size",
        args.size,
        "--image-size",
        40,
        "--infill",
        "tile",
        "--infill",
        "grey",
        "--factual",
        "shuffle",
        "--factual",
        "mixed-rand",
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    print(
        f"\n[6] train fit --preset demo (defaults: 2 workers, batch 32, CPU), {args.size} images at 40 px, "
        f"{args.epochs} epochs"
    )
    print(f"{'run':<20} {'epoch':>5} {'data_wait_fraction':>19} {'img_per_s':>10} {'wall s (fit + eval)':>20}")
    for name, flags in RUNS.items():
        run = work / name.replace("(", "-").replace(")", "").replace("+", "-")
        shutil.rmtree(run, ignore_errors=True)
        seconds, _ = cli(
            "train", "fit", "--shards", shards, "--preset", "demo", "--epochs", args.epochs, *flags, "--out", run
        )
        with open(run / "log.csv", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                wall = f"{seconds:>20.1f}" if i == 0 else ""
                print(
                    f"{name:<20} {row['epoch']:>5} {float(row['data_wait_fraction']):>19.3f} "
                    f"{float(row['img_per_s']):>10.1f} {wall}"
                )
    print(other.line())


if __name__ == "__main__":
    main()
