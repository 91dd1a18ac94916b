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


@pytest.mark.parametrize("name", [n for n, m in infill.INFILLS.items() if m.needs_model])
def test_every_model_infill_has_its_weights_flag_in_build(name: str, tmp_path: Path) -> None:
    flag = infill.weights_flag(name)
    assert flag in CliRunner().invoke(augment_cli.app, ["build", "--help"], terminal_width=200).output
    result = CliRunner().invoke(augment_cli.app, ["build", flag, "w.bin", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{flag} is for --infill {name}" in result.output, result.output
    assert not (tmp_path / "o").exists()


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
    lines = [line for line in (ROOT / "augment" / "config.py").read_text().splitlines() if "cagan" in line]
    assert all(line.lstrip().startswith("#") for line in lines), lines  # a comment's example, no field


def test_the_recorded_command_gives_back_each_models_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--NAME-weights`` is recorded in the manifest's command and parses back to the same ``BuildConfig.weights``
    (the files are not checked here: each model's check is replaced by one that accepts any path)."""
    import shlex

    import augment.runner.build

    for name in ("cagan", "lama"):
        method = infill.INFILLS[name]
        monkeypatch.setitem(infill.INFILLS, name, replace(method, model=replace(method.model, check=lambda w: None)))
    seen: list = []

    def fake_build(out, config, *, command, **_):
        seen.append((config, command))
        return {"num_samples": 0, "splits": {}, "rejects": {"count": 0}}

    monkeypatch.setattr(augment.runner.build, "build", fake_build)
    args = ["build", "--infill", "lama", "--infill", "cagan", "--lama-weights", str(tmp_path / "big lama.pt")]
    args += ["--cagan-weights", "w.safetensors", "--device", "cpu", "--out", str(tmp_path / "out")]
    runner = CliRunner()
    result = runner.invoke(augment_cli.app, args, prog_name="augment")
    assert result.exit_code == 0, result.output
    config, command = seen[-1]
    assert config.weights == {"cagan": "w.safetensors", "lama": str(tmp_path / "big lama.pt")}
    assert f"--cagan-weights w.safetensors --lama-weights '{tmp_path / 'big lama.pt'}' --device cpu" in command
    assert runner.invoke(augment_cli.app, shlex.split(command)[1:], prog_name="augment").exit_code == 0
    assert seen[-1][0] == config and seen[-1][1] == command
