"""CF lama: the object's rectangle inpainted by LaMa, from the user's local ``big-lama.pt`` (``--lama-weights``).

The loading, the pre- and post-processing and the batching live in :mod:`augment.inpainters.lama`; this file only
plugs them into the registry. There is no default file (nothing is shipped or downloaded), and loading the file
trusts it: TorchScript is a program (:mod:`augment.inpainters`, "Trust"). The method is deterministic: the same
file on the same device with the same batch size gives the same bytes (the manifest records all three).
"""

from __future__ import annotations

import numpy as np

from augment.infill import CF, fill_with_inpainter, inpainter_model, register

MODEL = inpainter_model(
    "--infill lama: a local big-lama.pt, LaMa's TorchScript release (required with it; nothing is downloaded). A "
    "TorchScript file is a program: load only one you trust (docs/infills.md).",
    "augment.inpainters.lama",
)


@register(
    "lama",
    roles=(CF,),
    stochastic=False,
    summary="LaMa inpainting (a local big-lama.pt, TorchScript), batched; needs --lama-weights",
    batch=fill_with_inpainter,
    model=MODEL,
)
def lama(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, *, inpainter) -> np.ndarray:
    """One image: a batch of one (``rng`` is unused: the model is deterministic)."""
    return fill_with_inpainter([image], [hole], inpainter=inpainter)[0]
