"""The study's REPORT.md and REPORT.html: the paper's Tables 1-3, Figs. 4-6, and its claims checked with numbers.

The report is built once as a list of blocks (heading, paragraph, table, image, code) and rendered twice, as
Markdown with the figures beside it and as one self-contained HTML file with the figures embedded.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train.data import manifest_sha256
from train.metrics import softmax
from train.report import command_of, declared_test_splits
from train.report import mean_sd as cell  # "mean ± sd" over seeds, "-" when none

TOP = 3  # predictions shown per model in the Fig. 6 sheet
SHEET_ROWS = 8


@dataclass
class Run:
    row: str
    seed: int
    fraction: float
    folder: Path
    config: dict[str, Any]
    results: dict[str, Any]


def load(specs) -> list[Run]:  # noqa: ANN001
    runs = []
    for s in specs:
        folder = Path(s.config.out)
        runs.append(Run(s.row, s.seed, s.fraction, folder, s.config.to_dict(),
                        json.loads((folder / "results.json").read_text())))  # fmt: skip
    return runs


def metric(run: Run, split: str, key: str) -> float | None:
    return run.results["splits"].get(split, {}).get(key)


def contradicting_splits(manifest: dict[str, Any]) -> list[str]:
    """Test splits whose background belongs to another class than the object (from the manifest's evaluation)."""
    evaluation = manifest["dataset"]["params"].get("evaluation", {})
    names = [evaluation.get("bg_gap", {}).get("rand"), evaluation.get("background_reliance", {}).get("shifted"),
             evaluation.get("flip", {}).get("shifted")]  # fmt: skip
    return [n for n in dict.fromkeys(names) if n in manifest["splits"]]


class Blocks(list):
    """The report's content, renderable as Markdown and HTML."""

    def h(self, text: str, level: int = 2) -> None:
        self.append(("h", level, text))

    def p(self, text: str) -> None:
        self.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.append(("table", header, rows))

    def img(self, path: Path, alt: str) -> None:
        self.append(("img", path, alt))

    def code(self, text: str) -> None:
        self.append(("code", text))

    def markdown(self) -> str:
        out = []
        for block in self:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "table":
                out += ["| " + " | ".join(block[1]) + " |", "|" + "---|" * len(block[1])]
                out += ["| " + " | ".join(r) + " |" for r in block[2]]
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1].name})")
            elif kind == "code":
                out.append("```\n" + block[1] + "\n```")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        def inline(text: str) -> str:  # `code` and **bold**, the only Markdown the blocks use
            parts = html.escape(text).split("`")
            text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
            parts = text.split("**")
            return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

        body = []
        for block in self:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{inline(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{inline(c)}</th>" for c in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in block[2])
                body.append(f"<table><tr>{head}</tr>{rows}</table>")
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
            elif kind == "code":
                body.append(f"<pre>{html.escape(block[1])}</pre>")
        style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
                 "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")  # fmt: skip
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip


def write_study_report(out: Path, grid, specs, best: dict[str, str], shards: str, seeds: int, jobs: int = 1) -> Path:  # noqa: ANN001
    from train.data import read_manifest

    manifest = read_manifest(shards)
    runs = load(specs)
    main = [r for r in runs if r.fraction == 1.0]
    rows = list(dict.fromkeys(r.row for r in main))
    by_row = {name: [r for r in main if r.row == name] for name in rows}
    evaluation = manifest["dataset"]["params"].get("evaluation")
    tests = declared_test_splits(manifest["splits"], grid.defaults.get("val_split", "val"), evaluation)
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
    b.code(f"train study --shards {shards} --grid {grid.path} --seeds {seeds} --out {out}"
           + (f" --jobs {jobs}" if jobs > 1 else ""))  # fmt: skip

    b.h("Table 1: accuracy per test split")
    shift_cols = [k for k in ("bg_gap", "flip_gap") if any(r.results.get(k) is not None for r in main)]
    table = [[name, *[cell([metric(r, s, "accuracy") for r in by_row[name]]) for s in tests],
              *[cell([r.results.get(k) for r in by_row[name]]) for k in shift_cols]] for name in rows]  # fmt: skip
    b.table(["method", *tests, *[k.replace("_", "-") for k in shift_cols]], bold_best(table, len(tests)))
    b.p(
        "Splits where the background contradicts the label: "
        + (", ".join(f"`{s}`" for s in against) or "none")
        + ". BG-gap = accuracy on mixed_same - mixed_rand (lower is better)."
    )

    b.h("Table 2: saliency AUPR (does the attribution pick out the object?)")
    b.table(["method", *tests], [[name, *[cell([metric(r, s, "saliency_aupr") for r in by_row[name]]) for s in tests]]
                                 for name in rows])  # fmt: skip
    if any(r.results.get("background_reliance") is not None for r in main):
        b.h("Table 3: background reliance")
        b.p(
            "Mean rise of the probability of the class whose background was pasted in (original -> shifted); lower "
            "is better."
        )
        b.table(["method", "background reliance"], [[n, cell([r.results.get("background_reliance") for r in
                                                                by_row[n]])] for n in rows])  # fmt: skip

    b.h("Fig. 4: saliency AUPR against accuracy")
    b.img(scatter(main, tests, out / "fig4_saliency_vs_accuracy.png"), "saliency AUPR vs accuracy per test split")
    r = correlations(main, tests)
    b.p("Pearson r between saliency AUPR and accuracy over all runs: "
        + ", ".join(f"{s} {v:+.2f}" if v is not None else f"{s} -" for s, v in r.items()) + ".")  # fmt: skip

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
    checked = claims(main, rows, tests, against, curve, grid)
    b.table(["claim", "holds?", "numbers"], [list(c) for c in checked])

    b.h("Runs")
    b.table(["row", "seed", "fraction", "command"],
            [[r.row, str(r.seed), f"{r.fraction:g}", f"`{command_of(r.config)}`"] for r in runs])  # fmt: skip
    b.p(f"Every run trained on the shards whose manifest sha256 is `{sha}`.")

    (out / "REPORT.md").write_text(b.markdown())
    (out / "REPORT.html").write_text(b.html(f"Study {Path(grid.path).name}"))
    claims_json = [{"claim": c, "holds": v, "numbers": n} for c, v, n in checked]
    (out / "claims.json").write_text(json.dumps(claims_json, indent=1))
    return out / "REPORT.md"


def bold_best(table: list[list[str]], columns: int) -> list[list[str]]:
    """Bold the best mean of each accuracy column."""
    for j in range(1, columns + 1):
        means = [float(r[j].split(" ")[0]) if r[j] != "-" else -1.0 for r in table]
        if max(means) >= 0:
            i = int(np.argmax(means))
            table[i][j] = f"**{table[i][j]}**"
    return table


def scatter(runs: list[Run], tests: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tests), figsize=(3.2 * len(tests), 3.2), squeeze=False, sharey=True)
    rows = list(dict.fromkeys(r.row for r in runs))
    colours = {n: plt.cm.tab20(i % 20) for i, n in enumerate(rows)}
    for ax, split in zip(axes[0], tests, strict=True):
        for r in runs:
            x, y = metric(r, split, "saliency_aupr"), metric(r, split, "accuracy")
            if x is not None:
                ax.scatter(x, y, color=colours[r.row], s=18)
        ax.set_title(split, fontsize=9)
        ax.set_xlabel("saliency AUPR", fontsize=8)
    axes[0, 0].set_ylabel("accuracy", fontsize=8)
    for n in rows:
        axes[0, -1].scatter([], [], color=colours[n], label=n)
    axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return None
    return float(np.corrcoef(xs, ys)[0, 1])


