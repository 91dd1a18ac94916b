"""`train study`: a grid over seeds and training-set fractions, reused runs, and the report with its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from augment.config import BuildConfig
from augment.runner.build import build
from train.cli import app
from train.config import Config
from train.data import in_subset, manifest_sha256
from train.study import RunSpec, finished, load_grid, run

GRID = """
[defaults]
preset = "demo"
epochs = 1
batch_size = 8
workers = 0
max_saliency_images = 16

[[run]]
name = "Orig"
[[run]]
cf = ["tile"]
[[run]]
cf = "grey"
[[run]]
f = ["shuffle"]
[[run]]
name = "CF+F"
cf = "best"
f = "best"

[curve]
fractions = [0.5]
rows = ["Orig", "CF+F"]
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "shards"
    config = BuildConfig(
        dataset="synthetic", infill=["tile", "grey"], factual=["shuffle"], image_size=24, dataset_options={"size": 48}
    )
    build(out, config, progress=False)
    return out


@pytest.fixture(scope="module")
def study(shards: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    (folder / "grid.toml").write_text(GRID)
    args = [
        "study",
        "--shards",
        str(shards),
        "--grid",
        str(folder / "grid.toml"),
        "--seeds",
        "2",
        "--out",
        str(folder / "out"),
        "--jobs",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_the_study_trains_every_row_seed_and_fraction_once(study: Path) -> None:
    runs = sorted(str(p.parent.relative_to(study / "runs")) for p in (study / "runs").rglob("results.json"))
    assert runs == sorted(
        [
            "CF_grey/s0",
            "CF_grey/s1",
            "CF_tile/s0",
            "CF_tile/s1",
            "CF+F/s0",
            "CF+F/s0-f0.5",
            "CF+F/s1",
            "CF+F/s1-f0.5",
            "F_shuffle/s0",
            "F_shuffle/s1",
            "Orig/s0",
            "Orig/s0-f0.5",
            "Orig/s1",
            "Orig/s1-f0.5",
        ]
    )
    config = json.loads((study / "runs/CF+F/s1-f0.5/config.json").read_text())
    assert config["seed"] == 1 and config["train_fraction"] == 0.5 and config["f"] == ["shuffle"]
    assert config["cf"] in (["tile"], ["grey"])  # the best CF by val accuracy


def test_the_report_has_the_tables_figures_claims_and_provenance(study: Path, shards: Path) -> None:
    report = (study / "REPORT.md").read_text()
    for needle in (
        "## Table 1: accuracy per test split",
        "## Table 2: saliency AUPR",
        "## Table 3: background",
        "![saliency AUPR vs accuracy",
        "![gain over Orig",
        "## The paper's claims on this data",
        "manifest sha256",
        "--train-fraction 0.5",
        "Best single methods by mean val accuracy",
    ):
        assert needle in report, needle
    for row in ("| Orig |", "| CF(tile) |", "| CF(grey) |", "| F(shuffle) |", "| CF+F |"):
        assert row in report
    assert " ± " in report  # two seeds: mean ± sd
    assert (study / "fig4_saliency_vs_accuracy.png").is_file() and (study / "fig5_gain_vs_data.png").is_file()
    html = (study / "REPORT.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<table>" in html
    claims = json.loads((study / "claims.json").read_text())
    assert {c["holds"].split(" ")[0] for c in claims} <= {"yes", "no", "partly", "within", "not"} and claims
    assert "A claim is checked only where every model it compares learnt" in report


def test_a_rerun_reuses_finished_runs_and_resumes_an_interrupted_one(study: Path, shards: Path) -> None:
    results = {p: p.stat().st_mtime_ns for p in (study / "runs").rglob("results.json")}
    interrupted = study / "runs/Orig/s1/results.json"
    interrupted.unlink()  # as if killed after the last checkpoint, before the evaluation
    grid = study.parent / "grid.toml"
    result = CliRunner().invoke(
        app, ["study", "--shards", str(shards), "--grid", str(grid), "--seeds", "2", "--out", str(study)]
    )
    assert result.exit_code == 0, result.output
    again = {p: p.stat().st_mtime_ns for p in (study / "runs").rglob("results.json")}
    assert {p for p in again if again[p] != results.get(p)} == {interrupted}


def test_grid_errors_name_the_file_and_the_valid_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[run]]\ncf = ["tile"]\nlearning_rate = 0.1\n')
    with pytest.raises(ValueError, match=r"bad.toml: \[\[run\]\] #1: unknown settings \['learning_rate'\]; valid: "):
        load_grid(bad)
    bad.write_text('[[run]]\nname = "A"\n[curve]\nfractions = [0.5]\nrows = ["B"]\n')
    with pytest.raises(ValueError, match=r"\[curve\] rows \['B'\] are not rows of the grid; rows: A"):
        load_grid(bad)
    paper = load_grid(Path("docs/grids/paper.toml"))
    assert [r.name for r in paper.rows][:3] == ["Orig", "Sal(10)", "CF(grey)"]
    cpu = load_grid(Path("docs/grids/synthetic-cpu.toml"))  # base = "paper.toml": its rows, these defaults
    assert cpu.rows == paper.rows and cpu.curve_rows == paper.curve_rows and cpu.defaults["arch"] == "resnet8"


def test_training_subsets_are_nested_and_about_the_right_size() -> None:
    keys = [f"train_{i:06d}" for i in range(4000)]
    quarter = {k for k in keys if in_subset(k, 0.25)}
    half = {k for k in keys if in_subset(k, 0.5)}
    assert quarter < half and 900 < len(quarter) < 1100 and 1900 < len(half) < 2100


def test_a_run_of_another_build_is_not_reused(study: Path, shards: Path) -> None:
    """The same config on rebuilt shards (another augment version, changed data) is another run."""
    results = study / "runs/Orig/s0/results.json"
    recorded = json.loads(results.read_text())
    assert recorded["manifest_sha256"] == manifest_sha256(shards)
    config = Config(**json.loads((results.parent / "config.json").read_text()))
    spec = RunSpec("Orig", 0, 1.0, config)
    assert finished(spec)
    results.write_text(json.dumps({**recorded, "manifest_sha256": "0" * 64}))
    assert not finished(spec)
    with pytest.raises(ValueError, match="holds a run on another build"):
        run(spec)  # not resumed from a checkpoint of the old build either
    results.write_text(json.dumps(recorded))
