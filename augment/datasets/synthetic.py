"""The embedded dataset ``synthetic``: shapes on textured backgrounds, with a controllable spurious correlation.

Why it exists: the whole pipeline (build, train, study) has to run, and show the method's effect, without
downloading anything, and the strength of the shortcut has to be a knob (``bias``). Five classes of shape (circle,
square, triangle, cross, star: the causal signal) are drawn with a random, class-independent colour, size, position
and rotation on one of five background families (the spurious signal). A family is a spatial texture (stripes,
columns, checker, dots, waves) and nothing else: its hue is random, each family is two-tone with half its area in
the darker tone, so all families share one colour histogram, and the two tones are close, so that the texture is
easy to learn but a weaker cue than the object's outline, as a background usually is in a photograph. Only the
arrangement of the background tells the families apart, which is what CF and F images take away.

- ``train`` and ``val``: class c sits on background family c with probability ``bias`` (default 0.9), else on a
  uniformly chosen other family. Only ``train`` gets CF/F images; ``val`` is for model selection on originals.
- Test splits, built like IN-9's: the *same* object (shape, colour, pose) for index i in every variant, on
  ``original`` (family c), ``mixed_same`` (another instance of family c), ``mixed_rand`` (a random family other
  than c) and ``mixed_next`` (family c + 1 mod 5).
- ``group`` = ``label * 5 + background family``, a Waterbirds-like (class, background) group.

Every sample is generated from ``default_rng([seed, split, index, part])``, so any sample can be produced on its
own, in any order, in any process.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import cv2
import numpy as np

from augment.datasets import Flag, Ref, Sample, SplitPlan, register
from augment.masks import mask_to_box

GENERATOR_VERSION = 4  # bump whenever the pixels for the same parameters change
SHAPES = ("circle", "square", "triangle", "cross", "star")
BACKGROUNDS = ("stripes", "columns", "checker", "dots", "waves")
TEST_VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next")
# What the evaluation pairs up (recorded in the manifest): BG-gap = acc(mixed_same) - acc(mixed_rand); background
# reliance compares original with mixed_next, whose background belongs to class (label + 1) mod K.
EVALUATION = {
    "bg_gap": {"same": "mixed_same", "rand": "mixed_rand"},
    "background_reliance": {"original": "original", "shifted": "mixed_next", "background_class": "label + 1 mod K"},
}
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
# Every family is a two-tone pattern with half its area dark (a dot of radius r covers pi r^2 = half a cell), so
# the families share one colour histogram: only the spatial arrangement tells them apart, and F(shuffle), which
# keeps the histogram and destroys the arrangement, removes the cue entirely.
DOT_RADIUS = float(np.sqrt(0.5 / np.pi))
_BG_PART = {"train": 1, "val": 1, "original": 1, "mixed_same": 2, "mixed_rand": 3, "mixed_next": 4}


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def background(family: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float [size, size, 3] texture of ``family`` in [0, 1]: its pattern in a random hue, phase and scale."""
    hue = rng.uniform()  # any hue: a family is told apart by its texture, not by a single colour
    # low contrast (value 0.62-0.78 against 0.42-0.58): the texture is there to be learnt, but it is a subtler cue
    # than the object's outline, as backgrounds are in photographs
    light = _rgb(hue, rng.uniform(0.45, 0.75), rng.uniform(0.62, 0.78))
    dark = _rgb(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.5, 0.9), rng.uniform(0.42, 0.58))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(0.1, 0.22) * size
    phase = rng.uniform(0, 2 * np.pi)
    kind = BACKGROUNDS[family % len(BACKGROUNDS)]
    if kind == "stripes":
        p = (np.sin(2 * np.pi * y / period + phase) > 0).astype(np.float64)
    elif kind == "columns":
        p = (np.sin(2 * np.pi * x / period + phase) > 0).astype(np.float64)
    elif kind == "checker":
        off = rng.uniform(0, period, size=2)
        p = ((np.floor((x + off[0]) / period) + np.floor((y + off[1]) / period)) % 2).astype(np.float64)
    elif kind == "dots":
        off = rng.uniform(0, period, size=2)
        dx = (x + off[0]) % period - period / 2
        dy = (y + off[1]) % period - period / 2
        p = (np.hypot(dx, dy) < period * DOT_RADIUS).astype(np.float64)
    else:  # waves: stripes at a random angle that wobble along their length
        theta = rng.uniform(0, np.pi)
        u, v = x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)
        p = (np.sin(2 * np.pi * u / period + phase + 2.0 * np.sin(2 * np.pi * v / (2.5 * period))) > 0).astype(float)
    img = light * (1 - p[..., None]) + dark * p[..., None]
    return img + rng.normal(0, 0.03, size=img.shape)


