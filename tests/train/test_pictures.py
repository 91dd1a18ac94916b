"""What people read: `train fit`'s progress output, the report's figures (curves.png, saliency_sheet.png) and the
contact sheet of `augment preview`. Figures are checked as matplotlib Figures before saving (titles, axis labels,
legends, colour bar); the contact sheet by the strings it draws."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageDraw

from augment.config import BuildConfig
from augment.runner.build import build
from train import report
from train.config import Config

SUMMARY = re.compile(r"epoch (\d+): \{")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pictures") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        copies=2,
        image_size=24,
        shard_size=16,
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def fitted(shards: Path, tmp_path_factory) -> tuple[Path, str]:
    """A 2-epoch CF(tile)+F(shuffle) run by `train fit` in a process of its own (stderr a pipe): its folder, stderr."""
    out = tmp_path_factory.mktemp("pictures-runs") / "cf-f"
    args = [
        "fit",
        "--shards",
        str(shards),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--crop",
        "16",
        "--workers",
        "0",
        "--cf",
        "tile",
        "--f",
        "shuffle",
        "--max-saliency-images",
        "8",
    ]
    done = subprocess.run([sys.executable, "-m", "train", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out, done.stderr


def loaded(folder: Path) -> dict:
    return {
        "folder": folder,
        "results": json.loads((folder / "results.json").read_text()),
        "config": json.loads((folder / "config.json").read_text()),
    }


def figure_texts(fig) -> list[str]:
    """Every string drawn in ``fig``: its texts, suptitle, legends, and each axes' title, labels and legend."""
    texts = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text() if fig._suptitle else ""]
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend():
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in texts if t]


# ---- `train fit`'s output ----------------------------------------------------------------------------------------


def test_fit_output_has_one_summary_line_per_epoch_and_one_no_weights_line(fitted: tuple[Path, str]) -> None:
    _, stderr = fitted
    assert [int(m.group(1)) for m in SUMMARY.finditer(stderr)] == [0, 1]
    assert "epoch 0 step 0/" in stderr  # not a terminal: the interval lines, no bar
    assert "\r" not in stderr and "step/s" not in stderr
    lines = [line for line in stderr.splitlines() if "no weights given" in line]
    scratch = "resnet8: no weights given, training from scratch (random initialisation)"
    assert len(lines) == 1 and lines[0].endswith(scratch)  # a log line: its time, then the message
    assert "UserWarning" not in stderr and "build_model(" not in stderr  # no warnings.warn source line


def test_fit_on_a_terminal_draws_a_bar_per_epoch_and_keeps_the_summary_lines(
    shards: Path, tmp_path: Path, capsys, caplog, monkeypatch
) -> None:
    from train.train import Progress, fit

    postfixes: list[tuple[int, int, str]] = []  # (epoch's step, of steps, the bar's postfix) after every step
    step = Progress.step

    def recording(self, loss: float, images_per_s: float) -> None:
        step(self, loss, images_per_s)
        postfixes.append((self.bar.n, self.bar.total, self.bar.postfix))

    monkeypatch.setattr(Progress, "step", recording)
    config = Config.resolve(
        "demo",
        shards=str(shards),
        out=str(tmp_path / "run"),
        workers=0,
        batch_size=8,
        crop=16,
        epochs=2,
        max_saliency_images=0,
    )
    with caplog.at_level("INFO", logger="train"):
        assert fit(config, progress=True)
    messages = [r.getMessage() for r in caplog.records]
    assert [int(SUMMARY.match(m).group(1)) for m in messages if SUMMARY.match(m)] == [0, 1]
    assert not [m for m in messages if " step " in m]  # the bar replaces the interval lines
    steps = postfixes[0][1]
    assert [(n, total) for n, total, _ in postfixes] == [(n, steps) for n in range(1, steps + 1)] * 2  # per epoch
    assert all(re.fullmatch(r"loss \d\.\d{4}, \d+ img/s", text) for _, _, text in postfixes)
    err = capsys.readouterr().err  # what was drawn (tqdm redraws at most every 0.1 s)
    assert "epoch 0/1" in err and "epoch 1/1" in err and "step/s" in err and "evaluating val" in err


