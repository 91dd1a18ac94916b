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
from dataclasses import MISSING, fields
from functools import partial
from pathlib import Path
from typing import Any

import typer

from augment.contract import cli_errors
from augment.contract.cli_errors import EXIT_CODES, USAGE, OneLineErrors, out_problem, unwritable
from augment.contract.zoo import ARCHS, NORMALISATION_FORM
from augment.contract.zoo.devices import resolve_device
from train.config import (
    CHANNELS_LAST,
    OPTIMIZERS,
    PRESET_KEYS,
    PRESETS,
    SALIENCY,
    SCHEDULES,
    SELECT,
    Config,
    flag,
)
from train.losses import CF_LOSSES


def choices(name: str, values: tuple[str, ...] | list[str] | dict[str, Any]) -> type[enum.Enum]:
    return enum.Enum(name, {v: v for v in values}, type=str)


Preset = choices("Preset", PRESETS)
CfLoss = choices("CfLoss", CF_LOSSES)
Optimizer = choices("Optimizer", OPTIMIZERS)
Schedule = choices("Schedule", SCHEDULES)
Select = choices("Select", SELECT)
Saliency = choices("Saliency", SALIENCY)
ChannelsLast = choices("ChannelsLast", CHANNELS_LAST)


class TrainErrors(OneLineErrors):
    """augment's one-line errors, with the way to resume a training run."""

    interrupted_message = "interrupted; run the same command again to resume (train fit: add --resume)"


