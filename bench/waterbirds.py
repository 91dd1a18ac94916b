"""Waterbirds (issue #28, part 3): does CF+F keep the bird when the place lies about it?

1. **The fixture**: Waterbirds' release layout (docs/DATASETS.md, ``waterbirds``): ``waterbird_complete95_
   forest2water2/metadata.csv`` (img_id, img_filename, y, split, place, place_filename) in img_id order, which is
   CUB's species order (``SPECIES``: the release's folder names, ``001.Black_footed_Albatross`` ...), images at
   ``<species folder>/<Species_Name>_<nnnn>_<id>.jpg`` (landscape, ``--width`` x ``--height``), and soft
   segmentations under ``segmentations/`` (the bird 255, a rim of 100 and a blur outside it, as CUB's annotators'
   disagreement: under half of the maximum, so background). A bird is its species' shape filled with a crop of its
   species' texture photo (scikit-image's, tinted at random, as bench/photos.py's texture objects); landbird
   species take one pair of textures, waterbird species the other. Places are scikit-image's colour photographs:
   ``LAND`` for place 0, ``WATER`` for place 1 (random crops). In train the place agrees with y with probability
   ``--bias`` (0.95, the release's); val and test draw the place independently of y, as the release does.
2. **Build**: ``augment build --dataset waterbirds --infill tile --factual shuffle --factual mixed-rand`` at
   ``--image-size``.
3. **Training** (``train.train.fit``, ``--preset demo`` with ``--arch``, from scratch, ``--workers 0``, one torch
   thread, ``--jobs`` runs at a time): Orig, F(shuffle), CF(tile), CF(tile)+F(shuffle), F(mixed-rand) and
   CF(tile)+F(mixed-rand) (``--rows``); ``--seeds`` seeds each.
   Reports the best val epoch's (what ``train fit`` reports) accuracy on ``test``, ``test_original`` (y == place)
   and ``test_flip`` (y != place), and the worst group's (of (y, place)) on ``test``, mean ± sd over the seeds.

Writes ``<out>/NAME.json`` (``--name``, default waterbirds; default out: bench/out/), works in ``<out>/waterbirds/``.

    .venv/bin/python bench/waterbirds.py            # make waterbirds: docs/results-waterbirds.md
    .venv/bin/python bench/waterbirds.py --quick    # smoke run: tiny data, 1 epoch, 1 seed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import photos
from common import OUT, OtherLoad, cli, git, machine, mean_sd, quiet_fit, spawned
from PIL import Image

# (release folder, y, shape index of photos.SHAPES, texture file): CUB's species folders, in their order
SPECIES = (
    ("001.Black_footed_Albatross", 1, 0, "gravel.png"),
    ("029.American_Crow", 0, 1, "brick.png"),
    ("047.American_Goldfinch", 0, 2, "grass.png"),
    ("059.California_Gull", 1, 3, "coins.png"),
    ("086.Pacific_Loon", 1, 2, "gravel.png"),
    ("094.White_breasted_Nuthatch", 0, 4, "brick.png"),
    ("100.Brown_Pelican", 1, 1, "coins.png"),
    ("118.House_Sparrow", 0, 3, "grass.png"),
)
LAND = (("bamboo_forest", "chelsea.png"), ("forest_broadleaf", "coffee.png"))  # (place folder, skimage photo)
WATER = (("ocean", "hubble_deep_field.jpg"), ("lake_natural", "rocket.jpg"))
ROWS = {
    "Orig": ([], []),
    "F(shuffle)": ([], ["shuffle"]),
    "CF(tile)": (["tile"], []),
    "CF(tile)+F(shuffle)": (["tile"], ["shuffle"]),
    "F(mixed-rand)": ([], ["mixed-rand"]),
    "CF(tile)+F(mixed-rand)": (["tile"], ["mixed-rand"]),
}
SPLITS = ("test", "test_original", "test_flip")
SPLIT_SIZES = {0: 1.0, 1: 0.2, 2: 0.5}  # split code -> share of --size


def species_name(folder: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black_Footed_Albatross``, as CUB's file names spell it."""
    return "_".join(w[:1].upper() + w[1:] for w in folder.split(".", 1)[1].split("_"))


def soft_segmentation(mask: np.ndarray) -> np.ndarray:
    """The bird 255, a 2-pixel rim of 100 around it and a blur outside that: a CUB-like soft mask (the bird is the
    pixels >= half the maximum)."""
    rim = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    soft = cv2.GaussianBlur(np.where(rim, 100, 0).astype(np.uint8), (5, 5), 0)
    return np.where(mask, 255, np.maximum(soft, np.where(rim, 100, 0))).astype(np.uint8)


