"""Write and read shard files in webdataset's tar layout: deterministic headers, temp name then rename.

Writing uses the standard library's ``tarfile`` with the conventions of webdataset's ``TarWriter`` (USTAR,
``<key>.<field>`` members, fields of a record in sorted order). Importing webdataset itself would import torch
into every build worker, a large and slow import, for a few lines of tar writing.
`tests/augment/test_build.py` reads the shards with webdataset.

Reading treats a shard as untrusted, for augment (verify, preview, cagan train) and the trainer alike: one small
streaming tar reader that returns bytes only (nothing is unpickled, extracted or executed), refuses a member over a
size bound before reading it, refuses names with '/' or '..', links and devices, and checks an image's declared
size before its pixels are decoded. A local shard is opened only when it is a regular file (a FIFO would block,
``/dev/zero`` never ends) and, given the build folder, only when its real path lies inside it; a read never goes
past the size the manifest gives. Shards come from a local path or any fsspec URL (``http://``, ``s3://``,
``file://``, ``memory://``); ``pipe:`` commands only when the user opts in with ``CFAUG_ALLOW_PIPE=1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from augment.contract import schema
from augment.contract.encode import MAX_PIXELS, Refused, check_header
from augment.contract.files import UnsafeFile, open_regular, read_small, read_up_to, write_atomic


class ShardError(Exception):
    """A problem with one shard, naming the file (and the sample key when known)."""

    def __init__(self, path: Path | str, message: str, key: str | None = None):
        self.path, self.key, self.problem = str(path), key, message
        where = f"{path}" + (f" (sample {key!r})" if key else "")
        super().__init__(f"{where}: {message}")


def sha256_file(path: Path, inside: Path | str | None = None) -> str:
    """sha256 of a regular file (see :func:`open_regular`)."""
    digest = hashlib.sha256()
    with open_regular(path, inside) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Path, records: Iterable[dict[str, bytes]]) -> dict[str, int | str]:
    """Write ``records`` to ``path`` via ``path.tmp`` and an atomic rename; returns count, bytes and sha256.

    A crash leaves at most a ``.tmp`` file, never a truncated shard under its final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> int:
        count = 0
        with open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for record in records:
                add_record(tar, record)
                count += 1
        return count

    count = write_atomic(path, write, fsync=True)
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


# ---- reading: shards are untrusted -------------------------------------------------------------------------------

PIPE_ENV = "CFAUG_ALLOW_PIPE"  # "1" lets a `pipe:<shell command>` stand for a build or a shard
MAX_MEMBER_BYTES = 64 << 20  # any tar member, whatever the manifest says
MAX_JSON_BYTES = 1 << 20  # the json and cls fields, whatever the image bound (docs/FORMAT.md, Reading safely)
MAX_HEADER_BYTES = 64 << 10  # a pax or GNU long-name header
IMAGE_AREA_MARGIN = 16  # images of a build may declare up to 16 x image_size^2 pixels (short-side resizes)
BLOCK = 512
REGULAR = (b"0", b"\0", b"7")  # tar type flags of a regular file
SAFE_PATH = re.compile(r"[A-Za-z0-9_.\-/]+")  # what a manifest's shard path may hold when joined to a URL


