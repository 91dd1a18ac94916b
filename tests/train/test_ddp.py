"""DDP: two CPU processes (gloo) under the real torchrun train in lockstep; every rank gets the same number of batches.

Run as a script under torchrun (``torchrun tests/train/test_ddp.py fit ...``), this file is `train fit` itself plus a
per-rank dump of the final weights and the number of steps, which the tests compare across ranks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # s: a hang (ranks waiting on each other) fails the test instead of blocking the suite


def torchrun(*args: str, nproc: int = 2, script: str | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m train ...`` (or ``script``) on a free loopback port."""
    target = [script] if script else ["-m", "train"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        *target,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun hung for {TIMEOUT} s: {(e.stderr or b'')[-3000:]!r}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> Path:
    """40 training images in 4 shards of 12, 12, 12 and 4: the short shard's slot must cycle."""
    from augment.config import BuildConfig
    from augment.runner.build import build

    out = tmp_path_factory.mktemp("ddp") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        image_size=24,
        shard_size=12,
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


FIT = [
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--crop",
    "16",
    "--workers",
    "2",
    "--cf",
    "tile",
    "--f",
    "shuffle",
    "--sal",
    "1",
    "--fgsm",
    "0.1",
]


@pytest.fixture(scope="module")
def ddp_run(uneven: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp-run") / "run"
    torchrun("fit", "--shards", str(uneven), "--out", str(out), *FIT, script=__file__)
    return out


def test_two_gloo_ranks_end_with_identical_weights_on_uneven_shards(ddp_run: Path) -> None:
    """CF + F + Sal + FGSM, 2 ranks x 2 workers, shards of unequal sizes: 40 // (4 x 2) = 5 steps on each rank."""
    from augment.contract.zoo.models import build_model
    from train.config import DEMO

    dumps = [torch.load(ddp_run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [d["steps"] for d in dumps] == [5, 5]
    saved = torch.load(ddp_run / "last.pt", weights_only=True)["model"]
    torch.manual_seed(0)
    init = build_model(DEMO["arch"], 5).state_dict()  # the run's model: the demo preset's
    assert set(saved) == set(dumps[0]["state"]) == set(dumps[1]["state"])  # unwrapped names, as without DDP
    for k, v in saved.items():
        assert torch.equal(dumps[0]["state"][k], v) and torch.equal(dumps[1]["state"][k], v), k
    assert any(not torch.equal(init[k], v) for k, v in saved.items() if v.is_floating_point())  # it did train
    assert (ddp_run / "results.json").is_file() and len((ddp_run / "log.csv").read_text().splitlines()) == 2


def test_torchrun_module_entry_resumes_a_ddp_run(ddp_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ddp_run, run)
    config = (run / "config.json").read_text()
    shards = config.split('"shards": "', 1)[1].split('"', 1)[0]
    result = torchrun("fit", "--shards", shards, "--out", str(run), *FIT[:-2], "--epochs", "2", "--resume")
    assert "mixed_next" in result.stdout and result.stdout.count("split\tnum_samples") == 1  # rank 0 prints alone
    assert [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()] == ["epoch", "0", "1"]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_every_rank_and_worker_gets_equal_batches_from_uneven_shards(uneven: Path) -> None:
    from train.data import Fields, ShardStream, loader, read_manifest

    manifest = read_manifest(uneven)
    assert [s["num_samples"] for s in manifest["splits"]["train"]["shards"]] == [12, 12, 12, 4]
    counts, keys = [], []
    for rank in (0, 1):
        stream = ShardStream(
            uneven, manifest, "train", Fields(), train=True, crop=16, batch_size=4, rank=rank, world_size=2
        )
        stream.set_epoch(3)
        batches = list(loader(stream, 4, workers=2, drop_last=True))
        counts.append([len(b["key"]) for b in batches])
        keys += [k for b in batches for k in b["key"]]
    assert counts == [[4] * 5, [4] * 5]
    assert set(keys) <= {f"train_{i:06d}" for i in range(40)} and len(set(keys)) >= 30


def test_one_shard_feeds_every_worker_each_its_own_samples(uneven: Path, monkeypatch) -> None:
    """Fewer shards than slots (the demo build: one train shard, 2 workers): split by sample, no worker idles."""
    import train.data
    from train.data import Fields, ShardStream, read_manifest

    manifest = read_manifest(uneven)
    manifest["splits"]["train"]["shards"] = manifest["splits"]["train"]["shards"][:1]
    manifest["splits"]["train"]["num_samples"] = 12
    seen = []
    for worker in (0, 1):
        monkeypatch.setattr(train.data, "get_worker_info", lambda w=worker: SimpleNamespace(id=w, num_workers=2))
        stream = ShardStream(uneven, manifest, "train", Fields(), train=True, crop=16, batch_size=2)
        seen.append([s["key"] for s in stream])
        again = [s["key"] for s in stream]
        assert again == seen[-1]  # the same epoch, seed and worker: the same samples in the same order
    assert len(seen[0]) == len(seen[1]) == 6 and not set(seen[0]) & set(seen[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nccl_ranks_end_with_identical_weights(uneven: Path, tmp_path: Path) -> None:
    nproc = min(2, torch.cuda.device_count())
    out = tmp_path / "run"
    torchrun("fit", "--shards", str(uneven), "--out", str(out), *FIT, "--device", "cuda", nproc=nproc, script=__file__)
    saved = torch.load(out / "last.pt", weights_only=True)["model"]
    for r in range(nproc):
        dump = torch.load(out / f"rank{r}.pt", weights_only=True)
        assert dump["steps"] == 40 // (4 * nproc)
        assert all(torch.equal(dump["state"][k].cpu(), v) for k, v in saved.items())


def dump_after_fit() -> None:
    """`train fit` with the model and the number of steps of this rank recorded, then saved to <out>/rank<R>.pt."""
    import train.train
    from train.cli import app

    made, steps = [], [0]
    build, objective = train.train.build_model, train.train.objective

    def recording_build(*args, **kwargs):
        made.append(build(*args, **kwargs))
        return made[-1]

    def counting_objective(*args, **kwargs):
        steps[0] += 1
        return objective(*args, **kwargs)

    train.train.build_model, train.train.objective = recording_build, counting_objective
    app(sys.argv[1:], standalone_mode=False)
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    state = {k: v.cpu() for k, v in made[0].state_dict().items()}
    torch.save({"state": state, "steps": steps[0]}, out / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    dump_after_fit()
