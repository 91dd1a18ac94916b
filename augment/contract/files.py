"""A build's files, written and opened safely: the one way both stages write a file that others read, and the one
way they open a build's local files (manifest, shards, journal) that may come from someone else.

Writing goes to a temp name beside the file, then an atomic rename. A reader (a resumed build, ``augment verify``,
``train eval``, another process of the build) sees the old file or the new one, never half a file; a crash leaves at
most the temp file (named ``*.tmp``, which a resumed build clears), never a truncated file under the final name.

Opening refuses what is not a regular file (a FIFO would block, ``/dev/zero`` never ends) and, inside a build
folder, a link out of it. URLs and tar members are ``augment.contract.shards``'.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


def temp_name(path: Path, unique: bool = False) -> Path:
    """``<path>.tmp``, or ``<path>.<pid>.tmp`` (``unique``) where several processes may write the same file."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp" if unique else f"{path.name}.tmp")


def write_atomic(
    path: Path, write: Callable[[Path], T], *, tmp: Path | None = None, fsync: bool = False, unique: bool = False
) -> T:
    """Call ``write(tmp)`` to write the temp file (``tmp``, default :func:`temp_name`), then rename it to ``path``
    and return what ``write`` returned. ``fsync``: flush the temp file to disk first, so that the rename never
    publishes a file whose bytes are still in flight. If ``write`` fails, the temp file is removed."""
    path = Path(path)
    tmp = temp_name(path, unique) if tmp is None else tmp
    try:
        result = write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return result


def write_text_atomic(path: Path, text: str, *, fsync: bool = False, unique: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`write_atomic`); returns ``path``."""
    write_atomic(path, lambda tmp: tmp.write_text(text), fsync=fsync, unique=unique)
    return Path(path)


class UnsafeFile(ValueError):
    """A path a reader refuses to open: not a regular file, or a link out of the folder it must stay in."""


FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def open_regular(path: Path | str, inside: Path | str | None = None) -> IO[bytes]:
    """``path`` opened for reading, only when it is a regular file: a FIFO would block the reader and a device such
    as ``/dev/zero`` never ends. With ``inside`` (a build folder), only when its real path, links resolved, lies in
    that folder. Raises ``UnsafeFile`` (a ValueError) saying which, FileNotFoundError or OSError."""
    path = Path(path)
    if inside is not None:
        try:
            real, root = path.resolve(), Path(inside).resolve()
        except (OSError, RuntimeError) as e:  # a loop of links
            raise UnsafeFile(f"cannot resolve its links ({e})") from None
        if not real.is_relative_to(root):
            raise UnsafeFile(
                f"a link to {real}, outside the build folder {root}; a build's files must lie inside it (copy them in)"
            )
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))  # no wait for a FIFO's writer
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise UnsafeFile(f"{kind}, not a regular file; expected the file itself")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_up_to(fh: IO[bytes], n: int) -> bytes:
    """``n`` bytes, or fewer at the end of the stream (streams may return short reads)."""
    parts, left = [], n
    while left > 0:
        part = fh.read(min(left, 1 << 20))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_small(path: Path | str, limit: int, inside: Path | str | None = None) -> bytes:
    """The whole regular file at ``path`` (see :func:`open_regular`), refused by its size before reading when over
    ``limit`` bytes, and after reading when it grew meanwhile."""
    with open_regular(path, inside) as fh:
        if (size := os.fstat(fh.fileno()).st_size) > limit:
            raise ValueError(f"{path}: {size} bytes, over the limit of {limit}; expected a small file")
        data = read_up_to(fh, limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: over the limit of {limit} bytes; expected a small file")
    return data
