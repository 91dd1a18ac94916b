"""``train study``: the paper's comparison as one command: a grid of runs x seeds (x training-set fractions).

    train study --shards shards/mine --grid docs/grids/paper.toml --seeds 3 --out runs/study

The grid is a small TOML file (read with the standard library's ``tomllib``):

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

Each run goes to ``<out>/runs/<row>/s<seed>[-f<fraction>]``. A run whose results.json exists with the same config is
reused; one with a checkpoint but no results resumes from it. So a study re-run after a crash loses at most the
epoch in progress. The report is written by :mod:`train.study.report`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from train.config import Config, preset_of_build

log = logging.getLogger("train")
BEST = "best"


@dataclass
class Row:
    """One table row: its name and the settings it changes from the defaults (``cf``/``f`` may be "best")."""

    name: str
    settings: dict[str, Any]

    def needs_best(self) -> bool:
        return BEST in (self.settings.get("cf"), self.settings.get("f"))


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
    if BEST in (settings.get("cf"), settings.get("f")):
        parts = [f"CF({BEST})" if settings.get("cf") == BEST else "", f"F({BEST})" if settings.get("f") == BEST else ""]
        rest = Config(shards="", out="", **{k: v for k, v in settings.items() if k not in ("cf", "f")}).method_name()
        return "+".join(p for p in [*parts, "" if rest == "Orig" else rest] if p)
    return Config(shards="", out="", **{**defaults, **settings}).method_name()


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "run"


@dataclass
class RunSpec:
    row: str
    seed: int
    fraction: float
    config: Config


def make_spec(
    grid: Grid, row: Row, index: int, fraction: float, shards: str, out: Path, best: dict[str, str],
    build_preset: str = "demo",
) -> RunSpec:  # fmt: skip
    """Run ``index`` (0, 1, ...) of ``row`` on ``fraction`` of the train split, its seed the row's ``seed`` (0 by
    default) + ``index``; ``build_preset`` is the preset when neither the row nor [defaults] names one."""
    settings = dict(row.settings)
    for key in ("cf", "f"):
        if settings.get(key) == BEST:
            settings[key] = [best[key]]
    values = {**grid.defaults, **settings}
    seed = values.get("seed", 0) + index
    folder = out / "runs" / slug(row.name) / (f"s{seed}" + ("" if fraction == 1.0 else f"-f{fraction:g}"))
    values.update(shards=shards, out=str(folder), seed=seed)
    if fraction != 1.0:
        values["train_fraction"] = fraction
    preset = values.pop("preset", None) or build_preset
    return RunSpec(row.name, seed, fraction, Config.resolve(preset, **values))


def finished(spec: RunSpec) -> bool:
    """A run whose results exist for exactly this config and this build (the manifest's sha256: shards rebuilt by
    another version of augment, or from changed data, give other results under the same config)."""
    from train.data import manifest_sha256

    folder = Path(spec.config.out)
    if not (folder / "results.json").is_file() or not (folder / "config.json").is_file():
        return False
    if json.loads((folder / "config.json").read_text()) != spec.config.to_dict():
        return False
    learnt_from = json.loads((folder / "results.json").read_text()).get("manifest_sha256")
    return learnt_from == manifest_sha256(spec.config.shards)


def run(spec: RunSpec) -> None:
    """Train and evaluate one run, or reuse/resume it."""
    from train.train import fit

    folder = Path(spec.config.out)
    if finished(spec):
        log.info("study: reusing %s", folder)
        return
    resume = (folder / "last.pt").is_file()
    if resume and (folder / "config.json").is_file():
        if json.loads((folder / "config.json").read_text()) != spec.config.to_dict():
            raise ValueError(f"{folder}: holds a run of another config; delete it or choose another --out")
        if (folder / "results.json").is_file():  # finished, but not on this build (else finished() was true)
            raise ValueError(f"{folder}: holds a run on another build of {spec.config.shards} (its manifest sha256 "
                             "differs); delete the study folder or choose another --out")  # fmt: skip
    log.info("study: %s %s", "resuming" if resume else "training", folder)
    fit(spec.config, resume=resume)


def run_all(specs: list[RunSpec], jobs: int) -> None:
    """Run ``specs``, ``jobs`` at a time: each in its own process with its share of the cores (several small runs
    side by side use a CPU better than one run on every core)."""
    todo = [s for s in specs if not finished(s)]
    if jobs == 1 or len(todo) <= 1:
        for spec in specs:
            run(spec)
        return
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # a clean process: no torch thread pool inherited
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=start_worker, initargs=(threads,)) as pool:
        for future in [pool.submit(run, spec) for spec in todo]:
            future.result()  # the first failure stops the study (finished runs are kept)


def start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


def pick_best(grid: Grid, specs: list[RunSpec]) -> dict[str, str]:
    """The CF and the F method whose single-method rows have the best mean accuracy on ``grid.best_by``."""
    scores: dict[str, dict[str, list[float]]] = {"cf": {}, "f": {}}
    for spec in specs:
        c = spec.config
        if spec.fraction != 1.0 or c.sal or c.fgsm or c.mixup or c.label_smoothing:
            continue
        results = json.loads((Path(c.out) / "results.json").read_text())
        accuracy = results["splits"].get(grid.best_by, {}).get("accuracy")
        if accuracy is None:
            raise ValueError(f"{grid.path}: [select] best_by = {grid.best_by!r} is not a split of the build")
        if len(c.cf) == 1 and not c.f:
            scores["cf"].setdefault(c.cf[0], []).append(accuracy)
        if len(c.f) == 1 and not c.cf:
            scores["f"].setdefault(c.f[0], []).append(accuracy)
    best = {}
    for role, by_method in scores.items():
        if by_method:
            best[role] = max(by_method, key=lambda m: sum(by_method[m]) / len(by_method[m]))
    return best


def study(shards: str, grid_path: Path, seeds: int, out: Path, jobs: int = 1) -> Path:
    """Run the grid (reusing finished runs), then write REPORT.md and REPORT.html; returns REPORT.md."""
    from train.data import read_manifest
    from train.study.report import write_study_report

    grid = load_grid(grid_path)
    manifest = read_manifest(shards)  # fail before training if the build is not there
    preset = preset_of_build(manifest)
    if any("preset" not in {**grid.defaults, **r.settings} for r in grid.rows):
        log.info("study: rows without a preset use %r, the preset of the build's dataset (%s)", preset,
                 manifest["dataset"]["name"])  # fmt: skip
    out = Path(out)
    plain = [r for r in grid.rows if not r.needs_best()]
    specs = [make_spec(grid, r, s, 1.0, shards, out, {}, preset) for r in plain for s in range(seeds)]
    for spec in specs:  # a row the build cannot train fails now, not after the rows before it
        try:
            spec.config.check_build(manifest)
        except ValueError as e:
            raise ValueError(f"{grid.path}: row {spec.row!r}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    run_all(specs, jobs)
    best = pick_best(grid, specs)
    later = []
    for row in grid.rows:
        if row.needs_best():
            for key in ("cf", "f"):
                if row.settings.get(key) == BEST and key not in best:
                    raise ValueError(f"{grid.path}: row {row.name!r} wants the best {key.upper()} method, but no row "
                                     f"trains a single {key.upper()} method alone")  # fmt: skip
            later += [make_spec(grid, row, s, 1.0, shards, out, best, preset) for s in range(seeds)]
    by_name = {r.name: r for r in grid.rows}
    later += [make_spec(grid, by_name[name], s, fraction, shards, out, best, preset) for name in grid.curve_rows
              for fraction in grid.fractions for s in range(seeds)]  # fmt: skip
    run_all(later, jobs)
    return write_study_report(out, grid, specs + later, best, shards, seeds, jobs)
