"""The ``augment`` command line: build, info, verify, preview, datasets. Typer only; the work lives elsewhere.

augment build --dataset synthetic --infill tile --factual shuffle --out shards/demo
augment info shards/demo
augment verify shards/demo
augment preview shards/demo --out preview.png
"""

from __future__ import annotations

import enum
import inspect
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import MISSING, fields
from functools import partial
from pathlib import Path
from typing import Any

import click
import typer

from augment import infill, options
from augment.config import BACKGROUND_RULES, BANK_FROM_DATASET, ON_ERROR, BuildConfig
from augment.contract import cli_errors, schema
from augment.contract.cli_errors import CHECK_FAILED, EXIT_CODES, USAGE, OneLineErrors, out_problem, shown, shown_all
from augment.contract.zoo.devices import DEVICES
from augment.datasets import DATASETS, adapter_options, option_default, option_flag, option_names
from augment.datasets.synthetic import Synthetic
from augment.mask_sources import MASK_SOURCES

# Choices are built from the registries, so a new method or dataset appears here by registering itself.
DatasetName = enum.Enum("DatasetName", {n: n for n in DATASETS}, type=str)
MasksFrom = enum.Enum("MasksFrom", {n: n for n in MASK_SOURCES}, type=str)


def method_parser(role: str, other_flag: str):
    """A parser for a ``--infill`` (``role`` CF) or ``--factual`` (F) value: a method of the other role is refused
    naming the option that takes it (``--infill mixed-rand``: use ``--factual mixed-rand``). The `train` CLI's
    --cf/--f can use it too."""

    def parse(value: str) -> str:
        valid = infill.names(role)
        if value in valid:
            return value
        message = f"{value!r} is not one of {', '.join(map(repr, valid))}"
        if value in infill.INFILLS:
            kind = "a CF" if role == infill.F else "an F"
            message += f"; {value} is {kind} method: use {other_flag} {value}"
        raise typer.BadParameter(message)

    return parse


def method_metavar(role: str) -> str:
    return f"<{'|'.join(infill.names(role))}>"


