"""The `augment` CLI end to end with typer's CliRunner, including the bad-option errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from augment.cli import app

runner = CliRunner()
BUILD = "build --dataset synthetic --size 20 --image-size 32 --shard-size 8 --workers 2 -q".split() + [
    *("--infill", "tile", "--infill", "shuffle", "--factual", "shuffle", "--factual", "mixed-rand")
]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], prog_name="augment")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    result = invoke(*BUILD, "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 45 samples" in result.output
    return out


def test_build_records_the_full_command(demo: Path) -> None:
    manifest = json.loads((demo / "manifest.json").read_text())
    assert manifest["command"].startswith("augment build --dataset synthetic --infill tile --infill shuffle")
    assert "--size 20" in manifest["command"] and f"--out {demo}" in manifest["command"]
    assert manifest["image_size"] == 32 and manifest["dataset"]["params"]["bias"] == 0.9
    assert manifest["splits"]["train"]["fields"][-2:] == ["f.shuffle.0.jpg", "f.mixed-rand.0.jpg"]


def test_info_shows_counts_per_split_and_class(demo: Path) -> None:
    result = invoke("info", demo)
    assert result.exit_code == 0, result.output
    assert "circle" in result.output and "mixed_next" in result.output and "total: 45 samples" in result.output
    train = next(line for line in result.output.splitlines() if line.startswith("train"))
    assert train.split()[1] == "20" and train.split()[-5:] == ["4"] * 5
    as_json = invoke("info", demo, "--json")
    assert json.loads(as_json.output)["num_samples"] == 45


def test_verify_ok_then_fails_on_a_flipped_byte(demo: Path, tmp_path: Path) -> None:
    result = invoke("verify", demo, "-q")
    assert result.exit_code == 0 and "OK: 45 samples" in result.output
    copy = tmp_path / "copy"
    copy.mkdir()
    for src in demo.rglob("*"):
        if src.is_file():
            (copy / src.relative_to(demo)).parent.mkdir(parents=True, exist_ok=True)
            (copy / src.relative_to(demo)).write_bytes(src.read_bytes())
    shard = copy / "val/shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[-3000] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = invoke("verify", copy, "-q")
    assert result.exit_code == 1 and f"{shard}: sha256 mismatch" in result.output


def test_preview_draws_one_column_per_field(demo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "sheet.png"
    result = invoke("preview", demo, "--out", dest, "--rows", "5", "--cell", "40")
    assert result.exit_code == 0, result.output
    with Image.open(dest) as img:
        # original, mask, 2 CF, 2 F; one row per class, between the title and the legend (tests/train/test_pictures.py)
        assert img.size[0] == 96 + 40 * 6 and img.size[1] > 14 + 40 * 5
    assert invoke("preview", demo, "--split", "nope", "--out", dest).exit_code == 2


def test_preview_of_a_damaged_build_says_so_without_a_traceback(demo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text((demo / "manifest.json").read_text())  # no shards at all
    result = invoke("preview", copy, "--out", tmp_path / "p.png")
    assert result.exit_code == 1 and "missing shard file" in result.output and "augment verify" in result.output
    assert "Traceback" not in result.output


def test_datasets_lists_datasets_and_methods_with_roles() -> None:
    result = invoke("datasets")
    assert result.exit_code == 0
    rows = {words[0]: words[1:] for words in map(str.split, result.output.splitlines()) if words}
    assert rows["mixed-rand"][0] == "F" and rows["tile"][0] == "CF" and rows["shuffle-image"][0] == "CF/F"
    methods = result.output.split("infill methods")[1].split("mask sources")[0].splitlines()[1:-1]
    assert len({line.index(line.split()[1]) for line in methods}) == 1, methods  # one column, however long a name
    # each dataset with the build options it takes, from its adapter's declared Flags
    at = result.output.index("  coco ")
    assert "options: --root --annotations --label-from --val-fraction --resize --max-image-pixels" in result.output[at:]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--infill", "blur"], "'blur' is not one of 'grey', 'random', 'shuffle', 'shuffle-image', 'tile'"),
        (["--factual", "tile"], "'tile' is not one of 'random', 'shuffle', 'shuffle-image', 'mixed-rand'"),
        (["--dataset", "imagenet"], "'imagenet' is not one of 'synthetic'"),
        (["--copies", "0"], "--copies"),
        (["--bias", "1.5"], "--bias"),
    ],
)
def test_bad_options_exit_2_listing_the_valid_choices(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("build", "--out", tmp_path / "x", *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("augment build: error: ")
    assert not (tmp_path / "x").exists()


def test_a_method_twice_and_a_non_empty_out_exit_2(demo: Path, tmp_path: Path) -> None:
    result = invoke("build", "--out", tmp_path / "x", "--infill", "tile", "--infill", "tile")
    assert result.exit_code == 2 and "'tile' given twice" in result.output
    result = invoke(*BUILD, "--out", demo)  # the same command again: nothing to do
    assert result.exit_code == 0 and "wrote" in result.output
    result = invoke(*BUILD, "--seed", "7", "--out", demo)
    assert result.exit_code == 2 and "holds an earlier build of another command; differs in" in result.output
    assert "options.seed: 0 -> 7" in result.output and "pass --overwrite" in result.output


def test_info_and_verify_on_a_folder_without_manifest(tmp_path: Path) -> None:
    for command in ("info", "verify"):
        result = invoke(command, tmp_path)
        assert result.exit_code == 2 and "no manifest" in result.output


def test_build_a_file_dataset_with_skips_reports_them(tmp_path: Path) -> None:
    from upstream import make_folder

    root, masks = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    result = invoke(
        "build",
        "--dataset",
        "folder",
        "--root",
        root,
        "--masks",
        masks,
        "--infill",
        "tile",
        "--image-size",
        "32",
        "--on-error",
        "skip",
        "--out",
        out,
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert f"skipped 1 bad inputs, listed in {out / 'rejects.jsonl'}" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "--on-error skip" in manifest["command"] and f"--masks {masks}" in manifest["command"]
    failed = invoke("build", "--dataset", "folder", "--root", root, "--out", tmp_path / "o2")
    assert failed.exit_code == 1 and "val/dog: class folder with no images (pass --on-error skip" in failed.output


def test_dataset_options_are_checked_per_dataset(tmp_path: Path) -> None:
    result = invoke("build", "--dataset", "in9", "--size", "10", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "--dataset in9 does not take --size; it takes --root" in result.output
    result = invoke("build", "--dataset", "in9", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "--dataset in9 needs --root" in result.output
    result = invoke("build", "--dataset", "cct", "--root", tmp_path, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "train_annotations.json: not found" in result.output
