"""CF/F random: one uniform colour per image and channel plus per-pixel Gaussian noise (sigma 0.2 on [0, 1]).

Each stored value is ``round(255 * clip(c + N(0, 0.2), 0, 1))``. OpenCV draws it directly in uint8 (``cv2.randn``
saturates and rounds, which is that clip and round), over the hole's bounding rectangle only, seeded from the
sample's generator just before the draw: about 3x faster than NumPy's normals followed by the clip, the rounding and
a scatter into the hole.
"""

from __future__ import annotations

import cv2
import numpy as np

from augment.infill import CF, F, bounds, check_inputs, paste_block, register

SIGMA = 0.2


@register("random", roles=(CF, F), stochastic=True, summary="a random colour plus Gaussian noise (sigma 0.2)")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with ``clip(c + N(0, 0.2), 0, 1)``, ``c ~ U(0, 1)`` per channel, on the [0, 1] scale."""
    check_inputs(image, hole)
    colour = rng.uniform(0.0, 1.0, size=3)
    seed = int(rng.integers(2**31))
    rect = bounds(hole)
    if rect is None:
        return image.copy()
    ys, xs = rect
    block = np.empty((ys.stop - ys.start, xs.stop - xs.start, 3), dtype=np.uint8)
    cv2.setRNGSeed(seed)  # OpenCV's generator of this thread, seeded per sample: the draw depends on nothing else
    cv2.randn(block, tuple(255.0 * colour), (255.0 * SIGMA,) * 3)
    return paste_block(image, hole, rect, block)
