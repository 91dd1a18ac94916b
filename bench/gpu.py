"""The GPU benchmark and checks (``make bench-gpu``): one script for a device machine, sized for under 8 minutes on one
GPU before section 3 (the model families: 12 runs of ``train fit``, 6 of them compiling; ``--families`` and
``--no-compile`` run fewer). It has not run on a GPU yet.

1. **CAGAN**: the official-width generator (cnum 32) at 256 x 256, batch 1, 32 and 64, bf16 autocast: images/s and
   peak GPU memory (``bench/cagan.py``'s measurement).
2. **train fit**: ResNet-50, ``--amp`` (bf16 where the GPU has it), channels_last (the trainer's layout on CUDA),
   224 crops of 256 px shards with CF(tile)+F(shuffle) fields, the DataLoader workers of the machine's cores: rows
   trained per second and the data-wait fraction of each epoch (``log.csv``), next to the anchor of about 2,500
   img/s for ResNet-50 AMP training on one A100 (an H100 or H200 about twice that).
3. **Model families** (issue #31): ``train fit --amp`` of torchvision's ResNet-50, timm's ResNet-50, ConvNeXt-T,
   ViT-S/16, EfficientNet-B0 and BiT-S-R50x1, each at random initialisation (nothing is downloaded) on half of the
   same shards' train split, 224 crops with CF(tile)+F(shuffle), two epochs; and each again with ``--compile``. Per
   row, epoch 1's rows per second of the loop (data waits included) and of the steps alone (``img_per_s / (1 -
   data_wait_fraction)`` of ``log.csv``: what the model and the compiler decide), and the compiled run's steps
   against the eager run's. Epoch 0 holds the compilation and cuDNN's autotuning, so it is left out. A row that
   fails prints its error in the table and the script goes on.
4. **DDP**: one ``torchrun`` process of ``train fit`` over NCCL (gloo without CUDA): the distributed path end to end.
5. **The ``gpu``-marked tests** (``pytest -m gpu``): CAGAN and SAM/CAM masks on CUDA against the CPU, mixup on
   CUDA, NCCL DDP ranks ending with identical weights, the device resolution.

Without CUDA it runs the same steps on the CPU at toy sizes (a check that the script works, not a measurement), the
model families without their ``--compile`` rows (a first compilation takes 30 s to minutes per model on a CPU), and
says which figures need a GPU. Outputs go to bench/out/gpu/.

    make bench-gpu                       # .venv/bin/python bench/gpu.py --no-compile (COMPILE=1: with --compile)
    .venv/bin/python bench/gpu.py --quick
    .venv/bin/python bench/gpu.py --families convnext_tiny vit_small_patch16_224 --no-compile --skip-tests
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import BIN, OUT, cli  # bench/ is on sys.path: the scripts run as files

# issue #31's model families: row label -> --arch (bit-s-r50x1 is timm's resnetv2_50x1_bit with BiT's epsilon)
FAMILIES = {
    "torchvision resnet50": "resnet50",
    "timm resnet50": "resnet50.a1_in1k",
    "timm convnext_tiny": "convnext_tiny",
    "timm vit_small_patch16_224": "vit_small_patch16_224",
    "timm efficientnet_b0": "efficientnet_b0",
    "bit-s-r50x1": "bit-s-r50x1",
}
A100_IMG_S = 2500  # ResNet-50 mixed-precision training on one A100, images/s (public benchmarks' order of magnitude)
FASTER = {"H100": 2.0, "H200": 2.0, "A100": 1.0}  # expected speed against an A100
ROOT = Path(__file__).resolve().parent.parent


def anchor(name: str) -> tuple[float, str]:
    """The expected ResNet-50 AMP img/s of the GPU called ``name``, and what it is based on."""
    for key, factor in FASTER.items():
        if key in name.upper():
            return A100_IMG_S * factor, f"{factor:g} x the A100's ~{A100_IMG_S}"
    return A100_IMG_S, f"the A100's ~{A100_IMG_S} (no figure for this GPU)"


def section(title: str) -> float:
    print(f"\n[gpu] {title}", flush=True)
    return time.perf_counter()


def cagan(cuda: bool, quick: bool) -> None:
    from cagan import run

    start = section("CAGAN inpainting, 256 x 256, 128 x 128 hole" + (", bf16 autocast" if cuda else " (CPU)"))
    device = torch.device("cuda" if cuda else "cpu")
    run(device, [1, 32, 64] if cuda and not quick else [1, 2], 1 if quick else 3)
    print(f"    {time.perf_counter() - start:.0f} s")


def train_fit(work: Path, cuda: bool, quick: bool) -> None:
    size, image, crop, epochs = (4096, 256, 224, 3) if cuda and not quick else (48, 64, 56, 1)
    start = section(
        f"train fit --arch resnet50 --amp, {size} images {image} px -> crop {crop}, CF(tile)+F(shuffle), "
        f"{epochs} epoch(s)" + ("" if cuda else " (CPU, toy size: no figure)")
    )
    shards = work / "shards"
    seconds, _ = cli(
        "augment",
        "build",
        "--dataset",
        "synthetic",
        "--size",
        size,
        "--image-size",
        image,
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--shard-size",
        256,
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    print(f"    build: {seconds:.1f} s ({size / seconds:.0f} training images/s, every core)")
    workers = max(1, min(16, (os.cpu_count() or 2) - 2))
    run = work / "fit"
    shutil.rmtree(run, ignore_errors=True)
    batch = 128 if cuda and not quick else 16
    seconds, _ = cli(
        "train",
        "fit",
        "--shards",
        shards,
        "--preset",
        "demo",
        "--arch",
        "resnet50",
        "--amp",
        "--crop",
        crop,
        "--batch-size",
        batch,
        "--epochs",
        epochs,
        "--workers",
        workers,
        "--cf",
        "tile",
        "--f",
        "shuffle",
        "--device",
        "cuda" if cuda else "cpu",
        "--out",
        run,
    )
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    expected, basis = anchor(name)
    print(f"    {name}, batch {batch} (x3 rows: original, CF, F), {workers} workers; wall {seconds:.0f} s with eval")
    print(f"{'epoch':>5} {'rows/s':>9} {'data_wait_fraction':>19} {'rows/s / anchor':>16}")
    with open(run / "log.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rate = float(row["img_per_s"])
            ratio = f"{rate / expected:>15.2f}x" if cuda else f"{'-':>16}"
            print(f"{row['epoch']:>5} {rate:>9.0f} {float(row['data_wait_fraction']):>19.3f} {ratio}")
    if cuda:
        print(f"    anchor: {expected:.0f} img/s, {basis}; epoch 0 includes cuDNN autotuning and worker start-up")
    print(f"    {time.perf_counter() - start:.0f} s")


def families(work: Path, cuda: bool, quick: bool, archs: list[str], compiled: bool) -> None:
    """Section 3: one ``train fit --amp`` per model family of ``archs`` on section 2's shards, and one more with
    ``--compile`` where ``compiled``; each row's error, if any, is printed in its place."""
    full = cuda and not quick
    crop, batch, epochs, fraction = (224, 128, 2, 0.5) if full else (48, 8, 1, 1.0)  # 48: a multiple of ViT's 16
    compiled = compiled and cuda
    start = section(
        f"model families: train fit --amp at {crop} px with CF(tile)+F(shuffle), batch {batch}, {epochs} epoch(s) on "
        f"{'all' if fraction == 1 else fraction} of the train split, random init"
        + (", eager and --compile" if compiled else ", eager")
        + ("" if cuda else " (CPU, toy size: no figure; --compile rows need CUDA)")
    )
    workers = max(1, min(16, (os.cpu_count() or 2) - 2))
    settings = (
        f"--preset demo --amp --crop {crop} --batch-size {batch} --epochs {epochs} --train-fraction {fraction} "
        f"--workers {workers} --cf tile --f shuffle --max-saliency-images 0 --device {'cuda' if cuda else 'cpu'}"
    )
    print(f"{'model':<27} {'rows/s':>8} {'steps rows/s':>13} {'--compile steps rows/s':>23} {'compile / eager':>16}")
    for label, arch in ((k, v) for k, v in FAMILIES.items() if v in archs):
        rates = []
        for flags in ([], ["--compile"]) if compiled else ([],):
            run = work / "families" / (arch + "".join(flags))
            shutil.rmtree(run, ignore_errors=True)
            try:
                cli(
                    "train", "fit", "--shards", work / "shards", *settings.split(), "--arch", arch, *flags, "--out", run
                )
                with open(run / "log.csv", newline="") as fh:
                    last = list(csv.DictReader(fh))[-1]  # epoch 1: past compilation and autotuning
                rate, wait = float(last["img_per_s"]), float(last["data_wait_fraction"])
                rates.append((rate, rate / max(1.0 - wait, 1e-9)))
            except (RuntimeError, OSError, KeyError, IndexError, ValueError) as e:  # this row fails, the rest runs
                lines = [line for line in str(e).splitlines() if line.strip()]
                rates.append(f"FAILED{' (--compile)' if flags else ''}: {lines[-1] if lines else type(e).__name__}")
        print(family_row(label, rates, compiled), flush=True)
    print(f"    {time.perf_counter() - start:.0f} s")


