"""Benchmark: `augment build` throughput per infill method against a bare pass, measured side by side.

For every registered heuristic method, one build of N source JPEGs (decode, resize, mask, infill, encode, write)
is timed against a *bare* build that decodes, resizes and encodes the same outputs with no infill: the method's
outputs are recorded once, untimed, and the bare build's fill replays them. The difference is what the infill
itself costs (for mixed-rand that includes loading the donor). Both run in this process, on one core
(workers=1), alternating, best of R. Prints images/s and the overhead; the goal is at most 25% over bare.

    make bench            # or: .venv/bin/python bench/build.py --images 200 --size 256
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from augment import infill
from augment.build import BuildConfig, build
from augment.datasets import DATASETS, Ref, Sample, SplitPlan, get_dataset, register
from augment.encode import encode_jpeg, encode_mask

REPLAY: list[np.ndarray] = []  # outputs of the method under test, in build order (workers=1 keeps the order)


@infill.register("bare", roles=(infill.CF, infill.F), stochastic=False, summary="benchmark: replays recorded outputs")
def bare(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return REPLAY.pop()


def record(work: Path, role: str, name: str, n: int, size: int, root: Path) -> None:
    """Run one untimed build of ``name`` and keep its outputs for the bare build to replay."""
    method = infill.INFILLS[name]
    outputs = []

    def recording(*args, **kwargs):
        outputs.append(method.fill(*args, **kwargs))
        return outputs[-1]

    infill.INFILLS[name] = dataclasses.replace(method, fill=recording)
    try:
        time_build(work, role, name, n, size, root)
    finally:
        infill.INFILLS[name] = method
    REPLAY[:] = outputs[::-1]


@dataclass(frozen=True)
class JpegFolder:
    """N source JPEGs (and PNG masks) at a larger size, decoded and resized like a real dataset adapter would."""

    root: str
    n: int
    image_size: int
    seed: int = 0

    name = "bench-jpegs"
    classes = ("circle", "square", "triangle", "cross", "star")
    default_image_size = 256

    def splits(self) -> dict[str, SplitPlan]:
        return {"train": SplitPlan(tuple(Ref(f"img_{i:06d}", i % 5) for i in range(self.n)), augment=True)}

    def load(self, split: str, index: int) -> Sample:
        root, size = Path(self.root), (self.image_size, self.image_size)
        with Image.open(root / f"{index}.jpg") as img:
            image = np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR))
        with Image.open(root / f"{index}.png") as m:
            mask = np.asarray(m.resize(size, Image.Resampling.NEAREST)) > 0
        return Sample(f"img_{index:06d}", image, index % 5, self.classes[index % 5], split, f"{index}.jpg", mask=mask)

    def fingerprint(self) -> str:
        return "bench"

    def describe(self) -> dict:
        return {"n": self.n}


SOURCE_W, SOURCE_H = 500, 375  # a typical ImageNet / IN-9 JPEG


def make_sources(root: Path, n: int) -> None:
    """N synthetic images written as 500x375 JPEG + PNG mask: the decode and resize work of a real dataset."""
    data = get_dataset("synthetic", size=n, image_size=SOURCE_W)
    top = (SOURCE_W - SOURCE_H) // 2
    for i in range(n):
        sample = data.load("train", i)
        (root / f"{i}.jpg").write_bytes(encode_jpeg(sample.image[top : top + SOURCE_H]))
        (root / f"{i}.png").write_bytes(encode_mask(sample.mask[top : top + SOURCE_H]))


def time_build(work: Path, role: str, method: str, n: int, size: int, root: Path) -> float:
    out = work / f"{role}-{method}"
    config = BuildConfig(
        dataset="bench-jpegs",
        infill=[method] if role == infill.CF else [],
        factual=[method] if role == infill.F else [],
        image_size=size,
        dataset_options={"root": str(root), "n": n},
    )
    start = time.perf_counter()
    build(out, config, workers=1, overwrite=True, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="source images per build")
    parser.add_argument("--size", type=int, default=256, help="stored image size (squashed from 500x375 sources)")
    parser.add_argument("--repeats", type=int, default=3, help="best of R")
    args = parser.parse_args()
    if "bench-jpegs" not in DATASETS:
        register("bench-jpegs", "benchmark sources")(
            lambda *, root, n, seed=0, image_size=None, **_: JpegFolder(root, n, image_size or 256, seed)
        )
    work = Path(tempfile.mkdtemp(prefix="augment-bench-"))
    try:
        root = work / "src"
        root.mkdir()
        make_sources(root, args.images)
        print(f"augment build, {args.images} JPEGs {SOURCE_W}x{SOURCE_H} -> {args.size}px, 1 worker, best of "
              f"{args.repeats}; bare = same decode/resize/encode/write of the same outputs, no infill")  # fmt: skip
        print(f"{'role':<4} {'method':<11} {'img/s':>8} {'bare img/s':>11} {'overhead':>9}  goal <= 25%")
        cases = [(r, n) for n, m in infill.INFILLS.items() if n != "bare" and not m.needs_model  # cagan: bench/cagan.py
                 for r in infill.ROLES if r in m.roles]  # fmt: skip
        worst = 0.0
        for role, name in cases:
            t_method, t_bare = [], []
            for _ in range(args.repeats):  # alternate so that drift hits both equally
                record(work, role, name, args.images, args.size, root)
                t_method.append(time_build(work, role, name, args.images, args.size, root))
                t_bare.append(time_build(work, role, "bare", args.images, args.size, root))
                assert not REPLAY, "the bare build did not replay every recorded output"
            overhead = min(t_method) / min(t_bare) - 1
            worst = max(worst, overhead)
            ok = "ok" if overhead <= 0.25 else "OVER"
            print(f"{role:<4} {name:<11} {args.images / min(t_method):>8.1f} {args.images / min(t_bare):>11.1f}"
                  f" {overhead:>8.1%}  {ok}")  # fmt: skip
        print(f"worst overhead: {worst:.1%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
