"""The ``augment`` command line: build, info, verify, preview, datasets. Typer only; the work lives elsewhere.

augment build --dataset synthetic --infill tile --factual shuffle --out shards/demo
augment info shards/demo
augment verify shards/demo
augment preview shards/demo --out preview.png
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import sys
from pathlib import Path

import typer

from augment import infill, schema
from augment.datasets import DATASETS

# Choices are built from the registries, so a new method or dataset appears here by registering itself.
DatasetName = enum.Enum("DatasetName", {n: n for n in DATASETS}, type=str)
CfMethod = enum.Enum("CfMethod", {n: n for n in infill.names(infill.CF)}, type=str)
FMethod = enum.Enum("FMethod", {n: n for n in infill.names(infill.F)}, type=str)

app = typer.Typer(
    help="Precompute counterfactual (CF) and factual (F) images into WebDataset shards (Chang et al., CVPR 2021).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(message: str, code: int = 1) -> None:
    """One line on stderr, then exit: 2 for a usage problem, 1 for a failed run."""
    typer.echo(f"augment: error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def build(
    out: Path = typer.Option(..., "--out", help="Output folder: <out>/<split>/shard-NNNNNN.tar and manifest.json."),
    dataset: DatasetName = typer.Option("synthetic", help="Source dataset (see `augment datasets`)."),
    infill_: list[CfMethod] = typer.Option(
        [], "--infill", help="CF method: remove the object, fill its rectangle. Repeat for several."
    ),
    factual: list[FMethod] = typer.Option(
        [], "--factual", help="F method: keep the object, replace the background. Repeat for several."
    ),
    copies: int = typer.Option(1, min=1, help="Independent draws stored per stochastic method (random, shuffle, ...)."),
    seed: int = typer.Option(0, help="Build seed: same command + same seed = byte-identical shards."),
    image_size: int | None = typer.Option(
        None, help="Stored image size in pixels [default: the dataset's, 64 for synthetic]."
    ),
    size: int | None = typer.Option(None, min=1, help="synthetic: training images (val and each test split get 1/5)."),
    bias: float | None = typer.Option(
        None, min=0.0, max=1.0, help="synthetic: P(class c on background family c) in train/val [default: 0.9]."
    ),
    shard_size: int = typer.Option(1000, min=1, help="Samples per shard."),
    workers: int | None = typer.Option(None, min=1, help="Parallel worker processes [default: all cores]."),
    overwrite: bool = typer.Option(False, help="Replace an earlier build in --out (other files are left alone)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Build CF/F shards of a dataset, with a manifest that makes the build reproducible and verifiable."""
    from augment.build import BuildConfig, BuildError, OutFolderError
    from augment.build import build as run_build

    options = {k: v for k, v in {"size": size, "bias": bias}.items() if v is not None}
    if options and dataset.value != "synthetic":
        fail(f"{', '.join('--' + k for k in options)} only apply to --dataset synthetic (got {dataset.value})", 2)
    config = BuildConfig(
        dataset=dataset.value,
        infill=[m.value for m in infill_],
        factual=[m.value for m in factual],
        copies=copies,
        seed=seed,
        image_size=image_size,
        shard_size=shard_size,
        dataset_options=options,
    )
    try:
        config.validate()
    except ValueError as e:
        fail(str(e), 2)
    command = shlex.join(
        ["augment", "build", "--dataset", config.dataset]
        + [a for m in config.infill for a in ("--infill", m)]
        + [a for m in config.factual for a in ("--factual", m)]
        + ["--copies", str(copies), "--seed", str(seed), "--shard-size", str(shard_size)]
        + (["--image-size", str(image_size)] if image_size else [])
        + [a for k, v in options.items() for a in (f"--{k}", str(v))]
        + ["--out", str(out)]
    )
    try:
        manifest = run_build(
            out, config, workers=workers or os.cpu_count() or 1, overwrite=overwrite, command=command,
            argv=sys.argv, progress=not quiet,
        )  # fmt: skip
    except OutFolderError as e:
        fail(str(e), 2)
    except BuildError as e:
        fail(str(e))
    except ValueError as e:
        fail(str(e), 2)
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    typer.echo(f"wrote {manifest['num_samples']} samples in {shards} shards to {out} ({out / schema.MANIFEST})")


