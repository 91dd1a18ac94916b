"""LaMa (Suvorov et al., WACV 2022) from the TorchScript file ``big-lama.pt``, LaMa as distributed for inference and
as the common LaMa tools load it: ``module(image, mask) -> image``.

What the network gets and what is done with its output, as in LaMa's reference code (advimman/lama:
``saicinpainting/evaluation/data.py`` and ``bin/predict.py``) and the tools that load ``big-lama.pt``:

- ``image``: float32 [N, 3, H, W], RGB in [0, 1] (uint8 / 255); the hole's own pixels are set to 0 first
  (``common.blank``), which changes nothing for ``big-lama.pt``: it multiplies its input by ``1 - mask`` itself;
- ``mask``: float32 [N, 1, H, W], binarised, 1 = hole (the reference's ``mask > 0``); not dilated;
- both padded at the bottom and the right to H and W multiples of 8, by numpy's ``symmetric`` mode (the
  reference's ``pad_img_to_modulo``; its torch variant reflects);
- the output, float [N, 3, H', W'] in [0, 1], is cropped back to H x W, times 255, clipped to [0, 255] and rounded
  half to even to uint8 (``bin/predict.py`` truncates with ``astype('uint8')``: ours is at most one level above);
- pasted into the hole only: every pixel outside the hole is the input's, bit for bit.

Not done: the reference's optional refinement (``refine=True``), which needs the training checkpoint, not
``big-lama.pt``.

Loading trusts the file: it is a program (see :mod:`augment.inpainters`, "Trust"). It is loaded with
``torch.jit.load(path, map_location=device)`` and run under ``torch.inference_mode()`` with TorchScript's graph
optimizations off (``torch.jit.optimized_execution(False)``), so that every call runs the same operators: the
profiling executor may fuse operators after its first calls, which on a GPU can change the last bits between the
batches of one build.

Determinism: on the CPU the same file, images and batch size give the same bytes, run after run (a different batch
size may move a rounding in a real network's convolutions). GPU kernels may differ from the CPU's in the last bit;
the manifest records the device and the batch size with the file's sha256.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from augment.infill import to_uint8, weights_flag
from augment.inpainters.common import (
    InpainterError,
    blank,
    cached,
    file_key,
    fill_grouped,
    one_line,
    pad_bottom_right,
    require_file,
)

if TYPE_CHECKING:
    import torch

FLAG = weights_flag("lama")
EXPECTED = "big-lama.pt, LaMa's TorchScript release: forward(Tensor image, Tensor mask) -> Tensor"
MULTIPLE = 8  # H and W of the network's input: LaMa's pad_out_to_modulo

_DESCRIBED: dict[Any, dict[str, Any]] = {}
_RUNNERS: dict[Any, LamaInpainter] = {}


def required() -> Path:
    """There is no default file: nothing is shipped or downloaded."""
    raise InpainterError(
        f"{FLAG}: required for --infill lama: a local big-lama.pt (LaMa's TorchScript release, the file the common "
        "LaMa tools load); nothing is shipped or downloaded"
    )


def signature(module: torch.jit.ScriptModule) -> str:
    """The module's ``forward``, as ``forward(Tensor image, Tensor mask) -> Tensor`` (without ``self``)."""
    schema = module.forward.schema
    arguments = ", ".join(f"{a.type} {a.name}" for a in schema.arguments[1:])
    return f"forward({arguments}) -> {', '.join(str(r.type) for r in schema.returns)}"


def load(path: Path, device: torch.device | str) -> torch.jit.ScriptModule:
    """The TorchScript module in ``path`` on ``device``, in eval mode; refused in one line naming the flag when the
    file is missing, is not TorchScript, or its ``forward`` does not take (image, mask) and return one tensor."""
    import torch

    require_file(FLAG, path, EXPECTED)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14, not gone; LaMa ships as one
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # torch raises RuntimeError, ValueError or others for a file that is not TorchScript
        raise InpainterError(f"{FLAG} {path}: not a TorchScript file ({one_line(e)}); expected {EXPECTED}") from e
    try:
        schema = module.forward.schema
    except (AttributeError, RuntimeError) as e:
        raise InpainterError(f"{FLAG} {path}: the TorchScript module has no forward; expected {EXPECTED}") from e
    required_args = [a for a in schema.arguments[1:] if not a.has_default_value()]
    takes_two = len(required_args) == 2 and all(str(a.type) == "Tensor" for a in required_args)
    if not takes_two or [str(r.type) for r in schema.returns] != ["Tensor"]:
        raise InpainterError(f"{FLAG} {path}: found {signature(module)}; expected {EXPECTED}")
    return module.eval()


def describe(path: Path) -> dict[str, Any]:
    """What the manifest records of the file besides path, sha256 and device; loading it (on the CPU) is the check.
    Once per file per process."""

    def make() -> dict[str, Any]:
        import torch

        forward = signature(load(path, "cpu"))
        return {
            "kind": "torchscript",
            "source": f"TorchScript {forward}",
            "forward": forward,
            "pad_to_multiple": MULTIPLE,
            "torch": torch.__version__,
        }

    require_file(FLAG, path, EXPECTED)
    return cached(_DESCRIBED, file_key(path), make)


class LamaInpainter:
    """A loaded LaMa module and how to run it: device and batch size. ``inpainter(images, holes)`` fills each hole
    (uint8 RGB [H, W, 3] images, bool holes) and leaves every other pixel as it was."""

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device, batch_size: int) -> None:
        self.module, self.device, self.batch_size = module, device, batch_size

    def __call__(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        return fill_grouped(images, holes, self.batch_size, self.complete)

    def complete(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        """The network's completed images (same size, no padding) for a batch of images of one size."""
        import torch

        height, width = holes[0].shape
        x = pad_bottom_right(np.stack([blank(i, h) for i, h in zip(images, holes, strict=True)]), MULTIPLE)
        m = pad_bottom_right(np.stack(holes), MULTIPLE)
        with torch.jit.optimized_execution(False), torch.inference_mode():
            image = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float() / 255
            mask = torch.from_numpy(m).to(self.device).unsqueeze(1).float()
            out = self.module(image, mask)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(image.shape):
                found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise InpainterError(
                    f"{FLAG}: the network returned {found} for an input of {tuple(image.shape)}; expected a tensor "
                    "of the input's shape [N, 3, H, W]"
                )
            scaled = (out[:, :, :height, :width].float() * 255).permute(0, 2, 3, 1).cpu().numpy()
        return [to_uint8(np.ascontiguousarray(s)) for s in scaled]


def runner(weights: Path, device: str, batch_size: int) -> LamaInpainter:
    """The loaded inpainter, once per (file, device, batch size) per process."""
    from augment.contract.zoo.devices import resolve_device

    def make() -> LamaInpainter:
        dev = resolve_device(device)
        return LamaInpainter(load(weights, dev), dev, batch_size)

    require_file(FLAG, weights, EXPECTED)
    return cached(_RUNNERS, (file_key(weights), device, batch_size), make)
