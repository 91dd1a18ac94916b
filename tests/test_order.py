"""Sample order (issue #12): sources list their images class by class, yet every shard and every training batch must
be a random draw of its split. The build permutes each split before cutting shards; the loader mixes shards it does
not trust (older builds, other tools) on its own."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from upstream import make_in9

from augment import schema
from augment.build import BuildConfig, BuildError, build, build_order, merge
from augment.datasets import get_dataset
from augment.shards import iter_records
from augment.verify import verify

PER_CLASS = 60  # IN-9 train images per class: 3 classes x 60, listed class by class as IN-9's folders are
SHARD_SIZE = 20  # 9 train shards
IN9 = dict(dataset="in9", image_size=32, shard_size=SHARD_SIZE, infill=["tile"], factual=["mixed-rand"])
# A shard's class counts against the split's proportions: Pearson's chi-square. A shard is a sample without
# replacement, whose counts vary less than the multinomial's, so chi-square with K - 1 = 2 degrees of freedom bounds
# the statistic's tail: P(X > x) = exp(-x / 2), so 18.4 is exceeded with probability 1e-4 per shard (1e-3 over the
# 9 shards; the seed is fixed, so a pass is a pass for every run with this NumPy). The build's shards score 3.1 at
# most; cut in source order, every shard is class-pure and scores 40.
CHI2_BOUND = -2 * math.log(1e-4)


@pytest.fixture(scope="module")
def in9_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("in9") / "bg_challenge"
    make_in9(root, per_class=PER_CLASS)
    return root


@pytest.fixture(scope="module")
def in9_build(in9_root: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("order") / "out"
    config = BuildConfig(**IN9, dataset_options={"root": str(in9_root)})
    return out, build(out, config, workers=2, progress=False)


def chi2(counts: Counter[int], proportions: dict[int, float]) -> float:
    n = sum(counts.values())
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in proportions.items())


def shard_labels(out: Path, manifest: dict, split: str) -> list[list[int]]:
    shards = manifest["splits"][split]["shards"]
    return [[int(f["cls"]) for _, f in iter_records(out / s["path"], {"cls"})] for s in shards]


def test_every_shard_of_a_class_ordered_source_holds_the_split_mix(in9_root: Path, in9_build) -> None:
    out, manifest = in9_build
    refs = get_dataset("in9", root=str(in9_root)).splits()["train"].refs
    source = [r.label for r in refs]
    assert source == sorted(source) and len(source) == 3 * PER_CLASS  # the fixture is in strict class order
    proportions = {k: n / len(source) for k, n in Counter(source).items()}

    shards = shard_labels(out, manifest, "train")
    assert [len(s) for s in shards] == [SHARD_SIZE] * 9
    scores = [chi2(Counter(s), proportions) for s in shards]
    assert max(scores) < CHI2_BOUND, scores
    cut_in_source_order = [source[i : i + SHARD_SIZE] for i in range(0, len(source), SHARD_SIZE)]
    assert max(chi2(Counter(s), proportions) for s in cut_in_source_order) > CHI2_BOUND  # v1 would fail the test

    # the documented order: shard position p holds source sample build_order(seed, split, n)[p]
    keys = [k for s in manifest["splits"]["train"]["shards"] for k, _ in iter_records(out / s["path"], {"cls"})]
    assert keys == [refs[i].key for i in build_order(0, "train", len(refs))]
    assert verify(out, progress=False)[0] == []


def test_the_order_is_seeded_per_split_and_a_permutation() -> None:
    a = build_order(0, "train", 50)
    assert sorted(a.tolist()) == list(range(50)) and a.tolist() != list(range(50))
    assert np.array_equal(a, build_order(0, "train", 50))
    assert not np.array_equal(a, build_order(1, "train", 50)) and not np.array_equal(a, build_order(0, "val", 50))


def test_permuted_shards_are_the_same_bytes_whatever_the_workers_or_slices(in9_root: Path, in9_build,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    _, reference = in9_build
    config = dict(**IN9, dataset_options={"root": str(in9_root)})
    one = build(tmp_path / "one", BuildConfig(**config), workers=1, progress=False)
    sliced = tmp_path / "sliced"
    total = sum(len(s["shards"]) for s in reference["splits"].values())
    build(sliced, BuildConfig(**config), shard_range="4:", workers=2, progress=False)
    build(sliced, BuildConfig(**config), shard_range="0:4", progress=False)
    merged = merge(sliced)
    hashes = [[(s["path"], s["sha256"]) for split in m["splits"].values() for s in split["shards"]]
              for m in (reference, one, merged)]  # fmt: skip
    assert len(hashes[0]) == total and hashes[0] == hashes[1] == hashes[2]
    assert reference == one == merged  # the manifests too


def test_version_1_builds_are_still_read_but_not_resumed_as_version_2(in9_root: Path, in9_build,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    from train.data import read_manifest

    src, _ = in9_build
    out = tmp_path / "v1"
    out.mkdir()
    for path in src.rglob("*"):
        if path.is_file():
            (out / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (out / path.relative_to(src)).write_bytes(path.read_bytes())
    manifest = json.loads((out / schema.MANIFEST).read_text())
    (out / schema.MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    assert schema.read_manifest(out)["format_version"] == 1 and read_manifest(out)["format_version"] == 1
    assert verify(out, progress=False)[0] == []
    with pytest.raises(BuildError, match=r"differs in format_version: 1 -> 2"):
        build(out, BuildConfig(**IN9, dataset_options={"root": str(in9_root)}), progress=False)
    for bad in (3, True, "2"):
        (out / schema.MANIFEST).write_text(json.dumps({**manifest, "format_version": bad}))
        with pytest.raises(ValueError, match=r"format_version .*this tool reads 1, 2"):
            schema.read_manifest(out)
