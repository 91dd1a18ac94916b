"""The read stage on awkward files: every PIL mode, EXIF rotation, truncation, bombs, masks and boxes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.read import (
    SourceError,
    check_boxes,
    read_image,
    read_mask,
    read_soft_mask,
    soft_object,
    transpose_boxes,
    upright_boxes,
)


def save(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_missing_truncated_and_non_image_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope.jpg: missing image file"):
        read_image(tmp_path / "nope.jpg")
    good = save(tmp_path / "good.jpg", Image.fromarray(np.full((64, 64, 3), 120, np.uint8)), quality=90)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(SourceError, match=r"cut.jpg: corrupt or truncated image"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(SourceError, match=r"notes.png: not an image file PIL can read"):
        read_image(tmp_path / "notes.png")


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("L", (90, 90, 90)),
        ("P", (200, 10, 30)),
        ("CMYK", None),
        ("RGBA", (200, 10, 30)),
        ("I;16", (128, 128, 128)),
    ],
)
def test_every_mode_becomes_rgb(tmp_path: Path, mode: str, expected) -> None:
    if mode == "L":
        img = Image.new("L", (8, 6), 90)
    elif mode == "P":
        img = Image.new("RGB", (8, 6), (200, 10, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
        img.info["transparency"] = 0  # a palette image with a transparent index, converted without warnings
    elif mode == "CMYK":
        img = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    elif mode == "RGBA":
        img = Image.new("RGBA", (8, 6), (200, 10, 30, 40))
    else:
        img = Image.fromarray(np.full((6, 8), 32896, np.uint16))  # 16-bit: 32896 / 257 = 128
    path = save(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"), img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Palette images with Transparency expressed in bytes should be ..."
        decoded = read_image(path)
    assert decoded.image.shape == (6, 8, 3) and decoded.image.dtype == np.uint8
    if expected is None:
        r, g, b = decoded.image[3, 4].astype(int)
        assert r > 200 and g < 60 and b < 60  # CMYK red stays red
    else:
        assert tuple(decoded.image[3, 4]) == expected


def rotated_jpeg(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 40x20 (W x H) pixel array with a red block at x 30..38, y 2..8, stored with EXIF orientation 6."""
    raw = np.full((20, 40, 3), 100, np.uint8)
    raw[2:8, 30:38] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(raw).save(path, quality=95, exif=exif.tobytes())
    raw_mask = np.zeros((20, 40), np.uint8)
    raw_mask[2:8, 30:38] = 255
    return path, raw_mask


def test_exif_rotation_keeps_masks_and_boxes_on_the_object(tmp_path: Path) -> None:
    path, raw_mask = rotated_jpeg(tmp_path)
    decoded = read_image(path)
    assert decoded.size == (20, 40) and decoded.raw_size == (40, 20)
    red = (decoded.image[..., 0] > 200) & (decoded.image[..., 1] < 60)
    Image.fromarray(raw_mask).save(tmp_path / "raw_mask.png")  # annotated on the raw pixel array
    Image.fromarray(red.astype(np.uint8) * 255).save(tmp_path / "upright_mask.png")  # annotated upright
    for name in ("raw_mask.png", "upright_mask.png"):
        mask = read_mask(tmp_path / name, decoded)
        assert mask.shape == (40, 20) and (mask == red).mean() > 0.99, name
    truth = read_mask(tmp_path / "raw_mask.png", decoded)
    raw_box = np.array([[30, 2, 38, 8]])  # on the raw array, declared 40x20: turned with the image
    boxes, space = upright_boxes(raw_box, (40, 20), decoded)
    x0, y0, x1, y1 = boxes[0].astype(int)
    assert space == (20, 40) and truth[y0:y1, x0:x1].all() and truth.sum() == (x1 - x0) * (y1 - y0)
    same, space = upright_boxes(boxes, (20, 40), decoded)  # declared upright: left alone
    np.testing.assert_array_equal(same, boxes)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_box_transpose_matches_pil_for_every_orientation(orientation: int) -> None:
    from augment.read import _TRANSPOSE

    mask = np.zeros((5, 7), np.uint8)
    mask[1:3, 4:6] = 1
    turned = np.asarray(Image.fromarray(mask).transpose(_TRANSPOSE[orientation])) if orientation > 1 else mask
    (x0, y0, x1, y1) = transpose_boxes(np.array([[4, 1, 6, 3]]), orientation, (7, 5))[0].astype(int)
    assert turned[y0:y1, x0:x1].all() and turned.sum() == (x1 - x0) * (y1 - y0)


