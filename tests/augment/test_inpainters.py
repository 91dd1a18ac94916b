"""Inpainting networks from a local file (issue #32): LaMa's TorchScript ``big-lama.pt`` (``--infill lama``) and
MI-GAN's ONNX pipeline (``--infill migan``), through the model seam, batched.

No real network is downloaded: small stand-ins with the same signatures fill the hole with the mean of the pixels
the network is told to keep (deterministic, so every number below is exact up to float32 rounding). The LaMa
stand-in refuses an input whose H or W is not a multiple of 8, as the real network's down- and upsampling would
misalign; the ONNX stand-ins take uint8 with 255 = keep, one with a dynamic batch dimension, one fixed to 1."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, rect_hole
from typer.testing import CliRunner

from augment.cli import app
from augment.contract import encode
from augment.contract.shards import sha256_file
from augment.infill import INFILLS
from augment.inpainters import common, lama, migan

onnx = pytest.importorskip("onnx")  # the dev extra: writes the stand-in ONNX files


# ---- stand-ins ---------------------------------------------------------------------------------------------------


class MeanFill(torch.nn.Module):
    """LaMa's signature: image [N, 3, H, W] in [0, 1], mask [N, 1, H, W] with 1 = hole; H and W multiples of 8."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[2] % 8 != 0 or image.shape[3] % 8 != 0:
            raise ValueError("the network takes H and W multiples of 8")
        if bool(((mask != 0) & (mask != 1)).any()) or bool((image < 0).any()) or bool((image > 1).any()):
            raise ValueError("the mask is 0/1 and the image in [0, 1]")
        keep = 1.0 - mask
        total = keep.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        mean = (image * keep).sum(dim=(2, 3), keepdim=True) / total
        return image * keep + mean * mask


