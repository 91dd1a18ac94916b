"""Factual images on real backgrounds (issue #33): F(bank) from a camera trap's own empty frames, drawn from any
training location or, as Gao et al. (ICML 2023, "Copy-Paste, Same Y") target them, from another training location
where the object's class occurs; against Orig and F(mixed-rand), on seen (cis) and unseen (trans) locations.

1. **The fixture**: Caltech Camera Traps' ECCV'18 release layout (docs/DATASETS.md, ``cct``: COCO Camera Traps JSONs
   with ``location``, category ``empty``). Each camera location has its own view: a fixed crop of one of
   scikit-image's photographs (bench/photos.py's ``PHOTOS`` then ``TEXTURES``), which every frame of the location
   shows with a small shift, a brightness of its own (the time of day) and noise. ``--cis-locations`` locations are
   the training ones (train, cis_val, cis_test), ``--trans-locations`` others are held out (trans_val, trans_test),
   as in CCT. Class c (bench/photos.py's shapes, one random colour each, as its ``--objects shape``) occurs at
   ``--class-locations`` of the cis locations (c, c + 1, ... mod the cis locations), so at a training location the
   background narrows the class down; at a trans location every class occurs. Objects come with their box only, as
   CCT's (the F hole is everything outside it). Every training location has ``--empty`` empty frames in train.
2. **Builds** (``augment build --dataset cct --image-size``): one with ``--factual mixed-rand --factual bank
   --backgrounds dataset --background-rule any``, one with ``--factual bank --backgrounds dataset --background-rule
   same-class-location``.
3. **Training** (``--preset demo --arch resnet8``, ``--val-split cis_val``, each run in its own process with one
   torch thread, as bench/fgap.py): Orig, F(mixed-rand), F(bank, any), F(bank, same-class-location); mean ± sd over
   the seeds of the macro one-vs-rest AUC (CCT's metric) and the accuracy of the best cis_val epoch on cis_test and
   trans_test.

Writes ``<out>/bank.json`` (default bench/out/) and works in ``<out>/bank/``.

    .venv/bin/python bench/bank.py            # 3 seeds
    .venv/bin/python bench/bank.py --quick    # smoke run: a few images, 1 epoch, 1 seed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import photos
from common import OUT, OtherLoad, cli, git, machine, mean_sd, quiet_fit, slug, spawned

IMAGES = "eccv_18_all_images_sm"
ANNOTATIONS = "eccv_18_annotation_files"
EMPTY_ID = 30
DECLARED = 4  # the JSON's width, height and boxes are at 4x the files' size, as CCT's full resolution
SPLITS = ("cis_test", "trans_test")
# (name, F methods, which build: "any" or "same-class-location")
ROWS = (
    ("Orig", (), "any"),
    ("F(mixed-rand)", ("mixed-rand",), "any"),
    ("F(bank, any)", ("bank",), "any"),
    ("F(bank, same-class-location)", ("bank",), "same-class-location"),
)


# ---- 1. the fixture -------------------------------------------------------------------------------------------------


def location_views(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Each location's view: a fixed crop of its photo, ``size`` + 8 pixels square (frames shift inside it)."""
    names = [name for _, name in photos.PHOTOS] + list(photos.TEXTURES)
    if n > len(names):
        raise SystemExit(f"bench/bank.py: at most {len(names)} locations (scikit-image's photos), got {n}")
    views = []
    for i, photo in enumerate(photos.load_photos(n, tuple(names))):  # RGB, as load_photos converts them
        views.append(photos.photo_crop(photo, size + 8, np.random.default_rng([seed, 7, i])))
    return views


