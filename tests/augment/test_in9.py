"""IN-9 read as released: labels, splits, no_fg-derived train masks, test masks, and a verified build."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from upstream import IN9_CLASSES, IN9_RELEASE, make_in9, make_in9_release

from augment.config import BuildConfig
from augment.datasets import get_dataset
from augment.datasets.in9 import fg_stem, object_from_no_fg
from augment.read import SourceError, read_image
from augment.runner.build import build
from augment.verify import verify


@pytest.fixture(scope="module")
def in9(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("in9") / "bg_challenge"
    return root, make_in9(root)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_splits_labels_and_class_names(in9) -> None:
    root, _ = in9
    data = get_dataset("in9", root=str(root))
    assert data.classes == ("dog", "bird", "wheeled vehicle")
    plans = data.splits()
    assert list(plans) == ["train", "val", "original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg"]
    assert [p.augment for p in plans.values()] == [True] + [False] * 7
    assert [r.label for r in plans["train"].refs] == [0, 0, 1, 1, 2, 2]
    assert all("." not in r.key and " " not in r.key for p in plans.values() for r in p.refs)
    assert data.describe()["evaluation"]["bg_gap"] == {"same": "mixed_same", "rand": "mixed_rand"}
    assert data.describe()["class_folders"] == list(IN9_CLASSES)


def test_train_masks_come_from_no_fg_despite_jpeg_and_dark_object_pixels(in9) -> None:
    root, truth = in9
    data = get_dataset("in9", root=str(root), image_size=48, resize="short")
    for i, item in enumerate(data.items["train"]):
        class_folder, stem = item.path.split("/")[3], Path(item.path).stem
        derived = item.mask.read(read_image(root / item.path), root / item.path)
        assert iou(derived, truth["train"][f"{class_folder}/{stem}"]) > 0.93, item.path
        assert derived[20:22, 24:26].all()  # the dark spot inside the object is filled by the closing
        sample = data.load("train", i)
        assert sample.image.shape == (48, 58, 3) and sample.mask.shape == (48, 58)  # short side 40 -> 48


def test_val_without_no_fg_is_plain_and_test_masks_follow_the_fg_stem(in9) -> None:
    root, truth = in9
    data = get_dataset("in9", root=str(root), image_size=40, resize="short")
    assert all(item.mask is None for item in data.items["val"])
    for variant in ("original", "mixed_same", "mixed_next", "no_fg"):
        for i, item in enumerate(data.items[variant]):
            sample = data.load(variant, i)
            name = item.path.split("/", 4)[4].rsplit(".", 1)[0]
            np.testing.assert_array_equal(sample.mask, truth[variant][f"{item.path.split('/')[3]}/{name}"])


def test_fg_stem() -> None:
    assert fg_stem("fg_n01440764_10043_bg_n01443537_11099.JPEG") == "n01440764_10043"
    assert fg_stem("n01440764_10043.JPEG") == "n01440764_10043"


def test_object_from_no_fg_needs_black_and_different() -> None:
    original = np.full((8, 8, 3), 10, np.uint8)  # a black original stays background even where no_fg is black
    original[2:5, 2:5] = 200
    no_fg = original.copy()
    no_fg[2:5, 2:5] = 0
    mask = object_from_no_fg(original, no_fg)
    assert mask[2:5, 2:5].all() and mask.sum() == 9


def test_end_to_end_build_verifies(in9, tmp_path: Path) -> None:
    root, _ = in9
    config = BuildConfig(
        dataset="in9",
        infill=["tile"],
        factual=["shuffle", "mixed-rand"],
        image_size=32,
        dataset_options={"root": str(root)},
    )
    manifest = build(tmp_path / "out", config, workers=2, progress=False)
    assert manifest["splits"]["train"]["num_samples"] == 6 and manifest["splits"]["mixed_next"]["num_samples"] == 3
    assert manifest["splits"]["train"]["per_class"] == {"dog": 2, "bird": 2, "wheeled vehicle": 2}
    assert manifest["dataset"]["params"]["missing_test_variants"] == []
    assert verify(tmp_path / "out", progress=False)[0] == []


def test_missing_test_mask_and_wrong_root_are_named(in9, tmp_path: Path) -> None:
    root, _ = in9
    with pytest.raises(FileNotFoundError, match="--root should be the bg_challenge folder"):
        get_dataset("in9", root=str(root.parent))
    npy = root / "test/fg_mask/val/01_bird/n01_test.npy"
    saved = npy.read_bytes()
    npy.unlink()
    try:
        with pytest.raises(SourceError, match="n01_test.npy: missing test mask"):
            get_dataset("in9", root=str(root))
        data = get_dataset("in9", root=str(root), on_error="skip")
        assert len(data.rejects) == 6 and len(data.items["original"]) == 2  # one per variant with a mask
    finally:
        npy.write_bytes(saved)


def release_reliance(tmp_path: Path, remove_original: str | None = None) -> tuple[dict, dict, dict[str, str]]:
    """Build a release-like IN-9 tree and evaluate a fixed untrained resnet8 on it: (results, records by key, the
    test objects' stems by class folder)."""
    import torch

    from augment.contract.zoo.models import build_model
    from train import evaluate
    from train.config import Config
    from train.data import read_manifest

    root = tmp_path / "bg_challenge"
    stems = make_in9_release(root, remove_original)
    out = tmp_path / "shards"
    build(
        out,
        BuildConfig(
            dataset="in9", infill=["tile"], image_size=32, dataset_options={"root": str(root)}, on_error="skip"
        ),
        workers=1,
        progress=False,
    )
    torch.manual_seed(0)
    model = build_model("resnet8", 9, from_checkpoint=True)
    config = Config.resolve("demo", shards=str(out), out=str(tmp_path / "run"), workers=0, max_saliency_images=0)
    results = evaluate.evaluate_all(model, out, read_manifest(out), 28, config, torch.device("cpu"))
    records = {}
    for tar in out.glob("*/*.tar"):
        with tarfile.open(tar) as fh:
            for member in fh.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(fh.extractfile(member).read())
                    records[meta["key"]] = meta
    return results, records, stems


def test_background_reliance_pairs_every_class_of_the_release_names(tmp_path: Path) -> None:
    """The release's folders with a space (``02_wheeled vehicle``, ``06_musical instrument``) and long mixed names
    get rewritten keys (hashed, cut): the reliance still pairs all nine classes, on the recorded object, and equals
    the mean over the nine pairs computed here from the records' source paths."""
    results, records, stems = release_reliance(tmp_path)
    assert results["background_reliance_pairs"] == {"pairs": 9, "unpaired": 0}
    rewritten = [k for k, r in records.items() if r["split"] == "mixed_next" and "_bg_" not in k]
    assert len(rewritten) >= 2  # the hashed keys are what broke the old key parse
    predictions = results["_predictions"]
    logits = {
        s: dict(zip(predictions[f"{s}.keys"], predictions[f"{s}.logits"], strict=True))
        for s in ("original", "mixed_next")
    }
    by_source = {
        (s, Path(records[k]["source"]).parent.name, fg_stem(records[k]["source"])): v
        for s, table in logits.items()
        for k, v in table.items()
    }
    rises = []
    for c, folder in enumerate(IN9_RELEASE):
        nxt = (c + 1) % 9
        p_orig = np.exp(by_source["original", folder, stems[folder]].astype(np.float64))
        p_mixed = np.exp(by_source["mixed_next", folder, stems[folder]].astype(np.float64))
        rises.append(p_mixed[nxt] / p_mixed.sum() - p_orig[nxt] / p_orig.sum())
    assert results["background_reliance"] == pytest.approx(np.mean(rises), abs=1e-6)


def test_unpaired_images_are_counted_and_said(tmp_path: Path, caplog) -> None:
    with caplog.at_level("WARNING", logger="train"):
        results, _, _ = release_reliance(tmp_path, remove_original="06_musical instrument")
    assert results["background_reliance_pairs"] == {"pairs": 8, "unpaired": 1}
    said = [r.getMessage() for r in caplog.records if "background reliance" in r.getMessage()]
    assert said and "1 of 9 image(s) have no original" in said[0] and "mixed_next" in said[0]
