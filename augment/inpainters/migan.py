"""MI-GAN (Sargsyan et al., ICCV 2023) from its exported ONNX pipeline ``migan_pipeline_v2.onnx``, run by ONNX
Runtime; any ONNX inpainter with the same signature works the same way:

- two inputs, taken by position (names differ between exports): ``image`` uint8 [N, 3, H, W], RGB, and ``mask``
  uint8 [N, 1, H, W], 255 = known (keep), 0 = hole;
- one output: uint8 [N, 3, H, W], the completed image;
- N, H and W dynamic, or N fixed to 1 (then one image per call); a file with another signature is refused in one
  line naming what was found and what is expected.

The facts come from MI-GAN's official export script (Picsart-AI-Research/MI-GAN, ``scripts/create_onnx_pipeline.py``,
which writes the pipeline the authors publish as ``migan_pipeline_v2.onnx``): its ``read_mask`` makes the mask
binary (every value below 255 becomes 0, hole); the pipeline crops a square window around the hole (the hole's
bounding box plus 128 pixels a side, at least 512, within the image), resizes it to 512 (bilinear image, nearest
mask), runs the generator, resizes the result back and composes ``image * m + result * (1 - m)`` in the window,
where ``m`` is the known mask max-pooled over 3 x 3 and blurred by a 5 x 5 Gaussian (sigma 1). That blend reaches
3 pixels into its hole, so the hole we pass is ours grown by :data:`BLEND` = 3 pixels (a square element): every
pixel of our hole is then the generator's, with nothing of what was there, and the grown ring, which the blend
touches, is discarded when the result is pasted into our hole only. The hole's own pixels are also set to 0 before
the file sees them (``common.blank``; the pipeline multiplies its input by the mask itself).

Batches: the pipeline's ``forward`` is written for one image (its docstring says (1, 3, H, W); it squeezes the
batch dimension away to find its window), although the export declares the batch dimension dynamic. So a file
whose batch dimension is dynamic is first run on a fixed probe (two small seeded images, together and one by one,
the same in every process); it is run batched over ``--batch-size`` only when the two give the same bytes, else
one image per call, as is a file whose batch dimension is fixed to 1.

Session: ``onnxruntime.InferenceSession(path, providers=...)`` with the ``CUDAExecutionProvider`` when ``--device``
resolves to CUDA and the installed onnxruntime has it (the ``onnxruntime`` wheel this project installs is the CPU
build: ``pip install onnxruntime-gpu`` for it), else the ``CPUExecutionProvider``; ``use_deterministic_compute``
on; no custom-operator library is ever registered (see :mod:`augment.inpainters`, "Trust"). Nothing is seeded: the
pipeline draws no noise. On the CPU the thread count was measured not to change the bytes (a four-layer
convolution network, 1, 2 and the default number of threads, batched and one image at a time, on onnxruntime
1.32), so onnxruntime keeps its default; GPU kernels may differ from the CPU's in the last bit, and the manifest
records the device and the batch size with the file's sha256.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from augment.infill import weights_flag
from augment.inpainters.common import (
    InpainterError,
    blank,
    cached,
    file_key,
    fill_grouped,
    grow,
    one_line,
    require_file,
)

if TYPE_CHECKING:
    import onnxruntime
    import torch

FLAG = weights_flag("migan")
SIGNATURE = (
    "two inputs, image uint8 [N, 3, H, W] (RGB) and mask uint8 [N, 1, H, W] (255 = keep, 0 = hole), and one output "
    "uint8 [N, 3, H, W]"
)
EXPECTED = f"migan_pipeline_v2.onnx (MI-GAN's ONNX pipeline) or another ONNX inpainter with {SIGNATURE}"
BLEND = 3  # pixels the pipeline's own blend reaches into its hole: 3 x 3 max-pool (1) + 5 x 5 Gaussian (2)
KEEP, HOLE = 255, 0
PROBE_SIZE = (40, 48)  # the probe's image size where the file leaves H and W dynamic

_DESCRIBED: dict[Any, dict[str, Any]] = {}
_RUNNERS: dict[Any, OnnxInpainter] = {}


def required() -> Path:
    """There is no default file: nothing is shipped or downloaded."""
    raise InpainterError(
        f"{FLAG}: required for --infill migan: a local migan_pipeline_v2.onnx (MI-GAN's ONNX pipeline, from the "
        "authors' release) or another ONNX inpainter of the same signature; nothing is shipped or downloaded"
    )


@dataclass(frozen=True)
class Signature:
    """The file's inputs and output, by position, and its fixed sizes (None: dynamic)."""

    image: str
    mask: str
    batch: int | None
    height: int | None
    width: int | None


