"""``augment build --shifted-tests``: the Backgrounds Challenge variants of any dataset's test splits, their donors,
their bytes, what is skipped, and the trainer's BG-gap and background reliance from the recorded donors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiled_background
from PIL import Image
from typer.testing import CliRunner

from augment.cli import app
from augment.contract import encode, schema
from augment.contract.shards import iter_records
from augment.datasets import get_dataset
from augment.masks import cf_hole, mask_to_box
from augment.runner import executors
from augment.shifted_tests import VARIANTS

runner = CliRunner()
CLASSES = ("ball", "block", "cone")
TEST_COUNTS = {"ball": 4, "block": 1, "cone": 0}  # imbalanced, and cone missing: mixed_next of block wraps to ball


def photo_tree(root: Path, masked_val: bool = True) -> None:
    """A folder-adapter tree of scikit-image photographs, written class by class (as an ImageFolder release is):
    ``train`` and ``test`` with a mask per image under ``masks/``, ``val`` with boxes only (or masks), and one
    test image without any annotation. Objects are flat-coloured shapes pasted on the photographs."""
    from skimage import data

    photos = [data.coffee(), data.chelsea(), data.astronaut(), data.rocket(), data.immunohistochemistry()]
    colours = {"ball": (210, 40, 30), "block": (30, 50, 200), "cone": (240, 200, 20)}
    boxes = ["path,x0,y0,x1,y1"]
    counts = {"train": {c: 3 for c in CLASSES}, "val": {c: 2 for c in CLASSES}, "test": TEST_COUNTS}
    for split, per_class in counts.items():
        for label, cls in enumerate(CLASSES):
            for i in range(per_class[cls]):
                photo = photos[(3 * label + i) % len(photos)]
                h, w = photo.shape[:2]
                y, x = (h - 120) // 2 + 9 * i, (w - 120) // 2 - 7 * i
                image = np.array(Image.fromarray(photo[y : y + 120, x : x + 120]).resize((48, 48)))
                obj = np.zeros((48, 48), bool)
                cy, cx, r = 22 + i, 20 + 2 * i, 9 + i
                yy, xx = np.mgrid[:48, :48]
                if cls == "ball":
                    obj = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                elif cls == "block":
                    obj[cy - r : cy + r // 2, cx - r // 2 : cx + r] = True
                else:
                    obj = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)
                image[obj] = colours[cls]
                rel = f"{split}/{cls}/{i:03d}.png"
                (root / "data" / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / "data" / rel)
                if split == "val" and not masked_val:
                    x0, y0, x1, y1 = mask_to_box(obj).tolist()
                    boxes.append(f"{rel},{x0},{y0},{x1},{y1}")
                    continue
                (root / "masks" / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(obj.astype(np.uint8) * 255).save(root / "masks" / split / cls / f"{i:03d}.png")
    Image.fromarray(np.asarray(data.camera())[:48, :48, None].repeat(3, axis=2)).save(root / "data/test/ball/999.png")
    (root / "data" / "boxes.csv").write_text("\n".join(boxes) + "\n")


def build(out: Path, *args: str) -> str:
    result = runner.invoke(app, ["build", *args, "--shifted-tests", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return result.output


def digests(out: Path) -> dict[str, str]:
    """The sha256 of every shard of a build, by relative path."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))
    }


