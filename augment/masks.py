"""From a sample's annotation (object mask and/or boxes) to the two holes of the method.

The hole convention is stated once, in ``augment/infill/__init__.py``: ``hole == True`` means "replace this pixel".

- ``cf_hole``: the bounding rectangle of the object: the union of its boxes, or the rectangle around the
  segmentation. The exact outline would leak the object's shape into the counterfactual.
- ``f_hole``: the background, i.e. everything outside the exact segmentation when there is one, else outside
  the union of the boxes.

Boxes are ``[x0, y0, x1, y1]`` in pixels of the stored image, with exclusive ``x1``/``y1``.
"""

from __future__ import annotations

import numpy as np


def boxes_to_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The union of ``boxes`` (clipped to the image) as a bool [H, W] mask."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return mask


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """The bounding rectangle ``[x0, y0, x1, y1]`` of a non-empty bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_to_box: the mask is empty")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.int64)


def object_mask(mask: np.ndarray | None, boxes: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The exact object region: the segmentation when there is one, else the union of boxes, else None."""
    if mask is not None:
        return mask.astype(bool)
    if boxes is not None and len(boxes):
        return boxes_to_mask(boxes, shape)
    return None


def cf_hole(mask: np.ndarray | None, boxes: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The CF hole: the union of the boxes, else the rectangle around the segmentation; None without either."""
    if boxes is not None and len(boxes):
        hole = boxes_to_mask(boxes, shape)
    elif mask is not None and mask.any():
        hole = boxes_to_mask(mask_to_box(mask), shape)
    else:
        return None
    return hole if hole.any() else None


def f_hole(mask: np.ndarray | None, boxes: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The F hole: the background, everything outside the exact object region; None without one."""
    region = object_mask(mask, boxes, shape)
    if region is None or not region.any():
        return None
    return ~region