app = typer.Typer(
    cls=TrainErrors,
    help="Fine-tune a classifier on augment shards with CF/F/FGSM/Sal (Chang et al., CVPR 2021), and evaluate it. "
    "The method, the loss, the presets and the metrics: docs/METHOD.md.\n\n"
    + EXIT_CODES.replace(
        "verify found problems, a build met bad data, --diff found differences",
        "the build's shards are not what its manifest says: run `augment verify`",
    ),
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


fail = partial(cli_errors.fail, "train")


def option(key: str, help: str, default: str | None = None, metavar: str | None = None) -> Any:
    """The `train fit` option of config field ``key``: flag ``--key-name`` (``--x/--no-x`` for a bool), default None
    (= the preset's value for ``PRESET_KEYS``, else the Config default, which the help text shows)."""
    spec = Config.__dataclass_fields__[key]
    if default is None:
        value = spec.default_factory() if spec.default is MISSING else spec.default
        default = "the preset's" if key in PRESET_KEYS else "none" if value in (None, []) else str(value)
    decl = f"{flag(key)}/--no-{flag(key)[2:]}" if spec.type == "bool" else flag(key)
    return typer.Option(None, decl, help=f"{help} [default: {default}]", metavar=metavar)


@app.command()
def fit(
    shards: str = typer.Option(..., help=SHARDS_HELP),
    out: Path = typer.Option(..., help="Run folder: config.json, log.csv, last.pt, best.pt, results.json/.tsv."),
    preset: Preset | None = option(
        "preset",
        "Hyper-parameters of the paper's code per dataset (README: Presets): every setting marked "
        "[default: the preset's]. in9, waterbirds and cct fine-tune --weights (or --from-scratch); demo trains any "
        "--arch from scratch.",
        "the preset of the build's dataset: cct, in9, waterbirds, else demo",
    ),
    arch: str | None = option(
        "arch",
        f"Model: {', '.join(ARCHS)}, or any timm model name (timm.list_models(): convnext_tiny, "
        "vit_small_patch16_224, efficientnet_b0, ...). The paper's presets: bit-s-r50x1, all layers fine-tuned.",
    ),
    weights: Path | None = option(
        "weights",
        "Pretrained weights, a local file or folder (nothing is downloaded): .safetensors, a .pth/.pt/.bin state dict, "
        "BiT's .npz, or a model folder as timm or the Hugging Face hub save one (config.json + model.safetensors).",
        "none: from scratch, with a warning; the fine-tuning presets need them, or --from-scratch",
    ),
    from_scratch: bool | None = option(
        "from_scratch",
        "Run a fine-tuning preset (in9, waterbirds, cct) from random weights, on purpose: without --weights they are "
        "refused. The demo preset is the recipe from scratch (any --arch).",
    ),
    normalisation: str | None = option(
        "normalisation",
        "What the model does to its inputs: half keeps [-1, 1] (mean = std = 0.5, BiT's weights), imagenet "
        "normalises with ImageNet's mean and std (torchvision's weights); or any mean/std "
        f"({NORMALISATION_FORM}). Recorded in config.json and checkpoints.",
        "the weights': their folder's config.json, else the --arch's pretrained configuration (imagenet for "
        "resnet18/50, half for bit-s-r50x1 and resnet8)",
    ),
    zero_head: bool | None = option("zero_head", "Zero-initialise the classifier (the CCT preset)."),
    cf: list[str] | None = option(
        "cf",
        "CF images to train as 'not y' (repeat for several): a method the shards were built with (tile, grey, cagan, "
        "...; `augment info SHARDS` lists them).",
        metavar="<method>",
    ),
    cf_loss: CfLoss | None = option("cf_loss", "CF loss: -log(1 - p_y), or CE to uniform (over all / other classes)."),
    cf_weight: float | None = option("cf_weight", "Weight of the CF loss."),
    f: list[str] | None = option(
        "f",
        "F images to train as y (repeat for several): a method the shards were built with (shuffle, mixed-rand, ...).",
        metavar="<method>",
    ),
    fgsm: float | None = option(
        "fgsm",
        "Online FGSM on the background: eps as a fraction of the pixel range, in "
        "[0, 1] (the paper's 0.6 on [-1, 1] is 0.3). 0 = off.",
    ),
    fgsm_steps: int | None = option("fgsm_steps", "Attack steps: 1 = FGSM, more = PGD."),
    sal: float | None = option("sal", "GradMask saliency penalty lambda (double backprop). 0 = off."),
    mixup: float | None = option("mixup", "Baseline: mixup with Beta(a, a). 0 = off."),
    label_smoothing: float | None = option("label_smoothing", "Baseline: label smoothing eps in [0, 1]. 0 = off."),
    epochs: int | None = option("epochs", "Training epochs."),
    batch_size: int | None = option("batch_size", "Originals per step, per process (under torchrun: x nproc)."),
    optimizer: Optimizer | None = option("optimizer", "Optimizer."),
    lr: float | None = option("lr", "Learning rate."),
    momentum: float | None = option("momentum", "Momentum of SGD / RMSprop."),
    weight_decay: float | None = option("weight_decay", "Weight decay (L2, in the optimizer)."),
    schedule: Schedule | None = option(
        "schedule",
        "LR schedule: x0.1 at --milestones, x0.1 on a val plateau (patience 1), or cosine to 0 over --epochs.",
    ),
    milestones: str | None = option(
        "milestones",
        "Epochs at which --schedule step multiplies the lr by 0.1, comma-separated (6,12,18); '' for none.",
    ),
    select: Select | None = option(
        "select", "Model selection: the epoch with the best val accuracy or macro AUC is kept (best.pt) and evaluated."
    ),
    val_split: str | None = option("val_split", "The build's split to select the model on."),
    crop: int | None = option("crop", "Random-crop size.", "7/8 of the stored image size"),
    clip: float | None = option("clip", "Clip the gradient norm at this value (inf: no clipping)."),
    early_stop: int | None = option("early_stop", "Stop after this many epochs without val gain. 0 = off."),
    seed: int | None = option("seed", "Seed for weights init, data order, crops and attacks."),
    train_fraction: float | None = option(
        "train_fraction",
        "Train on this share of the train split, in (0, 1] (a fixed subset chosen by sample key; "
        "smaller subsets are nested in larger ones): the training-set-size curve of `train study`.",
    ),
    workers: int | None = option("workers", "DataLoader worker processes (per training process)."),
    device: str | None = option(
        "device", "auto, cpu, cuda, cuda:1, ... (auto: cuda when present; under torchrun: cuda:LOCAL_RANK)."
    ),
    amp: bool | None = option(
        "amp", "Mixed precision on CUDA (bf16 where supported, else fp16); a CPU run stays fp32."
    ),
    channels_last: ChannelsLast | None = option(
        "channels_last",
        "The model's memory layout: channels_last (NHWC), which pays for convolutions on CUDA. auto: on for CUDA, "
        "off on the CPU.",
    ),
    compile: bool | None = option(
        "compile",
        "torch.compile the training step's model (its forward and backward; evaluation, FGSM's attack and Sal's "
        "double backward stay uncompiled). The first steps compile it (tens of seconds for resnet8 on 2 CPU cores, "
        "longer for larger models): for long GPU runs (make bench-gpu measures it per model family).",
    ),
    saliency: Saliency | None = option("saliency", "Attribution for the saliency AUPR."),
    max_saliency_images: int | None = option(
        "max_saliency_images", "Images per test split scored for the saliency AUPR."
    ),
    max_bad_samples: int | None = option(
        "max_bad_samples",
        "Unreadable samples of the build to skip: each is warned about and listed in results.json (bad_samples). "
        "0: the first bad sample, short shard or shard whose sha256 differs from the manifest stops the run.",
    ),
    resume: bool = typer.Option(
        False, help="Continue from <out>/last.pt exactly (under torchrun: every rank reads it)."
    ),
    verify: bool = typer.Option(
        False, help="Check every shard's sha256 against the manifest first (and decode every sample, when local)."
    ),
) -> None:
    """Train on the shards' train split, select on the val split, then evaluate every split.

    Every setting has one default: the preset's (the hyper-parameters of the paper's code) or the config's. Without
    --preset the run takes the preset of the build's dataset, and says so.

    Under `torchrun --nproc-per-node N -m train fit ...` it trains with DDP (gloo on the CPU, nccl on GPUs); rank 0
    evaluates and writes the run folder."""
    # every Config setting as parsed (None: not given); --resume and --verify are how to run, not settings
    given = {
        "shards": shards,
        "out": out,
        "preset": preset,
        "arch": arch,
        "weights": weights,
        "from_scratch": from_scratch,
        "normalisation": normalisation,
        "zero_head": zero_head,
        "cf": cf,
        "cf_loss": cf_loss,
        "cf_weight": cf_weight,
        "f": f,
        "fgsm": fgsm,
        "fgsm_steps": fgsm_steps,
        "sal": sal,
        "mixup": mixup,
        "label_smoothing": label_smoothing,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "milestones": milestones,
        "select": select,
        "val_split": val_split,
        "crop": crop,
        "clip": clip,
        "early_stop": early_stop,
        "seed": seed,
        "train_fraction": train_fraction,
        "workers": workers,
        "device": device,
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile,
        "saliency": saliency,
        "max_saliency_images": max_saliency_images,
        "max_bad_samples": max_bad_samples,
    }
    from train.data import read_manifest
    from train.ledger import DataError, one_line
    from train.train import fit as run_fit

    rank = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 logs progress
    prefix = f"rank {rank}: " if rank else ""
    level = logging.WARNING if rank else logging.INFO
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(message)s", stream=sys.stderr)
    try:
        manifest = read_manifest(shards)
        config, note = fit_config(given, manifest)  # a refusal it words names the preset chosen
        config.check_build(manifest)
        resolve_device(config.device)  # cuda without a GPU, or no device at all: before any work
        if (problem := unwritable(out)) is not None:
            fail(f"--out {out}: {problem}; choose a writable folder", USAGE)
        if note and not rank:  # after the checks: an error stays one line
            typer.echo(note, err=True)
        results = run_fit(config, resume=resume, verify=verify)
    except DataError as e:  # the build is not what its manifest says: a failed check
        fail(str(e), 1)
    except (ValueError, FileNotFoundError) as e:
        fail(one_line(e), 2)
    except OSError as e:  # --out became unwritable (a full disk) during the run; else not ours to word
        if (problem := out_problem(out, e)) is None:
            raise
        fail(f"--out {out}: {problem}; choose a writable folder", USAGE)
    if not results:
        return  # another DDP rank: rank 0 evaluates and prints
    typer.echo((Path(out) / "results.tsv").read_text().rstrip())
    typer.echo(f"{results['method']}: {out / 'results.json'}")


def fit_config(options: dict[str, Any], manifest: dict[str, Any]) -> tuple[Config, str]:
    """The Config of `train fit`'s parsed ``options`` (a value for every Config field; None = not given), through
    ``Config.resolve`` as a study row goes; and, when no --preset was given, the line saying which preset the build's
    dataset chose."""
    from train.config import preset_of_build

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, list):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    overrides = {f.name: plain(options[f.name]) for f in fields(Config) if f.name != "preset"}
    if overrides["milestones"] is not None:
        overrides["milestones"] = parse_milestones(overrides["milestones"])
    preset, note = plain(options["preset"]), ""
    if preset is None:
        preset = preset_of_build(manifest)
        note = f"no --preset: using {preset!r}, the preset of the build's dataset ({manifest['dataset']['name']})"
    return Config.resolve(preset, chosen=note, **overrides), note


