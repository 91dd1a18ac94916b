"""Nothing is lost silently in training: every shard is hashed as it streams and compared with its manifest entry.

Each fault of a stranger's build (an oversized member, a corrupt tar header, a truncation, a flipped byte inside a
JPEG that still decodes, a shard with fewer samples than the manifest promises) stops `train fit` and `train eval`
by default with one line naming the shard, the count and `augment verify`; `--max-bad-samples N` skips up to N and
lists them in results.json.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from augment.config import BuildConfig
from augment.contract import shards
from augment.contract.shards import ShardCheck, ShardError, iter_records
from augment.runner.build import build
from train.cli import app
from train.data import Fields, ShardStream, read_manifest
from train.ledger import DataError, Ledger, one_line

FIT = ["--epochs", "2", "--batch-size", "8", "--crop", "16", "--max-saliency-images", "0"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        image_size=24,
        shard_size=16,
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def records(path: Path) -> int:
    return len({m.name.split(".")[0] for m in members(path)})


def lost_from(entries: list[tarfile.TarInfo], i: int, header: bool = False) -> int:
    """Samples a reader loses when it stops in member ``i``'s data: the record holding it and every one after.
    Stopped at member ``i``'s header (``header``), it loses the record before it too, which it cannot know whole."""
    keys = [m.name.split(".")[0] for m in entries]
    return len(set(keys)) - len(set(keys[:i]) - {keys[i - 1] if header else keys[i]})


def oversized(path: Path) -> int:
    """Replace the 6th record's jpg with 200 kB (over the 93,184-byte bound of 24 px builds): the reader stops
    there, so the shard loses that record and every one after it."""
    entries = [(m, path.read_bytes()[m.offset_data : m.offset_data + m.size]) for m in members(path)]
    keys = list(dict.fromkeys(m.name.split(".")[0] for m, _ in entries))
    victim = keys[5]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in entries:
            data = b"x" * 200_000 if info.name == f"{victim}.jpg" else data
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return len(keys) - 5


def corrupt_header(path: Path) -> int:
    """Flip a bit of the 13th member's name: its header checksum no longer matches, the reader stops there."""
    data, entries = bytearray(path.read_bytes()), members(path)
    data[entries[12].offset] ^= 0x01
    path.write_bytes(bytes(data))
    return lost_from(entries, 12, header=True)


