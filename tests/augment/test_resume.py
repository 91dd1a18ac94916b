"""Builds at scale: killed and resumed, cut into slices and merged, run on a dask cluster; and `augment info --diff`.

Each way of running must end byte-identical to one uninterrupted local build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from augment.cli import app
from augment.config import BuildConfig
from augment.contract import schema
from augment.contract.shards import iter_records
from augment.errors import BuildError
from augment.runner import journal
from augment.runner.build import build, merge

SYNTHETIC = dict(
    dataset="synthetic",
    infill=["tile", "shuffle"],
    factual=["shuffle", "mixed-rand"],
    dataset_options={"size": 40},
    shard_size=8,
)


CLI = [
    "build",
    "--dataset",
    "synthetic",
    "--size",
    "40",
    "--infill",
    "tile",
    "--infill",
    "shuffle",
    "--factual",
    "shuffle",
    "--factual",
    "mixed-rand",
    "--shard-size",
    "8",
    "-q",
]  # the same build as SYNTHETIC


def tree(out: Path) -> dict[str, bytes]:
    """Every file of a build, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    build(out, BuildConfig(**SYNTHETIC), workers=1, progress=False)
    return tree(out)


def cli_build(cwd: Path, *extra: str) -> list[str]:
    """The same `augment build` command line in any folder: --out is relative, so the manifests can be equal."""
    return [
        sys.executable,
        "-m",
        "augment",
        "build",
        "--dataset",
        "synthetic",
        "--size",
        "600",
        "--image-size",
        "48",
        "--infill",
        "tile",
        "--infill",
        "shuffle",
        "--factual",
        "shuffle",
        "--factual",
        "mixed-rand",
        "--shard-size",
        "12",
        "--out",
        "shards",
        "-q",
        *extra,
    ]


