"""CF cagan: the object's rectangle inpainted by the Contextual Attention GAN (DeepFill v1), as in the paper.

The network, weight import and training live in :mod:`augment.cagan`; this file only plugs a loaded
:class:`~augment.cagan.inpaint.Inpainter` into the registry. The method is deterministic: the same weights on
the same device give the same bytes. The build fills a batch of images at once through ``fill_batch``.
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, check_inputs, register


def fill_batch(images: list[np.ndarray], holes: list[np.ndarray], *, inpainter) -> list[np.ndarray]:  # noqa: ANN001
    """Inpaint every image's hole with one batched pass of the model (see ``augment.cagan.inpaint``)."""
    for image, hole in zip(images, holes, strict=True):
        check_inputs(image, hole)
    return inpainter(images, holes)


@register(
    "cagan",
    roles=(CF,),
    stochastic=False,
    summary="CAGAN (DeepFill v1) inpainting, batched; needs weights",
    batch=fill_batch,
)
def cagan(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, inpainter) -> np.ndarray:  # noqa: ANN001
    """One image: ``fill_batch`` of a batch of one (``rng`` is unused: the model is deterministic)."""
    return fill_batch([image], [hole], inpainter=inpainter)[0]
