"""``augment cagan``: import official weights, train on a build's backgrounds, preview the inpainting."""

from __future__ import annotations

import enum
import json
import logging
from functools import partial
from pathlib import Path

import typer

from augment.contract import cli_errors

app = typer.Typer(
    help="CAGAN (DeepFill v1) for --infill cagan: import the official weights, train them, look at the results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Preset = enum.Enum("Preset", {p: p for p in ("tiny", "demo", "full")}, type=str)
Device = enum.Enum("Device", {m: m for m in ("auto", "cpu", "cuda")}, type=str)


fail = partial(cli_errors.fail, "augment cagan")


@app.command("import")
def import_(
    src: Path = typer.Argument(
        ...,
        metavar="SRC",
        help="The official TF checkpoint folder (release_imagenet_256/: checkpoint, snap-0.index, "
        "snap-0.data-00000-of-00001) or the PyTorch conversion torch_model.p.",
    ),
    out: Path = typer.Option(..., "--out", help="Our safetensors file, e.g. cagan_weights/imagenet.safetensors."),
) -> None:
    """Convert upstream DeepFill v1 weights to our safetensors layout (strict: every tensor, right shapes)."""
    from augment.cagan.tfbundle import BundleError
    from augment.cagan.weights import WeightsError, import_weights, save
    from augment.contract.shards import sha256_file

    try:
        state, kind = import_weights(src)
    except (WeightsError, BundleError) as e:
        fail(str(e), 2)
    save(out, state, source=f"{kind}:{src.name}")
    typer.echo(
        f"wrote {len(state)} tensors ({sum(t.numel() for t in state.values()):,} parameters) from {src} "
        f"to {out} (sha256 {sha256_file(out)[:12]})"
    )


@app.command()
def train(
    shards: Path = typer.Option(..., help="A build folder: trains on its train split, evaluates on its val split."),
    out: Path = typer.Option(..., "--out", help="The safetensors file to write (cagan_weights/NAME.safetensors)."),
    preset: Preset = typer.Option(Preset.full, help="full (official network, 256 px; GPU), demo (CPU, minutes), tiny."),
    steps: int | None = typer.Option(None, min=1, help="Training steps [default: the preset's]."),
    batch_size: int | None = typer.Option(None, min=1, help="Images per step [default: the preset's]."),
    size: int | None = typer.Option(None, min=8, help="Working side, a multiple of 8 [default: as stored]."),
    hole_min: float | None = typer.Option(None, min=0.05, max=0.95, help="Smallest random-rectangle side (fraction)."),
    hole_max: float | None = typer.Option(None, min=0.05, max=0.95, help="Largest random-rectangle side (fraction)."),
    init: Path | None = typer.Option(None, help="Start from these weights (fine-tuning), e.g. imported ones."),
    run_dir: Path | None = typer.Option(None, help="Checkpoints and logs [default: runs/cagan/<out name>]."),
    resume: bool = typer.Option(False, help="Continue from <run-dir>/state.pt exactly."),
    device: Device = typer.Option(Device.auto, help="auto = CUDA when present."),
    seed: int = typer.Option(0, help="Seed for the holes, batches and initialisation."),
) -> None:
    """Self-supervised training on the build's backgrounds: holes that avoid the objects, DeepFill v1 losses."""
    from augment.cagan.train import PRESETS, TrainConfig
    from augment.cagan.train import train as run
    from augment.contract.shards import ShardError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = {"steps": steps, "batch_size": batch_size, "size": size, "hole_min": hole_min, "hole_max": hole_max}
    config = TrainConfig(**{**PRESETS[preset.value], **{k: v for k, v in given.items() if v is not None}, "seed": seed})
    if init is not None and config.cnum != 32:
        config.cnum = 32  # imported weights are the official width
    try:
        result = run(
            shards,
            out,
            config,
            run_dir=run_dir or Path("runs/cagan") / out.stem,
            init=init,
            resume=resume,
            device=device.value,
        )
    except ShardError as e:  # bad data in the build: a failed check
        fail(f"{e} (run `augment verify {shards}` to list every problem, then rebuild)", 1)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    final = result["final"]
    typer.echo(
        f"wrote {out}; masked L1 on {config.eval_holes} held-out holes: cagan {final['cagan_l1']:.4f}, "
        f"tile {final['tile_l1']:.4f}"
    )
    typer.echo(json.dumps(final))


@app.command()
def preview(
    shards: Path = typer.Option(..., help="A build folder."),
    out: Path = typer.Option(..., "--out", help="PNG to write."),
    weights: Path | None = typer.Option(None, help="Our safetensors weights [default: the one in cagan_weights/]."),
    split: str = typer.Option("val", help="Which split to draw samples from."),
    rows: int = typer.Option(8, min=1, help="Samples to show."),
    device: Device = typer.Option(Device.auto, help="auto = CUDA when present."),
) -> None:
    """A sheet of original | hole (the object's rectangle) | CAGAN | tile, to judge the inpainting by eye."""
    from augment.cagan.preview import preview as draw
    from augment.cagan.weights import WeightsError, default_weights
    from augment.contract.shards import ShardError

    try:
        dest = draw(weights or default_weights(), shards, out, split=split, rows=rows, device=device.value)
    except ShardError as e:  # bad data in the build: a failed check
        fail(f"{e} (run `augment verify {shards}` to list every problem, then rebuild)", 1)
    except (WeightsError, ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    typer.echo(f"wrote {dest}")
