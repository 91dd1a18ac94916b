"""CF/F shuffle: values drawn from the split's value pool (``augment.pool``), over all channels and positions.

The fill keeps the marginal value distribution of many images of the split and destroys all structure, as the
paper's batch-wide permutation does: most of a hole's values come from other images, so an image's own colour
histogram (on photographs, mostly its background's) does not survive into its F image. ``shuffle-image`` is the
per-image variant, for ablations.
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, F, check_inputs, register, scatter
from augment.pool import ValuePool

SUMMARY = "values drawn from a pool of 64 images of the split (the paper's batch-wide permutation)"


@register("shuffle", roles=(CF, F), stochastic=True, needs_pool=True, summary=SUMMARY)
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, pool: ValuePool) -> np.ndarray:
    """Fill the hole's 3n values with draws from ``pool``."""
    check_inputs(image, hole)
    n = int(hole.sum())
    return scatter(image, hole, pool.draw(3 * n, rng).reshape(n, 3))
