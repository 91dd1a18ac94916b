"""CF lama: the object's rectangle inpainted by LaMa, from the user's local ``big-lama.pt`` (``--lama-weights``).

The loading, the pre- and post-processing and the batching live in :mod:`augment.inpainters.lama`; this file only
plugs them into the registry. There is no default file (nothing is shipped or downloaded), and loading the file
trusts it: TorchScript is a program (:mod:`augment.inpainters`, "Trust"). The method is deterministic: the same
file on the same device with the same batch size gives the same bytes (the manifest records all three).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from augment.infill import CF, ModelInfill, check_inputs, register


def default_weights() -> Path:
    """None: ``--lama-weights`` is required (one-line error)."""
    from augment.inpainters.lama import required

    return required()


def check(weights: Path) -> None:
    """A file that loads as TorchScript with ``forward(image, mask)``; the error names ``--lama-weights``."""
    from augment.inpainters.lama import describe

    describe(weights)


def metadata(weights: Path) -> dict[str, Any]:
    from augment.inpainters.lama import describe

    return describe(weights)


def runner(weights: Path, device: str, batch_size: int) -> Any:
    """The loaded inpainter, once per process."""
    from augment.inpainters.lama import runner as load

    return load(weights, device, batch_size)


MODEL = ModelInfill("lama_weights", default_weights, check, metadata, runner)


def fill_batch(images: list[np.ndarray], holes: list[np.ndarray], *, inpainter) -> list[np.ndarray]:
    """Inpaint every image's hole, batched over images of one size (see ``augment.inpainters.lama``)."""
    for image, hole in zip(images, holes, strict=True):
        check_inputs(image, hole)
    return inpainter(images, holes)


@register(
    "lama",
    roles=(CF,),
    stochastic=False,
    summary="LaMa inpainting (a local big-lama.pt, TorchScript), batched; needs --lama-weights",
    batch=fill_batch,
    model=MODEL,
)
def lama(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, inpainter) -> np.ndarray:
    """One image: ``fill_batch`` of a batch of one (``rng`` is unused: the model is deterministic)."""
    return fill_batch([image], [hole], inpainter=inpainter)[0]
