"""Bad inputs found in review: each is a clear error naming the file, a recorded skip, or a documented keep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from upstream import make_coco, make_folder, make_in9, write_json

from augment.config import BuildConfig
from augment.datasets import Ref, SplitPlan, get_dataset
from augment.datasets.files import safe_key
from augment.errors import BuildError
from augment.read import SourceError
from augment.runner.build import build
from augment.runner.plan import check_unique_keys


def test_keys_that_sanitise_alike_stay_distinct() -> None:
    names = ["a.b", "a-b", "a_b", "猫1", "狗1", "x.JPG", "x.jpg"]
    keys = [safe_key("train", n) for n in names]
    assert len(set(keys)) == len(keys) and all("." not in k and len(k) <= 64 for k in keys)
    assert safe_key("train", "plain_name-1") == "train_plain_name-1"  # nothing to change: readable as is


def test_duplicate_keys_stop_the_build_before_writing() -> None:
    plans = {"train": SplitPlan((Ref("k1", 0), Ref("k2", 1)), True), "val": SplitPlan((Ref("k1", 0),), False)}
    with pytest.raises(BuildError, match="sample key 'k1' occurs twice \\(train and val\\)"):
        check_unique_keys(plans)


def test_exif_rotated_and_downsized_coco_image_keeps_mask_and_box_together(tmp_path: Path) -> None:
    """The JSON describes the raw 100x50 array; the file is 50x25 and EXIF-rotated (orientation 6)."""
    raw = np.full((25, 50, 3), 90, np.uint8)
    raw[5:10, 30:40] = (250, 0, 0)  # the object at raw x 60..80, y 10..20 in JSON pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "img").mkdir()
    Image.fromarray(raw).save(tmp_path / "img/1.png", exif=exif.tobytes())
    polygon = [60, 10, 80, 10, 80, 20, 60, 20]
    write_json(
        tmp_path / "ann.json",
        {
            "images": [{"id": 1, "file_name": "1.png", "width": 100, "height": 50}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "segmentation": [polygon],
                    "area": 200,
                    "bbox": [60, 10, 20, 10],
                    "iscrowd": 0,
                }
            ],
            "categories": [{"id": 1, "name": "thing"}],
        },
    )
    data = get_dataset(
        "coco", root=str(tmp_path / "img"), annotations=[str(tmp_path / "ann.json")], image_size=25, resize="short"
    )
    sample = data.load("train", 0)
    red = (sample.image[..., 0] > 200) & (sample.image[..., 1] < 80)
    x0, y0, x1, y1 = sample.boxes[0]
    assert sample.image.shape[:2] == (50, 25)  # upright
    assert (sample.mask == red).mean() > 0.97
    assert red[y0:y1, x0:x1].mean() > 0.8 and red.sum() <= (x1 - x0) * (y1 - y0)


def test_json_shapes_and_bad_polygons(tmp_path: Path) -> None:
    images, truth = make_coco(tmp_path)
    ann = tmp_path / "instances.json"
    data = json.loads(ann.read_text())
    ann.write_text("[]")
    with pytest.raises(ValueError, match="instances.json: the top level is a list"):
        get_dataset("coco", root=str(images), annotations=[str(ann)])
    data["annotations"][0]["segmentation"] = [[10, 10]]  # too short to be a polygon
    data["annotations"].append("not an object")
    data["annotations"].append({"id": 99, "image_id": 2, "category_id": 3, "bbox": [1, 1, 2, 2], "area": "big"})
    ann.write_text("\ufeff" + json.dumps(data))  # with a byte-order mark
    coco = get_dataset("coco", root=str(images), annotations=[str(ann)], on_error="skip")
    assert [r["reason"] for r in coco.rejects] == [
        "annotations[5]: expected an object",
        "annotation 99: area 'big' is not a number",
    ]
    first = next(i for i, item in enumerate(coco.items["train"]) if item.meta["image_id"] == 1)
    with pytest.raises(SourceError, match="instances.json: unreadable segmentation for 000000000001.jpg"):
        coco.load("train", first)


def test_a_mask_that_is_a_decompression_bomb_is_named(tmp_path: Path) -> None:
    root, masks = make_folder(tmp_path / "data")
    Image.new("L", (200, 150), 1).save(masks / "train/cat/a.png")
    data = get_dataset("folder", root=str(root), masks=str(masks), on_error="skip", max_image_pixels=1300)
    index = [i.path for i in data.items["train"]].index("train/cat/a.jpg")
    with pytest.raises(SourceError, match=r"a.png: refused as a possible decompression bomb .*--max-image-pixels"):
        data.load("train", index)


def test_in9_train_without_no_fg_is_a_bad_input_and_an_empty_test_mask_keeps_the_image(tmp_path: Path) -> None:
    root = tmp_path / "bg_challenge"
    make_in9(root)
    next((root / "train/no_fg/train/00_dog").iterdir()).unlink()
    with pytest.raises(SourceError, match="missing no_fg image for train/original/train/00_dog/"):
        get_dataset("in9", root=str(root))
    npy = root / "test/fg_mask/val/01_bird/n01_test.npy"
    np.save(npy, np.zeros((40, 48), bool))
    data = get_dataset("in9", root=str(root), on_error="skip")
    assert len(data.rejects) == 1 and len(data.items["original"]) == 3
    bird = [i.path for i in data.items["original"]].index("test/original/val/01_bird/n01_test.JPEG")
    sample = data.load("original", bird)
    assert sample.mask is None and sample.label == 1  # kept for accuracy, without an object


def test_folder_masks_inside_root_nested_folders_and_bom_csv(tmp_path: Path) -> None:
    root, masks = make_folder(tmp_path / "data")
    inside = root / "masks"
    masks.rename(inside)
    (root / "train/cat/sub").mkdir()
    (root / "boxes.csv").write_text("\ufeffpath,x0,y0,x1,y1\ntrain/dog/c.jpg,4,5,20,25\n")
    data = get_dataset("folder", root=str(root), masks=str(inside), on_error="skip")
    assert list(data.items) == ["train", "val"] and data.classes == ("cat", "dog")
    assert any("a folder inside a class folder is not read" in r["reason"] for r in data.rejects)
    assert any(i.boxes for i in data.items["train"])


def test_file_dataset_builds_are_byte_identical_across_workers(tmp_path: Path) -> None:
    root, masks = make_folder(tmp_path / "data")
    hashes = []
    for workers in (1, 2):
        config = BuildConfig(
            dataset="folder",
            infill=["tile"],
            factual=["shuffle", "mixed-rand"],
            image_size=24,
            shard_size=2,
            on_error="skip",
            dataset_options={"root": str(root), "masks": str(masks)},
        )
        manifest = build(tmp_path / f"out{workers}", config, workers=workers, progress=False)
        hashes.append([(s["path"], s["sha256"]) for v in manifest["splits"].values() for s in v["shards"]])
    assert hashes[0] == hashes[1] and len(hashes[0]) >= 3
