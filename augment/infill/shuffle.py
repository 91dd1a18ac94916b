"""CF/F shuffle: a random permutation of the image's own values, over all channels and positions.

The fill keeps the image's marginal value distribution and destroys its structure. The permutation is of the
whole image (object included), as SPEC.md section 2 states; only its hole pixels are pasted.
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, F, check_inputs, paste, register


@register("shuffle", roles=(CF, F), stochastic=True, summary="a random permutation of the image's own pixel values")
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with the hole pixels of a randomly permuted copy of the image."""
    check_inputs(image, hole)
    permuted = rng.permutation(image.reshape(-1)).reshape(image.shape)
    return paste(image, hole, permuted[hole])
