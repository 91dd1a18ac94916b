"""Where does the factual images' effect go? Offline F against the same F computed online, one factor at a time
(issue #28, part 1).

The paper draws its F backgrounds afresh at every step; a build stores K draws per sample. This benchmark trains
``train fit`` on one class-ordered photographic fixture and changes one thing at a time between the stored images
and the paper's online augmentation, 3 seeds each:

1. **The fixtures**: bench/photos.py's (IN-9's layout written class folder by class folder, scikit-image's colour
   photographs as backgrounds, class c on photo c with probability 0.8 in train and val, the class is the object's
   shape), with IN-9's release folder names (``02_wheeled vehicle``...) for its class folders; ``--objects shape``
   paints each object in one colour, ``--objects texture`` fills it with a crop of its class's texture photo. Built
   with ``augment build --dataset in9 --infill tile --infill telea --infill grey --factual shuffle --factual random
   --factual mixed-rand --factual bank --backgrounds BANK`` at ``--image-size``, BANK holding scikit-image's photos
   that are no class's background (``write_bank``).
2. **Rows** (every one through ``train.train.fit``, ``--preset demo``):

   - ``stored``: the build's images, copy ``epoch % K`` (the product);
   - ``online``: the same method computed now, at every step, from the batch's cropped originals and masks with the
     ``augment.infill`` function (fresh draws); ``shuffle`` draws from the batch's own values (all of them: the
     paper's one permutation of the whole batch), ``random`` as stored, ``mixed-rand`` from a donor of the batch
     with another label;
   - ``online, split pool``: shuffle's fresh draws from a pool of 64 train images of the split, as the build's pool
     (drawn here from the train originals, not the build's members): pool against batch;
   - ``online, JPEG``: fresh draws, each passed through the build's JPEG encoder and decoder (quality 90, 4:4:4)
     before training: the storage codec alone;
   - ``plain loop``: bench/parity.py's independent loop (online shuffle from the batch, its own crop, flip, order
     and evaluation of the best val epoch): the trainer's own mechanics;
   - ``CF(tile) stored``, and CF+F with ``--cf-weight`` 0.5 and 0.25 or ``--cf-loss uniform-others``: CF+F against
     its parts, and what the CF term trades between ``original`` and the shifted splits; CF(tile)+F(mixed-rand).

   The online paths exist here only: ``train.train.prepare`` is wrapped in the training process, so the trainer's
   loader, crop, flip, loss and schedule stay as they are (the product stays offline). Each run is evaluated twice:
   the best val epoch (the trainer's ``best.pt``; val carries the training bias) and the last epoch (``last.pt``).

Writes ``<out>/fgap.json`` (default bench/out/) and prints, per row, the mean ± sd over seeds of the accuracy on
original, mixed_same, mixed_rand and mixed_next, for both epochs.

    .venv/bin/python bench/fgap.py            # docs/results-fgap.md (make fgap also runs --objects texture)
    .venv/bin/python bench/fgap.py --quick    # smoke run: tiny data, 1 epoch, 1 seed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import photos
from common import OUT, OtherLoad, cli, git, machine, mean_sd, slug, spawned

SPLITS = ("val", "original", "mixed_same", "mixed_rand", "mixed_next")
IN9_FOLDERS = (
    "00_dog",
    "01_bird",
    "02_wheeled vehicle",
    "03_reptile",
    "04_carnivore",
    "05_insect",
    "06_musical instrument",
    "07_primate",
    "08_fish",
)


@dataclass(frozen=True)
class Row:
    """One way of training: CF/F methods, where the F images come from, and whose loop trains."""

    name: str
    cf: tuple[str, ...] = ()
    f: tuple[str, ...] = ()
    source: str = "stored"  # stored | online | online-pool | online-jpeg | plain-loop
    cf_weight: float = 1.0  # train fit --cf-weight
    cf_loss: str = "logp"  # train fit --cf-loss


SHIPPED = {"cf_loss": "uniform-others", "cf_weight": 0.5}  # train fit's default CF objective
CF_FILLS = ("tile", "telea", "grey")  # the CF fields of the build
ROWS = (
    Row("Orig"),
    Row("F(shuffle) stored", f=("shuffle",)),
    Row("F(shuffle) online", f=("shuffle",), source="online"),
    Row("F(shuffle) online, split pool", f=("shuffle",), source="online-pool"),
    Row("F(shuffle) online, JPEG", f=("shuffle",), source="online-jpeg"),
    Row("F(shuffle) plain loop", f=("shuffle",), source="plain-loop"),
    Row("F(random) stored", f=("random",)),
    Row("F(random) online", f=("random",), source="online"),
    Row("F(random) online, JPEG", f=("random",), source="online-jpeg"),
    Row("F(mixed-rand) stored", f=("mixed-rand",)),
    Row("F(mixed-rand) online", f=("mixed-rand",), source="online"),
    Row("CF(tile) stored", cf=("tile",)),
    Row("CF(tile)+F(shuffle) stored", cf=("tile",), f=("shuffle",)),
    Row("CF(tile)+F(shuffle) online", cf=("tile",), f=("shuffle",), source="online"),
    Row("CF(tile)+F(shuffle) online, split pool", cf=("tile",), f=("shuffle",), source="online-pool"),
    Row("CF(tile)+F(shuffle) online, JPEG", cf=("tile",), f=("shuffle",), source="online-jpeg"),
    Row("CF(tile)+F(shuffle) stored, CF weight 0.5", cf=("tile",), f=("shuffle",), cf_weight=0.5),
    Row("CF(tile)+F(shuffle) stored, CF weight 0.25", cf=("tile",), f=("shuffle",), cf_weight=0.25),
    Row("CF(tile)+F(shuffle) stored, CF loss uniform-others", cf=("tile",), f=("shuffle",), cf_loss="uniform-others"),
    Row(
        "CF(tile)+F(shuffle) stored, CF loss uniform-others, weight 0.5",
        cf=("tile",),
        f=("shuffle",),
        cf_loss="uniform-others",
        cf_weight=0.5,
    ),
    Row("CF(tile)+F(mixed-rand) stored", cf=("tile",), f=("mixed-rand",)),
    # F on real backgrounds (issue #33): a bank of the photos that are no class's background
    Row("F(bank) stored", f=("bank",)),
    # which CF fill (issue #32): the shipped objective, the same F
    *(
        Row(f"CF({fill})+F(shuffle) stored, CF loss uniform-others, weight 0.5", cf=(fill,), f=("shuffle",), **SHIPPED)
        for fill in ("telea", "grey")
    ),
)


# ---- the online F images (this benchmark only) ---------------------------------------------------------------------


class OnlineF:
    """Wraps ``train.train.prepare``: before a batch is normalised, its F fields are replaced by fills computed now
    from its (already cropped and flipped) uint8 originals and object masks, with fresh draws at every step."""

    def __init__(self, prepare: Any, methods: tuple[str, ...], source: str, seed: int, pool_images: Any = None):
        self.prepare, self.methods, self.source, self.seed, self.calls = prepare, methods, source, seed, 0
        self.split_pool = None
        if source == "online-pool":
            from augment.pool import make_pool

            self.split_pool = make_pool(seed, [(f"pool{i}", image) for i, image in enumerate(pool_images)])

    def __call__(self, batch: dict[str, Any], device: Any, non_blocking: bool = False) -> dict[str, Any]:
        import numpy as np
        import torch

        from augment.contract import encode
        from augment.infill import INFILLS
        from augment.infill.mixed_rand import Donor
        from augment.pool import make_pool

        self.calls += 1
        rng = np.random.default_rng([self.seed, self.calls])
        images = batch["image"].permute(0, 2, 3, 1).numpy()
        background = ~batch["mask"][:, 0].numpy()
        has = batch["has_object"].tolist()
        pool = self.split_pool or make_pool(self.calls, [(str(i), image) for i, image in enumerate(images)])
        labels = batch["label"].numpy() if "label" in batch else None  # needed by mixed-rand's donors only
        for name in self.methods:
            method = INFILLS[name]
            filled = []
            for i, image in enumerate(images):
                extra = {"pool": pool} if method.needs_pool else {}
                if method.needs_donor:  # no image of another class in the batch: the original stands in
                    donor = self.donor(images, background, labels, has, i, rng)
                    extra = {"donor": donor or Donor(image, np.zeros_like(background[i]))}
                fill = method.fill(image, background[i], rng, **extra) if has[i] else np.zeros_like(image)
                if self.source == "online-jpeg" and has[i]:
                    fill = encode.decode_image(encode.encode_jpeg(fill))
                filled.append(fill)
            batch[f"f.{name}"] = torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2).contiguous()
        return self.prepare(batch, device, non_blocking)

    @staticmethod
    def donor(images: Any, background: Any, labels: Any, has: list[bool], i: int, rng: Any) -> Any:
        """mixed-rand's donor, drawn from the batch: an image of another class with an object, and its CF hole (the
        object's bounding rectangle, which tile fills first)."""
        import numpy as np

        from augment.infill.mixed_rand import Donor
        from augment.masks import cf_hole

        others = [j for j in range(len(images)) if has[j] and labels[j] != labels[i]]
        if not others:
            return None
        j = others[int(rng.integers(len(others)))]
        hole = cf_hole(~background[j], None, background[j].shape)
        return Donor(images[j], hole if hole is not None else np.zeros_like(background[j]))