def correlations(runs: list[Run], tests: list[str]) -> dict[str, float | None]:
    """Pearson r between saliency AUPR and accuracy over ``runs``, per test split."""
    values = {}
    for split in tests:
        pairs = [(metric(r, split, "saliency_aupr"), metric(r, split, "accuracy")) for r in runs]
        pairs = [(x, y) for x, y in pairs if x is not None]
        values[split] = pearson([x for x, _ in pairs], [y for _, y in pairs])
    return values


def accuracy_on(runs: list[Run], splits: list[str]) -> float | None:
    """Mean accuracy over ``splits`` and then over ``runs``; None without runs."""
    return float(np.mean(per_seed(runs, splits))) if runs else None


def gain_curve(curve: list[Run], grid, splits: list[str], path: Path):  # noqa: ANN001, ANN201
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({*grid.fractions, 1.0})
    orig = "Orig" if "Orig" in grid.curve_rows else None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    lines = []
    for name in grid.curve_rows:
        if name == orig:
            continue
        ys = []
        for f in fractions:
            mine = accuracy_on([r for r in curve if r.row == name and r.fraction == f], splits)
            base = accuracy_on([r for r in curve if r.row == orig and r.fraction == f], splits) if orig else 0.0
            ys.append(None if mine is None or base is None else mine - base)
        ax.plot(fractions, [np.nan if y is None else y for y in ys], marker="o", label=name)
        lines.append(f"{name}: " + ", ".join(f"{f:g} -> {y:+.3f}" for f, y in zip(fractions, ys, strict=True)
                                             if y is not None))  # fmt: skip
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("fraction of the training set")
    ax.set_ylabel(f"accuracy gain over Orig ({', '.join(splits)})" if orig else "accuracy", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, (f"Mean accuracy on {', '.join(splits)} minus Orig's, per training-set fraction: " + "; ".join(lines)
                  + ".")  # fmt: skip


def contact_sheet(runs: list[Run], rows: list[str], splits: list[str], shards: str, manifest, path: Path):  # noqa: ANN001, ANN201
    """Test images (seed 0) where the best row is right and Orig wrong, with both models' top-3 predictions."""
    if "Orig" not in rows:
        return None
    others = [n for n in rows if n != "Orig"]
    if not others:
        return None
    best = max(others, key=lambda n: accuracy_on([r for r in runs if r.row == n], splits) or 0.0)
    first = {n: min((r for r in runs if r.row == n), key=lambda r: r.seed) for n in ("Orig", best)}
    preds = {n: np.load(r.folder / "predictions.npz", allow_pickle=False) for n, r in first.items()
             if (r.folder / "predictions.npz").is_file()}  # fmt: skip
    if len(preds) < 2:
        return None
    classes = manifest["dataset"]["classes"]
    chosen = []  # (split, key, label, orig top-3, best top-3)
    for split in splits:
        a, o = preds[best], preds["Orig"]
        if f"{split}.keys" not in a.files:
            continue
        index = {k: i for i, k in enumerate(o[f"{split}.keys"])}
        for i, key in enumerate(a[f"{split}.keys"]):
            j = index.get(key)
            label = int(a[f"{split}.labels"][i])
            if j is None:
                continue
            pa, po = softmax(a[f"{split}.logits"][i]), softmax(o[f"{split}.logits"][j])
            if pa.argmax() == label and po.argmax() != label:
                chosen.append((split, str(key), label, po, pa))
            if len(chosen) >= SHEET_ROWS * (splits.index(split) + 1) // len(splits):
                break
    if not chosen:
        return None
    images = read_images(shards, manifest, {(s, k) for s, k, *_ in chosen})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(chosen), figsize=(2.3 * len(chosen), 3.4), squeeze=False)
    for ax, (split, key, label, po, pa) in zip(axes[0], chosen, strict=True):
        ax.imshow(images[(split, key)])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{split}\ntrue: {classes[label]}", fontsize=7)
        ax.set_xlabel(f"Orig: {top(po, classes)}\n{best}: {top(pa, classes)}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, (f"{len(chosen)} test images (seed 0) that {best} classifies right and Orig wrong, with each "
                  f"model's top-{TOP} classes and probabilities.")  # fmt: skip


