"""Each method's own contract (docs/METHOD.md, Infills), with hand-checked small cases for tile."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import make_image, method_kwargs, rect_hole, tiled_background

from augment import infill
from augment.infill import grey, mixed_rand, random, shuffle_image, tile

RNG = np.random.default_rng


def test_grey_is_mid_grey_in_the_hole() -> None:
    image, hole = make_image(), rect_hole(12, 16, 2, 5, 3, 9)
    out = grey.fill(image, hole, RNG(0))
    assert (out[hole] == 128).all()


def test_random_is_one_colour_plus_sigma_02_noise_clipped_not_wrapped() -> None:
    image, hole = make_image(64, 64), np.ones((64, 64), bool)
    for seed in range(20):
        vals = random.fill(image, hole, RNG(seed))[hole].astype(float) / 255
        for c in range(3):
            channel = vals[:, c]
            inside = channel[(channel > 0.02) & (channel < 0.98)]
            # one colour per channel: the unclipped values sit within a few sigma of their median
            assert np.abs(inside - np.median(channel)).max() < 5 * random.SIGMA
            if inside.size > 0.9 * channel.size:  # colour away from the borders: the spread is sigma
                assert 0.15 < inside.std() < 0.25
    a = random.fill(image, hole, RNG(1))[hole].mean(axis=0)
    b = random.fill(image, hole, RNG(2))[hole].mean(axis=0)
    assert np.abs(a - b).max() > 5  # the colour is drawn per image


def test_shuffle_image_full_hole_is_a_permutation_of_the_image_values() -> None:
    image = make_image()
    out = shuffle_image.fill(image, np.ones(image.shape[:2], bool), RNG(0))
    assert sorted(out.ravel().tolist()) == sorted(image.ravel().tolist())
    assert not np.array_equal(out, image)
    assert not np.array_equal(out[..., 0], np.sort(out[..., 0]))


def test_shuffle_image_partial_hole_holds_the_image_own_values() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0] = np.arange(100).reshape(10, 10)  # values 0..99 appear once each in channel 0, 0 elsewhere
    hole = rect_hole(10, 10, 2, 6, 2, 6)
    filled = shuffle_image.fill(image, hole, RNG(3))[hole].ravel()
    available = Counter(image.ravel().tolist())
    assert all(available[v] >= n for v, n in Counter(filled.tolist()).items())  # a sub-multiset of the image


def grid(h: int, w: int) -> np.ndarray:
    """An image whose pixel (y, x) holds (y, x, 10y + x), so any copy is traceable to its source pixel."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y, x, 10 * y + x], axis=-1).astype(np.uint8)


def test_tile_longest_run():
    assert tile.longest_run(np.array([1, 1, 0, 1, 1, 0], bool)) == (0, 2)  # tie: the first run
    assert tile.longest_run(np.array([0, 1, 0, 1, 1, 1], bool)) == (3, 3)
    assert tile.longest_run(np.zeros(4, bool)) == (0, 0)


def test_tile_row_strip_wins_ties_with_columns() -> None:
    image, hole = grid(4, 4), rect_hole(4, 4, 2, 4, 0, 2)  # bg rows 0-1 (h=2), bg cols 2-3 (w=2): rows win
    out = tile.fill(image, hole, RNG(0))
    np.testing.assert_array_equal(out[2:4, 0:2], image[0:2, 0:2])


def test_tile_column_strip_when_wider() -> None:
    image, hole = grid(4, 5), rect_hole(4, 5, 0, 4, 0, 1)  # full-height hole in column 0: no bg row, bg cols 1-4
    out = tile.fill(image, hole, RNG(0))
    np.testing.assert_array_equal(out[:, 0], image[:, 1])  # tiling from the left starts with strip column 1


def test_tile_tied_runs_take_the_first_and_repeat_from_the_top() -> None:
    image, hole = grid(5, 4), rect_hole(5, 4, 2, 3, 0, 4)  # row 2 is the hole: runs rows 0-1 and 3-4 tie
    out = tile.fill(image, hole, RNG(0))
    np.testing.assert_array_equal(out[2], image[0])  # tiled rows 0,1,0,1,0: row 2 -> strip row 0


def test_tile_no_background_row_or_column_falls_back_to_grey() -> None:
    image, hole = grid(4, 4), np.eye(4, dtype=bool)
    out = tile.fill(image, hole, RNG(0))
    assert (out[hole] == grey.GREY).all()
    np.testing.assert_array_equal(out[~hole], image[~hole])


def test_tile_object_touching_the_left_border_is_filled() -> None:
    image, hole = grid(4, 6), rect_hole(4, 6, 1, 3, 0, 2)  # bg rows 0 and 3 (h=1), bg cols 2-5 (w=4): columns win
    out = tile.fill(image, hole, RNG(0))
    np.testing.assert_array_equal(out[1:3, 0:2], image[1:3, 2:4])


def test_tile_fills_only_with_background_pixels() -> None:
    image = make_image(20, 20, seed=4)
    hole = rect_hole(20, 20, 5, 12, 3, 15)
    out = tile.fill(image, hole, RNG(0))
    background = {tuple(p) for p in image[~hole].tolist()}
    assert all(tuple(p) in background for p in out[hole].tolist())


