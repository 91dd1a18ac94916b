"""The trainer's image decoding: TorchCodec's pixels are PIL's, headers are checked before decoding, and batches are
normalised once, after the workers (``train.data.prepare``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from augment.contract import encode
from augment.contract.shards import Limits
from train.data import ShardStream, prepare


def stream_decoder(image_size: int = 64):
    """ShardStream.decode_image without a build: the method only needs the stream's limits."""
    stream = ShardStream.__new__(ShardStream)
    stream.limits = Limits.for_image_size(image_size)
    return stream


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (17, 33), (1, 1)])
def test_jpeg_and_png_decode_to_pil_s_pixels_and_sizes(shape) -> None:
    from skimage import data

    h, w = shape
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((w, h)))
    jpeg, png = encode.encode_jpeg(photo), encode.encode_mask(photo[..., 0] > 100)
    assert encode.declared_size(jpeg) == ("JPEG", w, h) and encode.declared_size(png) == ("PNG", w, h)
    stream = stream_decoder()
    image = stream.decode_image(jpeg)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, h, w)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), encode.decode_image(jpeg))
    assert np.array_equal(stream.decode_image(png, "L")[0].numpy(), encode.decode_mask(png))


def test_a_progressive_jpeg_header_is_read_too() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(buf, format="JPEG", progressive=True)
    assert encode.declared_size(buf.getvalue()) == ("JPEG", 50, 30)


def test_bombs_corrupt_and_foreign_bytes_are_value_errors_naming_the_problem() -> None:
    stream = stream_decoder(8)  # at most 16 x 8^2 = 1024 pixels
    big = encode.encode_jpeg(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="declares 40 x 40 pixels, over the limit of 1024"):
        stream.decode_image(big)
    small = encode.encode_jpeg(np.full((16, 16, 3), 90, np.uint8))
    with pytest.raises(ValueError, match="corrupt or truncated JPEG"):
        stream.decode_image(small[: len(small) // 2])
    with pytest.raises(ValueError, match="not a JPEG or PNG"):
        stream.decode_image(b"GIF89a" + bytes(40))
    with pytest.raises(ValueError, match="no frame header"):
        encode.declared_size(b"\xff\xd8\xff\xda\x00\x02")


def test_prepare_normalises_uint8_images_and_bool_masks_once_and_passes_floats_through() -> None:
    batch = {
        "image": torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 1, 1),
        "cf.tile": torch.full((2, 3, 1, 1), 255, dtype=torch.uint8),
        "mask": torch.tensor([True, False]).view(2, 1, 1, 1),
        "label": torch.tensor([1, 2]),
        "has_object": torch.tensor([True, False]),
        "key": ["a", "b"],
    }
    out = prepare(batch, "cpu")
    assert out["image"].dtype == torch.float32
    assert out["image"][0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    assert out["cf.tile"].eq(1.0).all() and out["mask"].flatten().tolist() == [1.0, 0.0]
    assert out["label"].tolist() == [1, 2] and out["has_object"].dtype == torch.bool and out["key"] == ["a", "b"]
    again = prepare(out, "cpu")
    assert all(torch.equal(again[k], out[k]) for k in ("image", "cf.tile", "mask"))  # floats pass unchanged
