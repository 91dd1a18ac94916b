"""Encode and decode the images of a shard ourselves, with fixed settings, so equal pixels give equal bytes."""

from __future__ import annotations

import io
import warnings
import zlib

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
# What a PNG's text and ICC profile chunks may hold, decompressed, all together: PIL refuses one chunk over 1 MiB
# (PngImagePlugin.MAX_TEXT_CHUNK) where TorchCodec's libpng reads on, so a PNG within it opens in both
PNG_TEXT_BYTES = 1 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COMPRESSED = (b"zTXt", b"iCCP", b"iTXt")  # chunks whose payload is zlib-compressed (iTXt: when flagged)


class Refused(ValueError):
    """An image refused before any pixel is decoded: it declares more pixels than the reader accepts, or its PNG
    metadata would decompress past ``PNG_TEXT_BYTES`` (what a decompression bomb looks like)."""


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A lazily decoded JPEG or PNG: its header is read and its declared size checked against ``max_pixels`` before
    any pixel is decoded (shards may come from strangers). Raises ValueError for a bomb, PIL's OSError for anything
    else that is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower bound follows
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise Refused(f"image refused as a decompression bomb ({e})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise Refused(f"image declares {w} x {h} pixels, over the limit of {max_pixels}; refused before decoding")
    return img


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, mode: str = "RGB") -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3] RGB (``mode="L"``: [H, W]), the declared size checked before decoding;
    raises on a corrupt or truncated image."""
    with open_image(data, max_pixels) as img:
        return np.asarray(img.convert(mode))


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers: the size


def declared_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) that a JPEG or PNG declares in its header, read without decoding (a few markers);
    ValueError for anything else or a header cut short. PIL reads the same fields when it opens a file."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return "PNG", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG or PNG image (expected one of them in a shard)")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError(f"corrupt JPEG header: no marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in JPEG_SOF and at + 9 <= len(data):
            return "JPEG", int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        if marker == 0xDA or length < 2:  # image data before any frame header, or a bad segment
            break
        at += 2 + length
    raise ValueError("corrupt JPEG header: no frame header (SOF) before the image data")


def check_size(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """The image's format, after checking its declared size against ``max_pixels`` and, for a PNG, its metadata
    chunks against ``PNG_TEXT_BYTES`` (before any pixel is decoded). ``Refused`` for either bound, ValueError for
    bytes that are no JPEG or PNG header."""
    return check_header(data, max_pixels)[0]


def check_header(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) that the image declares, checked as :func:`check_size` says. One rule for every
    reader of a shard (``augment verify``, ``preview``, the trainer): an image refused here is refused by all."""
    kind, w, h = declared_size(data)
    if w * h > max_pixels:
        raise Refused(f"image declares {w} x {h} pixels, over the limit of {max_pixels}; refused before decoding")
    if w == 0 or h == 0:
        raise ValueError(f"image declares {w} x {h} pixels; expected a non-empty image")
    if kind == "PNG":
        check_png_metadata(data)
    return kind, w, h


def check_png_metadata(data: bytes) -> None:
    """Walk a PNG's chunks (lengths only, pixel data untouched) and decompress its compressed text and ICC chunks
    up to ``PNG_TEXT_BYTES`` in all: ``Refused`` past it. A chunk list cut short is left to the decoder."""
    at, budget = len(PNG_SIGNATURE), PNG_TEXT_BYTES
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IEND" or len(body) < length:
            return
        if kind == b"tEXt":
            budget -= len(body)
        elif kind in PNG_COMPRESSED:
            name, _, rest = body.partition(b"\0")
            if kind == b"iTXt":  # flag, method, language\0, translated keyword\0, text
                flag, rest = rest[:1], rest[2:]
                rest = rest.split(b"\0", 2)[-1]
                if flag != b"\1":
                    budget -= len(rest)
                    rest = b""
            else:
                rest = rest[1:]  # the compression method byte
            if rest:
                inflater = zlib.decompressobj()
                try:
                    budget -= len(inflater.decompress(rest, max(budget, 0) + 1))
                except zlib.error:
                    pass  # PIL skips a chunk that does not inflate, libpng warns: neither refuses the image
        if budget < 0:
            raise Refused(
                f"PNG {kind.decode('latin-1')!r} metadata decompresses to over {PNG_TEXT_BYTES} bytes of "
                "text; refused before decoding"
            )
        at += 12 + length


def decode_mask(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """PNG bytes -> bool [H, W], True = object (any non-zero value)."""
    return decode_image(data, max_pixels, "L") > 0
