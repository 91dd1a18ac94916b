"""Encode and decode the images of a shard ourselves, with fixed settings, so equal pixels give equal bytes."""

from __future__ import annotations

import io
import warnings

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


MAX_PIXELS = 40_000_000  # any image, declared width x height (PIL's own bomb limit is 89 M)
IMAGE_FORMATS = ("JPEG", "PNG")  # all a shard stores


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A lazily decoded JPEG or PNG: its header is read and its declared size checked against ``max_pixels`` before
    any pixel is decoded (shards may come from strangers). Raises ValueError for a bomb, PIL's OSError for anything
    else that is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower bound follows
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise ValueError(f"image refused as a decompression bomb ({e})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ValueError(f"image declares {w} x {h} pixels, over the limit of {max_pixels}; refused before decoding")
    return img


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, mode: str = "RGB") -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3] RGB (``mode="L"``: [H, W]), the declared size checked before decoding;
    raises on a corrupt or truncated image."""
    with open_image(data, max_pixels) as img:
        return np.asarray(img.convert(mode))


def decode_mask(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """PNG bytes -> bool [H, W], True = object (any non-zero value)."""
    return decode_image(data, max_pixels, "L") > 0
