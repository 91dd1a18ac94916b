"""Write and read shard files: deterministic tar via webdataset's TarWriter, temp name then rename.

Reading uses ``tarfile`` directly and only ever returns bytes: nothing in a shard is unpickled or executed.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import webdataset as wds

from augment import schema


class ShardError(Exception):
    """A problem with one shard, naming the file (and the sample key when known)."""

    def __init__(self, path: Path | str, message: str, key: str | None = None):
        self.path, self.key = str(path), key
        where = f"{path}" + (f" (sample {key!r})" if key else "")
        super().__init__(f"{where}: {message}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Path, records: Iterable[dict[str, bytes]]) -> dict[str, int | str]:
    """Write ``records`` to ``path`` via ``path.tmp`` and an atomic rename; returns count, bytes and sha256.

    A crash leaves at most a ``.tmp`` file, never a truncated shard under its final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as fh:
        writer = wds.TarWriter(
            fh, user=schema.TAR_USER, group=schema.TAR_USER, mode=schema.TAR_MODE, encoder=False,
            mtime=schema.TAR_MTIME,
        )  # fmt: skip
        try:
            for record in records:
                writer.write(record)
                count += 1
        except BaseException:
            writer.close()
            fh.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.close()
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return {"num_samples": count, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def iter_records(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {field: bytes})`` per record, in file order, as webdataset groups them (key = name up to the
    first dot). Raises ``ShardError`` naming the file on a missing, truncated or malformed tar."""
    if not Path(path).is_file():
        raise ShardError(path, "missing shard file")
    key: str | None = None
    fields: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise ShardError(path, f"unexpected tar entry {member.name!r} (not a regular file)")
                name = member.name
                if "/" in name or "." not in name:
                    raise ShardError(path, f"unexpected tar entry {name!r}; expected '<key>.<field>'")
                k, field = name.split(".", 1)
                if k != key:
                    if key is not None:
                        yield key, fields
                    key, fields = k, {}
                if field in fields:
                    raise ShardError(path, f"field {field!r} appears twice", key=k)
                data = tar.extractfile(member)
                fields[field] = data.read() if data is not None else b""
                if len(fields[field]) != member.size:
                    raise ShardError(path, "truncated entry", key=k)
    except tarfile.TarError as e:
        raise ShardError(path, f"not a readable tar file ({e})", key=key) from None
    except (EOFError, OSError) as e:
        raise ShardError(path, f"truncated or unreadable ({e})", key=key) from None
    if key is not None:
        yield key, fields