def read_split(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    records = {}
    for shard in schema.read_manifest(out)["splits"][split]["shards"]:
        records.update(dict(iter_records(out / shard["path"])))
    return records


def folder_args(root: Path) -> list[str]:
    return [
        "--dataset",
        "folder",
        "--root",
        str(root / "data"),
        "--masks",
        str(root / "masks"),
        "--image-size",
        "48",
        "--infill",
        "tile",
        "--factual",
        "mixed-rand",
        "--workers",
        "1",
    ]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """A build of the photo tree with --shifted-tests: (the tree, the build folder)."""
    root = tmp_path_factory.mktemp("photos")
    photo_tree(root)
    build(root / "out", *folder_args(root))
    return root, root / "out"


def test_every_variant_keeps_the_object_and_takes_its_background_from_the_recorded_donor(photos) -> None:
    root, out = photos
    dataset = get_dataset("folder", root=str(root / "data"), masks=str(root / "masks"), image_size=48)
    refs = {r.key: i for i, r in enumerate(dataset.splits()["test"].refs)}
    manifest = schema.read_manifest(out)
    assert manifest["shifted_tests"]["pairs"]["test"]["variants"] == {v: f"test.{v}" for v in VARIANTS}
    checked = {v: 0 for v in VARIANTS}
    for variant in VARIANTS:
        records = read_split(out, f"test.{variant}")
        assert len(records) == sum(TEST_COUNTS.values())  # the unannotated test image has no variant
        for key, fields in records.items():
            meta = json.loads(fields["json"])
            info = meta["shifted"]
            assert info["base_split"] == "test" and key == f"{info['base_key']}_{variant}"
            base = dataset.load("test", refs[info["base_key"]])
            obj, rect = base.mask, cf_hole(base.mask, base.boxes, (48, 48))
            assert meta["label"] == base.label and obj.any()
            if variant == "only_fg":
                expected = np.where(obj[..., None], base.image, 0)
            elif variant == "no_fg":
                expected = np.where(obj[..., None], 0, base.image)
            elif variant == "only_bg_t":
                expected = np.where(rect[..., None], tiled_background(base.image, rect), base.image)
            else:  # the object on the donor's tiled background: the donor named in the record, from the base split
                donor = dataset.load("test", refs[info["donor_key"]])
                assert (info["donor_label"], info["donor_class"]) == (donor.label, donor.class_name)
                d_rect = cf_hole(donor.mask, donor.boxes, (48, 48))
                donor_bg = np.where(d_rect[..., None], tiled_background(donor.image, d_rect), donor.image)
                expected = np.where(obj[..., None], base.image, donor_bg)
            # the encoder is deterministic: equal bytes mean the stored pixels were exactly these
            assert fields["jpg"] == encode.encode_jpeg(expected.astype(np.uint8)), (variant, key)
            if variant == "only_bg_t":
                assert not meta["has_object"] and "mask.png" not in fields
            else:
                assert np.array_equal(encode.decode_mask(fields["mask.png"]), obj)
            assert not any(name.startswith(("cf.", "f.")) for name in fields)  # test splits get no CF/F
            checked[variant] += 1
    assert all(n == 5 for n in checked.values())
    verified = runner.invoke(app, ["verify", str(out), "-q"])
    assert verified.exit_code == 0, verified.output


def test_donors_have_their_variant_s_class_relation(photos) -> None:
    _, out = photos
    base = {k: json.loads(f["json"]) for k, f in read_split(out, "test").items()}
    with_object = {k for k, m in base.items() if m["has_object"]}
    for variant, relation in (("mixed_same", "same"), ("mixed_rand", "other"), ("mixed_next", "next")):
        for fields in read_split(out, f"test.{variant}").values():
            meta = json.loads(fields["json"])
            info, label = meta["shifted"], meta["label"]
            assert info["donor_key"] in with_object and base[info["donor_key"]]["label"] == info["donor_label"]
            if relation == "same":  # another sample of the class; the block is its class's only one: itself
                assert info["donor_label"] == label
                assert (info["donor_key"] == info["base_key"]) == (meta["class_name"] == "block")
            elif relation == "other":
                assert info["donor_label"] != label
            else:  # the next class the split has: ball -> block, block -> ball (no cone in test)
                assert info["donor_label"] == {0: 1, 1: 0}[label]


def test_synthetic_variants_have_the_class_relations_of_its_native_splits(tmp_path: Path) -> None:
    out = tmp_path / "o"
    build(out, "--size", "40", "--image-size", "32", "--workers", "1")
    manifest = schema.read_manifest(out)
    assert set(manifest["shifted_tests"]["pairs"]) == {"val", "original"}  # not the native mixed_* splits
    assert not any(s.startswith("mixed_") and "." in s for s in manifest["splits"])
    family = {k: json.loads(f["json"])["meta"]["background"] for k, f in read_split(out, "original").items()}
    for variant in ("mixed_same", "mixed_rand", "mixed_next"):
        native = {
            json.loads(f["json"])["key"].split("_")[-1]: json.loads(f["json"])
            for f in read_split(out, variant).values()
        }
        for fields in read_split(out, f"original.{variant}").values():
            meta = json.loads(fields["json"])
            donor_family = family[meta["shifted"]["donor_key"]]  # original samples sit on their class's family
            twin = native[meta["shifted"]["base_key"].split("_")[-1]]  # the native variant of the same object
            assert twin["label"] == meta["label"]
            if variant == "mixed_rand":
                assert donor_family != meta["label"] and twin["meta"]["background"] != meta["label"]
            else:
                assert donor_family == twin["meta"]["background"]


@pytest.mark.parametrize("executor", ["forked", "loky"])
def test_the_class_ordered_photo_tree_builds_the_same_bytes_with_either_executor(
    tmp_path: Path, monkeypatch, executor: str
) -> None:
    """Real photographs in class folders, every noise method (random, shuffle: the OpenCV passes and the packed
    scatter) with tile and mixed-rand: one process, and two workers forked or spawned by loky, write the same
    shards."""
    photo_tree(tmp_path / "tree")
    args = [
        *folder_args(tmp_path / "tree")[:-2],
        "--infill",
        "random",
        "--infill",
        "shuffle",
        "--factual",
        "random",
        "--factual",
        "shuffle",
        "--shard-size",
        "4",
    ]
    monkeypatch.setattr(executors, "forking_is_safe", lambda: executor == "forked")

    build(tmp_path / "one", *args, "--workers", "1")
    build(tmp_path / "two", *args, "--workers", "2")
    one = digests(tmp_path / "one")
    assert one == digests(tmp_path / "two") and len(one) > 2 * len(VARIANTS)  # many shards: both workers get some


def test_shifted_tests_are_byte_identical_whatever_the_workers(tmp_path: Path) -> None:
    args = ["--size", "30", "--image-size", "32", "--shard-size", "4", "--factual", "mixed-rand"]

    build(tmp_path / "a", *args, "--workers", "1")
    build(tmp_path / "b", *args, "--workers", "2")
    a = digests(tmp_path / "a")
    assert a == digests(tmp_path / "b") and sum("original.mixed_next/" in p for p in a) == 2
    a, b = (schema.read_manifest(tmp_path / x) for x in "ab")
    assert a["splits"] == b["splits"] and a["shifted_tests"] == b["shifted_tests"]


def test_splits_without_masks_are_skipped_and_said_so(tmp_path: Path) -> None:
    photo_tree(tmp_path, masked_val=False)  # val has boxes only
    with open(tmp_path / "data" / "boxes.csv", "a") as fh:  # and test's unannotated image gets a box, no mask
        fh.write("test/ball/999.png,4,4,30,30\n")
    said = build(tmp_path / "o", *folder_args(tmp_path))
    assert (
        "--shifted-tests: no variants of val: its samples have boxes but no object masks; pass --masks-from grabcut"
    ) in said
    manifest = schema.read_manifest(tmp_path / "o")
    assert list(manifest["shifted_tests"]["pairs"]) == ["test"] and "val" in manifest["shifted_tests"]["skipped"]
    assert "in test, 1 of its 6 samples have boxes but no object masks and get no variants" in said
    assert manifest["splits"]["test.mixed_rand"]["num_samples"] == 5 and "test" in manifest["shifted_tests"]["left_out"]
    assert not any(s.startswith("val.") for s in manifest["splits"])
    info = runner.invoke(app, ["info", str(tmp_path / "o")])
    assert "shifted:  variants (only_fg, no_fg, only_bg_t, mixed_same, mixed_rand, mixed_next) of test" in info.output
    assert "not of val: its samples have boxes" in info.output
    grabcut = build(tmp_path / "g", *folder_args(tmp_path), "--masks-from", "grabcut")  # masks made from the boxes
    manifest = schema.read_manifest(tmp_path / "g")
    assert "no variants of val" not in grabcut and list(manifest["shifted_tests"]["pairs"]) == ["test", "val"]
    # a GrabCut mask that fails the quality gate falls back to the box: that sample gets no variant cut along it
    sources = manifest["splits"]["val"]["mask_sources"]
    assert sources.get("grabcut", 0) + sources.get("box", 0) == 6 and sources.get("box", 0) >= 1
    assert manifest["splits"]["val.mixed_rand"]["num_samples"] == sources["grabcut"]
    rejects = [json.loads(line) for line in (tmp_path / "g" / "rejects.jsonl").read_text().splitlines()]
    fell_back = [r for r in rejects if r["split"] == "val.mixed_rand"]
    assert len(fell_back) == sources["box"] and "grabcut mask fell back to the box" in fell_back[0]["reason"]
    boxes = build(tmp_path / "b", *folder_args(tmp_path), "--masks-from", "box")
    assert "no variants of test: --masks-from box stores boxes, not object masks" in boxes


def test_a_split_without_any_annotation_is_skipped(tmp_path: Path) -> None:
    from upstream import make_in9

    make_in9(tmp_path / "bg")
    said = build(
        tmp_path / "o", "--dataset", "in9", "--root", str(tmp_path / "bg"), "--image-size", "32", "--workers", "1"
    )
    manifest = schema.read_manifest(tmp_path / "o")
    assert list(manifest["shifted_tests"]["pairs"]) == ["original"]  # IN-9's own variants are no bases
    assert "original.mixed_rand" in manifest["splits"] and "mixed_rand.only_fg" not in manifest["splits"]
    assert manifest["splits"]["val"]["num_samples"] == 3  # the fixture's val has no no_fg images: plain samples
    assert "no variants of val: no sample has an object annotation (mask or box)" in said


# ---- the trainer's metrics ---------------------------------------------------------------------------------------


def test_bg_gap_and_reliance_from_recorded_donors_by_hand() -> None:
    from train.evaluate import recorded_reliance, shifted_test_metrics

    log = np.log
    original = {
        "pair_keys": ["a", "b", "c"],
        "logits": log(np.array([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])),
    }
    mixed = {
        "pair_keys": ["b", "a", "z"],
        "donor_labels": np.array([1, 2, 0]),
        "logits": log(np.array([[0.1, 0.7, 0.2], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])),
    }
    # a: p(donor 2) 0.2 -> 0.5 (+0.3); b: p(donor 1) 0.2 -> 0.7 (+0.5); z pairs with nothing
    paired = recorded_reliance(original, mixed)
    assert (paired.value, paired.pairs, paired.unpaired) == (pytest.approx(0.4), 2, 1)
    unknown = {**mixed, "donor_labels": np.array([-1, 2, -1])}  # a record without a donor does not count
    paired = recorded_reliance(original, unknown)
    assert (paired.value, paired.pairs, paired.unpaired) == (pytest.approx(0.3), 1, 2)
    pairs = {
        b: schema.ShiftedBase(
            b,
            {v: f"{b}.{v}" for v in VARIANTS},
            schema.BgGap(f"{b}.mixed_same", f"{b}.mixed_rand"),
            schema.ShiftedReliance(b, (f"{b}.mixed_next", f"{b}.mixed_rand")),
        )
        for b in ("val", "test")
    }
    section = schema.ShiftedTests({}, pairs, {}, {})
    predictions = {"val": original, "test": original, "test.mixed_next": mixed, "test.mixed_rand": unknown}
    splits = {
        "test.mixed_same": {"accuracy": 0.75},
        "test.mixed_rand": {"accuracy": 0.25},
        "test.mixed_next": {"accuracy": 0.5},
    }
    result = shifted_test_metrics(predictions, splits, section, "val")
    test = result["bases"]["test"]
    assert result["headline"] == "test" and test["bg_gap"] == pytest.approx(0.5)
    assert test["background_reliance"] == pytest.approx({"test.mixed_next": 0.4, "test.mixed_rand": 0.3})
    assert test["reliance_pairs"] == {
        "test.mixed_next": {"pairs": 2, "unpaired": 1},
        "test.mixed_rand": {"pairs": 1, "unpaired": 2},
    }
    assert test["accuracy"] == {"mixed_same": 0.75, "mixed_rand": 0.25, "mixed_next": 0.5}
    assert "bg_gap" not in result["bases"]["val"] and result["bases"]["val"]["background_reliance"] == {}


def test_train_fit_reports_the_shifted_metrics_that_its_predictions_and_the_shards_give(photos, tmp_path) -> None:
    from train.cli import app as train_app

    _, out = photos
    run = tmp_path / "run"
    result = CliRunner().invoke(
        train_app,
        [
            "fit",
            "--shards",
            str(out),
            "--preset",
            "demo",
            "--epochs",
            "1",
            "--crop",
            "48",
            "--batch-size",
            "4",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((run / "results.json").read_text())
    test = results["shifted_tests"]["bases"]["test"]
    acc = {s: m["accuracy"] for s, m in results["splits"].items()}
    assert test["bg_gap"] == pytest.approx(acc["test.mixed_same"] - acc["test.mixed_rand"])
    assert results["bg_gap"] == test["bg_gap"] and results["shifted_tests"]["headline"] == "test"
    assert "test.mixed_rand" not in results["test_splits"]  # the shifted splits have their own section
    predictions = np.load(run / "predictions.npz")

    def probs(split: str) -> dict[str, np.ndarray]:
        logits = predictions[f"{split}.logits"]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return dict(zip(predictions[f"{split}.keys"].tolist(), p / p.sum(axis=1, keepdims=True), strict=True))

    original = probs("test")
    for split in ("test.mixed_next", "test.mixed_rand"):
        donors = {k: json.loads(f["json"])["shifted"] for k, f in read_split(out, split).items()}
        rises = [
            p[donors[k]["donor_label"]] - original[donors[k]["base_key"]][donors[k]["donor_label"]]
            for k, p in probs(split).items()
        ]
        assert test["background_reliance"][split] == pytest.approx(np.mean(rises), abs=1e-5)
    assert results["background_reliance"] == test["background_reliance"]["test.mixed_next"]
    tsv = (run / "results.tsv").read_text()
    assert "bg_gap[test]\t" in tsv and "background_reliance[test.mixed_next]\t" in tsv


def test_preview_shifted_draws_each_variant_beside_its_original(photos, tmp_path: Path) -> None:
    _, out = photos
    sheet = runner.invoke(
        app, ["preview", str(out), "--shifted", "--rows", "3", "--cell", "32", "--out", str(tmp_path / "s.png")]
    )
    assert sheet.exit_code == 0, sheet.output
    width, _ = Image.open(tmp_path / "s.png").size
    assert width == 96 + 32 * (1 + len(VARIANTS))  # the caption column, then original | each variant
    bad = runner.invoke(app, ["preview", str(out), "--shifted", "--split", "train", "--out", str(tmp_path / "b.png")])
    assert bad.exit_code == 2 and "no shifted test splits of it; splits with them: test" in bad.output


def test_a_coco_release_gets_variants_of_its_segmented_images_and_names_the_box_only_one(tmp_path: Path) -> None:
    """COCO's upstream JSON: image 4's annotation has an empty segmentation (a box only), the others polygons or RLE;
    with every image held out as val, val is the base, and image 4 is left out of its variants and said so."""
    from upstream import make_coco

    images, _ = make_coco(tmp_path)
    data = json.loads((tmp_path / "instances.json").read_text())
    box_only = {a["image_id"] for a in data["annotations"]} - {
        a["image_id"] for a in data["annotations"] if a.get("segmentation")
    }
    assert box_only == {4}
    said = build(
        tmp_path / "o",
        "--dataset",
        "coco",
        "--root",
        str(images),
        "--annotations",
        str(tmp_path / "instances.json"),
        "--val-fraction",
        "0.99",
        "--image-size",
        "32",
        "--workers",
        "1",
    )
    manifest = schema.read_manifest(tmp_path / "o")
    assert list(manifest["shifted_tests"]["pairs"]) == ["val"] and "in val, 1 of its 4 samples" in said
    keys = {json.loads(f["json"])["shifted"]["base_key"] for f in read_split(tmp_path / "o", "val.mixed_rand").values()}
    assert keys == {"val_1", "val_2", "val_3"}