def write_fixture(base: Path, n: int, width: int, height: int, bias: float, seed: int) -> dict[str, int]:
    """The module docstring's fixture under ``base``; samples per split."""
    marker = base / f"done-{n}-{width}x{height}-{bias}-{seed}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(base, ignore_errors=True)
    names = tuple(sorted({texture for *_, texture in SPECIES}))
    textures = dict(zip(names, photos.load_photos(len(names), names), strict=True))
    places = [photos.load_photos(2, tuple(f for _, f in family)) for family in (LAND, WATER)]
    root = base / "waterbird_complete95_forest2water2"
    rows, counts, img_id = ["img_id,img_filename,y,split,place,place_filename"], {}, 0
    draws = [(split, i) for split, share in SPLIT_SIZES.items() for i in range(max(8, round(n * share)))]
    per_species: dict[int, list[tuple[int, int]]] = {s: [] for s in range(len(SPECIES))}
    for split, i in draws:  # the species of each draw, then the file in species order, as the release is
        per_species[int(np.random.default_rng([seed, split, i, 0]).integers(len(SPECIES)))].append((split, i))
    for s, (folder, y, shape, texture) in enumerate(SPECIES):
        for n_in_species, (split, i) in enumerate(per_species[s]):
            rng = np.random.default_rng([seed, split, i, 1])
            if split == 0:  # train: the place agrees with y with probability bias
                place = y if rng.random() < bias else 1 - y
            else:  # val and test: independent of y
                place = int(rng.integers(2))
            which = int(rng.integers(2))
            background = photos.photo_crop(places[place][which], max(width, height), rng)[:height, :width]
            side = min(width, height)
            top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
            full = np.zeros((height, width), bool)
            full[top : top + side, left : left + side] = photos.object_mask(shape, side, rng)
            image = photos.paint_texture(background, full, textures[texture], rng)
            img_id += 1
            filename = f"{folder}/{species_name(folder)}_{n_in_species + 1:04d}_{img_id}.jpg"
            photos.save_jpeg(root / filename, image)
            seg = base / "segmentations" / Path(filename).with_suffix(".png")
            seg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(soft_segmentation(full)).save(seg)
            family = (LAND, WATER)[place][which][0]
            rows.append(f"{img_id},{filename},{y},{split},{place},/{family[0]}/{family}/{img_id:08d}.jpg")
            counts[str(split)] = counts.get(str(split), 0) + 1
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    marker.write_text(json.dumps(counts))
    return counts


def train_one(cf: list[str], f: list[str], seed: int, shards: str, out: str, args: dict[str, Any]) -> dict[str, Any]:
    """One ``train fit`` run; the best val epoch's accuracy per split and worst-group accuracy on test."""
    from train.config import Config

    objective = {k: args[k] for k in ("cf_loss", "cf_weight") if args.get(k) is not None}  # else train fit's default
    config = Config.resolve(
        "demo",
        shards=shards,
        out=out,
        arch=args["arch"],
        epochs=args["epochs"],
        cf=cf,
        f=f,
        seed=seed,
        workers=0,
        max_saliency_images=0,
        **objective,
    )
    results, seconds = quiet_fit(config)
    splits = results["splits"]
    return {
        **{s: splits[s]["accuracy"] for s in SPLITS},
        "worst_group": splits["test"]["worst_group_accuracy"],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="train images (val 1/5 of it, test 1/2)")
    parser.add_argument("--width", type=int, default=80, help="width of the written JPEGs")
    parser.add_argument("--height", type=int, default=64, help="height of the written JPEGs")
    parser.add_argument("--bias", type=float, default=0.95, help="P(place == y) in train")
    parser.add_argument("--image-size", type=int, default=64, help="augment build --image-size (crop: 7/8)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--cf-loss", default=None, help="train fit --cf-loss [its default]")
    parser.add_argument("--cf-weight", type=float, default=None, help="train fit --cf-weight [its default]")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds 0 .. N-1 per row")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="only these rows")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one process and torch thread each")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the fixture and of the build")
    parser.add_argument("--out", type=Path, default=OUT, help="writes NAME.json there, works in OUT/waterbirds/")
    parser.add_argument("--name", default="waterbirds", help="the report's file name: OUT/NAME.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 images, 1 epoch, resnet8, 1 seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.epochs, args.seeds, args.arch, args.image_size = 64, 1, 1, "resnet8", 32
    other, start = OtherLoad(), time.perf_counter()
    work = args.out / "waterbirds"
    counts = write_fixture(work / "data", args.size, args.width, args.height, args.bias, args.data_seed)
    shards = work / "shards"
    root = work / "data/waterbird_complete95_forest2water2"
    build_s, _ = cli(
        "augment",
        "build",
        "--dataset",
        "waterbirds",
        "--root",
        root,
        "--image-size",
        args.image_size,
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--factual",
        "mixed-rand",
        "--seed",
        args.data_seed,
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    jobs = [(name, seed) for name in args.rows for seed in range(args.seeds)]
    settings = {"arch": args.arch, "epochs": args.epochs, "cf_loss": args.cf_loss, "cf_weight": args.cf_weight}
    runs_dir = work / "runs" / args.name
    calls = [
        (train_one, (*ROWS[name], seed, str(shards), str(runs_dir / str(i)), settings))
        for i, (name, seed) in enumerate(jobs)
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.rows}
    for (name, seed), result in zip(jobs, spawned(args.jobs, calls), strict=True):
        runs[name].append({"seed": seed, **result})
    summary = {name: {k: mean_sd([r[k] for r in rs]) for k in (*SPLITS, "worst_group")} for name, rs in runs.items()}
    report = {
        "machine": machine(),
        "git_log": git("log", "--oneline", "-3"),
        "argv": sys.argv[1:] if argv is None else argv,
        "fixture": {
            "samples": counts,
            "bias": args.bias,
            "size": [args.width, args.height],
            "image_size": args.image_size,
            "build_s": build_s,
        },
        "training": settings | {"seeds": args.seeds},
        "runs": runs,
        "summary": summary,
        "wall_s": time.perf_counter() - start,
        "other_load": other.line().strip(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n[waterbirds] {report['fixture']}, {report['training']}; {report['other_load']}")
    print("row | " + " | ".join((*SPLITS, "worst group")))
    for name, cells in summary.items():
        print(f"{name} | " + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in cells.values()))
    return report


if __name__ == "__main__":
    main()
