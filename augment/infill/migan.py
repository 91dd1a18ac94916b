"""CF migan: the object's rectangle inpainted by MI-GAN's ONNX pipeline (``migan_pipeline_v2.onnx``), or any ONNX
inpainter of the same signature, from the user's local file (``--migan-weights``), run by ONNX Runtime.

The session, the signature check, the pre- and post-processing and the batching live in
:mod:`augment.inpainters.migan`; this file only plugs them into the registry. There is no default file (nothing is
shipped or downloaded). The method is deterministic: the same file on the same device with the same batch size
gives the same bytes (the manifest records all three).
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, fill_with_inpainter, inpainter_model, register

MODEL = inpainter_model(
    "--infill migan: a local migan_pipeline_v2.onnx, MI-GAN's ONNX pipeline, or any ONNX inpainter of its signature "
    "(required with it; nothing is downloaded; docs/infills.md).",
    "augment.inpainters.migan",
)


@register(
    "migan",
    roles=(CF,),
    stochastic=False,
    summary="MI-GAN inpainting (a local ONNX pipeline, onnxruntime); needs --migan-weights",
    batch=fill_with_inpainter,
    model=MODEL,
)
def migan(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, inpainter) -> np.ndarray:
    """One image: a batch of one (``rng`` is unused: the pipeline draws no noise)."""
    return fill_with_inpainter([image], [hole], inpainter=inpainter)[0]
