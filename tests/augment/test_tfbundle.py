"""The TensorFlow V2 checkpoint reader: round trips through the test writer, hand-built bytes, and damaged files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from tf_checkpoint import crc32c as writer_crc32c
from tf_checkpoint import entry_proto, header_proto, mask, sstable, write_bundle

from augment.cagan import tfbundle
from augment.cagan.tfbundle import BundleEntry, BundleError, find_prefix, parse_entry, read_bundle, read_table


def generator_like(seed: int = 0) -> dict[str, np.ndarray]:
    """Over 100 tensors named like DeepFill's, with Adam slots, a discriminator and assorted dtypes and shapes."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    layers = [f"conv{i}" for i in range(1, 18)] + [f"conv{i}_atrous" for i in range(7, 11)] + ["xconv1", "pmconv1"]
    for n, layer in enumerate(layers):
        cin, cout = 3 + n % 4, 4 + n % 5
        for net in ("inpaint_net", "discriminator"):
            kernel = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)  # HWIO
            bias = rng.standard_normal(cout).astype(np.float32)
            tensors[f"{net}/{layer}/kernel"], tensors[f"{net}/{layer}/bias"] = kernel, bias
        tensors[f"inpaint_net/{layer}/kernel/Adam"] = np.zeros_like(tensors[f"inpaint_net/{layer}/kernel"])
    tensors |= {
        "global_step": np.array(123456789012, np.int64),  # scalar, shape []
        "beta1_power": np.array(0.9, np.float32),
        "inpaint_net/half": rng.standard_normal((2, 5)).astype(np.float16),
        "inpaint_net/f64": rng.standard_normal(3),
        "inpaint_net/i32": np.array([-(2**31), 0, 2**31 - 1], np.int32),
        "inpaint_net/i16": np.array([[-7, 8]], np.int16),
        "inpaint_net/i8": np.array([-128, 127], np.int8),
        "inpaint_net/u8": np.arange(250, 256, dtype=np.uint8),
        "inpaint_net/flags": np.array([True, False, True]),
        "inpaint_net/empty": np.zeros((0, 3), np.float32),
        "inpaint_net/long": rng.integers(-(2**62), 2**62, size=(2, 2), dtype=np.int64),
    }
    return tensors


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)
        assert got[name].flags.writeable and got[name].flags.owndata, name


def data_blocks(index: Path) -> int:
    """How many data blocks an index file has (its index block's entry count)."""
    data = index.read_bytes()
    footer = len(data) - 48
    _, _, pos = tfbundle._handle(data, footer, len(data))
    offset, size, _ = tfbundle._handle(data, pos, len(data))
    return len(list(tfbundle._entries(tfbundle._block(data, offset, size, "index", True), "index")))


# ---- hand-built bytes: the reader checked against the specs, not against the writer ----


def test_crc32c_known_values():
    for crc in (tfbundle.crc32c, writer_crc32c):
        assert crc(b"123456789") == 0xE3069283  # the CRC-32C check value
        assert crc(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4
        assert crc(b"") == 0
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert tfbundle.unmask_crc(mask(value)) == value


def test_entry_decoded_from_hand_built_protobuf():
    dims = b"\x12\x02\x08\x03" + b"\x12\x03\x08\xac\x02"  # dim {size: 3} dim {size: 300}
    proto = (
        b"\x08\x01"  # dtype: DT_FLOAT
        + b"\x12\x09"
        + dims  # shape
        + b"\x20\xb0\x09"  # offset: 1200
        + b"\x28\x90\x1c"  # size: 3600
        + b"\x35\x78\x56\x34\x12"  # crc32c: fixed32 0x12345678
    )
    unknown = b"\x78\x01" + b"\x4a\x02hi" + b"\x51" + bytes(8)  # fields 15 (varint), 9 (bytes), 10 (fixed64)
    want = BundleEntry(dtype=1, shape=(3, 300), offset=1200, size=3600, crc32c=0x12345678)
    assert parse_entry(proto + unknown) == want
    assert parse_entry(b"\x08\x09\x12\x00") == BundleEntry(dtype=9, shape=())  # a scalar: empty shape message
    assert entry_proto(1, (3, 300), 1200, 3600, tfbundle.unmask_crc(0x12345678)) == proto  # the writer agrees
    assert tfbundle.parse_header(b"\x08\x01\x10\x01\x1a\x02\x08\x01") == (1, True)
    assert header_proto() == b"\x08\x01\x1a\x02\x08\x01"


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 64 bits"),
        (b"\x12\x05\x12\x00", "claims 5 bytes"),
        (b"\x35\x01\x02", "truncated fixed32"),
        (b"\x0b", "wire type 3"),
        (b"\x12\x0d\x12\x0b\x08" + b"\xff" * 9 + b"\x01", "unknown dimension"),  # dim {size: -1}
        (b"\x12\x02\x18\x01", "unknown rank"),
        (b"\x12\x02\x10\x01", "expected a message"),  # shape { dim: 1 }: dim given as a varint
    ],
)
def test_bad_protobufs(proto: bytes, message: str):
    with pytest.raises(BundleError, match=message):
        parse_entry(proto)


