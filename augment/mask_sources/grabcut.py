"""``grabcut``: OpenCV's GrabCut, started with every pixel of the sample's boxes as probable object and every other
pixel as sure background; no weights.

GrabCut fits a colour model (two Gaussian mixtures) to the object and the background and cuts the graph between
them, ``ITERATIONS`` times. Its mixtures start from k-means, which draws from OpenCV's generator: that is seeded
with the sample's own seed right before the call, so a sample's mask is the same whatever process computes it.
"""

from __future__ import annotations

import cv2
import numpy as np

from augment.mask_sources import MaskSource, Request, register

ITERATIONS = 5
MIN_PIXELS = 16  # fewer sure-background or box pixels than this, and the colour models cannot be fitted


def grabcut(image: np.ndarray, boxes: np.ndarray, seed: int) -> np.ndarray | None:
    """The object inside ``boxes`` as a bool mask, or None when GrabCut cannot run (a box over the whole image)."""
    h, w = image.shape[:2]
    labels = np.full((h, w), cv2.GC_BGD, dtype=np.uint8)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        labels[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = cv2.GC_PR_FGD
    if (labels == cv2.GC_BGD).sum() < MIN_PIXELS or (labels == cv2.GC_PR_FGD).sum() < MIN_PIXELS:
        return None
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(
            np.ascontiguousarray(image[..., ::-1]),
            labels,
            None,
            background,
            foreground,
            ITERATIONS,
            cv2.GC_INIT_WITH_MASK,
        )
    except cv2.error:  # e.g. too few distinct colours to fit the mixtures
        return None
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def produce(requests: list[Request], model: None = None) -> list[np.ndarray | None]:
    return [grabcut(r.image, r.boxes, r.seed) for r in requests]


PARAMS = {"iterations": ITERATIONS, "init": "boxes = probable object, the rest = sure background"}
register(MaskSource("grabcut", "OpenCV's GrabCut started from each box; no weights", produce, params=PARAMS))
