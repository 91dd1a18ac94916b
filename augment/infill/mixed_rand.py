"""F mixed-rand: the object on the background of a donor image of a different class.

The donor's own object rectangle is first filled by ``tile``, so no second object leaks into the result.
The build picks the donor (seeded, among the samples of the same split with another label) and passes it as
``donor``; a donor of another size is resized to the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from augment.infill import F, check_inputs, paste, register, tile


@dataclass(frozen=True)
class Donor:
    """A donor image and its CF hole (its object rectangle, which tile fills before the background is used)."""

    image: np.ndarray
    hole: np.ndarray


@register(
    "mixed-rand",
    roles=(F,),
    stochastic=True,
    needs_donor=True,
    summary="the background of a random image of another class (its object tiled over)",
)
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, donor: Donor) -> np.ndarray:
    """Replace the hole (the background) with the donor's object-free background."""
    check_inputs(image, hole)
    check_inputs(donor.image, donor.hole)
    background = tile.fill(donor.image, donor.hole, rng)
    if background.shape != image.shape:
        background = cv2.resize(background, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
    return paste(image, hole, background)
