"""Waterbirds read as released: groups, test_original / test_flip, soft-edged segmentations, bad metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from upstream import WATERBIRDS_ROWS, make_waterbirds

from augment import masks
from augment.config import BuildConfig
from augment.contract import encode, schema
from augment.contract.shards import iter_records
from augment.datasets import get_dataset
from augment.pipeline import make_record
from augment.read import SOFT_MASK_RULE, SourceError
from augment.runner.build import build
from augment.verify import verify


@pytest.fixture
def wb(tmp_path: Path) -> tuple[Path, dict]:
    return make_waterbirds(tmp_path)


def bird(levels: np.ndarray) -> np.ndarray:
    """The documented rule, written out again: object = at least half the mask's maximum."""
    return levels.astype(np.int64) * 2 >= int(levels.max())


def ring(levels: np.ndarray) -> np.ndarray:
    """The soft rim: annotated (non-zero) but under half the maximum."""
    return (levels > 0) & ~bird(levels)


def around(region: np.ndarray) -> np.ndarray:
    """The filled rectangle around every True pixel of ``region``."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    rect = np.zeros_like(region, dtype=bool)
    rect[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return rect


def img_id(key: str) -> int:
    return int(key.rsplit("_", 1)[1])


def native(root: Path):
    """The dataset at the files' own 40x30 size (short side 30), so pixels compare one to one with the masks."""
    return get_dataset("waterbirds", root=str(root), image_size=30, resize="short")


def test_splits_labels_groups_and_masks(wb) -> None:
    root, truth = wb
    data = native(root)
    plans = data.splits()
    assert {s: len(p.refs) for s, p in plans.items()} == {
        "train": 4,
        "val": 2,
        "test": 2,
        "test_original": 1,
        "test_flip": 1,
    }
    for split, items in data.items.items():
        for i, item in enumerate(items):
            _, _, y, _, place = WATERBIRDS_ROWS[img_id(item.key) - 1]
            assert (item.label, item.group) == (y, 2 * y + place)
            levels = truth[img_id(item.key)]
            sample = data.load(split, i)
            np.testing.assert_array_equal(sample.mask, bird(levels))  # 128 and 255 of 255; the rim (40, 127) is not
            assert ring(levels).any() and not sample.mask[ring(levels)].any()
    assert data.items["test_original"][0].key == "test_original_7" and data.items["test_flip"][0].key == "test_flip_8"


def test_soft_rim_is_background_for_f_and_inside_the_cf_rectangle(wb) -> None:
    root, truth = wb
    data = native(root)
    for i, item in enumerate(data.items["train"]):
        sample, levels = data.load("train", i), truth[img_id(item.key)]
        shape = sample.image.shape[:2]
        f_hole = masks.f_hole(sample.mask, sample.boxes, shape)
        cf_hole = masks.cf_hole(sample.mask, sample.boxes, shape)
        assert f_hole[ring(levels)].all() and not f_hole[bird(levels)].any()  # F replaces the rim, keeps the bird
        np.testing.assert_array_equal(cf_hole, around(levels > 0))  # CF removes every non-zero pixel, rim too
        assert cf_hole.sum() > around(bird(levels)).sum()


def test_f_images_replace_every_ring_pixel(wb, monkeypatch: pytest.MonkeyPatch) -> None:
    root, truth = wb
    monkeypatch.setattr(encode, "encode_jpeg", lambda image: image)  # the record's images as arrays: no JPEG noise
    data = native(root)
    config = BuildConfig(dataset="waterbirds", infill=["grey"], factual=["random"], copies=2, image_size=30)
    for i, item in enumerate(data.items["train"]):
        sample, levels = data.load("train", i), truth[img_id(item.key)]
        record = make_record(sample, data, config, True, None)
        np.testing.assert_array_equal(encode.decode_mask(record[schema.MASK]), bird(levels))
        for name in ("f.random.0.jpg", "f.random.1.jpg"):
            changed = (record[name] != sample.image).any(axis=2)
            assert changed[ring(levels)].all(), f"{item.key} {name}: a rim pixel keeps the original background"
            assert not changed[bird(levels)].any()


