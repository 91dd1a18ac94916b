"""``shuffle`` fills from a value pool spanning many samples of the split; ``shuffle-image`` from the image alone.

The decisive property is the last test: on photographs whose classes have their own backgrounds, the colour
statistics of F(shuffle) backgrounds must not tell the class, while those of F(shuffle-image) still do.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import index_value, make_image, rect_hole
from PIL import Image
from upstream import make_folder

from augment import pool
from augment.config import BuildConfig
from augment.contract import encode
from augment.datasets import DATASETS, get_dataset
from augment.errors import BuildError
from augment.infill import shuffle, shuffle_image
from augment.runner import journal
from augment.runner.build import build
from augment.runner.cache import cached_dataset
from train.config import Config


def test_hole_values_come_from_other_samples_of_the_pool() -> None:
    image = np.full((10, 10, 3), 7, np.uint8)  # 7 occurs in no member
    members = [(f"m{i}", np.full((10, 10, 3), 100 + 50 * i, np.uint8)) for i in range(3)]
    hole = rect_hole(10, 10, 2, 8, 2, 8)
    out = shuffle.fill(image, hole, np.random.default_rng(0), pool=pool.make_pool(0, members))
    counts = Counter(out[hole].ravel().tolist())
    assert set(counts) == {100, 150, 200}  # every member contributes, the image itself does not
    assert min(counts.values()) > 0.2 * out[hole].size  # about a third each
    np.testing.assert_array_equal(out[~hole], image[~hole])


def test_a_member_gives_its_share_and_the_pool_is_bounded() -> None:
    big = make_image(300, 300, seed=1)  # 270,000 values, more than a member's share
    values = pool.member_values(0, "k", big)
    assert values.size == pool.POOL_VALUES // pool.POOL_IMAGES
    assert values.tobytes() == pool.member_values(0, "k", big).tobytes()  # seeded by (seed, key)
    assert values.tobytes() != pool.member_values(0, "other", big).tobytes()
    small = make_image(8, 8)
    np.testing.assert_array_equal(pool.member_values(0, "k", small), small.reshape(-1))
    assert pool.make_pool(0, [(f"k{i}", big) for i in range(pool.POOL_IMAGES)]).values.size == pool.POOL_VALUES


def test_members_are_seeded_and_span_the_split() -> None:
    a = pool.members(0, "train", 1000)
    assert a.size == pool.POOL_IMAGES >= 32 and np.array_equal(a, pool.members(0, "train", 1000))
    assert not np.array_equal(a, pool.members(1, "train", 1000))
    assert a.max() > 500 and a.min() < 500  # not the first images of a class-ordered source
    np.testing.assert_array_equal(pool.members(0, "train", 10), np.arange(10))  # a small split: every sample


def test_the_build_pool_is_the_manifests_members_and_their_pixels(tmp_path: Path) -> None:
    config = BuildConfig(dataset="indexed", infill=["shuffle"], factual=["shuffle"], shard_size=4)
    manifest = build(tmp_path / "out", config, progress=False)
    recorded = manifest["methods"]["pool"]
    assert recorded["images"] == pool.POOL_IMAGES and recorded["values"] == pool.POOL_VALUES
    assert recorded["members"] == {"train": [f"train_{i:04d}" for i in range(11)]}  # 11 < 64: all of train
    assert "left_out" not in recorded  # none failed to load
    values = cached_dataset(config, DATASETS["indexed"].factory).pool("train")
    assert list(values.keys) == recorded["members"]["train"]
    levels = {index_value(i) for i in range(11)} | {250}  # flat grey images with a 250 object
    assert set(np.unique(values.values).tolist()) == levels


def test_a_build_without_shuffle_records_no_pool(tmp_path: Path) -> None:
    manifest = build(tmp_path / "out", BuildConfig(dataset="indexed", infill=["tile"]), progress=False)
    assert "pool" not in manifest["methods"]


def test_the_trainer_refuses_the_per_image_shuffle_of_older_builds() -> None:
    manifest = {
        "format_version": 2,
        "splits": {"train": {"fields": ["jpg", "f.shuffle.0.jpg"]}, "val": {}},
        "methods": {"cf": [], "f": ["shuffle"], "copies": 1},
    }
    config = Config.resolve(preset="demo", shards="s", out="o", f=["shuffle"], val_split="val")
    with pytest.raises(ValueError, match="per-image variant .*shuffle-image"):
        config.check_build(manifest)
    config.check_build({**manifest, "format_version": 3})


# ---- the colour cue, on photographs ---------------------------------------------------------------------------------

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # colour photographs that scikit-image ships
PER_CLASS, SIZE = 40, 48


def photo_folder(root: Path) -> tuple[Path, Path]:
    """An ImageFolder tree written class by class: class c is an object on a random crop of photo c."""
    data = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(0)
    masks = root.parent / "masks"
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    for c, name in enumerate(PHOTOS):
        photo = getattr(data, name)()[..., :3]
        for i in range(PER_CLASS):
            side = int(rng.integers(photo.shape[0] // 3, min(photo.shape[:2])))
            y0, x0 = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
            crop = photo[y0 : y0 + side, x0 : x0 + side]
            image = np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.Resampling.BILINEAR)).copy()
            cy, cx, r = rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(6, 10)
            mask = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
            image[mask] = rng.integers(0, 256, 3)
            for tree, pixels in ((root, image), (masks, mask.astype(np.uint8) * 255)):
                path = tree / "train" / f"{c}_{name}" / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root, masks


def background_features(shards: Path, field: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel of the background (outside mask.png) of ``field``, and the labels."""
    features, labels = [], []
    for sample in wds.WebDataset([str(p) for p in sorted(shards.glob("train/*.tar"))], shardshuffle=False):
        image = np.asarray(Image.open(io.BytesIO(sample[field])).convert("RGB"), np.float64)
        background = image[~encode.decode_mask(sample["mask.png"])]
        features.append(np.concatenate([background.mean(axis=0), background.std(axis=0)]))
        labels.append(int(sample["cls"]))
    return np.array(features), np.array(labels)


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Two-fold cross-validated accuracy of a nearest-centroid classifier on standardised features."""
    z = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
    folds = np.arange(len(labels)) % 2
    right = 0
    for k in (0, 1):
        train, test = folds != k, folds == k
        centroids = np.stack([z[train & (labels == c)].mean(axis=0) for c in np.unique(labels)])
        guess = np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        right += int((guess == labels[test]).sum())
    return right / len(labels)


def test_pooled_shuffle_backgrounds_do_not_tell_the_class_where_per_image_ones_do(tmp_path: Path) -> None:
    """4 classes, chance 0.25. Measured (this fixture, seed 0): real backgrounds 0.950, F(shuffle-image) 0.906,
    F(shuffle) 0.275. Bounds: pooled below 0.40 (4.4 binomial standard errors above chance at n = 160), per-image
    and real above 0.70."""
    root, masks = photo_folder(tmp_path / "photos")
    config = BuildConfig(
        dataset="folder",
        factual=["shuffle", "shuffle-image"],
        shard_size=40,
        dataset_options={"root": str(root), "masks": str(masks)},
        image_size=SIZE,
    )
    build(tmp_path / "out", config, workers=2, progress=False)
    scores = {
        field: nearest_centroid_accuracy(*background_features(tmp_path / "out", field))
        for field in ("jpg", "f.shuffle.0.jpg", "f.shuffle-image.0.jpg")
    }
    assert scores["jpg"] > 0.70 and scores["f.shuffle-image.0.jpg"] > 0.70, scores
    assert scores["f.shuffle.0.jpg"] < 0.40, scores


def test_shuffle_image_draws_only_the_images_own_values() -> None:
    image = make_image(10, 10, seed=4)
    hole = rect_hole(10, 10, 0, 10, 0, 5)
    out = shuffle_image.fill(image, hole, np.random.default_rng(0))
    own = Counter(image.ravel().tolist())
    assert all(own[v] >= n for v, n in Counter(out[hole].ravel().tolist()).items())


def test_a_pool_member_that_fails_to_load_stops_the_build_naming_it(tmp_path: Path) -> None:
    config = dict(dataset="indexed", factual=["shuffle"], dataset_options={"fail_at": 5})
    with pytest.raises(BuildError, match="train sample 5 of indexed .a member of the shuffle pool.: OSError"):
        build(tmp_path / "fail", BuildConfig(**config), progress=False)


def test_the_manifest_lists_the_pool_members_used_not_those_left_out(tmp_path: Path) -> None:
    """A drawn member that fails to load with --on-error skip gives the pool no values: the manifest lists the members
    that did, and the one left out with why; the same for any --workers, and a re-run keeps the finished build."""
    root, masks = make_folder(tmp_path / "data")
    (root / "train/dog/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header, then nothing")
    options = {"root": str(root), "masks": str(masks)}
    config = BuildConfig(
        dataset="folder", factual=["shuffle"], image_size=24, shard_size=2, on_error="skip", dataset_options=options
    )
    manifests = [build(tmp_path / f"out{workers}", config, workers=workers, progress=False) for workers in (1, 2)]
    assert manifests[0] == manifests[1]
    drawn = [ref.key for ref in get_dataset("folder", on_error="skip", **options).splits()["train"].refs]  # 4 < 64
    broken = next(key for key in drawn if "broken" in key)
    used = cached_dataset(config, DATASETS["folder"].factory).pool("train")
    recorded = manifests[0]["methods"]["pool"]
    assert recorded["members"] == {"train": [key for key in drawn if key != broken]} == {"train": list(used.keys)}
    assert recorded["left_out"] == {"train": {broken: "corrupt or truncated image (Truncated File Read)"}}
    assert build(tmp_path / "out1", config, progress=False) == manifests[0]  # the same command again: kept as it is


def test_shards_built_from_different_pools_stop_the_manifest() -> None:
    """One manifest cannot describe two pools: shards whose pools left out different members are an error."""
    header = {"methods": {"pool": {"members": {"train": ["a", "b"]}}}}
    plan = journal.Plan(header, [journal.Task("train", i, 2 * i, 2 * i + 2) for i in range(2)], {}, [])
    records = {"train-000000": {"pool_left_out": [[1, "corrupt"]]}, "train-000001": {"pool_left_out": []}}
    with pytest.raises(
        BuildError,
        match=r"shard-000001.tar: its shuffle pool left out members \[\] .*other train "
        r"shards \[\[1, 'corrupt'\]\]: the source changed during the build",
    ):
        journal.with_used_pool(plan, records)
    records["train-000001"] = records["train-000000"]
    expected = {"members": {"train": ["a"]}, "left_out": {"train": {"b": "corrupt"}}}
    assert journal.with_used_pool(plan, records)["methods"]["pool"] == expected
