"""CF/F random: one uniform colour per image and channel plus per-pixel Gaussian noise (sigma 0.2 on [0, 1])."""

from __future__ import annotations

import numpy as np

from augment.infill import CF, F, check_inputs, paste, register

SIGMA = 0.2


@register("random", roles=(CF, F), stochastic=True, summary="a random colour plus Gaussian noise (sigma 0.2)")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with ``clip(c + N(0, 0.2), 0, 1)``, ``c ~ U(0, 1)`` per channel, on the [0, 1] scale."""
    check_inputs(image, hole)
    colour = rng.uniform(0.0, 1.0, size=3)
    n = int(hole.sum())
    values = np.clip(colour + rng.normal(0.0, SIGMA, size=(n, 3)), 0.0, 1.0)
    return paste(image, hole, np.rint(values * 255.0).astype(np.uint8))
