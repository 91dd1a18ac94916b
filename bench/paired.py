"""Paired differences between two rows of bench/fgap.py reports: row A minus row B, seed by seed, mean ± standard
error over the seeds both have, per epoch choice (best, last) and split. Bold (``**``) marks a difference over two
standard errors, as docs/results-fgap.md does.

    .venv/bin/python bench/paired.py bench/out/fgap-texture.json "F(shuffle) stored" \\
        bench/out/fgap-texture.json "F(shuffle) online"
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

SPLITS = ("original", "mixed_rand", "mixed_next")


def runs(path: Path, row: str) -> dict[int, dict]:
    report = json.loads(path.read_text())
    if row not in report["runs"]:
        raise SystemExit(f"{path}: no row {row!r}; rows: {', '.join(report['runs'])}")
    return {r["seed"]: r for r in report["runs"][row]}


def difference(a: dict[int, dict], b: dict[int, dict], which: str, split: str) -> tuple[float, float, int]:
    """Mean and standard error of a - b over the seeds both have, and their count."""
    values = [a[s][which][split] - b[s][which][split] for s in sorted(set(a) & set(b))]
    if not values:
        raise SystemExit("the two rows share no seed")
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.fmean(values), se, len(values)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_a", type=Path)
    parser.add_argument("row_a")
    parser.add_argument("report_b", type=Path)
    parser.add_argument("row_b")
    args = parser.parse_args(argv)
    a, b = runs(args.report_a, args.row_a), runs(args.report_b, args.row_b)
    lines = []
    for which in ("best", "last"):
        cells = []
        for split in SPLITS:
            mean, se, n = difference(a, b, which, split)
            cell = f"{mean:+.3f} ± {se:.3f}"
            cells.append(f"**{cell}**" if se > 0 and abs(mean) > 2 * se else cell)
        lines.append(f"| {args.row_a} − {args.row_b} ({n} seeds) | {which} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
