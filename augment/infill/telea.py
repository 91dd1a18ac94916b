"""CF telea: the hole inpainted by Telea's fast marching method (OpenCV's ``cv2.inpaint``, ``INPAINT_TELEA``).

Each hole pixel, taken from the border inwards, becomes a weighted mean of the known pixels within ``RADIUS`` of it
(nearer pixels, and pixels along the image's level lines, weigh more), so the colours and edges around the hole are
carried into it. No weights, deterministic, a few milliseconds per image. On a large hole the border is smeared
inwards into a blur of streaks: there ``tile`` keeps real texture (docs/METHOD.md, Infills).
"""

from __future__ import annotations

import cv2
import numpy as np

from augment.infill import CF, check_inputs, grey, paste, register

RADIUS = 3  # px around each pixel whose known neighbours it averages (OpenCV's own example uses 3)


@register("telea", roles=(CF,), stochastic=False, summary="OpenCV's Telea inpainting of the rectangle; no weights")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inpaint the hole with Telea's method; pixels outside it are returned unchanged. ``rng`` is unused."""
    check_inputs(image, hole)
    if not hole.any():
        return image.copy()
    if hole.all():  # nothing known to inpaint from
        return grey.fill(image, hole, rng)
    filled = cv2.inpaint(np.ascontiguousarray(image), hole.view(np.uint8), RADIUS, cv2.INPAINT_TELEA)
    return paste(image, hole, filled)