def test_bars_only_on_a_terminal_and_for_a_run_alone(monkeypatch) -> None:
    import multiprocessing

    import train.train as tt

    config = Config.resolve("demo", shards="s", out="runs/x/s3", cf=["tile"])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert tt.show_progress() and tt.run_tag(config) == ""
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # a `train study --jobs N` worker
    assert not tt.show_progress() and tt.run_tag(config) == "CF(tile) s3: "
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: None)
    assert not tt.show_progress()


# ---- curves.png --------------------------------------------------------------------------------------------------


def fake_run(folder: Path, method: str, config: dict, losses: list[float], val_key: str = "val_accuracy") -> dict:
    folder.mkdir(parents=True)
    with open(folder / "log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "loss", "lr", val_key, "img_per_s", "data_wait_fraction"])
        writer.writeheader()
        for epoch, loss in enumerate(losses):
            writer.writerow(
                {
                    "epoch": epoch,
                    "loss": loss,
                    "lr": 0.1,
                    val_key: 0.5 + epoch / 10,
                    "img_per_s": 100,
                    "data_wait_fraction": 0.1,
                }
            )
    return {"folder": folder, "results": {"method": method, "splits": {}}, "config": {"val_split": "val", **config}}


def test_objective_labels_name_each_term() -> None:
    assert report.objective_label({}) == "CE per row"
    assert report.objective_label({"cf": ["tile"], "f": ["shuffle"]}) == "CE + CF + F per row"
    assert report.objective_label({"cf": ["tile"], "cf_weight": 0.5, "fgsm": 0.3, "sal": 10.0}) == (
        "CE + 0.5·CF + FGSM per row + 10·Sal"
    )
    assert report.objective_label({"mixup": 0.2}).startswith("soft-label CE of mixup(0.2)")
    assert "smoothing 0.1" in report.objective_label({"label_smoothing": 0.1})


def test_curves_have_axis_labels_the_metric_and_a_legend_in_both_panels(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = {"cf": ["tile"], "f": ["shuffle"]}
    runs = [
        fake_run(tmp_path / "a", "Orig", {}, [1.6, 1.4, 1.3]),
        fake_run(tmp_path / "b", "CF(tile)+F(shuffle)", both, [1.2, 1.1, 1.0]),
    ]
    fig = report.curves_figure(runs, report.method_colours(runs, plt), plt)
    ax_loss, ax_val = fig.axes
    assert ax_loss.get_ylabel() and ax_val.get_ylabel() == "accuracy on val" and "accuracy" in ax_val.get_title()
    assert ax_loss.get_xlabel() == ax_val.get_xlabel() == "epoch"
    loss_legend = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert sorted(loss_legend) == ["CF(tile)+F(shuffle) — loss: CE + CF + F per row", "Orig — loss: CE per row"]
    assert sorted(t.get_text() for t in ax_val.get_legend().get_texts()) == ["CF(tile)+F(shuffle)", "Orig"]
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "CF: -log(1 - p_y) on the counterfactual images" in caption and "originals + CF + F)" in caption
    plt.close(fig)


# ---- saliency_sheet.png ------------------------------------------------------------------------------------------


def sheet_texts(runs: list[dict]) -> tuple[list[str], list[list[str]], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = report.saliency_sheet_figure(runs, plt)
    assert fig is not None
    n = len(np.load(runs[0]["folder"] / "saliency_examples.npz")["images"])
    cells = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    rows = [[ax.get_xlabel() for ax in cells[r * n : (r + 1) * n]] for r in range(len(cells) // n)]
    texts = figure_texts(fig)
    plt.close(fig)
    return texts, rows, [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_saliency_sheet_has_a_title_labels_predictions_a_colour_bar_and_a_mask_key(fitted: tuple[Path, str]) -> None:
    run = loaded(fitted[0])
    classes = json.loads((Path(run["config"]["shards"]) / "manifest.json").read_text())["dataset"]["classes"]
    texts, rows, bars = sheet_texts([run])
    assert any(t.startswith("Saliency of the true class (input gradient) on 'original' images") for t in texts)
    assert len(rows) == 2 and all(label.removeprefix("true: ") in classes for label in rows[0])
    assert all(re.fullmatch(r"pred: \w+ [✓✗]", label) and label.split()[1] in classes for label in rows[1])
    assert bars == ["saliency (each image scaled to its max)"]
    assert "object mask (outline)" in texts and "input" in texts and "CF(tile)+F(shuffle)" in texts


def test_the_examples_file_holds_the_models_logits_and_the_true_labels(fitted: tuple[Path, str]) -> None:
    """saliency_examples.npz: ``logits`` are best.pt's on the stored images (uint8 -> [-1, 1], the evaluation's
    input), ``labels`` are the split's labels of those images (found by their pixels in the split's shards)."""
    import torch

    from augment.contract.zoo.models import build_model

    run = loaded(fitted[0])
    data = np.load(run["folder"] / "saliency_examples.npz", allow_pickle=False)
    state = torch.load(run["folder"] / "best.pt", map_location="cpu", weights_only=True)
    model = build_model(
        state["config"]["arch"],
        len(state["classes"]),
        from_checkpoint=True,
        normalisation=state["config"]["normalisation"],
    )
    model.load_state_dict(state["model"])
    x = torch.from_numpy(np.ascontiguousarray(data["images"])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        logits = model.eval()(x).numpy()
    assert data["logits"].shape == logits.shape and np.allclose(data["logits"], logits, atol=1e-4)
    split = report.examples_split(run)
    with np.load(run["folder"] / "predictions.npz", allow_pickle=False) as p:
        stored, labels = p[f"{split}.logits"], p[f"{split}.labels"]
    distance = np.abs(stored[None] - data["logits"][:, None]).max(axis=-1)  # [examples, split samples]
    assert (distance.min(axis=1) < 1e-3).all()  # each example is one of the split's samples
    assert list(labels[distance.argmin(axis=1)]) == list(data["labels"])


def test_saliency_sheet_uses_the_labels_and_logits_an_examples_file_holds(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    np.savez(
        folder / "saliency_examples.npz",
        images=rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8),
        masks=masks,
        scores=rng.random((3, 8, 8)),
        labels=np.array([0, 1, 2]),
        logits=np.array([[5.0, 0, 0], [5.0, 0, 0], [0, 0, 5.0]]),
    )
    run = {"folder": folder, "results": {"method": "Orig", "splits": {}}, "config": {}}
    _, rows, _ = sheet_texts([run])
    assert rows == [["true: 0", "true: 1", "true: 2"], ["pred: 0 ✓", "pred: 0 ✗", "pred: 2 ✓"]]


def test_report_writes_the_three_pictures(fitted: tuple[Path, str], tmp_path: Path) -> None:
    out = report.write_report(fitted[0].parent, tmp_path / "report.md")
    for name in ("saliency_vs_accuracy.png", "curves.png", "saliency_sheet.png"):
        assert (tmp_path / name).stat().st_size > 1000 and f"]({name})" in out.read_text()


# ---- the contact sheet of `augment preview` ----------------------------------------------------------------------


def test_contact_sheet_has_a_title_with_the_split_and_a_legend(shards: Path, tmp_path: Path, monkeypatch) -> None:
    from augment.preview import BOX_COLOUR, preview

    drawn: list[str] = []
    text = ImageDraw.ImageDraw.text

    def recording(self, xy, content, *args, **kwargs):
        drawn.append(content)
        return text(self, xy, content, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording)
    dest = preview(shards, tmp_path / "sheet.png", rows=3, cell=48)
    words = " ".join(drawn)
    assert words.startswith(f"augment preview of {shards}: split 'train'")  # the title, wrapped to the sheet
    assert {"original", "mask", "cf.tile", "f.shuffle.0", "f.shuffle.1"} <= set(drawn)
    assert "red box = its bounding box(es), the hole a CF method fills" in words
    assert "stored in K copies, .0, .1, ... (this build: K = 2" in words
    from PIL import Image

    with Image.open(dest) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert (pixels[:, :20] == BOX_COLOUR).all(axis=-1).any()  # the red box's swatch, left of its legend line
