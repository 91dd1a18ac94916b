"""A test-only writer of TensorFlow 1.x V2 checkpoints in exactly the upstream layout (no TensorFlow needed).

It follows LevelDB's TableBuilder (restart every 16 keys in data blocks, every key in the index block, shortest
separators as index keys) and TensorFlow's BundleWriter (header under the empty key, tensors back to back in one data
shard, masked crc32cs). It shares no code with the reader, so the two cannot agree on a bug by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAGIC = 0xDB4775248B80FB57
# numpy -> TensorFlow DataType enum (tensorflow/core/framework/types.proto)
DT = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "int64": 9, "bool": 10, "float16": 19}
DT_STRING = 7


def crc32c(data: bytes, crc: int = 0) -> int:
    """crc32c, bit by bit (slow, but obviously the Castagnoli polynomial); ``crc`` continues a previous result.

    Payloads over 64 KiB (real-sized weights) go to ``google-crc32c`` instead: the bit loop would take minutes.
    """
    if len(data) > 1 << 16:
        import google_crc32c

        return google_crc32c.extend(crc, data)
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negatives as protobuf's 10-byte two's complement
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_varint(field: int, value: int) -> bytes:
    """A varint field, omitted when 0 as proto3 does."""
    return varint(field << 3) + varint(value) if value else b""


def pb_bytes(field: int, value: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(value)) + value


def pb_fixed32(field: int, value: int) -> bytes:
    return varint(field << 3 | 5) + value.to_bytes(4, "little") if value else b""


def entry_proto(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int, slices: int = 0) -> bytes:
    """A serialized BundleEntryProto, fields in number order as protoc writes them."""
    dims = b"".join(pb_bytes(2, pb_varint(1, d)) for d in shape)
    return (
        pb_varint(1, dtype)
        + pb_bytes(2, dims)
        + pb_varint(4, offset)
        + pb_varint(5, size)
        + pb_fixed32(6, mask(crc))
        + b"".join(pb_bytes(7, pb_bytes(1, b"")) for _ in range(slices))  # TensorSliceProto { extent {} }
    )


def header_proto(num_shards: int = 1, big_endian: bool = False) -> bytes:
    """BundleHeaderProto { num_shards, endianness, version { producer: 1 } }."""
    return pb_varint(1, num_shards) + pb_varint(2, int(big_endian)) + pb_bytes(3, pb_varint(1, 1))


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    """A LevelDB block: prefix-compressed entries, restart offsets, restart count."""
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        last = key
    restarts = restarts or [0]  # an empty block still has one restart
    return bytes(out) + b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")


def _separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's FindShortestSeparator: a short key k with start <= k < limit."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """LevelDB's FindShortSuccessor: a short key >= key."""
    for n, byte in enumerate(key):
        if byte != 0xFF:
            return key[:n] + bytes([byte + 1])
    return key


def sstable(items: list[tuple[bytes, bytes]], block_size: int = 4096) -> bytes:
    """An uncompressed LevelDB table of sorted (key, value) items, as TensorFlow's table builder writes it."""
    out, index = bytearray(), []

    def emit(block: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(block))
        out.extend(block + b"\x00" + mask(crc32c(block + b"\x00")).to_bytes(4, "little"))
        return handle

    pending: list[tuple[bytes, bytes]] = []
    for n, (key, value) in enumerate(items):
        pending.append((key, value))
        if len(_block(pending, 16)) >= block_size or n == len(items) - 1:  # LevelDB: flush once a block is full
            handle = emit(_block(pending, 16))
            last = pending[-1][0]
            index.append((_separator(last, items[n + 1][0]) if n + 1 < len(items) else _successor(last), handle))
            pending = []
    metaindex = emit(_block([], 16))
    index_handle = emit(_block(index, 1))
    footer = (metaindex + index_handle).ljust(40, b"\x00") + MAGIC.to_bytes(8, "little")
    return bytes(out) + footer


def _tensor_bytes(array: np.ndarray, big_endian: bool) -> tuple[int, bytes, int]:
    """(dtype enum, bytes in the data file, crc32c) of one tensor; strings as TensorFlow's WriteStringTensor."""
    if array.dtype.kind in "SO":
        strings = [bytes(s) for s in array.ravel()]
        lengths = b"".join(varint(len(s)) for s in strings)
        length_crc = crc32c(b"".join(len(s).to_bytes(8, "little") for s in strings))
        data = lengths + mask(length_crc).to_bytes(4, "little") + b"".join(strings)
        return DT_STRING, data, crc32c(data)  # (TensorFlow's crc covers the lengths as uint64s; unchecked here)
    data = array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
    return DT[array.dtype.name], data, crc32c(data)


def write_bundle(
    directory: Path,
    tensors: dict[str, np.ndarray],
    prefix: str = "snap-0",
    block_size: int = 4096,
    checkpoint_file: str = "checkpoint",
    big_endian: bool = False,
    extra_entries: dict[str, bytes] | None = None,
) -> Path:
    """Write ``checkpoint``, ``<prefix>.index``, ``<prefix>.data-00000-of-00001`` and ``<prefix>.meta``.

    ``tensors`` may hold numeric arrays and bytes arrays (written as DT_STRING). ``extra_entries`` adds raw
    BundleEntryProto values (for entries the writer cannot make, e.g. partitioned slices). Returns the prefix path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    data, entries = bytearray(), {}
    for name, array in tensors.items():
        dtype, raw, crc = _tensor_bytes(np.asarray(array), big_endian)
        entries[name.encode()] = entry_proto(dtype, np.shape(array), len(data), len(raw), crc)
        data += raw
    entries.update({name.encode(): value for name, value in (extra_entries or {}).items()})
    items = [(b"", header_proto(1, big_endian))] + sorted(entries.items())
    (directory / f"{prefix}.index").write_bytes(sstable(items, block_size))
    (directory / f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    (directory / f"{prefix}.meta").write_bytes(b"")  # the MetaGraphDef: not read
    if checkpoint_file:
        state = f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'
        (directory / checkpoint_file).write_text(state)
    return directory / prefix