app = typer.Typer(
    cls=OneLineErrors,
    help="Precompute counterfactual (CF) and factual (F) images into WebDataset shards (Chang et al., CVPR 2021; "
    "the method, in the repository: docs/METHOD.md).\n\n" + EXIT_CODES,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


OnError = enum.Enum("OnError", {m: m for m in ON_ERROR}, type=str)
Device = enum.Enum("Device", {m: m for m in DEVICES}, type=str)
BackgroundRule = enum.Enum("BackgroundRule", {m: m for m in BACKGROUND_RULES}, type=str)


def default(key: str) -> Any:
    """The default of ``BuildConfig`` field ``key``: `augment build` shows and uses it, never a copy of it (one home
    for every build setting; tests/test_settings.py checks that no option of a field types its own)."""
    spec = BuildConfig.__dataclass_fields__[key]
    return spec.default_factory() if spec.default is MISSING else spec.default


def given_dataset_options(ctx: click.Context) -> dict[str, Any]:
    """The dataset options given to `augment build`: each of its parameters that is an option of a registered adapter
    (``augment.datasets.option_names``, from the adapters' signatures), when set, as the adapter takes it (a choice
    as its value, a path as a string). In the order the chosen adapter's factory declares them, which the recorded
    command keeps; an option it does not take comes after, for ``get_dataset`` to refuse."""
    adapters = set(option_names())
    options = {}
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if param.name in adapters and value not in (None, [], ()):
            options[param.name] = (
                value.value if isinstance(value, enum.Enum) else str(value) if isinstance(value, Path) else value
            )
    dataset = ctx.params.get("dataset")
    own = list(adapter_options(DATASETS[dataset.value])) if dataset is not None else []
    return {key: options[key] for key in [*own, *options] if key in options}


def option_args(key: str, value: object) -> list[str]:
    """``--flag value`` pairs for the canonical command (a list option repeats its flag; a switch is ``--flag`` or
    ``--no-flag``)."""
    if isinstance(value, bool):
        return ["--" + ("" if value else "no-") + key.replace("_", "-")]
    values = value if isinstance(value, list) else [value]
    return [a for v in values for a in ("--" + key.replace("_", "-"), str(v))]


def build_command(config: BuildConfig, out: Path) -> str:
    """The canonical `augment build` command of a resolved ``config``, recorded in the manifest: every field that is
    set, in field order: each adapter option and each model's weights file (the resolved --cagan-weights included,
    in registry order) as its own flag, then --out.

    Every value is written, defaults too, so the command builds the same shards under a version with other
    defaults; re-parsed by this CLI it gives back ``config`` (tests/train/test_config.py). The options that leave the
    bytes alone (--workers, --scheduler, --shard-range, --overwrite, -q) are not part of it: the slices of one build
    record one command."""
    args = ["augment", "build"]
    for spec in fields(config):
        value = getattr(config, spec.name)
        if spec.name == "dataset_options":
            args += [a for k, v in value.items() for a in option_args(k, v)]
        elif spec.name == "weights":
            args += [a for name, path in value.items() for a in (infill.weights_flag(name), path)]
        elif value is not None:
            args += option_args(spec.name, value)
    return shlex.join([*args, "--out", str(out)])


fail = partial(cli_errors.fail, "augment")  # one line on stderr, then exit (see augment.contract.cli_errors)


def open_build(out: Path, flag: str = "") -> dict:
    """The manifest of the build folder ``out`` (named as ``flag out`` in messages), or exit: USAGE when ``out`` is
    not a build folder (missing, a file, no manifest.json), CHECK_FAILED when its manifest is damaged."""
    from augment.verify import REBUILD, shape_problem

    name = f"{flag} {out}" if flag else str(out)
    expected = "pass the --out folder of an `augment build` (it holds manifest.json)"
    if not out.exists():
        fail(f"{name}: no such folder; {expected}", USAGE)
    if not out.is_dir():
        fail(f"{name} is a file; expected a build folder (holding {schema.MANIFEST})", USAGE)
    if not (out / schema.MANIFEST).is_file():
        fail(f"{name}: not a build folder (no {schema.MANIFEST}); {expected}", USAGE)
    try:
        manifest = schema.read_manifest(out)
    except (OSError, ValueError) as e:
        fail(str(e))
    if (shape := shape_problem(manifest)) is not None:
        fail(f"{out / schema.MANIFEST}: {shape}; {REBUILD}")
    return manifest


def weights_param(name: str) -> str:
    """The ``build`` parameter of model method ``name``'s weights flag (``--cagan-weights``: ``cagan_weights``)."""
    return infill.weights_flag(name).removeprefix("--").replace("-", "_")


def weights_given(registered: dict[str, Any]) -> dict[str, str]:
    """The weights files given to `augment build`, by model method (``BuildConfig.weights``)."""
    given = {n: registered.get(weights_param(n)) for n, m in infill.INFILLS.items() if m.needs_model}
    return {name: str(path) for name, path in given.items() if path is not None}


def weights_options() -> list[inspect.Parameter]:
    """One ``--NAME-weights`` option per registered model infill, its help from the method's ``ModelInfill``."""
    return [
        keyword(weights_param(name), Path | None, typer.Option(None, infill.weights_flag(name), help=method.model.help))
        for name, method in infill.INFILLS.items()
        if method.needs_model
    ]


def dataset_options() -> list[inspect.Parameter]:
    """One option per keyword of the registered adapters (``--size`` ... ``--boxes``), as its ``Flag`` declares it
    in the adapter's signature (``augment.datasets.Flag``); unset, the adapter's own default applies."""
    params = []
    for key in option_names():
        flag = option_flag(key)
        if flag is None:
            continue
        text = flag.help.replace("{default}", str(option_default(key)))
        annotation: Any = flag.kind | None
        if flag.choices:
            annotation = enum.Enum(key.title().replace("_", ""), {c: c for c in flag.choices}, type=str) | None
        elif flag.kind is list:
            annotation = list[str]
        option = typer.Option(
            [] if flag.kind is list else None,
            "--" + key.replace("_", "-"),
            help=text,
            min=flag.min,
            max=flag.max,
            metavar=flag.metavar,
        )
        params.append(keyword(key, annotation, option))
    return params


def keyword(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=annotation)


def with_registry_options(command: Callable) -> Callable:
    """``command`` with the options its registries declare, so that a new adapter or model method brings its flags
    with its registration: the dataset options before ``--on-error``, the weights options before ``--masks-from``.
    The command takes them as keyword arguments (``**registered``)."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    for anchor, added in (("on_error", dataset_options()), ("masks_from", weights_options())):
        taken = [p.name for p in added if p.name in {q.name for q in params}]
        if taken:
            raise ValueError(f"{command.__name__}: a registered option --{taken[0].replace('_', '-')} is taken already")
        at = [p.name for p in params].index(anchor)
        params[at:at] = added
    command.__signature__ = signature.replace(parameters=params)
    return command


@app.command()
@with_registry_options
def build(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Output folder: <out>/<split>/shard-NNNNNN.tar and manifest.json."),
    dataset: DatasetName = typer.Option(default("dataset"), help="Source dataset (see `augment datasets`)."),
    infill_: list[str] = typer.Option(
        default("infill"),
        "--infill",
        parser=method_parser(infill.CF, "--factual"),
        metavar=method_metavar(infill.CF),
        help="CF method: remove the object, fill its rectangle. Repeat for several.",
    ),
    factual: list[str] = typer.Option(
        default("factual"),
        "--factual",
        parser=method_parser(infill.F, "--infill"),
        metavar=method_metavar(infill.F),
        help="F method: keep the object, replace the background. Repeat for several.",
    ),
    copies: int = typer.Option(
        default("copies"), min=1, help="Independent draws stored per stochastic method (random, shuffle, ...)."
    ),
    seed: int = typer.Option(default("seed"), help="Build seed: same command + same seed = byte-identical shards."),
    image_size: int | None = typer.Option(
        default("image_size"), min=16, help="Stored image size in pixels [default: the dataset's, 64 for synthetic]."
    ),
    on_error: OnError = typer.Option(
        default("on_error"), help="Bad source input: stop, or skip it and record it in <out>/rejects.jsonl."
    ),
    masks_from: MasksFrom = typer.Option(
        default("masks_from"),
        help="Where object masks come from: "
        + "; ".join(f"{n}: {s.summary}" for n, s in MASK_SOURCES.items())
        + ". A produced mask outside the quality gate falls back to the box (docs/METHOD.md, Masks).",
    ),
    mask_weights: Path | None = typer.Option(
        default("mask_weights"),
        help="--masks-from sam: a local SAM checkpoint (.pth); cam: a `train fit` checkpoint or classifier weights.",
    ),
    shifted_tests: bool = typer.Option(
        default("shifted_tests"),
        help="Also write the Backgrounds Challenge variants of every test split whose samples have object masks, "
        "each as its own split: <split>.only_fg, .no_fg, .only_bg_t, .mixed_same, .mixed_rand, .mixed_next; each "
        "mixed record names its donor; `train fit` then reports BG-gap and background reliance (docs/METHOD.md).",
    ),
    backgrounds: str | None = typer.Option(
        default("backgrounds"),
        metavar=f"<FOLDER|{BANK_FROM_DATASET}>",
        help="--factual bank: a folder of background photos (searched recursively; each record names its photo and "
        f"sha256), or {BANK_FROM_DATASET}: the dataset's own object-free images of the split (cct's empty frames).",
    ),
    background_rule: BackgroundRule = typer.Option(
        default("background_rule"),
        help="--factual bank: any (uniformly from the bank), or same-class-location (with --backgrounds dataset: an "
        "empty frame of another training location where the object's class occurs; Gao et al., ICML 2023).",
    ),
    device: Device = typer.Option(
        default("device"), help="Where models (cagan, lama, migan, --masks-from sam/cam) run: auto = CUDA when present."
    ),
    batch_size: int = typer.Option(
        default("batch_size"), min=1, help="Images per model call (cagan, lama, migan, --masks-from sam/cam)."
    ),
    shard_size: int = typer.Option(default("shard_size"), min=1, help="Samples per shard."),
    workers: int | None = typer.Option(None, min=1, help="Parallel worker processes [default: all cores]."),
    scheduler: str | None = typer.Option(
        None,
        help="Run the shard tasks on the dask.distributed cluster at this address (tcp://HOST:PORT) instead of "
        "local processes; --out and the source must be on a path every worker sees.",
    ),
    shard_range: str | None = typer.Option(
        None,
        help="Build only shards START:STOP of the build's global shard list (STOP exclusive), e.g. one slice per "
        "array job into one shared --out; then `augment merge OUT` writes the manifest.",
    ),
    overwrite: bool = typer.Option(
        False, help="Replace an earlier build of another command in --out (other files are left alone)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **registered: Any,
) -> None:
    """Build CF/F shards of a dataset, with a manifest that makes the build reproducible and verifiable.

    Re-running the same command resumes an interrupted build (even one killed with SIGKILL): it keeps every shard
    whose sha256 matches its record and rebuilds the rest, ending byte-identical to an uninterrupted build.
    """
    from augment.errors import BuildError, OutFolderError
    from augment.read import SourceError
    from augment.runner.build import build as run_build

    given = given_dataset_options(ctx)  # the adapters' own options (--size, --root, ...), as given
    if dataset.value == Synthetic.name:  # the recorded command names the size and bias it was built with
        given = {"size": Synthetic.size, "bias": Synthetic.bias, **given}
    config = BuildConfig(
        dataset=dataset.value,
        infill=list(infill_),
        factual=list(factual),
        copies=copies,
        seed=seed,
        image_size=image_size,
        shard_size=shard_size,
        on_error=on_error.value,
        dataset_options=given,
        weights=weights_given(registered),
        device=device.value,
        batch_size=batch_size,
        masks_from=masks_from.value,
        mask_weights=str(mask_weights) if mask_weights else None,
        shifted_tests=shifted_tests,
        backgrounds=backgrounds,
        background_rule=background_rule.value,
    )
    try:
        options.check(config)
    except ValueError as e:
        fail(str(e), USAGE)
    try:
        manifest = run_build(
            out,
            config,
            workers=workers or os.cpu_count() or 1,
            overwrite=overwrite,
            command=build_command(config, out),
            progress=not quiet,
            scheduler=scheduler,
            shard_range=shard_range,
        )
    except OutFolderError as e:
        fail(str(e), USAGE)
    except BuildError as e:
        fail(str(e))
    except OSError as e:  # --out not writable (a usage error), or the source's files
        if (problem := out_problem(out, e)) is not None:
            fail(f"--out {out}: {problem}; choose a writable folder", USAGE)
        fail(str(e), USAGE if isinstance(e, FileNotFoundError) else CHECK_FAILED)
    except ValueError as e:  # bad options or a source layout that is not as documented
        fail(str(e), USAGE)
    except SourceError as e:  # a bad input found while scanning the dataset
        fail(f"{e} (pass --on-error skip to record bad inputs in rejects.jsonl and go on)")
    if shard_range is not None:
        m = manifest
        rest = (
            f"all {m['shards_total']} shards are built: run `augment merge {out}`"
            if m["shards_done"] == m["shards_total"]
            else f"{m['shards_done']} of {m['shards_total']} shards are built; when all are, run `augment merge {out}`"
        )
        typer.echo(
            f"built shards {m['slice'][0]}:{m['slice'][1]} ({m['built']} built, {m['kept']} kept, "
            f"{m['samples']} samples) in {out}; {rest}"
        )
        return
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    skipped = manifest["rejects"]["count"]
    note = f"; skipped {skipped} bad inputs, listed in {out / schema.REJECTS}" if skipped else ""
    typer.echo(f"wrote {manifest['num_samples']} samples in {shards} shards to {out} ({out / schema.MANIFEST}){note}")


@app.command()
def merge(
    out: Path = typer.Argument(
        ..., metavar="BUILD", help="The shared --out folder of a build made in slices with --shard-range."
    ),
) -> None:
    """Write the manifest of a build made in slices, once every slice is done (else name the missing ranges)."""
    from augment.errors import BuildError
    from augment.runner import journal
    from augment.runner.build import merge as run_merge

    if not out.is_dir():
        fail(
            f"{out}: {'is a file' if out.exists() else 'no such folder'}; expected the shared --out folder of "
            "`augment build --shard-range ...`",
            USAGE,
        )
    if not journal.journal(out).is_dir() and not (out / schema.MANIFEST).is_file():
        fail(
            f"{out}: not a build folder (no {journal.JOURNAL}/ plan, no {schema.MANIFEST}); expected the shared --out "
            "folder of `augment build --shard-range ...`",
            USAGE,
        )
    try:
        manifest = run_merge(out)
    except (BuildError, ValueError, OSError) as e:
        fail(str(e))
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    typer.echo(f"merged {manifest['num_samples']} samples in {shards} shards: {out / schema.MANIFEST}")


@app.command()
def info(
    out: Path = typer.Argument(..., metavar="BUILD", help="A build folder (holds manifest.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
    diff: Path | None = typer.Option(
        None,
        "--diff",
        help="Another build folder: list how the two builds differ (options, source fingerprint, "
        "tool, environment, counts, shards); exit 0 when they are the same, 1 when they differ.",
    ),
) -> None:
    """What a build holds: provenance, methods, fields, and counts per split and class; or, with --diff, how two
    builds differ."""
    from augment.verify import REBUILD

    manifest = open_build(out)
    other = open_build(diff, "--diff") if diff is not None else None
    try:
        if as_json and other is None:  # JSON escapes every control character itself
            typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
            return
        # every string of a manifest is a stranger's: printed escaped, none can move the cursor or write the clipboard
        if other is not None:
            from augment.runner.diff import diff_builds

            lines = [shown(line) for line in diff_builds(other, manifest)]
            text = "\n".join(lines) if lines else "the builds are the same: same options, source, tool and shards"
            typer.echo(f"A = {shown(str(diff))}\nB = {shown(str(out))}\n{text}")
            raise typer.Exit(CHECK_FAILED if lines else 0)
        typer.echo(describe(Path(shown(str(out))), shown_all(manifest)))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a shape shape_problem missed
        where = f"{out / schema.MANIFEST} or {diff / schema.MANIFEST}" if other is not None else out / schema.MANIFEST
        fail(f"{where}: not the shape `augment build` writes ({type(e).__name__}: {e}); {REBUILD}")


def describe(out: Path, manifest: dict) -> str:
    """The text of `augment info`: provenance, methods, and counts per split and class."""
    tool, ds, methods = manifest["tool"], manifest["dataset"], manifest["methods"]
    classes = ds["classes"]
    width = split_width(manifest)
    lines = [
        f"{out}: {manifest['format']} v{manifest['format_version']}, augment {tool['version']}"
        + (f" (git {tool['git_sha'][:12]})" if tool.get("git_sha") else ""),
        f"command:  {manifest['command']}",
        f"dataset:  {ds['name']}  fingerprint {ds['fingerprint'][:16]}  seed {manifest['seed']}"
        f"  image size {manifest['image_size']}",
        f"methods:  CF {', '.join(methods['cf']) or '-'};  F {', '.join(methods['f']) or '-'};"
        f"  copies {methods['copies']}",
        *(
            f"model:    {name} {m['weights']} (sha256 {m['sha256'][:12]}, {m['metadata'].get('source', '?')}) on "
            f"{m['device']}"
            for name, m in manifest.get("models", {}).items()
        ),
        *mask_lines(manifest),
        *shifted_lines(manifest),
        *bank_lines(manifest),
        "",
        f"{'split':<{width}}{'samples':>8}{'shards':>7}{'MB':>8}  {'CF/F':<5}"
        + "".join(f"{c[:9]:>10}" for c in classes),
    ]
    total_bytes = 0
    for split, s in manifest["splits"].items():
        size = sum(x["bytes"] for x in s["shards"])
        total_bytes += size
        lines.append(
            f"{split:<{width}}{s['num_samples']:>8}{len(s['shards']):>7}{size / 1e6:>8.1f}"
            + f"  {'yes' if s['augmented'] else 'no':<5}"
            + "".join(f"{s['per_class'].get(c, 0):>10}" for c in classes)
        )
    n_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    lines += ["", f"total: {manifest['num_samples']} samples in {n_shards} shards, {total_bytes / 1e6:.1f} MB"]
    augmented = next((s for s in manifest["splits"].values() if s["augmented"]), None)
    if augmented:
        lines.append(f"fields (augmented splits): {' '.join(augmented['fields'])}")
    return "\n".join(lines)


def split_width(manifest: dict) -> int:
    """The split column's width: 12, or wider for long names (the shifted test splits')."""
    return max([12, *(len(split) + 1 for split in manifest["splits"])])


def mask_lines(manifest: dict) -> list[str]:
    """Where the masks came from (``--masks-from``), and per split how many samples got each source."""
    masks = manifest.get("masks")
    if masks is None:  # a build of an earlier version
        return []
    weights = masks.get("weights")
    head = f"masks:    {masks['source']}" + (
        f" {weights['path']} (sha256 {weights['sha256'][:12]}) on {masks['device']}" if weights else ""
    )
    width = split_width(manifest)
    counts = [
        f"          {split:<{width}}" + ", ".join(f"{n} {src}" for src, n in s["mask_sources"].items())
        for split, s in manifest["splits"].items()
        if s.get("mask_sources")
    ]
    return [head + ("; samples per source:" if counts else ""), *counts]


def shifted_lines(manifest: dict) -> list[str]:
    """The shifted test splits (``--shifted-tests``): which base split got variants, and which none and why."""
    section = schema.parse_shifted_tests(manifest)
    if section is None:
        return []
    bases = ", ".join(section.pairs) or "none"
    return [
        f"shifted:  variants ({', '.join(section.variants)}) of {bases}",
        *[f"          not of {split}: {why}" for split, why in section.skipped.items()],
        *[f"          in {split}: {which}" for split, which in section.left_out.items()],
    ]


def bank_lines(manifest: dict) -> list[str]:
    """The background bank of ``--factual bank``: its source, size, fingerprint and rule, and per split how many
    backgrounds each kind of draw gave."""
    bank = manifest.get("backgrounds")
    if bank is None:
        return []
    width = split_width(manifest)
    head = (
        f"bank:     {bank['source']} {bank['root']}: {bank['files']} files (fingerprint {bank['fingerprint'][:16]}),"
        f" rule {bank['rule']}"
    )
    counts = [
        f"          {split:<{width}}" + ", ".join(f"{n} {how}" for how, n in s["background_draws"].items())
        for split, s in manifest["splits"].items()
        if s.get("background_draws")
    ]
    return [head + ("; draws per kind:" if counts else ""), *counts]


@app.command()
def verify(
    out: Path = typer.Argument(..., metavar="BUILD", help="A build folder (holds manifest.json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Recompute every checksum and decode every sample; list every problem found and exit 1 on any."""
    from augment.verify import verify as run_verify

    open_build(out)  # not a build folder: say so (exit 2) rather than count it as a problem of a build
    problems, read = run_verify(out, progress=not quiet)
    if problems:
        for p in problems:
            typer.echo(shown(p), err=True)  # a problem may quote a sample's name from the shards
        fail(
            f"{len(problems)} problem(s) in {out}; rebuild the affected shards by running the manifest's command "
            f"again (`augment info {out}` shows it): it keeps the intact shards and rebuilds the others"
        )
    typer.echo(f"OK: {read} samples in {out} match {out / schema.MANIFEST}")


