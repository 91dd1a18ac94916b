"""Benchmark: CAGAN inpainting throughput at 256 x 256, batch 1 against batched, measured side by side.

The official-width generator (cnum 32, 3.6M parameters; the weights' values do not change the speed) inpaints
a 128 x 128 hole. Each batch size runs in this process after a warm-up, best of R. On CPU it reports images/s
and the speed-up of batching; with CUDA it reports the same with bf16 autocast, plus peak GPU memory. The
last column is the whole per-image path (uint8 RGB in, resize, inpaint, paste, uint8 out) at that batch size.

    make bench            # or: .venv/bin/python bench/cagan.py --batch-sizes 1 32 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from augment.cagan.inpaint import Inpainter
from augment.cagan.net import Generator

SIZE = 256


def rate(fn, images: int, repeats: int) -> float:
    """Images per second of ``fn`` (one warm-up call, then best of ``repeats``)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return images / best


def run(device: torch.device, batch_sizes: list[int], repeats: int) -> None:
    torch.manual_seed(0)
    model = Generator(32).to(device, memory_format=torch.channels_last).eval()  # as the Inpainter runs it
    amp = device.type == "cuda"
    rng = np.random.default_rng(0)
    print(f"\n{device.type.upper()}{' (bf16 autocast)' if amp else ''}, threads {torch.get_num_threads()}")
    print(f"{'batch':>5} {'img/s':>8} {'speed-up':>9} {'ms/img':>8} {'peak MiB':>9} {'end-to-end img/s':>17}")
    base = None
    for batch in batch_sizes:
        x = (torch.rand(batch, 3, SIZE, SIZE, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
        m = torch.zeros(batch, 1, SIZE, SIZE, device=device)
        m[..., 64:192, 64:192] = 1
        m = m.contiguous(memory_format=torch.channels_last)

        def forward(x=x, m=m) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                model(x, m)
            if amp:
                torch.cuda.synchronize()

        if amp:
            torch.cuda.reset_peak_memory_stats()
        ips = rate(forward, batch, repeats)
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:>9.0f}" if amp else f"{'-':>9}"
        images = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(batch)]
        holes = [np.zeros((SIZE, SIZE), bool) for _ in range(batch)]
        for hole in holes:
            hole[64:192, 64:192] = True
        inpainter = Inpainter(model, size=SIZE, batch_size=batch, device=device, amp=amp)
        e2e = rate(lambda images=images, holes=holes, inp=inpainter: inp(images, holes), batch, repeats)
        base = base or ips
        print(f"{batch:>5} {ips:>8.2f} {ips / base:>8.2f}x {1000 / ips:>8.1f} {peak} {e2e:>17.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=2, help="best of R (after one warm-up)")
    parser.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True, help="measure on CPU")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 2, 1 repeat: checks that it runs")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.repeats = [1, 2], 1
    print(f"\n[cagan] CAGAN generator (cnum 32) at {SIZE}x{SIZE}, 128x128 hole")
    if args.cpu:
        run(torch.device("cpu"), args.batch_sizes, args.repeats)
    if torch.cuda.is_available():
        run(torch.device("cuda"), sorted({*args.batch_sizes, 64}), max(args.repeats, 3))
    else:
        print("\nno CUDA device here: GPU rows skipped")


if __name__ == "__main__":
    main()