def shape_mask(label: int, size: int, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """A bool [size, size] mask of shape ``label`` with random size, centre and rotation, fully inside the image."""
    radius = rng.uniform(*scale) * size / 2
    cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
    theta = rng.uniform(0, 2 * np.pi)
    canvas = np.zeros((size, size), dtype=np.uint8)
    kind = SHAPES[label]
    if kind == "circle":
        cv2.circle(canvas, (round(cx), round(cy)), round(radius), 1, thickness=-1, lineType=cv2.LINE_8)
        return canvas.astype(bool)
    if kind == "square":
        angles, radii = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, radius)
    elif kind == "triangle":
        angles, radii = np.arange(3) * 2 * np.pi / 3, np.full(3, radius)
    elif kind == "cross":  # a plus sign: 12 corners
        w = 0.33
        pts = np.array(
            [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        )
        angles, radii = np.arctan2(pts[:, 1], pts[:, 0]), np.hypot(pts[:, 0], pts[:, 1]) * radius / np.sqrt(2) * 1.2
    else:  # star: 5 points
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    poly = np.stack([cx + radii * np.cos(angles + theta), cy + radii * np.sin(angles + theta)], axis=1)
    cv2.fillPoly(canvas, [np.rint(poly).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


@dataclass(frozen=True)
class Synthetic:
    """Shapes on textured backgrounds; see the module docstring."""

    size: int = 2000  # training images; val and each test split get size // 5
    bias: float = 0.9
    seed: int = 0
    image_size: int = 64
    object_scale: tuple[float, float] = (0.5, 0.8)  # object diameter as a fraction of the image side

    name = "synthetic"
    classes = SHAPES
    shifted_splits = TEST_VARIANTS[1:]  # backgrounds changed already: no base of --shifted-tests
    default_image_size = 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.bias <= 1.0:
            raise ValueError(f"--bias: got {self.bias}, expected a probability in [0, 1]")
        if self.size < 1:
            raise ValueError(f"--size: got {self.size}, expected at least 1 training image")
        if self.image_size < 16:
            raise ValueError(f"--image-size: got {self.image_size}, expected at least 16 for synthetic")

    def split_sizes(self) -> dict[str, int]:
        small = max(self.size // 5, len(SHAPES))
        return {"train": self.size, "val": small, **{v: small for v in TEST_VARIANTS}}

    def splits(self) -> dict[str, SplitPlan]:
        k = len(SHAPES)
        return {
            split: SplitPlan(tuple(Ref(f"{split}_{i:06d}", i % k) for i in range(n)), augment=split == "train")
            for split, n in self.split_sizes().items()
        }

    def _family(self, split: str, index: int, label: int) -> int:
        k = len(BACKGROUNDS)
        if split in ("train", "val"):
            rng = np.random.default_rng([self.seed, _SPLIT_CODE[split], index, 9])
            if rng.random() < self.bias:
                return label
            return (label + 1 + int(rng.integers(k - 1))) % k
        if split in ("original", "mixed_same"):
            return label
        if split == "mixed_next":
            return (label + 1) % k
        rng = np.random.default_rng([self.seed, _SPLIT_CODE["test"], index, 9])  # mixed_rand: another family
        return (label + 1 + int(rng.integers(k - 1))) % k

    def load(self, split: str, index: int) -> Sample:
        label = index % len(SHAPES)
        family = self._family(split, index, label)
        code = _SPLIT_CODE.get(split, _SPLIT_CODE["test"])  # all test variants share the object of index i
        obj_rng = np.random.default_rng([self.seed, code, index, 0])
        bg_rng = np.random.default_rng([self.seed, code, index, _BG_PART[split]])
        n = self.image_size
        mask = shape_mask(label, n, obj_rng, self.object_scale)
        colour = _rgb(obj_rng.uniform(), obj_rng.uniform(0.3, 1.0), obj_rng.uniform(0.35, 1.0))
        shading = obj_rng.normal(0, 0.04, size=(n, n, 3))
        img = background(family, n, bg_rng)
        img = np.where(mask[..., None], colour + shading, img)
        image = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
        return Sample(
            key=f"{split}_{index:06d}",
            image=image,
            label=label,
            class_name=SHAPES[label],
            split=split,
            source=f"synthetic:v{GENERATOR_VERSION}:seed={self.seed}:{split}:{index}",
            mask=mask,
            boxes=mask_to_box(mask)[None],
            group=label * len(BACKGROUNDS) + family,
            meta={"background": family, "background_name": BACKGROUNDS[family]},
            object_id=str(index),  # every test variant of index i shows the same object
        )

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "generator_version": GENERATOR_VERSION,
            "split_sizes": self.split_sizes(),
            "evaluation": EVALUATION,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()


SIZE = Flag(f"synthetic: training images (val and each test split get 1/5) [default: {Synthetic.size}].", int, min=1)
BIAS = Flag(
    f"synthetic: P(class c on background family c) in train/val [default: {Synthetic.bias}].", float, min=0.0, max=1.0
)


@register("synthetic", "embedded: 5 shapes on 5 background families with a tunable spurious correlation (--bias)")
def make_synthetic(
    *,
    seed: int = 0,
    image_size: int | None = None,
    on_error: str = "fail",
    size: Annotated[int | None, SIZE] = None,
    bias: Annotated[float | None, BIAS] = None,
) -> Synthetic:
    """``on_error`` is accepted for a uniform interface; generated samples have no bad inputs."""
    return Synthetic(
        size=Synthetic.size if size is None else size,
        bias=Synthetic.bias if bias is None else bias,
        seed=seed,
        image_size=Synthetic.default_image_size if image_size is None else image_size,
    )
