"""A stranger's manifest is data, not truth (issue #29): every number the trainer and augment's commands take from a
manifest is bounded or checked against the shards before it can allocate, loop or drop anything; special files
neither hang nor leak a reader; and ``augment verify`` and the trainer apply one validator, so that what verify
passes trains and what it refuses stops the trainer. Each case ends in one line naming the file (and the sample).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from augment.contract import encode, schema, shards
from augment.contract.shards import ShardError, iter_records
from train.data import Fields, ShardStream, read_manifest
from train.ledger import DataError, Ledger

runner = CliRunner()
VAL = "val/shard-000000.tar"
FIT = ["--epochs", "1", "--batch-size", "8", "--crop", "16", "--max-saliency-images", "0", "--workers", "0"]
GUARD_S = 30.0  # a reader that blocks or spins fails the test instead of hanging it


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    from augment.config import BuildConfig
    from augment.runner.build import build

    out = tmp_path_factory.mktemp("hostile") / "shards"
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


@contextlib.contextmanager
def guard(seconds: float = GUARD_S) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"over {seconds:g} s: the reader blocked or spun")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def copy(good: Path, tmp_path: Path) -> Path:
    root = tmp_path / "build"
    shutil.copytree(good, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def edit_manifest(root: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    manifest = json.loads((root / schema.MANIFEST).read_text())
    edit(manifest)
    (root / schema.MANIFEST).write_text(json.dumps(manifest))


def rewrite(root: Path, rel: str, change: Callable[[list[dict[str, bytes]]], list[dict[str, bytes]]]) -> Path:
    """Shard ``rel`` with its records changed by ``change``, and a manifest entry that matches the new bytes: a
    build whose checksums all agree, so that only the validator can refuse it."""
    path = root / rel
    records = change([{"__key__": k, **f} for k, f in iter_records(path)])
    info = shards.write_shard(path, records)

    def entry(manifest: dict[str, Any]) -> None:
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                if shard["path"] == rel:
                    shard.update(info)

    edit_manifest(root, entry)
    return path


def changed(record: dict[str, bytes], **meta: Any) -> dict[str, bytes]:
    """``record`` with its json's keys set to ``meta``."""
    return {**record, "json": json.dumps({**json.loads(record["json"]), **meta}).encode()}


def val_stream(root: Path, allowed: int = 0) -> ShardStream:
    return ShardStream(
        root, read_manifest(root), "val", Fields(), train=False, crop=16, ledger=Ledger(allowed, str(root))
    )


def augment(*args: object):
    from augment.cli import app

    with guard():
        return runner.invoke(app, [str(a) for a in args], prog_name="augment")


def train(*args: object):
    from train.cli import app

    with guard():
        return runner.invoke(app, [str(a) for a in args], prog_name="train")


