"""Shifted test splits (issue #17): do the variants ``--shifted-tests`` generates measure what the native ones do?

The synthetic dataset ships its own IN-9-style test splits (``mixed_same``, ``mixed_rand``, ``mixed_next``: the same
object redrawn on a fresh background of the class's family, another family, the next family). ``--shifted-tests``
makes ``original.mixed_*`` from the ``original`` split instead: each object pasted on the tiled background of a donor
image, the way it would for a user's own dataset. Same class relations, different construction (a donor's tiled
background, not a freshly drawn one).

One build (synthetic, ``--size`` training images at 32 px, CF(tile) and F(shuffle), ``--shifted-tests``); the demo
preset (ResNet-8) trained as Orig and as CF(tile)+F(shuffle) over ``--seeds`` seeds, two runs at a time (through
``train.study.run_all``). Per method, mean ± sd over seeds of the accuracy on each native and generated split, the
BG-gap of each, and background reliance: native from the class-order rule (label + 1), generated from the donors the
records name.

Writes ``<out>/shifted.json`` and ``<out>/shifted.md`` (default bench/out/).

    .venv/bin/python bench/shifted.py            # the measurement of docs/results-shifted.md (make shifted)
    .venv/bin/python bench/shifted.py --quick    # smoke run
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

from common import BIN, OUT, OtherLoad, machine  # bench/ is on sys.path: the scripts run as files

VARIANTS = ("mixed_same", "mixed_rand", "mixed_next")
METHODS = {"Orig": {}, "CF(tile)+F(shuffle)": {"cf": ["tile"], "f": ["shuffle"]}}


def build(work: Path, size: int) -> Path:
    out = work / "shards"
    cmd = [
        str(BIN / "augment"),
        "build",
        "--dataset",
        "synthetic",
        "--size",
        str(size),
        "--image-size",
        "32",
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--shifted-tests",
        "--out",
        str(out),
        "--overwrite",
        "-q",
    ]
    subprocess.run(cmd, check=True)
    return out


def train(shards: Path, work: Path, seeds: int, epochs: int | None, jobs: int) -> dict[str, Any]:
    from train.config import Config
    from train.study import RunSpec, run_all

    shutil.rmtree(work / "runs", ignore_errors=True)
    specs = []
    for method, options in METHODS.items():
        for seed in range(seeds):
            extra = {"epochs": epochs} if epochs else {}
            out = work / "runs" / method.replace("(", "-").replace(")", "").replace("+", "_") / f"s{seed}"
            config = Config.resolve("demo", shards=str(shards), out=str(out), seed=seed, workers=0, **options, **extra)
            specs.append(RunSpec(method, seed, 1.0, config))
    start = time.perf_counter()
    run_all(specs, jobs)
    seconds = time.perf_counter() - start
    rows: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    for spec in specs:
        results = json.loads((Path(spec.config.out) / "results.json").read_text())
        generated = results["shifted_tests"]["bases"]["original"]
        values = {"original": results["splits"]["original"]["accuracy"]}
        for v in VARIANTS:
            values[f"native {v}"] = results["splits"][v]["accuracy"]
            values[f"generated {v}"] = generated["accuracy"][v]
        values["native BG-gap"], values["generated BG-gap"] = results["bg_gap"], generated["bg_gap"]
        values["native reliance (mixed_next)"] = results["background_reliance"]
        values["generated reliance (mixed_next)"] = generated["background_reliance"]["original.mixed_next"]
        for key, value in values.items():
            rows[spec.row].setdefault(key, []).append(value)
    return {"rows": rows, "seconds": seconds, "runs": len(specs)}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def markdown(result: dict[str, Any]) -> str:
    rows = result["train"]["rows"]
    lines = ["| | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for key in next(iter(rows.values())):
        lines.append(f"| {key} | " + " | ".join(mean_sd(rows[m][key]) for m in rows) + " |")
    diffs = {
        m: [g - n for g, n in zip(r["generated BG-gap"], r["native BG-gap"], strict=True)] for m, r in rows.items()
    }
    lines.append(
        "| generated - native BG-gap, per seed | "
        + " | ".join(", ".join(f"{d:+.3f}" for d in diffs[m]) for m in rows)
        + " |"
    )
    lines += [
        "",
        f"Training: {result['train']['seconds'] / 60:.1f} min for {result['train']['runs']} runs, "
        f"{result['jobs']} at a time; build: {result['build_seconds']:.0f} s.",
    ]
    lines += ["", f"Machine: {result['machine']}; {result['other_load']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="training images of the build")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo preset's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: a tiny build, 1 seed, 1 epoch")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.size, args.seeds, args.epochs = 60, 1, 1
    work = args.out / "shifted"
    work.mkdir(parents=True, exist_ok=True)
    load = OtherLoad()
    start = time.perf_counter()
    shards = build(work, args.size)
    result: dict[str, Any] = {"build_seconds": time.perf_counter() - start, "jobs": args.jobs, "size": args.size}
    result["train"] = train(shards, work, args.seeds, args.epochs, args.jobs)
    result["machine"], result["other_load"] = machine(), load.line().strip()
    (args.out / "shifted.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (args.out / "shifted.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
