"""The model-infill seam: a second model method needs only its own registration (``augment.infill.ModelInfill``),
which brings its weights flag too."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from augment import cli as augment_cli
from augment import infill, options
from augment.cli import with_registry_options
from augment.config import BuildConfig
from augment.datasets import Sample
from augment.pipeline import Holes, fill_models
from augment.runner.provenance import model_provenance

ROOT = Path(__file__).resolve().parents[2]


def fake_model(tmp_path: Path, calls: list) -> infill.Infill:
    def check(weights: Path) -> None:
        if not weights.is_file():
            raise ValueError(f"--fake-weights {weights}: no such file")

    def runner(weights: Path, device: str, batch_size: int) -> int:
        calls.append((weights, device, batch_size))
        return 7

    def batch(images: list[np.ndarray], holes: list[np.ndarray], *, inpainter: int) -> list[np.ndarray]:
        return [infill.paste(image, hole, inpainter) for image, hole in zip(images, holes, strict=True)]

    model = infill.ModelInfill(
        "--infill fake: a fake file.", lambda: tmp_path / "default.bin", check, lambda w: {"kind": "fake"}, runner
    )
    template = infill.INFILLS["cagan"]
    return replace(template, name="fake", fill=lambda *a, **k: None, summary="fake", batch=batch, model=model)


def test_a_second_model_infill_plugs_in_through_its_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list = []
    monkeypatch.setitem(infill.INFILLS, "fake", fake_model(tmp_path, calls))
    assert infill.weights_flag("fake") == "--fake-weights"
    config = BuildConfig(infill=["fake"], device="cpu", batch_size=3)
    with pytest.raises(ValueError, match="--fake-weights .*default.bin: no such file"):
        options.check(config)  # the default was resolved through the seam, then checked
    (tmp_path / "default.bin").write_bytes(b"weights")
    options.check(config)
    assert options.model_weights(config, "fake") == tmp_path / "default.bin"
    assert config.weights == {"fake": str(tmp_path / "default.bin")}  # the manifest records the resolved file
    entry = model_provenance(config)["fake"]
    assert entry["weights"] == str(tmp_path / "default.bin") and entry["metadata"] == {"kind": "fake"}
    assert entry["device"] == "cpu" and entry["batch_size"] == 3 and len(entry["sha256"]) == 64

    image = np.full((8, 8, 3), 100, np.uint8)
    sample = Sample("k0", image, 0, "c", "train", "test", boxes=np.array([[2, 2, 6, 6]]))
    fills = fill_models([sample], [Holes.of(sample)], config)
    assert calls == [(tmp_path / "default.bin", "cpu", 3)]
    assert fills["k0"]["fake"][3, 3].tolist() == [7, 7, 7] and fills["k0"]["fake"][0, 0].tolist() == [100, 100, 100]


def test_a_second_model_infill_brings_its_weights_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(infill.INFILLS, "fake", fake_model(tmp_path, []))
    seen = {}

    def command(on_error: str = "fail", masks_from: str = "annotation", **registered: object) -> None:
        seen.update(registered)

    app = typer.Typer(rich_markup_mode=None)
    app.command()(with_registry_options(command))
    result = CliRunner().invoke(app, ["--fake-weights", "f.bin", "--cagan-weights", "c.safetensors"])
    assert result.exit_code == 0, result.output
    assert seen["fake_weights"] == Path("f.bin") and seen["cagan_weights"] == Path("c.safetensors")
    assert seen["lama_weights"] is None
    usage = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert "--fake-weights" in usage and "a fake file" in usage


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list:
    """`augment build` runs up to the build itself, which records (config, command) here instead; every model's
    check accepts any path and cagan's default file is ``d.safetensors``."""
    import augment.runner.build

    for name, method in list(infill.INFILLS.items()):
        if method.needs_model:
            model = replace(method.model, check=lambda w: None, default_weights=lambda: Path("d.safetensors"))
            monkeypatch.setitem(infill.INFILLS, name, replace(method, model=model))
    seen: list = []

    def fake_build(out, config, *, command, **_):
        seen.append((config, command))
        return {"num_samples": 0, "splits": {}, "rejects": {"count": 0}}

    monkeypatch.setattr(augment.runner.build, "build", fake_build)
    return seen