def one_line(result, code: int) -> str:
    """The one line a failed command printed, after checking its exit code and that nothing crashed."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output and lines, result.output
    return lines[-1]


def strict_error(root: Path) -> str:
    """The DataError of the strict evaluation stream of the val split (one line, checked)."""
    with guard(), pytest.raises(DataError) as stopped:
        list(val_stream(root))
    message = str(stopped.value)
    assert "\n" not in message
    return message


# ---- numbers of the manifest -----------------------------------------------------------------------------------


def test_an_image_size_no_image_can_have_is_refused_by_every_reader(good: Path, tmp_path: Path) -> None:
    root = copy(good, tmp_path)
    edit_manifest(root, lambda m: m.update(image_size=100_000))
    expected = "image_size 100000: expected the stored images' size in pixels, 1 to 6324"
    for command in ("verify", "info", "preview"):
        assert expected in one_line(augment(command, root), 1), command
    line = one_line(train("fit", "--shards", root, "--out", tmp_path / "run", *FIT[:-2]), 2)
    assert str(root / schema.MANIFEST) in line and expected in line and not (tmp_path / "run").exists()
    assert schema.MAX_IMAGE_SIZE**2 <= encode.MAX_PIXELS < (schema.MAX_IMAGE_SIZE + 1) ** 2


def test_an_image_size_unlike_the_images_stops_verify_and_the_trainer_before_any_padding(good, tmp_path) -> None:
    """image_size 2000 for 24 px images: the default crop would pad every image to 1750 x 1750."""
    root = copy(good, tmp_path)
    edit_manifest(root, lambda m: m.update(image_size=2000))
    result = augment("verify", "-q", root)
    assert result.exit_code == 1 and "json says 24 x 24 pixels; the build's image_size is 2000" in result.stderr
    message = strict_error(root)
    assert f"{root / VAL} (sample 'val_" in message and "the build's image_size is 2000" in message
    line = one_line(train("fit", "--shards", root, "--out", tmp_path / "run", "--epochs", "1", "--workers", "0"), 1)
    assert "/shard-00000" in line and "the build's image_size is 2000" in line


def test_a_crop_larger_than_the_stored_images_is_refused(good: Path, tmp_path: Path) -> None:
    line = one_line(train("fit", "--shards", good, "--out", tmp_path / "run", *FIT[:4], "--crop", "64"), 2)
    assert line == (
        "train: error: --crop 64: larger than the build's images (24 px, its image_size), so every "
        "image would be padded to it; pass --crop 24 or less"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("count", [10, 10**12])
def test_a_split_count_unlike_its_shards_stops_the_trainer_before_training(good, tmp_path, count) -> None:
    root = copy(good, tmp_path)
    edit_manifest(root, lambda m: m["splits"]["train"].update(num_samples=count))
    line = one_line(train("fit", "--shards", root, "--out", tmp_path / "run", *FIT), 1)
    assert f"{root / schema.MANIFEST}: splits.train.num_samples is {count}, but its shards list 40 samples" in line
    assert f"augment verify {root}" in line and not (tmp_path / "run").exists()
    assert f"40 samples read, manifest says {count}" in augment("verify", "-q", root).stderr


@pytest.mark.parametrize("scale", [0.5, 10**9])
@pytest.mark.parametrize("allowed", [0, 1000])
def test_shard_counts_unlike_their_shards_stop_the_first_epoch(good, tmp_path, scale, allowed) -> None:
    """Every shard's entry deflated (the split trains 16 samples of 40 an epoch) or inflated (4 * 10^10 steps), the
    split's count consistent with them: the first epoch reads every shard whole and stops on the first that differs,
    whatever ``--max-bad-samples``."""
    root = copy(good, tmp_path)

    def scaled(manifest: dict[str, Any]) -> None:
        split = manifest["splits"]["train"]
        for shard in split["shards"]:
            shard["num_samples"] = int(shard["num_samples"] * scale)
        split["num_samples"] = sum(s["num_samples"] for s in split["shards"])

    edit_manifest(root, scaled)
    manifest = read_manifest(root)
    stream = ShardStream(
        root,
        manifest,
        "train",
        Fields(cf=["tile"], f=["shuffle"]),
        train=True,
        crop=16,
        batch_size=8,
        ledger=Ledger(allowed, str(root)),
    )
    with guard(), pytest.raises(DataError) as stopped:
        for _ in stream:  # not list(): it would size itself by len(), the inflated count
            pass
    message = str(stopped.value)
    assert "\n" not in message and f"{root}/train/shard-00000" in message
    assert (
        "samples; the manifest says" in message
        or "samples read, its manifest entry says" in message
        or "bad samples, over --max-bad-samples" in message
    ), message


def test_a_group_past_int32_is_refused_by_verify_and_names_the_sample_in_the_trainer(good, tmp_path) -> None:
    root = copy(good, tmp_path)
    victim: list[str] = []

    def huge_group(records: list[dict[str, bytes]]) -> list[dict[str, bytes]]:
        victim.append(records[2]["__key__"])
        return [changed(r, group=10**30) if i == 2 else r for i, r in enumerate(records)]

    path = rewrite(root, VAL, huge_group)
    expected = "json group 1000000000000000000000000000000: expected null or an integer in [0, 2147483647]"
    result = augment("verify", "-q", root)
    assert result.exit_code == 1 and f"{path}: sample {victim[0]!r}: {expected}" in result.stderr
    assert f"{path} (sample {victim[0]!r}): ValueError: {expected}" in strict_error(root)
    tolerant = val_stream(root, allowed=1)
    assert len(list(tolerant)) == 7 and tolerant.ledger.count == 1
    rewrite(root, "train/shard-000000.tar", lambda rs: [changed(rs[0], group=10**30), *rs[1:]])
    line = one_line(train("fit", "--shards", root, "--out", tmp_path / "run", *FIT), 1)
    assert f"{root / 'train/shard-000000.tar'} (sample " in line and expected in line


def wrong_shifted_tests(manifest: dict[str, Any]) -> None:
    manifest["shifted_tests"] = {
        "variants": {"only_fg": "the object on black"},
        "skipped": {},
        "pairs": {"val": {"original": "val", "variants": ["val"], "bg_gap": 3}},
    }


def test_a_wrongly_typed_shifted_tests_section_is_one_line_in_every_reader(good, tmp_path) -> None:
    import torch

    from train.config import Config

    root = copy(good, tmp_path)
    edit_manifest(root, wrong_shifted_tests)
    expected = f"{root / schema.MANIFEST}: shifted_tests.pairs.val.variants: expected an object"
    assert expected in one_line(augment("verify", root), 1)
    assert expected in one_line(augment("preview", root, "--shifted", "--out", tmp_path / "p.png"), 1)
    assert expected in one_line(train("fit", "--shards", root, "--out", tmp_path / "run", *FIT), 2)
    assert not (tmp_path / "run").exists()  # refused before training, not after it
    run = tmp_path / "trained"
    run.mkdir()
    config = Config.resolve("demo", shards=str(good), out=str(run))
    torch.save({"config": config.to_dict(), "classes": ["a"], "model": {}}, run / "best.pt")
    assert expected in one_line(train("eval", run, "--shards", root), 2)
    for section in ([], {"variants": {}, "skipped": {}, "pairs": {"nope": {}}}, {"pairs": {}, "variants": 1}):
        edit_manifest(root, lambda m, s=section: m.update(shifted_tests=s))
        with pytest.raises(ValueError, match="shifted_tests"):
            read_manifest(root)


# ---- special files ------------------------------------------------------------------------------------------------


def test_a_shard_linked_to_dev_zero_is_refused_unread(good: Path, tmp_path: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    root = copy(good, tmp_path)
    (root / VAL).unlink()
    (root / VAL).symlink_to("/dev/zero")
    result = augment("verify", "-q", root)
    assert result.exit_code == 1 and f"{root / VAL}: a link to /dev/zero, outside the build folder" in result.stderr
    assert f"{root / VAL}: a link to /dev/zero, outside the build folder" in strict_error(root)
    with pytest.raises(ShardError, match="a character device, not a regular file"):
        list(iter_records(root / VAL))  # without a build folder to stay in: refused as a device
    line = one_line(train("fit", "--shards", root, "--out", tmp_path / "run", *FIT), 1)
    assert f"{root / VAL}: a link to /dev/zero" in line


def test_a_fifo_for_a_shard_or_a_manifest_blocks_no_reader(good: Path, tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    root = copy(good, tmp_path)
    (root / VAL).unlink()
    os.mkfifo(root / VAL)
    result = augment("verify", "-q", root)
    assert result.exit_code == 1 and f"{root / VAL}: a FIFO, not a regular file" in result.stderr
    line = one_line(augment("preview", root, "--split", "val", "--out", tmp_path / "p.png"), 1)
    assert f"{root / VAL}: a FIFO, not a regular file" in line
    assert f"{root / VAL}: a FIFO, not a regular file" in strict_error(root)
    (root / schema.MANIFEST).unlink()
    os.mkfifo(root / schema.MANIFEST)
    with guard(), pytest.raises(ValueError, match="manifest.json: a FIFO, not a regular file"):
        read_manifest(root)


def test_a_sparse_shard_of_100_gb_is_not_hashed_or_read_past_its_entry(good: Path, tmp_path: Path) -> None:
    root = copy(good, tmp_path)
    size = 100 << 30
    try:
        os.truncate(root / VAL, size)
    except OSError as e:
        pytest.skip(f"no sparse file of 100 GB here ({e})")
    entry = read_manifest(root)["splits"]["val"]["shards"][0]["bytes"]
    result = augment("verify", "-q", root)  # within GUARD_S: hashing 100 GB would take minutes
    assert result.exit_code == 1 and f"{root / VAL}: {size} bytes, manifest says {entry}" in result.stderr
    assert "not hashed" in result.stderr
    assert f"longer than the {entry} bytes its manifest entry gives" in strict_error(root)


def test_a_split_folder_linked_out_of_the_build_is_refused(good: Path, tmp_path: Path) -> None:
    root = copy(good, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(root / "val", elsewhere)
    (root / "val").symlink_to(elsewhere, target_is_directory=True)
    expected = f"{root / VAL}: a link to {elsewhere.resolve() / 'shard-000000.tar'}, outside the build folder"
    result = augment("verify", "-q", root)
    assert result.exit_code == 1 and expected in result.stderr
    assert expected in strict_error(root)
    line = one_line(augment("preview", root, "--split", "val", "--out", tmp_path / "p.png"), 1)
    assert expected in line


def test_a_manifest_over_64_mib_is_refused_by_its_size_before_reading(good: Path, tmp_path: Path) -> None:
    root = copy(good, tmp_path)
    os.truncate(root / schema.MANIFEST, schema.MAX_MANIFEST_BYTES + 1)  # sparse: nothing is written
    expected = f"{root / schema.MANIFEST}: {schema.MAX_MANIFEST_BYTES + 1} bytes, over the limit of 67108864"
    for command in ("verify", "info", "preview"):
        assert expected in one_line(augment(command, root), 1), command
    with guard(), pytest.raises(ValueError, match=expected):
        read_manifest(root)
    import train.data

    assert train.data.MAX_MANIFEST_BYTES is schema.MAX_MANIFEST_BYTES == 64 << 20


# ---- one validator: what verify refuses stops the trainer ---------------------------------------------------------


def ztxt_png(png: bytes, text_bytes: int) -> bytes:
    """``png`` with a zTXt chunk after its header that decompresses to ``text_bytes`` bytes."""
    return with_chunk(png, b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * text_bytes, 9))


def with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """``png`` with a chunk of ``kind`` right after its IHDR chunk (which ends at byte 33)."""
    body = kind + payload
    return png[:33] + struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


def larger(record: dict[str, bytes], size: int) -> dict[str, bytes]:
    """``record`` with its images and mask re-encoded at ``size`` x ``size`` and its json saying so."""
    image = np.full((size, size, 3), 120, np.uint8)
    out = {k: encode.encode_jpeg(image) if k.endswith("jpg") else v for k, v in record.items()}
    out["mask.png"] = encode.encode_mask(np.ones((size, size), bool))
    return changed(out, width=size, height=size)


CASES: dict[str, tuple[Callable[[list[dict[str, bytes]]], list[dict[str, bytes]]], str, str]] = {
    # name: (change to the val records, what verify says, what the trainer says)
    "cls 0_1": (
        lambda rs: [{**rs[1], "cls": b"0_1"}, *rs[:1], *rs[2:]],
        "cls holds b'0_1', expected a class index in ASCII digits",
        "cls holds b'0_1', expected a class index in ASCII digits",
    ),
    "duplicate key": (
        lambda rs: [*rs[:3], {**changed(rs[3], key=rs[0]["__key__"]), "__key__": rs[0]["__key__"]}, *rs[4:]],
        "appears more than once in the build",
        "appears more than once in split val",
    ),
    "zTXt of 50 MB": (
        lambda rs: [{**rs[2], "mask.png": ztxt_png(rs[2]["mask.png"], 50_000_000)}, *rs[:2], *rs[3:]],
        "field 'mask.png': PNG 'zTXt' metadata decompresses to over 1048576 bytes",
        "field 'mask.png': PNG 'zTXt' metadata decompresses to over 1048576 bytes",
    ),
    "images of 48 px": (
        lambda rs: [larger(rs[0], 48), *rs[1:]],
        "json says 48 x 48 pixels; the build's image_size is 24",
        "json says 48 x 48 pixels; the build's image_size is 24",
    ),
    "a stray field": (lambda rs: [{**rs[0], "npy": b"\x93NUMPY"}, *rs[1:]], "unexpected ['npy']", "unexpected ['npy']"),
}


@pytest.mark.parametrize("case", CASES)
def test_verify_and_the_trainer_refuse_the_same_records(good: Path, tmp_path: Path, case: str) -> None:
    change, by_verify, by_trainer = CASES[case]
    root = copy(good, tmp_path)
    path = rewrite(root, VAL, change)
    result = augment("verify", "-q", root)
    assert result.exit_code == 1 and str(path) in result.stderr and by_verify in result.stderr, result.stderr
    message = strict_error(root)
    assert str(path) in message and by_trainer in message and "(sample '" in message, message
    tolerant = val_stream(root, allowed=1)
    samples = list(tolerant)
    assert len(samples) == 7 and tolerant.ledger.count == 1


def test_a_shard_listed_twice_is_refused_by_every_reader(good: Path, tmp_path: Path) -> None:
    root = copy(good, tmp_path)

    def twice(manifest: dict[str, Any]) -> None:
        split = manifest["splits"]["val"]
        split["shards"].append(dict(split["shards"][0]))
        split["num_samples"] *= 2
        split["per_class"] = {k: 2 * v for k, v in split["per_class"].items()}

    edit_manifest(root, twice)
    expected = "splits.val.shards[1].path 'val/shard-000000.tar' is listed twice (also as splits.val.shards[0])"
    assert expected in one_line(augment("verify", root), 1)
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_manifest(root)


def test_the_trainer_advises_a_check_that_works_for_a_url() -> None:
    error = shards.ShardError("http://host/build/val/shard-000000.tar", "truncated")
    with pytest.raises(DataError) as stopped:
        Ledger(0, "http://host/build").record(error)
    message = str(stopped.value)
    assert "augment verify http" not in message and "train fit --shards http://host/build --verify" in message
    assert "augment verify FOLDER" in message
    with pytest.raises(DataError, match="check the build with `augment verify /data/build`"):
        Ledger(0, "/data/build").record(error)


def test_the_format_page_states_the_bounds_the_code_applies() -> None:
    text = " ".join((Path(__file__).parents[2] / "docs/FORMAT.md").read_text().split())
    assert shards.MAX_JSON_BYTES == 1 << 20 and "1 MiB for `json`/`cls`, whatever the image bound" in text
    assert schema.MAX_MANIFEST_BYTES == 64 << 20 and "`manifest.json` of at most 64 MiB" in text
    assert f"image_size at most {schema.MAX_IMAGE_SIZE}" in text
    assert encode.PNG_TEXT_BYTES == 1 << 20 and "1 MiB of PNG text" in text


def test_png_metadata_within_the_bound_passes_and_past_it_is_refused() -> None:
    png = encode.encode_mask(np.ones((24, 24), bool))
    assert encode.check_header(ztxt_png(png, 1000)) == ("PNG", 24, 24)
    assert encode.decode_mask(ztxt_png(png, 1000)).all()  # PIL opens it too
    with pytest.raises(encode.Refused, match="zTXt"):
        encode.check_header(ztxt_png(png, (1 << 20) + 1))
    bomb = with_chunk(png, b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + zlib.compress(b" " * 2_000_000))
    with pytest.raises(encode.Refused, match="iTXt"):
        encode.check_header(bomb)