def test_decompression_bombs_are_refused_with_the_way_out(tmp_path: Path) -> None:
    path = save(tmp_path / "big.png", Image.new("RGB", (40, 30)))
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(SourceError, match=r"big.png: refused as a possible decompression bomb .*--max-image-pixels"):
        read_image(path, max_pixels=500)  # 1200 pixels: over twice the limit (PIL's error)
    with pytest.raises(SourceError, match="decompression bomb"):
        read_image(path, max_pixels=1000)  # between 1x and 2x: PIL only warns; we refuse too
    assert read_image(path, max_pixels=1200).size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == limit  # the process-wide limit is restored


def test_npy_masks_never_unpickle(tmp_path: Path) -> None:
    decoded = read_image(save(tmp_path / "x.png", Image.new("RGB", (4, 3))))
    np.save(tmp_path / "ok.npy", np.eye(3, 4, dtype=bool))
    assert read_mask(tmp_path / "ok.npy", decoded).sum() == 3
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="evil.npy: unreadable mask"):
        read_mask(tmp_path / "evil.npy", decoded)


def test_soft_masks_keep_at_least_half_their_maximum() -> None:
    row = np.array([[0, 40, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(soft_object(row), [[False, False, False, True, True]])  # 2 * value >= 255
    deep = np.array([[0, 1, 499, 500, 1000]], np.uint16)  # 16-bit: the mask's own maximum, not 255
    np.testing.assert_array_equal(soft_object(deep), [[False, False, False, True, True]])
    for binary in (np.array([[0, 1, 1]]), np.array([[0, 255, 255]], np.uint8), np.array([[False, True, True]])):
        np.testing.assert_array_equal(soft_object(binary), binary != 0)  # binary masks: non-zero, as before
    assert not soft_object(np.zeros((2, 3), np.uint8)).any()  # an empty mask stays empty (then a bad input)


def test_soft_mask_files_give_object_and_extent_on_the_upright_image(tmp_path: Path) -> None:
    path, raw_mask = rotated_jpeg(tmp_path)
    decoded = read_image(path)
    soft = raw_mask // 255 * 200  # a 200 core with a rim of 60 around it, drawn on the raw pixel array
    soft[1:9, 29:39][soft[1:9, 29:39] == 0] = 60
    Image.fromarray(soft).save(tmp_path / "soft.png")
    whole, extent = read_soft_mask(tmp_path / "soft.png", decoded)
    Image.fromarray(raw_mask).save(tmp_path / "core.png")
    Image.fromarray((soft > 0).astype(np.uint8)).save(tmp_path / "extent.png")
    np.testing.assert_array_equal(whole, read_mask(tmp_path / "core.png", decoded))  # turned like the image
    np.testing.assert_array_equal(extent, read_mask(tmp_path / "extent.png", decoded))
    assert whole.shape == (40, 20) and extent.sum() == 80 and whole.sum() == 48


def test_check_boxes_clips_what_sticks_out_and_refuses_the_rest() -> None:
    np.testing.assert_array_equal(check_boxes("f", np.array([[-5, 2, 50, 8]]), (40, 30)), [[0, 2, 40, 8]])
    for box, message in (
        ([np.nan, 1, 2, 3], "not a number"),
        ([5, 5, 5, 9], "negative or zero size"),
        ([45, 1, 60, 9], "lies outside the 40x30 image"),
    ):
        with pytest.raises(SourceError, match=message):
            check_boxes("f", np.array([box]), (40, 30))