def test_hand_built_table(tmp_path: Path):
    """One data block with a shared key prefix, an empty metaindex, an index block and the footer, all by hand."""

    def with_trailer(block: bytes) -> bytes:
        return block + b"\x00" + mask(tfbundle.crc32c(block + b"\x00")).to_bytes(4, "little")

    one_restart = b"\x00\x00\x00\x00\x01\x00\x00\x00"
    data = b"\x00\x00\x02\x08\x01" + b"\x00\x01\x00a" + b"\x01\x01\x00b" + one_restart  # "": 08 01, "a": "", "ab": ""
    index = b"\x00\x01\x02b\x00" + bytes([len(data)]) + one_restart  # key "b" -> handle (0, len(data))
    body = with_trailer(data) + with_trailer(one_restart) + with_trailer(index)
    meta_at, index_at = len(data) + 5, len(data) + 5 + 13
    footer = bytes([meta_at, 8, index_at, len(index)]).ljust(40, b"\x00") + bytes.fromhex("57fb808b247547db")
    (tmp_path / "t.index").write_bytes(body + footer)
    assert read_table(tmp_path / "t.index") == [(b"", b"\x08\x01"), (b"a", b""), (b"ab", b"")]
    assert read_bundle(tmp_path / "t.index", keep=lambda name: False) == {}
    assert sstable([(b"", b"\x08\x01"), (b"a", b""), (b"ab", b"")]) == body + footer  # the writer: byte for byte


# ---- round trips ----


def test_round_trip_many_tensors_in_many_blocks(tmp_path: Path):
    tensors = generator_like()
    assert len(tensors) >= 100
    prefix = write_bundle(tmp_path / "small", tensors, block_size=256)
    assert data_blocks(Path(f"{prefix}.index")) >= 10
    assert_same(read_bundle(prefix), tensors)
    big = write_bundle(tmp_path / "big", tensors, block_size=1 << 20)
    assert data_blocks(Path(f"{big}.index")) == 1  # one block: 16-key restarts inside it
    assert_same(read_bundle(big.parent), tensors)


def test_big_endian_checkpoint_gives_native_arrays(tmp_path: Path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64)}
    assert_same(read_bundle(write_bundle(tmp_path, tensors, big_endian=True)), tensors)
    assert read_bundle(tmp_path)["a"].dtype.isnative


def test_keep_filters_before_reading(tmp_path: Path):
    tensors = generator_like() | {"inpaint_net/names": np.array([b"conv1", b"x"]), "model_name": np.array(b"dfv1")}
    garbage = {"zz/not_a_proto": b"\xff", "zz/partitioned": entry_proto(1, (4,), 0, 16, 0, slices=2)}
    prefix = write_bundle(tmp_path, tensors, block_size=512, extra_entries=garbage)

    def generator_only(name: str) -> bool:
        return name.startswith("inpaint_net/") and "/Adam" not in name and name != "inpaint_net/names"

    got = read_bundle(prefix, keep=generator_only)
    assert_same(got, {name: t for name, t in tensors.items() if generator_only(name)})
    assert list(got) == sorted(got)  # the index's key order
    with pytest.raises(BundleError, match="'inpaint_net/names' is a string tensor"):
        read_bundle(prefix, keep=lambda name: name.startswith("inpaint_net/"))
    with pytest.raises(BundleError, match="zz/not_a_proto"):
        read_bundle(prefix, keep=lambda name: name.startswith("zz/"))


# ---- finding the prefix ----


def test_find_prefix_forms(tmp_path: Path):
    prefix = write_bundle(tmp_path / "release_imagenet_256", {"x": np.ones(2, np.float32)})
    folder = prefix.parent
    assert find_prefix(folder) == prefix
    assert find_prefix(prefix) == prefix
    assert find_prefix(Path(f"{prefix}.index")) == prefix

    drive = write_bundle(tmp_path / "drive", {"x": np.ones(2, np.float32)}, checkpoint_file="checkpoint.txt")
    assert find_prefix(drive.parent) == drive
    assert not (drive.parent / "checkpoint").exists()

    (folder / "checkpoint").unlink()  # no state file: the only index is used
    assert find_prefix(folder) == prefix

    # a state file recording the trainer's absolute path: the same name is found here
    (folder / "checkpoint").write_text('model_checkpoint_path: "/home/someone/logs/snap-0"\n')
    assert find_prefix(folder) == prefix
    (folder / "checkpoint").write_text('model_checkpoint_path: "C:\\\\logs\\\\snap-0"\n')  # text-proto escaped
    assert find_prefix(folder) == prefix

    other = write_bundle(tmp_path / "two", {"x": np.ones(1, np.float32)}, prefix="model.ckpt-1000")
    assert find_prefix(Path(f"{other}.index")) == other
    assert find_prefix(other) == other
    assert find_prefix(other.parent) == other


