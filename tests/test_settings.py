"""Every setting has one home (issue #30): `augment build` takes its defaults from ``BuildConfig`` and its dataset
options from the adapters' signatures; one resolver of ``--device`` for both stages; one temp-file-then-rename
writer for both stages."""

from __future__ import annotations

import ast
import enum
from dataclasses import MISSING, fields
from pathlib import Path

import typer.main

from augment.cli import weights_param
from augment.config import BuildConfig
from augment.infill import INFILLS

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "augment" / "cli.py"


def function(path: Path, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(ast.parse(path.read_text(), str(path))) if getattr(n, "name", None) == name)


def build_params() -> dict[str, object]:
    """`augment build`'s click parameters by name (``infill_`` as ``infill``)."""
    from augment.cli import app

    command = typer.main.get_command(app).commands["build"]
    return {p.name.rstrip("_"): p for p in command.params}


def config_default(key: str) -> object:
    spec = BuildConfig.__dataclass_fields__[key]
    return spec.default_factory() if spec.default is MISSING else spec.default


# ---- augment build: every default from BuildConfig, every dataset option from the adapters --------------------------


def test_build_takes_every_default_from_build_config() -> None:
    """No option of a BuildConfig field types its own default: it is ``default("<field>")``, so that changing the
    dataclass changes the CLI, and the two cannot disagree."""
    keys = {f.name for f in fields(BuildConfig)}
    typed = []
    node = function(CLI, "build")
    for arg, value in zip(
        node.args.args[len(node.args.args) - len(node.args.defaults) :], node.args.defaults, strict=True
    ):
        key = arg.arg.rstrip("_")
        if key not in keys:
            continue
        first = value.args[0] if isinstance(value, ast.Call) and value.args else None
        ok = (
            isinstance(first, ast.Call)
            and getattr(first.func, "id", None) == "default"
            and [a.value for a in first.args if isinstance(a, ast.Constant)] == [key]
        )
        if not ok:
            typed.append(f"--{key.replace('_', '-')}: {ast.unparse(first) if first is not None else 'no default'}")
    assert typed == [], f"augment build types BuildConfig defaults itself: {typed}"


def test_build_shows_and_uses_the_build_config_defaults() -> None:
    params = build_params()
    flagged = [f.name for f in fields(BuildConfig) if f.name in params]
    # every field but dataset_options (the adapters' flags) and weights (the model methods' --NAME-weights)
    assert len(flagged) == len(fields(BuildConfig)) - 2
    for key in flagged:
        shown = params[key].default
        shown = shown.value if isinstance(shown, enum.Enum) else shown
        assert shown == config_default(key), key


def test_the_dataset_options_are_the_adapters_keywords() -> None:
    """One flag per keyword of a registered adapter factory (beyond seed, image_size, on_error), and no other
    dataset option: each comes from the ``Flag`` the adapter declares in its signature, one per keyword."""
    from augment.datasets import BUILD_KEYWORDS, DATASETS, adapter_options, option_default, option_flag

    params = build_params()
    keys = {f.name for f in fields(BuildConfig)}
    cli_only = {"out", "workers", "scheduler", "shard_range", "overwrite", "quiet"}  # leave the bytes alone
    cli_only |= {weights_param(n) for n, m in INFILLS.items() if m.needs_model}  # BuildConfig.weights, per method
    shipped = [e for e in DATASETS.values() if e.factory.__module__.startswith("augment.datasets.")]  # not tests'
    names = {k for e in shipped for k in adapter_options(e)}
    assert len(shipped) == 6 and set(params) - keys - cli_only == names
    assert not set(BUILD_KEYWORDS) - keys
    for key in names:
        option_default(key)  # the adapters that take it agree on its default
        assert option_flag(key) is not None, key  # and declare one Flag for it


