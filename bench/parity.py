"""Benchmark 7: ``train fit`` against a plain PyTorch loop on the same data: accuracy per split, and img/s.

1. Writes the embedded synthetic generator's samples (``augment/datasets/synthetic.py``: 5 shapes on 5 background
   families) in the IN-9 Backgrounds Challenge layout (docs/DATASETS.md), class folder by class folder as IN-9 is
   released: ``bg_challenge/train/original/{train,val}/<NN_class>/<img>.JPEG``, ``train/no_fg/...`` (the same image
   with the object blacked out, where the train masks come from), ``test/<variant>/val/<NN_class>/...`` for
   original, mixed_same, mixed_rand, mixed_next, only_fg and no_fg (mixed files named ``fg_<stem>_bg_<...>``) and
   ``test/fg_mask/val/<NN_class>/<stem>.npy``. The in9 adapter takes any class folders; these are ``00_circle`` ...
   ``04_star``, and it reads them in class order.
2. Builds it once with ``augment build --dataset in9 --root ... --infill tile --factual shuffle`` (default
   ``--copies``, shard size and workers), as a user would.
3. Trains each method twice with the same resolved ``Config`` (``--preset demo --arch resnet8``, as ``make
   reproduce`` trains the study at 32 px):

   - **train fit**: ``train.train.fit(Config.resolve(...))``, the real entry point, reading the shards (CF and F
     images precomputed by the build, copy ``epoch % copies`` of a stochastic one);
   - **plain loop**: written here, plain PyTorch: every train original (decoded from the shards' JPEGs, with
     their masks) in one uint8 tensor, a fresh random permutation each epoch, batches of ``batch_size`` (the
     last partial one dropped, as the trainer does), the same model from the same seed, SGD/RMSprop with the
     config's lr, momentum and weight decay, its lr schedule stepped per epoch, gradients clipped at
     ``config.clip``, one random crop and flip shared by a sample's original, CF and F images, and the loss of
     ``train.train`` written out again (sums over rows / rows). CF and F images are computed **online**, at
     every step, with the ``augment.infill`` registry's functions from the mask (shuffle drawing from the batch's
     own values, as the paper's code does; fresh shuffle draws every
     time), where the trainer reads one stored draw;
   - both select the epoch with the best val accuracy, and both are evaluated by the same code
     (``train.evaluate``: the trainer's eval preprocessing, every test split).

img/s counts the rows trained (originals plus their CF and F images) per second of the training loops' wall time
(data waits included, evaluation excluded): the trainer's from its ``log.csv`` (rows / seconds per epoch, combined
over epochs), the plain loop's timed the same way. The two alternate epoch by epoch (train fit resumes its run for
each epoch), so that load from other jobs hits both alike. One ``torch.set_num_threads`` for both, 1 by default: on
a 2-core machine shared with other jobs, two intra-op threads stall whenever a core is taken (by another job, or by
the trainer's own DataLoader workers), 20-50x slower (docs/benchmarks.md, section 7). Goal: train fit within 0.02
of the plain loop on ``original`` and at least 0.9x its img/s.

    .venv/bin/python bench/parity.py            # make bench
    .venv/bin/python bench/parity.py --quick
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import shutil
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import OUT, OtherLoad, cli, git, machine
from PIL import Image

from augment import masks
from augment.contract.zoo.models import build_model
from augment.datasets.synthetic import GENERATOR_VERSION, SHAPES, Synthetic
from augment.infill import INFILLS
from augment.pool import make_pool
from train import evaluate
from train.config import Config, default_crop
from train.train import fit

METHODS = {"Orig": ([], []), "F(shuffle)": ([], ["shuffle"]), "CF(tile)+F(shuffle)": (["tile"], ["shuffle"])}
CLASS_FOLDERS = tuple(f"{i:02d}_{name}" for i, name in enumerate(SHAPES))
TEST_VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg")
GOAL_ACCURACY, GOAL_SPEED = 0.02, 0.9


# ---- 1. the dataset, in IN-9's upstream layout ---------------------------------------------------------------------


def save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


def write_in9(root: Path, n_train: int, n_test: int, source_size: int, seed: int) -> dict[str, int]:
    """Synthetic samples as ``root`` = ``bg_challenge/``, written class folder by class folder; images per split.
    Kept for the next run with the same parameters (a ``done-...json`` marker beside ``root``).

    Train and val: synthetic ``train``/``val`` (class c on family c with probability 0.9), with ``no_fg`` copies.
    Test: sample i of synthetic ``original`` and its ``mixed_*`` variants (the same object on other backgrounds),
    ``only_fg`` (the object on black) and ``no_fg`` (the object blacked out), ``n_test`` of each.
    """
    marker = root.parent / f"done-{n_train}-{n_test}-{source_size}-{seed}-v{GENERATOR_VERSION}.json"
    if marker.exists():  # written by an earlier run with the same parameters: kept, like common.write_folder_tree
        return json.loads(marker.read_text())
    for old in root.parent.glob("done-*.json"):
        old.unlink()
    data = Synthetic(size=n_train, image_size=source_size, seed=seed)
    k = len(SHAPES)
    shutil.rmtree(root, ignore_errors=True)
    counts: dict[str, int] = {}
    for subset, n in (("train", n_train), ("val", max(n_train // 5, k))):
        for label, folder in enumerate(CLASS_FOLDERS):
            for i in range(label, n, k):  # synthetic sample i has label i % k
                sample = data.load(subset, i)
                stem = f"n{label:02d}_{i:06d}"
                save_jpeg(root / "train/original" / subset / folder / f"{stem}.JPEG", sample.image)
                save_jpeg(
                    root / "train/no_fg" / subset / folder / f"{stem}.JPEG", blacked_out(sample.image, sample.mask)
                )
                counts[subset] = counts.get(subset, 0) + 1
    for label, folder in enumerate(CLASS_FOLDERS):
        for i in range(label, n_test, k):
            original = data.load("original", i)
            stem = f"n{label:02d}_t{i:06d}"
            npy = root / "test/fg_mask/val" / folder / f"{stem}.npy"
            npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, original.mask)
            for variant in TEST_VARIANTS:
                name, pixels = f"{stem}.JPEG", original.image
                if variant == "only_fg":
                    pixels = np.where(original.mask[..., None], original.image, 0).astype(np.uint8)
                elif variant == "no_fg":
                    pixels = blacked_out(original.image, original.mask)
                elif variant != "original":  # the same object on another background: IN-9's fg_<stem>_bg_<stem>
                    sample = data.load(variant, i)
                    name, pixels = f"fg_{stem}_bg_n{sample.meta['background']:02d}_b{i:06d}.JPEG", sample.image
                save_jpeg(root / "test" / variant / "val" / folder / name, pixels)
                counts[variant] = counts.get(variant, 0) + 1
    marker.write_text(json.dumps(counts))
    return counts


def blacked_out(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], 0, image).astype(np.uint8)


# ---- 2. the plain loop ---------------------------------------------------------------------------------------------


def load_train(shards: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every train sample's original and object mask as the trainer decodes them: (uint8 [N, H, W, 3], bool [N, H, W]
    (all False without an object), int64 [N] labels). Read with tarfile and PIL, not with train.data."""
    images, objects, labels = {}, {}, {}
    for shard in manifest["splits"]["train"]["shards"]:
        with tarfile.open(shards / shard["path"]) as tar:
            for member in tar:
                key, field = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                if field == "jpg":
                    images[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                elif field == "mask.png":
                    objects[key] = np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 0
                elif field == "cls":
                    labels[key] = int(data)
    keys = sorted(labels)
    shape = images[keys[0]].shape[:2]
    return (
        np.stack([images[k] for k in keys]),
        np.stack([objects.get(k, np.zeros(shape, bool)) for k in keys]),
        np.array([labels[k] for k in keys], dtype=np.int64),
    )


def lr_factor(config: Config, epoch: int) -> float:
    """The schedule's multiplier of ``config.lr`` during ``epoch`` (closed forms of torch's per-epoch schedulers)."""
    if config.schedule == "cosine":
        return (1 + math.cos(math.pi * epoch / max(config.epochs, 1))) / 2
    if config.schedule == "step":
        return 0.1 ** sum(epoch >= m for m in config.milestones)
    raise ValueError(f"plain loop: schedule {config.schedule!r} is not reproduced here (cosine, step)")


def crop_flip(x: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``crop`` x ``crop`` window and horizontal flip per sample of [B, C, H, W]; every channel of a
    sample (its original, CF and F images stacked) gets the same ones, as ``RandomCrop`` + ``RandomHorizontalFlip``."""
    b, _, h, w = x.shape
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the images ({h} x {w})")
    top = torch.randint(0, h - crop + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, w - crop + 1, (b,), generator=generator).tolist()
    flip = (torch.rand(b, generator=generator) < 0.5).tolist()
    windows = [x[i, :, t : t + crop, u : u + crop] for i, (t, u) in enumerate(zip(top, left, strict=True))]
    return torch.stack([v.flip(-1) if f else v for v, f in zip(windows, flip, strict=True)])


def cf_logp(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log(1 - p_y) per row, computed stably: -(logsumexp over k != y - logsumexp over all k)."""
    others = logits.scatter(1, y[:, None], -math.inf)
    return -(torch.logsumexp(others, 1) - torch.logsumexp(logits, 1))


def cf_uniform_others(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution over the classes other than y, per row."""
    log_p = torch.log_softmax(logits, 1)
    return -(log_p.sum(1) - log_p.gather(1, y[:, None])[:, 0]) / (logits.shape[1] - 1)


CF_LOSSES = {"logp": cf_logp, "uniform-others": cf_uniform_others}  # the trainer's --cf-loss kinds written here


def device_of(config: Config) -> torch.device:
    """The device train fit resolves ``config.device`` to (one process)."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device)


class PlainLoop:
    """The reference loop of the module docstring, one epoch per :meth:`epoch` call."""

    def __init__(self, config: Config, shards: Path, manifest: dict[str, Any]):
        self.config, self.shards, self.manifest, self.device = config, shards, manifest, device_of(config)
        unsupported = (
            config.sal,
            config.fgsm,
            config.mixup,
            config.cf_loss not in CF_LOSSES,
            config.select != "accuracy",
            config.early_stop,
            config.amp and self.device.type == "cuda",
            config.train_fraction < 1,
        )
        if any(unsupported):
            raise ValueError(
                "plain loop: only CE + CF(logp or uniform-others) + F in fp32 on the whole split, "
                "selected on val accuracy without early stopping, is reproduced here"
            )
        self.images, objects, labels = load_train(shards, manifest)
        n, h, w = objects.shape
        self.crop = config.crop_size(manifest["image_size"])
        self.holes = {
            "cf": [masks.cf_hole(m, None, (h, w)) for m in objects],
            "f": [masks.f_hole(m, None, (h, w)) for m in objects],
        }
        self.has = np.array([c is not None and f is not None for c, f in zip(*self.holes.values(), strict=True)])
        self.originals = torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous()  # all of train in one tensor
        self.targets = torch.from_numpy(labels)
        torch.manual_seed(config.seed)  # as train fit seeds before it builds the model: the same initial weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "training from scratch"
            self.model = build_model(
                config.arch,
                len(manifest["dataset"]["classes"]),
                config.weights,
                zero_head=config.zero_head,
                normalisation=config.normalisation,
            )
        self.model = self.model.to(self.device)
        opt = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.RMSprop
        self.optimizer = opt(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)  # permutations, crops and flips
        self.best, self.best_state, self.rates = -math.inf, None, []

    def epoch(self, epoch: int) -> None:
        """Train one epoch (timed: rows per second into ``rates``), then keep the model if val accuracy improved."""
        config, batch, n = self.config, self.config.batch_size, len(self.targets)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(config, epoch)
        self.model.train()
        start, rows = time.perf_counter(), 0
        order = torch.randperm(n, generator=self.generator)
        for step in range(n // batch):  # the last partial batch is dropped, as the trainer does
            idx = order[step * batch : (step + 1) * batch]
            views = [self.originals[idx], *self.fills(idx.tolist(), epoch, step)]
            x = crop_flip(torch.cat(views, 1), self.crop, self.generator).float().div(127.5).sub(1.0)
            x = x.reshape(batch, len(views), 3, self.crop, self.crop).to(self.device)
            y = self.targets[idx].to(self.device)
            keep = torch.from_numpy(self.has[idx.numpy()]).to(self.device)
            extra = [x[keep, v] for v in range(1, len(views))]
            logits = self.model(torch.cat([x[:, 0], *extra]))
            total = F.cross_entropy(logits[:batch], y, label_smoothing=config.label_smoothing, reduction="sum")
            offset, yk = batch, y[keep]
            for v, part in enumerate(extra):
                z = logits[offset : offset + len(part)]
                offset += len(part)
                if v < len(config.cf):
                    total = total + config.cf_weight * CF_LOSSES[config.cf_loss](z, yk).sum()
                else:
                    total = total + F.cross_entropy(z, yk, reduction="sum")
            self.optimizer.zero_grad(set_to_none=True)
            (total / offset).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip)
            self.optimizer.step()
            rows += offset
        self.rates.append(rows / (time.perf_counter() - start))
        val = evaluate.split_metrics(
            self.model, self.shards, self.manifest, config.val_split, self.crop, config, self.device
        )
        if val["accuracy"] > self.best:
            self.best, self.best_state = val["accuracy"], copy.deepcopy(self.model.state_dict())

    def fills(self, idx: list[int], epoch: int, step: int) -> list[torch.Tensor]:
        """The batch's CF then F images, uint8 [B, 3, H, W] per method, computed now: fresh draws at every step
        (zeros for a sample without an object, as the trainer's loader gives)."""
        rng = np.random.default_rng([self.config.seed, epoch, step])
        batch_pool = make_pool(0, [(str(i), self.images[i]) for i in idx])  # shuffle pools the batch, as the paper
        views = []
        for role, methods in (("cf", self.config.cf), ("f", self.config.f)):
            for name in methods:
                fill, holes = INFILLS[name].fill, self.holes[role]
                extra = {"pool": batch_pool} if INFILLS[name].needs_pool else {}
                filled = [
                    fill(self.images[i], holes[i], rng, **extra) if self.has[i] else np.zeros_like(self.images[i])
                    for i in idx
                ]
                views.append(torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2))
        return views

    def results(self) -> dict[str, Any]:
        """The best-val model evaluated by the trainer's code on every split."""
        self.model.load_state_dict(self.best_state)
        return evaluate.evaluate_all(self.model, self.shards, self.manifest, self.crop, self.config, self.device)


# ---- 3. both sides, side by side -----------------------------------------------------------------------------------


def trainer_rates(run: Path) -> dict[str, Any]:
    """Rows per second of each epoch of a ``train fit`` run, and its mean data-wait fraction, from its log.csv."""
    with open(run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "rates": [float(r["img_per_s"]) for r in rows],
        "data_wait_fraction": float(np.mean([float(r["data_wait_fraction"]) for r in rows])),
    }


def overall(rates: list[float]) -> float:
    """Total rows / total seconds: every epoch trains the same number of rows, so the harmonic mean of the rates."""
    return len(rates) / sum(1 / r for r in rates)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": {s: m["accuracy"] for s, m in results["splits"].items()}, "bg_gap": results.get("bg_gap")}


def compare(config: Config, shards: Path, manifest: dict[str, Any], trainer_first: bool) -> dict[str, Any]:
    """One method: train fit and the plain loop with the same config, epoch by epoch in alternating order, so that
    load from other jobs hits both alike. train fit runs one epoch per call, resuming its run (``fit(resume=True,
    stop_after=epoch)``, which continues exactly), and evaluates after its last."""
    shutil.rmtree(config.out, ignore_errors=True)
    wall = {"train fit": 0.0, "plain loop": 0.0}
    state: dict[str, Any] = {}

    def trainer(epoch: int) -> None:
        last = epoch == config.epochs - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "training from scratch"
            results = fit(config, resume=epoch > 0, stop_after=None if last else epoch)
        if last:
            state["train fit"] = summary(results)

    def plain(epoch: int) -> None:
        if epoch == 0:
            state["loop"] = PlainLoop(config, shards, manifest)
        state["loop"].epoch(epoch)
        if epoch == config.epochs - 1:
            state["plain loop"] = summary(state["loop"].results())

    for epoch in range(config.epochs):
        sides = (("train fit", trainer), ("plain loop", plain))
        for name, side in sides if (epoch % 2 == 0) == trainer_first else sides[::-1]:
            start = time.perf_counter()
            side(epoch)
            wall[name] += time.perf_counter() - start
    t, p = trainer_rates(Path(config.out)), state["loop"].rates
    return {
        "train fit": {
            **state["train fit"],
            "img_per_s": overall(t["rates"]),
            "epoch_img_per_s": t["rates"],
            "data_wait_fraction": t["data_wait_fraction"],
            "wall_s": wall["train fit"],
        },
        "plain loop": {
            **state["plain loop"],
            "img_per_s": overall(p),
            "epoch_img_per_s": p,
            "wall_s": wall["plain loop"],
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="train images (val gets 1/5), make reproduce's")
    parser.add_argument("--test-size", type=int, default=500, help="images per test variant")
    parser.add_argument("--image-size", type=int, default=32, help="augment build --image-size (crop: 7/8)")
    parser.add_argument("--source-size", type=int, default=64, help="side of the written IN-9 JPEGs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--arch", default="resnet8", help="augment.contract.zoo.models arch (make reproduce's at 32 px)"
    )
    parser.add_argument("--workers", type=int, default=None, help="train fit's DataLoader workers [its default]")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads, both sides (see the docs)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (train fit's --seed), both sides")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data and of the build")
    parser.add_argument("--out", type=Path, default=OUT, help="writes parity.json here, works in OUT/parity/")
    parser.add_argument("--quick", action="store_true", help="64 images, 10 per test variant, 1 epoch, 0 workers")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.test_size, args.epochs, args.workers = 64, 10, 1, 0
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # main() also runs inside the test suite


def run(args: argparse.Namespace) -> dict[str, Any]:
    other = OtherLoad()
    work = args.out / "parity"
    root, shards = work / "bg_challenge", work / "shards"
    start = time.perf_counter()
    counts = write_in9(root, args.size, args.test_size, args.source_size, args.data_seed)
    write_s = time.perf_counter() - start
    build_s, _ = cli(
        "augment",
        "build",
        "--dataset",
        "in9",
        "--root",
        root,
        "--image-size",
        args.image_size,
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--seed",
        args.data_seed,
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    manifest = json.loads((shards / "manifest.json").read_text())
    results: dict[str, Any] = {}
    config = None
    for i, (name, (cf, f)) in enumerate(METHODS.items()):
        slug = name.replace("(", "-").replace(")", "").replace("+", "-").lower()
        config = Config.resolve(
            "demo",
            shards=str(shards),
            out=str(work / "runs" / slug),
            arch=args.arch,
            epochs=args.epochs,
            cf=cf,
            f=f,
            workers=args.workers,
            seed=args.seed,
            max_saliency_images=0,
        )
        results[name] = compare(config, shards, manifest, trainer_first=i % 2 == 0)
    splits = [s for s in manifest["splits"] if s != "train"]
    report = {
        "machine": machine(),
        "git_log": git("log", "--oneline", "-5"),
        "git_status": git("status", "--short", "--untracked-files=no"),
        "torch_threads": args.threads,
        "dataset": {
            "layout": "in9 (bg_challenge/)",
            "classes": list(CLASS_FOLDERS),
            "images": counts,
            "source_size": args.source_size,
            "image_size": args.image_size,
            "seed": args.data_seed,
            "write_s": write_s,
            "build_s": build_s,
        },
        "config": {k: v for k, v in config.to_dict().items() if k not in ("cf", "f", "out", "shards")},
        "methods": results,
        "goal": goal(results["Orig"]),
    }
    report["other_load"] = other.line().strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(report, splits, args)
    return report


def goal(sides: dict[str, Any]) -> dict[str, Any]:
    gap = sides["train fit"]["accuracy"]["original"] - sides["plain loop"]["accuracy"]["original"]
    ratio = sides["train fit"]["img_per_s"] / sides["plain loop"]["img_per_s"]
    return {
        "original_difference": gap,
        "accuracy_met": abs(gap) <= GOAL_ACCURACY,
        "img_per_s_ratio": ratio,
        "speed_met": ratio >= GOAL_SPEED,
    }


def print_table(report: dict[str, Any], splits: list[str], args: argparse.Namespace) -> None:
    c = report["config"]
    print(
        f"\n[7] train fit vs a plain PyTorch loop: synthetic in the IN-9 layout ({args.size} train, "
        f"{args.test_size} per test variant, class-ordered), {args.image_size} px -> crop "
        f"{c['crop'] or default_crop(args.image_size)}, {c['arch']}, {c['epochs']} epochs, batch {c['batch_size']}, "
        f"{c['workers']} workers, {report['torch_threads']} torch threads"
    )
    names = {
        "original": "orig",
        "mixed_same": "m_same",
        "mixed_rand": "m_rand",
        "mixed_next": "m_next",
        "only_fg": "only_fg",
        "no_fg": "no_fg",
        "val": "val",
    }
    head = "".join(f"{names.get(s, s):>8}" for s in splits)
    print(f"{'method':<20} {'side':<11}{head} {'bg_gap':>7} {'img/s':>7} {'ratio':>6} {'wall s':>7}")
    for name, sides in report["methods"].items():
        t, p = sides["train fit"], sides["plain loop"]
        for side, r in (("train fit", t), ("plain loop", p)):
            accs = "".join(f"{r['accuracy'][s]:>8.3f}" for s in splits)
            ratio = f"{t['img_per_s'] / p['img_per_s']:>5.2f}x" if side == "train fit" else ""
            print(
                f"{name:<20} {side:<11}{accs} {r['bg_gap'] or 0:>7.3f} {r['img_per_s']:>7.0f} {ratio:>6} "
                f"{r['wall_s']:>7.1f}"
            )
        diff = "".join(f"{t['accuracy'][s] - p['accuracy'][s]:>+8.3f}" for s in splits)
        print(f"{'':<20} {'fit - plain':<11}{diff} {(t['bg_gap'] or 0) - (p['bg_gap'] or 0):>+7.3f}")
    g = report["goal"]
    print(
        f"    goal, Orig: train fit within {GOAL_ACCURACY} of the plain loop on original: "
        f"{g['original_difference']:+.3f}, {'met' if g['accuracy_met'] else 'NOT met'}; img/s at least "
        f"{GOAL_SPEED}x: {g['img_per_s_ratio']:.2f}x, {'met' if g['speed_met'] else 'NOT met'}"
    )
    print(f"    {report['other_load']}")


if __name__ == "__main__":
    main()