def _dims(shape: list | None) -> list:
    return list(shape) if shape is not None else []


def _text(args: list) -> str:
    def dim(d: Any) -> str:
        return "?" if d is None else str(d)

    return ", ".join(
        f"{a.name} {a.type.removeprefix('tensor(').rstrip(')')} [{', '.join(map(dim, _dims(a.shape)))}]" for a in args
    )


def read_signature(path: Path, session: onnxruntime.InferenceSession) -> Signature:
    """The file's signature, or a one-line refusal naming what was found and what is expected."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found = f"{FLAG} {path}: found inputs {_text(inputs)}; outputs {_text(outputs)}; expected {SIGNATURE}"

    def fits(arg: Any, channels: int) -> bool:
        dims = _dims(arg.shape)
        return arg.type == "tensor(uint8)" and len(dims) == 4 and (not isinstance(dims[1], int) or dims[1] == channels)

    if not (
        len(inputs) == 2 and len(outputs) == 1 and fits(inputs[0], 3) and fits(inputs[1], 1) and fits(outputs[0], 3)
    ):
        raise InpainterError(found)
    fixed = {d for a in inputs for d in _dims(a.shape)[:1] if isinstance(d, int)}
    if fixed - {1}:
        raise InpainterError(f"{found} (batch dimension fixed to {max(fixed)}; expected 1 or dynamic)")
    sizes = [[d if isinstance(d, int) else None for d in _dims(a.shape)[2:]] for a in inputs]
    height = sizes[0][0] if sizes[0][0] is not None else sizes[1][0]
    width = sizes[0][1] if sizes[0][1] is not None else sizes[1][1]
    return Signature(inputs[0].name, inputs[1].name, 1 if fixed else None, height, width)


def providers(device: torch.device | None) -> list:
    """CUDA when ``device`` is a CUDA device and the installed onnxruntime has it; else the CPU."""
    import onnxruntime as ort

    if device is not None and device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        warnings.warn(
            f"--infill migan: this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu); "
            f"running on the CPU instead of {device}",
            stacklevel=2,
        )
    return ["CPUExecutionProvider"]


def open_session(path: Path, device: torch.device | None = None) -> tuple[onnxruntime.InferenceSession, Signature]:
    """An ONNX Runtime session of the file and its signature; refused in one line naming the flag when the file is
    missing, is not ONNX that onnxruntime loads, or has another signature."""
    import onnxruntime as ort

    require_file(FLAG, path, EXPECTED)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the fallback warnings are ours
    options.use_deterministic_compute = True
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers(device))
    except Exception as e:  # onnxruntime's errors derive from Exception only (InvalidProtobuf, Fail, ...)
        raise InpainterError(
            f"{FLAG} {path}: not an ONNX file onnxruntime loads ({one_line(e)}); expected {EXPECTED}"
        ) from e
    if device is not None and device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        warnings.warn(
            f"--infill migan: onnxruntime could not start CUDA; running on the CPU instead of {device}", stacklevel=2
        )
    return session, read_signature(path, session)


def describe(path: Path) -> dict[str, Any]:
    """What the manifest records of the file besides path, sha256 and device; building a session (on the CPU) and
    reading its signature is the check. Once per file per process."""

    def make() -> dict[str, Any]:
        import onnxruntime as ort

        session, _ = open_session(path)

        def args(items: list) -> list[dict[str, Any]]:
            return [{"name": a.name, "type": a.type, "shape": _dims(a.shape)} for a in items]

        meta = session.get_modelmeta()
        return {
            "kind": "onnx",
            "source": f"ONNX by {meta.producer_name or 'an unnamed producer'}",
            "inputs": args(session.get_inputs()),
            "outputs": args(session.get_outputs()),
            "producer": meta.producer_name,
            "graph": meta.graph_name,
            "onnxruntime": ort.__version__,
            "providers_available": ort.get_available_providers(),
            "mask": "uint8, 255 = keep, 0 = hole",
            "hole_grown_by": BLEND,
        }

    require_file(FLAG, path, EXPECTED)
    return cached(_DESCRIBED, file_key(path), make)


class OnnxInpainter:
    """An ONNX Runtime session of an inpainter and how to run it. ``inpainter(images, holes)`` fills each hole
    (uint8 RGB [H, W, 3] images, bool holes) and leaves every other pixel as it was."""

    def __init__(self, session: onnxruntime.InferenceSession, signature: Signature, batch_size: int) -> None:
        self.session, self.signature, self.batch_size = session, signature, batch_size
        self.batched = signature.batch is None and batch_size > 1 and self.batches_alike()

    def __call__(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        return fill_grouped(images, holes, self.batch_size if self.batched else 1, self.complete)

    def complete(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        """The file's completed images for a batch of images of one size."""
        height, width = holes[0].shape
        sig = self.signature
        if (sig.height is not None and sig.height != height) or (sig.width is not None and sig.width != width):
            raise InpainterError(
                f"{FLAG}: the network takes {sig.height or 'any'} x {sig.width or 'any'} images only, got "
                f"{height} x {width}; choose --image-size to fit, or use a file with dynamic H and W"
            )
        x = np.stack([blank(i, h) for i, h in zip(images, holes, strict=True)]).transpose(0, 3, 1, 2)
        mask = np.stack([np.where(grow(h, BLEND), HOLE, KEEP).astype(np.uint8) for h in holes])[:, None]
        out = self.session.run(None, {sig.image: np.ascontiguousarray(x), sig.mask: mask})[0]
        if out.dtype != np.uint8 or out.shape != x.shape:
            raise InpainterError(
                f"{FLAG}: the network returned {out.dtype} {list(out.shape)} for an input of {list(x.shape)}; "
                "expected uint8 of the input's shape [N, 3, H, W]"
            )
        return list(out.transpose(0, 2, 3, 1))

    def batches_alike(self) -> bool:
        """Whether the file gives a batch the bytes it gives each image alone, on a fixed probe (the same in every
        process, so that every worker decides alike): two seeded images with different holes."""
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

        from augment.infill import paste

        height, width = self.signature.height or PROBE_SIZE[0], self.signature.width or PROBE_SIZE[1]
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
        holes = [np.zeros((height, width), bool) for _ in range(2)]
        holes[0][height // 8 : height // 2, width // 8 : width // 2] = True
        holes[1][height // 2 : height - 2, width // 3 : width - 3] = True
        try:
            together = self.complete(images, holes)
        except (Fail, InvalidArgument, RuntimeException, InpainterError):
            return False
        alone = [self.complete([image], [hole])[0] for image, hole in zip(images, holes, strict=True)]
        return all(
            paste(image, hole, a).tobytes() == paste(image, hole, b).tobytes()
            for image, hole, a, b in zip(images, holes, together, alone, strict=True)
        )


def runner(weights: Path, device: str, batch_size: int) -> OnnxInpainter:
    """The session and how to run it, once per (file, device, batch size) per process."""
    from augment.contract.zoo.devices import resolve_device

    def make() -> OnnxInpainter:
        session, signature = open_session(weights, resolve_device(device))
        return OnnxInpainter(session, signature, batch_size)

    require_file(FLAG, weights, EXPECTED)
    return cached(_RUNNERS, (file_key(weights), device, batch_size), make)