@app.command()
def info(
    out: Path = typer.Argument(..., help="A build folder (holds manifest.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """What a build holds: provenance, methods, fields, and counts per split and class."""
    try:
        manifest = schema.read_manifest(out)
    except (OSError, ValueError) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    tool, ds, methods = manifest["tool"], manifest["dataset"], manifest["methods"]
    classes = ds["classes"]
    lines = [
        f"{out}: {manifest['format']} v{manifest['format_version']}, augment {tool['version']}"
        + (f" (git {tool['git_sha'][:12]})" if tool.get("git_sha") else ""),
        f"command:  {manifest['command']}",
        f"dataset:  {ds['name']}  fingerprint {ds['fingerprint'][:16]}  seed {manifest['seed']}"
        f"  image size {manifest['image_size']}",
        f"methods:  CF {', '.join(methods['cf']) or '-'};  F {', '.join(methods['f']) or '-'};"
        f"  copies {methods['copies']}",
        "",
        f"{'split':<12}{'samples':>8}{'shards':>7}{'MB':>8}  {'CF/F':<5}" + "".join(f"{c[:9]:>10}" for c in classes),
    ]
    total_bytes = 0
    for split, s in manifest["splits"].items():
        size = sum(x["bytes"] for x in s["shards"])
        total_bytes += size
        lines.append(
            f"{split:<12}{s['num_samples']:>8}{len(s['shards']):>7}{size / 1e6:>8.1f}"
            + f"  {'yes' if s['augmented'] else 'no':<5}"
            + "".join(f"{s['per_class'].get(c, 0):>10}" for c in classes)
        )
    n_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    lines += ["", f"total: {manifest['num_samples']} samples in {n_shards} shards, {total_bytes / 1e6:.1f} MB"]
    augmented = next((s for s in manifest["splits"].values() if s["augmented"]), None)
    if augmented:
        lines.append(f"fields (augmented splits): {' '.join(augmented['fields'])}")
    typer.echo("\n".join(lines))


@app.command()
def verify(
    out: Path = typer.Argument(..., help="A build folder (holds manifest.json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Recompute every checksum and decode every sample; exit 1 on any problem."""
    from augment.verify import verify as run_verify

    problems, read = run_verify(out, progress=not quiet)
    if problems:
        for p in problems:
            typer.echo(p, err=True)
        fail(f"{len(problems)} problem(s) in {out}; rebuild the affected splits with the manifest's command")
    typer.echo(f"OK: {read} samples in {out} match {out / schema.MANIFEST}")


@app.command()
def preview(
    out: Path = typer.Argument(..., help="A build folder (holds manifest.json)."),
    dest: Path = typer.Option(Path("preview.png"), "--out", help="PNG file to write."),
    split: str | None = typer.Option(None, help="Split to show [default: the first one with CF/F images]."),
    rows: int = typer.Option(8, min=1, help="Samples (rows); one per class first."),
    cell: int = typer.Option(128, min=16, help="Cell size in pixels."),
) -> None:
    """Contact sheet: rows = samples, columns = original | mask | each CF | each F."""
    from augment.preview import preview as run_preview

    try:
        path = run_preview(out, dest, split=split, rows=rows, cell=cell)
    except (OSError, ValueError) as e:
        fail(str(e))
    typer.echo(str(path))


@app.command()
def datasets() -> None:
    """List the registered datasets and infill methods."""
    lines = ["datasets:"] + [f"  {e.name:<12} {e.summary}" for e in DATASETS.values()]
    lines += ["", "infill methods (--infill: CF, --factual: F):"]
    for m in infill.INFILLS.values():
        roles = "/".join(r.upper() for r in infill.ROLES if r in m.roles)
        lines.append(f"  {m.name:<12} {roles:<5} {m.summary}")
    typer.echo("\n".join(lines))


def main() -> None:
    app()
