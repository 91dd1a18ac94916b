"""The study's REPORT.md, REPORT.html and claims.json: the paper's Tables 1-3, Figs. 4-6, and its claims checked with
numbers, over the runs of a finished study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augment.contract.schema import parse_evaluation, parse_shifted_tests
from train.commands import command_of
from train.data import manifest_sha256
from train.report import mean_sd as cell  # "mean ± sd" over seeds, "-" when none
from train.splits import declared_test_splits, generated_splits
from train.study.blocks import Blocks
from train.study.claims import LEARNT_MARGIN, claims
from train.study.figures import contact_sheet, gain_curve, scatter
from train.study.results import correlations, load, metric


def contradicting_splits(manifest: dict[str, Any]) -> list[str]:
    """Test splits whose background belongs to another class than the object (from the manifest's evaluation)."""
    return [n for n in parse_evaluation(manifest).contradicting_splits() if n in manifest["splits"]]


def write_study_report(out: Path, grid, specs, best: dict[str, str], shards: str, seeds: int, jobs: int = 1) -> Path:
    from train.data import read_manifest

    manifest = read_manifest(shards)
    runs = load(specs)
    main = [r for r in runs if r.fraction == 1.0]
    rows = list(dict.fromkeys(r.row for r in main))
    by_row = {name: [r for r in main if r.row == name] for name in rows}
    evaluation = parse_evaluation(manifest)
    own = [s for s in manifest["splits"] if s not in generated_splits(parse_shifted_tests(manifest))]
    tests = declared_test_splits(own, grid.defaults.get("val_split", "val"), evaluation)
    against = contradicting_splits(manifest)
    sha = manifest_sha256(shards)
    b = Blocks()

    b.h(f"Study: {Path(grid.path).name} on {shards}", 1)
    extra = len(runs) - len(main)
    fractions = f", plus {extra} runs on training-set fractions {grid.fractions}" if extra else ""
    b.p(f"{len(runs)} runs: {len(rows)} rows x {seeds} seeds{fractions}. Mean ± sd over seeds.")
    b.p(
        f"Shards `{shards}`: {manifest['dataset']['name']}, {manifest['num_samples']} samples, manifest sha256 "
        f"`{sha}`; build command `{manifest.get('command') or '(API)'}`."
    )
    if best:
        b.p(
            "Best single methods by mean "
            + grid.best_by
            + " accuracy (used for the rows marked best): "
            + ", ".join(f"{k.upper()} = `{v}`" for k, v in best.items())
            + "."
        )
    b.code(
        f"train study --shards {shards} --grid {grid.path} --seeds {seeds} --out {out}"
        + (f" --jobs {jobs}" if jobs > 1 else "")
    )

    b.h("Table 1: accuracy per test split")
    shift_cols = [k for k in ("bg_gap", "flip_gap") if any(r.results.get(k) is not None for r in main)]
    table = [
        [
            name,
            *[cell([metric(r, s, "accuracy") for r in by_row[name]]) for s in tests],
            *[cell([r.results.get(k) for r in by_row[name]]) for k in shift_cols],
        ]
        for name in rows
    ]
    b.table(["method", *tests, *[k.replace("_", "-") for k in shift_cols]], bold_best(table, len(tests)))
    b.p(
        "Splits where the background contradicts the label: "
        + (", ".join(f"`{s}`" for s in against) or "none")
        + ". BG-gap = accuracy on mixed_same - mixed_rand (lower is better)."
    )

    b.h("Table 2: saliency AUPR (does the attribution pick out the object?)")
    b.table(
        ["method", *tests],
        [[name, *[cell([metric(r, s, "saliency_aupr") for r in by_row[name]]) for s in tests]] for name in rows],
    )
    if any(r.results.get("background_reliance") is not None for r in main):
        b.h("Table 3: background reliance")
        b.p(
            "Mean rise of the probability of the class whose background was pasted in (original -> shifted); lower "
            "is better."
        )
        b.table(
            ["method", "background reliance"],
            [[n, cell([r.results.get("background_reliance") for r in by_row[n]])] for n in rows],
        )

    b.h("Fig. 4: saliency AUPR against accuracy")
    b.img(scatter(main, tests, out / "fig4_saliency_vs_accuracy.png"), "saliency AUPR vs accuracy per test split")
    r = correlations(main, tests)
    b.p(
        "Pearson r between saliency AUPR and accuracy over all runs: "
        + ", ".join(f"{s} {v:+.2f}" if v is not None else f"{s} -" for s, v in r.items())
        + "."
    )

    curve = [r for r in runs if r.row in grid.curve_rows]
    if grid.fractions and curve:
        b.h("Fig. 5: gain over Orig against training-set size")
        path, text = gain_curve(curve, grid, against or tests, out / "fig5_gain_vs_data.png")
        b.img(path, "gain over Orig vs training-set fraction")
        b.p(text)

    b.h("Fig. 6: where the best method is right and Orig is wrong")
    sheet = contact_sheet(main, rows, against or tests, shards, manifest, out / "fig6_examples.png")
    if sheet is None:
        b.p("No test image where the best method is right and Orig is wrong (or no Orig row), so no sheet.")
    else:
        b.img(sheet[0], "test images with top-3 predictions")
        b.p(sheet[1])

    b.h("The paper's claims on this data")
    chance = 1 / len(manifest["dataset"]["classes"])
    b.p(
        f"A claim is checked only where every model it compares learnt: a mean accuracy on the val split of at least "
        f"chance (1/{len(manifest['dataset']['classes'])} classes = {chance:.3f}) + {LEARNT_MARGIN:g}. A difference "
        "counts when it is over two standard errors across seeds."
    )
    checked = claims(main, rows, tests, against, curve, grid, chance)
    b.table(["claim", "holds?", "numbers"], [list(c) for c in checked])

    b.h("Runs")
    b.table(
        ["row", "seed", "fraction", "command"],
        [[r.row, str(r.seed), f"{r.fraction:g}", f"`{command_of(r.config)}`"] for r in runs],
    )
    b.p(f"Every run trained on the shards whose manifest sha256 is `{sha}`.")

    (out / "REPORT.md").write_text(b.markdown())
    (out / "REPORT.html").write_text(b.html(f"Study {Path(grid.path).name}"))
    claims_json = [{"claim": c, "holds": v, "numbers": n} for c, v, n in checked]
    (out / "claims.json").write_text(json.dumps(claims_json, indent=1))
    return out / "REPORT.md"


def bold_best(table: list[list[str]], columns: int) -> list[list[str]]:
    """Bold the best mean of each accuracy column: a strict best as printed (``0.200`` against ``0.200`` is a tie,
    and a tie bolds nothing)."""
    for j in range(1, columns + 1):
        means = [float(r[j].split(" ")[0]) if r[j] != "-" else -1.0 for r in table]
        if max(means) >= 0 and means.count(max(means)) == 1:
            i = means.index(max(means))
            table[i][j] = f"**{table[i][j]}**"
    return table
