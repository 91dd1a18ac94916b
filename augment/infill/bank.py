"""F bank: the object on a real background drawn from a bank of backgrounds (``augment build --backgrounds``).

The build draws the background (``augment.backgrounds``: a photo of the user's folder, or one of the dataset's
object-free images) and where to crop it, with the sample's generator, and passes both as ``background``; this
function only fits and pastes, so the same draw gives the same bytes. The resize rule (:func:`cover_size`): the
background is scaled, keeping its aspect ratio, to the smallest size that covers the image, and the image's size is
cut out of it at the drawn offset. The object keeps its pixels, position and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from augment.infill import F, check_inputs, paste, register

RESIZE_RULE = (
    "scaled keeping its aspect ratio to the smallest size that covers the image (cv2 INTER_AREA when shrinking, "
    "INTER_LINEAR when enlarging), then cropped to the image's size at a uniformly drawn offset; the object keeps "
    "its pixels, position and scale"
)


@dataclass(frozen=True)
class Background:
    """A drawn background (uint8 RGB, any size) and the (x, y) offset of the crop in its scaled copy."""

    image: np.ndarray
    offset: tuple[int, int]


def cover_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The (W, H) to which a background of ``size`` (W, H) is scaled to cover ``target`` (W, H): one side equals the
    target's, the other is the aspect-kept length rounded to the nearest pixel, and never shorter than the target's."""
    (w, h), (tw, th) = size, target
    if w * th >= tw * h:  # the background is the wider: heights match
        return max(tw, (w * th + h // 2) // h), th
    return tw, max(th, (h * tw + w // 2) // w)


def fit(background: Background, shape: tuple[int, int]) -> np.ndarray:
    """The background scaled to cover an image of ``shape`` (H, W) and cropped to it at its offset."""
    h, w = shape
    image = background.image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"background: got {image.dtype} {image.shape}, expected uint8 [H, W, 3]")
    sw, sh = cover_size((image.shape[1], image.shape[0]), (w, h))
    x, y = background.offset
    if not (0 <= x <= sw - w and 0 <= y <= sh - h):
        raise ValueError(f"background offset {background.offset}: expected within (0..{sw - w}, 0..{sh - h})")
    if (sw, sh) != (image.shape[1], image.shape[0]):
        shrink = sw <= image.shape[1] and sh <= image.shape[0]
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return image[y : y + h, x : x + w]


@register(
    "bank",
    roles=(F,),
    stochastic=True,
    needs_background=True,
    summary="a background from a bank (--backgrounds: a folder of photos, or the dataset's empty frames)",
)
def fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, background: Background) -> np.ndarray:
    """Replace the hole (the background) with the drawn background, fitted to the image; ``rng`` is unused (the
    randomness is the draw, made by the build and recorded in the sample's json)."""
    check_inputs(image, hole)
    return paste(image, hole, fit(background, hole.shape))
