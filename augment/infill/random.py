"""CF/F random: one uniform colour per image and channel plus per-pixel Gaussian noise (sigma 0.2 on [0, 1])."""

from __future__ import annotations

import cv2
import numpy as np

from augment.infill import CF, F, check_inputs, register, scatter, to_uint8

SIGMA = 0.2


@register("random", roles=(CF, F), stochastic=True, summary="a random colour plus Gaussian noise (sigma 0.2)")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with ``clip(c + N(0, 0.2), 0, 1)``, ``c ~ U(0, 1)`` per channel, on the [0, 1] scale."""
    check_inputs(image, hole)
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    values = rng.standard_normal((int(hole.sum()), 3), dtype=np.float32)  # float32: half the cost of float64
    if values.size == 0:
        return image.copy()
    values *= SIGMA
    # + colour on a (n, 3) array broadcasts a 3-long inner loop, much slower in NumPy than OpenCV's per-channel
    # scalar add on the same values seen as a 3-channel image (docs/benchmarks.md, section 2); both add in float32,
    # so the sums are the same.
    cv2.add(values.reshape(-1, 1, 3), tuple(float(c) for c in colour) + (0.0,), dst=values.reshape(-1, 1, 3))
    values *= 255.0  # clip to [0, 1] then * 255 is the same as * 255 then the saturating cast in to_uint8
    return scatter(image, hole, to_uint8(values))
