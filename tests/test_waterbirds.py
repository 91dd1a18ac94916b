"""Waterbirds read as released: groups, test_original / test_flip, soft-edged segmentations, bad metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from upstream import WATERBIRDS_ROWS, make_waterbirds

from augment.build import BuildConfig, build
from augment.datasets import get_dataset
from augment.read import SourceError
from augment.verify import verify


@pytest.fixture
def wb(tmp_path: Path) -> tuple[Path, dict]:
    return make_waterbirds(tmp_path)


def test_splits_labels_groups_and_masks(wb) -> None:
    root, truth = wb
    data = get_dataset("waterbirds", root=str(root), image_size=30, resize="short")  # 40x30 stays 40x30
    plans = data.splits()
    assert {s: len(p.refs) for s, p in plans.items()} == {
        "train": 4, "val": 2, "test": 2, "test_original": 1, "test_flip": 1
    }  # fmt: skip
    for split, items in data.items.items():
        for i, item in enumerate(items):
            img_id = int(item.key.rsplit("_", 1)[1])
            _, _, y, _, place = WATERBIRDS_ROWS[img_id - 1]
            assert (item.label, item.group) == (y, 2 * y + place)
            sample = data.load(split, i)
            np.testing.assert_array_equal(sample.mask, truth[img_id])  # non-zero = bird, soft rim included
    assert data.items["test_original"][0].key == "test_original_7" and data.items["test_flip"][0].key == "test_flip_8"


def test_end_to_end_build_verifies(wb, tmp_path: Path) -> None:
    root, _ = wb
    config = BuildConfig(dataset="waterbirds", infill=["grey"], factual=["random"], image_size=32,
                         dataset_options={"root": str(root)})  # fmt: skip
    manifest = build(tmp_path / "out", config, workers=1, progress=False)
    assert manifest["splits"]["train"]["per_class"] == {"landbird": 2, "waterbird": 2}
    assert manifest["dataset"]["params"]["groups"]["1"] == "landbird on water"
    assert verify(tmp_path / "out", progress=False)[0] == []


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