def parse_milestones(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"--milestones: got {text!r}, expected comma-separated epochs such as 6,12,18") from None


@app.command("eval")
def evaluate_cmd(
    run: Path = typer.Argument(..., metavar="RUN", help="A run folder from `train fit`."),
    shards: str = typer.Option(..., help="The build to evaluate on (every split). " + SHARDS_HELP),
    workers: int | None = typer.Option(None, help="DataLoader worker processes [default: the run's --workers]."),
    device: str = typer.Option("auto", help="auto (cuda when present), cpu, cuda, cuda:1, ..."),
    max_bad_samples: int = typer.Option(
        0, min=0, help="Unreadable samples to skip (listed in results.json); 0: the first one stops the evaluation."
    ),
) -> None:
    """Re-evaluate a run's best checkpoint on every split of a build; rewrites the run's results.json/.tsv."""
    import torch

    from augment.contract.zoo.models import build_model, checkpoint_state
    from train import evaluate
    from train.config import recorded
    from train.data import read_manifest
    from train.ledger import DataError, Ledger, one_line

    checkpoint = run / "best.pt"
    if not checkpoint.is_file():
        fail(f"{checkpoint}: not found; expected a run folder written by `train fit`", USAGE)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = Config(**recorded(state["config"]))  # as the run was: not checked again (Config.resolve checks)
    if workers is not None:
        config.workers = workers
    try:
        manifest = read_manifest(shards)
        chosen = resolve_device(device)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    crop = config.crop_size(manifest["image_size"])
    model = build_model(
        config.arch,
        len(state["classes"]),
        from_checkpoint=True,
        normalisation=config.normalisation,
        input_size=state.get("input_size", crop),  # as trained: a model of fixed input size (ViT) was built for it
    )
    model.load_state_dict(checkpoint_state(config.arch, state["model"]))
    model.to(chosen)
    try:
        results = evaluate.evaluate_all(model, shards, manifest, crop, config, chosen, Ledger(max_bad_samples, shards))
    except DataError as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(one_line(e), 2)
    results["method"] = config.method_name()
    evaluate.write_results(run, results)
    typer.echo((run / "results.tsv").read_text().rstrip())