def family_row(label: str, rates: list[tuple[float, float] | str], compiled: bool) -> str:
    """One table row of section 3: the eager run's rows/s (loop, steps alone), the compiled run's steps and their
    ratio; an error in place of a run's figures."""
    eager = rates[0]
    cells = [f"{eager[0]:>8.0f} {eager[1]:>13.0f}" if isinstance(eager, tuple) else f"{'-':>8} {'-':>13}"]
    if not compiled:
        cells.append(f"{'-':>23} {'-':>16}")
    elif isinstance(rates[1], tuple):
        ratio = f"{rates[1][1] / eager[1]:>15.2f}x" if isinstance(eager, tuple) else f"{'-':>16}"
        cells.append(f"{rates[1][1]:>23.0f} {ratio}")
    else:
        cells.append(f"{'-':>23} {'-':>16}")
    errors = [r for r in rates if isinstance(r, str)]
    return f"{label:<27} {' '.join(cells)}" + "".join(f"\n    {e}" for e in errors)


def ddp(work: Path, cuda: bool) -> None:
    start = section(f"DDP: one torchrun process of train fit over {'NCCL' if cuda else 'gloo (no CUDA)'}")
    run = work / "ddp"
    shutil.rmtree(run, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "1",
        "-m",
        "train",
        "fit",
        "--shards",
        str(work / "shards"),
        "--preset",
        "demo",
        "--arch",
        "resnet8",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--device",
        "cuda" if cuda else "cpu",
        "--out",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    ok = done.returncode == 0 and (run / "results.json").is_file()
    print(f"    {'passed' if ok else 'FAILED'}: exit code {done.returncode}, {time.perf_counter() - start:.0f} s")
    if not ok:
        print(done.stderr[-3000:])


def gpu_tests(cuda: bool) -> None:
    start = section("the gpu-marked tests: pytest -m gpu")
    done = subprocess.run(
        [str(BIN / "python"), "-m", "pytest", "-q", "-m", "gpu", "-rs", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[-12:] if cuda else lines[-3:]))
    print(f"    exit code {done.returncode}, {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes even on a GPU: checks that it runs")
    parser.add_argument("--skip-tests", action="store_true", help="leave out pytest -m gpu")
    parser.add_argument(
        "--families",
        nargs="*",
        choices=list(FAMILIES.values()),
        default=list(FAMILIES.values()),
        metavar="ARCH",
        help="the model families' --arch to run (default: all of them; none: skip the section)",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the model families' --compile rows")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    begin = time.perf_counter()
    print(
        f"[gpu] {'CUDA: ' + torch.cuda.get_device_name(0) if cuda else 'no CUDA device: CPU paths at toy sizes'}; "
        f"torch {torch.__version__}, {os.cpu_count()} cores"
    )
    work = OUT / "gpu"
    work.mkdir(parents=True, exist_ok=True)
    cagan(cuda, args.quick)
    train_fit(work, cuda, args.quick)
    if args.families:
        families(work, cuda, args.quick, args.families, not args.no_compile)
    ddp(work, cuda)
    if not args.skip_tests:
        gpu_tests(cuda)
    if not cuda:
        print("\n[gpu] no figure above is a GPU measurement: run `make bench-gpu` on a machine with CUDA")
    print(f"\n[gpu] total {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
