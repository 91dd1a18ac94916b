"""The finished runs as the report reads them, and the numbers over them: per-seed values, means, correlations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Run:
    row: str
    seed: int
    fraction: float
    folder: Path
    config: dict[str, Any]
    results: dict[str, Any]


def load(specs) -> list[Run]:
    runs = []
    for s in specs:
        folder = Path(s.config.out)
        runs.append(
            Run(
                s.row, s.seed, s.fraction, folder, s.config.to_dict(), json.loads((folder / "results.json").read_text())
            )
        )
    return runs


def metric(run: Run, split: str, key: str) -> float | None:
    return run.results["splits"].get(split, {}).get(key)


def per_seed(runs: list[Run], splits: list[str], key: str = "accuracy") -> list[float]:
    """One value per run (seed): ``key`` averaged over ``splits``."""
    return [float(np.mean([metric(r, s, key) or 0.0 for s in splits])) for r in runs]


def accuracy_on(runs: list[Run], splits: list[str]) -> float | None:
    """Mean accuracy over ``splits`` and then over ``runs``; None without runs."""
    return float(np.mean(per_seed(runs, splits))) if runs else None


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
