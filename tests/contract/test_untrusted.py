"""Shards are untrusted: hostile shards built in code are refused or skipped, by augment's reader and the trainer.

Decompression bombs (PNG/JPEG headers declaring huge sizes), oversized members, names with '..' or '/', links,
pickles, malformed JSON and labels, truncated and corrupt tars, and ``pipe:`` URLs without the user's opt-in.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from augment.contract import encode, shards
from augment.contract.shards import Limits, ShardError, iter_records, write_shard
from train.data import Fields, ShardStream, read_manifest
from train.ledger import DataError, Ledger


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    from augment.config import BuildConfig
    from augment.runner.build import build

    out = tmp_path_factory.mktemp("untrusted") / "shards"
    config = BuildConfig(dataset="synthetic", infill=["tile"], image_size=24, dataset_options={"size": 40})
    build(out, config, workers=1, progress=False)
    return out


def members(build: Path) -> list[tuple[str, bytes]]:
    """The val split's 8 records as (member name, bytes), in file order."""
    path = build / read_manifest(build)["splits"]["val"]["shards"][0]["path"]
    return [(f"{k}.{f}", data) for k, fields in iter_records(path) for f, data in sorted(fields.items())]


def hostile(build: Path, out: Path, entries: list[tuple[str, bytes] | tarfile.TarInfo | bytes]) -> Path:
    """A copy of ``build`` whose val split is one tar of ``entries``: (name, data), a bare TarInfo (a link), or raw
    bytes appended as they are (a forged header); ``tarfile`` writes whatever names we give it."""
    (out / "val").mkdir(parents=True)
    buf = io.BytesIO()
    for entry in entries:
        if isinstance(entry, bytes):
            buf.write(entry)
        elif isinstance(entry, tarfile.TarInfo):
            buf.write(entry.tobuf(format=tarfile.GNU_FORMAT))
        else:
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size = len(data)
            buf.write(info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512))
    if not isinstance(entries[-1], bytes):
        buf.write(b"\0" * 1024)  # end-of-archive marker
    shard = out / "val/shard-000000.tar"
    shard.write_bytes(buf.getvalue())
    manifest = read_manifest(build)
    manifest["splits"] = {
        "val": {
            **manifest["splits"]["val"],
            "shards": [
                {
                    "path": "val/shard-000000.tar",
                    "num_samples": 8,
                    "bytes": shard.stat().st_size,
                    "sha256": shards.sha256_file(shard),
                }
            ],
        }
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return shard


def stream(root: Path | str, allowed: int = 100) -> ShardStream:
    """The trainer's evaluation stream of the val split, skipping up to ``allowed`` bad samples (0: none)."""
    return ShardStream(root, read_manifest(root), "val", Fields(), train=False, crop=24, ledger=Ledger(allowed, root))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but which holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16 x 16 JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    "make,size", [(png_declaring, (5000, 5000)), (jpeg_declaring, (4000, 3000)), (jpeg_declaring, (60000, 60000))]
)
def test_image_headers_declaring_huge_sizes_are_refused_before_decoding(build, tmp_path, caplog, make, size) -> None:
    entries = members(build)
    victim = entries[1][0].split(".")[0]
    entries = [(n, make(*size) if n == f"{victim}.jpg" else d) for n, d in entries]
    shard = hostile(build, tmp_path / "bomb", entries)
    with caplog.at_level("WARNING"):
        samples = list(stream(tmp_path / "bomb"))  # limits from image_size 24: 16 x 24^2 pixels
    assert len(samples) == 7 and victim not in {s["key"] for s in samples}
    assert f"{shard} (sample '{victim}')" in caplog.text and ("over the limit" in caplog.text or "bomb" in caplog.text)
    assert "truncated" not in caplog.text  # refused on the header, not by failing to decode missing pixels
    with pytest.raises(ValueError, match="over the limit of 9216|bomb"):
        encode.decode_image(make(*size), Limits.for_image_size(24).pixels)
    if size[0] * size[1] > encode.MAX_PIXELS:  # over the default bound too: augment's readers refuse it
        with pytest.raises(ShardError, match=f"sample '{victim}'.*over the limit of {encode.MAX_PIXELS}"):
            list(iter_records(shard))
        from augment.verify import verify

        problems, _ = verify(tmp_path / "bomb", progress=False)
        assert any(victim in p and "over the limit" in p for p in problems), problems