# ---- one run, in a worker process ----------------------------------------------------------------------------------


def train_one(row: Row, seed: int, shards: str, out: str, epochs: int, arch: str, preset: str) -> dict[str, Any]:
    """Train ``row`` with ``seed``; the accuracies per split of the best val epoch and of the last epoch."""
    import logging
    import warnings

    import torch

    from augment.contract.zoo.models import build_model
    from train import evaluate
    from train import train as trainer
    from train.config import Config
    from train.data import read_manifest

    logging.getLogger("train").setLevel(logging.WARNING)
    shutil.rmtree(out, ignore_errors=True)
    scratch = True if preset != "demo" else None  # the paper's presets are fine-tuning recipes: here from scratch
    config = Config.resolve(
        preset,
        shards=shards,
        out=out,
        arch=arch,
        epochs=epochs,
        cf=list(row.cf),
        f=list(row.f),
        seed=seed,
        workers=0,
        max_saliency_images=0,
        from_scratch=scratch,
        cf_weight=row.cf_weight,
        cf_loss=row.cf_loss,
    )
    manifest = read_manifest(shards)
    crop = config.crop_size(manifest["image_size"])
    start = time.perf_counter()
    prepare = trainer.prepare  # the worker process trains other rows after this one: put it back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if row.source == "plain-loop":
            import parity

            loop = parity.PlainLoop(config, Path(shards), manifest)
            for epoch in range(epochs):
                loop.epoch(epoch)
            last = evaluate.evaluate_all(loop.model, shards, manifest, crop, config, torch.device("cpu"))
            best = loop.results()
            return {"best": accuracies(best), "last": accuracies(last), "seconds": time.perf_counter() - start}
        if row.source != "stored":
            pool_images = None
            if row.source == "online-pool":
                import numpy as np
                import parity

                images = parity.load_train(Path(shards), manifest)[0]
                pool_images = images[
                    np.random.default_rng([seed, 64]).choice(len(images), min(64, len(images)), replace=False)
                ]
            trainer.prepare = OnlineF(prepare, row.f, row.source, seed, pool_images)
        try:
            best = trainer.fit(config, progress=False)
        finally:
            trainer.prepare = prepare
    state = torch.load(Path(out) / "last.pt", map_location="cpu", weights_only=True)
    model = build_model(
        config.arch, len(manifest["dataset"]["classes"]), from_checkpoint=True, normalisation=config.normalisation
    )
    model.load_state_dict(state["model"])
    last = evaluate.evaluate_all(model, shards, manifest, crop, config, torch.device("cpu"))
    return {"best": accuracies(best), "last": accuracies(last), "seconds": time.perf_counter() - start}


