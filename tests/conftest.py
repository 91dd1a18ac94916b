"""Shared fixtures: tiny images and holes, and a dataset whose pixels say which sample they are."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from augment.datasets import DATASETS, Ref, Sample, SplitPlan, register


def make_image(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def rect_hole(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    hole = np.zeros((h, w), dtype=bool)
    hole[y0:y1, x0:x1] = True
    return hole


def tiled_background(image: np.ndarray, hole: np.ndarray) -> np.ndarray | None:
    """Tile's definition written plainly (docs/METHOD.md, Infills), the oracle of the tests: the H x W tiling, with
    ``np.tile``, of the largest background strip; None when no row or column is background."""
    from augment.infill.tile import longest_run

    height, width = hole.shape
    row0, h = longest_run(~hole.any(axis=1))
    col0, w = longest_run(~hole.any(axis=0))
    if h == 0 and w == 0:
        return None
    if h >= w:
        return np.tile(image[row0 : row0 + h], (-(-height // h), 1, 1))[:height]
    return np.tile(image[:, col0 : col0 + w], (1, -(-width // w), 1))[:, :width]


def tiny_inpainter(size: int = 16):
    """A CAGAN inpainter with a seeded, untrained narrow generator: for properties, not for looks."""
    import torch

    from augment.cagan.inpaint import Inpainter
    from augment.cagan.net import Generator

    torch.manual_seed(0)
    return Inpainter(Generator(cnum=4), size=size, batch_size=4)


def warmed_model(arch: str, num_classes: int, size: int, batches: int):
    """A seeded zoo model in train mode, every parameter nudged (timm zero-initialises some heads: every logit then
    depends on the image) and its BatchNorm running statistics moved by ``batches`` random batches, as after some
    training rather than the initial 0 / 1."""
    import torch

    from augment.contract.zoo.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes, from_checkpoint=True, input_size=size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.train()
        for _ in range(batches):
            model(torch.rand(8, 3, size, size) * 2 - 1)
    return model


def method_kwargs(method, h: int = 12, w: int = 16) -> dict:
    """What the build passes to a method besides (image, hole, rng): a donor, a value pool, a background of the bank
    (larger than the image and of another aspect, cropped off the corner) or a loaded model."""
    from augment.infill.bank import Background
    from augment.infill.mixed_rand import Donor
    from augment.pool import make_pool

    if method.needs_pool:  # the split's pool: here, three other images
        return {"pool": make_pool(0, [(f"k{i}", make_image(h, w, seed=50 + i)) for i in range(3)])}
    if method.needs_donor:
        return {"donor": Donor(make_image(h, w, seed=99), rect_hole(h, w, 2, 6, 3, 9))}
    if method.needs_background:
        return {"background": Background(make_image(2 * h, 3 * w, seed=98), (1, 0))}
    if method.needs_model:
        return {"inpainter": tiny_inpainter()}
    return {}


@pytest.fixture
def image() -> np.ndarray:
    return make_image()


def index_value(index: int) -> int:
    """The grey level that encodes a sample's index in the indexed dataset (distinct for index < 24)."""
    return 20 + 10 * index


@dataclass(frozen=True)
class Indexed:
    """``n`` samples per split, flat grey images of value ``index_value(i)`` with a white square object.

    Every fourth sample has no annotation (no mask, no boxes), to exercise the plain-CE path.
    """

    n: int = 11
    seed: int = 0
    image_size: int = 24
    fail_at: int = -1  # load() of this index raises OSError, in whichever process runs it
    die_at: int = -1  # load() of this index ends its process at once, as the OOM killer would (use with workers)

    name = "indexed"
    classes = ("a", "b", "c")
    default_image_size = 24

    def splits(self) -> dict[str, SplitPlan]:
        return {
            "train": SplitPlan(tuple(Ref(f"train_{i:04d}", i % 3, i % 4 != 3) for i in range(self.n)), augment=True),
            "test": SplitPlan(tuple(Ref(f"test_{i:04d}", i % 3, i % 4 != 3) for i in range(self.n)), augment=False),
        }

    def load(self, split: str, index: int) -> Sample:
        if index == self.fail_at:
            raise OSError("disk on fire")
        if index == self.die_at:
            os._exit(9)
        s = self.image_size
        image = np.full((s, s, 3), index_value(index), dtype=np.uint8)
        mask = None
        if index % 4 != 3:
            mask = np.zeros((s, s), dtype=bool)
            mask[4:10, 6:12] = True
            image[mask] = 250
        key = f"{split}_{index:04d}"
        return Sample(key, image, index % 3, self.classes[index % 3], split, f"indexed:{index}", mask=mask, group=index)

    def fingerprint(self) -> str:
        return f"indexed-{self.n}-{self.seed}"

    def describe(self) -> dict:
        return {"n": self.n}


if "indexed" not in DATASETS:
    register("indexed", "test fixture: flat images whose grey level encodes the index")(
        lambda *, seed=0, image_size=None, n=11, fail_at=-1, die_at=-1, **_: Indexed(
            n, seed, image_size or 24, fail_at, die_at
        )
    )
