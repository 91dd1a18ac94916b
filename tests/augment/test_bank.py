"""F(bank), issue #33: the object on a background drawn from a bank. A folder of photos under every adapter, each
stored image re-made bit for bit from the background its record names; CCT's empty frames and locations; the
same-class-location rule; the refusals; workers; bad bank files; training on a bank build; info and preview."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner
from upstream import (
    CCT_TRAPS,
    make_cct_traps,
    make_in9_release,
    photo_background,
    release_options,
    save_jpeg,
    textured,
)

from augment import infill, mask_sources
from augment.cli import app
from augment.config import BuildConfig
from augment.contract import encode, schema
from augment.contract.shards import iter_records
from augment.errors import BuildError
from augment.infill.bank import Background, cover_size, fit
from augment.pipeline import Holes
from augment.preview import bank_donors, sheet_legend
from augment.read import read_image
from augment.runner.build import build
from augment.runner.cache import open_dataset
from augment.verify import verify

runner = CliRunner()
ADAPTERS = ("synthetic", "in9", "waterbirds", "cct", "coco", "folder")
TRAIN_JSON = "eccv_18_annotation_files/train_annotations.json"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of background photos as a user has one: spaces in names, a subfolder, JPEG and PNG of other sizes
    and aspects than the images, an EXIF-rotated JPEG, a palette PNG, and a file that is no image."""
    root = tmp_path_factory.mktemp("bank") / "my backgrounds"
    save_jpeg(root / "forest photo 1.jpg", photo_background("chelsea", 60, 90))
    (root / "sub folder").mkdir()
    Image.fromarray(photo_background("coffee", 80, 50)).save(root / "sub folder" / "coffee cup.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: read upright, 40 wide and 70 high
    save_jpeg(root / "sub folder" / "rotated trap.JPG", textured(40, 70, 3), exif=exif.tobytes())
    Image.fromarray(textured(30, 30, 4)).convert("P").save(root / "palette.png")
    (root / "notes.txt").write_text("not an image: not in the bank")
    return root


def records(out: Path, split: str) -> list[tuple[str, dict[str, bytes], dict]]:
    """Every record of ``split`` as (key, fields, json)."""
    manifest = schema.read_manifest(out)
    return [
        (key, fields, json.loads(fields[schema.META]))
        for shard in manifest["splits"][split]["shards"]
        for key, fields in iter_records(out / shard["path"])
    ]


def remade(config: BuildConfig, split: str, key: str, background: np.ndarray, donor: dict) -> tuple[np.ndarray, ...]:
    """The f.bank image of sample ``key`` made again from ``background``, the image its record names, and the crop
    it records: (the sample's image, its F hole, the fitted background, the fill's output)."""
    dataset = open_dataset(config)
    index = [r.key for r in dataset.splits()[split].refs].index(key)
    sample = mask_sources.refine([dataset.load(split, index)], config)[0]
    hole = Holes.of(sample).f
    drawn = Background(background, tuple(donor["crop"][:2]))
    fitted = fit(drawn, hole.shape)
    assert list(fitted.shape[1::-1]) == [donor["crop"][2] - donor["crop"][0], donor["crop"][3] - donor["crop"][1]]
    assert list(cover_size(background.shape[1::-1], hole.shape[::-1])) == donor["scaled"]
    out = infill.INFILLS["bank"].fill(sample.image, hole, np.random.default_rng(12345), background=drawn)
    return sample.image, hole, fitted, out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the resize rule --------------------------------------------------------------------------------------------


def test_the_background_covers_the_image_keeping_its_aspect() -> None:
    assert cover_size((80, 50), (32, 32)) == (51, 32)  # wider: heights match, the width rounded
    assert cover_size((40, 90), (32, 32)) == (32, 72)  # taller: widths match
    assert cover_size((64, 48), (64, 48)) == (64, 48)  # the same size: no resize, the crop is the whole frame
    assert cover_size((10, 10), (32, 24)) == (32, 32)  # enlarged to cover
    assert cover_size((100, 1), (32, 32)) == (3200, 32)
    background = np.arange(10 * 30 * 3, dtype=np.uint8).reshape(10, 30, 3)  # covers 10 x 12 as it is
    np.testing.assert_array_equal(fit(Background(background, (5, 0)), (10, 12)), background[:, 5:17])
    with pytest.raises(ValueError, match=r"background offset \(19, 0\): expected within \(0..18, 0..0\)"):
        fit(Background(background, (19, 0)), (10, 12))
    halved = fit(Background(np.repeat(np.repeat(background, 2, axis=0), 2, axis=1), (5, 0)), (10, 12))
    np.testing.assert_array_equal(halved, background[:, 5:17])  # the offset is in the scaled copy


# ---- a folder of photos, under every adapter ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ADAPTERS)
def test_every_adapter_builds_on_a_folder_of_photos_each_image_remade_from_its_record(
    name: str, photos: Path, tmp_path: Path
) -> None:
    config = BuildConfig(
        dataset=name,
        factual=["bank"],
        copies=2,
        image_size=32,
        backgrounds=str(photos),
        dataset_options=release_options(name, tmp_path),
        on_error="skip" if name == "folder" else "fail",  # its fixture has an empty class folder
    )
    manifest = build(tmp_path / "out", config, workers=1, progress=False)
    assert verify(tmp_path / "out", progress=False)[0] == []
    files = ["forest photo 1.jpg", "palette.png", "sub folder/coffee cup.png", "sub folder/rotated trap.JPG"]
    listing = [[f, (photos / f).stat().st_size] for f in files]
    bank = manifest["backgrounds"]
    assert (bank["source"], bank["root"], bank["files"], bank["rule"]) == ("folder", str(photos), 4, "any")
    assert bank["fingerprint"] == hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    drawn = 0
    for split, info in manifest["splits"].items():
        if not info["augmented"]:
            continue
        for key, fields, meta in records(tmp_path / "out", split):
            if not meta["has_object"]:
                assert "bank" not in meta  # only records with f.bank images carry the key
                continue
            assert sorted(meta["bank"]) == ["f.bank.0.jpg", "f.bank.1.jpg"]
            for field, donor in meta["bank"].items():
                assert donor["source"] == "folder" and donor["rule"] == "any" and donor["path"] in files
                assert donor["sha256"] == sha256(photos / donor["path"])  # the record names the file's bytes
                image, hole, fitted, out = remade(config, split, key, read_image(photos / donor["path"]).image, donor)
                np.testing.assert_array_equal(out[~hole], image[~hole])  # the object, bit for bit, where it was
                np.testing.assert_array_equal(out[hole], fitted[hole])  # the named background everywhere else
                assert encode.encode_jpeg(out) == fields[field]  # the stored bytes are exactly that image's
                drawn += 1
        assert info["background_draws"] == {"any": drawn}
    assert drawn >= 4


# ---- CCT: empty frames and locations --------------------------------------------------------------------------------


@pytest.fixture
def traps(tmp_path: Path) -> Path:
    return make_cct_traps(tmp_path / "traps")


def frames_of(split: str) -> dict[str, str]:
    """The empty frames of ``split`` in CCT_TRAPS: their key -> their location."""
    return {f"{split}_{i}": str(loc) for i, loc, cat in CCT_TRAPS[split] if cat == 30}


def class_locations() -> dict[str, set[str]]:
    """Per class, the train locations where it occurs."""
    names = {1: "deer", 5: "fox", 7: "bobcat"}
    found: dict[str, set[str]] = {}
    for _, loc, cat in CCT_TRAPS["train"]:
        if cat != 30:
            found.setdefault(names[cat], set()).add(str(loc))
    return found


def test_cct_exposes_its_empty_frames_with_their_locations_and_the_samples_locations(traps: Path) -> None:
    dataset = open_dataset(BuildConfig(dataset="cct", image_size=32, dataset_options={"root": str(traps)}))
    frames = dataset.empty_frames("train")
    assert {f.key: f.location for f in frames} == frames_of("train")
    assert [f.path for f in frames][:1] == ["eccv_18_all_images_sm/empty-10a.jpg"]
    assert all(f.size == (traps / f.path).stat().st_size for f in frames)
    assert {f.key for f in dataset.empty_frames("trans_test")} == set(frames_of("trans_test"))
    assert dataset.load_empty("train", 0).shape == (32, 32, 3)  # resized as the samples are
    refs = dataset.splits()["train"].refs
    assert len(refs) == 7 and not any("empty" in r.key for r in refs)  # frames are not samples
    assert {r.key: r.location for r in refs}["train_fox-30_5"] == "30"
    assert dataset.load("train", 0).location == refs[0].location
    assert dataset.describe()["empty_frames"] == {"train": 5, "cis_val": 1, "trans_test": 1}
    # an image marked empty that also has an animal (even one of an unknown category) is no empty frame
    edit_json(
        traps / TRAIN_JSON,
        lambda d: d["annotations"].extend(
            [
                {"id": "x1", "image_id": "deer-20", "category_id": 30},
                {"id": "x2", "image_id": "empty-20", "category_id": 99},
            ]
        ),
    )
    dataset = open_dataset(BuildConfig(dataset="cct", on_error="skip", dataset_options={"root": str(traps)}))
    assert {f.key for f in dataset.empty_frames("train")} == set(frames_of("train")) - {"train_empty-20"}
    assert "train_deer-20_1" in [r.key for r in dataset.splits()["train"].refs]


def bank_build(traps: Path, out: Path, rule: str, workers: int = 1, **kw) -> tuple[BuildConfig, dict]:
    config = BuildConfig(
        dataset="cct",
        factual=["bank"],
        copies=4,
        image_size=32,
        backgrounds="dataset",
        background_rule=rule,
        dataset_options={"root": str(traps)},
        **kw,
    )
    return config, build(out, config, workers=workers, progress=False)


def test_same_class_location_draws_from_other_training_locations_of_the_class(traps: Path, tmp_path: Path) -> None:
    config, manifest = bank_build(traps, tmp_path / "out", "same-class-location")
    assert verify(tmp_path / "out", progress=False)[0] == []
    frames, seen = frames_of("train"), class_locations()
    with_frames = set(frames.values())
    where: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    dataset = open_dataset(config)
    keys = [f.key for f in dataset.empty_frames("train")]
    for key, fields, meta in records(tmp_path / "out", "train"):
        own, name = str(meta["meta"]["location"]), meta["class_name"]
        for field, donor in meta["bank"].items():
            assert donor["source"] == "dataset" and donor["key"] in frames  # train's own frames only
            assert donor["location"] == frames[donor["key"]] != own  # never the image's own location
            counts[donor["rule"]] = counts.get(donor["rule"], 0) + 1
            if donor["rule"] == "same-class-location":
                assert donor["location"] in seen[name]  # a location where the class occurs
            else:  # the fallback: no other location of the class has frames
                assert donor["rule"] == "other-location" and not (seen[name] - {own}) & with_frames
            where.setdefault(key, set()).add(donor["location"])
            background = dataset.load_empty("train", keys.index(donor["key"]))
            image, hole, fitted, out = remade(config, "train", key, background, donor)
            assert encode.encode_jpeg(out) == fields[field]
    assert where == {  # 4 draws each
        "train_deer-10a_1": {"20"},
        "train_deer-10b_1": {"20"},
        "train_deer-20_1": {"10"},
        "train_deer-40_1": {"10", "20"},  # location 40 has no frames
        "train_fox-20_5": {"30"},
        "train_fox-30_5": {"20"},
        "train_bobcat-30_7": {"10", "20"},  # only at 30: the fallback
    }
    assert manifest["splits"]["train"]["background_draws"] == counts == {"other-location": 4, "same-class-location": 24}
    bank = manifest["backgrounds"]
    assert (bank["source"], bank["files"], bank["rule"]) == ("dataset", 5, "same-class-location")
    assert bank["frames"] == {"train": {"10": 2, "20": 1, "30": 2}} and "never the sample's own" in bank["fallback"]
    assert bank["root"] == str(traps)


def test_the_any_rule_draws_among_the_splits_own_frames(traps: Path, tmp_path: Path) -> None:
    _, manifest = bank_build(traps, tmp_path / "out", "any")
    donors = [d for _, _, meta in records(tmp_path / "out", "train") for d in meta["bank"].values()]
    assert {d["key"] for d in donors} <= set(frames_of("train")) and {d["rule"] for d in donors} == {"any"}
    assert manifest["splits"]["train"]["background_draws"] == {"any": 28}
    assert "fallback" not in manifest["backgrounds"]


@pytest.mark.parametrize("rule", ["any", "same-class-location"])
def test_builds_are_byte_identical_across_workers(rule: str, traps: Path, photos: Path, tmp_path: Path) -> None:
    release = tmp_path / "bg_challenge"
    if rule == "any":
        make_in9_release(release)

    def shards(out: Path, workers: int) -> dict:
        if rule == "any":  # a folder bank on IN-9's release, class by class, over several shards
            config = BuildConfig(
                dataset="in9",
                factual=["bank"],
                copies=2,
                image_size=32,
                shard_size=7,
                backgrounds=str(photos),
                dataset_options={"root": str(release)},
            )
            manifest = build(out, config, workers=workers, progress=False)
        else:
            manifest = bank_build(traps, out, rule, workers=workers, shard_size=2)[1]
        manifest.pop("command")  # names --out
        return manifest

    one, two = shards(tmp_path / "one", 1), shards(tmp_path / "two", 2)
    assert len(one["splits"]["train"]["shards"]) > 1 and one == two
    for shard in one["splits"]["train"]["shards"]:
        assert (tmp_path / "one" / shard["path"]).read_bytes() == (tmp_path / "two" / shard["path"]).read_bytes()


def test_a_bad_bank_file_stops_the_build_or_is_left_out_once(photos: Path, tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    shutil.copytree(photos, bank)
    (bank / "broken photo.jpg").write_bytes(b"not a jpeg at all")
    config = BuildConfig(
        dataset="synthetic",
        factual=["bank"],
        copies=3,
        image_size=32,
        shard_size=7,  # several shards: the file is still listed once
        backgrounds=str(bank),
        dataset_options={"size": 20},
    )
    with pytest.raises(BuildError, match=r"broken photo\.jpg: not an image file .*a background of --backgrounds"):
        build(tmp_path / "fail", config, workers=1, progress=False)
    config.on_error = "skip"
    manifest = build(tmp_path / "skip", config, workers=1, progress=False)
    rejects = [json.loads(line) for line in (tmp_path / "skip" / schema.REJECTS).read_text().splitlines()]
    assert [r["path"] for r in rejects] == [str(bank.absolute() / "broken photo.jpg")]  # listed once
    assert manifest["rejects"]["count"] == 1 and len(manifest["splits"]["train"]["shards"]) > 1
    donors = [d["path"] for _, _, meta in records(tmp_path / "skip", "train") for d in (meta["bank"] or {}).values()]
    assert len(donors) == 3 * 20 and "broken photo.jpg" not in donors  # every draw was made again


def test_a_bad_bank_file_is_read_once_per_shard(photos: Path, tmp_path: Path, monkeypatch) -> None:
    """Left out, it is drawn again (the draws stay those of the bank with it) but not read again."""
    from augment import backgrounds

    bank = tmp_path / "bank"
    shutil.copytree(photos, bank)
    (bank / "broken photo.jpg").write_bytes(b"not a jpeg at all")
    reads = []
    monkeypatch.setattr(backgrounds, "read_image", lambda path, *a: reads.append(path.name) or read_image(path, *a))
    config = BuildConfig(
        dataset="synthetic",
        factual=["bank"],
        copies=3,
        image_size=32,
        shard_size=7,
        backgrounds=str(bank),
        on_error="skip",
        dataset_options={"size": 20},
    )
    manifest = build(tmp_path / "out", config, workers=1, progress=False)
    n_shards = len(manifest["splits"]["train"]["shards"])
    assert n_shards > 1 and reads.count("broken photo.jpg") == n_shards  # each shard's draws hit it, once read
    assert len(reads) - n_shards == 3 * 20  # every other read made a background


def test_the_bank_is_read_under_the_datasets_pixel_limit(photos: Path, tmp_path: Path) -> None:
    """--max-image-pixels bounds the bank's photos as it bounds the dataset's images: 1,500 pixels admits the folder
    release's 30x40 images and the 30x30 palette photo, and refuses the larger photos."""
    options = {**release_options("folder", tmp_path), "max_image_pixels": 1500}
    config = BuildConfig(
        dataset="folder", factual=["bank"], image_size=32, backgrounds=str(photos), dataset_options=options
    )
    config.on_error = "skip"  # the folder release's empty class folder and its file that is no image
    build(tmp_path / "out", config, workers=1, progress=False)
    rejects = [json.loads(line) for line in (tmp_path / "out" / schema.REJECTS).read_text().splitlines()]
    refused = {Path(r["path"]).name: r for r in rejects if "a background of --backgrounds" in r["reason"]}
    assert refused and all("decompression bomb" in r["reason"] for r in refused.values())  # the default admits them
    donors = {d["path"] for _, _, meta in records(tmp_path / "out", "train") for d in (meta.get("bank") or {}).values()}
    assert donors == {"palette.png"}  # 30x30: the one photo under the limit


def test_a_second_build_in_one_process_lists_the_bank_anew(photos: Path, tmp_path: Path) -> None:
    """The process's dataset cache is the build's own: a photo added between two builds of one config (a notebook,
    a test) is in the second build's bank and manifest."""
    bank = tmp_path / "bank"
    shutil.copytree(photos, bank)
    config = BuildConfig(
        dataset="synthetic", factual=["bank"], image_size=32, backgrounds=str(bank), dataset_options={"size": 10}
    )
    first = build(tmp_path / "one", config, workers=1, progress=False)["backgrounds"]
    photo = sorted(p for p in bank.rglob("*") if p.is_file())[0]
    shutil.copy(photo, bank / f"one more{photo.suffix}")
    second = build(tmp_path / "two", config, workers=1, progress=False)["backgrounds"]
    assert second["files"] == first["files"] + 1 and second["fingerprint"] != first["fingerprint"]


# ---- refusals: one line, before any work ----------------------------------------------------------------------------


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def no_locations(data: dict) -> None:
    for image in data["images"]:
        image.pop("location")


def frames_at_10(data: dict) -> None:
    for image in data["images"]:
        if image["id"].startswith("empty"):
            image["location"] = 10


@pytest.mark.parametrize(
    "args,edit,message",
    [
        (["--factual", "bank"], None, "--factual bank needs --backgrounds: a folder of background photos, or dataset"),
        (["--factual", "bank", "--backgrounds", "NOPE"], None, "--backgrounds NOPE: no such folder; pass a folder"),
        (["--factual", "shuffle", "--backgrounds", "PHOTOS"], None, "--backgrounds is for --factual bank"),
        (
            ["--factual", "bank", "--backgrounds", "PHOTOS", "--background-rule", "same-class-location"],
            None,
            "--background-rule same-class-location draws empty frames by camera location, which a folder of photos",
        ),
        (["--factual", "bank", "--backgrounds", "EMPTY"], None, "--backgrounds EMPTY: no image files (.jpg"),
        (
            ["--dataset", "synthetic", "--factual", "bank", "--backgrounds", "dataset"],
            None,
            "--backgrounds dataset: --dataset synthetic has no object-free images in its train split",
        ),
        (
            ["--factual", "bank", "--backgrounds", "dataset", "--background-rule", "same-class-location"],
            no_locations,
            "--background-rule same-class-location: --dataset cct records no camera locations",
        ),
        (
            ["--factual", "bank", "--backgrounds", "dataset", "--background-rule", "same-class-location"],
            frames_at_10,
            "--background-rule same-class-location: every empty frame of train is at location 10, where samples are",
        ),
    ],
)
def test_refusals_are_one_line_before_any_work(
    args: list[str], edit, message: str, traps: Path, photos: Path, tmp_path: Path
) -> None:
    if edit is not None:
        edit_json(traps / TRAIN_JSON, edit)
    (tmp_path / "empty folder").mkdir()
    swap = {"PHOTOS": str(photos), "EMPTY": str(tmp_path / "empty folder"), "NOPE": str(tmp_path / "nope")}
    message = message.replace("EMPTY", swap["EMPTY"]).replace("NOPE", swap["NOPE"])
    dataset = [] if "--dataset" in args else ["--dataset", "cct", "--root", str(traps)]
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["build", *dataset, *[swap.get(a, a) for a in args], "--image-size", "32", "-q", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()  # nothing was written


# ---- training, info, preview ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank_shards(photos: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bank-build") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        factual=["bank"],
        copies=2,
        image_size=24,
        shard_size=16,
        backgrounds=str(photos),
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


def test_train_fit_trains_on_f_bank(bank_shards: Path, tmp_path: Path) -> None:
    from train.cli import app as train_app

    run = tmp_path / "run"
    args = ["fit", "--shards", str(bank_shards), "--out", str(run), "--f", "bank", "--epochs", "1"]
    result = runner.invoke(
        train_app, [*args, "--batch-size", "16", "--crop", "16", "--workers", "0"], prog_name="train"
    )
    assert result.exit_code == 0, result.output
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == "F(bank)" and json.loads((run / "config.json").read_text())["f"] == ["bank"]


def test_info_shows_the_bank_and_preview_names_each_rows_background(bank_shards: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(bank_shards)])
    assert result.exit_code == 0, result.output
    manifest = schema.read_manifest(bank_shards)
    fingerprint = manifest["backgrounds"]["fingerprint"][:16]
    assert f"bank:     folder {manifest['backgrounds']['root']}: 4 files (fingerprint {fingerprint}), rule any" in (
        result.output
    )
    assert "train       80 any" in result.output
    result = runner.invoke(app, ["preview", str(bank_shards), "--out", str(tmp_path / "p.png"), "--rows", "3"])
    assert result.exit_code == 0 and (tmp_path / "p.png").is_file(), result.output
    _, _, meta = records(bank_shards, "train")[0]
    names = bank_donors(meta, ["jpg", "mask.png", "f.bank.0.jpg", "f.bank.1.jpg"])
    shown = [Path(meta["bank"][f]["path"]).name for f in ("f.bank.0.jpg", "f.bank.1.jpg")]
    assert names == [n if len(n) <= 14 else "..." + n[-11:] for n in shown]  # "forest photo 1.jpg": "...photo 1.jpg"
    legend = " ".join(text for _, text in sheet_legend(["original", "mask", "f.bank.0", "f.bank.1"], 2))
    assert "f.bank.0: the object on a background from the bank" in legend
