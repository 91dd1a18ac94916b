"""Stream ``augment build`` shards into training and evaluation batches.

The trainer knows only the shard schema (``augment.schema``): it reads the shards the manifest lists, keeps only
the fields it needs (images, the PNG mask, JSON, cls), and never unpickles or ``torch.load``s anything, since
shards come from other teams. The original, its CF and F images and its mask get the **same** random crop and
flip (torchvision transforms v2 on tv_tensors). Stochastic fields stored in K copies use copy ``epoch % K``.
Every random draw is seeded by (seed, epoch, worker), so an epoch's data is the same after ``--resume``.
"""

from __future__ import annotations

import io
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2

from augment import infill, schema

log = logging.getLogger(__name__)


@dataclass
class Fields:
    """Which shard fields a run reads: the CF and F methods, and how many copies the build stored."""

    cf: list[str] = field(default_factory=list)
    f: list[str] = field(default_factory=list)
    copies: int = 1

    def names(self, epoch: int) -> dict[str, str]:
        """role.method -> the field to read this epoch (copy ``epoch % copies`` of stochastic methods)."""
        out = {}
        for role, methods in ((infill.CF, self.cf), (infill.F, self.f)):
            for m in methods:
                names = infill.field_names(m, role, self.copies)
                out[f"{role}.{m}"] = names[epoch % len(names)]
        return out


def check_fields(manifest: dict[str, Any], fields: Fields, split: str = "train") -> None:
    """Refuse a run that asks for CF/F images the build did not make, naming what it has."""
    have = set(manifest["splits"][split]["fields"])
    for role, methods in ((infill.CF, fields.cf), (infill.F, fields.f)):
        for m in methods:
            if infill.field_names(m, role, fields.copies)[0] not in have:
                built = manifest["methods"]["cf" if role == infill.CF else "f"]
                flag = "--cf" if role == infill.CF else "--f"
                raise ValueError(f"{flag} {m}: the shards hold no {role}.{m} images; built with {built or 'none'}")


def decode_rgb(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)


def decode_mask(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.asarray(img.convert("L")) > 0)[None]


class ShardStream(IterableDataset):
    """One split of a build as an iterable of sample dicts, sharded across DataLoader workers."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], split: str, fields: Fields, train: bool, crop: int,
        seed: int = 0, shuffle_buffer: int = 1000,
    ):  # fmt: skip
        self.root, self.split, self.fields, self.train, self.crop = Path(root), split, fields, train, crop
        self.seed, self.shuffle_buffer, self.epoch = seed, shuffle_buffer, 0
        self.urls = [str(self.root / s["path"]) for s in manifest["splits"][split]["shards"]]
        self.num_samples = manifest["splits"][split]["num_samples"]
        self.skipped = 0
        if train:
            self.transform = v2.Compose([v2.RandomCrop(crop, pad_if_needed=True), v2.RandomHorizontalFlip()])
        else:
            self.transform = v2.Resize((crop, crop), antialias=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        urls = list(self.urls)
        if self.train:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(urls)  # same order in every worker
        mine = urls[worker::workers]
        rng = random.Random(f"{self.seed}:{self.epoch}:{worker}")
        torch.manual_seed(rng.getrandbits(63))  # the crop and flip draws of this worker, this epoch
        wanted = {schema.IMAGE, schema.LABEL, schema.META, schema.MASK, *self.fields.names(self.epoch).values()}
        samples = wds.tarfile_to_samples(
            handler=self.skip_corrupt,
            select_files=lambda name: name.split(".", 1)[-1] in wanted,  # never read what we will not decode
        )({"url": u} for u in mine)
        if self.train:
            samples = wds.shuffle(bufsize=self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng)(samples)
        self.skipped = 0
        for raw in samples:
            try:
                yield self.decode(raw)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                self.skip_corrupt(e, raw)
        if self.skipped:  # each worker reports its own total at the end of the epoch
            log.warning("%s epoch %d, worker %d: skipped %d corrupt samples", self.split, self.epoch, worker,
                        self.skipped)  # fmt: skip

    def skip_corrupt(self, exn: Exception, raw: dict | None = None) -> bool:
        """Skip a corrupt sample with a warning naming its key and shard; code bugs (TypeError, ...) still raise."""
        if isinstance(exn, (TypeError, AttributeError, NameError)):
            raise exn
        self.skipped += 1
        where = f"{raw.get('__key__')} in {raw.get('__url__')}" if raw else "a sample"
        log.warning("skipping %s: %s: %s", where, type(exn).__name__, exn)
        return True

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(raw[schema.META])
        image = decode_rgb(raw[schema.IMAGE])
        has_object = bool(meta["has_object"])
        h, w = image.shape[1:]
        mask = decode_mask(raw[schema.MASK]) if has_object else torch.zeros(1, h, w, dtype=torch.bool)
        views: dict[str, Any] = {"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask)}
        for name, field_name in self.fields.names(self.epoch).items():
            extra = decode_rgb(raw[field_name]) if has_object and field_name in raw else torch.zeros_like(image)
            views[name] = tv_tensors.Image(extra)
        views = self.transform(views)
        return {
            "key": raw["__key__"],
            "label": int(raw[schema.LABEL]),
            "group": -1 if meta.get("group") is None else int(meta["group"]),
            "has_object": has_object,
            "mask": views.pop("mask").as_subclass(torch.Tensor).float(),
            "image": to_input(views.pop("image")),
            **{name: to_input(v) for name, v in views.items()},
        }


def to_input(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]: normalise with mean = std = 0.5 (SPEC section 3)."""
    return image.as_subclass(torch.Tensor).float().div(127.5).sub(1.0)


def loader(stream: ShardStream, batch_size: int, workers: int, drop_last: bool) -> DataLoader:
    return DataLoader(
        stream, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(),
        drop_last=drop_last, persistent_workers=False,
    )  # fmt: skip


def read_manifest(root: Path, verify: bool = False) -> dict[str, Any]:
    """The build's manifest; with ``verify``, every shard's checksum and sample is checked first."""
    manifest = schema.read_manifest(Path(root))
    if verify:
        from augment.verify import verify as run_verify

        problems, _ = run_verify(Path(root), progress=False)
        if problems:
            raise ValueError(f"{root}: {len(problems)} problem(s), first: {problems[0]}")
    return manifest
