"""The quality gate every produced mask passes, or its sample falls back to its boxes.

With boxes, a mask must lie mostly inside them and cover a sane share of them: a mask that spills far out of its
box took background for the object, one that covers a sliver found only a part of it, and one that fills the box
is the box itself. Without boxes (``cam`` on a dataset of labels only) the mask's share of the image is bounded
instead: a heatmap that lights up nearly everything or nearly nothing has not found an object.
"""

from __future__ import annotations

import numpy as np

from augment import masks

GATE = {
    "inside_min": 0.9,  # share of the mask's pixels inside the union of the boxes
    "box_cover_min": 0.1,  # share of the boxes' pixels the mask covers ...
    "box_cover_max": 0.95,  # ... at most: a mask that fills its box is no better than the box
    "image_cover_min": 0.02,  # without boxes: share of the image the mask covers
    "image_cover_max": 0.8,
}


def gate(mask: np.ndarray | None, boxes: np.ndarray | None, shape: tuple[int, int]) -> str | None:
    """None when ``mask`` passes, else why it does not (recorded in the sample's JSON as ``mask_gate``)."""
    if mask is None or not mask.any():
        return "empty mask"
    if mask.shape != tuple(shape):
        return f"mask of shape {mask.shape}, expected {tuple(shape)}"
    area = int(mask.sum())
    if boxes is None:
        share = area / mask.size
        if not GATE["image_cover_min"] <= share <= GATE["image_cover_max"]:
            return f"covers {share:.2f} of the image, outside [{GATE['image_cover_min']}, {GATE['image_cover_max']}]"
        return None
    box = masks.boxes_to_mask(boxes, shape)
    inside = int((mask & box).sum())
    if inside / area < GATE["inside_min"]:
        return f"{inside / area:.2f} of the mask lies inside its box, below {GATE['inside_min']}"
    cover = inside / max(int(box.sum()), 1)
    if not GATE["box_cover_min"] <= cover <= GATE["box_cover_max"]:
        return f"covers {cover:.2f} of its box, outside [{GATE['box_cover_min']}, {GATE['box_cover_max']}]"
    return None