def test_mixed_rand_uses_the_donor_background_with_its_object_tiled_away() -> None:
    image = np.full((8, 8, 3), 50, np.uint8)
    obj = rect_hole(8, 8, 3, 5, 3, 5)
    image[obj] = 200
    donor_image = np.full((8, 8, 3), 10, np.uint8)
    donor_hole = rect_hole(8, 8, 0, 3, 0, 3)
    donor_image[donor_hole] = 255  # the donor's object: must not leak
    out = mixed_rand.fill(image, ~obj, RNG(0), donor=mixed_rand.Donor(donor_image, donor_hole))
    assert (out[~obj] == 10).all()
    assert (out[obj] == 200).all()


def test_mixed_rand_resizes_a_donor_of_another_size() -> None:
    image, hole = make_image(12, 16), ~rect_hole(12, 16, 3, 6, 3, 6)
    donor = mixed_rand.Donor(np.full((30, 20, 3), 77, np.uint8), np.zeros((30, 20), bool))
    out = mixed_rand.fill(image, hole, RNG(0), donor=donor)
    assert (out[hole] == 77).all()


@pytest.mark.parametrize("name", [n for n, m in infill.INFILLS.items() if not m.stochastic])
def test_deterministic_methods_do_not_depend_on_the_rng(name: str) -> None:
    image, hole = make_image(), rect_hole(12, 16, 2, 5, 3, 9)
    method = infill.INFILLS[name]
    kwargs = method_kwargs(method)
    first, second = method.fill(image, hole, RNG(0), **kwargs), method.fill(image, hole, RNG(1), **kwargs)
    np.testing.assert_array_equal(first, second)


def random_holes(n: int, h: int = 40, w: int = 56) -> list[np.ndarray]:
    """Holes of every shape the build passes: one box, a union of boxes (touching the border too), a background."""
    rng, holes = RNG(7), []
    for i in range(n):
        hole = np.zeros((h, w), bool)
        for _ in range(1 + i % 3):
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            hole[y0 : y0 + rng.integers(2, h), x0 : x0 + rng.integers(2, w)] = True
        holes.append(~hole if i % 4 == 3 else hole)
    return holes


def test_paste_and_the_fast_tile_equal_their_plain_numpy_definitions() -> None:
    """paste (cv2.copyTo, slice assignment) and tile (computed over the hole's bounding rectangle only) give the
    pixels of np.where over the whole image and of tiled_background, for boxes, unions of boxes and backgrounds."""
    for i, hole in enumerate(random_holes(24)):
        image, other = make_image(40, 56, seed=i), make_image(40, 56, seed=100 + i)
        assert np.array_equal(infill.paste(image, hole, other), np.where(hole[..., None], other, image))
        assert np.array_equal(infill.paste(image, hole, 17), np.where(hole[..., None], 17, image))
        tiled = tiled_background(image, hole)
        expected = grey.fill(image, hole, RNG(0)) if tiled is None else np.where(hole[..., None], tiled, image)
        assert np.array_equal(tile.fill(image, hole, RNG(0)), expected)


def test_scatter_places_values_in_row_major_hole_order() -> None:
    for i, hole in enumerate(random_holes(8)):
        image = make_image(40, 56, seed=i)
        values = RNG(i).integers(0, 256, (int(hole.sum()), 3), dtype=np.uint8)
        expected = image.copy()
        expected[hole] = values  # boolean indexing walks the hole in row-major order too
        assert np.array_equal(infill.scatter(image, hole, values), expected)


def random_fill_definition(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """random's fill written plainly in NumPy: the oracle for the OpenCV passes of random.fill."""
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    values = rng.standard_normal((int(hole.sum()), 3), dtype=np.float32) * np.float32(random.SIGMA) + colour
    out = image.copy()
    out[hole] = np.rint(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return out


def test_random_equals_its_plain_numpy_definition() -> None:
    holes = random_holes(24) + [np.zeros((40, 56), bool), np.ones((40, 56), bool), rect_hole(40, 56, 3, 4, 5, 6)]
    for i, hole in enumerate(holes):
        image = make_image(40, 56, seed=i)
        assert np.array_equal(random.fill(image, hole, RNG(i)), random_fill_definition(image, hole, RNG(i)))


def test_to_uint8_rounds_half_to_even_and_saturates_like_numpy() -> None:
    ties = np.arange(-3, 259, dtype=np.float32) + np.float32(0.5)  # every .5 of the range and beyond both ends
    near = np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))
    wide = np.random.default_rng(0).uniform(-300, 600, 100_000).astype(np.float32)
    for values in (ties, *near, wide, np.array([-np.inf, np.inf, 0.0, 255.0], np.float32)):
        expected = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        assert np.array_equal(infill.to_uint8(values).reshape(-1), expected)


def test_random_and_tile_equal_their_definitions_on_photographs() -> None:
    """The same oracles on crops of scikit-image's photographs, with boxes (some on the border, tall and wide, so
    that row and column strips both win) and the backgrounds of their objects."""
    data = pytest.importorskip("skimage.data")
    rng = RNG(11)
    for i, photo in enumerate([data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]):
        image = np.ascontiguousarray(photo[:160, :200, :3])
        for j in range(6):
            h, w = (150, int(rng.integers(20, 80))) if j % 2 else (int(rng.integers(20, 80)), 190)
            y0, x0 = (0, int(rng.integers(0, 200 - w))) if j == 3 else (int(rng.integers(0, 160 - h)), 0)
            hole = rect_hole(160, 200, y0, y0 + h, x0, x0 + w)
            for holed in (hole, ~hole):
                assert np.array_equal(random.fill(image, holed, RNG(j)), random_fill_definition(image, holed, RNG(j)))
            tiled = tiled_background(image, hole)
            assert tiled is not None
            assert np.array_equal(tile.fill(image, hole, RNG(0)), np.where(hole[..., None], tiled, image)), (i, j)
