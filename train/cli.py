"""The ``train`` command line: fit, eval, report. Typer only; the work lives in train.py, evaluate.py, report.py.

train fit --shards shards/demo --preset demo --cf tile --f shuffle --out runs/demo/cf-f-s0
torchrun --nproc-per-node 2 -m train fit --shards http://host:8000/demo --out runs/ddp   # DDP, shards over HTTP
train eval runs/demo/cf-f-s0 --shards shards/demo
train report runs/demo --out runs/demo/report.md
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from pathlib import Path

import typer

from augment import infill
from augment.cli import OneLineErrors
from train.config import PRESETS
from train.losses import CF_LOSSES

Preset = enum.Enum("Preset", {p: p for p in PRESETS}, type=str)
Arch = enum.Enum("Arch", {a: a for a in ("resnet18", "resnet50", "bit-s-r50x1", "resnet8")}, type=str)
CfMethod = enum.Enum("CfMethod", {n: n for n in infill.names(infill.CF)}, type=str)
FMethod = enum.Enum("FMethod", {n: n for n in infill.names(infill.F)}, type=str)
CfLoss = enum.Enum("CfLoss", {n: n for n in CF_LOSSES}, type=str)
Saliency = enum.Enum("Saliency", {"gradient": "gradient", "deepliftshap": "deepliftshap"}, type=str)

app = typer.Typer(
    cls=OneLineErrors,
    help="Fine-tune a classifier on augment shards with CF/F/FGSM/Sal (Chang et al., CVPR 2021), and evaluate it.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


SHARDS_HELP = (
    "A build folder from `augment build` (holds manifest.json), or its URL: http(s)://, s3://, file://, any fsspec "
    "URL. A pipe: shell command, with {} for the file of the build (pipe:aws s3 cp s3://b/build/{} -), only with "
    "CFAUG_ALLOW_PIPE=1 in the environment."
)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"train: error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def fit(
    shards: str = typer.Option(..., help=SHARDS_HELP),
    out: Path = typer.Option(..., help="Run folder: config.json, log.csv, last.pt, best.pt, results.json/.tsv."),
    preset: Preset = typer.Option("demo", help="Hyper-parameters of the paper's code per dataset (SPEC section 3)."),
    arch: Arch | None = typer.Option(None, help="Model [default: resnet18 for demo, resnet50 otherwise]."),
    weights: Path | None = typer.Option(None, help="Pretrained weights: torchvision .pth, .safetensors or BiT .npz."),
    cf: list[CfMethod] = typer.Option([], help="CF images to train as 'not y' (repeat for several)."),
    cf_loss: CfLoss = typer.Option("logp", help="CF loss: -log(1 - p_y), or CE to uniform (over all / other classes)."),
    cf_weight: float = typer.Option(1.0, help="Weight of the CF loss."),
    f: list[FMethod] = typer.Option([], "--f", help="F images to train as y (repeat for several)."),
    fgsm: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Online FGSM on the background: eps as a fraction of the "
        "pixel range (the paper's 0.6 on [-1, 1] is 0.3). 0 = off.",
    ),
    fgsm_steps: int = typer.Option(1, min=1, help="Attack steps: 1 = FGSM, more = PGD."),
    sal: float = typer.Option(0.0, min=0.0, help="GradMask saliency penalty lambda (double backprop). 0 = off."),
    mixup: float = typer.Option(0.0, min=0.0, help="Baseline: mixup with Beta(a, a). 0 = off."),
    label_smoothing: float = typer.Option(0.0, min=0.0, max=1.0, help="Baseline: label smoothing eps. 0 = off."),
    epochs: int | None = typer.Option(None, min=1, help="Override the preset's epochs."),
    batch_size: int | None = typer.Option(
        None, min=1, help="Override the preset's batch size, per process (under torchrun: x nproc per step)."
    ),
    lr: float | None = typer.Option(None, min=0.0, help="Override the preset's learning rate."),
    crop: int | None = typer.Option(None, min=8, help="Random-crop size [default: 7/8 of the stored image size]."),
    seed: int = typer.Option(0, min=0, help="Seed for weights init, data order, crops and attacks."),
    train_fraction: float = typer.Option(
        1.0,
        min=0.0,
        max=1.0,
        help="Train on this share of the train split (a fixed subset chosen by sample key; "
        "smaller subsets are nested in larger ones): the training-set-size curve of `train study`.",
    ),
    workers: int = typer.Option(2, min=0, help="DataLoader worker processes (per training process)."),
    early_stop: int = typer.Option(0, min=0, help="Stop after this many epochs without val gain. 0 = off."),
    amp: bool = typer.Option(False, help="Mixed precision on GPU (bf16 where supported)."),
    saliency: Saliency = typer.Option("gradient", help="Attribution for the saliency AUPR."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ... (under torchrun: cuda:LOCAL_RANK)."),
    resume: bool = typer.Option(
        False, help="Continue from <out>/last.pt exactly (under torchrun: every rank reads it)."
    ),
    verify: bool = typer.Option(
        False, help="Check every shard's sha256 against the manifest first (and decode every sample, when local)."
    ),
) -> None:
    """Train on the shards' train split, select on val, then evaluate every split.

    Under `torchrun --nproc-per-node N -m train fit ...` it trains with DDP (gloo on the CPU, nccl on GPUs); rank 0
    evaluates and writes the run folder."""
    from train.config import Config
    from train.train import fit as run_fit

    rank = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 logs progress
    prefix = f"rank {rank}: " if rank else ""
    level = logging.WARNING if rank else logging.INFO
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(message)s", stream=sys.stderr)
    try:
        config = Config.resolve(
            preset.value, shards=shards, out=str(out), arch=arch.value if arch else None,
            weights=str(weights) if weights else None, cf=[m.value for m in cf], cf_loss=cf_loss.value,
            cf_weight=cf_weight, f=[m.value for m in f], fgsm=fgsm, fgsm_steps=fgsm_steps, sal=sal, mixup=mixup,
            label_smoothing=label_smoothing, epochs=epochs, batch_size=batch_size, lr=lr, crop=crop, seed=seed,
            train_fraction=train_fraction,
            workers=workers, early_stop=early_stop, amp=amp, saliency=saliency.value, device=device,
        )  # fmt: skip
        if arch is None and preset.value != "demo":
            config.arch = "resnet50"
        results = run_fit(config, resume=resume, verify=verify)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    if not results:
        return  # another DDP rank: rank 0 evaluates and prints
    typer.echo((Path(out) / "results.tsv").read_text().rstrip())
    typer.echo(f"{results['method']}: {out / 'results.json'}")


@app.command("eval")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="A run folder from `train fit`."),
    shards: str = typer.Option(..., help="The build to evaluate on (every split). " + SHARDS_HELP),
    workers: int = typer.Option(2, min=0, help="DataLoader worker processes."),
) -> None:
    """Re-evaluate a run's best checkpoint on every split of a build."""
    import torch

    from train import evaluate
    from train.config import Config
    from train.data import read_manifest
    from train.models import build_model

    checkpoint = run / "best.pt"
    if not checkpoint.is_file():
        fail(f"{checkpoint}: not found; expected a run folder written by `train fit`")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = Config(**{**state["config"], "workers": workers})
    try:
        manifest = read_manifest(shards)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    model = build_model(config.arch, len(state["classes"]))
    model.load_state_dict(state["model"])
    crop = config.crop or round(manifest["image_size"] * 7 / 8)
    results = evaluate.evaluate_all(model, shards, manifest, crop, config, torch.device("cpu"))
    results["method"] = config.method_name()
    evaluate.write_results(run, results)
    typer.echo((run / "results.tsv").read_text().rstrip())


