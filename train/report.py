"""``train report``: one table across runs (mean +- sd over seeds) and the plots people look at.

- ``report.md``: rows = methods, columns = accuracy per split, the worst-group accuracy and mean saliency AUPR over
  the test splits (``declared_test_splits``: not val, not IN-9's only_fg/no_fg probes, not CCT's cis_val and
  trans_val), then the shift metrics, as mean +- sd over seeds, with the exact command of each run (``command_of``);
- ``saliency_vs_accuracy.png``: saliency AUPR against accuracy per test split (the paper's Fig. 4);
- ``curves.png``: training loss and validation metric per epoch, one line per run;
- ``saliency_sheet.png``: a few test images with each method's saliency heatmap (from ``saliency_examples.npz``).
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from train.commands import command_of
from train.config import recorded
from train.splits import declared_test_splits, run_generated_splits
from train.terms import CE, LOSS_NAMES, TERMS, on, used, value

SHIFT_METRICS = ("bg_gap", "background_reliance", "flip_gap")


def load_runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(Path(root).rglob("results.json")):
        folder = path.parent
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        runs.append({"folder": folder, "results": json.loads(path.read_text()), "config": config})
    if not runs:
        raise FileNotFoundError(f"{root}: no results.json below it; run `train fit` first")
    return runs


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def run_test_splits(results: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    """A run's test splits: its results' ``test_splits`` when train.evaluate wrote them, else
    ``declared_test_splits`` of its splits and val split."""
    if results.get("test_splits"):
        return [s for s in results["test_splits"] if s in results["splits"]]
    return declared_test_splits(results["splits"], (config or {}).get("val_split", "val"))


def write_report(root: Path, out: Path) -> Path:
    runs = load_runs(root)
    by_method: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_method[run["results"].get("method", "?")].append(run)
    generated = run_generated_splits(runs[0]["results"])
    splits = [s for s in runs[0]["results"]["splits"] if s not in generated]  # shifted tests: in the shift metrics
    shifts = [m for m in SHIFT_METRICS if any(r["results"].get(m) is not None for r in runs)]
    header = ["method", "seeds", *[f"acc {s}" for s in splits], "worst-group", *shifts, "saliency AUPR"]
    lines = [
        "# Results",
        "",
        f"Runs under `{root}`, mean ± sd over seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, group in by_method.items():
        row = [method, str(len(group))]
        row += [
            mean_sd([r["results"]["splits"][s]["accuracy"] for r in group if s in r["results"]["splits"]])
            for s in splits
        ]
        row.append(mean_sd([worst_group(r["results"], r["config"]) for r in group]))
        row += [mean_sd([r["results"].get(m) for r in group]) for m in shifts]
        row.append(mean_sd([mean_saliency(r["results"], r["config"]) for r in group]))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Commands:", ""]
    lines += [f"- `{command_of(r['config'])}`" for r in runs]
    out = Path(out)
    writable(out.parent, f"--out {out}")
    plots = draw_plots(runs, out.parent)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    out.write_text("\n".join(lines) + "\n")
    return out


def writable(folder: Path, option: str) -> None:
    """Make ``folder``, or raise the one-line ValueError saying why it cannot be written into, before the work;
    ``option`` is what the user passed (``--out runs/report.md``)."""
    from augment.contract.cli_errors import unwritable

    if (problem := unwritable(folder)) is not None:
        raise ValueError(f"{option}: {problem}; choose a writable folder")


def worst_group(results: dict[str, Any], config: dict[str, Any] | None = None) -> float | None:
    """The lowest worst-group accuracy over the run's test splits (``run_test_splits``); None without groups."""
    values = [results["splits"][s].get("worst_group_accuracy") for s in run_test_splits(results, config)]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def mean_saliency(results: dict[str, Any], config: dict[str, Any] | None = None) -> float | None:
    """The mean saliency AUPR over the run's test splits (``run_test_splits``); None without masks."""
    values = [results["splits"][s].get("saliency_aupr") for s in run_test_splits(results, config)]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def draw_plots(runs: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Draw the report's figures into ``folder``; returns their paths (the saliency sheet only when a run has
    saliency examples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = method_colours(runs, plt)
    figures = [
        ("saliency_vs_accuracy.png", accuracy_figure(runs, colours, plt), 110),
        ("curves.png", curves_figure(runs, colours, plt), 110),
        ("saliency_sheet.png", saliency_sheet_figure(runs, plt), 100),
    ]
    paths = []
    for name, fig, dpi in figures:
        if fig is None:
            continue
        paths.append(folder / name)
        fig.savefig(paths[-1], dpi=dpi)
        plt.close(fig)
    return paths


def method_colours(runs: list[dict[str, Any]], plt) -> dict[str, Any]:
    methods = sorted({r["results"].get("method", "?") for r in runs})
    return {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}


def accuracy_figure(runs: list[dict[str, Any]], colours: dict[str, Any], plt):
    """Saliency AUPR against accuracy, one marker per (run, test split): the paper's Fig. 4."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    markers = "os^Dv<>p*h"
    splits = run_test_splits(runs[0]["results"], runs[0]["config"])
    for run in runs:
        for i, split in enumerate(splits):
            m = run["results"]["splits"].get(split, {})
            if m.get("saliency_aupr") is not None:
                ax.scatter(
                    m["saliency_aupr"],
                    m["accuracy"],
                    color=colours[run["results"].get("method", "?")],
                    marker=markers[i % len(markers)],
                    s=30,
                )
    for method, colour in colours.items():
        ax.scatter([], [], color=colour, label=method)
    for i, split in enumerate(splits):
        ax.scatter([], [], color="grey", marker=markers[i % len(markers)], label=split)
    ax.set_xlabel("saliency AUPR (object focus)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Saliency focus vs accuracy per test split")
    fig.tight_layout()
    return fig


def objective_label(config: dict[str, Any]) -> str:
    """What a run's logged training loss is (train.train.objective): its terms (train.terms.TERMS), summed over the
    batch's rows and divided by their number, e.g. ``CE + CF + F per row`` or ``CE per row + 10·Sal``."""
    config = recorded(config)  # a run from before a setting existed: what it trained with
    terms = used(config)
    whole = next((t for t in terms if t.whole), None)
    if whole is not None:  # mixup: its soft-label CE is the whole objective
        return whole.legend.format(value=value(config, whole.field))
    ce = next((t for t in terms if t.baseline), CE)  # label smoothing: the CE on the originals, smoothed
    parts = [ce.legend.format(value=value(config, ce.field))]
    for term in (t for t in terms if t.rows and t is not CE):
        weight = value(config, term.weight) if term.weight else 1
        parts.append(term.legend if weight == 1 else f"{weight:g}·{term.legend}")
    penalties = [t.legend.format(value=value(config, t.field)) for t in terms if not t.rows and not t.baseline]
    return " + ".join(parts) + " per row" + "".join(f" + {p}" for p in penalties)


def objective_key(configs: list[dict[str, Any]]) -> str:
    """The terms of ``objective_label`` that ``configs`` use, spelt out (the caption under the loss curves)."""
    configs = [recorded(c) for c in configs]  # a run from before a setting existed: what it trained with
    terms = [t for t in TERMS if t is CE or any(on(t, c) for c in configs)]
    parts = []
    for term in (t for t in terms if t.caption):
        kinds = sorted({value(c, term.loss) for c in configs if on(term, c)}) if term.loss else []
        loss = " or ".join(LOSS_NAMES.get(k, k) for k in kinds)
        parts.append(f"{term.name}: {term.caption.format(loss=loss)}")
    rows = f"rows: every image of the batch ({' + '.join(t.rows for t in terms if t.rows)})"
    note = "curves of different objectives are not comparable"
    return "; ".join(parts) + f".\nEach sum is divided by the batch's {rows}; the epoch's mean is shown; {note}."


def curves_figure(runs: list[dict[str, Any]], colours: dict[str, Any], plt):
    """Training loss (left) and the validation metric that selects best.pt (right) per epoch, one line per run, a
    legend in each panel: the loss legend names each method's objective (``objective_label``)."""
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4.6))
    metrics_seen: dict[str, set[tuple[str, str]]] = defaultdict(set)  # method -> {(metric, split)}
    configs: dict[str, dict[str, Any]] = {}
    plotted: set[int] = set()  # every epoch drawn
    for run in runs:
        log = run["folder"] / "log.csv"
        with open(log) if log.is_file() else contextlib.nullcontext([]) as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            continue
        method = run["results"].get("method", "?")
        configs.setdefault(method, run["config"])
        val_key = next(k for k in rows[0] if k.startswith("val_"))
        metrics_seen[method].add((val_key.removeprefix("val_"), run["config"].get("val_split", "val")))
        epochs = [int(r["epoch"]) for r in rows]
        plotted.update(epochs)
        ax_loss.plot(epochs, [float(r["loss"]) for r in rows], color=colours[method], alpha=0.7, marker=".")
        ax_val.plot(epochs, [float(r[val_key]) for r in rows], color=colours[method], alpha=0.7, marker=".")
    every = set().union(*metrics_seen.values()) if metrics_seen else set()
    metric, split = next(iter(every)) if len(every) == 1 else ("metric", "its validation split")
    for method in configs:
        ax_loss.plot([], [], color=colours[method], label=f"{method} — loss: {objective_label(configs[method])}")
        own = "" if len(every) == 1 else " (" + ", ".join(f"{m} on {s}" for m, s in sorted(metrics_seen[method])) + ")"
        ax_val.plot([], [], color=colours[method], label=method + own)
    ax_loss.set_title("training loss per epoch")
    ax_loss.set_ylabel("loss (mean over the epoch's batches)")
    ax_val.set_title(f"validation {metric} per epoch (selects best.pt)")
    ax_val.set_ylabel(f"{metric} on {split}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_val):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(plotted) == 1:  # one epoch: matplotlib's margins span a tenth of an epoch, with fractional ticks
            ax.set_xlim(min(plotted) - 0.5, min(plotted) + 0.5)
            ax.set_xticks(sorted(plotted))
        if configs:
            ax.legend(fontsize=7, loc="best")
    if configs:
        fig.text(0.01, 0.01, objective_key(list(configs.values())), fontsize=7, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.09 if configs else 0, 1, 1))
    return fig