class Identity(torch.nn.Module):
    """Returns what it is given: shows what reaches the network in the hole."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image


class OneInput(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image


def save_script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, not gone: big-lama.pt is one
        torch.jit.script(module).save(str(path))
    return path


def save_onnx(path: Path, batch: int | str = "n", over_batch: bool = False, image_type: int | None = None) -> Path:
    """MI-GAN's signature: image uint8 [N, 3, H, W], mask uint8 [N, 1, H, W] (255 = keep), output uint8 [N, 3, H, W];
    the hole becomes the per-image, per-channel mean of the kept pixels (``over_batch``: of the whole batch, a file
    that declares a dynamic batch but does not batch). Inputs are named unlike MI-GAN's: they are taken by
    position."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray):
        return numpy_helper.from_array(value, name)

    axes = [0, 2, 3] if over_batch else [2, 3]
    nodes = [
        helper.make_node("Cast", ["rgb"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["known"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["m", "c255"], ["keep"]),
        helper.make_node("Mul", ["x", "keep"], ["xk"]),
        helper.make_node("ReduceSum", ["xk", "axes"], ["total"], keepdims=1),
        helper.make_node("ReduceSum", ["keep", "axes"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "c1"], ["count1"]),
        helper.make_node("Div", ["total", "count1"], ["mean"]),
        helper.make_node("Sub", ["c1", "keep"], ["hole"]),
        helper.make_node("Mul", ["mean", "hole"], ["fill"]),
        helper.make_node("Add", ["xk", "fill"], ["sum"]),
        helper.make_node("Round", ["sum"], ["rounded"]),
        helper.make_node("Clip", ["rounded", "c0", "c255"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["done"], to=TensorProto.UINT8),
    ]
    inits = [
        const("c0", np.array(0, np.float32)),
        const("c1", np.array(1, np.float32)),
        const("c255", np.array(255, np.float32)),
        const("axes", np.array(axes, np.int64)),
    ]
    image_type = TensorProto.UINT8 if image_type is None else image_type
    graph = helper.make_graph(
        nodes,
        "stand-in",
        [
            helper.make_tensor_value_info("rgb", image_type, [batch, 3, "h", "w"]),
            helper.make_tensor_value_info("known", TensorProto.UINT8, [batch, 1, "h", "w"]),
        ],
        [helper.make_tensor_value_info("done", TensorProto.UINT8, [batch, 3, "h", "w"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("networks")
    return {
        "lama": save_script(MeanFill(), folder / "big-lama.pt"),
        "identity": save_script(Identity(), folder / "identity.pt"),
        "one-input": save_script(OneInput(), folder / "one-input.pt"),
        "migan": save_onnx(folder / "migan.onnx"),
        "migan-1": save_onnx(folder / "migan-batch1.onnx", batch=1),
        "over-batch": save_onnx(folder / "over-batch.onnx", over_batch=True),
        "float-image": save_onnx(folder / "float-image.onnx", image_type=onnx.TensorProto.FLOAT),
    }


def mean_fill(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The stand-ins' fill, in float64: the mean of the kept pixels, per channel."""
    return np.rint(image[keep].astype(np.float64).mean(axis=0))


IMAGES = [make_image(12, 16, seed=1), make_image(12, 16, seed=2), make_image(16, 24, seed=3), make_image(21, 10, 4)]
HOLES = [
    rect_hole(12, 16, 3, 8, 4, 11),
    rect_hole(12, 16, 6, 12, 10, 16),  # touches the bottom and right edges: mirrored into the padding
    rect_hole(16, 24, 2, 9, 3, 20),
    rect_hole(21, 10, 0, 21, 0, 4),  # a full-height strip
]


# ---- LaMa: TorchScript ---------------------------------------------------------------------------------------------


def test_lama_pads_to_a_multiple_of_8_mirrors_the_edge_and_changes_only_the_hole(files) -> None:
    """The stand-in raises unless H and W are multiples of 8 (12 x 16, 21 x 10 are padded; 16 x 24 is not), the
    mask is 0/1 and the image in [0, 1]; the fill is the mean of the kept pixels of the *padded* image, so it
    matches only numpy's ``symmetric`` padding (edge row repeated), as LaMa's reference pads."""
    inpainter = lama.runner(files["lama"], "cpu", 3)
    out = inpainter(IMAGES, HOLES)
    for image, hole, filled in zip(IMAGES, HOLES, out, strict=True):
        assert filled.shape == image.shape and filled.dtype == np.uint8
        np.testing.assert_array_equal(filled[~hole], image[~hole])  # bit for bit outside the hole
        pad = ((0, -image.shape[0] % 8), (0, -image.shape[1] % 8))
        padded = np.pad(image, (*pad, (0, 0)), mode="symmetric")
        keep = ~np.pad(hole, pad, mode="symmetric")
        expected = mean_fill(padded, keep)
        assert np.abs(filled[hole].astype(int) - expected).max() <= 1  # float32 against float64
        reflected = mean_fill(np.pad(image, (*pad, (0, 0)), mode="reflect"), ~np.pad(hole, pad, mode="reflect"))
        if pad != ((0, 0), (0, 0)):
            assert np.abs(expected - reflected).max() > 1  # the check tells the two paddings apart


def test_lama_is_the_same_batched_or_one_by_one_and_skips_empty_holes(files) -> None:
    batched = lama.runner(files["lama"], "cpu", 4)(IMAGES, HOLES)
    single = lama.runner(files["lama"], "cpu", 1)(IMAGES, HOLES)
    assert [a.tobytes() for a in batched] == [b.tobytes() for b in single]
    empty = np.zeros((12, 16), bool)
    out = lama.runner(files["identity"], "cpu", 2)([IMAGES[0], IMAGES[1]], [empty, HOLES[1]])
    np.testing.assert_array_equal(out[0], IMAGES[0])
    assert (out[1][HOLES[1]] == 0).all()  # the object's pixels never reach the network: the hole arrives blanked


def test_lama_describes_the_file_for_the_manifest(files) -> None:
    meta = INFILLS["lama"].model.metadata(files["lama"])
    assert meta["kind"] == "torchscript" and meta["forward"] == "forward(Tensor image, Tensor mask) -> Tensor"
    assert meta["pad_to_multiple"] == 8 and meta["torch"] == torch.__version__


# ---- MI-GAN: ONNX --------------------------------------------------------------------------------------------------


def test_migan_passes_uint8_with_255_as_keep_and_a_hole_grown_by_the_pipelines_blend(files) -> None:
    """The stand-in keeps what the mask says is 255; the fill is the mean of the pixels outside our hole grown by
    3 (MI-GAN's blend margin), and outside our hole every pixel is unchanged, bit for bit."""
    for name, batched in (("migan", True), ("migan-1", False)):
        inpainter = migan.runner(files[name], "cpu", 4)
        assert inpainter.batched is batched  # dynamic batch: batched; a batch fixed to 1: one image per call
        out = inpainter(IMAGES, HOLES)
        for image, hole, filled in zip(IMAGES, HOLES, out, strict=True):
            np.testing.assert_array_equal(filled[~hole], image[~hole])
            expected = mean_fill(image, ~common.grow(hole, migan.BLEND))
            assert np.abs(filled[hole].astype(int) - expected).max() <= 1


def test_migan_batch_sizes_and_files_of_either_batch_give_the_same_bytes(files) -> None:
    runs = [migan.runner(files[name], "cpu", size)(IMAGES, HOLES) for name, size in (("migan", 1), ("migan", 3))]
    runs.append(migan.runner(files["migan-1"], "cpu", 3)(IMAGES, HOLES))
    assert len({tuple(image.tobytes() for image in run) for run in runs}) == 1


def test_a_file_whose_dynamic_batch_does_not_batch_runs_one_image_at_a_time(files) -> None:
    """As MI-GAN's own export (its forward is written for one image): the probe sees that a batch of two differs
    from each image alone, so the file is run one image per call and gives each image's own result."""
    inpainter = migan.runner(files["over-batch"], "cpu", 4)
    assert inpainter.batched is False
    reference = migan.runner(files["migan"], "cpu", 1)(IMAGES, HOLES)
    assert [a.tobytes() for a in inpainter(IMAGES, HOLES)] == [b.tobytes() for b in reference]


def test_migan_describes_the_file_for_the_manifest(files) -> None:
    import onnxruntime

    meta = INFILLS["migan"].model.metadata(files["migan-1"])
    assert meta["kind"] == "onnx" and meta["onnxruntime"] == onnxruntime.__version__
    assert [(a["name"], a["type"], a["shape"]) for a in meta["inputs"]] == [
        ("rgb", "tensor(uint8)", [1, 3, "h", "w"]),
        ("known", "tensor(uint8)", [1, 1, "h", "w"]),
    ]
    assert meta["outputs"][0]["shape"] == [1, 3, "h", "w"] and meta["hole_grown_by"] == 3
    assert "CPUExecutionProvider" in meta["providers_available"]


# ---- through `augment build` ---------------------------------------------------------------------------------------


def build_args(out: Path, files: dict[str, Path], migan_file: str, batch: int, workers: int) -> list[str]:
    return [
        "build",
        "--dataset",
        "synthetic",
        "--size",
        "10",
        "--image-size",
        "36",  # not a multiple of 8: LaMa's input is padded to 40
        "--infill",
        "lama",
        "--infill",
        "migan",
        "--lama-weights",
        str(files["lama"]),
        "--migan-weights",
        str(files[migan_file]),
        "--batch-size",
        str(batch),
        "--shard-size",
        "4",
        "--device",
        "cpu",
        "--workers",
        str(workers),
        "--out",
        str(out),
        "-q",
    ]


def test_build_is_the_same_for_any_batch_size_workers_and_batch_dimension_and_is_recorded(files, tmp_path) -> None:
    runner = CliRunner()
    manifests = []
    for name, migan_file, batch, workers in (("a", "migan", 1, 1), ("b", "migan", 4, 2), ("c", "migan-1", 3, 1)):
        result = runner.invoke(app, build_args(tmp_path / name, files, migan_file, batch, workers))
        assert result.exit_code == 0, result.output
        manifests.append(json.loads((tmp_path / name / "manifest.json").read_text()))

    def checksums(manifest: dict) -> list[str]:
        return [s["sha256"] for split in manifest["splits"].values() for s in split["shards"]]

    assert checksums(manifests[0]) == checksums(manifests[1]) == checksums(manifests[2])
    a = manifests[0]
    assert {"cf.lama.jpg", "cf.migan.jpg"} <= set(a["splits"]["train"]["fields"])
    assert a["models"]["lama"]["sha256"] == sha256_file(files["lama"])
    assert a["models"]["migan"]["sha256"] == sha256_file(files["migan"])
    assert (
        a["models"]["lama"]["metadata"]["kind"] == "torchscript" and a["models"]["migan"]["metadata"]["kind"] == "onnx"
    )
    assert a["models"]["lama"]["device"] == "cpu" and a["models"]["migan"]["batch_size"] == 1
    assert f"--lama-weights {files['lama']}" in a["command"] and f"--migan-weights {files['migan']}" in a["command"]
    assert runner.invoke(app, ["verify", str(tmp_path / "a")]).exit_code == 0
    info = runner.invoke(app, ["info", str(tmp_path / "a")]).output
    sha = a["models"]["lama"]["sha256"][:12]
    assert f"model:    lama {files['lama']} (sha256 {sha}, TorchScript forward(Tensor image, Tensor mask)" in info

    import webdataset as wds

    shard = tmp_path / "a" / a["splits"]["train"]["shards"][0]["path"]
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert samples
    checked = 0
    for sample in samples:
        original = encode.decode_image(sample["jpg"])
        x0, y0, x1, y1 = json.loads(sample["json"])["boxes"][0]
        far = np.ones(original.shape[:2], bool)  # pixels whose 8x8 JPEG block does not touch the hole
        far[y0 // 8 * 8 : -(-y1 // 8) * 8, x0 // 8 * 8 : -(-x1 // 8) * 8] = False
        for field in ("cf.lama.jpg", "cf.migan.jpg"):
            filled = encode.decode_image(sample[field])
            if far.any():  # a box over the whole image leaves no block far from it
                assert np.abs(original[far].astype(int) - filled[far].astype(int)).max() <= 2  # JPEG rounding only
                checked += 1
    assert checked  # some samples were checked


@pytest.mark.parametrize(
    "method,file,expected",
    [
        ("lama", None, "--lama-weights: required for --infill lama: a local big-lama.pt"),
        ("migan", None, "--migan-weights: required for --infill migan: a local migan_pipeline_v2.onnx"),
        ("lama", "missing.pt", "missing.pt: no such file; expected big-lama.pt"),
        ("migan", "missing.onnx", "missing.onnx: no such file; expected migan_pipeline_v2.onnx"),
        ("lama", "garbled", "garbled.bin: not a TorchScript file ("),
        ("migan", "garbled", "garbled.bin: not an ONNX file onnxruntime loads ("),
        ("lama", "one-input", "one-input.pt: found forward(Tensor image) -> Tensor; expected"),
        ("migan", "float-image", "found inputs rgb float [n, 3, h, w], known uint8 [n, 1, h, w]; outputs done uint8"),
        ("migan", "lama", "big-lama.pt: not an ONNX file onnxruntime loads ("),
    ],
)
def test_a_missing_garbled_or_mismatched_file_is_one_line_naming_the_flag(
    files, tmp_path: Path, method: str, file: str | None, expected: str
) -> None:
    flag = f"--{method}-weights"
    args = ["build", "--dataset", "synthetic", "--size", "5", "--infill", method, "--out", str(tmp_path / "out")]
    if file == "garbled":
        (tmp_path / "garbled.bin").write_bytes(np.random.default_rng(0).bytes(2048))
        args += [flag, str(tmp_path / "garbled.bin")]
    elif file is not None:
        args += [flag, str(files.get(file, tmp_path / file))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and expected in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
