"""Read TensorFlow 1.x "V2" checkpoints (the tensor bundle format) with numpy alone: no TensorFlow, no protobuf.

The official DeepFill v1 weights ship as one such checkpoint: ``checkpoint`` (a text file naming the prefix),
``snap-0.index``, ``snap-0.data-00000-of-00001`` and a ``snap-0.meta`` graph, which is not needed here.

``<prefix>.index`` is a LevelDB SSTable written without compression::

    data block ... | metaindex block (empty) | index block | footer (48 bytes)

- footer: the metaindex and index BlockHandles (offset, size: two varint64s each), zero padded to 40 bytes, then the
  magic 0xdb4775248b80fb57 as 8 little-endian bytes;
- each block is followed by a 5-byte trailer: compression type (must be 0, none) and the masked crc32c of the block
  plus that type byte; the trailers are verified;
- a block holds prefix-compressed entries (varint32 shared, non_shared, value_length; the key's last non_shared
  bytes; the value), then its restart offsets (uint32 each) and their count (uint32). Entries are read in order, so
  the restarts are only bounds-checked. The index block's values are the BlockHandles of the data blocks.

The entry with the empty key is a BundleHeaderProto (num_shards, endianness); every other key is a tensor name whose
value is a BundleEntryProto: dtype, shape, and the shard, offset and size of its bytes in
``<prefix>.data-<shard:05d>-of-<num_shards:05d>``, plus the masked crc32c of those bytes (verified too).
The protobufs are decoded by the minimal wire-format reader below. Every length and offset is checked against the
file it points into, since checkpoints may come from strangers: damage gives a ``BundleError``, never an IndexError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import BinaryIO

import numpy as np

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
DT_STRING = 7
# tensorflow/core/framework/types.proto -> numpy; DT_BFLOAT16 (14) has no numpy dtype
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    8: np.complex64,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    18: np.complex128,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
EXPECTED = (
    "expected a TensorFlow checkpoint: the release_imagenet_256/ folder with checkpoint, snap-0.index and "
    "snap-0.data-00000-of-00001, or the snap-0 prefix inside it"
)


class BundleError(ValueError):
    """A checkpoint that is missing, damaged, or uses a feature this reader does not support."""


@dataclass(frozen=True)
class BundleEntry:
    """The fields of a BundleEntryProto that locate and describe one tensor."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    slices: int = 0  # how many TensorSliceProtos: >0 means a partitioned variable


# ---- crc32c (Castagnoli), as LevelDB and TensorFlow use it ----


def crc32c(data: bytes | memoryview) -> int:
    """crc32c of ``data``, by Google's ``google-crc32c``: a C implementation, since a checkpoint's weights are
    megabytes and a pure-Python loop over them is far too slow."""
    import google_crc32c

    return google_crc32c.value(bytes(data))


