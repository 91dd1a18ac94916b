"""Batched CAGAN inference on uint8 RGB images: resize in, inpaint, resize out, paste into the hole only.

Each image (any size) is resized to the model's square working size (the ``size`` stored with the weights, 256
for the official model), its hole grown to every model pixel the hole touches, inpainted in batches, resized
back and pasted into the hole at the stored resolution: pixels outside the hole are never changed.

The RGB <-> BGR swap of the official weights happens here and nowhere else (:func:`to_model`, :func:`from_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from augment.cagan.net import Generator
from augment.contract.zoo.devices import resolve_device
from augment.infill import paste


def to_model(images: list[np.ndarray], holes: list[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB images and bool holes -> model input: [N, 3, size, size] BGR in [-1, 1] and [N, 1, size, size]."""
    xs, ms = [], []
    for image, hole in zip(images, holes, strict=True):
        h, w = hole.shape
        down = size < h or size < w
        resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
        if (h, w) == (size, size):
            cover = hole
        elif down:  # any model pixel that overlaps a hole pixel is hole: area averaging, then > 0
            cover = cv2.resize(hole.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0
        else:  # upsampling: every model pixel that bilinear interpolation draws from a hole pixel, grown by one
            # so that interpolating back never reads outside the fill
            touched = cv2.resize(hole.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) > 0
            near = cv2.resize(hole.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
            cover = cv2.dilate((touched | near).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        xs.append(resized[..., ::-1])  # RGB -> BGR: the official weights' order
        ms.append(cover)
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    m = torch.from_numpy(np.stack(ms)).unsqueeze(1).float()
    return x, m


def from_model(output: torch.Tensor) -> list[np.ndarray]:
    """[N, 3, S, S] BGR in [-1, 1] -> uint8 RGB images."""
    arr = ((output.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a[..., ::-1]) for a in arr]


@dataclass
class Inpainter:
    """A loaded generator plus how to run it: device, working size, batch size, AMP (CUDA only)."""

    model: Generator
    size: int = 256
    batch_size: int = 16
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = True

    def __post_init__(self) -> None:
        if self.size % 8:
            raise ValueError(f"CAGAN working size: got {self.size}, expected a multiple of 8")
        # channels_last: oneDNN and cuDNN run these convolutions faster in NHWC than in NCHW
        self.model = self.model.to(self.device, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def raw(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        """The model's completed images at the working size (hole filled, rest as resized input), in batches."""
        out = []
        for start in range(0, len(images), self.batch_size):
            x, m = to_model(images[start : start + self.batch_size], holes[start : start + self.batch_size], self.size)
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            m = m.to(self.device).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp and self.device.type == "cuda"):
                _, refined = self.model(x, m)
            out.extend(from_model(refined.float() * m + x * (1 - m)))
        return out

    def __call__(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        """Inpaint each image's hole; outside the hole every pixel is returned unchanged."""
        results = []
        for image, hole, done in zip(images, holes, self.raw(images, holes), strict=True):
            h, w = hole.shape
            up = cv2.resize(done, (w, h), interpolation=cv2.INTER_AREA if h < self.size else cv2.INTER_LINEAR)
            results.append(paste(image, hole, up))
        return results


_CACHE: dict[tuple[str, str, int], Inpainter] = {}


def cached(weights: Path, device: str = "auto", batch_size: int = 16) -> Inpainter:
    """One inpainter per (weights, device, batch size) per process: build workers load the weights once."""
    from augment.cagan.weights import load

    key = (str(Path(weights).resolve()), device, batch_size)
    if key not in _CACHE:
        dev = resolve_device(device)
        model, meta = load(Path(weights), dev)
        _CACHE[key] = Inpainter(model, size=int(meta.get("size", 256)), batch_size=batch_size, device=dev)
    return _CACHE[key]
