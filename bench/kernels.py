"""Benchmark 2: our infill kernels against the paper's public implementation style, on the same images.

The paper's code fills a whole *batch* of normalised float tensors (N, 3, H, W) during training, with a mask where
1 means "keep". We reimplement that style here, in this file only, as the baseline (from the description of the
official code; none of it is copied):

- ``grey_paper``: one tensor multiply, ``x * keep`` (grey is 0 on the normalised scale);
- ``random_paper``: a uniform colour per image and channel plus Gaussian noise (sigma 0.2 on [0, 1]) over the whole
  batch, clamped, then the blend ``x * keep + fill * (1 - keep)``;
- ``shuffle_paper``: ``torch.randperm`` over the batch's values (an image's hole receives values of other images),
  then the blend;
- ``tile_paper``: for each image, a Python loop over its rows and then its columns to find the longest run of
  background lines, and a Python loop over tile positions to repeat the strip, then the blend;
- ``mixed_rand_paper``: every image of the batch tiled as ``tile_paper`` does, then each image blended with the
  tiled background of a donor of another class from the batch.

Ours is ``augment.infill.INFILLS[name].fill(image, hole, rng)``, one uint8 image at a time with its own seeded
generator (``augment.rng.sample_rng``), as ``augment build`` calls it; our shuffle draws from the value pool of the
batch's images (``augment.pool``), made once, untimed, as a build worker makes it once per split, and our mixed-rand
gets its donor (image and object rectangle) ready, as the build loads it. Each side gets its inputs in its own
format, prepared untimed (uint8 HWC + bool hole for ours, a float batch + float keep-mask for the baseline).

The images: ``--images`` (32) random crops of scikit-image's sample photographs at ``--size`` (224), each with an
object box covering 20-60% of the image (one in four touching the border) and an elliptic object inside it. Both
sides run on one thread (``torch.set_num_threads(1)``), as one build worker does; the sides alternate R times and
the figures are medians. Sanity checks, not timed: both sides give outputs of the same shape, ours leaves every
pixel outside the hole unchanged, and for tile how many images the two sides fill identically (they follow the
same rule; they differ only where an image has no background line: the paper's style fills zeros).

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
from augment.infill import CF, INFILLS, F
from augment.infill.mixed_rand import Donor
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


def tiled_paper(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Every image's tiled background, the paper's way (per image in Python); zeros without a background line."""
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
    return torch.stack(backgrounds)


def tile_paper(x: torch.Tensor, keep: torch.Tensor, **_) -> torch.Tensor:
    """Tile, the paper's way: per image in Python; ``keep`` is 1 on the background, (N, 1, H, W)."""
    return x * keep + tiled_paper(x, keep) * (1.0 - keep)


def grey_paper(x: torch.Tensor, keep: torch.Tensor, **_) -> torch.Tensor:
    """Grey, the paper's way: one multiply of the normalised batch (grey is 0 there)."""
    return x * keep


def random_paper(x: torch.Tensor, keep: torch.Tensor, **_) -> torch.Tensor:
    """Random, the paper's way: a uniform colour per image plus noise over the whole batch, then the blend."""
    colour = torch.rand(x.shape[0], 3, 1, 1) * 2 - 1
    fill = (colour + torch.randn_like(x) * (2 * 0.2)).clamp_(-1, 1)  # sigma 0.2 on [0, 1] is 0.4 on [-1, 1]
    return x * keep + fill * (1.0 - keep)


def shuffle_paper(x: torch.Tensor, keep: torch.Tensor, **_) -> torch.Tensor:
    """Shuffle, the paper's way: one permutation of every value of the whole batch."""
    perm = torch.randperm(x.numel())
    return x * keep + x.reshape(-1)[perm].reshape(x.shape) * (1.0 - keep)


def mixed_rand_paper(
    x: torch.Tensor, keep: torch.Tensor, *, rect_keep: torch.Tensor, donors: torch.Tensor
) -> torch.Tensor:
    """Mixed-rand, the paper's way: tile every image's object rectangle, then blend each image (object kept) with
    the tiled background of its donor (``donors[i]``: an image of another class in the batch)."""
    tiled = x * rect_keep + tiled_paper(x, rect_keep) * (1.0 - rect_keep)
    return x * keep + tiled[donors] * (1.0 - keep)


BASELINES = {
    "grey": grey_paper,
    "random": random_paper,
    "shuffle": shuffle_paper,
    "tile": tile_paper,
    "mixed-rand": mixed_rand_paper,
}
CASES = ((CF, "grey"), (CF, "random"), (CF, "shuffle"), (CF, "tile"), (F, "random"), (F, "shuffle"), (F, "mixed-rand"))


