"""What the inpainting networks share: the one-line weights error, a per-process cache keyed by the file's
identity, and the batching around a network: empty holes skipped, images grouped by size and cut into batches,
the hole's own pixels blanked before the network sees them, the result pasted into the hole only."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from augment.infill import paste


class InpainterError(ValueError):
    """A weights file that cannot be used as it is; one line naming the flag, the file and what is expected."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an error's message (torch and onnxruntime write several), cut to ``limit``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_file(flag: str, path: Path, expected: str) -> None:
    """Refuse a path that is not a file, naming the flag and what it should be."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise InpainterError(f"{flag} {path}: {what}; expected {expected}")


def file_key(path: Path) -> tuple[str, int, int]:
    """The identity of a file for the caches: its resolved path, size and modification time, so that a file replaced
    in place is loaded again."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def cached(cache: dict[Hashable, Any], key: Hashable, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made once per process (build workers load a network once, not once per batch)."""
    if key not in cache:
        cache[key] = make()
    return cache[key]


def pad_bottom_right(batch: np.ndarray, multiple: int) -> np.ndarray:
    """``batch`` ([N, H, W, ...]) padded at the bottom and the right to H and W multiples of ``multiple``, by mirror
    images of the edge rows and columns, edge included (numpy's ``symmetric`` mode: ``... c b a | a b c ...``)."""
    height, width = batch.shape[1:3]
    pad = [(0, 0), (0, -height % multiple), (0, -width % multiple)] + [(0, 0)] * (batch.ndim - 3)
    return batch if not any(after for _, after in pad) else np.pad(batch, pad, mode="symmetric")


def grow(hole: np.ndarray, pixels: int) -> np.ndarray:
    """``hole`` grown by ``pixels`` in every direction, diagonals included (a square structuring element)."""
    if pixels <= 0:
        return hole
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(np.ascontiguousarray(hole).view(np.uint8), kernel).view(bool)


def blank(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """A copy of ``image`` whose hole pixels are 0: the object's pixels never reach a network, whatever it does with
    its input (the networks here mask their hole themselves, so for them this changes nothing)."""
    return paste(image, hole, 0)


RunChunk = Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]


def fill_grouped(images: list[np.ndarray], holes: list[np.ndarray], batch_size: int, run: RunChunk) -> list[np.ndarray]:
    """Each image with its hole filled by ``run`` and every pixel outside the hole unchanged, in input order.

    ``run(images, holes)`` gets at most ``batch_size`` images of one size (a build's images in one split have one
    size, but nothing relies on it) and returns each image completed at its size; images whose hole is empty are
    returned as copies without calling it."""
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (image, hole) in enumerate(zip(images, holes, strict=True)):
        if hole.any():
            groups.setdefault(image.shape, []).append(i)
        else:
            out[i] = image.copy()
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            done = run([images[i] for i in chunk], [holes[i] for i in chunk])
            for i, completed in zip(chunk, done, strict=True):
                out[i] = paste(images[i], holes[i], completed)
    return out
