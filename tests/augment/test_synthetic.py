"""The embedded dataset: deterministic, exact masks, the bias it promises, IN-9-like test splits."""

from __future__ import annotations

import numpy as np
import pytest

from augment.datasets import get_dataset
from augment.datasets.synthetic import BACKGROUNDS, SHAPES, TEST_VARIANTS


@pytest.fixture(scope="module")
def data():
    return get_dataset("synthetic", size=500, seed=3)


def test_samples_are_deterministic_and_independent_of_order(data) -> None:
    a = data.load("train", 7).image
    data.load("train", 8)
    np.testing.assert_array_equal(a, get_dataset("synthetic", size=500, seed=3).load("train", 7).image)
    assert not np.array_equal(a, get_dataset("synthetic", size=500, seed=4).load("train", 7).image)


def test_splits_sizes_keys_and_labels(data) -> None:
    plans = data.splits()
    assert list(plans) == ["train", "val", *TEST_VARIANTS]
    assert len(plans["train"].refs) == 500 and len(plans["mixed_next"].refs) == 100
    assert plans["train"].augment and not plans["val"].augment and not plans["original"].augment
    keys = [r.key for p in plans.values() for r in p.refs]
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)
    for split, plan in plans.items():
        for i in (0, 13):
            sample = data.load(split, i)
            assert (sample.key, sample.label) == (plan.refs[i].key, plan.refs[i].label)
            assert sample.class_name == SHAPES[sample.label] and sample.image.shape == (64, 64, 3)


def test_mask_is_the_object_and_the_box_bounds_it(data) -> None:
    s = data.load("train", 4)
    x0, y0, x1, y1 = s.boxes[0]
    assert s.mask.sum() > 50 and s.mask[y0:y1, x0:x1].sum() == s.mask.sum()
    assert s.mask[y0].any() and s.mask[y1 - 1].any() and s.mask[:, x0].any() and s.mask[:, x1 - 1].any()


@pytest.mark.parametrize("bias", [0.9, 0.5])
def test_train_background_matches_the_class_with_probability_bias(bias: float) -> None:
    data = get_dataset("synthetic", size=2000, bias=bias)
    families = np.array([data.load("train", i).meta["background"] for i in range(0, 2000, 2)])
    labels = np.arange(0, 2000, 2) % len(SHAPES)
    assert abs((families == labels).mean() - bias) < 0.04
    assert set(families[families != labels]) == set(range(len(BACKGROUNDS)))


def test_test_variants_share_the_object_and_swap_the_background(data) -> None:
    for i in range(10):
        samples = {v: data.load(v, i) for v in TEST_VARIANTS}
        ref = samples["original"]
        for s in samples.values():
            np.testing.assert_array_equal(s.mask, ref.mask)
            np.testing.assert_array_equal(s.image[s.mask], ref.image[ref.mask])
            assert s.label == ref.label and s.group == s.label * 5 + s.meta["background"]
        k = len(BACKGROUNDS)
        assert ref.meta["background"] == samples["mixed_same"].meta["background"] == ref.label
        assert not np.array_equal(ref.image, samples["mixed_same"].image)
        assert samples["mixed_rand"].meta["background"] != ref.label
        assert samples["mixed_next"].meta["background"] == (ref.label + 1) % k


def test_families_differ_by_texture_not_by_colour(data) -> None:
    """The spurious cue is the texture (a CNN picks it up at once, see the README's table), not a single hue: the
    mean background colour says nothing about the family, while stripe orientation does."""

    def grey_background(s) -> np.ndarray:
        return np.where(s.mask, np.nan, s.image.astype(float).mean(axis=2))

    def orientation(s) -> float:  # > 0: the background varies along y (stripes), < 0: along x (columns)
        g = grey_background(s)
        return float(np.nanmean(np.abs(np.diff(g, axis=0))) - np.nanmean(np.abs(np.diff(g, axis=1))))

    samples = [data.load("original", i) for i in range(100)]
    stripes = [orientation(s) for s in samples if s.meta["background_name"] == "stripes"]
    columns = [orientation(s) for s in samples if s.meta["background_name"] == "columns"]
    assert min(stripes) > 0 > max(columns)
    colours = np.array([s.image[~s.mask].mean(axis=0) for s in samples])
    families = np.array([s.meta["background"] for s in samples])
    centroids = np.stack([colours[families == f].mean(axis=0) for f in range(5)])
    nearest = np.argmin(np.linalg.norm(colours[:, None] - centroids[None], axis=2), axis=1)
    assert (nearest == families).mean() < 0.6  # colour alone is a poor guide to the family


def test_every_family_is_two_tone_and_half_dark() -> None:
    """All families share a colour histogram (two tones, half the area each), so F(shuffle) leaves no cue."""
    from augment.datasets.synthetic import background

    for family in range(len(BACKGROUNDS)):
        dark = []
        for seed in range(40):
            g = background(family, 48, np.random.default_rng(seed)).mean(axis=2)
            dark.append((g < (g.min() + g.max()) / 2).mean())
        assert abs(np.mean(dark) - 0.5) < 0.03, (BACKGROUNDS[family], np.mean(dark))


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"--bias: got 1.5, expected a probability in \[0, 1\]"):
        get_dataset("synthetic", bias=1.5)
    assert get_dataset("synthetic").describe()["evaluation"]["bg_gap"] == {"same": "mixed_same", "rand": "mixed_rand"}
    with pytest.raises(ValueError, match="--image-size: got 8"):
        get_dataset("synthetic", image_size=8)
