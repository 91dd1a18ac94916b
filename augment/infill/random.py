"""CF/F random: one uniform colour per image and channel plus per-pixel Gaussian noise (sigma 0.2 on [0, 1])."""

from __future__ import annotations

import numpy as np

from augment.infill import CF, F, check_inputs, register, scatter

SIGMA = 0.2


@register("random", roles=(CF, F), stochastic=True, summary="a random colour plus Gaussian noise (sigma 0.2)")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with ``clip(c + N(0, 0.2), 0, 1)``, ``c ~ U(0, 1)`` per channel, on the [0, 1] scale."""
    check_inputs(image, hole)
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    values = rng.standard_normal((int(hole.sum()), 3), dtype=np.float32)  # float32: half the cost of float64
    values *= SIGMA
    values += colour
    np.clip(values, 0.0, 1.0, out=values)
    values *= 255.0
    np.rint(values, out=values)
    return scatter(image, hole, values.astype(np.uint8))
