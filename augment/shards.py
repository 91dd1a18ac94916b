"""Write and read shard files in webdataset's tar layout: deterministic headers, temp name then rename.

Both directions use the standard library's ``tarfile``, with the conventions of webdataset's ``TarWriter``
(USTAR, ``<key>.<field>`` members, fields of a record in sorted order). Importing webdataset itself would import
torch, about 650 MB and 1.7 s in every build worker, for 20 lines of tar writing. Reading only ever returns
bytes: nothing in a shard is unpickled or executed. `tests/test_build.py` reads the shards with webdataset.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

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
    try:
        with open(tmp, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                for record in records:
                    add_record(tar, record)
                    count += 1
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return {"num_samples": count, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def add_record(tar: tarfile.TarFile, record: dict[str, bytes]) -> None:
    """Append one record: a ``<key>.<field>`` member per field, fields sorted, fixed headers."""
    key = record["__key__"]
    if not isinstance(key, str) or not key or "." in key or "/" in key:
        raise ValueError(f"record key {key!r}: expected a non-empty string without '.' or '/'")
    for field in sorted(k for k in record if k != "__key__"):
        data = record[field]
        if not isinstance(data, bytes):
            raise ValueError(f"record {key!r}: field {field!r} is {type(data).__name__}, expected encoded bytes")
        if len(f"{key}.{field}") > 100:  # USTAR's limit for a name without a folder
            raise ValueError(f"record {key!r}: member name {key}.{field} is over 100 characters; use a shorter key")
        info = tarfile.TarInfo(f"{key}.{field}")
        info.size, info.mtime, info.mode = len(data), schema.TAR_MTIME, schema.TAR_MODE
        info.uname = info.gname = schema.TAR_USER
        tar.addfile(info, io.BytesIO(data))


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
