"""``train study``: the paper's comparison as one command: a grid of runs x seeds (x training-set fractions).

    train study --shards shards/mine --grid docs/grids/paper.toml --seeds 3 --out runs/study

A layer over the trainer (``train.train.fit`` trains each run; the trainer knows nothing of studies):

- :mod:`train.study.grid`: the grid file, read and checked;
- :mod:`train.study.specs`: the runs it asks for (row x seed x fraction) and the "best" methods;
- :mod:`train.study.running`: training them, ``--jobs`` at a time, reusing or resuming earlier runs;
- :mod:`train.study.report`: REPORT.md and REPORT.html, from :mod:`~train.study.results` (the runs' numbers),
  :mod:`~train.study.figures`, :mod:`~train.study.claims` (the paper's claims checked) and
  :mod:`~train.study.blocks` (the document, rendered as Markdown and HTML).
"""

from __future__ import annotations

import logging
from pathlib import Path

from train.config import preset_of_build
from train.report import writable
from train.study.grid import BEST, Grid, Row, load_grid, row_name
from train.study.running import Tally, finished, run, run_all, start_worker
from train.study.specs import RunSpec, make_spec, pick_best, slug
from train.terms import BEST_ROLES

__all__ = [
    "BEST",
    "Grid",
    "Row",
    "RunSpec",
    "Tally",
    "finished",
    "load_grid",
    "make_spec",
    "pick_best",
    "row_name",
    "run",
    "run_all",
    "slug",
    "start_worker",
    "study",
]

log = logging.getLogger("train")


def study(shards: str, grid_path: Path, seeds: int, out: Path, jobs: int = 1) -> Path:
    """Run the grid (reusing finished runs), then write REPORT.md and REPORT.html; returns REPORT.md."""
    from train.data import read_manifest
    from train.study.report import write_study_report

    grid = load_grid(grid_path)
    manifest = read_manifest(shards)  # fail before training if the build is not there
    preset, dataset = preset_of_build(manifest), manifest["dataset"]["name"]
    out = Path(out)
    plain = [r for r in grid.rows if not r.needs_best()]
    specs = [make_spec(grid, r, s, 1.0, shards, out, {}, preset, dataset) for r in plain for s in range(seeds)]
    if any("preset" not in {**grid.defaults, **r.settings} for r in grid.rows):  # said once the rows are accepted
        log.info("study: rows without a preset use %r, the preset of the build's dataset (%s)", preset, dataset)
    for spec in specs:  # a row the build cannot train fails now, not after the rows before it
        try:
            spec.config.check_build(manifest)
        except ValueError as e:
            raise ValueError(f"{grid.path}: row {spec.row!r}: {e}") from None
    writable(out, f"--out {out}")
    later_rows = sum(r.needs_best() for r in grid.rows) + len(grid.curve_rows) * len(grid.fractions)
    tally = Tally(len(specs) + later_rows * seeds, jobs)  # "run k of N" counts every run of the study
    run_all(specs, jobs, tally)
    best = pick_best(grid, specs)
    later = []
    for row in grid.rows:
        if row.needs_best():
            for key in BEST_ROLES:
                if row.settings.get(key) == BEST and key not in best:
                    raise ValueError(
                        f"{grid.path}: row {row.name!r} wants the best {key.upper()} method, but no row "
                        f"trains a single {key.upper()} method alone"
                    )
            later += [make_spec(grid, row, s, 1.0, shards, out, best, preset, dataset) for s in range(seeds)]
    by_name = {r.name: r for r in grid.rows}
    later += [
        make_spec(grid, by_name[name], s, fraction, shards, out, best, preset, dataset)
        for name in grid.curve_rows
        for fraction in grid.fractions
        for s in range(seeds)
    ]
    run_all(later, jobs, tally)
    return write_study_report(out, grid, specs + later, best, shards, seeds, jobs)
