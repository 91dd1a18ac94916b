"""The one way both stages write a file that others read: to a temp name beside it, then an atomic rename.

A reader (a resumed build, ``augment verify``, ``train eval``, another process of the build) sees the old file or
the new one, never half a file; a crash leaves at most the temp file (named ``*.tmp``, which a resumed build
clears), never a truncated file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
