"""The trainer's crop and flip: one draw per sample, applied to every view by slicing."""

from __future__ import annotations

import torch

from train.data import apply_view, centre_view, draw_view


def test_draws_cover_every_offset_and_both_flips_and_are_seeded() -> None:
    torch.manual_seed(0)
    views = [draw_view(8, 10, 6) for _ in range(400)]
    assert {v.top for v in views} == set(range(3)) and {v.left for v in views} == set(range(5))
    assert {v.flip for v in views} == {False, True}
    torch.manual_seed(0)
    assert [draw_view(8, 10, 6) for _ in range(400)] == views


def test_a_view_crops_flips_and_pads_like_randomcrop() -> None:
    x = torch.arange(2 * 4 * 5).view(2, 4, 5)
    torch.manual_seed(1)
    view = draw_view(4, 5, 3)
    out = apply_view(x, view)
    expected = x[:, view.top : view.top + 3, view.left : view.left + 3]
    assert torch.equal(out, expected.flip(-1) if view.flip else expected)
    small = draw_view(4, 5, 6)  # smaller than the crop: zero padding on every side first
    assert small.pad_h == 2 and small.pad_w == 1 and apply_view(x, small).shape == (2, 6, 6)
    padded = torch.nn.functional.pad(x, (1, 1, 2, 2))
    window = padded[:, small.top : small.top + 6, small.left : small.left + 6]
    assert torch.equal(apply_view(x, small), window.flip(-1) if small.flip else window)


def test_the_evaluation_view_is_the_centre() -> None:
    view = centre_view(32, 32, 28)
    assert (view.top, view.left, view.flip) == (2, 2, False)
    x = torch.zeros(1, 32, 32)
    x[:, 2:30, 2:30] = 1
    assert apply_view(x, view).min() == 1
