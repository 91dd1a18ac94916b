"""The read stage for file-backed datasets: decode, orient, convert, validate and resize one source sample.

Every problem with a source file raises ``SourceError``, which names the file and what was expected; with
``--on-error skip`` the build records it in ``rejects.jsonl`` instead of stopping. Any other exception is a bug.

Orientation: images are turned upright by their EXIF orientation, and annotations are taken to be on the upright
image (what annotation tools display). The exception is an annotation made on the raw pixel array of a rotated
image: a mask, or the image size an annotation file declares for its boxes, that matches the raw shape and not the
upright one is turned the same way, so masks and boxes stay on the object. (Mirror and 180-degree orientations
keep the shape, so there the upright convention is assumed.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's decompression-bomb limit
RESIZE_MODES = ("squash", "short")  # squash to S x S, or short side to S keeping the aspect ratio

# EXIF orientation -> the PIL transpose that makes the image upright (as ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class SourceError(Exception):
    """A bad source file or annotation; the message names the file and what was expected."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class Decoded:
    """An upright RGB image plus what is needed to bring annotations onto it."""

    def __init__(self, image: np.ndarray, raw_size: tuple[int, int], orientation: int, max_pixels: int):
        self.image = image  # uint8 [H, W, 3], upright
        self.raw_size = raw_size  # (W, H) of the pixel array as stored in the file
        self.orientation = orientation  # EXIF orientation, 1 = none
        self.max_pixels = max_pixels  # the decompression-bomb limit in force, for the files read with this one

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 RGB. Alpha is dropped; 16/32-bit greyscale is scaled from 0..65535 to 0..255."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.rint(np.clip(np.asarray(img), 0, 255)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # a palette with transparency must go through RGBA
    return np.asarray(img.convert("RGB"))