def test_a_new_adapter_brings_its_flags_with_its_registration(monkeypatch) -> None:
    """A keyword no adapter had before becomes a `build` option, typed and bounded as its ``Flag`` says, and
    reaches ``BuildConfig.dataset_options`` like the shipped ones (``given_dataset_options``)."""
    from typing import Annotated

    import typer
    from typer.testing import CliRunner

    from augment import datasets
    from augment.cli import given_dataset_options, with_registry_options
    from augment.datasets import Flag

    def make_fake(*, seed: int = 0, image_size: int | None = None, on_error: str = "fail", levels: int = 3, **_):
        raise AssertionError("not built here")

    make_fake.__annotations__["levels"] = Annotated[int, Flag("fake: how many levels [default: {default}].", int, 2)]
    monkeypatch.setitem(datasets.DATASETS, "fake", datasets.DatasetEntry("fake", make_fake, "a fake adapter"))
    seen = {}

    def command(ctx: typer.Context, on_error: str = "fail", masks_from: str = "annotation", **registered: object):
        seen.update(given_dataset_options(ctx))

    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    app.command()(with_registry_options(command))
    runner = CliRunner()
    assert runner.invoke(app, ["--levels", "5", "--size", "30"]).exit_code == 0
    assert seen == {"size": 30, "levels": 5}
    refused = runner.invoke(app, ["--levels", "1"])
    assert refused.exit_code == 2 and "--levels" in refused.output
    assert "fake: how many levels [default: 3]." in runner.invoke(app, ["--help"], terminal_width=200).output


def test_a_registered_option_that_is_taken_or_malformed_is_refused(monkeypatch) -> None:
    """A keyword that clashes with one of `build`'s own options, or a Flag whose parts do not go together, fails
    in one line when the CLI is made, not as a confusing typer error."""
    from typing import Annotated

    import pytest

    from augment import datasets
    from augment.cli import with_registry_options
    from augment.datasets import Flag

    with pytest.raises(ValueError, match="choices are for a text option"):
        Flag("x", list, choices=("a", "b"))
    with pytest.raises(ValueError, match="min and max are for a number"):
        Flag("x", min=1)

    def make_fake(*, seed: int = 0, image_size: int | None = None, on_error: str = "fail", quiet: int = 1):
        raise AssertionError("not built here")

    make_fake.__annotations__["quiet"] = Annotated[int, Flag("fake: quiet", int)]
    monkeypatch.setitem(datasets.DATASETS, "fake", datasets.DatasetEntry("fake", make_fake, "a fake adapter"))

    def command(quiet: bool = False, on_error: str = "fail", masks_from: str = "annotation", **registered: object):
        pass

    with pytest.raises(ValueError, match="a registered option --quiet is taken already") as refused:
        with_registry_options(command)
    assert "\n" not in str(refused.value)


# ---- one --device resolver ------------------------------------------------------------------------------------------


def calls(folder: Path, attribute: str) -> set[str]:
    """``path:function`` of every call of ``<x>.<attribute>(...)`` under ``folder``."""
    found = set()
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == attribute:
                    found.add(f"{path.relative_to(ROOT)}:{fn.name}")
    return found


def test_one_device_resolver() -> None:
    """``--device auto`` (CUDA when present) is decided in one place, ``augment.contract.zoo.devices.resolve_device``,
    for both stages; CUDA's presence is otherwise only asked where no device is chosen (pinned memory, RNG state)."""
    found = calls(ROOT / "augment", "is_available") | calls(ROOT / "train", "is_available")
    assert found == {
        "augment/contract/zoo/devices.py:resolve_device",
        "train/data.py:loader",
        "train/train.py:rng_state",
        "train/train.py:set_rng_state",
    }


# ---- one atomic writer -----------------------------------------------------------------------------------------------

WRITER = "augment/contract/files.py"


def renames(folder: Path) -> set[str]:
    """``path:line`` of every rename: ``os.replace``/``os.rename``, ``Path.rename``, ``Path.replace(target)`` (one
    argument: ``str.replace`` takes two)."""
    found = set()
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name, owner = node.func.attr, node.func.value
            if (
                (name in ("replace", "rename") and getattr(owner, "id", None) == "os")
                or name == "rename"
                or (name == "replace" and len(node.args) == 1 and not node.keywords)
            ):
                found.add(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_one_temp_file_then_rename_writer() -> None:
    """Every file written to a temp name and renamed goes through ``augment.contract.files.write_atomic``."""
    found = renames(ROOT / "augment") | renames(ROOT / "train")
    others = sorted(f for f in found if f.split(":")[0] != WRITER)
    assert others == [], f"temp-then-rename outside {WRITER}: {others}"
    assert any(f.startswith(WRITER) for f in found)


def test_the_atomic_writer(tmp_path: Path) -> None:
    from augment.contract.files import write_atomic, write_text_atomic

    path = tmp_path / "a.json"
    assert write_text_atomic(path, "old\n", fsync=True) == path and path.read_text() == "old\n"

    def half(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError("disk full")

    try:
        write_atomic(path, half)
    except OSError:
        pass
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert write_atomic(path, lambda tmp: tmp.write_text("new\n"), unique=True) == 4 and path.read_text() == "new\n"
