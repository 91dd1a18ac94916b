"""Masks when a dataset has none (``--masks-from``): the gate, ``box``, ``grabcut`` on images whose true masks are
known (synthetic shapes, and objects pasted on scikit-image's photographs in a class-ordered folder with a
boxes.csv, as box-only datasets are released), and the whole build path: sample JSON, mask field, manifest, info,
preview, byte-reproducibility."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from augment import masks
from augment.cli import app
from augment.contract import encode, schema
from augment.contract.shards import iter_records
from augment.datasets import Sample, get_dataset
from augment.mask_sources import MASK_SOURCES, Outcome, refine, resolve
from augment.mask_sources.gate import GATE, gate
from augment.mask_sources.grabcut import grabcut

runner = CliRunner()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def box_of(mask: np.ndarray) -> np.ndarray:
    return masks.mask_to_box(mask)[None]


# ---- the gate -----------------------------------------------------------------------------------------------------


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_the_gate_passes_an_object_inside_its_box_and_refuses_spills_slivers_and_the_box_itself() -> None:
    shape = (40, 40)
    box = np.array([[10, 10, 30, 30]])
    assert gate(disc(shape, 20, 20, 9), box, shape) is None  # pi/4 of the box
    spill = disc(shape, 20, 20, 14)  # well past the box's sides
    assert "inside its box" in gate(spill, box, shape)
    sliver = np.zeros(shape, bool)
    sliver[19:21, 19:21] = True
    assert "covers 0.01 of its box" in gate(sliver, box, shape)
    assert "of its box" in gate(masks.boxes_to_mask(box, shape), box, shape)  # the box itself: no better
    assert gate(np.zeros(shape, bool), box, shape) == "empty mask" and gate(None, box, shape) == "empty mask"
    assert "shape" in gate(np.ones((4, 4), bool), box, shape)


def test_without_boxes_the_gate_bounds_the_share_of_the_image() -> None:
    shape = (50, 50)
    assert gate(disc(shape, 25, 25, 12), None, shape) is None
    assert "of the image" in gate(disc(shape, 25, 25, 2), None, shape)  # under image_cover_min
    assert "of the image" in gate(np.ones(shape, bool), None, shape)
    assert GATE["image_cover_min"] < np.pi * 12**2 / 2500 < GATE["image_cover_max"]


# ---- grabcut on images whose true masks are known ----------------------------------------------------------------


def synthetic_samples(n: int, image_size: int = 64) -> list[Sample]:
    data = get_dataset("synthetic", seed=0, image_size=image_size, size=max(n, 10))
    return [data.load("train", i) for i in range(n)]


def test_grabcut_from_the_box_recovers_the_true_masks_of_synthetic_shapes() -> None:
    samples = synthetic_samples(40)
    outs = resolve("grabcut", samples, seed=0)
    got, baseline = [], []
    for s, o in zip(samples, outs, strict=True):
        box = masks.boxes_to_mask(box_of(s.mask), s.mask.shape)
        got.append(iou(o.mask if o.mask is not None else box, s.mask))  # a fallback counts as the box
        baseline.append(iou(box, s.mask))
        assert o.boxes.tolist() == box_of(s.mask).tolist()  # the box it started from: the CF hole stays the same
        assert o.source == ("grabcut" if o.mask is not None else "box")
    assert np.mean(got) > 0.9 and np.mean(baseline) < 0.7, (np.mean(got), np.mean(baseline))
    assert sum(o.source == "grabcut" for o in outs) >= 35


def test_grabcut_is_the_same_for_a_seed_whatever_opencv_drew_before() -> None:
    import cv2

    s = synthetic_samples(3)[2]
    first = grabcut(s.image, box_of(s.mask), seed=7)
    cv2.setRNGSeed(123)
    cv2.randu(np.zeros((50, 50), np.uint8), 0, 255)  # moves OpenCV's generator
    assert np.array_equal(grabcut(s.image, box_of(s.mask), seed=7), first)


def test_grabcut_cannot_run_on_a_box_over_the_whole_image_and_the_sample_falls_back_to_the_box() -> None:
    s = synthetic_samples(1)[0]
    whole = np.array([[0, 0, s.image.shape[1], s.image.shape[0]]])
    assert grabcut(s.image, whole, seed=0) is None
    sample = Sample("k", s.image, 0, "c", "train", "x", boxes=whole)
    (out,) = refine([sample], ConfigLike("grabcut"))
    assert out.mask is None and out.boxes.tolist() == whole.tolist()
    assert out.mask_source == "box" and out.mask_gate == "empty mask"


class ConfigLike:
    def __init__(self, masks_from: str, seed: int = 0) -> None:
        self.masks_from, self.seed, self.mask_weights, self.device = masks_from, seed, None, "cpu"


def test_box_keeps_only_the_boxes_and_annotation_keeps_the_dataset_s_mask() -> None:
    s = synthetic_samples(1)[0]
    (boxed,) = refine([s], ConfigLike("box"))
    assert boxed.mask is None and boxed.boxes.tolist() == box_of(s.mask).tolist() and boxed.mask_source == "box"
    assert masks.f_hole(boxed.mask, boxed.boxes, s.mask.shape).sum() == s.mask.size - (
        masks.boxes_to_mask(boxed.boxes, s.mask.shape).sum()
    )  # the F hole is everything outside the box
    (kept,) = refine([s], ConfigLike("annotation"))
    assert kept.mask is s.mask and kept.mask_source == "annotation"
    plain = Sample("p", s.image, 0, "c", "train", "x")
    assert resolve("grabcut", [plain], seed=0) == [Outcome(None, None, None)]  # nothing to start from


def test_every_registered_source_is_listed_with_its_settings() -> None:
    assert {"annotation", "box", "grabcut", "sam", "cam"} <= set(MASK_SOURCES)
    for name, source in MASK_SOURCES.items():
        assert source.name == name and source.summary
        if source.needs_weights:
            assert source.load is not None and source.check is not None and source.weights_help
        json.dumps(source.params)  # recorded in the manifest


# ---- a box-only dataset of photographs, in class order -----------------------------------------------------------


def photo_folder(root: Path, per_class: int = 4) -> dict[str, np.ndarray]:
    """A folder-adapter tree, written class by class, of scikit-image photographs with an object pasted in: a flat
    red disc ("ball") or a flat blue square ("block"), and a boxes.csv around each. Returns the true masks by path."""
    from skimage import data

    photos = [data.coffee(), data.chelsea(), data.astronaut(), data.rocket()]
    truth, rows = {}, []
    for split in ("train", "val"):
        for label, cls in enumerate(("ball", "block")):
            for i in range(per_class):
                photo = photos[(i + label) % len(photos)]
                h, w = photo.shape[:2]
                y, x = (h - 96) // 2 + 7 * i, (w - 96) // 2 - 5 * i
                image = np.array(Image.fromarray(photo[y : y + 96, x : x + 96]).resize((64, 64)))
                cy, cx, r = 30 + 2 * i, 28 + 3 * i, 12 + i
                obj = disc((64, 64), cy, cx, r) if cls == "ball" else ~np.zeros((64, 64), bool)
                if cls == "block":
                    obj = np.zeros((64, 64), bool)
                    obj[cy - r : cy + r // 2, cx - r // 2 : cx + r] = True
                image[obj] = (200, 30, 30) if cls == "ball" else (30, 40, 190)
                path = f"{split}/{cls}/{i:03d}.png"
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / path)
                truth[path] = obj
                x0, y0, x1, y1 = masks.mask_to_box(obj).tolist()
                rows.append((path, x0 - 1, y0 - 2, x1 + 2, y1 + 1))  # a hand-drawn box: a little loose
    with open(root / "boxes.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "x0", "y0", "x1", "y1"), *rows])
    return truth


def build(out: Path, *args: str) -> None:
    result = runner.invoke(app, ["build", *args, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output


def read_split(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    manifest = schema.read_manifest(out)
    got = {}
    for shard in manifest["splits"][split]["shards"]:
        got.update(dict(iter_records(out / shard["path"])))
    return got


def test_grabcut_masks_from_the_boxes_of_photographs_reach_the_shards_and_the_manifest(tmp_path: Path) -> None:
    truth = photo_folder(tmp_path / "data")
    out = tmp_path / "out"
    build(
        out,
        "--dataset",
        "folder",
        "--root",
        str(tmp_path / "data"),
        "--image-size",
        "64",
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--masks-from",
        "grabcut",
        "--workers",
        "1",
    )
    manifest = schema.read_manifest(out)
    assert manifest["masks"]["source"] == "grabcut" and manifest["masks"]["gate"] == GATE
    assert manifest["masks"]["params"]["iterations"] == 5 and "--masks-from grabcut" in manifest["command"]
    ious, box_ious, sources = [], [], []
    for split in ("train", "val"):
        records = read_split(out, split)
        counts = manifest["splits"][split]["mask_sources"]
        assert sum(counts.values()) == len(records) == 8
        for fields in records.values():
            meta = json.loads(fields["json"])
            true = truth[meta["source"]]  # relative to --root
            stored = encode.decode_mask(fields["mask.png"])
            box = masks.boxes_to_mask(np.array(meta["boxes"]), true.shape)
            sources.append(meta["mask_source"])
            if meta["mask_source"] == "box":
                assert meta["mask_gate"] and np.array_equal(stored, box)
            else:
                assert meta["mask_source"] == "grabcut" and meta["mask_gate"] is None and not (stored & ~box).any()
            ious.append(iou(stored, true))
            box_ious.append(iou(box, true))
        assert counts == {s: sources[-8:].count(s) for s in set(sources[-8:])}
    assert sources.count("grabcut") >= 12 and np.mean(ious) > 0.85 > 0.1 + np.mean(box_ious), (ious, box_ious)
    info = runner.invoke(app, ["info", str(out)])
    assert "masks:    grabcut; samples per source:" in info.output and "\n          train       " in info.output
    sheet = runner.invoke(app, ["preview", str(out), "--out", str(tmp_path / "p.png")])
    assert sheet.exit_code == 0 and Image.open(tmp_path / "p.png").size[0] > 0


def test_a_grabcut_build_is_byte_identical_whatever_the_workers(tmp_path: Path) -> None:
    args = [
        "--dataset",
        "synthetic",
        "--size",
        "40",
        "--image-size",
        "32",
        "--shard-size",
        "10",
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--masks-from",
        "grabcut",
    ]
    build(tmp_path / "a", *args, "--workers", "1")
    build(tmp_path / "b", *args, "--workers", "2")

    def digests(out: Path) -> dict[str, str]:
        return {
            p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.tar"))
        }

    a = digests(tmp_path / "a")
    assert a == digests(tmp_path / "b") and len(a) == 9  # 4 train shards, 1 per other split
    a, b = (schema.read_manifest(tmp_path / x)["splits"]["train"]["mask_sources"] for x in "ab")
    assert a == b and a.get("grabcut", 0) >= 30


def test_box_builds_f_images_that_replace_all_outside_the_box(tmp_path: Path) -> None:
    build(
        tmp_path / "o",
        "--dataset",
        "synthetic",
        "--size",
        "10",
        "--image-size",
        "32",
        "--factual",
        "shuffle",
        "--masks-from",
        "box",
        "--workers",
        "1",
    )
    for fields in read_split(tmp_path / "o", "train").values():
        meta = json.loads(fields["json"])
        box = masks.boxes_to_mask(np.array(meta["boxes"]), (32, 32))
        assert meta["mask_source"] == "box" and np.array_equal(encode.decode_mask(fields["mask.png"]), box)


def test_the_default_records_annotation_and_old_options_are_refused_in_one_line(tmp_path: Path) -> None:
    build(tmp_path / "o", "--dataset", "synthetic", "--size", "10", "--image-size", "32", "--workers", "1")
    manifest = schema.read_manifest(tmp_path / "o")
    assert manifest["masks"] == {"source": "annotation", "params": {}}
    assert set(manifest["splits"]["train"]["mask_sources"]) == {"annotation"}
    bad = runner.invoke(app, ["build", "--masks-from", "grabcut", "--mask-weights", "x.pth", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--mask-weights is for --masks-from" in bad.output
    bad = runner.invoke(app, ["build", "--masks-from", "nope", "--out", str(tmp_path / "n")])
    assert bad.exit_code == 2 and "grabcut" in bad.output


def test_a_png_mask_is_read_back_as_stored() -> None:  # the shard's mask field is a 1-bit PNG of the object
    mask = disc((20, 20), 10, 10, 6)
    assert np.array_equal(encode.decode_mask(encode.encode_mask(mask)), mask)
    assert Image.open(io.BytesIO(encode.encode_mask(mask))).size == (20, 20)


@pytest.mark.parametrize("name", ["sam", "cam"])
def test_a_model_source_without_weights_names_the_file_it_needs(tmp_path: Path, name: str) -> None:
    bad = runner.invoke(app, ["build", "--masks-from", name, "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "--mask-weights" in bad.output and len(bad.output.strip().splitlines()) == 1
    missing = runner.invoke(
        app, ["build", "--masks-from", name, "--mask-weights", str(tmp_path / "no.pth"), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2 and "no.pth: no such file" in missing.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["in9", "waterbirds", "cct", "coco", "folder"])
@pytest.mark.parametrize("source", ["grabcut", "box"])
def test_every_adapter_builds_with_masks_from_its_boxes(tmp_path: Path, name: str, source: str) -> None:
    from upstream import release_options

    from augment.config import BuildConfig
    from augment.runner.build import build as run_build

    options = release_options(name, tmp_path) | ({"resize": "short"} if name == "waterbirds" else {})
    config = BuildConfig(
        dataset=name,
        infill=["tile"],
        factual=["shuffle"],
        image_size=32,
        on_error="skip" if name == "folder" else "fail",
        dataset_options=options,
        masks_from=source,
    )
    manifest = run_build(tmp_path / "out", config, workers=1, progress=False)
    assert manifest["masks"]["source"] == source
    seen = set()
    for split, info in manifest["splits"].items():
        records = read_split(tmp_path / "out", split)
        assert sum(info["mask_sources"].values()) == len(records) == info["num_samples"]
        for fields in records.values():
            meta = json.loads(fields["json"])
            seen.add(meta["mask_source"])
            if not meta["has_object"]:
                assert meta["mask_source"] is None and "mask.png" not in fields
                continue
            assert meta["mask_source"] in (source, "box")
            box = masks.boxes_to_mask(np.array(meta["boxes"]), (meta["height"], meta["width"]))
            stored = encode.decode_mask(fields["mask.png"])
            assert not (stored & ~box).any() and (meta["mask_source"] != "box" or np.array_equal(stored, box))
    assert seen - {None}, "no sample with an object"
    assert source == "grabcut" or seen <= {"box", None}