def read_text(path: Path) -> str:
    """A CSV or JSON file as text: UTF-8, with or without a byte-order mark; other encodings name the file."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); save it as UTF-8") from None


@contextmanager
def opened(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """``Image.open`` under a decompression-bomb limit of ``max_pixels`` (PIL's warning zone refused too)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SourceError(
            path,
            f"refused as a possible decompression bomb ({e}); if you trust the file, raise the limit with "
            "--max-image-pixels N (PIL.Image.MAX_IMAGE_PIXELS)",
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Decoded:
    """Decode an image file upright as RGB, refusing files over ``max_pixels`` (decompression bombs)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(path, "missing image file")
    try:
        with opened(path, max_pixels) as img:
            raw_size = img.size
            orientation = int(img.getexif().get(0x0112, 1) or 1)
            img.load()
            upright = ImageOps.exif_transpose(img) if orientation in _TRANSPOSE else img
            return Decoded(to_rgb(upright), raw_size, orientation, max_pixels)
    except UnidentifiedImageError:
        raise SourceError(path, "not an image file PIL can read (expected JPEG, PNG, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SourceError(path, f"corrupt or truncated image ({e})") from None


def fit_mask(path: Path | str, mask: np.ndarray, decoded: Decoded, rescale: bool = False) -> np.ndarray:
    """A mask on the upright image.

    As is when it has the upright size; turned like the image when it was drawn on the raw (pre-EXIF) pixel array
    (its shape matches the raw aspect, not the upright one); and, with ``rescale``, resized when it was drawn at
    another resolution (e.g. a JSON's full-size annotations). Otherwise its size is an error.
    """
    h, w = mask.shape
    if (w, h) == decoded.size:
        return mask
    raw_w, raw_h = decoded.raw_size
    turned = decoded.orientation in (5, 6, 7, 8) and abs(w / h - raw_w / raw_h) < abs(w / h - raw_h / raw_w)
    exact_raw = (w, h) == decoded.raw_size and decoded.orientation in _TRANSPOSE
    if exact_raw or (rescale and turned):
        mask = np.asarray(Image.fromarray(mask).transpose(_TRANSPOSE[decoded.orientation]))
        h, w = mask.shape
    if (w, h) == decoded.size:
        return mask
    if rescale:
        return np.asarray(Image.fromarray(mask).resize(decoded.size, Image.Resampling.NEAREST))
    raise SourceError(path, f"mask is {w}x{h}, expected the image's size {decoded.size[0]}x{decoded.size[1]}")


def read_greyscale(path: Path, max_pixels: int) -> np.ndarray:
    """A mask image's values (16-bit kept as is), under the same decompression-bomb limit as the images."""
    with opened(path, max_pixels) as img:
        return np.asarray(img.convert("L") if img.mode not in ("L", "I;16", "I") else img)


SOFT_MASK_RULE = (  # the manifest's statement of ``soft_object`` and ``read_soft_mask``
    "object = value >= half the mask's maximum (2 * value >= max, on the file's values, before resizing); "
    "CF rectangle around every non-zero pixel"
)


def soft_object(values: np.ndarray) -> np.ndarray:
    """The object of a soft (greyscale, anti-aliased) mask: the pixels with ``value > 0 and 2 * value >= max``.

    ``max`` is the mask's own maximum and ``values`` are the file's values before any resizing, so the rule holds
    for 0..1, 0..255 and 16-bit masks alike, and a binary mask (0 and one other value) gives exactly its non-zero
    pixels. Why: the soft rim of a segmentation (CUB-200-2011's, where annotators disagree) is mostly background;
    counting it as object would keep a ring of the original background in F images and in the stored mask.
    The rim still belongs to the CF rectangle (``read_soft_mask`` returns it as the extent). See ``SOFT_MASK_RULE``.
    """
    values = np.asarray(values, dtype=np.float64)  # exact for 8-, 16- and 32-bit masks; 2 * value cannot overflow
    return (values > 0) & (2 * values >= values.max(initial=0))


def read_mask_values(path: Path, decoded: Decoded) -> np.ndarray:
    """A mask file's values, 2-D, as stored: an image's grey levels (16-bit kept), or a ``.npy`` array (one with
    channels as 1 where any channel is non-zero, 0 elsewhere)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(path, "missing mask file")
    try:
        if path.suffix.lower() != ".npy":
            return read_greyscale(path, decoded.max_pixels)
        array = np.load(path, allow_pickle=False)  # never unpickle a file from a dataset
        if array.ndim == 3:
            array = (array != 0).any(axis=-1 if array.shape[-1] in (1, 3, 4) else 0)
        if array.ndim != 2:
            raise SourceError(path, f"mask array has shape {array.shape}, expected [H, W] or [H, W, C]")
        return array
    except SourceError:
        raise
    except (OSError, ValueError, UnidentifiedImageError) as e:
        raise SourceError(path, f"unreadable mask ({e})") from None


def mask_on_image(path: Path, mask: np.ndarray, decoded: Decoded) -> np.ndarray:
    """A bool mask at the file's resolution -> a bool mask on the upright image (see ``fit_mask``)."""
    return fit_mask(path, np.asarray(mask, dtype=np.uint8), decoded).astype(bool)


def read_mask(path: Path, decoded: Decoded) -> np.ndarray:
    """A mask file (PNG or other image: non-zero = object; ``.npy``: non-zero in any channel) on the upright image."""
    return mask_on_image(path, read_mask_values(path, decoded) != 0, decoded)


def read_soft_mask(path: Path, decoded: Decoded) -> tuple[np.ndarray, np.ndarray]:
    """A soft mask file on the upright image: ``(object, extent)``.

    ``object`` follows ``soft_object`` (at least half the mask's maximum); ``extent`` is every non-zero pixel, soft
    rim included, which the CF rectangle must span so that the counterfactual removes the whole object.
    """
    values = read_mask_values(path, decoded)
    return mask_on_image(path, soft_object(values), decoded), mask_on_image(path, values != 0, decoded)


def upright_boxes(boxes: np.ndarray, declared: tuple[int, int] | None, decoded: Decoded) -> tuple[np.ndarray, tuple]:
    """Boxes and the (W, H) they refer to, brought onto the upright image's orientation.

    ``declared`` is the size an annotation file states for the image (None: the upright image's own size). When it
    matches the raw pixel array's aspect and not the upright one, the boxes are turned with the image.
    """
    if declared is None:
        return boxes, decoded.size
    w, h = declared
    upright_aspect, raw_aspect = decoded.size[0] / decoded.size[1], decoded.raw_size[0] / decoded.raw_size[1]
    turned = decoded.orientation in _TRANSPOSE and abs(w / h - raw_aspect) < abs(w / h - upright_aspect) - 1e-6
    if not turned:
        return boxes, declared
    return transpose_boxes(boxes, decoded.orientation, (w, h)), _turned_size((w, h), decoded.orientation)


def _turned_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def transpose_boxes(boxes: np.ndarray, orientation: int, size: tuple[int, int]) -> np.ndarray:
    """Boxes ``[x0, y0, x1, y1]`` on a W x H image -> on the image turned upright by EXIF ``orientation``."""
    w, h = size
    x0, y0, x1, y1 = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T).copy()
    out = {
        1: (x0, y0, x1, y1),
        2: (w - x1, y0, w - x0, y1),  # mirror left-right
        3: (w - x1, h - y1, w - x0, h - y0),  # rotate 180
        4: (x0, h - y1, x1, h - y0),  # mirror top-bottom
        5: (y0, x0, y1, x1),  # transpose
        6: (h - y1, x0, h - y0, x1),  # rotate 90 clockwise (PIL ROTATE_270)
        7: (h - y1, w - x1, h - y0, w - x0),  # transverse
        8: (y0, w - x1, y1, w - x0),  # rotate 90 counter-clockwise (PIL ROTATE_90)
    }[orientation]
    return np.stack(out, axis=1)


def check_boxes(path: Path | str, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Validate boxes ``[x0, y0, x1, y1]`` on a W x H image; clip the ones that stick out, reject the rest."""
    w, h = size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for box in boxes:
        shown = "[" + ", ".join(f"{v:g}" for v in box) + "]"
        if not np.isfinite(box).all():
            raise SourceError(path, f"box {shown} is not a number (NaN or infinite)")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise SourceError(path, f"box {shown} has negative or zero size; expected x0 < x1 and y0 < y1")
        if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
            raise SourceError(path, f"box {shown} lies outside the {w}x{h} image")
    return np.clip(boxes, 0, [w, h, w, h])


def target_size(size: tuple[int, int], image_size: int, mode: str) -> tuple[int, int]:
    """The stored (W, H): ``squash`` to S x S, or ``short`` side to S with the aspect ratio kept."""
    if mode == "squash":
        return image_size, image_size
    w, h = size
    scale = image_size / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def resize(
    image: np.ndarray,
    mask: np.ndarray | None,
    boxes: np.ndarray | None,
    box_space: tuple[int, int],
    out_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Resize the image (bilinear), the mask (nearest) and the boxes (outward-rounded) to ``out_size`` (W, H).

    ``box_space`` is the (W, H) the boxes are expressed in, e.g. a JSON's full-resolution size.
    """
    w, h = out_size
    if (image.shape[1], image.shape[0]) != out_size:
        image = np.asarray(Image.fromarray(image).resize(out_size, Image.Resampling.BILINEAR))
    if mask is not None and mask.shape != (h, w):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(out_size, Image.Resampling.NEAREST)) > 0
    if boxes is not None and len(boxes):
        sx, sy = w / box_space[0], h / box_space[1]
        scaled = np.asarray(boxes, dtype=np.float64) * [sx, sy, sx, sy]
        boxes = np.stack(
            [
                np.floor(scaled[:, 0] + 1e-6),
                np.floor(scaled[:, 1] + 1e-6),
                np.ceil(scaled[:, 2] - 1e-6),
                np.ceil(scaled[:, 3] - 1e-6),
            ],
            axis=1,
        ).astype(np.int64)
        boxes = np.clip(boxes, 0, [w, h, w, h])
    return image, mask, boxes