def example_annotations(run: dict[str, Any], data) -> tuple[list[int | None], list[int | None], list[str]]:
    """The true label and the model's top prediction of each image of ``saliency_examples.npz`` (its ``labels``
    and ``logits``; None where the file predates them), and the class names (from the run's ``best.pt``)."""
    n = len(data["images"])
    labels = [int(v) for v in data["labels"]] if "labels" in data.files else [None] * n
    predictions = [int(v) for v in np.argmax(data["logits"], axis=1)] if "logits" in data.files else [None] * n
    classes: list[str] = []
    if (run["folder"] / "best.pt").is_file():
        import torch

        state = torch.load(run["folder"] / "best.pt", map_location="cpu", weights_only=True)
        classes = [str(c) for c in state.get("classes", [])]
    return labels, predictions, classes


def examples_split(run: dict[str, Any]) -> str | None:
    """The split of a run's saliency examples, as train.evaluate picks it: the first with saliency scores but val."""
    val_split = run["config"].get("val_split", "val")
    return next((s for s, m in run["results"]["splits"].items() if s != val_split and "saliency_aupr" in m), None)


def saliency_sheet_figure(runs: list[dict[str, Any]], plt):
    """Rows: the input images with their true label, then one row per method (its first run) with the saliency
    heatmap (each image's scaled to its maximum: one colour bar for all), the object mask's outline, and the model's
    top prediction. None when no run has ``saliency_examples.npz``."""
    firsts: dict[str, dict[str, Any]] = {}
    for run in runs:
        if (run["folder"] / "saliency_examples.npz").is_file():
            firsts.setdefault(run["results"].get("method", "?"), run)
    if not firsts:
        return None
    data = {m: np.load(r["folder"] / "saliency_examples.npz", allow_pickle=False) for m, r in firsts.items()}
    notes = {m: example_annotations(firsts[m], d) for m, d in data.items()}
    images = next(iter(data.values()))["images"]
    labels = next((n[0] for n in notes.values() if any(v is not None for v in n[0])), [None] * len(images))
    classes = next((n[2] for n in notes.values() if n[2]), [])

    def name(index: int | None) -> str:
        if index is None:
            return "?"
        return classes[index] if index < len(classes) else str(index)

    n = len(images)
    fig, axes = plt.subplots(
        len(data) + 1, n, figsize=(1.7 * n + 1.2, 1.95 * (len(data) + 1) + 0.9), squeeze=False, layout="constrained"
    )
    for j in range(n):
        axes[0, j].imshow(images[j])
        axes[0, j].set_xlabel(f"true: {name(labels[j])}", fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8)
    heat = None
    for i, (method, d) in enumerate(data.items(), start=1):
        predictions = notes[method][1]
        for j in range(n):
            scores = d["scores"][j].astype(np.float64)
            axes[i, j].imshow(images[j])
            heat = axes[i, j].imshow(scores / max(scores.max(), 1e-12), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[i, j].contour(d["masks"][j], levels=[0.5], colors="white", linewidths=0.8)
            right = None if labels[j] is None or predictions[j] is None else predictions[j] == labels[j]
            colour = {True: "darkgreen", False: "firebrick", None: "black"}[right]
            mark = {True: " ✓", False: " ✗", None: ""}[right]
            axes[i, j].set_xlabel(f"pred: {name(predictions[j])}{mark}", fontsize=8, color=colour)
        axes[i, 0].set_ylabel(method, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(heat, ax=axes[1:, :].ravel().tolist(), shrink=0.9, pad=0.02)
    bar.set_label("saliency (each image scaled to its max)", fontsize=8)
    from matplotlib.lines import Line2D

    outline = Line2D([], [], color="white", linewidth=1.5, label="object mask (outline)")
    fig.legend(handles=[outline], loc="outside lower center", fontsize=8, facecolor="0.55", framealpha=1)
    first = next(iter(firsts.values()))
    how = first["config"].get("saliency", "gradient")
    split = examples_split(first)
    fig.suptitle(
        f"Saliency of the true class ({'input gradient' if how == 'gradient' else how}) on "
        f"{f'{split!r}' if split else 'test'} images, with each model's top prediction",
        fontsize=10,
    )
    return fig
