"""The grid file of ``train study``: a small TOML file (read with the standard library's ``tomllib``):

    [defaults]              # any `train fit` setting (flag --x-y is key x_y), for every run
    preset = "demo"         # no preset: the preset of the build's dataset, as for `train fit`
    [[run]]                 # one table row per entry; `name` defaults to the method's name, e.g. CF(tile)+F(shuffle)
    cf = ["tile"]
    [[run]]
    name = "CF+F"
    cf = "best"             # "best": the CF (F) method whose single-method row scored best on `best_by`
    f = "best"
    [curve]                 # Fig. 5: these rows again on a fraction of the training set
    fractions = [0.25, 0.5]
    rows = ["Orig", "CF+F"]
    [select]
    best_by = "val"         # the split whose mean accuracy picks "best" (val: no peeking at the test splits)

A row's config is ``Config.resolve(preset, **settings)``, the function `train fit` resolves its flags with, so a row
and the `train fit` command with the same settings train the same config. Unknown keys are errors that list the
valid ones. ``seed`` is the first seed: ``--seeds 3`` runs seeds seed, seed + 1, seed + 2 (0, 1, 2 without it).
A grid may name a ``base`` grid whose rows, curve and selection it takes, with its own defaults on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from train.config import Config
from train.terms import BEST_ROLES, TERMS

BEST = "best"


@dataclass
class Row:
    """One table row: its name and the settings it changes from the defaults (``cf``/``f`` may be "best")."""

    name: str
    settings: dict[str, Any]

    def needs_best(self) -> bool:
        return any(self.settings.get(role) == BEST for role in BEST_ROLES)


@dataclass
class Grid:
    defaults: dict[str, Any]
    rows: list[Row]
    fractions: list[float] = field(default_factory=list)
    curve_rows: list[str] = field(default_factory=list)
    best_by: str = "val"
    path: str = ""


def load_grid(path: Path) -> Grid:
    """Read and check a grid file; errors name the file, the entry and the valid keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--grid {path}: no such file; see docs/grids/paper.toml for an example")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--grid {path}: not valid TOML ({e})") from None
    if "base" in data:  # another grid's rows and curve, with these defaults on top of its own
        base_path = path.parent / data.pop("base")
        base = load_grid(base_path)
        data.setdefault("run", [{"name": r.name, **r.settings} for r in base.rows])
        data["defaults"] = {**base.defaults, **data.get("defaults", {})}
        data.setdefault("curve", {"fractions": base.fractions, "rows": base.curve_rows})
        data.setdefault("select", {"best_by": base.best_by})
    known = {f.name for f in fields(Config)} - {"shards", "out"}  # the build and the run folder come from the study
    unknown_top = sorted(set(data) - {"defaults", "run", "curve", "select"})
    if unknown_top:
        raise ValueError(f"{path}: unknown keys {unknown_top}; expected base, [defaults], [[run]], [curve], [select]")
    for table, valid in (("curve", ("fractions", "rows")), ("select", ("best_by",))):
        bad = sorted(set(data.get(table, {})) - set(valid))
        if bad:
            raise ValueError(f"{path}: [{table}]: unknown keys {bad}; valid: {', '.join(valid)}")

    def check(where: str, settings: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(settings) - known - {"name"})
        if bad:
            raise ValueError(f"{path}: {where}: unknown settings {bad}; valid: {', '.join(sorted(known))}")
        out = dict(settings)
        for key in ("cf", "f"):
            if isinstance(out.get(key), str) and out[key] != BEST:
                out[key] = [out[key]]
        return out

    defaults = check("[defaults]", data.get("defaults", {}))
    rows = []
    for i, entry in enumerate(data.get("run", [])):
        settings = check(f"[[run]] #{i + 1}", entry)
        values = {k: v for k, v in {**defaults, **settings}.items() if v != BEST and k != "name"}
        try:  # types and ranges now, not when the row's turn comes ("best" methods are checked once chosen)
            Config.resolve(values.pop("preset", "demo"), **{**values, "shards": "", "out": ""})
        except ValueError as e:
            raise ValueError(f"{path}: [[run]] #{i + 1}: {e}") from None
        name = settings.pop("name", None) or row_name(defaults, settings)
        rows.append(Row(name, settings))
    if not rows:
        raise ValueError(f"{path}: no [[run]] entries; add one per table row")
    names = [r.name for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: rows {dup} appear twice; give them distinct `name`s")
    curve = data.get("curve", {})
    fractions = [float(x) for x in curve.get("fractions", [])]
    if any(not 0 < x < 1 for x in fractions):
        raise ValueError(f"{path}: [curve] fractions {fractions}: expected values in (0, 1); 1.0 is the main grid")
    curve_rows = list(curve.get("rows", []))
    missing = [n for n in curve_rows if n not in names]
    if missing:
        raise ValueError(f"{path}: [curve] rows {missing} are not rows of the grid; rows: {', '.join(names)}")
    return Grid(defaults, rows, fractions, curve_rows, data.get("select", {}).get("best_by", "val"), str(path))


def row_name(defaults: dict[str, Any], settings: dict[str, Any]) -> str:
    """The method name `train report` would show, e.g. CF(tile)+F(shuffle)+Sal(10)."""
    best = [t for t in TERMS if t.best and settings.get(t.field) == BEST]  # CF(best)+F(best), then the rest
    if best:
        rest = Config(shards="", out="", **{k: v for k, v in settings.items() if k not in BEST_ROLES}).method_name()
        return "+".join([*(f"{t.name}({BEST})" for t in best), *([] if rest == "Orig" else [rest])])
    return Config(shards="", out="", **{**defaults, **settings}).method_name()