def test_end_to_end_build_verifies(wb, tmp_path: Path) -> None:
    root, truth = wb
    config = BuildConfig(
        dataset="waterbirds",
        infill=["grey"],
        factual=["random"],
        image_size=30,
        dataset_options={"root": str(root), "resize": "short"},
    )
    manifest = build(tmp_path / "out", config, workers=1, progress=False)
    assert manifest["splits"]["train"]["per_class"] == {"landbird": 2, "waterbird": 2}
    assert manifest["dataset"]["params"]["groups"]["1"] == "landbird on water"
    assert manifest["dataset"]["params"]["mask_threshold"] == SOFT_MASK_RULE
    assert verify(tmp_path / "out", progress=False)[0] == []
    stored = {
        key: encode.decode_mask(fields[schema.MASK])
        for shard in manifest["splits"]["train"]["shards"]
        for key, fields in iter_records(tmp_path / "out" / shard["path"], {schema.MASK})
    }
    assert len(stored) == 4
    for key, mask in stored.items():
        np.testing.assert_array_equal(mask, bird(truth[img_id(key)]), err_msg=key)  # mask.png: Sal and FGSM


@pytest.mark.parametrize("peak", [1, 7, 255])
def test_binary_masks_keep_every_non_zero_pixel(wb, peak: int) -> None:
    root, truth = wb
    seg = next((root.parent / "segmentations").rglob("*_0001.png"))
    from PIL import Image

    binary = (truth[1] > 0).astype(np.uint8) * peak
    Image.fromarray(binary).save(seg)
    sample = native(root).load("train", 0)
    np.testing.assert_array_equal(sample.mask, binary > 0)  # as before: non-zero = object
    np.testing.assert_array_equal(masks.cf_hole(sample.mask, sample.boxes, binary.shape), around(binary > 0))


def test_missing_columns_and_bad_rows_are_named(wb) -> None:
    root, _ = wb
    csv = root / "metadata.csv"
    text = csv.read_text()
    csv.write_text(text.replace(",place,", ",where,"))
    with pytest.raises(ValueError, match=r"metadata.csv: missing columns \['place'\]"):
        get_dataset("waterbirds", root=str(root))
    csv.write_text(text.replace(",0,0,0,", ",3,0,0,", 1))  # row 3 (line 4): y = 3
    with pytest.raises(SourceError, match="metadata.csv: line 4: .*y and place must be 0 or 1"):
        get_dataset("waterbirds", root=str(root))
    data = get_dataset("waterbirds", root=str(root), on_error="skip")
    assert len(data.rejects) == 1 and len(data.items["train"]) == 3


def test_masks_of_the_wrong_size_or_empty_are_bad_inputs(wb, tmp_path: Path) -> None:
    root, _ = wb
    seg = next((root.parent / "segmentations").rglob("*_0001.png"))
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(seg)
    data = get_dataset("waterbirds", root=str(root))
    with pytest.raises(SourceError, match=r"_0001.png: mask is 10x10, expected the image's size 40x30"):
        data.load("train", 0)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(seg)
    with pytest.raises(SourceError, match="_0001.png: empty mask: no object pixel"):
        data.load("train", 0)
    config = BuildConfig(dataset="waterbirds", infill=["tile"], on_error="skip", dataset_options={"root": str(root)})
    manifest = build(tmp_path / "out", config, progress=False)
    assert manifest["rejects"]["count"] == 1 and manifest["splits"]["train"]["num_samples"] == 3
    assert "empty mask" in (tmp_path / "out/rejects.jsonl").read_text()
    assert verify(tmp_path / "out", progress=False)[0] == []


def test_default_masks_folder_must_exist(tmp_path: Path) -> None:
    (tmp_path / "wb").mkdir()
    with pytest.raises(FileNotFoundError, match="segmentations: folder not found"):
        get_dataset("waterbirds", root=str(tmp_path / "wb"))
