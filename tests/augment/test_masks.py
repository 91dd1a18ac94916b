"""The two holes derived from an annotation."""

from __future__ import annotations

import numpy as np

from augment import masks


def test_cf_hole_is_the_union_of_boxes() -> None:
    boxes = np.array([[1, 1, 3, 3], [5, 4, 7, 6]])
    hole = masks.cf_hole(None, boxes, (8, 8))
    assert hole.sum() == 4 + 4 and hole[1, 1] and hole[5, 6] and not hole[3, 3]


def test_cf_hole_of_a_segmentation_is_its_bounding_rectangle() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2, 3] = mask[5, 6] = True
    hole = masks.cf_hole(mask, None, (8, 8))
    assert hole[2:6, 3:7].all() and hole.sum() == 16


def test_f_hole_is_everything_outside_the_exact_object() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:3, 2:5] = True
    mask[2, 2] = False
    np.testing.assert_array_equal(masks.f_hole(mask, np.array([[0, 0, 6, 6]]), (6, 6)), ~mask)  # mask beats boxes
    np.testing.assert_array_equal(
        masks.f_hole(None, np.array([[1, 1, 3, 4]]), (6, 6)), ~masks.boxes_to_mask(np.array([[1, 1, 3, 4]]), (6, 6))
    )


def test_no_annotation_means_no_hole() -> None:
    empty = np.zeros((4, 4), bool)
    for m, b in ((None, None), (empty, None), (None, np.zeros((0, 4))), (None, np.array([[2, 2, 2, 3]]))):
        assert masks.cf_hole(m, b, (4, 4)) is None
        assert masks.f_hole(m, b, (4, 4)) is None


def test_boxes_are_clipped_to_the_image() -> None:
    hole = masks.boxes_to_mask(np.array([[-3, -2, 2, 2], [3, 3, 10, 10]]), (4, 4))
    assert hole[:2, :2].all() and hole[3, 3] and hole.sum() == 5
