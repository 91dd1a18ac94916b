"""The runs a grid asks for: one :class:`RunSpec` per row, seed and training-set fraction, each in its own folder
``<out>/runs/<row>/s<seed>[-f<fraction>]``, and the best single methods that the rows marked "best" then take.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from train.config import Config
from train.study.grid import BEST, Grid, Row
from train.terms import BEST_ROLES, OPTIONAL, on, single_method


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "run"


@dataclass
class RunSpec:
    row: str
    seed: int
    fraction: float
    config: Config


def make_spec(
    grid: Grid,
    row: Row,
    index: int,
    fraction: float,
    shards: str,
    out: Path,
    best: dict[str, str],
    build_preset: str = "demo",
    dataset: str = "",
) -> RunSpec:
    """Run ``index`` (0, 1, ...) of ``row`` on ``fraction`` of the train split, its seed the row's ``seed`` (0 by
    default) + ``index``; ``build_preset`` is the preset when neither the row nor [defaults] names one: that of the
    build's ``dataset``. A config the checks refuse is an error that names the grid and the row."""
    settings = dict(row.settings)
    for key in BEST_ROLES:
        if settings.get(key) == BEST:
            settings[key] = [best[key]]
    values = {**grid.defaults, **settings}
    seed = values.get("seed", 0) + index
    folder = out / "runs" / slug(row.name) / (f"s{seed}" + ("" if fraction == 1.0 else f"-f{fraction:g}"))
    values.update(shards=shards, out=str(folder), seed=seed)
    if fraction != 1.0:
        values["train_fraction"] = fraction
    preset = values.pop("preset", None)
    chosen = ""
    if preset is None:
        preset = build_preset
        chosen = f"no preset in the grid: using {preset!r}, the preset of the build's dataset" + (
            f" ({dataset})" if dataset else ""
        )
    try:
        config = Config.resolve(preset, chosen=chosen, **values)
    except ValueError as e:
        raise ValueError(f"{grid.path}: row {row.name!r}: {e}") from None
    return RunSpec(row.name, seed, fraction, config)


def pick_best(grid: Grid, specs: list[RunSpec]) -> dict[str, str]:
    """The CF and the F method (``BEST_ROLES``) whose single-method rows (``single_method``: that method and no
    other term of the objective) have the best mean accuracy on ``grid.best_by``."""
    scores: dict[str, dict[str, list[float]]] = {role: {} for role in BEST_ROLES}
    for spec in specs:
        c = spec.config
        if spec.fraction != 1.0 or any(on(t, c) for t in OPTIONAL if not t.best):
            continue
        results = json.loads((Path(c.out) / "results.json").read_text())
        accuracy = results["splits"].get(grid.best_by, {}).get("accuracy")
        if accuracy is None:
            raise ValueError(f"{grid.path}: [select] best_by = {grid.best_by!r} is not a split of the build")
        for role in BEST_ROLES:
            if (method := single_method(c, role)) is not None:
                scores[role].setdefault(method, []).append(accuracy)
    best = {}
    for role, by_method in scores.items():
        if by_method:
            best[role] = max(by_method, key=lambda m: sum(by_method[m]) / len(by_method[m]))
    return best