def test_an_oversized_member_is_skipped_unread_and_the_rest_of_its_shard_reads_on(build, tmp_path, caplog) -> None:
    entries = members(build)
    huge = tarfile.TarInfo("val_huge.jpg")
    huge.size = 1 << 40  # 1 TiB declared, none of it present: reading it would fail as truncated, or exhaust memory
    shard = hostile(build, tmp_path / "huge", [*entries[:12], huge])
    with pytest.raises(
        ShardError,
        match=r"'val_huge.jpg' declares 1099511627776 bytes, over the limit of 67108864 "
        r"and past the end of the shard",
    ):
        list(iter_records(shard))  # it cannot be skipped: the file ends inside it
    victim = entries[4][0].split(".")[0]  # the second record's jpg becomes 200 kB, over the bound of 24 px images
    big = hostile(build, tmp_path / "big", [(n, b"x" * 200_000 if n == f"{victim}.jpg" else d) for n, d in entries])
    with caplog.at_level("WARNING"):
        samples = list(tolerant := stream(tmp_path / "big"))  # the limit: 3 x 16 x 24^2 + 64 KiB
    assert len(samples) == 7 and victim not in {s["key"] for s in samples} and tolerant.ledger.count == 1
    assert f"{big} (sample {victim!r}): field 'jpg' holds 200000 bytes, over the limit of 93184" in caplog.text
    with pytest.raises(DataError, match=rf"\(sample {victim!r}\): field 'jpg' holds 200000 bytes.*1 sample"):
        list(stream(tmp_path / "big", allowed=0))
    assert list(iter_records(big, limits=Limits(member_bytes=300_000), fields={"cls"}))  # a larger bound reads on
    json_victim = entries[9][0].split(".")[0]  # a json of 200 kB is within the 1 MiB json bound, whatever the images'
    padded = json.dumps({**json.loads(dict(entries)[f"{json_victim}.json"]), "pad": "x" * 200_000}).encode()
    hostile(build, tmp_path / "json", [(n, padded if n == f"{json_victim}.json" else d) for n, d in entries])
    assert len(list(stream(tmp_path / "json", allowed=0))) == 8
    assert shards.MAX_JSON_BYTES == Limits.for_image_size(24).json_bytes == 1 << 20


def test_names_with_dotdot_or_slash_and_links_are_refused_and_nothing_is_written(build, tmp_path, caplog) -> None:
    entries = members(build)
    link = tarfile.TarInfo("val_link.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    evil = [("../escape.jpg", b"x"), ("val_dir/inner.jpg", b"x"), ("val_dots..jpg", b"x"), link, ("noext", b"x")]
    shard = hostile(build, tmp_path / "names", [*entries[:4], *evil, *entries[4:]])
    with caplog.at_level("WARNING"):
        samples = list(stream_of_names := stream(tmp_path / "names"))
    assert len(samples) == 8
    for name in ("../escape.jpg", "val_dir/inner.jpg", "val_dots..jpg", "val_link.jpg", "noext"):
        assert repr(name) in caplog.text, name
    problems = " ".join(item["problem"] for item in stream_of_names.ledger.items.values())
    assert all(repr(name) in problems for name in ("../escape.jpg", "val_link.jpg", "noext"))
    assert stream_of_names.ledger.count == 0  # listed, but no sample of the manifest's 8 was lost
    with pytest.raises(DataError, match=r"unexpected tar entry '../escape.jpg'.*augment verify"):
        list(stream(tmp_path / "names", allowed=0))  # by default, the first one stops the run
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "names/val_dir").exists()
    with pytest.raises(ShardError, match=r"unexpected tar entry '../escape.jpg'"):
        list(iter_records(shard))