def test_find_prefix_errors(tmp_path: Path):
    with pytest.raises(BundleError, match=r"no checkpoint at .*nowhere.*release_imagenet_256/"):
        find_prefix(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"no snap-\*\.index in .*empty; expected .*snap-0\.data-00000-of-00001"):
        find_prefix(tmp_path / "empty")
    write_bundle(tmp_path / "two", {}, prefix="snap-0", checkpoint_file="")
    write_bundle(tmp_path / "two", {}, prefix="snap-1", checkpoint_file="")
    with pytest.raises(BundleError, match=r"several indexes \(snap-0\.index, snap-1\.index\)"):
        find_prefix(tmp_path / "two")
    (tmp_path / "two" / "checkpoint").write_text('model_checkpoint_path: "snap-7"\n')
    with pytest.raises(BundleError, match=r"names snap-7, but .*snap-7\.index is missing"):
        find_prefix(tmp_path / "two")
    (tmp_path / "two" / "checkpoint").write_text("garbage\n")
    with pytest.raises(BundleError, match="no model_checkpoint_path"):
        find_prefix(tmp_path / "two")


# ---- damaged and unsupported checkpoints ----


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path, generator_like(), block_size=300)


def test_missing_data_file(bundle: Path):
    Path(f"{bundle}.data-00000-of-00001").unlink()
    with pytest.raises(BundleError, match=r"missing data file .*snap-0\.data-00000-of-00001"):
        read_bundle(bundle)


@pytest.mark.parametrize("cut", ["0", "10", "47", "48", "100", "all but 1", "9 before the magic"])
def test_truncated_index(bundle: Path, cut: str):
    index = Path(f"{bundle}.index")
    data = index.read_bytes()
    cuts = {"all but 1": data[:-1], "9 before the magic": data[:-17] + data[-8:]}
    index.write_bytes(cuts.get(cut) or data[: int(cut)])
    with pytest.raises(BundleError, match=r"snap-0\.index: .*(footer|magic|runs past|garbled|restarts|crc|varint)"):
        read_bundle(bundle)


def test_bad_magic(bundle: Path):
    index = Path(f"{bundle}.index")
    index.write_bytes(index.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match=r"snap-0\.index: bad magic number"):
        read_bundle(bundle)


def test_truncated_data_file(bundle: Path):
    data = Path(f"{bundle}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"data-00000-of-00001: '.*' needs bytes \d+\.\.\d+, but the file has"):
        read_bundle(bundle)


def test_crc_mismatches(bundle: Path):
    data = Path(f"{bundle}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="fails its crc32c check"):
        read_bundle(bundle)
    assert len(read_bundle(bundle, verify_crc=False)) == len(generator_like())
    index = Path(f"{bundle}.index")
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01  # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"snap-0\.index: data block 0 at 0 fails its crc32c check"):
        read_bundle(bundle)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (entry_proto(1, (2, 3), 0, 20, 0), r"has 20 bytes, but shape \[2, 3\] of float32 needs 24"),
        (entry_proto(1, (4,), 0, 16, 0, slices=1), "partitioned variable"),
        (entry_proto(14, (4,), 0, 8, 0), "unsupported TensorFlow dtype 14"),
        (entry_proto(1, (4,), 0, 16, 0) + b"\x18\x02", "shard 2, but the header says 1"),
        (entry_proto(1, (1,) * 70, 0, 4, 0), "maximum supported dimension"),
    ],
)
def test_unsupported_entries(tmp_path: Path, entry: bytes, message: str):
    prefix = write_bundle(tmp_path, {"ok": np.ones(8, np.float32)}, extra_entries={"bad": entry})
    with pytest.raises(BundleError, match=message):
        read_bundle(prefix, verify_crc=False)  # the hand-made entries carry no valid crc
    assert list(read_bundle(prefix, keep=lambda name: name != "bad")) == ["ok"]


def test_header_problems(tmp_path: Path):
    index = tmp_path / "x.index"
    index.write_bytes(sstable([(b"a", entry_proto(1, (), 0, 4, 0))]))
    with pytest.raises(BundleError, match="no bundle header"):
        read_bundle(index)
    index.write_bytes(sstable([(b"", header_proto(0))]))
    with pytest.raises(BundleError, match="bundle header: header says 0 data shards"):
        read_bundle(index)
    index.write_bytes(sstable([(b"", b""), (b"b", b""), (b"a", b"")]))  # keys must ascend
    with pytest.raises(BundleError, match="out of order"):
        read_bundle(index)


@pytest.mark.parametrize("verify_crc", [True, False])
def test_random_damage_gives_bundle_errors(bundle: Path, verify_crc: bool):
    """Byte flips and cuts anywhere in the index or data file: a BundleError or a successful read, nothing else."""
    rng = random.Random(7)
    files = [Path(f"{bundle}.index")] * 3 + [Path(f"{bundle}.data-00000-of-00001")]  # mostly the index
    originals = {f: f.read_bytes() for f in files}
    outcomes = set()
    for trial in range(150):
        target = files[trial % 4]
        raw = bytearray(originals[target])
        if rng.random() < 0.8:
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        else:
            del raw[rng.randrange(len(raw)) :]
        target.write_bytes(bytes(raw))
        try:
            read_bundle(bundle, verify_crc=verify_crc)
            outcomes.add("read")
        except BundleError:
            outcomes.add("error")
        target.write_bytes(originals[target])
    assert "error" in outcomes
