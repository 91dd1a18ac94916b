"""Issue #31, "Done when": a tiny timm CNN (``test_resnet``, BatchNorm) and a tiny ViT (``test_vit``, LayerNorm and
attention, a fixed input size) each complete `train fit` on a demo build with each family of method (CF+F, FGSM,
Sal), `train eval` of the run reproduces its results, and `--masks-from cam` reads the run's checkpoint.

Everything through the CLIs (typer's CliRunner), CPU, one epoch of a 20-image synthetic build, random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from augment.config import BuildConfig
from augment.runner.build import build

runner = CliRunner()
IMAGE, CROP = 36, 32  # the ViT cuts the 32 px crop into 2 x 2 patches of 16
METHODS = {"cf-f": ["--cf", "tile", "--f", "shuffle"], "fgsm": ["--fgsm", "0.1"], "sal": ["--sal", "1"]}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("timm") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        copies=1,
        image_size=IMAGE,
        shard_size=16,
        dataset_options={"size": 20},
    )
    build(out, config, workers=1, progress=False)
    return out


def fit(shards: Path, out: Path, arch: str, *extra: str):
    from train.cli import app

    args = ["fit", "--shards", str(shards), "--out", str(out), "--preset", "demo", "--arch", arch, "--epochs", "1"]
    args += ["--batch-size", "8", "--crop", str(CROP), "--workers", "0", "--max-saliency-images", "4", *extra]
    return runner.invoke(app, args, prog_name="train")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_fit_then_eval_reproduces_the_run(shards: Path, tmp_path: Path, arch: str, method: str) -> None:
    from train.cli import app

    run = tmp_path / "run"
    result = fit(shards, run, arch, *METHODS[method])
    assert result.exit_code == 0, result.output
    fitted = json.loads((run / "results.json").read_text())
    with np.load(run / "predictions.npz") as npz:
        logits = {k: npz[k] for k in npz.files}
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert best["config"]["arch"] == arch and best["input_size"] == CROP
    assert 0 <= fitted["splits"]["original"]["saliency_aupr"] <= 1
    assert fitted["method"] == {"cf-f": "CF(tile)+F(shuffle)", "fgsm": "F(fgsm0.1)", "sal": "Sal(1)"}[method]

    again = runner.invoke(app, ["eval", str(run), "--shards", str(shards), "--workers", "0", "--device", "cpu"])
    assert again.exit_code == 0, again.output
    evaluated = json.loads((run / "results.json").read_text())
    assert evaluated["splits"] == fitted["splits"]  # every metric, saliency AUPR included, to the last bit
    for key in ("bg_gap", "background_reliance", "test_splits"):
        assert evaluated.get(key) == fitted.get(key), key
    with np.load(run / "predictions.npz") as npz:
        assert sorted(npz.files) == sorted(logits)
        for k in npz.files:
            assert np.array_equal(npz[k], logits[k]), k


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_cam_reads_a_timm_run_s_checkpoint(shards: Path, tmp_path: Path, arch: str) -> None:
    """`--masks-from cam` loads the best.pt of a real `train fit` run of a timm model (the ViT built for its 32 px
    crop, the build's 36 px images resized to it) and gives a mask per image."""
    from augment.mask_sources import Request, cam

    run = tmp_path / "run"
    assert fit(shards, run, arch).exit_code == 0
    cam.check(run / "best.pt")
    model = cam.load(run / "best.pt", "cpu")
    classes = json.loads((shards / "manifest.json").read_text())["dataset"]["classes"]
    assert model.kind == f"train fit {arch}" and list(model.classes) == classes
    assert model.input_size == (CROP if arch == "test_vit" else None)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for _ in range(3)]
    maps = cam.heatmaps(model, np.stack(images), [0, 1, None])
    assert maps.shape == (3, IMAGE, IMAGE) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    masks = cam.produce([Request(im, None, 0, classes[0], i) for i, im in enumerate(images)], model)
    assert all(m is None or (m.dtype == bool and m.shape == (IMAGE, IMAGE)) for m in masks)


def test_deepliftshap_on_a_vit_is_refused_in_one_line(shards: Path, tmp_path: Path) -> None:
    """captum's DeepLift has no rule for a ViT's GELU and attention: the run says so in one line, naming
    --saliency gradient, rather than writing numbers that would be wrong."""
    result = fit(shards, tmp_path / "run", "test_vit", "--saliency", "deepliftshap")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("train: error: --saliency deepliftshap: captum's DeepLift has no rule for Attention")
    assert line.endswith("use --saliency gradient for it")


def test_a_timm_model_trains_on_a_class_ordered_release_with_photographs(tmp_path: Path) -> None:
    """The same on data as released, not the synthetic set: IN-9's bg_challenge/ tree written class folder by class
    folder (names with spaces, wnid stems, scikit-image photographs as backgrounds; tests/upstream.py), built by the
    in9 adapter with CF(telea) and F(shuffle); test_resnet fits one epoch with CF+F, and `train eval` reproduces its
    predictions bit for bit."""
    from upstream import IN9_RELEASE, make_in9_release

    from train.cli import app

    root = tmp_path / "bg_challenge"
    make_in9_release(root)
    shards = tmp_path / "shards"
    config = BuildConfig(
        dataset="in9", infill=["telea"], factual=["shuffle"], image_size=IMAGE, dataset_options={"root": str(root)}
    )
    manifest = build(shards, config, workers=1, progress=False)
    assert len(manifest["dataset"]["classes"]) == len(IN9_RELEASE)
    run = tmp_path / "run"
    result = fit(shards, run, "test_resnet", "--cf", "telea", "--f", "shuffle", "--batch-size", "6")
    assert result.exit_code == 0, result.output
    with np.load(run / "predictions.npz") as npz:
        logits = {k: npz[k] for k in npz.files}
    (run / "predictions.npz").unlink()  # eval writes it anew
    again = runner.invoke(app, ["eval", str(run), "--shards", str(shards), "--workers", "0", "--device", "cpu"])
    assert again.exit_code == 0, again.output
    with np.load(run / "predictions.npz") as npz:
        assert sorted(npz.files) == sorted(logits) and all(np.array_equal(npz[k], logits[k]) for k in npz.files)