@app.command()
def preview(
    out: Path = typer.Argument(..., metavar="BUILD", help="A build folder (holds manifest.json)."),
    dest: Path = typer.Option(Path("preview.png"), "--out", help="PNG file to write."),
    split: str | None = typer.Option(None, help="Split to show [default: the first one with CF/F images]."),
    rows: int = typer.Option(8, min=1, help="Samples (rows); one per class first."),
    cell: int = typer.Option(128, min=16, help="Cell size in pixels."),
    shifted: bool = typer.Option(
        False,
        help="Show the shifted test variants (augment build --shifted-tests) of --split [default: the first "
        "split that has them] instead: original | only_fg | no_fg | only_bg_t | mixed_same | mixed_rand | mixed_next.",
    ),
) -> None:
    """Contact sheet: rows = samples, columns = original | mask | each CF | each F (or, --shifted, each variant)."""
    from augment.contract.shards import ShardError
    from augment.preview import preview as run_preview
    from augment.preview import shifted_preview

    open_build(out)
    try:
        if shifted:
            path = shifted_preview(out, dest, base=split, rows=rows, cell=cell)
        else:
            path = run_preview(out, dest, split=split, rows=rows, cell=cell)
    except ShardError as e:  # bad data in the build
        fail(f"{e} (run `augment verify {out}` to list every problem)")
    except (OSError, ValueError) as e:  # an option the build cannot serve (--split), or --out
        fail(str(e), USAGE)
    typer.echo(str(path))


@app.command()
def datasets() -> None:
    """List the registered datasets (with the `build` options each takes), infill methods and mask sources."""
    width = max(len(n) for n in [*DATASETS, *infill.INFILLS, *MASK_SOURCES])
    lines = ["datasets:"]
    for e in DATASETS.values():
        flags = [f"--{k.replace('_', '-')}" for k in adapter_options(e) if option_flag(k) is not None]
        lines.append(f"  {e.name:<{width}} {e.summary}")
        if flags:
            lines.append(f"  {'':<{width}} options: {' '.join(flags)}")
    lines += ["", "infill methods (--infill: CF, --factual: F):"]
    for m in infill.INFILLS.values():
        roles = "/".join(r.upper() for r in infill.ROLES if r in m.roles)
        lines.append(f"  {m.name:<{width}} {roles:<5} {m.summary}")
    lines += ["", "mask sources (--masks-from):"]
    lines += [f"  {s.name:<{width}} {s.summary}" for s in MASK_SOURCES.values()]
    typer.echo("\n".join(lines))


def _add_cagan() -> None:
    from augment.cagan.cli import app as cagan_app

    app.add_typer(cagan_app, name="cagan")


_add_cagan()


def main() -> None:
    app()