class PipeRefused(ValueError):
    """A ``pipe:`` URL without the user's opt-in."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one shard member, checked before it is read (sizes) or its pixels are decoded (images)."""

    member_bytes: int = MAX_MEMBER_BYTES  # an image member
    json_bytes: int = MAX_JSON_BYTES  # a json or cls member
    pixels: int = MAX_PIXELS

    def of(self, field: str) -> int:
        """The bound on a member of ``field``."""
        return self.json_bytes if field in (schema.META, schema.LABEL) else self.member_bytes

    @classmethod
    def for_image_size(cls, image_size: int) -> Limits:
        """Tighter bounds for a build of ``image_size`` images: up to 16 x image_size^2 pixels per image (a
        short-side resize keeps the aspect), and a member no larger than those pixels raw, plus 64 KiB."""
        pixels = min(MAX_PIXELS, IMAGE_AREA_MARGIN * max(1, image_size) ** 2)
        return cls(member_bytes=min(MAX_MEMBER_BYTES, 3 * pixels + (64 << 10)), pixels=pixels)


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL (``scheme://...``, ``pipe:...``) rather than a local path."""
    text = str(location)
    return text.startswith("pipe:") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def join(root: str | Path, rel: str) -> str:
    """The file ``rel`` (e.g. a manifest's shard path) of the build at ``root``: a local folder, a URL, or a
    ``pipe:`` command in which ``{}`` stands for ``rel``."""
    if not SAFE_PATH.fullmatch(rel) or ".." in rel or rel.startswith("/"):
        raise ValueError(
            f"{root}: file {rel!r} of the build: expected a relative path of letters, digits, '_', "
            "'-', '.' and '/', without '..'"
        )
    root = str(root)
    if root.startswith("pipe:"):
        if "{}" not in root:
            raise ValueError(
                f"{root}: a pipe: command needs {{}} where the file of the build goes, e.g. "
                "'pipe:aws s3 cp s3://bucket/build/{} -'"
            )
        return root.replace("{}", shlex.quote(rel))
    if is_url(root):
        return root.rstrip("/") + "/" + rel
    return str(Path(root) / rel)


def io_errors() -> tuple[type[BaseException], ...]:
    """What a failed read raises: OSError locally, aiohttp's errors too over HTTP."""
    aiohttp = sys.modules.get("aiohttp")
    return (OSError, EOFError, *((aiohttp.ClientError,) if aiohttp else ()))


@contextlib.contextmanager
def open_url(url: str | Path, inside: Path | str | None = None) -> Iterator[IO[bytes]]:
    """A binary stream of a local path (a regular file, inside the folder ``inside`` when given: see
    :func:`open_regular`), an fsspec URL (HTTP as one streaming GET, no range requests needed) or, only with
    ``CFAUG_ALLOW_PIPE=1``, the output of a ``pipe:`` shell command. Raises FileNotFoundError, OSError, UnsafeFile
    or PipeRefused."""
    text = str(url)
    if text.startswith("pipe:"):
        if os.environ.get(PIPE_ENV) != "1":
            raise PipeRefused(
                f"{text}: pipe: URLs run a shell command and are refused by default; expected a path or an fsspec "
                f"URL (http://, s3://, file://, ...), or set {PIPE_ENV}=1 to run commands you wrote yourself"
            )
        with pipe(text[len("pipe:") :]) as fh:
            yield fh
        return
    if is_url(text):
        import fsspec

        options = {"block_size": 0} if text.startswith(("http://", "https://")) else {}
        fh = fsspec.open(text, "rb", **options).open()
    else:
        fh = open_regular(text, inside)
    with fh:
        yield fh


@contextlib.contextmanager
def pipe(command: str) -> Iterator[IO[bytes]]:
    """The stdout of ``command`` run by the shell; a non-zero exit after the whole output was read is an OSError."""
    proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    stopped = False
    try:
        yield proc.stdout
    finally:
        if proc.poll() is None:  # the reader stopped early
            proc.kill()
            stopped = True
        proc.stdout.close()
        status = proc.wait()
    if status != 0 and not stopped:
        raise OSError(f"pipe command {command!r} exited with status {status}")


def because(error: BaseException) -> str:
    """`` (the cause)`` when a filesystem hid it behind its own error (fsspec: a refused connection is "not found")."""
    return f" ({error.__cause__})" if error.__cause__ is not None else ""


def read_bytes(url: str | Path, limit: int, inside: Path | str | None = None) -> bytes:
    """The whole file at ``url``, refused when over ``limit`` bytes (a local file by its size, before reading:
    :func:`~augment.contract.files.read_small`)."""
    if not is_url(url):
        return read_small(url, limit, inside)
    with open_url(url, inside) as fh:
        data = read_up_to(fh, limit + 1)
    if len(data) > limit:
        raise ValueError(f"{url}: over the limit of {limit} bytes; expected a small file")
    return data


def parse_json(data: bytes) -> Any:
    """JSON from untrusted bytes: ValueError on anything malformed, nesting too deep included."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


@dataclass
class ShardCheck:
    """What a shard's manifest entry promises (``bytes``, ``sha256``, ``num_samples``), and what a read of it found:
    its bytes hashed as they streamed past (``read_bytes``, ``digest``) and its ``records`` (yielded or dropped).

    Passed to :func:`iter_records`, which raises ``ShardError`` at the end of the shard when the two differ: a
    reader then never needs a second pass (``augment verify``) to know that what it used is what was built."""

    bytes: int
    sha256: str
    num_samples: int
    read_bytes: int = 0
    records: int = 0
    digest: Any = None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> ShardCheck:
        """From a manifest's shard entry (``path``, ``num_samples``, ``bytes``, ``sha256``)."""
        return cls(bytes=entry["bytes"], sha256=entry["sha256"], num_samples=entry["num_samples"])

    def reset(self) -> None:
        self.read_bytes, self.records, self.digest = 0, 0, hashlib.sha256()

    def problem(self) -> str | None:
        """Why the shard read differs from its manifest entry, or None."""
        found = self.digest.hexdigest()
        if self.read_bytes != self.bytes or found != self.sha256:
            return (
                f"{self.read_bytes} bytes with sha256 {found[:12]}...; the manifest says {self.bytes} bytes with "
                f"{self.sha256[:12]}... (the file changed after the build)"
            )
        if self.records != self.num_samples:
            return f"{self.records} samples; the manifest says {self.num_samples}"
        return None


READ_AHEAD = 1 << 20  # bytes a shard reader buffers: the tar parser's small reads are served from memory


class RawReader(io.RawIOBase):
    """Any binary stream (a file, a pipe, an fsspec file) as the raw stream ``io.BufferedReader`` takes; with
    ``check``, every byte read through it also goes to ``check`` (sha256 and a byte count). With ``end`` (the size
    the manifest gives the file), at most that many bytes are read: a byte more raises ``ShardError``, so that a
    stream that never ends (``/dev/zero`` behind a URL) or a file grown past its entry is not read on.

    Under the buffer of :func:`buffered`, the hash is updated once per block, not once per tar header, member and
    padding."""

    def __init__(self, fh: IO[bytes], check: ShardCheck | None = None, end: int | None = None, url: str = ""):
        self.fh, self.check, self.end, self.url, self.count = fh, check, end, url, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.end is not None:
            if self.count >= self.end:
                if self.fh.read(1):
                    raise ShardError(
                        self.url,
                        f"longer than the {self.end} bytes its manifest entry gives; the "
                        "rest is not read (the file changed after the build)",
                    )
                return 0
            buffer = memoryview(buffer)[: self.end - self.count]
        if hasattr(self.fh, "readinto"):  # a file: straight into the buffer, no copy
            n = self.fh.readinto(buffer)
        else:
            data = self.fh.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.count += n
        if self.check is not None:
            self.check.digest.update(memoryview(buffer)[:n])
            self.check.read_bytes += n
        return n


def buffered(fh: IO[bytes], check: ShardCheck | None, end: int | None = None, url: str = "") -> IO[bytes]:
    """``fh`` read through a ``READ_AHEAD`` buffer, hashed into ``check`` when there is one, never past ``end``."""
    return io.BufferedReader(RawReader(fh, check, end, url), READ_AHEAD)


class RecordFields(dict):
    """A record's fields that were read (field -> bytes), and in ``names`` every field the record holds, read or
    skipped: a validator compares those with the schema without reading what the caller does not need."""

    names: tuple[str, ...] = ()


def iter_records(
    path: Path | str,
    fields: Collection[str] | None = None,
    limits: Limits = Limits(),
    on_error: Callable[[ShardError], None] | None = None,
    check_images: bool = True,
    check: ShardCheck | None = None,
    inside: Path | str | None = None,
    end: int | None = None,
) -> Iterator[tuple[str, RecordFields]]:
    """Yield ``(key, {field: bytes})`` per record, in file order, grouped as webdataset does (key = the member name
    up to its first dot), from a local path or a URL (see ``open_url``; ``inside``: the build folder a local shard
    must lie in).

    Members whose field is not in ``fields`` (default: all) are skipped unread; ``RecordFields.names`` lists them
    too. Refused, before reading: a member over its bound (``limits.of``), a name with '/', '..' or no field, a
    link, folder or device, a field twice, and an image whose header declares over ``limits.pixels`` pixels or PNG
    metadata over its bound (``encode.check_header``). An oversized member is skipped and its sample dropped
    when the shard's size is known (``end``, ``check`` or a local file's) and the member fits in it; otherwise the
    rest of the shard is left unread. Raises ``ShardError`` naming the shard (and the sample key when known) on the
    first problem; with ``on_error``, a problem of one sample goes to it instead and the sample is dropped, and only
    problems of the shard itself (missing, unreadable, truncated, corrupt header, a member that cannot be skipped)
    raise. ``check_images=False`` leaves the image header check to a caller that checks every image it keeps with
    ``check_header`` (the trainer, through ``augment.contract.schema.RecordCheck``): one header parse, not two.
    With ``check`` (a :class:`ShardCheck`), every byte is hashed as it is read and the shard is read to its end;
    after the last record, a size, sha256 or record count that differs from ``check``'s raises ``ShardError``.
    ``end`` (default: ``check.bytes``) is the size the manifest gives the shard: nothing past it is read.
    """
    url = str(path)
    end = check.bytes if end is None and check is not None else end
    try:
        with open_url(url, inside) as fh:
            size = end if end is not None or is_url(url) else os.fstat(fh.fileno()).st_size
            if check is not None:
                check.reset()
            stream = buffered(fh, check, end, url)
            tar = TarStream(stream, url, size)
            yield from records(tar, url, fields, limits, on_error, check_images, check)
            if check is None:
                return
            while stream.read(1 << 20):  # the blocks after the end-of-archive marker count too
                pass
            if (problem := check.problem()) is not None:
                raise ShardError(url, problem)
    except FileNotFoundError as e:
        raise ShardError(url, "missing shard file" + because(e)) from None
    except UnsafeFile as e:
        raise ShardError(url, str(e)) from None
    except io_errors() as e:
        raise ShardError(url, f"truncated or unreadable ({type(e).__name__}: {e})") from None


def records(
    tar: TarStream,
    url: str,
    wanted: Collection[str] | None,
    limits: Limits,
    on_error: Callable[[ShardError], None] | None,
    check_images: bool = True,
    check: ShardCheck | None = None,
) -> Iterator[tuple[str, RecordFields]]:
    key: str | None = None
    fields = RecordFields()
    dropped = False

    def problem(message: str) -> None:
        nonlocal dropped
        dropped = True
        error = ShardError(url, message, key=key or None)
        if on_error is None:
            raise error
        on_error(error)

    while (member := tar.next_member()) is not None:
        name, size, kind = member
        k, _, field = name.partition(".")
        if k != key:
            if key is not None:
                if check is not None:
                    check.records += 1
                if not dropped:
                    yield key, fields
            key, fields, dropped = k, RecordFields(), False
        tar.key = k
        limit = limits.of(field)
        if size > limit and not tar.fits(size):
            raise ShardError(
                url,
                f"tar entry {name!r} declares {size} bytes, over the limit of {limit} and past the "
                "end of the shard; the rest of the shard is left unread",
                key=k or None,
            )
        if dropped:
            tar.skip(size)
        elif kind not in REGULAR:
            tar.skip(size)
            problem(f"unexpected tar entry {name!r} of type {kind!r}, expected a regular file")
        elif not good_name(name):
            tar.skip(size)
            problem(f"unexpected tar entry {name!r}; expected '<key>.<field>' without '/', '..' or control characters")
        elif field in fields.names:
            tar.skip(size)
            problem(f"field {field!r} appears twice")
        elif size > limit:  # skipped unread, the sample dropped: the rest of the shard reads on
            tar.skip(size)
            problem(f"field {field!r} holds {size} bytes, over the limit of {limit}")
        elif wanted is not None and field not in wanted:
            tar.skip(size)
            fields.names += (field,)
        else:
            data = tar.read(size)
            fields.names += (field,)
            if check_images and field.rsplit(".", 1)[-1] in ("jpg", "jpeg", "png"):
                try:
                    check_header(data, limits.pixels)
                except Refused as e:  # a bomb; an image that does not even open is the decoder's finding
                    problem(f"field {field!r}: {e}")
                    continue
                except ValueError:
                    pass
            fields[field] = data
    if key is not None:
        if check is not None:
            check.records += 1
        if not dropped:
            yield key, fields


def good_name(name: str) -> bool:
    """``<key>.<field>``: both non-empty, printable, no '/' or '\\' (no folders), no '..'."""
    key, dot, field = name.partition(".")
    return bool(key and dot and field) and name.isprintable() and not any(s in name for s in ("/", "\\", ".."))


class TarStream:
    """Tar members from a forward-only stream: 512-byte headers checked by their checksum, pax and GNU long-name
    headers honoured within ``MAX_HEADER_BYTES``. Reads never exceed a size the caller accepted."""

    def __init__(self, fh: IO[bytes], url: str, size: int | None = None):
        self.fh, self.url, self.key = fh, url, None
        self.size, self.at = size, 0  # the stream's length when known, and the bytes consumed so far

    def fits(self, size: int) -> bool:
        """Whether a member of ``size`` bytes (and its padding) ends within the stream's known length: then it can
        be skipped, and the members after it read."""
        return self.size is not None and self.at + size + (-size % BLOCK) <= self.size

    def fail(self, message: str) -> ShardError:
        return ShardError(self.url, message, key=self.key or None)

    def exact(self, n: int) -> bytes:
        try:
            data = self.fh.read(n)  # buffered: all n bytes unless the stream ends
            if len(data) < n:
                data += read_up_to(self.fh, n - len(data))
        except io_errors() as e:
            raise self.fail(f"truncated or unreadable ({type(e).__name__}: {e})") from None
        if len(data) < n:
            raise self.fail("truncated: the file ends inside a tar entry or before the end-of-archive marker")
        self.at += n
        return data

    def read(self, size: int) -> bytes:
        data = self.exact(size)
        self.exact(-size % BLOCK)
        return data

    def skip(self, size: int) -> None:
        left = size + (-size % BLOCK)
        while left:
            left -= len(self.exact(min(left, 1 << 20)))

    def next_member(self) -> tuple[str, int, bytes] | None:
        """(name, size, type flag) of the next member, its data still unread; None at the end-of-archive marker."""
        name: str | None = None
        size: int | None = None
        while True:
            block = self.exact(BLOCK)
            if not block.strip(b"\0"):
                return None
            header_name, header_size, kind = parse_header(block, self)
            if kind in (b"x", b"g", b"L", b"K"):  # pax extended / global header, GNU long name / link
                if header_size > MAX_HEADER_BYTES:
                    raise self.fail(
                        f"tar header of type {kind!r} declares {header_size} bytes, over the limit of "
                        f"{MAX_HEADER_BYTES}"
                    )
                data = self.read(header_size)
                if kind == b"L":
                    name = data.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
                elif kind == b"x":
                    pax = parse_pax(data, self)
                    name = pax.get("path", name)
                    size = int(pax["size"]) if pax.get("size", "").isdigit() else size
                continue
            return (header_name if name is None else name), (header_size if size is None else size), kind


def parse_header(block: bytes, tar: TarStream) -> tuple[str, int, bytes]:
    """(name, size, type flag) of a USTAR/GNU/v7 header, after checking its checksum."""
    try:
        stored = int(block[148:156].strip(b"\0 ") or b"0", 8)
        size_field = block[124:136]
        if size_field[0] & 0x80:  # GNU base-256, for sizes over 8 GiB
            size = int.from_bytes(size_field[1:], "big")
        else:
            size = int(size_field.strip(b"\0 ") or b"0", 8)
    except ValueError:
        raise tar.fail("corrupt tar header (a number field is not octal)") from None
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])  # the checksum field counts as spaces
    if stored != unsigned and stored != sum(np.frombuffer(block[:148] + block[156:], np.int8).tolist()) + 8 * 32:
        raise tar.fail("corrupt tar header (checksum mismatch); not a tar file?")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        name = prefix + b"/" + name if prefix else name
    return name.decode("utf-8", "backslashreplace"), size, block[156:157]


def parse_pax(data: bytes, tar: TarStream) -> dict[str, str]:
    """The records of a pax header: ``<length> <key>=<value>\\n`` each."""
    out, at = {}, 0
    while at < len(data) and data[at : at + 1] != b"\0":
        length_text, _, _ = data[at : at + 20].partition(b" ")
        if not length_text.isdigit() or int(length_text) <= len(length_text) + 1:
            raise tar.fail("corrupt pax header")
        record = data[at : at + int(length_text)]
        key, _, value = record[len(length_text) + 1 :].rstrip(b"\n").partition(b"=")
        out[key.decode("utf-8", "backslashreplace")] = value.decode("utf-8", "backslashreplace")
        at += int(length_text)
    return out
