"""Masks from boxes (issue #16): how close ``--masks-from grabcut`` comes to the true masks, and whether it helps.

1. **IoU against the true masks** of the synthetic dataset (whose generator knows every object's exact mask), for
   the box itself (the F hole of a box-only dataset) and for GrabCut started from it, on ``--samples`` train images
   at 32 and 64 px; the share of samples whose GrabCut mask failed the gate (they keep the box) and the time per
   image.
2. **Training** with ``--train``: the demo build (``make train``'s: synthetic, 3000 training images at 32 px) made
   twice, ``--masks-from box`` and ``--masks-from grabcut``, with F(shuffle); the demo preset (ResNet-8, 16 epochs)
   trained on each over ``--seeds`` seeds, two runs at a time as ``train study --jobs 2`` does (through
   ``train.study.run_all``). Mean ± sd of the accuracy per test split, and the per-seed difference grabcut - box
   (the same seed draws the same initialisation and batch order on both builds).

Writes ``<out>/masks.json`` and ``<out>/masks.md`` (default bench/out/).

    .venv/bin/python bench/masks.py --train     # the measurement of docs/results-masks.md (make masks)
    .venv/bin/python bench/masks.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import BIN, OUT, OtherLoad, machine  # bench/ is on sys.path: the scripts run as files

SPLITS = ("original", "mixed_same", "mixed_rand", "mixed_next")
SOURCES = ("box", "grabcut")


def iou_table(samples: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    from augment import masks
    from augment.datasets import get_dataset
    from augment.mask_sources import resolve

    rows = {}
    for size in sizes:
        data = get_dataset("synthetic", seed=0, image_size=size, size=max(samples, 10))
        loaded = [data.load("train", i) for i in range(samples)]
        start = time.perf_counter()
        outs = resolve("grabcut", loaded, seed=0)
        seconds = time.perf_counter() - start
        box_iou, grabcut_iou = [], []
        for sample, out in zip(loaded, outs, strict=True):
            true = sample.mask
            box = masks.boxes_to_mask(masks.mask_to_box(true)[None], true.shape)
            mask = out.mask if out.mask is not None else box  # a fallback keeps the box
            box_iou.append(float((box & true).sum() / (box | true).sum()))
            grabcut_iou.append(float((mask & true).sum() / (mask | true).sum()))
        rows[str(size)] = {
            "samples": samples,
            "box_iou": float(np.mean(box_iou)),
            "grabcut_iou": float(np.mean(grabcut_iou)),
            "fallbacks": sum(o.source != "grabcut" for o in outs),
            "ms_per_image": 1000 * seconds / samples,
        }
    return rows


def build(source: str, work: Path, size: int) -> Path:
    out = work / f"shards-{source}"
    cmd = [
        str(BIN / "augment"),
        "build",
        "--dataset",
        "synthetic",
        "--size",
        str(size),
        "--image-size",
        "32",
        "--factual",
        "shuffle",
        "--masks-from",
        source,
        "--out",
        str(out),
        "--overwrite",
        "-q",
    ]
    subprocess.run(cmd, check=True)
    return out


def train(builds: dict[str, Path], work: Path, seeds: int, epochs: int | None, jobs: int) -> dict[str, Any]:
    from train.config import Config
    from train.study import RunSpec, run_all

    shutil.rmtree(work / "runs", ignore_errors=True)
    specs = []
    for source, shards in builds.items():
        for seed in range(seeds):
            extra = {"epochs": epochs} if epochs else {}
            config = Config.resolve(
                "demo",
                shards=str(shards),
                out=str(work / "runs" / source / f"s{seed}"),
                f=["shuffle"],
                seed=seed,
                workers=0,
                **extra,
            )
            specs.append(RunSpec(f"F(shuffle) on {source} masks", seed, 1.0, config))
    start = time.perf_counter()
    run_all(specs, jobs)
    seconds = time.perf_counter() - start
    accuracy: dict[str, dict[str, list[float]]] = {s: {split: [] for split in SPLITS} for s in builds}
    for spec, source in zip(specs, [s for s in builds for _ in range(seeds)], strict=True):
        results = json.loads((Path(spec.config.out) / "results.json").read_text())
        for split in SPLITS:
            accuracy[source][split].append(results["splits"][split]["accuracy"])
    return {"accuracy": accuracy, "seconds": seconds}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| image size | samples | IoU of the box | IoU of grabcut | grabcut fell back to the box | ms per image |",
        "|---|---|---|---|---|---|",
    ]
    for size, r in result["iou"].items():
        lines.append(
            f"| {size} px | {r['samples']} | {r['box_iou']:.3f} | {r['grabcut_iou']:.3f} | "
            f"{r['fallbacks']} | {r['ms_per_image']:.1f} |"
        )
    if "train" in result:
        acc = result["train"]["accuracy"]
        lines += ["", "| F(shuffle) trained on | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
        for source in SOURCES:
            lines.append(f"| `--masks-from {source}` | " + " | ".join(mean_sd(acc[source][s]) for s in SPLITS) + " |")
        diffs = {s: [g - b for g, b in zip(acc["grabcut"][s], acc["box"][s], strict=True)] for s in SPLITS}
        lines.append(
            "| grabcut - box, per seed | "
            + " | ".join(f"{mean_sd(diffs[s])} ({', '.join(f'{d:+.3f}' for d in diffs[s])})" for s in SPLITS)
            + " |"
        )
        lines += [
            "",
            f"Training: {result['train']['seconds'] / 60:.1f} min for {len(acc['box']['original']) * 2} "
            f"runs, {result['jobs']} at a time.",
        ]
    lines += ["", f"Machine: {result['machine']}; {result['other_load']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--train", action="store_true", help="also the 2-build x seeds training comparison")
    parser.add_argument("--size", type=int, default=3000, help="training images of each build")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo preset's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 samples, tiny builds, 1 seed, 1 epoch")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.size, args.seeds, args.epochs = 20, 50, 1, 1
    work = args.out / "masks"
    work.mkdir(parents=True, exist_ok=True)
    load = OtherLoad()
    result: dict[str, Any] = {"iou": iou_table(args.samples, (32, 64)), "jobs": args.jobs}
    if args.train or args.quick:
        builds = {source: build(source, work, args.size) for source in SOURCES}
        result["train"] = train(builds, work, args.seeds, args.epochs, args.jobs)
    result["machine"], result["other_load"] = machine(), load.line().strip()
    (args.out / "masks.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (args.out / "masks.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
