"""Everyday mistakes end in one line and the right exit code, not a traceback or a half-made folder (issue #29, part
2): --device without the device, --out that cannot be written, a --scheduler nobody answers, --overwrite over a
user's file; and what people read: `augment info` of a stranger's manifest, `train study`'s progress, the final
evaluation's bar, the study report's bold and claims, the curves of a one-epoch run."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from augment.cli import app as augment_app
from train.cli import app as train_app

runner = CliRunner()
OPTIONS = ["--dataset", "synthetic", "--size", "10", "--image-size", "32", "-q", "--workers", "1"]
TINY = ["build", *OPTIONS, "--infill", "tile"]


def invoke(app, *args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    """The single stderr line of a refused command, after checking its exit code and that nothing crashed."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mistakes") / "shards"
    result = invoke(augment_app, *TINY, "--factual", "shuffle", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def fit(shards: Path, out: Path, *args: object):
    return invoke(
        train_app,
        "fit",
        "--shards",
        shards,
        "--preset",
        "demo",
        "--epochs",
        1,
        "--batch-size",
        4,
        "--workers",
        0,
        *args,
        "--out",
        out,
    )


@pytest.fixture
def no_cuda(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def read_only(monkeypatch) -> None:
    """Every new file fails as on a read-only filesystem (root writes through chmod; a mount needs privileges)."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs.get("dir")))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


# ---- --device: the device must be there, and be one of the choices -------------------------------------------------


def test_device_cuda_without_a_gpu_is_refused_by_build_and_fit(shards: Path, tmp_path: Path, no_cuda) -> None:
    line = one_line_error(invoke(augment_app, *TINY, "--device", "cuda", "--out", tmp_path / "b"))
    # one resolver (augment.contract.zoo.devices) for both stages: the same words as train's below
    assert line == "augment: error: --device cuda: no such CUDA device here (0 visible); use --device cpu (or auto)"
    assert not (tmp_path / "b").exists()  # nothing built, no manifest recording --device cuda
    from augment import options
    from augment.config import BuildConfig

    # the Python API checks it too
    with pytest.raises(ValueError, match=r"--device cuda: no such CUDA device here \(0 visible\)"):
        options.check(BuildConfig(device="cuda"))
    for device in ("cuda", "cuda:1"):
        line = one_line_error(fit(shards, tmp_path / "r", "--device", device))
        assert (
            line == f"train: error: --device {device}: no such CUDA device here (0 visible); use --device cpu (or auto)"
        ), line
    assert not (tmp_path / "r").exists()


def test_an_unknown_device_names_the_choices(shards: Path, tmp_path: Path) -> None:
    line = one_line_error(fit(shards, tmp_path / "r", "--device", "tpu"))
    assert line == "train: error: --device: got 'tpu', expected auto, cpu, cuda or cuda:N", line
    line = one_line_error(invoke(augment_app, *TINY, "--device", "tpu", "--out", tmp_path / "b"))
    assert "'tpu' is not one of 'auto', 'cpu', 'cuda'" in line, line


# ---- --out that cannot be written: a file on the way, no permission, a read-only filesystem -----------------------


def test_fit_out_under_a_file_or_unwritable_names_out_and_the_fix(shards: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = one_line_error(fit(shards, tmp_path / "file/run"))
    assert line == (
        f"train: error: --out {tmp_path / 'file/run'}: {tmp_path / 'file'} is a file, not a folder; "
        "choose a writable folder"
    ), line
    line = one_line_error(fit(shards, "/proc/x/run"))
    assert line.startswith("train: error: --out /proc/x/run: cannot create or write /proc/x") and "writable" in line
    (tmp_path / "grid.toml").write_text('[defaults]\npreset = "demo"\n[[run]]\nname = "Orig"\n')
    line = one_line_error(
        invoke(
            train_app, "study", "--shards", shards, "--grid", tmp_path / "grid.toml", "--out", tmp_path / "file/study"
        )
    )
    assert line == (
        f"train: error: --out {tmp_path / 'file/study'}: {tmp_path / 'file'} is a file, not a folder; "
        "choose a writable folder"
    ), line


def test_fit_and_report_out_on_a_read_only_filesystem(shards: Path, tmp_path: Path, read_only) -> None:
    line = one_line_error(fit(shards, tmp_path / "run"))
    assert line == (
        f"train: error: --out {tmp_path / 'run'}: cannot write in {tmp_path / 'run'} (Read-only file "
        "system); choose a writable folder"
    ), line
    runs = tmp_path / "runs/a"
    runs.mkdir(parents=True)
    (runs / "results.json").write_text(json.dumps({"method": "Orig", "splits": {"val": {"accuracy": 0.5}}}))
    line = one_line_error(invoke(train_app, "report", tmp_path / "runs", "--out", tmp_path / "rep/report.md"))
    assert line == (
        f"train: error: --out {tmp_path / 'rep/report.md'}: cannot write in {tmp_path / 'rep'} (Read-only "
        "file system); choose a writable folder"
    ), line


def test_report_out_under_a_file_or_a_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs/a"
    runs.mkdir(parents=True)
    (runs / "results.json").write_text(json.dumps({"method": "Orig", "splits": {"val": {"accuracy": 0.5}}}))
    (tmp_path / "file").write_text("x")
    line = one_line_error(invoke(train_app, "report", tmp_path / "runs", "--out", tmp_path / "file/report.md"))
    assert f"--out {tmp_path / 'file/report.md'}: {tmp_path / 'file'} is a file, not a folder" in line, line
    line = one_line_error(invoke(train_app, "report", tmp_path / "runs", "--out", tmp_path))
    assert (
        line == f"train: error: --out {tmp_path} is a folder; expected the report's file name (e.g. "
        f"{tmp_path / 'report.md'})"
    ), line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only (0o555) folder anyway")
def test_fit_and_report_out_in_a_folder_without_write_permission(shards: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = one_line_error(fit(shards, locked / "run"))
        assert line.startswith(f"train: error: --out {locked / 'run'}: cannot create or write") and "denied" in line
        line = one_line_error(invoke(train_app, "report", tmp_path, "--out", locked / "report.md"))
        assert f"cannot write in {locked} (Permission denied)" in line or "no results.json" in line, line
    finally:
        locked.chmod(0o755)


# ---- a --scheduler nobody answers; --overwrite over a user's file ---------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: a connection is refused


def test_an_unreachable_scheduler_leaves_nothing_behind(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{closed_port()}"
    out = tmp_path / "out"
    line = one_line_error(invoke(augment_app, *TINY, "--scheduler", address, "--out", out))
    assert line.startswith(f"augment: error: --scheduler {address}: no dask scheduler answered (") and (
        f"`dask worker {address}`" in line
    ), line
    assert not out.exists()
    result = invoke(augment_app, "build", *OPTIONS, "--infill", "grey", "--out", out)  # another command: not refused
    assert result.exit_code == 0, result.output
    line = one_line_error(invoke(augment_app, *TINY, "--scheduler", "nowhere", "--out", tmp_path / "o2"))
    assert "--scheduler nowhere: not a scheduler address" in line and "tcp://HOST:PORT" in line, line


def test_overwrite_onto_a_users_file_names_the_file_and_the_rule(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = one_line_error(invoke(augment_app, *TINY, "--overwrite", "--out", out))
    assert line == (
        f"augment: error: --out {out}: {out / 'notes.txt'} is not an augment build's file; --overwrite "
        "only removes what a build wrote (manifest.json, rejects.jsonl, <split>/shard-*.tar, .build/): "
        "move it or choose another --out"
    ), line
    line = one_line_error(invoke(augment_app, *TINY, "--out", out))
    assert line.endswith(f"choose another folder ({out / 'notes.txt'} is not an augment build's file)"), line
    assert (out / "notes.txt").read_text() == "mine" and sorted(out.iterdir()) == [out / "notes.txt"]


# ---- `augment info` of a stranger's manifest ------------------------------------------------------------------------

HOSTILE = "\x1b[2K\rOK: 0 problems\x1b]52;c;ZWNobyBwd25lZA==\x07\n"  # erase the line, a fake OK, write the clipboard


def test_info_prints_a_strangers_manifest_strings_escaped(shards: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["command"] += HOSTILE
    manifest["dataset"]["classes"][0] += HOSTILE
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for args in ([copy], [copy, "--diff", shards], [shards, "--diff", copy]):
        result = invoke(augment_app, "info", *args)
        assert not {"\x1b", "\x07", "\r"} & set(result.output), repr(result.output)
        assert "\nOK" not in result.output
        if result.exit_code in (0, 1) and len(args) == 1:  # shown (a validating reader may refuse it, escaped)
            assert "\\x1b[2K\\rOK: 0 problems\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\n" in result.output, result.output


def test_shown_escapes_what_a_terminal_obeys_and_keeps_printable_text() -> None:
    from augment.contract.cli_errors import shown

    assert shown("tab\there é ± \u202e") == "tab\\there é ± \\u202e"
    assert shown(HOSTILE) == "\\x1b[2K\\rOK: 0 problems\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\n"


# ---- what people read: the study's progress, the final evaluation's bar --------------------------------------------


def spec(row: str, seed: int, folder: Path):
    from train.config import Config
    from train.study import RunSpec

    return RunSpec(row, seed, 1.0, Config.resolve("demo", shards="s", out=str(folder / row / f"s{seed}")))


def test_a_study_says_run_k_of_n_and_the_time_left(tmp_path: Path, monkeypatch, caplog) -> None:
    from train.study import running

    specs = [spec("Orig", 0, tmp_path), spec("Orig", 1, tmp_path), spec("CF", 0, tmp_path)]
    clock = iter([0.0, 60.0, 60.0, 150.0, 150.0, 240.0])
    monkeypatch.setattr(running.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(running, "finished", lambda s: s.row == "CF")  # reused
    monkeypatch.setattr(running, "run", lambda s: None)
    tally = running.Tally(4, jobs=1)
    with caplog.at_level(logging.INFO, logger="train"):
        running.run_all(specs, 1, tally)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"study: run 1 of 4: CF seed 0: reusing {tmp_path / 'CF/s0'}",
        f"study: run 2 of 4: Orig seed 0: training in {tmp_path / 'Orig/s0'}",
        "study: run 2 of 4 done in 1m00s: Orig seed 0; 2 to go, about 2m00s left",
        f"study: run 3 of 4: Orig seed 1: training in {tmp_path / 'Orig/s1'}",
        "study: run 3 of 4 done in 1m30s: Orig seed 1; 1 to go, about 1m15s left",
    ], lines
    two = running.Tally(5, jobs=2)  # two at a time: 3 waiting and one 30 s into a run of 60 s mean
    two.took, two.ended, two.running = [60.0], 1, {2: 0.0}
    assert two.left(30.0) == (60 * 3 + 30) / 2
    assert running.duration(5) == "5s" and running.duration(3725) == "1h02m"


def test_the_final_evaluation_draws_a_bar_over_images_and_saliency(shards: Path, capsys) -> None:
    from augment.contract.zoo.models import build_model
    from train import evaluate
    from train.config import Config
    from train.data import read_manifest

    manifest = read_manifest(str(shards))
    config = Config.resolve("demo", shards=str(shards), out="o", workers=0, max_saliency_images=4)
    model = build_model("resnet8", len(manifest["dataset"]["classes"]), normalisation="half")
    evaluate.evaluate_all(model, str(shards), manifest, 28, config, "cpu", progress=True)
    err = capsys.readouterr().err
    assert "evaluating val" in err and "evaluating mixed_rand" in err and "saliency (gradient) of val" in err, err
    evaluate.evaluate_all(model, str(shards), manifest, 28, config, "cpu", progress=False)
    assert capsys.readouterr().err == ""


# ---- the study report: bold, claims; the curves of one epoch --------------------------------------------------------


def test_the_best_mean_is_bolded_only_when_it_is_strictly_best() -> None:
    from train.study.report import bold_best

    table = bold_best([["A", "0.200 ± 0.010", "0.500"], ["B", "0.200", "0.400"], ["C", "-", "-"]], 2)
    assert table == [["A", "0.200 ± 0.010", "**0.500**"], ["B", "0.200", "0.400"], ["C", "-", "-"]]


def study_run(row: str, seed: int, val: float, test: float, fraction: float = 1.0, **config):
    from train.study.results import Run

    settings = {"cf": [], "f": [], "sal": 0.0, "fgsm": 0.0, "val_split": "val", **config}
    splits = {"val": {"accuracy": val}, "mixed_rand": {"accuracy": test}}
    return Run(row, seed, fraction, Path(row), settings, {"splits": splits})


def test_claims_are_checked_only_where_the_models_learnt() -> None:
    from train.study.claims import claims

    def study(val: float):
        f = {"f": ["shuffle"]}
        main = [study_run("Orig", s, val, 0.2 + s / 100) for s in range(3)]
        main += [study_run("F(shuffle)", s, val, 0.3 + s / 100, **f) for s in range(3)]  # +0.1 on all the data
        curve = main + [
            study_run(row, s, val, 0.2, 0.5, **(f if row != "Orig" else {}))
            for row in ("Orig", "F(shuffle)")
            for s in range(3)
        ]  # +0 on half
        grid = SimpleNamespace(fractions=[0.5], curve_rows=["Orig", "F(shuffle)"])
        return {c: (v, n) for c, v, n in claims(main, ["Orig", "F(shuffle)"], ["mixed_rand"], [], curve, grid, 0.2)}

    at_chance = study(0.22)
    grows = "the gain of F(shuffle) over Orig grows with more data"
    assert at_chance[grows][0] == "not checked: models at chance", at_chance
    numbers = at_chance[grows][1]
    assert "F(shuffle) 0.220" in numbers and "chance 0.200, a model learnt from 0.300" in numbers, numbers
    assert {v for v, _ in at_chance.values()} == {"not checked: models at chance"}
    learnt = study(0.9)
    assert learnt[grows][0] == "yes" and "CF and F each improve accuracy" in " ".join(learnt), learnt


def test_curves_of_one_epoch_have_whole_epoch_ticks(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train import report

    (tmp_path / "log.csv").write_text("epoch,loss,lr,val_accuracy\n0,1.6,0.1,0.5\n")
    runs = [{"folder": tmp_path, "results": {"method": "Orig", "splits": {}}, "config": {"val_split": "val"}}]
    fig = report.curves_figure(runs, report.method_colours(runs, plt), plt)
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks == [0], (ticks, ax.get_xlim())
    plt.close(fig)


def test_fit_hands_its_own_progress_choice_to_the_final_evaluation(shards: Path, tmp_path: Path, monkeypatch) -> None:
    from train import evaluate
    from train import train as trainer
    from train.config import Config

    seen, original = [], evaluate.evaluate_all
    monkeypatch.setattr(evaluate, "evaluate_all", lambda *a, **k: seen.append(k.get("progress")) or original(*a, **k))
    for progress in (False, True):
        config = Config.resolve(
            "demo",
            shards=str(shards),
            out=str(tmp_path / str(progress)),
            epochs=1,
            workers=0,
            batch_size=4,
            max_saliency_images=0,
        )
        trainer.fit(config, progress=progress)
    assert seen == [False, True]  # a quiet fit() called from Python on a terminal draws no evaluation bar either