def test_pickles_are_never_unpickled(build: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Evil())
    entries = members(build)
    key = entries[0][0].split(".")[0]
    entries = [(n, payload if n == f"{key}.json" else d) for n, d in entries] + [
        ("val_x.pickle", payload),
        ("val_x.pyd", payload),
    ]
    shard = hostile(build, tmp_path / "pickle", entries)
    records = dict(iter_records(shard))  # augment's reader: every member as bytes
    assert records["val_x"] == {"pickle": payload, "pyd": payload}
    samples = list(stream(tmp_path / "pickle"))  # the trainer: the pickled json does not parse, the rest is unread
    assert len(samples) == 7 and key not in {s["key"] for s in samples} and not marker.exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("json", b"[" * 50_000),
        ("json", b"[1, 2]"),
        ("json", b'{"has_object": 1}'),
        ("json", b"\xff\xfe{"),
        ("cls", b"7"),
        ("cls", b"-1"),
        ("cls", b"1e9"),
        ("json", b"{" + b" " * 4000 + b"}"),
    ],
)
def test_malformed_json_and_labels_are_skipped_not_crashing(build, tmp_path, caplog, field, value) -> None:
    entries = members(build)
    key = entries[0][0].split(".")[0]
    shard = hostile(build, tmp_path / "bad", [(n, value if n == f"{key}.{field}" else d) for n, d in entries])
    with caplog.at_level("WARNING"):
        samples = list(stream(tmp_path / "bad"))
    assert len(samples) == 7 and key in caplog.text
    errors: list[ShardError] = []
    kept = list(iter_records(shard, limits=Limits(json_bytes=3000), on_error=errors.append))
    assert len(kept) == 8 - (len(value) > 3000) and len(errors) == (len(value) > 3000)


def test_corrupt_and_truncated_tars_name_the_shard(build: Path, tmp_path: Path, caplog) -> None:
    entries = members(build)
    shard = hostile(build, tmp_path / "cut", entries)
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ShardError, match="truncated"):
        list(iter_records(shard))
    with caplog.at_level("WARNING"):
        kept = list(cut := stream(tmp_path / "cut"))
    assert 0 < len(kept) < 8 and len(kept) + cut.ledger.count == 8  # the unread rest is counted as lost
    assert f"{shard}: {8 - len(kept)} of its 8 samples unusable" in caplog.text and "truncated" in caplog.text
    with pytest.raises(DataError, match=f"{shard} .*: truncated.*{8 - len(kept)} sample.s. lost.*augment verify"):
        list(stream(tmp_path / "cut", allowed=0))
    header = bytearray(whole[:512])
    header[0] ^= 0x01  # the name changes, the checksum does not
    shard.write_bytes(bytes(header) + whole[512:])
    with pytest.raises(ShardError, match="checksum mismatch"):
        list(iter_records(shard))


def test_pipe_urls_need_the_users_opt_in(build: Path, tmp_path: Path, monkeypatch) -> None:
    from train.cli import app

    monkeypatch.delenv(shards.PIPE_ENV, raising=False)
    url = f"pipe:cat {build}/{{}}"
    with pytest.raises(ValueError, match=r"pipe: URLs run a shell command and are refused .* CFAUG_ALLOW_PIPE=1"):
        read_manifest(url)
    result = CliRunner().invoke(app, ["fit", "--shards", url, "--out", str(tmp_path / "x")], prog_name="train")
    assert result.exit_code == 2 and "CFAUG_ALLOW_PIPE=1" in result.output
    with pytest.raises(ValueError, match="refused"):
        list(iter_records(url.replace("{}", "val/shard-000000.tar")))

    monkeypatch.setenv(shards.PIPE_ENV, "1")
    assert [s["key"] for s in stream(url)] == [s["key"] for s in stream(build)]
    manifest = read_manifest(url)  # a manifest cannot smuggle shell syntax into the command
    manifest["splits"]["val"]["shards"][0]["path"] = f"val/x.tar;touch {tmp_path}/pwned"
    with pytest.raises(ValueError, match="expected a relative path of letters, digits"):
        ShardStream(url, manifest, "val", Fields(), train=False, crop=24)
    assert shards.join("pipe:cat {}", "val/shard-000000.tar") == "pipe:cat val/shard-000000.tar"
    assert not (tmp_path / "pwned").exists()


def test_write_shard_output_reads_back_with_pax_and_long_names(tmp_path: Path) -> None:
    """The reader follows pax headers (webdataset's TarWriter writes them) and bounds them."""
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for key in ("a", "b" * 120):  # a name over 100 characters needs a pax path record
            for field, data in (("cls", b"1"), ("json", b"{}")):
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size, info.mtime = len(data), 1.5  # a float mtime: a pax record too
                tar.addfile(info, io.BytesIO(data))
    assert [k for k, _ in iter_records(path)] == ["a", "b" * 120]
    ours = write_shard(tmp_path / "ours.tar", [{"__key__": "k", "cls": b"3"}])
    assert ours["num_samples"] == 1 and list(iter_records(tmp_path / "ours.tar")) == [("k", {"cls": b"3"})]