def top(p: np.ndarray, classes: list[str]) -> str:
    order = np.argsort(-p)[:TOP]
    return " ".join(f"{classes[i][:8]} {p[i]:.2f}" for i in order)


def read_images(root: str, manifest, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:  # noqa: ANN001
    """The stored originals of the wanted (split, key) pairs, read as the trainer reads shards (untrusted)."""
    from augment import encode, schema, shards

    limits = shards.Limits.for_image_size(manifest["image_size"])
    found = {}
    for split in sorted({s for s, _ in wanted}):
        for shard in manifest["splits"][split]["shards"]:
            for key, fields in shards.iter_records(shards.join(root, shard["path"]), {schema.IMAGE}, limits):
                if (split, key) in wanted:
                    found[(split, key)] = encode.decode_image(fields[schema.IMAGE], limits.pixels)
    return found


def per_seed(runs: list[Run], splits: list[str], key: str = "accuracy") -> list[float]:
    """One value per run (seed): ``key`` averaged over ``splits``."""
    return [float(np.mean([metric(r, s, key) or 0.0 for s in splits])) for r in runs]


def compare(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of the means and its standard error (seeds as independent draws)."""
    var = sum(np.var(x, ddof=1) / len(x) if len(x) > 1 else 0.0 for x in (a, b))
    return float(np.mean(a) - np.mean(b)), float(np.sqrt(var))


def direction(diff: float, se: float) -> str:
    """``up`` or ``down`` when the difference is over two standard errors, else ``noise``."""
    return "up" if diff > 2 * se else "down" if diff < -2 * se else "noise"


def tally(directions: list[str]) -> str:
    ups = directions.count("up")
    if ups == len(directions):
        return "yes"
    if ups == 0:
        return "within noise" if set(directions) == {"noise"} else "no"
    return f"partly ({ups} of {len(directions)})"


def claims(main: list[Run], rows: list[str], tests: list[str], against: list[str], curve: list[Run],
           grid) -> list[tuple[str, str, str]]:  # noqa: ANN001  # fmt: skip
    """The paper's qualitative claims, each checked on these runs: (claim, verdict, numbers).

    A difference counts when it is over two standard errors across seeds; smaller ones are called noise.
    """
    by = {n: [r for r in main if r.row == n] for n in rows}
    splits = against or tests
    on = f"on {', '.join(splits)}"

    def single(role: str) -> list[str]:
        other = "f" if role == "cf" else "cf"
        return [n for n in rows if by[n] and len(by[n][0].config[role]) == 1 and not by[n][0].config[other]
                and not (by[n][0].config["sal"] or by[n][0].config["fgsm"])]  # fmt: skip

    def versus(a: list[float], b: list[float]) -> tuple[str, str]:
        diff, se = compare(a, b)
        return direction(diff, se), f"{diff:+.3f} ± {se:.3f}"

    out = []
    if by.get("Orig"):
        orig = per_seed(by["Orig"], splits)
        results = {n: versus(per_seed(by[n], splits), orig) for n in single("cf") + single("f")}
        if results:
            out.append(("CF and F each improve accuracy where the background contradicts the label",
                        tally([d for d, _ in results.values()]),
                        "vs Orig: " + ", ".join(f"{n} {t}" for n, (_, t) in results.items()) + f" ({on})"))  # fmt: skip
        shuffle = next((n for n in single("f") if by[n][0].config["f"] == ["shuffle"]), None)
        if shuffle:
            per_split = {s: versus(per_seed(by[shuffle], [s]), per_seed(by["Orig"], [s])) for s in tests}
            out.append(("F(shuffle) improves accuracy on every test split", tally([d for d, _ in per_split.values()]),
                        "vs Orig: " + ", ".join(f"{s} {t}" for s, (_, t) in per_split.items())))  # fmt: skip
    for combo in [n for n in rows if by[n] and by[n][0].config["cf"] and by[n][0].config["f"]]:
        c = by[combo][0].config
        parts = [n for n in single("cf") + single("f")
                 if by[n][0].config["cf"] in ([], c["cf"]) and by[n][0].config["f"] in ([], c["f"])]  # fmt: skip
        if parts:
            best = max(parts, key=lambda n: np.mean(per_seed(by[n], splits)))
            d, text = versus(per_seed(by[combo], splits), per_seed(by[best], splits))
            out.append((f"{combo} beats each of its parts alone", {"up": "yes", "down": "no"}.get(d, "within noise"),
                        f"{combo} {np.mean(per_seed(by[combo], splits)):.3f} vs its best part {best} "
                        f"{np.mean(per_seed(by[best], splits)):.3f}: {text} ({on})"))  # fmt: skip
    sal_rows = [n for n in rows if by[n] and by[n][0].config["sal"] and not by[n][0].config["cf"]
                and not by[n][0].config["f"]]  # fmt: skip
    if sal_rows and by.get("Orig"):
        n = max(sal_rows, key=lambda x: by[x][0].config["sal"])
        d, focus = versus(per_seed(by[n], tests, "saliency_aupr"), per_seed(by["Orig"], tests, "saliency_aupr"))
        _, accuracy = versus(per_seed(by[n], tests), per_seed(by["Orig"], tests))
        verdict = {"up": "yes", "down": "no"}.get(d, "within noise")
        out.append((f"{n} raises saliency focus (it may cost accuracy)", verdict,
                    f"vs Orig, over all test splits: saliency AUPR {focus}, accuracy {accuracy}"))  # fmt: skip
    r = correlations(main, tests)
    known = [v for v in r.values() if v is not None]
    if known:
        weak = sum(abs(v) < 0.5 for v in known)
        out.append(("saliency AUPR correlates only weakly with accuracy (abs(r) < 0.5)",
                    "yes" if weak == len(known) else "no" if weak == 0 else f"partly ({weak} of {len(known)})",
                    ", ".join(f"{s} r = {v:+.2f}" for s, v in r.items() if v is not None)))  # fmt: skip
    if grid.fractions and curve and "Orig" in grid.curve_rows:
        fractions = sorted({*grid.fractions, 1.0})
        for name in [n for n in grid.curve_rows if n != "Orig"]:
            gains = {}  # fraction -> per-seed gain over Orig with the same seed
            for f in fractions:
                mine = {x.seed: per_seed([x], splits)[0] for x in curve if x.row == name and x.fraction == f}
                base = {x.seed: per_seed([x], splits)[0] for x in curve if x.row == "Orig" and x.fraction == f}
                gains[f] = [mine[s] - base[s] for s in sorted(mine) if s in base]
            if all(gains.values()):
                d, text = versus(gains[fractions[-1]], gains[fractions[0]])
                out.append((f"the gain of {name} over Orig grows with more data",
                            {"up": "yes", "down": "no"}.get(d, "within noise"),
                            ", ".join(f"{f:g}: {np.mean(g):+.3f}" for f, g in gains.items())
                            + f"; {fractions[-1]:g} vs {fractions[0]:g}: {text} ({on})"))  # fmt: skip
    return out