def test_sigkill_mid_build_then_the_same_command_resumes_to_identical_bytes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (tmp_path / "ref").mkdir()
    subprocess.run(cli_build(tmp_path / "ref", "--workers", "2"), cwd=tmp_path / "ref", env=env, check=True)
    expected = tree(tmp_path / "ref" / "shards")

    killed = tmp_path / "killed"
    killed.mkdir()
    out = killed / "shards"
    proc = subprocess.Popen(cli_build(killed, "--workers", "2"), cwd=killed, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list((out / journal.JOURNAL / journal.DONE).glob("*.json"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, "the build ended before it could be killed; make it bigger"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the main process and its loky workers, mid-shard
    proc.wait()
    assert not (out / schema.MANIFEST).exists()
    finished = journal.read_done(out)
    total = len(list(expected)) - 1  # shards in the reference (all but the manifest)
    assert 3 <= len(finished) < total, f"killed after {len(finished)} of {total} shards"
    for shard in out.glob("*/shard-*.tar"):  # a final name is only ever given to a whole shard
        count = sum(1 for _ in iter_records(shard))
        assert shard.read_bytes() == expected[str(shard.relative_to(out))] and count > 0
    kept = {name: (out / r["shard"]["path"]).stat().st_ino for name, r in finished.items()}

    subprocess.run(cli_build(killed, "--workers", "2"), cwd=killed, env=env, check=True)
    assert tree(out) == expected  # shards, manifest, and no journal or temp file left
    assert all(
        (out / json.loads(json.dumps(r))["shard"]["path"]).stat().st_ino == kept[n] for n, r in finished.items()
    )  # the finished shards were kept, not rebuilt


def test_a_damaged_shard_of_a_finished_build_is_rebuilt_by_the_same_command(tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    build(out, BuildConfig(**SYNTHETIC), workers=1, progress=False)
    shard = out / "train/shard-000002.tar"
    shard.chmod(0o644)
    shard.write_bytes(shard.read_bytes()[:1000])
    (out / "val/shard-000000.tar").unlink()
    untouched = (out / "train/shard-000001.tar").stat().st_mtime_ns
    build(out, BuildConfig(**SYNTHETIC), workers=2, progress=False)
    assert tree(out) == reference
    assert (out / "train/shard-000001.tar").stat().st_mtime_ns == untouched


def test_slices_merge_into_the_same_bytes_and_merge_names_what_is_missing(tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    total = sum(1 for name in reference if name.endswith(".tar"))
    first = build(out, BuildConfig(**SYNTHETIC), shard_range="0:3", progress=False)
    assert first == {"slice": [0, 3], "built": 3, "kept": 0, "shards_done": 3, "shards_total": total, "samples": 24}
    build(out, BuildConfig(**SYNTHETIC), shard_range=f"5:{total}", workers=2, progress=False)
    with pytest.raises(BuildError, match=rf"2 of {total} shards are not built .* --shard-range 3:5 "):
        merge(out)
    with pytest.raises(BuildError, match="differs in options.seed"):  # every slice must be of the same build
        build(out, BuildConfig(**{**SYNTHETIC, "seed": 1}), shard_range="3:5", progress=False)
    with pytest.raises(BuildError, match="--overwrite with --shard-range would delete the other slices"):
        build(out, BuildConfig(**SYNTHETIC), shard_range="3:5", overwrite=True, progress=False)
    build(out, BuildConfig(**SYNTHETIC), shard_range="3:", progress=False)  # 3:end, keeping 5: as built
    assert not (out / schema.MANIFEST).exists()
    merge(out)
    assert tree(out) == reference
    with pytest.raises(ValueError, match=rf"the build has {total} shards, numbered 0:{total}"):
        build(tmp_path / "other", BuildConfig(**SYNTHETIC), shard_range=f"2:{total + 1}", progress=False)


def test_merge_refuses_shards_built_with_other_encoder_versions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(out, BuildConfig(**SYNTHETIC), shard_range="0:2", progress=False)
    total = len(journal.read_plan(out).tasks)
    build(out, BuildConfig(**SYNTHETIC), shard_range=f"2:{total}", progress=False)
    path = out / journal.JOURNAL / journal.DONE / "train-000001.json"
    record = json.loads(path.read_text())
    record["environment"]["pillow"] = "1.0"
    path.write_text(json.dumps(record))
    with pytest.raises(BuildError, match=r"train/shard-000001.tar: built with .*'pillow': '1.0'.* rebuild it"):
        merge(out)


def test_a_dask_cluster_builds_the_same_bytes_as_local_processes(tmp_path: Path, reference) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    ) as cluster:
        build(tmp_path / "out", BuildConfig(**SYNTHETIC), scheduler=cluster.scheduler_address, progress=False)
        result = CliRunner().invoke(
            app, [*CLI, "--out", str(tmp_path / "cli"), "--scheduler", cluster.scheduler_address]
        )
    assert tree(tmp_path / "out") == reference
    assert result.exit_code == 0 and "wrote 80 samples in 10 shards" in result.output, result.output
    shards = {k: v for k, v in tree(tmp_path / "cli").items() if k.endswith(".tar")}
    assert shards == {k: v for k, v in reference.items() if k.endswith(".tar")}


def test_cli_slices_say_what_is_left_and_merge_names_the_missing_range(tmp_path: Path) -> None:
    runner, out = CliRunner(), str(tmp_path / "out")
    result = runner.invoke(app, [*CLI, "--out", out, "--shard-range", "0:4"])
    assert result.exit_code == 0 and "built shards 0:4 (4 built, 0 kept, 32 samples)" in result.output, result.output
    assert "4 of 10 shards are built; when all are, run `augment merge" in result.output
    result = runner.invoke(app, ["merge", out])
    assert result.exit_code == 1 and "build them with --shard-range 4:10" in result.output, result.output
    result = runner.invoke(app, [*CLI, "--out", out, "--shard-range", "4:"])
    assert "all 10 shards are built: run `augment merge" in result.output, result.output
    result = runner.invoke(app, ["merge", out])
    assert result.exit_code == 0 and "merged 80 samples in 10 shards" in result.output
    assert runner.invoke(app, ["verify", "-q", out]).exit_code == 0


def test_info_diff_says_same_or_lists_the_differences(tmp_path: Path, reference) -> None:
    runner = CliRunner()
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build(a, BuildConfig(**SYNTHETIC), progress=False)
    build(b, BuildConfig(**SYNTHETIC), shard_range="0:", progress=False)
    merge(b)
    build(c, BuildConfig(**{**SYNTHETIC, "seed": 3, "infill": ["tile"]}), progress=False)
    same = runner.invoke(app, ["info", "--diff", str(a), str(b)])
    assert same.exit_code == 0 and "the builds are the same" in same.output
    other = runner.invoke(app, ["info", "--diff", str(a), str(c)])
    assert other.exit_code == 1, other.output
    for line in (
        "options.seed: 0 -> 3",
        'options.infill: ["tile", "shuffle"] -> ["tile"]',
        "dataset.fingerprint: ",
        "splits.train.shards: 0 identical, 5 of A's 5 differ",
    ):
        assert line in other.output, other.output


def test_array_job_slices_started_together_into_one_folder_merge_cleanly(tmp_path: Path, reference) -> None:
    command = [sys.executable, "-m", "augment", *CLI, "--out", str(tmp_path / "out"), "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen([*command, "--shard-range", r], env=env) for r in ("0:3", "3:7", "7:10")]
    assert [job.wait(timeout=120) for job in jobs] == [0, 0, 0]
    assert CliRunner().invoke(app, ["merge", str(tmp_path / "out")]).exit_code == 0
    shards = {k: v for k, v in tree(tmp_path / "out").items() if k != schema.MANIFEST}
    assert shards == {k: v for k, v in reference.items() if k != schema.MANIFEST}


def test_build_files_are_recognised_by_name_even_once_another_slice_renamed_them(tmp_path: Path) -> None:
    """claim_out judges each listed file by its name: a slice's temp plan renamed by the time it is judged (the race
    that made one of three slices started together refuse the folder as "not empty") still counts as a build's."""
    from augment.runner.resume import is_ours

    out = tmp_path / "out"
    gone = [out / ".build" / "plan.json.tmp", out / "train" / "shard-000003.tar.tmp", out / "manifest.json.tmp"]
    assert all(is_ours(out, p) and not p.exists() for p in gone)
    assert not any(is_ours(out, out / p) for p in ("notes.txt", "train/notes.txt", "train/a/shard-000001.tar"))
