"""The paper's qualitative claims, each checked on a study's runs with the numbers behind the verdict."""

from __future__ import annotations

import numpy as np

from train.study.results import Run, correlations, metric, per_seed
from train.terms import single_method


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


LEARNT_MARGIN = 0.1  # a model learnt when its mean val accuracy is at least chance + this
AT_CHANCE = "not checked: models at chance"


def val_accuracy(runs: list[Run]) -> float:
    """The mean accuracy of ``runs`` on their val split (the split that selected their checkpoint)."""
    return float(np.mean([metric(r, r.config.get("val_split", "val"), "accuracy") or 0.0 for r in runs]))


def unlearnt(runs: list[Run], chance: float | None) -> dict[str, float]:
    """The rows (with their fraction of train, when not all of it) of ``runs`` whose mean val accuracy is below
    ``chance`` + ``LEARNT_MARGIN``, with that accuracy; empty when every one learnt, or ``chance`` is None."""
    if chance is None:
        return {}
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.row + (f" at {r.fraction:g}" if r.fraction != 1.0 else ""), []).append(r)
    accuracy = {name: val_accuracy(group) for name, group in groups.items()}
    return {name: a for name, a in accuracy.items() if a < chance + LEARNT_MARGIN}


def claims(
    main: list[Run],
    rows: list[str],
    tests: list[str],
    against: list[str],
    curve: list[Run],
    grid,
    chance: float | None = None,
) -> list[tuple[str, str, str]]:
    """The paper's qualitative claims, each checked on these runs: (claim, verdict, numbers).

    A difference counts when it is over two standard errors across seeds; smaller ones are called noise. With
    ``chance`` (1 / classes), a claim is checked only where every model it compares learnt (``unlearnt``): a model
    at chance gains nothing from more data, and its differences from another are noise however they fall; the
    verdict then says so, and the numbers name the models and their val accuracy.
    """
    by = {n: [r for r in main if r.row == n] for n in rows}
    splits = against or tests
    on = f"on {', '.join(splits)}"
    out: list[tuple[str, str, str]] = []

    def add(claim: str, verdict: str, numbers: str, runs: list[Run]) -> None:
        low = unlearnt(runs, chance)
        if low:
            verdict = AT_CHANCE
            numbers = (
                "mean val accuracy "
                + ", ".join(f"{n} {a:.3f}" for n, a in low.items())
                + f"; chance {chance:.3f}, a model learnt from {chance + LEARNT_MARGIN:.3f}"
            )
        out.append((claim, verdict, numbers))

    def single(role: str) -> list[str]:  # the rows that train one method of role and no other term
        return [n for n in rows if by[n] and single_method(by[n][0].config, role) is not None]

    def versus(a: list[float], b: list[float]) -> tuple[str, str]:
        diff, se = compare(a, b)
        return direction(diff, se), f"{diff:+.3f} ± {se:.3f}"

    if by.get("Orig"):
        orig = per_seed(by["Orig"], splits)
        results = {n: versus(per_seed(by[n], splits), orig) for n in single("cf") + single("f")}
        if results:
            add(
                "CF and F each improve accuracy where the background contradicts the label",
                tally([d for d, _ in results.values()]),
                "vs Orig: " + ", ".join(f"{n} {t}" for n, (_, t) in results.items()) + f" ({on})",
                by["Orig"] + [r for n in results for r in by[n]],
            )
        shuffle = next((n for n in single("f") if by[n][0].config["f"] == ["shuffle"]), None)
        if shuffle:
            per_split = {s: versus(per_seed(by[shuffle], [s]), per_seed(by["Orig"], [s])) for s in tests}
            add(
                "F(shuffle) improves accuracy on every test split",
                tally([d for d, _ in per_split.values()]),
                "vs Orig: " + ", ".join(f"{s} {t}" for s, (_, t) in per_split.items()),
                by["Orig"] + by[shuffle],
            )
    for combo in [n for n in rows if by[n] and by[n][0].config["cf"] and by[n][0].config["f"]]:
        c = by[combo][0].config
        parts = [
            n
            for n in single("cf") + single("f")
            if by[n][0].config["cf"] in ([], c["cf"]) and by[n][0].config["f"] in ([], c["f"])
        ]
        if parts:
            best = max(parts, key=lambda n: np.mean(per_seed(by[n], splits)))
            d, text = versus(per_seed(by[combo], splits), per_seed(by[best], splits))
            add(
                f"{combo} beats each of its parts alone",
                {"up": "yes", "down": "no"}.get(d, "within noise"),
                f"{combo} {np.mean(per_seed(by[combo], splits)):.3f} vs its best part {best} "
                f"{np.mean(per_seed(by[best], splits)):.3f}: {text} ({on})",
                by[combo] + by[best],
            )
    sal_rows = [
        n for n in rows if by[n] and by[n][0].config["sal"] and not by[n][0].config["cf"] and not by[n][0].config["f"]
    ]
    if sal_rows and by.get("Orig"):
        n = max(sal_rows, key=lambda x: by[x][0].config["sal"])
        d, focus = versus(per_seed(by[n], tests, "saliency_aupr"), per_seed(by["Orig"], tests, "saliency_aupr"))
        _, accuracy = versus(per_seed(by[n], tests), per_seed(by["Orig"], tests))
        verdict = {"up": "yes", "down": "no"}.get(d, "within noise")
        add(
            f"{n} raises saliency focus (it may cost accuracy)",
            verdict,
            f"vs Orig, over all test splits: saliency AUPR {focus}, accuracy {accuracy}",
            by[n] + by["Orig"],
        )
    r = correlations(main, tests)
    known = [v for v in r.values() if v is not None]
    if known:
        weak = sum(abs(v) < 0.5 for v in known)
        add(
            "saliency AUPR correlates only weakly with accuracy (abs(r) < 0.5)",
            "yes" if weak == len(known) else "no" if weak == 0 else f"partly ({weak} of {len(known)})",
            ", ".join(f"{s} r = {v:+.2f}" for s, v in r.items() if v is not None),
            main,
        )
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
                add(
                    f"the gain of {name} over Orig grows with more data",
                    {"up": "yes", "down": "no"}.get(d, "within noise"),
                    ", ".join(f"{f:g}: {np.mean(g):+.3f}" for f, g in gains.items())
                    + f"; {fractions[-1]:g} vs {fractions[0]:g}: {text} ({on})",
                    [x for x in curve if x.row in (name, "Orig") and x.fraction in fractions],
                )
    return out
