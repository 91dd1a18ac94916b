"""Benchmark 3: the trainer's input pipeline with CF+F fields against computing the infills online, and decode alone.

Three loaders deliver the same training samples (one epoch of the ``train`` split of an ``augment build`` with
``--infill tile --factual shuffle``), each through a ``torch.utils.data.DataLoader`` with the trainer's default
workers and the demo preset's batch size:

- **shards**: ``train.data`` (``ShardStream`` + ``loader``) as ``train fit --cf tile --f shuffle`` uses it:
  read the tar shards, decode the original, CF(tile), F(shuffle) JPEGs and the PNG mask, one random crop and
  flip for all four, normalise;
- **folder + online infill**: an ImageFolder-style ``Dataset`` over the same originals and masks written out
  as files (one JPEG + one PNG per sample), which computes CF(tile) and F(shuffle) per sample with the
  ``augment.infill`` kernels, then the same crop, flip and normalisation: what a pipeline without precomputed
  shards does;
- **decode only**: the same files decoded and nothing else, the limit. Two rows: the fields a shard sample
  holds (the original, CF and F JPEGs and the PNG mask; the floor for *shards*) and the original alone.

Every loader decodes with the trainer's decoder (TorchCodec), so the rows differ only in what they do besides.

Rounds alternate the loaders; the figures are medians. images/s counts training samples (an original with its
CF and F images and mask), including worker start-up at each epoch, as in training.

    .venv/bin/python bench/loader.py            # make bench
    .venv/bin/python bench/loader.py --quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from common import OUT, OtherLoad, cli, median
from torch.utils.data import DataLoader, Dataset
from torchcodec.decoders import decode_jpeg, decode_png
from torchvision import tv_tensors
from torchvision.transforms import v2

from augment import masks
from augment.infill import INFILLS
from augment.pool import ValuePool, load_pool
from train.config import default_crop

CF_FIELD, F_FIELD = "cf.tile.jpg", "f.shuffle.0.jpg"


def shard_loader(shards: Path, crop: int, batch: int, workers: int, epoch: int, host: bool):
    """The trainer's loader, built from train.data's public pieces as ``train fit --cf tile --f shuffle`` does: uint8
    batches, which the training step normalises on its device (``train.data.prepare``); with ``host``, normalised
    here in the main process, as the step does on a machine without a GPU."""
    from train.data import Fields, ShardStream, loader, prepare, read_manifest

    manifest = read_manifest(shards)
    fields = Fields(cf=["tile"], f=["shuffle"])
    stream = ShardStream(shards, manifest, "train", fields, train=True, crop=crop, seed=0, batch_size=batch)
    stream.set_epoch(epoch)
    batches = loader(stream, batch, workers, drop_last=True)
    return (prepare(b, "cpu") for b in batches) if host else batches


def extract(shards: Path, folder: Path) -> list[tuple[str, int]]:
    """Write each train sample's stored files out as ``<key>.<field>``; returns (key, label) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((shards / "manifest.json").read_text())
    samples = []
    for shard in manifest["splits"]["train"]["shards"]:
        with tarfile.open(shards / shard["path"]) as tar:
            for member in tar:
                key, field = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                if field == "cls":
                    samples.append((key, int(data)))
                elif field in ("jpg", "mask.png", CF_FIELD, F_FIELD):
                    (folder / member.name).write_bytes(data)
    return samples


def decode(path: Path) -> np.ndarray:
    """A JPEG file as uint8 HWC, with the trainer's decoder (TorchCodec), so that every loader decodes alike."""
    return decode_jpeg(str(path)).permute(1, 2, 0).numpy()


def decode_mask(path: Path) -> np.ndarray:
    return decode_png(str(path), mode="GRAY")[0].numpy() > 0


def to_input(image: torch.Tensor) -> torch.Tensor:
    return image.as_subclass(torch.Tensor).float().div(127.5).sub(1.0)  # [-1, 1], as train.data


