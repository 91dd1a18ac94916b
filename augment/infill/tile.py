"""CF tile: the largest background strip of the image, tiled over the hole (docs/METHOD.md, Infills).

A row is *background* when none of its pixels is in the hole; likewise a column. The longest run of
background rows (an h x W strip) competes with the longest run of background columns (an H x w strip):
the row strip wins when h >= w. The strip is repeated from the top-left corner to cover H x W, cropped,
and pasted into the hole. With no background row or column the hole becomes grey. Ties between runs of
equal length go to the first (top-most / left-most) run. Everything is decided per image.
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, bounds, check_inputs, grey, paste_block, register


def longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(start, length) of the first longest run of True in a 1-D bool array; (0, 0) when there is none."""
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))  # alternating run starts and (exclusive) ends
    if edges.size == 0:
        return 0, 0
    starts, ends = edges[0::2], edges[1::2]
    best = int(np.argmax(ends - starts))  # argmax returns the first maximum: ties go to the first run
    return int(starts[best]), int(ends[best] - starts[best])


@register("tile", roles=(CF,), stochastic=False, summary="the largest background strip, tiled over the rectangle")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with the tiled largest background strip; grey when there is no background row or column.

    The tiling is computed only over the hole's bounding rectangle (and the rows or columns before it): row ``y``
    of the tiled image is row ``row0 + y mod h`` of the image (column ``x``: ``col0 + x mod w``): the strip
    repeated from the top-left corner, read only where the hole is."""
    check_inputs(image, hole)
    rows_hit, cols_hit = hole.any(axis=1), hole.any(axis=0)
    rect = bounds(hole, rows_hit, cols_hit)
    if rect is None:
        return image.copy()
    (row0, h), (col0, w) = longest_run(~rows_hit), longest_run(~cols_hit)
    if h == 0 and w == 0:
        return grey.fill(image, hole, rng)
    ys, xs = rect
    # np.tile of the strip's part in the rectangle, then a slice: block copies, where gathering columns by index
    # copies pixel by pixel
    if h >= w:
        block = np.tile(image[row0 : row0 + h, xs], (-(-ys.stop // h), 1, 1))[ys]
    else:
        block = np.tile(image[ys, col0 : col0 + w], (1, -(-xs.stop // w), 1))[:, xs]
    return paste_block(image, hole, rect, block)
