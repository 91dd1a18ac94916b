"""Where models run: the one resolver of ``--device`` for both stages (augment's CAGAN and SAM/CAM mask sources,
``train fit`` and ``train eval``). It needs no other module of the project (tests/test_layout.py checks it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")  # augment build --device; train takes cuda:N too (CHOICES)
CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cpu``; ``cuda`` or ``cuda:N``, checked to exist here. Anything else
    (``tpu``, torch's other backends, which neither stage supports) is refused naming the choices. Errors are
    ValueErrors naming ``--device``, for the CLIs to print as usage errors."""
    import torch  # deferred: the CLIs' options and checks load without it

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"--device: got {name!r}, expected {CHOICES}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        fix = f"cuda:0 to cuda:{count - 1}" if count else "use --device cpu (or auto)"
        raise ValueError(f"--device {name}: no such CUDA device here ({count} visible); {fix}")
    return device
