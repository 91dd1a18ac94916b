"""CF telea (OpenCV's Telea inpainting): a build on every adapter's release layout, byte-identical across workers,
and what it does to a hole: the border carried in, the rest untouched.

The registry-wide properties (shape, dtype, the outside unchanged, same seed same bytes, empty and full holes) are
tests/augment/test_infill_properties.py's, which run over every registered method, telea included.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from upstream import photo_background, release_options

from augment import infill
from augment.config import BuildConfig
from augment.contract import schema
from augment.contract.shards import iter_records
from augment.runner.build import build
from augment.verify import verify


def shard_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))}


@pytest.mark.parametrize("dataset", ["synthetic", "in9", "waterbirds", "cct", "coco", "folder"])
def test_telea_builds_on_every_adapter_byte_identical_across_workers(dataset: str, tmp_path: Path) -> None:
    options = release_options(dataset, tmp_path / "src")
    # on_error skip: the folder fixture holds an empty class folder and files that are no images, on purpose
    # shard_size 2: several shards per split, so the two workers share each split's tasks
    config = BuildConfig(
        dataset=dataset, infill=["telea"], image_size=32, on_error="skip", dataset_options=options, shard_size=2
    )
    build(tmp_path / "one", config, workers=1, progress=False)
    manifest = build(tmp_path / "two", config, workers=2, progress=False)
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert verify(tmp_path / "two", progress=False)[0] == []
    assert shard_digests(tmp_path / "one") == shard_digests(tmp_path / "two")
    shards = [tmp_path / "two" / s["path"] for s in manifest["splits"]["train"]["shards"]]
    records = [fields for shard in shards for _, fields in iter_records(shard) if "cf.telea.jpg" in fields]
    assert records, f"{dataset}: no train sample got a CF image"
    for record in records:
        assert record["cf.telea.jpg"] != record[schema.IMAGE]  # the object's rectangle was filled


def test_the_hole_takes_the_colours_around_it_and_nothing_else_changes() -> None:
    """On a photo, a hole inside a uniform band is filled with that band's colour; outside it, bit for bit."""
    image = photo_background("astronaut", 64, 64).copy()
    image[16:48, 16:48] = (200, 40, 40)  # a red band around the hole
    hole = np.zeros((64, 64), bool)
    hole[24:40, 24:40] = True
    filled = infill.INFILLS["telea"].fill(image, hole, np.random.default_rng(0))
    assert np.array_equal(filled[~hole], image[~hole])
    assert np.abs(filled[hole].astype(int) - (200, 40, 40)).max() <= 4  # Telea extrapolates gradients: a few levels


def test_a_large_hole_is_smeared_not_textured() -> None:
    """What docs/METHOD.md says of a large hole: the border is carried inwards as a blur, so the middle of the hole
    has far less detail than the photo it replaced (tile keeps texture there)."""
    image = photo_background("chelsea", 96, 96)
    hole = np.zeros((96, 96), bool)
    hole[8:88, 8:88] = True

    def detail(x: np.ndarray) -> float:
        grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(float)[32:64, 32:64]
        return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())

    rng = np.random.default_rng(0)
    telea, tile = (infill.INFILLS[name].fill(image, hole, rng) for name in ("telea", "tile"))
    assert detail(telea) < 0.5 * detail(image) and detail(tile) > detail(telea)