def accuracies(results: dict[str, Any]) -> dict[str, float]:
    return {s: results["splits"][s]["accuracy"] for s in SPLITS if s in results["splits"]}


# ---- the run -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--classes",
        type=int,
        default=5,
        choices=range(2, 10),
        metavar="2..9",
        help="classes (photos and shapes) of the fixture",
    )
    photos.fixture_arguments(parser)
    parser.add_argument("--copies", type=int, default=1, help="--copies of the build (copy epoch mod K is read)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one process and torch thread each")
    parser.add_argument("--arch", default="resnet8")
    parser.add_argument("--preset", default="demo", help="train fit --preset (a paper preset runs --from-scratch)")
    parser.add_argument("--rows", nargs="+", help="only these rows (their names, as printed)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the fixture and of the build")
    parser.add_argument("--out", type=Path, default=OUT, help="writes NAME.json there, works in OUT/fgap/NAME/")
    parser.add_argument("--name", default="fgap", help="the report's file name: OUT/NAME.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 images, 10 per variant, 1 epoch, 1 seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.test_size, args.epochs, args.seeds = 50, 10, 1, 1
    unknown = sorted(set(args.rows or ()) - {r.name for r in ROWS})
    if unknown:  # before the fixture and the build: a typo costs nothing
        raise SystemExit(f"--rows: got {unknown}, expected names among: {', '.join(r.name for r in ROWS)}")
    return run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    other, start = OtherLoad(), time.perf_counter()
    work = args.out / "fgap" / args.name  # each report its own fixture, build and runs: names can run side by side
    photos.CLASS_FOLDERS = IN9_FOLDERS  # the release's names, spaces included, in class order
    root = work / f"k{args.classes}" / "bg_challenge"
    counts = photos.write_fixture(
        root, args.size, args.test_size, args.source_size, args.data_seed, args.classes, args.objects
    )
    shards = work / f"shards-c{args.copies}"
    factual = [x for m in ("shuffle", "random", "mixed-rand", "bank") for x in ("--factual", m)]
    bank = write_bank(work / "bank", args.classes)
    build_s, _ = cli(
        "augment",
        "build",
        "--dataset",
        "in9",
        "--root",
        root,
        "--image-size",
        args.image_size,
        *[x for m in CF_FILLS for x in ("--infill", m)],
        *factual,
        "--backgrounds",
        bank,
        "--copies",
        args.copies,
        "--seed",
        args.data_seed,
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    jobs = [(r, s) for r in rows for s in range(args.seeds)]
    jobs.sort(key=lambda j: -(1 + len(j[0].cf) + len(j[0].f)) - (j[0].source == "plain-loop"))  # costliest first
    results: dict[str, list[dict[str, Any]]] = {r.name: [] for r in rows}
    train_start = time.perf_counter()
    settings = (args.epochs, args.arch, args.preset)
    calls = [(train_one, (r, s, str(shards), str(work / "runs" / slug(r.name) / f"s{s}"), *settings)) for r, s in jobs]
    for (row, seed), result in zip(jobs, spawned(args.jobs, calls), strict=True):
        results[row.name].append({"seed": seed, **result})
    report = {
        "machine": machine(),
        "git_log": git("log", "--oneline", "-3"),
        "git_status": git("status", "--short", "--untracked-files=no"),
        "argv": sys.argv[1:],
        "fixture": {
            "classes": list(IN9_FOLDERS[: args.classes]),
            "objects": args.objects,
            "images": counts,
            "image_size": args.image_size,
            "copies": args.copies,
            "build_s": build_s,
        },
        "training": {"preset": args.preset, "arch": args.arch, "epochs": args.epochs, "seeds": args.seeds},
        "rows": [asdict(r) for r in rows],
        "runs": results,
        "summary": {name: summarise(runs) for name, runs in results.items()},
        "train_s": time.perf_counter() - train_start,
        "wall_s": time.perf_counter() - start,
    }
    report["other_load"] = other.line().strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return report


def write_bank(folder: Path, classes: int) -> Path:
    """F(bank)'s background folder: scikit-image's photos that are no class's background in the fixture (those after
    the first ``classes`` of ``photos.PHOTOS``), as PNG files named as the photos."""
    folder.mkdir(parents=True, exist_ok=True)
    names = photos.PHOTOS[classes:]
    for (name, _), image in zip(names, photos.load_photos(len(names), tuple(f for _, f in names)), strict=True):
        path = folder / f"{name}.png"
        if not path.exists():
            photos.Image.fromarray(image).save(path)
    return folder


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per epoch choice (best, last) and split: [mean, sd] over the seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for which in ("best", "last"):
        for split in runs[0][which]:
            out.setdefault(which, {})[split] = mean_sd([r[which][split] for r in runs])
    return out


def print_table(report: dict[str, Any]) -> None:
    print(f"\n[fgap] offline F against online F, {report['fixture']}, {report['training']}; {report['other_load']}")
    for which in ("best", "last"):
        print(f"\n{which} epoch | " + " | ".join(SPLITS[1:]))
        for name, summary in report["summary"].items():
            cells = [f"{summary[which][s][0]:.3f} ± {summary[which][s][1]:.3f}" for s in SPLITS[1:]]
            print(f"{name} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