def frame(view: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One frame of a location: its view shifted by up to 8 pixels, a brightness of its own, sensor noise."""
    dy, dx = rng.integers(9, size=2)
    pixels = view[dy : dy + size, dx : dx + size].astype(np.float64) * rng.uniform(0.7, 1.15)
    return np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)


def write_fixture(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The release under ``root``; returns its counts (samples and empty frames per split, class locations)."""
    size, k, cis, trans = args.source_size, args.classes, args.cis_locations, args.trans_locations
    views = location_views(cis + trans, size, args.data_seed)
    at = {c: sorted({(c + j) % cis for j in range(args.class_locations)}) for c in range(k)}
    present = {loc: [c for c in range(k) if loc in at[c]] for loc in range(cis)}
    if any(not classes for classes in present.values()):
        raise SystemExit("bench/bank.py: some cis location has no class; raise --class-locations or --classes")
    per_location = {
        "train": args.per_location,
        "cis_val": args.eval_per_location,
        "cis_test": 2 * args.eval_per_location,
        "trans_val": args.eval_per_location,
        "trans_test": 2 * args.eval_per_location,
    }
    categories = [{"id": c + 1, "name": photos.SHAPES[c]} for c in range(k)] + [{"id": EMPTY_ID, "name": "empty"}]
    counts: dict[str, Any] = {"class_locations": {photos.SHAPES[c]: at[c] for c in range(k)}}
    for code, (split, n) in enumerate(per_location.items()):
        locations = range(cis) if split.startswith(("train", "cis")) else range(cis, cis + trans)
        images, annotations, frames = [], [], 0
        for loc in locations:
            classes = present[loc] if loc < cis else list(range(k))
            empties = args.empty if split == "train" else 1
            for i in range(n + empties):
                rng = np.random.default_rng([args.data_seed, code, loc, i])
                image_id = f"{split}-{loc:02d}-{i:04d}"
                pixels = frame(views[loc], size, rng)
                entry = {"id": image_id, "image_id": image_id}
                if i < n:
                    label = classes[int(rng.integers(len(classes)))]
                    mask = photos.object_mask(label, size, rng)
                    pixels = photos.paint_object(pixels, mask, rng)
                    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                    box = [int(cols[0]), int(rows[0]), int(cols[-1] + 1 - cols[0]), int(rows[-1] + 1 - rows[0])]
                    annotations.append({**entry, "category_id": label + 1, "bbox": [DECLARED * v for v in box]})
                else:
                    annotations.append({**entry, "category_id": EMPTY_ID})
                    frames += 1
                photos.save_jpeg(root / IMAGES / f"{image_id}.jpg", pixels)
                images.append(
                    {
                        "id": image_id,
                        "file_name": f"{image_id}.jpg",
                        "width": DECLARED * size,
                        "height": DECLARED * size,
                        "location": loc,
                    }
                )
        for i, annotation in enumerate(annotations):
            annotation["id"] = i
        data = {"images": images, "annotations": annotations, "categories": categories}
        path = root / ANNOTATIONS / f"{split}_annotations.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        counts[split] = {"samples": len(images) - frames, "empty_frames": frames, "locations": list(locations)}
    return counts


# ---- 2. builds, 3. training ----------------------------------------------------------------------------------------


def build(root: Path, shards: Path, rule: str, args: argparse.Namespace) -> float:
    factual = ["--factual", "mixed-rand"] if rule == "any" else []
    seconds, _ = cli(
        "augment",
        "build",
        "--dataset",
        "cct",
        "--root",
        root,
        "--image-size",
        args.image_size,
        *factual,
        "--factual",
        "bank",
        "--backgrounds",
        "dataset",
        "--background-rule",
        rule,
        "--copies",
        args.copies,
        "--seed",
        args.data_seed,
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    return seconds


def train_one(f: tuple[str, ...], seed: int, shards: str, out: str, epochs: int, arch: str) -> dict[str, Any]:
    """Train F methods ``f`` (none: Orig) with ``seed``; macro AUC and accuracy of the best cis_val epoch."""
    from train.config import Config

    config = Config.resolve(
        "demo",
        shards=shards,
        out=out,
        arch=arch,
        epochs=epochs,
        f=list(f),
        seed=seed,
        workers=0,
        max_saliency_images=0,
        val_split="cis_val",
    )
    results, seconds = quiet_fit(config)
    splits = results["splits"]
    return {
        "auc": {s: splits[s]["macro_auc"] for s in SPLITS},
        "accuracy": {s: splits[s]["accuracy"] for s in SPLITS},
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=4, choices=range(2, 10), metavar="2..9")
    parser.add_argument("--cis-locations", type=int, default=6, help="training locations")
    parser.add_argument("--trans-locations", type=int, default=3, help="held-out locations")
    parser.add_argument("--class-locations", type=int, default=3, help="cis locations where each class occurs")
    parser.add_argument("--per-location", type=int, default=200, help="train samples per cis location")
    parser.add_argument("--eval-per-location", type=int, default=40, help="*_val samples per location (test: 2x)")
    parser.add_argument("--empty", type=int, default=10, help="empty frames per cis location in train")
    parser.add_argument("--source-size", type=int, default=64, help="the files' size in pixels")
    parser.add_argument("--image-size", type=int, default=32, help="augment build --image-size")
    parser.add_argument("--copies", type=int, default=4, help="augment build --copies (copy epoch mod K is read)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one process and torch thread each")
    parser.add_argument("--arch", default="resnet8")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the fixture and of the builds")
    parser.add_argument("--out", type=Path, default=OUT, help="writes bank.json there, works in OUT/bank/")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 images per location, 1 epoch, 1 seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_location, args.eval_per_location, args.empty, args.epochs, args.seeds = 8, 2, 2, 1, 1
    return run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    other, start = OtherLoad(), time.perf_counter()
    work = args.out / "bank"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "cct"
    counts = write_fixture(root, args)
    shards = {rule: work / f"shards-{rule}" for rule in ("any", "same-class-location")}
    build_s = {rule: build(root, path, rule, args) for rule, path in shards.items()}
    draws = {
        rule: json.loads((path / "manifest.json").read_text())["splits"]["train"]["background_draws"]
        for rule, path in shards.items()
    }
    jobs = [(row, s) for row in ROWS for s in range(args.seeds)]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in ROWS}
    train_start = time.perf_counter()
    calls = [
        (train_one, (f, s, str(shards[rule]), str(work / "runs" / slug(name) / f"s{s}"), args.epochs, args.arch))
        for (name, f, rule), s in jobs
    ]
    for ((name, _, _), seed), result in zip(jobs, spawned(args.jobs, calls), strict=True):
        results[name].append({"seed": seed, **result})
    report = {
        "machine": machine(),
        "git_log": git("log", "--oneline", "-3"),
        "git_status": git("status", "--short", "--untracked-files=no"),
        "argv": sys.argv[1:],
        "fixture": {**counts, "image_size": args.image_size, "source_size": args.source_size, "copies": args.copies},
        "builds": {"seconds": build_s, "background_draws": draws},
        "training": {"preset": "demo", "arch": args.arch, "epochs": args.epochs, "seeds": args.seeds},
        "runs": results,
        "summary": {name: summarise(runs) for name, runs in results.items()},
        "train_s": time.perf_counter() - train_start,
        "wall_s": time.perf_counter() - start,
        "other_load": other.line().strip(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bank.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return report


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per metric (auc, accuracy) and split: [mean, sd] over the seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for metric in ("auc", "accuracy"):
        for split in SPLITS:
            out.setdefault(metric, {})[split] = mean_sd([r[metric][split] for r in runs])
    return out


def print_table(report: dict[str, Any]) -> None:
    print(f"\n[bank] {report['training']}; background draws {report['builds']['background_draws']}")
    print(report["other_load"])
    print("\nrow | cis_test macro AUC | trans_test macro AUC | cis_test accuracy | trans_test accuracy")
    for name, summary in report["summary"].items():
        cells = [f"{summary[m][s][0]:.3f} ± {summary[m][s][1]:.3f}" for m in ("auc", "accuracy") for s in SPLITS]
        print(f"{name} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
