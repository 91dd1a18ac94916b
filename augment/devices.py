"""Where the build's models run (CAGAN, the SAM and CAM mask sources): ``--device``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when there is one, else CPU; asking for CUDA without one is an error."""
    import torch  # deferred: the CLI's options and checks load without it

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device here; use --device cpu (or auto)")
    return torch.device(device)