def truncate(path: Path) -> int:
    """Cut the shard in the middle of a member."""
    data = path.read_bytes()
    entries = members(path)
    cut = entries[len(entries) // 2]
    path.write_bytes(data[: cut.offset_data + cut.size // 2])
    return lost_from(entries, len(entries) // 2)


def flip_jpeg_byte(path: Path) -> int:
    """Flip one bit in the middle of a JPEG's entropy-coded data, at the first place where it still decodes, to
    other pixels."""
    data = bytearray(path.read_bytes())
    member = next(m for m in members(path) if m.name.endswith(".jpg") and m.name.count(".") == 1)
    start, end = member.offset_data, member.offset_data + member.size

    def pixels() -> np.ndarray | None:
        try:
            return np.asarray(Image.open(io.BytesIO(bytes(data[start:end]))).convert("RGB"))
        except OSError:
            return None

    before = pixels()
    for at in range(start + member.size // 2, end - 2):
        if data[at] in (0x00, 0xFF):
            continue
        data[at] ^= 0x10
        after = pixels()
        if after is not None and after.shape == before.shape and (after != before).any():
            path.write_bytes(bytes(data))
            return 0
        data[at] ^= 0x10
    raise AssertionError(f"no byte of {member.name} flips to a decodable, different image")


def fewer_samples(path: Path) -> int:
    """Drop the last record and tell the manifest only the shard's new size and sha256 (a short shard that is
    consistent in every other way): the count still differs."""
    kept = [{"__key__": k, **f} for k, f in iter_records(path)][:-1]
    info = shards.write_shard(path, kept)
    manifest_path = path.parents[1] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            if path.as_posix().endswith(entry["path"]):
                entry.update(bytes=info["bytes"], sha256=info["sha256"])
    manifest_path.write_text(json.dumps(manifest))
    return 1


FAULTS: dict[str, tuple[Callable[[Path], int], str]] = {
    "oversized": (oversized, "over the limit"),
    "header": (corrupt_header, "corrupt tar header"),
    "truncated": (truncate, "truncated"),
    "flipped": (flip_jpeg_byte, "the file changed after the build"),
    "fewer": (fewer_samples, "samples; the manifest says"),
}


def broken(good: Path, tmp_path: Path, split: str, fault: str) -> tuple[Path, Path, int]:
    """A copy of the build with ``fault`` in the first shard of ``split``: (build, shard, samples lost)."""
    root = tmp_path / "build"
    shutil.copytree(good, root)
    shard = root / read_manifest(root)["splits"][split]["shards"][0]["path"]
    lost = FAULTS[fault][0](shard)
    return root, shard, lost


@pytest.mark.parametrize("fault", FAULTS)
def test_the_stream_stops_on_each_fault_or_accounts_for_it_exactly(good, tmp_path, fault) -> None:
    root, shard, lost = broken(good, tmp_path, "val", fault)
    manifest = read_manifest(root)
    with pytest.raises(DataError) as stopped:
        list(ShardStream(root, manifest, "val", Fields(), train=False, crop=16))
    message = str(stopped.value)
    assert str(shard) in message and FAULTS[fault][1] in message and f"augment verify {root}" in message
    assert "\n" not in message and (f"{lost} sample(s) lost" in message if lost else "not the ones built" in message)
    stream = ShardStream(root, manifest, "val", Fields(), train=False, crop=16, ledger=Ledger(100, root))
    samples = list(stream)
    assert len(samples) + stream.ledger.count == 8 and stream.ledger.count == lost  # exact: nothing unaccounted
    assert {item["shard"] for item in stream.ledger.summary()["items"]} == {str(shard)}


def fit(root: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["fit", "--shards", str(root), "--out", str(out), *FIT, *extra], prog_name="train")


@pytest.mark.parametrize("fault", FAULTS)
def test_train_fit_stops_by_default_and_skips_within_the_bound(good, tmp_path, fault) -> None:
    root, shard, lost = broken(good, tmp_path, "train", fault)
    result = fit(root, tmp_path / "strict", "--workers", "2")
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("train: error: ") and str(shard) in error and "augment verify" in error
    assert "Traceback" not in result.output and not (tmp_path / "strict/results.json").exists()
    if lost > 1:  # a bound below the loss stops the run too
        result = fit(root, tmp_path / "low", "--workers", "0", "--max-bad-samples", str(lost - 1))
        assert result.exit_code == 1 and f"over --max-bad-samples {lost - 1}" in result.output, result.output
    result = fit(root, tmp_path / "tolerant", "--workers", "2", "--max-bad-samples", str(max(lost, 1)))
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "tolerant/results.json").read_text())["bad_samples"]
    assert recorded["allowed"] == max(lost, 1) and recorded["count"] == lost  # each sample once, over both epochs
    assert {item["shard"] for item in recorded["items"]} == {str(shard)}


@pytest.fixture(scope="module")
def trained(good, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    result = fit(good, run, "--workers", "0")
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("fault", FAULTS)
def test_train_eval_stops_by_default_and_skips_within_the_bound(good, trained, tmp_path, fault) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    root, shard, lost = broken(good, tmp_path, "mixed_rand", fault)
    result = runner.invoke(app, ["eval", str(run), "--shards", str(root), "--workers", "2"], prog_name="train")
    assert result.exit_code == 1 and str(shard) in result.output and "augment verify" in result.output
    assert "Traceback" not in result.output and FAULTS[fault][1] in result.output
    result = runner.invoke(app, ["eval", str(run), "--shards", str(root), "--workers", "2", "--max-bad-samples", "8"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((run / "results.json").read_text())
    assert recorded["bad_samples"]["count"] == lost and recorded["splits"]["mixed_rand"]["num_samples"] == 8 - lost


def test_a_shard_that_is_not_a_tar_is_one_line_without_the_worker_traceback(good, tmp_path) -> None:
    root = tmp_path / "build"
    shutil.copytree(good, root)
    shard = root / read_manifest(root)["splits"]["train"]["shards"][1]["path"]
    shard.write_bytes(b"PK\x03\x04 this is a zip file, not a tar" + b"\0" * 2000)
    result = fit(root, tmp_path / "r", "--workers", "2")
    assert result.exit_code == 1 and "Traceback" not in result.output and "DataLoader worker" not in result.output
    assert f"{shard}: corrupt tar header" in result.output and "not a tar file?" in result.output


def test_a_failed_fit_leaves_no_run_folder(good, tmp_path) -> None:
    runner = CliRunner()
    for shards_arg, extra in ((tmp_path / "nothing", []), (good, ["--cf", "grey"])):
        out = tmp_path / "never"
        result = runner.invoke(app, ["fit", "--shards", str(shards_arg), "--out", str(out), *extra], prog_name="train")
        assert result.exit_code == 2 and not out.exists(), result.output


def test_shard_check_hashes_the_whole_file_and_counts_records(good) -> None:
    entry = read_manifest(good)["splits"]["train"]["shards"][0]
    check = ShardCheck.of(entry)
    assert len(list(iter_records(good / entry["path"], check=check))) == entry["num_samples"]
    assert (check.read_bytes, check.digest.hexdigest(), check.records) == (entry["bytes"], entry["sha256"], 16)
    wrong = ShardCheck.of({**entry, "num_samples": 17})
    with pytest.raises(ShardError, match="16 samples; the manifest says 17"):
        list(iter_records(good / entry["path"], check=wrong))


def test_one_line_drops_an_embedded_worker_traceback() -> None:
    embedded = (
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ntrain.ledger.DataError: shard.tar: truncated'
    )
    assert one_line(ValueError(embedded)) == "shard.tar: truncated"
    assert str(DataError(embedded)) == "shard.tar: truncated"
    assert one_line(ValueError("plain")) == "plain"


def test_train_states_the_exit_code_rule_and_ctrl_c_is_one_line_with_130(good, tmp_path, monkeypatch) -> None:
    import train.train

    help_text = " ".join(CliRunner().invoke(app, ["--help"]).output.split())
    assert "1 = a check failed" in help_text and "2 = a usage error" in help_text and "130 = interrupted" in help_text

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.train, "fit", interrupted)
    result = fit(good, tmp_path / "r", "--workers", "0")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert (
        result.output.strip().splitlines()[-1]
        == "interrupted; run the same command again to resume (train fit: add --resume)"
    )
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nothing"), "--shards", str(good)])
    assert missing.exit_code == 2 and "expected a run folder written by `train fit`" in missing.output


def test_a_stopped_stream_leaves_no_dataloader_worker_behind(good, tmp_path) -> None:
    import multiprocessing
    import time

    from train.data import batches, loader

    root, _, _ = broken(good, tmp_path, "val", "truncated")
    stream = ShardStream(root, read_manifest(root), "val", Fields(), train=False, crop=16)
    before = set(multiprocessing.active_children())  # other tests' build workers may live on in this process
    start = time.perf_counter()
    with pytest.raises(DataError, match="truncated"):
        list(batches(loader(stream, 4, 2, drop_last=False), stream.ledger))
    assert not set(multiprocessing.active_children()) - before and time.perf_counter() - start < 4


def test_the_shards_open_when_an_epoch_ends_are_read_to_their_ends_and_checked(good, tmp_path) -> None:
    """An epoch of 32 of the 40 train samples stops with some shards unfinished: their last records' bytes are
    checked all the same, so a changed byte there stops the run (the loader would not have reached it)."""
    root = tmp_path / "build"
    shutil.copytree(good, root)
    manifest = read_manifest(root)
    for entry in manifest["splits"]["train"]["shards"]:  # one byte of each shard's last member
        path = root / entry["path"]
        data = bytearray(path.read_bytes())
        last = members(path)[-1]
        data[last.offset_data + last.size // 2] ^= 0x01
        path.write_bytes(bytes(data))
    fields = Fields(cf=["tile"], f=["shuffle"])
    stream = ShardStream(root, manifest, "train", fields, train=True, crop=16, batch_size=16, shuffle_buffer=1)
    assert len(stream) == 32
    with pytest.raises(DataError, match="the file changed after the build"):
        list(stream)
