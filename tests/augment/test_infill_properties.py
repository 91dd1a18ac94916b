"""Properties every registered infill method must have, in every role it is registered for."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import make_image, method_kwargs, rect_hole

from augment import infill

CASES = [(name, role) for name, m in infill.INFILLS.items() for role in infill.ROLES if role in m.roles]
H, W = 12, 16


def call(name: str, image: np.ndarray, hole: np.ndarray, seed: int = 0) -> np.ndarray:
    """Call a method the way the build does: donor methods get a fixed donor with an object of its own, model
    methods a small untrained model."""
    method = infill.INFILLS[name]
    return method.fill(image, hole, np.random.default_rng(seed), **method_kwargs(method, H, W))


HOLES = {
    "rect": rect_hole(H, W, 3, 8, 4, 11),
    "background": ~rect_hole(H, W, 3, 8, 4, 11),
    "left-border": rect_hole(H, W, 0, 12, 0, 5),
    "scattered": np.random.default_rng(5).random((H, W)) < 0.3,
}


def test_registry_is_not_empty_and_names_are_unique_words() -> None:
    assert {"grey", "random", "shuffle", "tile", "mixed-rand", "cagan"} <= set(infill.INFILLS)
    for name in infill.INFILLS:
        assert "." not in name and name == infill.INFILLS[name].name


@pytest.mark.parametrize("name,role", CASES)
@pytest.mark.parametrize("hole_name", list(HOLES))
def test_shape_dtype_kept_input_untouched_outside_unchanged(name: str, role: str, hole_name: str) -> None:
    image, hole = make_image(H, W), HOLES[hole_name]
    image_copy, hole_copy = image.copy(), hole.copy()
    out = call(name, image, hole)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, image_copy)  # input not mutated
    np.testing.assert_array_equal(hole, hole_copy)
    np.testing.assert_array_equal(out[~hole], image[~hole])  # bit for bit outside the hole
    assert out is not image


@pytest.mark.parametrize("name,role", CASES)
def test_same_seed_same_bytes(name: str, role: str) -> None:
    image, hole = make_image(H, W), HOLES["rect"]
    assert call(name, image, hole, seed=3).tobytes() == call(name, image, hole, seed=3).tobytes()
    method = infill.INFILLS[name]
    if method.stochastic and not (method.needs_donor or method.needs_background):  # their randomness is the draw
        assert call(name, image, hole, seed=3).tobytes() != call(name, image, hole, seed=4).tobytes()


@pytest.mark.parametrize("name,role", CASES)
def test_empty_hole_is_identity_and_full_hole_works(name: str, role: str) -> None:
    image = make_image(H, W)
    np.testing.assert_array_equal(call(name, image, np.zeros((H, W), bool)), image)
    full = call(name, image, np.ones((H, W), bool))
    assert full.shape == image.shape and full.dtype == np.uint8


@pytest.mark.parametrize("name", list(infill.INFILLS))
def test_method_is_picklable(name: str) -> None:
    method = pickle.loads(pickle.dumps(infill.INFILLS[name]))
    image, hole = make_image(H, W), HOLES["rect"]
    out = method.fill(image, hole, np.random.default_rng(0), **method_kwargs(method, H, W))
    np.testing.assert_array_equal(call(name, image, hole), out)


@pytest.mark.parametrize("name", list(infill.INFILLS))
def test_bad_inputs_are_rejected_with_the_expected_form(name: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        call(name, make_image(H, W).astype(np.float32), HOLES["rect"])
    with pytest.raises(ValueError, match="expected bool"):
        call(name, make_image(H, W), HOLES["rect"].astype(np.uint8))


def test_lookup_errors_list_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="valid choices: grey, random, shuffle, shuffle-image, tile"):
        infill.get_infill("blur", infill.CF)
    with pytest.raises(ValueError, match="'tile' is a CF-only method; valid --factual choices: random, shuffle"):
        infill.get_infill("tile", infill.F)
    with pytest.raises(ValueError, match="registered twice"):
        infill.register("grey", roles=(infill.CF,), stochastic=False, summary="again")(lambda i, h, r: i)


def test_field_names_follow_the_registry_name() -> None:
    assert infill.field_names("tile", infill.CF, 3) == ["cf.tile.jpg"]
    assert infill.field_names("shuffle", infill.F, 2) == ["f.shuffle.0.jpg", "f.shuffle.1.jpg"]
    assert infill.field_names("mixed-rand", infill.F, 1) == ["f.mixed-rand.0.jpg"]


@pytest.mark.parametrize("name", [n for n, m in infill.INFILLS.items() if m.batch is not None])
def test_batched_methods_match_one_image_at_a_time(name: str) -> None:
    method = infill.INFILLS[name]
    images = [make_image(H, W, seed=s) for s in range(5)]
    holes = [HOLES["rect"], HOLES["left-border"], HOLES["rect"], HOLES["scattered"], HOLES["background"]]
    kwargs = method_kwargs(method, H, W)
    batched = method.batch(images, holes, **kwargs)
    for image, hole, out in zip(images, holes, batched, strict=True):
        np.testing.assert_array_equal(out[~hole], image[~hole])
        single = method.fill(image, hole, np.random.default_rng(0), **kwargs)
        assert np.abs(out.astype(int) - single.astype(int)).max() <= 1  # batch composition may move a rounding