@app.command()
def report(
    runs: Path = typer.Argument(
        ..., metavar="RUNS", help="A folder of run folders (searched recursively for results.json)."
    ),
    out: Path = typer.Option(..., help="Markdown report to write; plots go beside it."),
) -> None:
    """One table across runs (mean +- sd over seeds) plus plots: saliency AUPR vs accuracy, training curves."""
    from train.report import write_report

    if out.is_dir():
        fail(f"--out {out} is a folder; expected the report's file name (e.g. {out / 'report.md'})", USAGE)
    try:
        path = write_report(runs, out)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), USAGE)
    except OSError as e:  # a folder that is not writable, a full disk
        if (problem := out_problem(out, e)) is None:
            raise
        fail(f"--out {out}: {problem}; choose a writable folder", USAGE)
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
    from train.ledger import DataError, one_line
    from train.study import study as run_study

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        report = run_study(shards, grid, seeds, out, jobs)
    except DataError as e:
        fail(str(e), 1)
    except (ValueError, FileNotFoundError) as e:
        fail(one_line(e), USAGE)
    except OSError as e:  # --out became unwritable (a full disk) during the study
        if (problem := out_problem(out, e)) is None:
            raise
        fail(f"--out {out}: {problem}; choose a writable folder", USAGE)
    typer.echo(f"{report} and {report.with_suffix('.html')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
