"""``train report``: one table across runs (mean +- sd over seeds) and the plots people look at.

- ``report.md``: rows = methods, columns = accuracy per split, the worst-group accuracy and mean saliency AUPR over
  the test splits (``declared_test_splits``: not val, not IN-9's only_fg/no_fg probes, not CCT's cis_val and
  trans_val), then the shift metrics, as mean +- sd over seeds, with the exact command of each run (``command_of``);
- ``saliency_vs_accuracy.png``: saliency AUPR against accuracy per test split (the paper's Fig. 4);
- ``curves.png``: training loss and validation metric per epoch, one line per run;
- ``saliency_sheet.png``: a few test images with each method's saliency heatmap (from ``saliency_examples.npz``).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

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


def command_of(config: dict[str, Any]) -> str:
    """The `train fit` command that reproduces a run, serialised from its resolved config (``train.cli.fit_args``):
    every setting that differs from its preset's value, as a flag; keys that are no setting any more (a run of an
    older version) follow as a note."""
    import shlex

    from train.cli import fit_args

    args, notes = fit_args(config)
    return shlex.join(["train", "fit", *args]) + (f"  # not settings any more: {', '.join(notes)}" if notes else "")


# The test splits of each dataset's build, by the split names its reader writes (augment/datasets/*.py), for runs
# whose results.json does not list them: the summary columns average over these and nothing else.
TEST_SPLIT_RULES = (
    ("in9, synthetic", ("original", "mixed_same", "mixed_rand", "mixed_next")),  # only_fg, no_fg, only_bg_*: probes
    ("waterbirds", ("test_original", "test_flip")),  # their union is `test`, counted once through them
    ("cct", ("cis_test", "trans_test")),  # cis_val, trans_val: validation sets
)


def declared_test_splits(
    splits: Iterable[str], val_split: str = "val", evaluation: dict[str, Any] | None = None
) -> list[str]:
    """The build's test splits, in build order: the splits the summary columns (worst group, mean saliency) average.

    Args:
        splits: the split names of the build (or of a run's results).
        val_split: the run's model-selection split, never a test split.
        evaluation: the manifest's ``dataset.params.evaluation``. The splits it pairs up (IN-9's and synthetic's
            ``bg_gap`` and ``background_reliance``, Waterbirds' ``flip``) or lists (CCT's ``cis``/``trans``, less
            its ``*_val`` sets) are the test splits. Without it, or when it names none of ``splits``, the first
            rule of ``TEST_SPLIT_RULES`` that matches a split name applies; else every split but train, val,
            ``val_split`` and ``*_val``.
    """
    splits = list(splits)
    named: list[str] = []
    for value in (evaluation or {}).values():
        if isinstance(value, dict):
            named += [v for k, v in value.items() if k in ("same", "rand", "original", "shifted")]
        elif isinstance(value, list):
            named += value
    chosen = [s for s in splits if s in named and s != val_split and not s.endswith("_val")]
    for _, names in TEST_SPLIT_RULES:
        if chosen:
            break
        chosen = [s for s in splits if s in names]
    return chosen or [s for s in splits if s not in ("train", "val", val_split) and not s.endswith("_val")]


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
    splits = [s for s in runs[0]["results"]["splits"]]
    shifts = [m for m in SHIFT_METRICS if any(r["results"].get(m) is not None for r in runs)]
    header = ["method", "seeds", *[f"acc {s}" for s in splits], "worst-group", *shifts, "saliency AUPR"]
    lines = ["# Results", "", f"Runs under `{root}`, mean ± sd over seeds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    for method, group in by_method.items():
        row = [method, str(len(group))]
        row += [mean_sd([r["results"]["splits"][s]["accuracy"] for r in group if s in r["results"]["splits"]])
                for s in splits]  # fmt: skip
        row.append(mean_sd([worst_group(r["results"], r["config"]) for r in group]))
        row += [mean_sd([r["results"].get(m) for r in group]) for m in shifts]
        row.append(mean_sd([mean_saliency(r["results"], r["config"]) for r in group]))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Commands:", ""]
    lines += [f"- `{command_of(r['config'])}`" for r in runs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = draw_plots(runs, out.parent)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    out.write_text("\n".join(lines) + "\n")
    return out


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = sorted({r["results"].get("method", "?") for r in runs})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}

    fig, ax = plt.subplots(figsize=(6, 4.5))
    markers = "os^Dv<>p*h"
    splits = run_test_splits(runs[0]["results"], runs[0]["config"])
    for run in runs:
        for i, split in enumerate(splits):
            m = run["results"]["splits"].get(split, {})
            if m.get("saliency_aupr") is not None:
                ax.scatter(m["saliency_aupr"], m["accuracy"], color=colours[run["results"].get("method", "?")],
                           marker=markers[i % len(markers)], s=30)  # fmt: skip
    for method in methods:
        ax.scatter([], [], color=colours[method], label=method)
    for i, split in enumerate(splits):
        ax.scatter([], [], color="grey", marker=markers[i % len(markers)], label=split)
    ax.set_xlabel("saliency AUPR (object focus)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Saliency focus vs accuracy per test split")
    fig.tight_layout()
    paths.append(folder / "saliency_vs_accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.5))
    for run in runs:
        rows = list(csv.DictReader(open(run["folder"] / "log.csv"))) if (run["folder"] / "log.csv").is_file() else []
        if not rows:
            continue
        colour = colours[run["results"].get("method", "?")]
        epochs = [int(r["epoch"]) for r in rows]
        val_key = next(k for k in rows[0] if k.startswith("val_"))
        ax_loss.plot(epochs, [float(r["loss"]) for r in rows], color=colour, alpha=0.7)
        ax_val.plot(epochs, [float(r[val_key]) for r in rows], color=colour, alpha=0.7)
    ax_loss.set_title("training loss")
    ax_val.set_title("validation metric")
    for ax in (ax_loss, ax_val):
        ax.set_xlabel("epoch")
    for method in methods:
        ax_val.plot([], [], color=colours[method], label=method)
    ax_val.legend(fontsize=7)
    fig.tight_layout()
    paths.append(folder / "curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    sheet = saliency_sheet(runs, folder, plt)
    if sheet:
        paths.append(sheet)
    return paths


def saliency_sheet(runs: list[dict[str, Any]], folder: Path, plt) -> Path | None:
    """Rows: the input images, then one row per method (its first run) with the saliency heatmap overlaid."""
    firsts: dict[str, Path] = {}
    for run in runs:
        examples = run["folder"] / "saliency_examples.npz"
        if examples.is_file():
            firsts.setdefault(run["results"].get("method", "?"), examples)
    if not firsts:
        return None
    data = {m: np.load(p, allow_pickle=False) for m, p in firsts.items()}
    images = next(iter(data.values()))["images"]
    n = len(images)
    fig, axes = plt.subplots(len(data) + 1, n, figsize=(1.6 * n, 1.6 * (len(data) + 1)), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j])
    axes[0, 0].set_ylabel("input", fontsize=7)
    for i, (method, d) in enumerate(data.items(), start=1):
        for j in range(n):
            axes[i, j].imshow(images[j])
            axes[i, j].imshow(d["scores"][j], cmap="jet", alpha=0.5)
            axes[i, j].contour(d["masks"][j], levels=[0.5], colors="white", linewidths=0.5)
        axes[i, 0].set_ylabel(method, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = folder / "saliency_sheet.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
