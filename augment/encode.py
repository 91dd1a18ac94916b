"""Encode and decode the images of a shard ourselves, with fixed settings, so equal pixels give equal bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 0  # 4:4:4: textures in small images keep their colour edges
PNG_COMPRESS_LEVEL = 6


def encode_jpeg(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG bytes (quality 90, 4:4:4, no EXIF, no optimisation pass)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """bool [H, W] -> 8-bit greyscale PNG, 255 = object, 0 = background."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3] RGB; raises on a corrupt or truncated image."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes -> bool [H, W], True = object (any non-zero value)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("L")) > 0
