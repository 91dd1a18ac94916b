"""Caltech Camera Traps read as released: rescaled boxes, 'empty' dropped, one sample per species, bad JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from upstream import make_cct

from augment.config import BuildConfig
from augment.datasets import get_dataset
from augment.read import SourceError
from augment.runner.build import build
from augment.verify import verify

TRAIN_JSON = "eccv_18_annotation_files/train_annotations.json"


@pytest.fixture
def cct(tmp_path: Path) -> Path:
    return make_cct(tmp_path / "cct")


def test_labels_splits_keys_and_groups(cct: Path) -> None:
    data = get_dataset("cct", root=str(cct))
    assert data.classes == ("deer", "fox")
    assert {s: len(v) for s, v in data.items.items()} == {"train": 4, "cis_val": 1, "trans_test": 1}
    keys = [i.key for i in data.items["train"]]
    assert len(set(keys)) == 4 and "train_b-two-species_1" in keys and "train_b-two-species_5" in keys
    assert not any("d-empty" in k for k in keys)  # an image with only "empty" is dropped
    params = data.describe()
    assert params["label_map"] == {"1": {"label": 0, "name": "deer"}, "5": {"label": 1, "name": "fox"}}
    assert params["missing_splits"] == ["cis_test", "trans_val"] and params["locations"] == ["10", "20"]
    assert params["dropped_empty_or_unannotated_images"] == 1
    assert {i.key: i.group for i in data.items["train"]}["train_b-two-species_5"] == 1


def test_boxes_are_united_and_rescaled_to_the_downsized_image(cct: Path) -> None:
    data = get_dataset("cct", root=str(cct), image_size=48, resize="short")  # 64x48 files stay 64x48
    by_key = {item.key: i for i, item in enumerate(data.items["train"])}
    first = data.load("train", by_key["train_5968c0f9-23d2-11e8-a6a3-ec086b02610b_1"])
    assert first.boxes.tolist() == [[10, 10, 20, 15], [25, 20, 35, 30]]  # [x, y, w, h] / 4, as x0 y0 x1 y1
    fox = data.load("train", by_key["train_b-two-species_5"])
    assert fox.label == 1 and fox.boxes.tolist() == [[40, 24, 60, 44]]
    plain = data.load("train", by_key["train_c-no-box_5"])
    assert plain.boxes is None and plain.mask is None


def test_end_to_end_build_verifies_and_keeps_the_plain_sample(cct: Path, tmp_path: Path) -> None:
    config = BuildConfig(
        dataset="cct", infill=["tile"], factual=["mixed-rand"], image_size=32, dataset_options={"root": str(cct)}
    )
    manifest = build(tmp_path / "out", config, workers=2, progress=False)
    assert manifest["splits"]["train"]["num_samples"] == 4 and manifest["splits"]["train"]["per_class"] == {
        "deer": 2,
        "fox": 2,
    }
    assert verify(tmp_path / "out", progress=False)[0] == []


def edit_train(cct: Path, edit) -> None:
    path = cct / TRAIN_JSON
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_malformed_json_and_unknown_ids_are_named(cct: Path) -> None:
    text = (cct / TRAIN_JSON).read_text()
    (cct / TRAIN_JSON).write_text(text[:-20])
    with pytest.raises(ValueError, match="train_annotations.json: malformed JSON"):
        get_dataset("cct", root=str(cct))
    (cct / TRAIN_JSON).write_text(text)
    edit_train(cct, lambda d: d["annotations"].append({"id": "z", "image_id": "nope", "category_id": 1}))
    with pytest.raises(SourceError, match="annotation 'z' references unknown image_id 'nope'"):
        get_dataset("cct", root=str(cct))
    edit_train(cct, lambda d: d["annotations"].append({"id": "y", "image_id": d["images"][0]["id"], "category_id": 99}))
    data = get_dataset("cct", root=str(cct), on_error="skip")
    assert [r["reason"] for r in data.rejects] == [
        "annotation 'z' references unknown image_id 'nope'",
        "annotation 'y' references unknown category_id 99",
    ]


@pytest.mark.parametrize(
    "bbox,message",
    [
        ([float("nan"), 0, 10, 10], "is not a number"),
        ([300, 300, 10, 10], "lies outside the 256x192 image"),
        ([10, 10, 0, 5], "has negative or zero size"),
        ([10, 10, -4, 5], "has negative or zero size"),
    ],
)
def test_bad_boxes_are_refused_with_the_image(cct: Path, bbox: list, message: str, tmp_path: Path) -> None:
    edit_train(cct, lambda d: d["annotations"][2].update(bbox=bbox))  # the deer in b-two-species
    data = get_dataset("cct", root=str(cct))
    index = [i.key for i in data.items["train"]].index("train_b-two-species_1")
    with pytest.raises(SourceError, match=f"b-two-species.jpg: box .*{message}"):
        data.load("train", index)
    config = BuildConfig(dataset="cct", infill=["tile"], on_error="skip", dataset_options={"root": str(cct)})
    manifest = build(tmp_path / "out", config, progress=False)
    assert manifest["rejects"]["count"] == 1 and manifest["splits"]["train"]["num_samples"] == 3
