"""ImageFolder tree + mask tree + boxes.csv, and the bad inputs a hand-made folder tends to have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from upstream import make_folder

from augment.config import BuildConfig
from augment.datasets import get_dataset
from augment.read import SourceError
from augment.runner.build import build
from augment.verify import verify


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path]:
    return make_folder(tmp_path / "data")


def test_classes_splits_masks_and_boxes(folder) -> None:
    root, masks = folder
    data = get_dataset("folder", root=str(root), masks=str(masks), on_error="skip", image_size=30, resize="short")
    assert data.classes == ("cat", "dog") and list(data.items) == ["train", "val"]
    assert data.rejects == [{"split": "val", "path": str(root / "val/dog"), "reason": "class folder with no images"}]
    train = {Path(i.path).name: n for n, i in enumerate(data.items["train"])}
    a = data.load("train", train["a.jpg"])
    assert a.mask.sum() == 15 * 20 and a.mask[5:20, 10:30].all()  # mask value 7: non-zero = object
    c = data.load("train", train["c.jpg"])
    assert c.label == 1 and c.mask is None and c.boxes.tolist() == [[4, 5, 20, 25], [22, 2, 30, 9]]
    b = data.load("train", train["b.png"])
    assert b.mask is None and b.boxes is None  # neither: a plain sample, counted
    assert data.describe()["plain_samples"] == 2  # b.png and val/cat/d.jpg


def test_empty_class_folder_fails_by_default_naming_it(folder) -> None:
    root, masks = folder
    with pytest.raises(SourceError, match=r"val/dog: class folder with no images"):
        get_dataset("folder", root=str(root), masks=str(masks))


def test_end_to_end_build_with_skips(folder, tmp_path: Path) -> None:
    root, masks = folder
    (root / "train/cat/notes.txt").write_text("not an image")
    (root / "train/dog/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header, then nothing")
    (root / "train/dog/text.jpg").write_text("a text file with an image suffix")
    config = BuildConfig(
        dataset="folder",
        infill=["tile", "grey"],
        factual=["mixed-rand"],
        image_size=32,
        on_error="skip",
        dataset_options={"root": str(root), "masks": str(masks)},
    )
    manifest = build(tmp_path / "out", config, workers=2, progress=False)
    rejects = (tmp_path / "out/rejects.jsonl").read_text().splitlines()
    assert manifest["rejects"]["count"] == len(rejects) == 4  # + val/dog, the empty class folder
    assert any("notes.txt" in r and "not an image file (expected one of" in r for r in rejects)
    assert any("broken.jpg" in r and "corrupt or truncated image" in r for r in rejects)
    assert any("text.jpg" in r and "not an image file PIL can read" in r for r in rejects)
    assert manifest["splits"]["train"]["num_samples"] == 3
    assert verify(tmp_path / "out", progress=False)[0] == []


def test_boxes_csv_problems(folder) -> None:
    root, masks = folder
    (root / "boxes.csv").write_text("path,x0,y0,x1\ntrain/dog/c.jpg,1,2,3\n")
    with pytest.raises(ValueError, match=r"boxes.csv: missing columns \['y1'\]"):
        get_dataset("folder", root=str(root), on_error="skip")
    (root / "boxes.csv").write_text("path,x0,y0,x1,y1\ntrain/dog/zz.jpg,1,2,3,4\ntrain/dog/c.jpg,a,2,3,4\n")
    data = get_dataset("folder", root=str(root), on_error="skip")
    reasons = [r["reason"] for r in data.rejects]
    assert "line 2: 'train/dog/zz.jpg' is not an image under the root" in reasons
    assert any(r.startswith("line 3: box ['a', '2', '3', '4'] is not four numbers") for r in reasons)
    assert np.all([i.boxes is None for i in data.items["train"]])
