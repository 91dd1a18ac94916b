"""Benchmark 2: our infill kernels against the paper's public implementation style, on the same images.

The paper's code fills a whole *batch* of float tensors (N, 3, H, W) during training, with a mask where 1 means
"keep". Its tile loops over the images in Python and finds each image's longest background run with
Python-level loops; its shuffle draws one permutation over every value of the whole batch (so an image's hole
receives values of other images). We reimplement that style here, in this file only, as the baseline:

- ``tile_paper``: for each image, a Python loop over its rows and then its columns to find the longest run of
  background lines, and a Python loop over tile positions to repeat the strip, then ``x * keep + bg * (1 - keep)``;
- ``shuffle_paper``: ``torch.randperm`` over the batch's values, then the same blend.

Ours is ``augment.infill.INFILLS[name].fill(image, hole, rng)``, one uint8 image at a time with its own seeded
generator (``augment.rng.sample_rng``), as ``augment build`` calls it; our shuffle draws from the value pool of the
batch's images (``augment.pool``), made once, untimed, as a build worker makes it once per split. Each side gets
its inputs in its own format, prepared untimed (uint8 HWC + bool hole for ours, a float batch + float keep-mask for
the baseline). Both run on one thread (``torch.set_num_threads(1)``), as one build worker does; the sides alternate
R times and the figures are medians. Sanity checks, not timed: both sides give outputs of the same shape, ours leaves
every pixel outside the hole unchanged, and for tile how many images the two sides fill identically (they
follow the same rule; they differ only where an image has no background line: the paper's style fills zeros).

    .venv/bin/python bench/kernels.py            # make bench
    .venv/bin/python bench/kernels.py --quick
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import OtherLoad

from augment import masks
from augment.datasets import get_dataset
from augment.infill import CF, INFILLS, F
from augment.pool import make_pool
from augment.rng import sample_rng


def longest_run_loop(flags: list[bool]) -> tuple[int, int]:
    """(start, length) of the first longest run of True, with a plain Python loop."""
    best_start, best_len, start = 0, 0, None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    return best_start, best_len


def tile_paper(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Tile, the paper's way: per image in Python; ``keep`` is 1 on the background, (N, 1, H, W)."""
    backgrounds = []
    for img, k in zip(x, keep, strict=True):
        rows = (k[0] == 1).all(dim=1).tolist()
        cols = (k[0] == 1).all(dim=0).tolist()
        (r0, h), (c0, w) = longest_run_loop(rows), longest_run_loop(cols)
        if h == 0 and w == 0:
            backgrounds.append(torch.zeros_like(img))
            continue
        strip = img[:, r0 : r0 + h, :] if h >= w else img[:, :, c0 : c0 + w]
        height, width = img.shape[1:]
        sh, sw = strip.shape[1:]
        bg = torch.empty_like(img)
        for y in range(0, height, sh):  # repeat the strip from the top-left corner
            for x0 in range(0, width, sw):
                th, tw = min(sh, height - y), min(sw, width - x0)
                bg[:, y : y + th, x0 : x0 + tw] = strip[:, :th, :tw]
        backgrounds.append(bg)
    return x * keep + torch.stack(backgrounds) * (1.0 - keep)


def shuffle_paper(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Shuffle, the paper's way: one permutation of every value of the whole batch."""
    perm = torch.randperm(x.numel())
    return x * keep + x.reshape(-1)[perm].reshape(x.shape) * (1.0 - keep)


BASELINES = {"tile": tile_paper, "shuffle": shuffle_paper}


def inputs(n: int, size: int) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """n synthetic images (uint8 HWC) and their CF holes (object rectangles) and F holes (backgrounds)."""
    data = get_dataset("synthetic", size=n, image_size=size)
    images, holes = [], {CF: [], F: []}
    for i in range(n):
        s = data.load("train", i)
        images.append(s.image)
        holes[CF].append(masks.cf_hole(s.mask, s.boxes, s.image.shape[:2]))
        holes[F].append(masks.f_hole(s.mask, s.boxes, s.image.shape[:2]))
    return images, holes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image size (IN-9 trains at 224)")
    parser.add_argument("--repeats", type=int, default=7, help="median over R alternating runs")
    parser.add_argument("--quick", action="store_true", help="8 images of 64 px, 1 repeat: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.size, args.repeats = 8, 64, 1
    torch.set_num_threads(1)
    other = OtherLoad()
    images, holes = inputs(args.images, args.size)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
    values = make_pool(0, [(f"key{i}", image) for i, image in enumerate(images)])
    print(f"\n[2] infill kernels: {args.images} images {args.size}x{args.size}, one thread, median of {args.repeats}; "
          "paper style = per-image Python loops (tile), one permutation of the whole batch (shuffle)")  # fmt: skip
    print(f"{'role':<4} {'method':<8} {'ours img/s':>11} {'paper img/s':>12} {'ours/paper':>11}  checks")
    for role, name in ((CF, "tile"), (CF, "shuffle"), (F, "shuffle")):
        fill, baseline = INFILLS[name].fill, BASELINES[name]
        hole = holes[role]
        keep = torch.from_numpy(~np.stack(hole))[:, None].float()

        extra = {"pool": values} if INFILLS[name].needs_pool else {}

        def ours(hole=hole, fill=fill, name=name, role=role, extra=extra) -> list[np.ndarray]:
            pairs = enumerate(zip(images, hole, strict=True))
            return [fill(image, h, sample_rng(0, f"key{i}", role, name, 0), **extra) for i, (image, h) in pairs]

        ours(), baseline(x, keep)  # warm-up
        t_ours, t_paper = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            mine = ours()
            t_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = baseline(x, keep)
            t_paper.append(time.perf_counter() - start)
        ips_ours, ips_paper = args.images / np.median(t_ours), args.images / np.median(t_paper)
        mine_arr = np.stack(mine)
        theirs_u8 = theirs.mul(255.0).round().byte().permute(0, 2, 3, 1).numpy()
        same_shape = mine_arr.shape == theirs_u8.shape
        kept = all(np.array_equal(o[~h], im[~h]) for o, im, h in zip(mine, images, hole, strict=True))
        checks = f"shape {'same' if same_shape else 'DIFFERS'}, outside hole {'unchanged' if kept else 'CHANGED'}"
        if name == "tile":
            identical = sum(np.array_equal(a, b) for a, b in zip(mine_arr, theirs_u8, strict=True))
            checks += f", identical fills {identical}/{args.images}"
        print(f"{role:<4} {name:<8} {ips_ours:>11.1f} {ips_paper:>12.1f} {ips_ours / ips_paper:>10.2f}x  {checks}")
        if not (same_shape and kept):
            raise SystemExit("kernel sanity check failed")
    print(other.line())


if __name__ == "__main__":
    main()
