"""CF/F shuffle-image: a random permutation of the image's own values, over all channels and positions.

The per-image variant of ``shuffle``, kept for ablations: it keeps the image's own colour histogram, which on
photographs is mostly the background's, so F(shuffle-image) leaves a colour cue that F(shuffle) removes. The
permutation is of the whole image's values (object included); only its hole pixels are pasted.
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, F, check_inputs, register, scatter


@register(
    "shuffle-image",
    roles=(CF, F),
    stochastic=True,
    summary="a random permutation of the image's own values (keeps its colour histogram)",
)
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the hole with the hole pixels of a randomly permuted copy of the image."""
    check_inputs(image, hole)
    values = image.reshape(-1)
    n = 3 * int(hole.sum())
    # The hole's values of a random permutation are a uniform draw of n values without replacement, in random
    # order: `choice` draws exactly that without permuting the values that would be thrown away.
    return scatter(image, hole, values[rng.choice(values.size, size=n, replace=False)].reshape(-1, 3))
