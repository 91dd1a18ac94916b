"""CF migan: the object's rectangle inpainted by MI-GAN's ONNX pipeline (``migan_pipeline_v2.onnx``), or any ONNX
inpainter of the same signature, from the user's local file (``--migan-weights``), run by ONNX Runtime.

The session, the signature check, the pre- and post-processing and the batching live in
:mod:`augment.inpainters.migan`; this file only plugs them into the registry. There is no default file (nothing is
shipped or downloaded). The method is deterministic: the same file on the same device with the same batch size
gives the same bytes (the manifest records all three).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from augment.infill import CF, ModelInfill, check_inputs, register


def default_weights() -> Path:
    """None: ``--migan-weights`` is required (one-line error)."""
    from augment.inpainters.migan import required

    return required()


def check(weights: Path) -> None:
    """A file that onnxruntime loads, of the expected signature; the error names ``--migan-weights``."""
    from augment.inpainters.migan import describe

    describe(weights)


def metadata(weights: Path) -> dict[str, Any]:
    from augment.inpainters.migan import describe

    return describe(weights)


def runner(weights: Path, device: str, batch_size: int) -> Any:
    """The session, once per process."""
    from augment.inpainters.migan import runner as load

    return load(weights, device, batch_size)


MODEL = ModelInfill("migan_weights", default_weights, check, metadata, runner)


def fill_batch(images: list[np.ndarray], holes: list[np.ndarray], *, inpainter) -> list[np.ndarray]:
    """Inpaint every image's hole, batched where the file allows it (see ``augment.inpainters.migan``)."""
    for image, hole in zip(images, holes, strict=True):
        check_inputs(image, hole)
    return inpainter(images, holes)


@register(
    "migan",
    roles=(CF,),
    stochastic=False,
    summary="MI-GAN inpainting (a local ONNX pipeline, onnxruntime); needs --migan-weights",
    batch=fill_batch,
    model=MODEL,
)
def migan(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, inpainter) -> np.ndarray:
    """One image: ``fill_batch`` of a batch of one (``rng`` is unused: the pipeline draws no noise)."""
    return fill_batch([image], [hole], inpainter=inpainter)[0]