@app.command()
def report(
    runs: Path = typer.Argument(..., help="A folder of run folders (searched recursively for results.json)."),
    out: Path = typer.Option(..., help="Markdown report to write; plots go beside it."),
) -> None:
    """One table across runs (mean +- sd over seeds) plus plots: saliency AUPR vs accuracy, training curves."""
    from train.report import write_report

    try:
        path = write_report(runs, out)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(path.read_text().rstrip())


@app.command()
def study(
    shards: str = typer.Option(
        ..., help="A build folder or URL from `augment build` with every CF/F method the grid uses."
    ),
    grid: Path = typer.Option(..., help="The grid: a TOML file of rows (see docs/grids/paper.toml)."),
    seeds: int = typer.Option(3, min=1, help="Seeds per row: 0, 1, ... (tables show mean ± sd over them)."),
    out: Path = typer.Option(..., help="Study folder: runs/<row>/s<seed>/, REPORT.md, REPORT.html and the figures."),
    jobs: int = typer.Option(1, min=1, help="Runs trained at once, each in its own process with cores / jobs threads."),
) -> None:
    """Run a grid of training runs over seeds and write REPORT.md / REPORT.html: the paper's Tables 1-3, Figs. 4-6
    and its claims checked on your data. Finished runs are reused and interrupted ones resumed, so re-running after a
    crash loses at most the epoch in progress."""
    from train.study import study as run_study

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        report = run_study(shards, grid, seeds, out, jobs)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    typer.echo(f"{report} and {report.with_suffix('.html')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