class FolderOnline(Dataset):
    """Originals + masks from files; CF(tile) and F(shuffle) computed per sample, then crop, flip, normalise."""

    def __init__(self, folder: Path, samples: list[tuple[str, int]], crop: int, epoch: int, values: ValuePool):
        self.folder, self.samples, self.epoch, self.values = folder, samples, epoch, values  # values: shuffle's pool
        self.transform = v2.Compose([v2.RandomCrop(crop, pad_if_needed=True), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        key, label = self.samples[i]
        image = decode(self.folder / f"{key}.jpg")
        mask = decode_mask(self.folder / f"{key}.mask.png")
        rng = np.random.default_rng([self.epoch, i])
        cf = INFILLS["tile"].fill(image, masks.cf_hole(mask, None, mask.shape), rng)
        f = INFILLS["shuffle"].fill(image, masks.f_hole(mask, None, mask.shape), rng, pool=self.values)

        def chw(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).permute(2, 0, 1)

        views = {
            "image": tv_tensors.Image(chw(image)),
            "mask": tv_tensors.Mask(torch.from_numpy(mask)[None]),
            "cf.tile": tv_tensors.Image(chw(cf)),
            "f.shuffle": tv_tensors.Image(chw(f)),
        }
        views = self.transform(views)
        return {
            "label": label,
            "mask": views.pop("mask").as_subclass(torch.Tensor).float(),
            **{k: to_input(v) for k, v in views.items()},
        }


class DecodeOnly(Dataset):
    """The same files decoded to uint8 tensors, nothing else."""

    def __init__(self, folder: Path, samples: list[tuple[str, int]], fields: tuple[str, ...]):
        self.folder, self.samples, self.fields = folder, samples, fields

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        key, label = self.samples[i]
        out = {"label": label}
        for f in self.fields:
            path = self.folder / f"{key}.{f}"
            out[f] = torch.from_numpy(decode_mask(path) if f == "mask.png" else decode(path))
        return out


def epoch_rate(make_loader) -> float:
    """Training samples per second over one full pass, worker start-up included."""
    start = time.perf_counter()
    n = sum(len(batch["label"]) for batch in make_loader())
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="synthetic --size: training samples")
    parser.add_argument(
        "--image-sizes",
        type=int,
        nargs="+",
        default=[256, 128, 32],
        help="stored image sizes, one comparison each (crop: 7/8 of it; 256 -> 224 is the paper's, "
        "32 -> 28 the demo's)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="the demo preset's")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (train fit's default)")
    parser.add_argument("--rounds", type=int, default=5, help="median over R alternating rounds")
    parser.add_argument("--quick", action="store_true", help="100 samples of 64 px, 1 round: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.image_sizes, args.rounds = 100, [64], 1
    # this process only collates and normalises: with torch's default threads it would spin on the cores the
    # DataLoader workers need (the host-normalised row halved at 32 px); the workers run one thread each anyway
    torch.set_num_threads(1)
    for image_size in args.image_sizes:
        compare(args.size, image_size, args.batch_size, args.workers, args.rounds)


def compare(size: int, image_size: int, batch: int, workers: int, rounds: int) -> None:
    other = OtherLoad()
    work = OUT / "loader"
    shards = work / "shards"
    cli(
        "augment",
        "build",
        "--dataset",
        "synthetic",
        "--size",
        size,
        "--image-size",
        image_size,
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--shard-size",
        max(1, size // 4),
        "--out",
        shards,
        "--overwrite",
        "-q",
    )  # 4 train shards: both workers get some
    shutil.rmtree(work / "folder", ignore_errors=True)
    samples = extract(shards, work / "folder")
    crop = default_crop(image_size)  # train fit's default

    # the online loader's shuffle pool: made once, untimed (a training run would make it once, not per epoch)
    def member(i: int) -> tuple[str, np.ndarray]:
        return samples[i][0], decode(work / "folder" / f"{samples[i][0]}.jpg")

    values = load_pool(0, "train", len(samples), member)

    def plain(dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)

    shard_rows = {
        "shards: uint8 batches (GPU normalises)": False,
        "shards: + normalised on the host (CPU)": True,
    }
    loaders = {
        **{
            name: (lambda r, h=on_host: shard_loader(shards, crop, batch, workers, r, h))
            for name, on_host in shard_rows.items()
        },
        "folder + online tile/shuffle": lambda r: plain(FolderOnline(work / "folder", samples, crop, r, values)),
        "decode only: its fields (3 JPEGs + mask)": lambda r: plain(
            DecodeOnly(work / "folder", samples, ("jpg", CF_FIELD, F_FIELD, "mask.png"))
        ),
        "decode only: original JPEG": lambda r: plain(DecodeOnly(work / "folder", samples, ("jpg",))),
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(rounds):
        names = list(loaders)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(epoch_rate(lambda name=name, r=r: loaders[name](r)))
    print(
        f"\n[3] trainer input pipeline: {len(samples)} samples {image_size}px -> crop {crop}, batch {batch}, "
        f"{workers} workers, one epoch, median of {rounds} rounds"
    )
    print(f"{'loader':<42} {'img/s':>8} {'uint8 shards / this':>20} {'normalised / this':>18}")
    uint8, host = (median(rates[name]) for name in shard_rows)
    for name, values in rates.items():
        print(f"{name:<42} {median(values):>8.1f} {uint8 / median(values):>19.2f}x {host / median(values):>17.2f}x")
    # the shard loader hashes every shard as it streams (train.ledger): what that costs, against its whole epoch
    files = sorted((shards / "train").glob("*.tar"))
    hashing = median([hash_seconds(files) for _ in range(max(3, rounds))])
    epoch = len(samples) / uint8
    print(
        f"sha256 of the {len(files)} train shards ({sum(f.stat().st_size for f in files) / 1e6:.1f} MB): "
        f"{hashing * 1e3:.1f} ms, {hashing / epoch:.1%} of the shard loader's epoch ({epoch * 1e3:.0f} ms, "
        f"{workers} workers)"
    )
    print(other.line())


def hash_seconds(files: list[Path]) -> float:
    """Seconds to sha256 ``files`` in 1 MiB reads, as train.data's streaming check does (one process)."""
    import hashlib

    start = time.perf_counter()
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
