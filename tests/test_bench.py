"""Smoke tests of the benchmark scripts (bench/): the in-process kernel comparison runs and checks its outputs,
and the process-tree memory probe sees memory that a child process allocates. The CLI-driven benchmarks run
in ``make bench QUICK=1``, which takes longer than a unit test should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))


def test_kernel_benchmark_quick(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    import kernels

    kernels.main(["--quick"])
    out = capsys.readouterr().out
    assert out.count("outside hole unchanged") == 3
    assert "identical fills 8/8" in out  # the paper-style tile follows the same rule as ours


def test_tree_peak_counts_children(bench_path: None) -> None:
    from common import TreePeak

    # a parent whose child holds 200 MiB for a moment: only a probe that walks the tree sees it
    child = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, "
                                                     f"'-c', {child!r}])"])  # fmt: skip
    peak = TreePeak(parent.pid)
    parent.wait()
    assert peak.stop() > 200 * 2**20
