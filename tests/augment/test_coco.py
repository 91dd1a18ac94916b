"""COCO instances JSON: polygon, compressed and uncompressed RLE, bare boxes, label rule, splits, bad JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from upstream import make_coco

from augment.config import BuildConfig
from augment.datasets import get_dataset
from augment.read import SourceError
from augment.runner.build import build
from augment.verify import verify


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path, dict]:
    images, truth = make_coco(tmp_path)
    return images, tmp_path / "instances.json", truth


def load(coco, **options):
    images, ann, _ = coco
    data = get_dataset("coco", root=str(images), annotations=[str(ann)], image_size=40, resize="short", **options)
    return data, {
        item.meta["image_id"]: (split, i) for split, items in data.items.items() for i, item in enumerate(items)
    }


def test_labels_and_masks_from_every_segmentation_kind(coco) -> None:
    data, where = load(coco)
    assert data.classes == ("cat", "dog") and set(where) == {1, 2, 3, 4}  # image 5 has no annotation
    assert data.describe()["unlabelled_images"] == 1
    polygon = data.load(*where[1])
    assert polygon.label == 0  # the cat polygon (area 200) beats the dog box (area 20)
    rect = np.zeros((40, 50), bool)
    rect[10:20, 10:30] = True
    assert (polygon.mask & rect).sum() / (polygon.mask | rect).sum() > 0.85
    assert not polygon.mask[30:34, 40:45].any()  # the other category's box is not part of the object
    _, _, truth = coco
    np.testing.assert_array_equal(data.load(*where[2]).mask, truth[2])  # compressed RLE
    np.testing.assert_array_equal(data.load(*where[3]).mask, truth[3])  # uncompressed RLE
    bare = data.load(*where[4])
    assert bare.mask.sum() == 80 and bare.mask[3:11, 2:12].all() and bare.boxes.tolist() == [[2, 3, 12, 11]]


def test_label_rule_area_and_val_fraction(coco) -> None:
    data, where = load(coco, label_from="area", val_fraction=0.5)
    assert set(data.items) == {"train", "val"} and sum(len(v) for v in data.items.values()) == 4
    again, _ = load(coco, label_from="area", val_fraction=0.5)
    assert [i.key for i in again.items["val"]] == [i.key for i in data.items["val"]]  # seeded, stable
    with pytest.raises(ValueError, match="--label-from: got 'size', expected one of largest, area"):
        load(coco, label_from="size")


def test_one_json_per_split(coco, tmp_path: Path) -> None:
    images, ann, _ = coco
    data = get_dataset("coco", root=str(images), annotations=[f"train={ann}", f"val={ann}"])
    assert len(data.items["train"]) == len(data.items["val"]) == 4
    with pytest.raises(ValueError, match="name each as SPLIT=PATH"):
        get_dataset("coco", root=str(images), annotations=[str(ann), str(ann)])


def test_end_to_end_build_verifies(coco, tmp_path: Path) -> None:
    images, ann, _ = coco
    config = BuildConfig(
        dataset="coco",
        infill=["tile"],
        factual=["shuffle"],
        image_size=32,
        dataset_options={"root": str(images), "annotations": [str(ann)]},
    )
    build(tmp_path / "out", config, progress=False)
    assert verify(tmp_path / "out", progress=False)[0] == []


def test_malformed_json_and_unknown_ids(coco) -> None:
    images, ann, _ = coco
    data = json.loads(ann.read_text())
    ann.write_text("{not json")
    with pytest.raises(ValueError, match="instances.json: malformed JSON"):
        load(coco)
    data["annotations"].append({"id": 9, "image_id": 77, "category_id": 3, "bbox": [0, 0, 1, 1]})
    data["annotations"].append({"id": 10, "image_id": 1, "category_id": 42, "bbox": [0, 0, 1, 1]})
    ann.write_text(json.dumps(data))
    with pytest.raises(SourceError, match="annotation 9 references unknown image_id 77"):
        load(coco)
    skipped, _ = load(coco, on_error="skip")
    assert len(skipped.rejects) == 2 and "unknown category_id 42" in skipped.rejects[1]["reason"]
