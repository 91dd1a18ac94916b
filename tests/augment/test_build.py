"""Build -> verify -> read back, determinism, and the checks `verify` must catch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import index_value

from augment.config import BuildConfig
from augment.contract import encode, schema
from augment.contract.shards import iter_records, write_shard
from augment.donors import Donors
from augment.errors import BuildError
from augment.masks import mask_to_box
from augment.runner import executors, journal, plan
from augment.runner.build import build
from augment.runner.plan import build_order
from augment.verify import verify

CONFIG = dict(dataset="indexed", infill=["tile", "grey", "shuffle"], factual=["mixed-rand", "random"], copies=2)


def run(out: Path, workers: int = 1, shard_size: int = 4, **overrides) -> dict:
    return build(out, BuildConfig(**{**CONFIG, "shard_size": shard_size, **overrides}), workers=workers, progress=False)


def level(image: np.ndarray) -> int:
    """The grey level of the object-free bottom-right 8x8 JPEG block (no ringing from the object)."""
    return int(np.median(image[16:24, 16:24]))


def shard_hashes(manifest: dict) -> list[tuple[str, str]]:
    return [(s["path"], s["sha256"]) for split in manifest["splits"].values() for s in split["shards"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("build") / "out"
    return out, run(out, workers=2)


def test_manifest_records_counts_shards_and_provenance(built) -> None:
    out, manifest = built
    assert manifest["num_samples"] == 22 and manifest["seed"] == 0
    train = manifest["splits"]["train"]
    assert train["num_samples"] == 11 and [s["num_samples"] for s in train["shards"]] == [4, 4, 3]
    assert train["per_class"] == {"a": 4, "b": 4, "c": 3}
    assert manifest["splits"]["test"]["augmented"] is False
    assert manifest["dataset"] == {
        "name": "indexed",
        "fingerprint": "indexed-11-0",
        "params": {"n": 11},
        "classes": ["a", "b", "c"],
    }
    assert manifest["options"]["infill"] == ["tile", "grey", "shuffle"]
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert (out / shard["path"]).stat().st_size == shard["bytes"]
    assert json.loads((out / schema.MANIFEST).read_text()) == manifest
    assert not list(out.rglob("*.tmp"))


def test_verify_passes_on_a_fresh_build(built) -> None:
    out, _ = built
    problems, read = verify(out, progress=False)
    assert problems == [] and read == 22


def test_plain_webdataset_reads_every_key_once_with_its_label_and_fields(built) -> None:
    out, manifest = built
    urls = [str(out / s["path"]) for s in manifest["splits"]["train"]["shards"]]
    seen = Counter()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        key = sample["__key__"]
        seen[key] += 1
        index = int(key.split("_")[1])
        meta = sample["json"]
        assert meta["label"] == index % 3 == int(sample["cls"]) and meta["key"] == key
        assert abs(level(sample["jpg"]) - index_value(index)) <= 3  # the pixels prove which sample this is
        expected = set(plan.record_fields(index % 4 != 3, True, CONFIG["infill"], CONFIG["factual"], 2))
        assert {k for k in sample if not k.startswith("__")} == expected
        if index % 4 != 3:
            assert sample["cf.tile.jpg"].shape == (24, 24, 3)
            # mixed-rand's background comes from a donor of another class: its grey level names the donor
            donor_level = level(sample["f.mixed-rand.0.jpg"])
            donor = int(np.argmin([abs(index_value(i) - donor_level) for i in range(11)]))
            assert donor % 3 != index % 3 and donor % 4 != 3  # another class, and annotated
    assert sorted(seen) == [f"train_{i:04d}" for i in range(11)] and set(seen.values()) == {1}


def test_tar_lists_the_documented_names(built) -> None:
    out, _ = built
    names = [
        n
        for shard in sorted(out.glob("train/shard-*.tar"))  # the build order spreads samples over the shards
        for n in subprocess.run(["tar", "-tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    ]
    assert "train_0000.cf.tile.jpg" in names and "train_0000.f.random.1.jpg" in names
    assert "train_0003.jpg" in names and "train_0003.mask.png" not in names  # no annotation: plain sample
    assert all("." not in n.split(".")[0] for n in names)


def test_mask_png_is_the_object(built) -> None:
    out, manifest = built
    for shard in manifest["splits"]["test"]["shards"][:1]:
        sample = next(s for s in wds.WebDataset(str(out / shard["path"]), shardshuffle=False) if "mask.png" in s)
        mask = encode.decode_mask(sample["mask.png"])
        assert mask[4:10, 6:12].all() and mask.sum() == 36


def test_same_seed_gives_identical_shards_whatever_the_workers(tmp_path: Path, built) -> None:
    _, reference = built
    assert shard_hashes(run(tmp_path / "w1", workers=1)) == shard_hashes(reference)
    assert shard_hashes(run(tmp_path / "w2", workers=2)) == shard_hashes(reference)
    other = shard_hashes(run(tmp_path / "seed", seed=1))
    assert other != shard_hashes(reference)


@pytest.fixture(params=["forked", "loky"])
def executor(request, monkeypatch) -> str:
    """Local workers of either kind: forked from the build's process (Linux, torch not imported) or loky's fresh
    interpreters (elsewhere). Which one a test in this process gets would otherwise depend on the tests before it."""
    monkeypatch.setattr(executors, "forking_is_safe", lambda: request.param == "forked")
    return request.param


def test_synthetic_build_is_byte_identical_across_worker_counts(tmp_path: Path, executor: str) -> None:
    kw = dict(
        dataset="synthetic", infill=["tile", "shuffle"], factual=["shuffle", "mixed-rand"], dataset_options={"size": 40}
    )
    a = build(tmp_path / "a", BuildConfig(**kw, shard_size=16), workers=1, progress=False)
    b = build(tmp_path / "b", BuildConfig(**kw, shard_size=16), workers=2, progress=False)
    assert shard_hashes(a) == shard_hashes(b) and a["num_samples"] == 40 + 5 * 8
    assert verify(tmp_path / "b", progress=False)[0] == []


def test_a_worker_that_dies_stops_the_build_with_an_error_that_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(executors, "forking_is_safe", lambda: True)
    out = tmp_path / "out"
    with pytest.raises(
        BuildError,
        match=r"a worker process died mid-task.*try fewer than --workers 2.* re-running the "
        "same command resumes",
    ):
        run(out, workers=2, infill=["tile"], dataset_options={"die_at": int(build_order(0, "train", 11)[5])})
    assert not (out / schema.MANIFEST).exists() and not list(out.rglob("*.tmp"))
    assert all(journal.intact(out, r) for r in journal.read_done(out).values())


def corrupt_copy(tmp_path: Path, built, how: str) -> tuple[Path, Path]:
    src, _ = built
    out = tmp_path / how
    subprocess.run(["cp", "-r", str(src), str(out)], check=True)
    shard = out / "train/shard-000001.tar"
    shard.chmod(0o644)
    data = bytearray(shard.read_bytes())
    if how == "flip":
        data[1500] ^= 0x01
        shard.write_bytes(bytes(data))
    elif how == "missing":
        shard.unlink()
    elif how == "truncated":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    return out, shard


@pytest.mark.parametrize(
    "how,message", [("flip", "sha256 mismatch"), ("missing", "missing shard"), ("truncated", "bytes, manifest says")]
)
def test_verify_names_the_damaged_shard(tmp_path: Path, built, how: str, message: str) -> None:
    out, shard = corrupt_copy(tmp_path, built, how)
    problems, _ = verify(out, progress=False)
    assert problems, f"verify missed a {how} shard"
    assert any(str(shard) in p and message in p for p in problems), problems
    assert all(str(shard) in p or "per-class" in p or "samples read" in p for p in problems), problems


def test_verify_reports_a_stray_shard_and_a_missing_manifest(tmp_path: Path, built) -> None:
    out, _ = corrupt_copy(tmp_path, built, "copy")
    (out / "train/shard-000009.tar").write_bytes(b"")
    assert any("not listed" in p for p in verify(out, progress=False)[0])
    (out / schema.MANIFEST).unlink()
    assert "no manifest" in verify(out, progress=False)[0][0]


def test_out_folder_rules_refuse_foreign_files_and_other_commands_and_rerun_the_same_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match=r"not empty \(it holds files\); choose another folder"):
        run(out)
    with pytest.raises(BuildError, match="not an augment build"):
        build(out, BuildConfig(**CONFIG), overwrite=True, progress=False)
    (out / "notes.txt").unlink()
    first = run(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}
    assert run(out) == first  # the same command again: every shard checks out, nothing is rewritten
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")} == stamps and not (out / ".build").exists()
    with pytest.raises(BuildError, match=r"holds an earlier build of another command; differs in options.seed: 0 -> 1"):
        run(out, seed=1)
    (out / schema.MANIFEST).unlink()
    with pytest.raises(BuildError, match=r"unfinished build without a plan"):
        run(out)
    rebuilt = build(out, BuildConfig(**{**CONFIG, "shard_size": 11}), overwrite=True, progress=False)
    assert sorted(p.name for p in out.glob("train/*")) == ["shard-000000.tar"]  # old shards gone
    assert verify(out, progress=False)[0] == [] and rebuilt["num_samples"] == 22


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_sample_stops_the_build_naming_it_and_keeps_the_finished_shards(
    tmp_path: Path, workers: int, executor: str
) -> None:
    out = tmp_path / "out"
    failing = int(build_order(0, "train", 11)[5])  # stored at position 5 of the build order: in shard 1, after shard 0
    with pytest.raises(
        BuildError,
        match=rf"train sample {failing} of indexed.*: OSError: disk on fire.* re-running "
        "the same command resumes",
    ):
        # no shuffle: its value pool would load the failing sample before the first shard (test_shuffle_pool.py)
        run(out, workers=workers, infill=["tile", "grey"], dataset_options={"fail_at": failing})
    assert not (out / schema.MANIFEST).exists() and not list(out.rglob("*.tmp"))
    done = journal.read_done(out)
    files = {f"{p.parent.name}-{p.stem[6:]}": p for p in out.glob("*/shard-*.tar")}
    assert set(done) <= set(files)  # a worker stopped between its shard's rename and its record leaves it unrecorded
    assert all(sum(1 for _ in iter_records(p)) >= 3 for p in files.values())  # but whole: a resume rebuilds it
    assert all(journal.intact(out, r) for r in done.values()) and "train-000001" not in done
    assert workers == 2 or "train-000000" in done  # one process: the shard before the failing one is finished
    with pytest.raises(BuildError, match="holds an unfinished build of another command; differs in options"):
        run(out, workers=workers)  # the source changed (here: an option): the kept shards may not belong to it
    manifest = build(out, BuildConfig(**{**CONFIG, "shard_size": 4}), overwrite=True, workers=workers, progress=False)
    assert verify(out, progress=False)[0] == [] and manifest["num_samples"] == 22


def test_donors_are_always_of_another_class_and_cover_them_all() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 0])
    donors = Donors.of(labels)
    rng = np.random.default_rng(0)
    for label in range(3):
        picks = {donors.pick(label, rng) for _ in range(200)}
        assert picks == set(np.flatnonzero(labels != label).tolist())
    assert Donors.of(np.zeros(4, int)).pick(0, rng) is None


def test_record_json_has_exactly_the_declared_keys(built) -> None:
    out, manifest = built
    for shard in manifest["splits"]["train"]["shards"][:1]:
        for sample in wds.WebDataset(str(out / shard["path"]), shardshuffle=False).decode():
            # every declared key but bank, which only records with f.bank images carry (tests/augment/test_bank.py)
            assert set(sample["json"]) == set(schema.SAMPLE_JSON) - {"bank"}


def test_bad_configs_are_rejected_with_the_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid --factual choices"):
        run(tmp_path / "x", factual=["tile"])
    with pytest.raises(ValueError, match="given twice"):
        run(tmp_path / "x", infill=["tile", "tile"])
    with pytest.raises(ValueError, match="unknown dataset 'nope'; valid choices: synthetic"):
        run(tmp_path / "x", dataset="nope")
    with pytest.raises(ValueError, match="--dataset synthetic does not take --root; it takes --size, --bias"):
        run(tmp_path / "x", dataset="synthetic", dataset_options={"root": "/data"})


def test_the_augment_modules_do_not_import_torch() -> None:
    """Heavy imports stay deferred: a build worker must not pay torch's ~650 MB and ~1.7 s."""
    code = (
        "import sys, augment.cli, augment.runner.build, augment.verify, augment.preview; print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def rewrite_manifest(out: Path, edit) -> None:
    manifest = json.loads((out / schema.MANIFEST).read_text())
    edit(manifest)
    (out / schema.MANIFEST).chmod(0o644)
    (out / schema.MANIFEST).write_text(json.dumps(manifest))


def test_verify_catches_counts_that_disagree_with_the_shards(tmp_path: Path, built) -> None:
    out, _ = corrupt_copy(tmp_path, built, "counts")
    rewrite_manifest(out, lambda m: (m["splits"]["train"].update(num_samples=999), m.update(num_samples=12345)))
    problems = verify(out, progress=False)[0]
    assert any("11 samples read, manifest says 999" in p for p in problems), problems
    assert any("22 samples read, num_samples says 12345" in p for p in problems), problems


def test_verify_refuses_shard_paths_outside_the_build(tmp_path: Path, built) -> None:
    out, _ = corrupt_copy(tmp_path, built, "escape")
    rewrite_manifest(out, lambda m: m["splits"]["train"]["shards"][0].update(path="/etc/passwd"))
    assert "must be a relative path inside the split folder train/" in verify(out, progress=False)[0][0]
    rewrite_manifest(out, lambda m: m["splits"]["train"]["shards"][0].update(path="train/../../x.tar"))
    assert "must be a relative path" in verify(out, progress=False)[0][0]
    rewrite_manifest(out, lambda m: m["splits"]["train"]["shards"][0].pop("bytes"))
    assert "bytes is missing or not a int" in verify(out, progress=False)[0][0]


def test_verify_reports_a_json_field_that_is_not_an_object(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = run(out)
    shard = manifest["splits"]["test"]["shards"][0]
    path = out / shard["path"]
    records = [{"__key__": k, **f} for k, f in iter_records(path)]
    records[0]["json"] = b"[1, 2]"
    path.chmod(0o644)
    info = write_shard(path, records)
    rewrite_manifest(out, lambda m: m["splits"]["test"]["shards"][0].update(sha256=info["sha256"], bytes=info["bytes"]))
    problems = verify(out, progress=False)[0]
    assert any("json holds a list, expected an object" in p and str(path) in p for p in problems), problems


def test_stored_cf_images_equal_the_original_away_from_the_hole(built) -> None:
    """JPEG codes 8x8 blocks independently (4:4:4): blocks that do not touch the hole decode identically."""
    out, manifest = built
    sample = next(
        s
        for s in wds.WebDataset(str(out / manifest["splits"]["train"]["shards"][0]["path"]), shardshuffle=False).decode(
            "rgb8"
        )
        if "mask.png" in s
    )
    x0, y0, x1, y1 = mask_to_box(sample["mask.png"][..., 0] > 0)  # the CF hole is the mask's rectangle
    for field in ("cf.tile.jpg", "cf.grey.jpg", "cf.shuffle.0.jpg"):
        for by in range(3):
            for bx in range(3):
                block = np.s_[by * 8 : by * 8 + 8, bx * 8 : bx * 8 + 8]
                touches = by * 8 < y1 and y0 < by * 8 + 8 and bx * 8 < x1 and x0 < bx * 8 + 8
                same = np.array_equal(sample[field][block], sample["jpg"][block])
                assert same or touches, (field, by, bx)
