"""CF cagan: the object's rectangle inpainted by the Contextual Attention GAN (DeepFill v1), as in the paper.

The network, weight import and training live in :mod:`augment.cagan`; this file only plugs a loaded
:class:`~augment.cagan.inpaint.Inpainter` into the registry. The method is deterministic: the same weights on
the same device give the same bytes. The build fills a batch of images at once (``fill_with_inpainter``), and loads,
checks and records the weights (``--cagan-weights``) through :data:`MODEL`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from augment.infill import CF, ModelInfill, fill_with_inpainter, register

if TYPE_CHECKING:
    from augment.cagan.inpaint import Inpainter


def default_weights() -> Path:
    """The only file in ``cagan_weights/`` (see ``augment.cagan.weights``)."""
    from augment.cagan.weights import default_weights

    return default_weights()


def check(weights: Path) -> None:
    """A weights file that exists and loads as CAGAN weights; the error says how to get one."""
    from augment.cagan.weights import HOW_TO_GET, WeightsError, read_metadata

    if not weights.is_file():
        raise WeightsError(f"--cagan-weights {weights}: no such file; {HOW_TO_GET}")
    read_metadata(weights)


def metadata(weights: Path) -> dict[str, Any]:
    from augment.cagan.weights import read_metadata

    return read_metadata(weights)


def runner(weights: Path, device: str, batch_size: int) -> Inpainter:
    """The loaded inpainter, once per process (``augment.cagan.inpaint.cached``)."""
    from augment.cagan.inpaint import cached

    return cached(weights, device, batch_size)


MODEL = ModelInfill(
    "--infill cagan: our safetensors weights [default: the only file in cagan_weights/].",
    default_weights,
    check,
    metadata,
    runner,
)


@register(
    "cagan",
    roles=(CF,),
    stochastic=False,
    summary="CAGAN (DeepFill v1) inpainting, batched; needs weights",
    batch=fill_with_inpainter,
    model=MODEL,
)
def cagan(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, inpainter) -> np.ndarray:
    """One image: a batch of one (``rng`` is unused: the model is deterministic)."""
    return fill_with_inpainter([image], [hole], inpainter=inpainter)[0]
