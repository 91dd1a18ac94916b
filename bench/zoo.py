"""Benchmark 8: torchvision's ResNet-50 against timm's on the CPU (issue #31), the two ``train fit --arch resnet50``
and ``--arch resnet50.a1_in1k`` build.

Both are built by ``augment.contract.zoo.models.build_model`` as the trainer builds them (random initialisation, 9
classes, ImageNet's normalisation in the first convolution's pre-hook) and measured in this one process, at one
``torch.set_num_threads`` (2 by default, the machine's cores):

- **train step**: forward, cross-entropy, backward and an SGD step (momentum 0.9, as the presets) on a batch of
  ``--batch`` images at ``--size`` px in train mode, images per second;
- **eval forward**: the forward of the same batch in eval mode under ``torch.no_grad``, images per second.

Within each round each model runs its steps, then its forwards, in a rotated order, so that load from other jobs
hits both alike. After a warm-up step and forward of each, every step and forward is timed on its own; the table
gives the median and the best over all of them: two intra-op threads stall whenever another job takes a core, which
moves the medians of a shared machine far more than the best. The ratios are timm's img/s over torchvision's.

    .venv/bin/python bench/zoo.py            # make bench
    .venv/bin/python bench/zoo.py --quick    # 64 px, batch 2, one round: checks that it runs
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
import torch.nn.functional as F
from common import OtherLoad, machine, median

from augment.contract.zoo.models import build_model

MODELS = {"torchvision resnet50": "resnet50", "timm resnet50": "resnet50.a1_in1k"}
CLASSES = 9  # IN-9's


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed(fn, steps: int) -> list[float]:
    """The seconds of each of ``steps`` calls of ``fn``."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="image side, px (train fit's crop)")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every model's steps and forwards")
    parser.add_argument("--steps", type=int, default=2, help="train steps and eval forwards per model and round")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="64 px, batch 2, one round: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.rounds, args.steps = 64, 2, 1, 1
    torch.set_num_threads(args.threads)
    logging.getLogger("augment.contract.zoo").setLevel(logging.ERROR)  # "from scratch" is the point here
    other = OtherLoad()
    print(
        f"\n[8] torchvision resnet50 against timm resnet50 (resnet50.a1_in1k, random init), CPU, "
        f"{args.threads} threads, batch {args.batch} at {args.size} px, {args.rounds} rounds x {args.steps} steps "
        f"and forwards\n    {machine()}"
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1  # the trainer's [-1, 1] scale
    y = torch.randint(0, CLASSES, (args.batch,), generator=generator)
    cases = {}
    for name, arch in MODELS.items():
        torch.manual_seed(0)
        model = build_model(arch, CLASSES, input_size=args.size)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        cases[name] = (model, optimizer, sum(p.numel() for p in model.parameters()))

    def step(name: str) -> None:
        model, optimizer, _ = cases[name]
        model.train()
        train_step(model, optimizer, x, y)

    def forward(name: str) -> None:
        model = cases[name][0]
        model.eval()
        with torch.no_grad():
            model(x)

    for name in cases:  # warm-up: first-call allocations and oneDNN's kernel choices
        step(name)
        forward(name)
    seconds: dict[str, dict[str, list[float]]] = {name: {"train": [], "eval": []} for name in cases}
    names = list(cases)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name]["train"] += timed(lambda n=name: step(n), args.steps)
            seconds[name]["eval"] += timed(lambda n=name: forward(n), args.steps)
    rates = {
        name: {
            f"{kind} {stat.__name__}": args.batch / stat(times)
            for kind, times in sides.items()
            for stat in (median, min)  # the least time is the best rate
        }
        for name, sides in seconds.items()
    }
    columns = ("train median", "train min", "eval median", "eval min")
    print(f"{'':<22} {'':>8} {'train step img/s':>21} {'eval forward img/s':>21}")
    print(f"{'model':<22} {'params':>8} {'median':>10} {'best':>10} {'median':>10} {'best':>10}")
    for name, rate in rates.items():
        print(f"{name:<22} {cases[name][2] / 1e6:>7.1f}M " + " ".join(f"{rate[c]:>10.2f}" for c in columns))
    timm, tv = rates["timm resnet50"], rates["torchvision resnet50"]
    print(f"{'timm / torchvision':<22} {'':>8} " + " ".join(f"{timm[c] / tv[c]:>9.2f}x" for c in columns))
    print(other.line())
    return rates


if __name__ == "__main__":
    main()