@pytest.mark.parametrize("name", [n for n, m in infill.INFILLS.items() if m.needs_model])
def test_every_model_infill_has_its_weights_flag_in_build(name: str, tmp_path: Path, recorded: list) -> None:
    flag = infill.weights_flag(name)
    assert flag in CliRunner().invoke(augment_cli.app, ["build", "--help"], terminal_width=200).output
    result = CliRunner().invoke(augment_cli.app, ["build", "--infill", name, flag, "w.bin", "--out", str(tmp_path)])
    assert result.exit_code == 0 and recorded[-1][0].weights == {name: "w.bin"}, result.output
    # given without its method, as earlier versions recorded it: kept and left unused, not refused
    result = CliRunner().invoke(augment_cli.app, ["build", "--infill", "tile", flag, "w.bin", "--out", str(tmp_path)])
    assert result.exit_code == 0 and len(recorded) == 2 and recorded[-1][0].infill == ["tile"], result.output
    assert recorded[-1][0].weights == {name: "w.bin"}
    assert f"{flag} w.bin" in recorded[-1][1]


def test_weights_for_a_method_that_is_no_model_are_refused() -> None:
    with pytest.raises(ValueError, match="--tile-weights: 'tile' is not a model method; weights options: --cagan"):
        options.check(BuildConfig(infill=["tile"], weights={"tile": "w.bin"}))


def test_the_build_modules_name_no_model() -> None:
    for module in (
        "pipeline.py",
        "options.py",
        *(f"runner/{p.name}" for p in (ROOT / "augment" / "runner").glob("*.py")),
    ):
        assert "cagan" not in (ROOT / "augment" / module).read_text(), module
    models = [name for name, method in infill.INFILLS.items() if method.needs_model]
    config = (ROOT / "augment" / "config.py").read_text().splitlines()
    lines = [line for line in config if any(m in line for m in models)]
    assert all(line.lstrip().startswith("#") for line in lines), lines  # a comment's example, no field


def test_the_recorded_command_gives_back_each_models_weights(tmp_path: Path, recorded: list) -> None:
    """``--NAME-weights`` is recorded in the manifest's command, in registry order whatever the order given and with
    a default resolved, and parses back to the same ``BuildConfig.weights``."""
    import shlex

    runner = CliRunner()
    lama = str(tmp_path / "big lama.pt")
    for given, expected in (
        (["--lama-weights", lama, "--cagan-weights", "w.safetensors"], {"cagan": "w.safetensors", "lama": lama}),
        (["--lama-weights", lama], {"cagan": "d.safetensors", "lama": lama}),  # cagan's default, resolved
    ):
        args = ["build", "--infill", "lama", "--infill", "cagan", *given, "--device", "cpu", "--out", str(tmp_path)]
        result = runner.invoke(augment_cli.app, args, prog_name="augment")
        assert result.exit_code == 0, result.output
        config, command = recorded[-1]
        assert config.weights == expected and list(config.weights) == ["cagan", "lama"]
        assert f"--cagan-weights {expected['cagan']} --lama-weights '{lama}' --device cpu" in command
        n = len(recorded)
        assert runner.invoke(augment_cli.app, shlex.split(command)[1:], prog_name="augment").exit_code == 0
        assert len(recorded) == n + 1 and recorded[-1][0] == config and recorded[-1][1] == command


def test_a_weights_entry_of_none_is_the_default(recorded: list) -> None:
    config = BuildConfig(infill=["cagan"], weights={"cagan": None}, device="cpu")
    options.check(config)
    assert config.weights == {"cagan": "d.safetensors"}