def inputs(n: int, size: int) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], np.ndarray]:
    """``n`` crops of scikit-image's photographs (uint8 HWC) with their CF holes (object boxes of 20-60% of the image,
    one in four touching the border) and F holes (outside an ellipse inscribed in the box), and a label per image."""
    import cv2
    from photos import load_photos

    photos, rng = load_photos(), np.random.default_rng(0)
    images, holes = [], {CF: [], F: []}
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(min(photo.shape[:2]) * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        images.append(cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA))
        area, aspect = rng.uniform(0.2, 0.6) * size * size, rng.uniform(0.6, 1.6)
        h, w = min(size, int(np.sqrt(area * aspect))), min(size, int(np.sqrt(area / aspect)))
        y0, x0 = (0, 0) if i % 4 == 0 else (rng.integers(0, size - h + 1), rng.integers(0, size - w + 1))
        box = np.array([[x0, y0, x0 + w, y0 + h]])
        yy, xx = np.mgrid[:size, :size]
        ellipse = ((yy - (y0 + h / 2)) / (h / 2)) ** 2 + ((xx - (x0 + w / 2)) / (w / 2)) ** 2 <= 1
        holes[CF].append(masks.cf_hole(None, box, (size, size)))
        holes[F].append(masks.f_hole(ellipse, box, (size, size)))
    return images, holes, np.arange(n) % 5


def donor_of(labels: np.ndarray) -> np.ndarray:
    """For each image, the next image of the batch (cyclically) with another label: its mixed-rand donor."""
    n = len(labels)
    return np.array([next(j % n for j in range(i + 1, i + n) if labels[j % n] != labels[i]) for i in range(n)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image size (IN-9 trains at 224)")
    parser.add_argument("--repeats", type=int, default=7, help="median over R alternating runs")
    parser.add_argument("--quick", action="store_true", help="8 images of 64 px, 1 repeat: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.size, args.repeats = 8, 64, 1
    torch.set_num_threads(1)
    other = OtherLoad()
    images, holes, labels = inputs(args.images, args.size)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # normalised, [-1, 1]
    values = make_pool(0, [(f"key{i}", image) for i, image in enumerate(images)])
    donors = donor_of(labels)
    rect_keep = torch.from_numpy(~np.stack(holes[CF]))[:, None].float()
    print(
        f"\n[2] infill kernels: {args.images} photo crops {args.size}x{args.size}, boxes 20-60% of the image, one "
        f"thread, median of {args.repeats}; paper style = whole-batch tensor ops, per-image Python loops for "
        "tile"
    )
    print(f"{'role':<4} {'method':<10} {'ours img/s':>11} {'paper img/s':>12} {'ours/paper':>11}  checks")
    for role, name in CASES:
        fill, baseline = INFILLS[name].fill, BASELINES[name]
        hole = holes[role]
        keep = torch.from_numpy(~np.stack(hole))[:, None].float()
        extra: list[dict] = [{} for _ in images]
        if INFILLS[name].needs_pool:
            extra = [{"pool": values} for _ in images]
        if INFILLS[name].needs_donor:  # loaded, as the build hands it over
            extra = [{"donor": Donor(images[d], holes[CF][d])} for d in donors]
        paper_kwargs = {"rect_keep": rect_keep, "donors": torch.from_numpy(donors)} if name == "mixed-rand" else {}

        def ours(hole=hole, fill=fill, name=name, role=role, extra=extra) -> list[np.ndarray]:
            pairs = enumerate(zip(images, hole, extra, strict=True))
            return [fill(image, h, sample_rng(0, f"key{i}", role, name, 0), **kw) for i, (image, h, kw) in pairs]

        def paper(baseline=baseline, keep=keep, kwargs=paper_kwargs) -> torch.Tensor:
            return baseline(x, keep, **kwargs)

        ours(), paper()  # warm-up
        t_ours, t_paper = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            mine = ours()
            t_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = paper()
            t_paper.append(time.perf_counter() - start)
        ips_ours, ips_paper = args.images / np.median(t_ours), args.images / np.median(t_paper)
        mine_arr = np.stack(mine)
        theirs_u8 = theirs.add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        same_shape = mine_arr.shape == theirs_u8.shape
        kept = all(np.array_equal(o[~h], im[~h]) for o, im, h in zip(mine, images, hole, strict=True))
        checks = f"shape {'same' if same_shape else 'DIFFERS'}, outside hole {'unchanged' if kept else 'CHANGED'}"
        if name in ("tile", "grey", "mixed-rand"):  # deterministic given the inputs: the two sides should agree
            identical = sum(np.array_equal(a, b) for a, b in zip(mine_arr, theirs_u8, strict=True))
            checks += f", identical fills {identical}/{args.images}"
        print(f"{role:<4} {name:<10} {ips_ours:>11.1f} {ips_paper:>12.1f} {ips_ours / ips_paper:>10.2f}x  {checks}")
        if not (same_shape and kept):
            raise SystemExit("kernel sanity check failed")
    print(other.line())


if __name__ == "__main__":
    main()