def unmask_crc(masked: int) -> int:
    """Undo LevelDB's crc mask ((crc >> 15 | crc << 17) + 0xa282ead8), used so crcs of crcs stay strong."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---- varints and protobuf wire format ----


def _varint(buf: bytes, pos: int, end: int, bits: int = 64) -> tuple[int, int]:
    """Decode a little-endian base-128 varint at buf[pos:end]; return (value, next position)."""
    value = shift = 0
    while shift < bits:
        if pos >= end:
            raise BundleError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & ((1 << bits) - 1), pos
        shift += 7
    raise BundleError(f"varint longer than {bits} bits")


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) of a serialized message: ints for varint/fixed fields, bytes for the rest."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in (1, 5):  # fixed64, fixed32
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise BundleError(f"truncated fixed{width * 8} field {field}")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise BundleError(f"field {field} claims {length} bytes, {end - pos} left")
            value, pos = buf[pos : pos + length], pos + length
        else:  # 3 and 4 are the deprecated groups, 6 and 7 do not exist
            raise BundleError(f"unsupported protobuf wire type {wire} (field {field})")
        if field == 0:
            raise BundleError("protobuf field number 0")
        yield field, value


def _int64(value: int | bytes, what: str) -> int:
    """A varint field read as a signed 64-bit integer (protobuf encodes negatives as 10-byte varints)."""
    if not isinstance(value, int):
        raise BundleError(f"{what}: expected an integer, found bytes")
    return value - (1 << 64) if value >= 1 << 63 else value


def _message(value: int | bytes, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise BundleError(f"{what}: expected a message, found an integer")
    return value


def parse_shape(buf: bytes) -> tuple[int, ...]:
    """Decode a TensorShapeProto (repeated Dim dim = 2 {int64 size = 1; string name = 2}; bool unknown_rank = 3)."""
    dims = []
    for field, value in _proto_fields(buf):
        if field == 2:
            size = 0
            for dim_field, dim_value in _proto_fields(_message(value, "shape.dim")):
                if dim_field == 1:
                    size = _int64(dim_value, "shape.dim.size")
            if size < 0:
                raise BundleError(f"shape has an unknown dimension ({size})")
            dims.append(size)
        elif field == 3 and _int64(value, "shape.unknown_rank"):
            raise BundleError("shape has unknown rank")
    return tuple(dims)


def parse_entry(buf: bytes) -> BundleEntry:
    """Decode a BundleEntryProto; unknown fields are skipped, absent ones are 0 as in proto3."""
    fields: dict[str, int] = {"dtype": 0, "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0, "slices": 0}
    shape: tuple[int, ...] = ()
    names = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}
    for field, value in _proto_fields(buf):
        if field == 2:
            shape = parse_shape(_message(value, "shape"))
        elif field == 7:
            _message(value, "slices")
            fields["slices"] += 1
        elif field in names:
            fields[names[field]] = _int64(value, names[field])
    for name in ("shard_id", "offset", "size"):
        if fields[name] < 0:
            raise BundleError(f"negative {name} {fields[name]}")
    return BundleEntry(shape=shape, **fields)


def parse_header(buf: bytes) -> tuple[int, bool]:
    """Decode a BundleHeaderProto into (num_shards, big_endian); the version (field 3) is not needed."""
    num_shards, endianness = 0, 0
    for field, value in _proto_fields(buf):
        if field == 1:
            num_shards = _int64(value, "header.num_shards")
        elif field == 2:
            endianness = _int64(value, "header.endianness")
    if num_shards < 1:
        raise BundleError(f"header says {num_shards} data shards")
    if endianness not in (0, 1):
        raise BundleError(f"header has unknown endianness {endianness}")
    return num_shards, endianness == 1


# ---- the SSTable ----


def _handle(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Decode a BlockHandle (varint64 offset, varint64 size) at buf[pos:end]; return (offset, size, next pos)."""
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int, what: str, verify_crc: bool) -> bytes:
    """The contents of the block at (offset, size), after checking that it and its 5-byte trailer are sound."""
    limit = len(data) - FOOTER_SIZE
    if offset + size + 5 > limit:
        raise BundleError(f"{what} at {offset}+{size} runs past the end of the tables ({limit} bytes)")
    block, kind = data[offset : offset + size], data[offset + size]
    if kind != 0:
        raise BundleError(f"{what} has compression type {kind}; only uncompressed (0) is supported")
    if verify_crc:
        stored = unmask_crc(int.from_bytes(data[offset + size + 1 : offset + size + 5], "little"))
        if crc32c(data[offset : offset + size + 1]) != stored:
            raise BundleError(f"{what} at {offset} fails its crc32c check")
    return block


