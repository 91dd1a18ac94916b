"""CF grey: the hole becomes mid-grey, 0.5 on [0, 1] (128 in uint8, 0 after (x - 0.5) / 0.5 normalisation)."""

from __future__ import annotations

import numpy as np

from augment.infill import CF, check_inputs, paste, register

GREY = 128  # round(0.5 * 255); the model sees ~0.004 after normalisation


@register("grey", roles=(CF,), stochastic=False, summary="mid-grey (0.5) in the object rectangle")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with mid-grey; ``rng`` is unused (the method is deterministic)."""
    check_inputs(image, hole)
    return paste(image, hole, GREY)