def _entries(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """Yield a block's (key, value) pairs, undoing the prefix compression of keys."""
    if len(block) < 4:
        raise BundleError(f"{what} is {len(block)} bytes, too short for its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise BundleError(f"{what} claims {restarts} restarts in {len(block)} bytes")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, end, 32)
        non_shared, pos = _varint(block, pos, end, 32)
        value_length, pos = _varint(block, pos, end, 32)
        if shared > len(key) or pos + non_shared + value_length > end:
            raise BundleError(f"{what} has a garbled entry at byte {pos}")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length


def read_table(index: Path, verify_crc: bool = True) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an uncompressed LevelDB SSTable file, in key order."""
    data = index.read_bytes()
    try:
        if len(data) < FOOTER_SIZE:
            raise BundleError(f"{len(data)} bytes, shorter than the {FOOTER_SIZE}-byte footer (truncated?)")
        if int.from_bytes(data[-8:], "little") != MAGIC:
            raise BundleError(f"bad magic number {data[-8:].hex()}: not a TensorFlow V2 checkpoint index, or truncated")
        footer, limit = len(data) - FOOTER_SIZE, len(data) - 8
        _, _, pos = _handle(data, footer, limit)  # the metaindex block: always empty here, not needed
        index_offset, index_size, _ = _handle(data, pos, limit)
        items: list[tuple[bytes, bytes]] = []
        index_block = _block(data, index_offset, index_size, "index block", verify_crc)
        for n, (_, handle) in enumerate(_entries(index_block, "index block")):
            offset, size, _ = _handle(handle, 0, len(handle))
            what = f"data block {n}"
            for key, value in _entries(_block(data, offset, size, what, verify_crc), what):
                if items and key <= items[-1][0]:
                    raise BundleError(f"{what}: keys out of order at {key!r}")
                items.append((key, value))
        return items
    except BundleError as err:
        raise BundleError(f"{index}: {err}") from None


# ---- finding and reading a checkpoint ----


def find_prefix(path: Path) -> Path:
    """The checkpoint prefix (``dir/snap-0``) for a checkpoint folder, a prefix, or a ``.index`` file."""
    path = Path(path)
    if path.is_dir():
        for name in ("checkpoint", "checkpoint.txt"):  # Google Drive downloads it as checkpoint.txt
            if (path / name).is_file():
                return _prefix_from_state(path, path / name)
        found = sorted(path.glob("*.index"))
        if not found:
            raise BundleError(f"no checkpoint file and no snap-*.index in {path}; {EXPECTED}")
        if len(found) > 1:
            listed = ", ".join(p.name for p in found)
            raise BundleError(f"{path} has several indexes ({listed}) and no checkpoint file: pass the prefix to use")
        return found[0].with_suffix("")
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    if Path(f"{path}.index").is_file():
        return path
    raise BundleError(f"no checkpoint at {path}: neither a folder nor a prefix with {path.name}.index; {EXPECTED}")


def _prefix_from_state(directory: Path, state: Path) -> Path:
    """The prefix named by ``model_checkpoint_path: "..."`` in a checkpoint state file (a text proto)."""
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.MULTILINE)
    if not match:
        raise BundleError(f'{state} has no model_checkpoint_path: "..." line; {EXPECTED}')
    named = match.group(1)
    # TensorFlow may record an absolute path on the machine that trained (even a Windows one): try the name here too
    name = PureWindowsPath(named).name  # splits at both / and backslash
    for prefix in (directory / named, directory / name):
        if Path(f"{prefix}.index").is_file():
            return prefix
    raise BundleError(f"{state} names {named}, but {directory / name}.index is missing; {EXPECTED}")


def read_bundle(
    path: Path, keep: Callable[[str], bool] | None = None, *, verify_crc: bool = True
) -> dict[str, np.ndarray]:
    """Every tensor (or those whose name passes ``keep``) of a checkpoint, as native-byte-order numpy arrays.

    ``path`` is anything ``find_prefix`` accepts. ``verify_crc=False`` skips the crc32c checks of blocks and tensors
    (their cost grows with the bytes of the kept tensors); sizes and bounds are always checked.
    """
    prefix = find_prefix(path)
    index = Path(f"{prefix}.index")
    items = read_table(index, verify_crc)
    if not items or items[0][0] != b"":
        raise BundleError(f"{index}: no bundle header (the entry with the empty key)")
    try:
        num_shards, big_endian = parse_header(items[0][1])
    except BundleError as err:
        raise BundleError(f"{index}: bundle header: {err}") from None
    wanted: list[tuple[str, BundleEntry]] = []
    for key, value in items[1:]:
        name = key.decode("utf-8", errors="backslashreplace")
        if keep is not None and not keep(name):
            continue
        try:
            entry = parse_entry(value)
        except BundleError as err:
            raise BundleError(f"{index}: entry {name!r}: {err}") from None
        wanted.append((name, _check_entry(index, name, entry, num_shards)))

    tensors: dict[str, np.ndarray] = {}
    for shard in sorted({entry.shard_id for _, entry in wanted}):
        data_path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
        if not data_path.is_file():
            raise BundleError(f"missing data file {data_path}, which {index} refers to; {EXPECTED}")
        with data_path.open("rb") as f:
            file_size = data_path.stat().st_size
            for name, entry in wanted:
                if entry.shard_id == shard:
                    tensors[name] = _read_tensor(f, data_path, file_size, name, entry, big_endian, verify_crc)
    return {name: tensors[name] for name, _ in wanted}  # key order, whatever the shards


def _check_entry(index: Path, name: str, entry: BundleEntry, num_shards: int) -> BundleEntry:
    """Refuse entries this reader cannot turn into an ndarray, saying why."""
    if entry.slices:
        raise BundleError(f"{index}: {name!r} is a partitioned variable ({entry.slices} slices), not supported")
    if entry.dtype == DT_STRING:
        raise BundleError(f"{index}: {name!r} is a string tensor; only numeric tensors can be read")
    if entry.dtype not in DTYPES:
        raise BundleError(f"{index}: {name!r} has unsupported TensorFlow dtype {entry.dtype}")
    if entry.shard_id >= num_shards:
        raise BundleError(f"{index}: {name!r} is in shard {entry.shard_id}, but the header says {num_shards}")
    expected = math.prod(entry.shape) * np.dtype(DTYPES[entry.dtype]).itemsize
    if entry.size != expected:
        raise BundleError(
            f"{index}: {name!r} has {entry.size} bytes, but shape {list(entry.shape)} of "
            f"{np.dtype(DTYPES[entry.dtype]).name} needs {expected}"
        )
    return entry


def _read_tensor(
    f: BinaryIO, data_path: Path, file_size: int, name: str, entry: BundleEntry, big_endian: bool, verify_crc: bool
) -> np.ndarray:
    """One tensor's bytes from an open data file, as a writable array of its own (no view onto the file)."""
    if entry.offset + entry.size > file_size:
        raise BundleError(
            f"{data_path}: {name!r} needs bytes {entry.offset}..{entry.offset + entry.size}, "
            f"but the file has {file_size} (truncated download?)"
        )
    f.seek(entry.offset)
    raw = f.read(entry.size)
    if len(raw) != entry.size:
        raise BundleError(f"{data_path}: short read of {name!r}")
    if verify_crc and crc32c(raw) != unmask_crc(entry.crc32c):
        raise BundleError(f"{data_path}: {name!r} fails its crc32c check (damaged file?)")
    dtype = np.dtype(DTYPES[entry.dtype]).newbyteorder(">" if big_endian else "<")
    try:
        return np.frombuffer(raw, dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
    except ValueError as err:  # e.g. more than 64 dimensions, or (0, 2**62, 2**62)
        raise BundleError(f"{data_path}: {name!r} of shape {list(entry.shape)}: {err}") from None
