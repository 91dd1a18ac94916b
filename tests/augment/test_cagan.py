"""CAGAN: the TF details that decide whether official weights work, weight import, inference, build, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_image, rect_hole
from tf_checkpoint import write_bundle
from typer.testing import CliRunner

from augment.cagan import net, weights
from augment.cagan.inpaint import Inpainter
from augment.cli import app
from augment.contract.shards import sha256_file

# The official checkpoint's generator, as listed in the DeepFill v1 release (TF kernels are HWIO).
_C = 128
OFFICIAL = {
    "conv1": [5, 5, 5, 32],
    "conv2_downsample": [3, 3, 32, 64],
    "conv3": [3, 3, 64, 64],
    "conv4_downsample": [3, 3, 64, 128],
    **{
        n: [3, 3, _C, _C]
        for n in ("conv5", "conv6", "conv7_atrous", "conv8_atrous", "conv9_atrous", "conv10_atrous", "conv11", "conv12")
    },
    "conv13_upsample/conv13_upsample_conv": [3, 3, 128, 64],
    "conv14": [3, 3, 64, 64],
    "conv15_upsample/conv15_upsample_conv": [3, 3, 64, 32],
    "conv16": [3, 3, 32, 16],
    "conv17": [3, 3, 16, 3],
    "xconv1": [5, 5, 5, 32],
    "xconv2_downsample": [3, 3, 32, 32],
    "xconv3": [3, 3, 32, 64],
    "xconv4_downsample": [3, 3, 64, 64],
    "xconv5": [3, 3, 64, 128],
    **{n: [3, 3, _C, _C] for n in ("xconv6", "xconv7_atrous", "xconv8_atrous", "xconv9_atrous", "xconv10_atrous")},
    "pmconv1": [5, 5, 5, 32],
    "pmconv2_downsample": [3, 3, 32, 32],
    "pmconv3": [3, 3, 32, 64],
    "pmconv4_downsample": [3, 3, 64, 128],
    **{n: [3, 3, _C, _C] for n in ("pmconv5", "pmconv6", "pmconv9", "pmconv10")},
    "allconv11": [3, 3, 256, 128],
    "allconv12": [3, 3, 128, 128],
    "allconv13_upsample/allconv13_upsample_conv": [3, 3, 128, 64],
    "allconv14": [3, 3, 64, 64],
    "allconv15_upsample/allconv15_upsample_conv": [3, 3, 64, 32],
    "allconv16": [3, 3, 32, 16],
    "allconv17": [3, 3, 16, 3],
}
# The PyTorch conversion's names for the layers whose names differ (the rest keep the TF layer name).
CONVERSION = {
    "conv13_upsample/conv13_upsample_conv": "coarse_generator.conv13",
    "conv15_upsample/conv15_upsample_conv": "coarse_generator.conv15",
    "allconv13_upsample/allconv13_upsample_conv": "fine_generator.allconv13",
    "allconv15_upsample/allconv15_upsample_conv": "fine_generator.allconv15",
}


def conversion_name(tf_layer: str) -> str:
    if tf_layer in CONVERSION:
        return CONVERSION[tf_layer]
    if tf_layer.startswith("xconv"):
        return f"fine_generator.{tf_layer[1:]}"
    if tf_layer.startswith(("pmconv", "allconv")):
        return f"fine_generator.{tf_layer}"
    return f"coarse_generator.{tf_layer}"


def official_tensors(seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    """Random weights under every official name, TF layout."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer, shape in OFFICIAL.items():
        out[f"inpaint_net/{layer}/kernel"] = (rng.standard_normal(shape) * scale).astype(np.float32)
        out[f"inpaint_net/{layer}/bias"] = (rng.standard_normal(shape[-1]) * scale).astype(np.float32)
    return out


def assigned_generator(tensors: dict[str, np.ndarray]) -> net.Generator:
    """A generator whose convolutions get the TF tensors by hand (HWIO -> OIHW), matched by layer name."""
    gen = net.Generator()
    convs = {**{n: m for n, m in gen.coarse.items()}, **{n: m for n, m in gen.refine.items()}}
    with torch.no_grad():
        for layer in OFFICIAL:
            conv = convs[layer.split("/")[0]]
            conv.weight.copy_(torch.from_numpy(tensors[f"inpaint_net/{layer}/kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(tensors[f"inpaint_net/{layer}/bias"]))
    return gen.eval()


def inputs(size: int = 64, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    m = torch.zeros(n, 1, size, size)
    m[0, :, 16:40, 8:32] = 1
    m[-1, :, 30:60, 20:50] = 1
    return x, m


# -- the architecture and TF's conventions -------------------------------------------------------------------------


def test_layer_table_matches_the_official_checkpoint() -> None:
    table = weights.name_table()
    assert len(table) == 84
    shapes = net.expected_shapes()
    for ours, tf, _ in table:
        kernel = OFFICIAL[tf.removeprefix("inpaint_net/").rsplit("/", 1)[0]]
        expected = (kernel[3], kernel[2], kernel[0], kernel[1]) if tf.endswith("kernel") else (kernel[3],)
        assert shapes[ours] == expected, ours
    assert sum(int(np.prod(s)) for s in shapes.values()) == 3_601_542


def test_tf_same_padding_is_asymmetric_on_stride_two() -> None:
    assert net.tf_same_pads(256, 3, 2, 1) == (0, 1)
    assert net.tf_same_pads(64, 3, 1, 16) == (16, 16)
    assert net.tf_same_pads(64, 5, 1, 1) == (2, 2)
    # ones through an all-ones 3x3 stride-2 kernel: the top-left window is fully inside (TF pads only after)
    out = net.conv_same(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3), None, stride=2)
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, 0, 0] == 9 and out[0, 0, -1, -1] == 4


def test_nearest_downsampling_follows_tf_align_corners() -> None:
    assert net.tf_nearest_index(64, 32).tolist()[15:18] == [30, 33, 35]
    assert net.tf_nearest_index(256, 64).tolist()[10:13] == [40, 45, 49]
    composed = net.tf_nearest_index(256, 64)[net.tf_nearest_index(64, 32)].tolist()
    assert composed[:8] == [0, 8, 16, 24, 32, 40, 49, 57] and composed[-1] == 255
    assert net.tf_nearest_index(128, 256).tolist()[:6] == [0, 0, 1, 1, 2, 2]  # x2 up is plain nearest
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert net.tf_nearest(x, (2, 2)).flatten().tolist() == [0.0, 3.0, 12.0, 15.0]


def reference_attention(f: torch.Tensor, mask: torch.Tensor, rate: int = 2, scale: float = 10.0) -> torch.Tensor:
    """The official layer for one image, step by step with loops (slow, obvious): f = b, ksize 3, fuse 3."""
    _, c, h, w = f.shape
    hd, wd = h // rate, w // rate
    # TF1 align_corners picks, worked out by hand for 12 -> 6 and 16 -> 8: round(i * (n - 1) / (m - 1))
    rows, cols = torch.tensor([0, 2, 4, 7, 9, 11]), torch.tensor([0, 2, 4, 6, 9, 11, 13, 15])
    assert (h, w) == (12, 16)
    fd = f[0][:, rows][:, :, cols]
    md = mask[0, 0][rows][:, cols]
    pad_fd, pad_md, pad_f = F.pad(fd, (1, 1, 1, 1)), F.pad(md, (1, 1, 1, 1)), F.pad(f[0], (1, 1, 1, 1))
    positions = [(y, x) for y in range(hd) for x in range(wd)]
    filters = []
    for y, x in positions:
        patch = pad_fd[:, y : y + 3, x : x + 3]
        filters.append(patch / max(float(patch.norm()), 1e-4))
    scores = torch.zeros(hd * wd, hd * wd)  # [foreground, background]
    for i, (y, x) in enumerate(positions):
        window = pad_fd[:, y : y + 3, x : x + 3]
        for j, filt in enumerate(filters):
            scores[i, j] = (window * filt).sum()
    eye = torch.eye(3).view(1, 1, 3, 3)
    scores = F.conv2d(scores.view(1, 1, hd * wd, hd * wd), eye, padding=1).view(hd, wd, hd, wd)
    scores = scores.permute(1, 0, 3, 2).reshape(1, 1, hd * wd, hd * wd)
    scores = F.conv2d(scores, eye, padding=1).view(wd, hd, wd, hd).permute(1, 0, 3, 2).reshape(hd * wd, hd * wd)
    known = torch.tensor([float(pad_md[y : y + 3, x : x + 3].mean() == 0) for y, x in positions])
    att = torch.softmax(scores * known * scale, dim=1) * known
    out = torch.zeros(c, h + 2, w + 2)
    for i, (y, x) in enumerate(positions):  # each foreground cell pastes a 4x4 blend at stride 2 (pad 1)
        for j, (by, bx) in enumerate(positions):
            patch = pad_f[:, 2 * by : 2 * by + 4, 2 * bx : 2 * bx + 4]
            out[:, 2 * y : 2 * y + 4, 2 * x : 2 * x + 4] += att[i, j] * patch
    return out[:, 1:-1, 1:-1].unsqueeze(0) / 4


def test_contextual_attention_matches_a_step_by_step_reference() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 4, 12, 16, generator=g)
    mask = torch.zeros(2, 1, 12, 16)
    mask[0, :, 2:7, 3:9] = 1
    mask[1, :, 6:12, 8:16] = 1
    out = net.contextual_attention(f, f, mask)
    for i in range(2):  # each image uses its own mask, unlike the official layer's mask of item 0
        expected = reference_attention(f[i : i + 1], mask[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=1e-4)


def test_generator_runs_batched_and_rejects_bad_sizes() -> None:
    gen = net.Generator(cnum=4).eval()
    x, m = inputs(32, 3)
    with torch.inference_mode():
        coarse, refined = gen(x, m)
        alone = gen(x[1:2], m[1:2])[1]
    assert coarse.shape == refined.shape == (3, 3, 32, 32)
    assert refined.abs().max() <= 1
    torch.testing.assert_close(refined[1:2], alone, atol=1e-5, rtol=1e-4)  # no mixing between batch items
    with pytest.raises(ValueError, match="multiples of 8"):
        gen(torch.zeros(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))


# -- weights ----------------------------------------------------------------------------------------------------------


def test_import_from_the_official_tf_checkpoint_equals_direct_assignment(tmp_path: Path) -> None:
    tensors = official_tensors()
    noise = {  # what else the release folder may hold: the critics and Adam slots are ignored
        "discriminator/discriminator_local/conv1/kernel": np.zeros((5, 5, 3, 64), np.float32),
        "inpaint_net/conv1/kernel/Adam": np.zeros((5, 5, 5, 32), np.float32),
        "beta1_power": np.float32(0.9),
    }
    write_bundle(tmp_path / "release_imagenet_256", {**tensors, **noise})
    result = CliRunner().invoke(
        app,
        [
            "cagan",
            "import",
            str(tmp_path / "release_imagenet_256"),
            "--out",
            str(tmp_path / "w" / "imagenet.safetensors"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3,601,542 parameters" in result.output
    model, meta = weights.load(tmp_path / "w" / "imagenet.safetensors")
    assert meta["format"] == "cagan-v1" and meta["size"] == "256"
    x, m = inputs()
    with torch.inference_mode():
        torch.testing.assert_close(model(x, m)[1], assigned_generator(tensors)(x, m)[1], atol=0, rtol=0)


def test_import_from_the_pytorch_conversion_equals_direct_assignment(tmp_path: Path) -> None:
    tensors = official_tensors(seed=1)
    state = {}
    for layer in OFFICIAL:
        name = conversion_name(layer)
        state[f"{name}.conv.weight"] = torch.from_numpy(tensors[f"inpaint_net/{layer}/kernel"]).permute(3, 2, 0, 1)
        state[f"{name}.conv.bias"] = torch.from_numpy(tensors[f"inpaint_net/{layer}/bias"])
    torch.save(state, tmp_path / "torch_model.p")
    imported, kind = weights.import_weights(tmp_path / "torch_model.p")
    assert kind == "torch-conversion"
    model = net.Generator()
    model.load_state_dict(imported)
    x, m = inputs()
    with torch.inference_mode():
        torch.testing.assert_close(model.eval()(x, m)[1], assigned_generator(tensors)(x, m)[1], atol=0, rtol=0)


def test_import_is_strict_and_says_what_is_wrong(tmp_path: Path) -> None:
    tensors = official_tensors()
    del tensors["inpaint_net/conv5/bias"]
    tensors["inpaint_net/conv99/kernel"] = np.zeros((3, 3, 1, 1), np.float32)
    write_bundle(tmp_path / "partial", tensors)
    with pytest.raises(weights.WeightsError, match=r"missing \(1\): inpaint_net/conv5/bias(.|\n)*extra \(1\)"):
        weights.import_weights(tmp_path / "partial")
    tensors = official_tensors()
    tensors["inpaint_net/conv3/kernel"] = np.zeros((3, 3, 64, 65), np.float32)
    write_bundle(tmp_path / "misshapen", tensors)
    with pytest.raises(weights.WeightsError, match=r"wrong shape \(1\): coarse.conv3.weight"):
        weights.import_weights(tmp_path / "misshapen")
    tensors = official_tensors()
    tensors["inpaint_net/xconv1/kernel"] = np.zeros((5, 5, 3, 32), np.float32)  # v2's first layer sees RGB only
    write_bundle(tmp_path / "v2", tensors)
    with pytest.raises(weights.WeightsError, match="DeepFill v2"):
        weights.import_weights(tmp_path / "v2")
    torch.save({"coarse_generator.conv1.conv.weight": torch.zeros(1)}, tmp_path / "bad.p")
    with pytest.raises(weights.WeightsError, match="missing"):
        weights.import_weights(tmp_path / "bad.p")
    with pytest.raises(weights.WeightsError, match="no such file or folder"):
        weights.import_weights(tmp_path / "nothing")


def test_pickled_code_in_a_conversion_is_refused(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "executed",))

    torch.save({"coarse_generator.conv1.conv.weight": Boom()}, tmp_path / "evil.p")
    with pytest.raises(weights.WeightsError, match="tensor-only"):
        weights.import_weights(tmp_path / "evil.p")
    assert not (tmp_path / "executed").exists()


def test_default_weights_and_load_errors(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match="augment cagan import"):
        weights.default_weights(tmp_path)
    weights.save(tmp_path / "a.safetensors", net.Generator(4).state_dict(), cnum=4, size=32)
    assert weights.default_weights(tmp_path) == tmp_path / "a.safetensors"
    model, meta = weights.load(tmp_path / "a.safetensors")
    assert model.cnum == 4 and meta["size"] == "32"
    weights.save(tmp_path / "b.safetensors", net.Generator(4).state_dict(), cnum=4, size=32)
    with pytest.raises(weights.WeightsError, match="several"):
        weights.default_weights(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(weights.WeightsError, match="junk.safetensors: not a safetensors file"):
        weights.load(tmp_path / "junk.safetensors")


# -- inference ----------------------------------------------------------------------------------------------------


def test_inpainter_keeps_outside_pixels_and_handles_any_size() -> None:
    torch.manual_seed(0)
    inpainter = Inpainter(net.Generator(4), size=32, batch_size=2)
    images = [make_image(40, 40, seed=1), make_image(20, 28, seed=2), make_image(32, 32, seed=3)]
    holes = [rect_hole(40, 40, 5, 20, 10, 30), rect_hole(20, 28, 0, 10, 0, 9), rect_hole(32, 32, 8, 24, 8, 24)]
    outs = inpainter(images, holes)
    for image, hole, out in zip(images, holes, outs, strict=True):
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[~hole], image[~hole])
        assert (out[hole] != image[hole]).any()
    assert inpainter(images, holes)[0].tobytes() == outs[0].tobytes()  # deterministic


def test_rgb_to_bgr_happens_once() -> None:
    from augment.cagan.inpaint import from_model, to_model

    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255  # pure red
    x, _ = to_model([image], [np.zeros((8, 8), bool)], 8)
    assert x[0, 2].min() == 1 and x[0, 0].max() == -1  # red is the last channel for the model
    np.testing.assert_array_equal(from_model(x)[0], image)


@pytest.mark.parametrize("side", [23, 45, 180, 200, 256, 300])
def test_no_hole_colour_reaches_the_model_outside_its_hole(side: int) -> None:
    from augment.cagan.inpaint import to_model

    image = np.zeros((side, side, 3), np.uint8)
    hole = np.zeros((side, side), bool)
    hole[side // 3, :] = hole[:, side // 2] = True  # thin lines: the hardest case for resizing
    hole[side // 2 : side // 2 + 2, : side // 2] = True
    image[hole] = 255  # the object's colour, which must not leak into the context
    x, m = to_model([image], [hole], 256)
    assert m.any()
    assert (x[0][:, ~m[0, 0].bool()] == -1).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_amp_batches_match_cpu_closely() -> None:
    torch.manual_seed(0)
    model = net.Generator(8)
    images = [make_image(64, 64, seed=s) for s in range(4)]
    holes = [rect_hole(64, 64, 10, 40, 12, 44)] * 4
    cpu = Inpainter(model, size=64, batch_size=4)(images, holes)
    gpu = Inpainter(model, size=64, batch_size=4, device=torch.device("cuda"))(images, holes)
    for a, b in zip(cpu, gpu, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4  # bf16 convolutions (attention in fp32): close


# -- build, train, preview ---------------------------------------------------------------------------------------


def build_args(out: Path, weights_file: Path, *extra: str) -> list[str]:
    return [
        "build",
        "--dataset",
        "synthetic",
        "--size",
        "12",
        "--image-size",
        "32",
        "--infill",
        "cagan",
        "--infill",
        "tile",
        "--cagan-weights",
        str(weights_file),
        "--batch-size",
        "4",
        "--shard-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def test_build_with_cagan_is_batched_deterministic_and_recorded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights_file = tmp_path / "w.safetensors"
    weights.save(weights_file, net.Generator(4).state_dict(), cnum=4, size=32)
    runner = CliRunner()
    for name, workers in (("a", "1"), ("b", "2")):
        result = runner.invoke(app, build_args(tmp_path / name, weights_file, "--workers", workers))
        assert result.exit_code == 0, result.output
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())

    def checksums(manifest: dict) -> list[str]:
        return [s["sha256"] for split in manifest["splits"].values() for s in split["shards"]]

    assert checksums(a) == checksums(b)
    assert "cf.cagan.jpg" in a["splits"]["train"]["fields"]
    assert a["models"]["cagan"]["sha256"] == sha256_file(weights_file)
    assert "--cagan-weights" in a["command"]
    assert runner.invoke(app, ["verify", str(tmp_path / "a")]).exit_code == 0
    info = runner.invoke(app, ["info", str(tmp_path / "a")])
    assert f"model:    cagan {weights_file} (sha256 {a['models']['cagan']['sha256'][:12]}" in info.output

    import webdataset as wds

    from augment.contract import encode

    shard = tmp_path / "a" / a["splits"]["train"]["shards"][0]["path"]
    for sample in wds.WebDataset(str(shard), shardshuffle=False):
        original = encode.decode_image(sample["jpg"])
        filled = encode.decode_image(sample["cf.cagan.jpg"])
        boxes = json.loads(sample["json"])["boxes"]
        x0, y0, x1, y1 = boxes[0]
        far = np.ones(original.shape[:2], bool)  # pixels whose 8x8 JPEG block does not touch the hole
        far[y0 // 8 * 8 : -(-y1 // 8) * 8, x0 // 8 * 8 : -(-x1 // 8) * 8] = False
        if far.any():
            assert np.abs(original[far].astype(int) - filled[far].astype(int)).max() <= 2  # only JPEG rounding
        assert np.abs(original[~far].astype(int) - filled[~far].astype(int)).mean() > 3  # the hole was filled


def test_build_without_weights_says_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["build", "--dataset", "synthetic", "--size", "5", "--infill", "cagan", "--out", "out"]
    )
    assert result.exit_code == 2
    assert "cagan_weights/" in result.output and "augment cagan import" in result.output
    assert not (tmp_path / "out").exists()


def test_train_resume_and_preview_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    shards = tmp_path / "shards"
    result = runner.invoke(
        app,
        [
            "build",
            "--dataset",
            "synthetic",
            "--size",
            "20",
            "--image-size",
            "32",
            "--out",
            str(shards),
            "-q",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output

    def fit(name: str, steps: int, *extra: str) -> dict:
        args = [
            "cagan",
            "train",
            "--shards",
            str(shards),
            "--out",
            str(tmp_path / f"{name}.safetensors"),
            "--preset",
            "tiny",
            "--steps",
            str(steps),
            "--run-dir",
            str(tmp_path / name),
            "--device",
            "cpu",
            *extra,
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "eval.json").read_text())

    full = fit("full", 3)
    assert {"cagan_l1", "tile_l1"} <= set(full["final"]) and 0 < full["final"]["tile_l1"] < 1
    fit("part", 2)
    fit("part", 3, "--resume")
    a, _ = weights.load(tmp_path / "full.safetensors")
    b, _ = weights.load(tmp_path / "part.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)

    manifest = json.loads((shards / "manifest.json").read_text())  # a build without a val split holds out train
    del manifest["splits"]["val"]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert fit("no-val", 1)["final"]["tile_l1"] > 0

    sheet = tmp_path / "sheet.png"
    result = runner.invoke(
        app,
        [
            "cagan",
            "preview",
            "--shards",
            str(shards),
            "--weights",
            str(tmp_path / "full.safetensors"),
            "--out",
            str(sheet),
            "--rows",
            "3",
            "--split",
            "train",
        ],
    )
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(sheet).size[1] > 3 * 100


def test_training_holes_hide_the_object_and_supervise_only_background() -> None:
    from augment.cagan.train import Holes, loss_weights

    images = np.stack([make_image(32, 32, seed=s) for s in range(3)])
    objects = np.zeros((3, 32, 32), bool)
    objects[0, 4:12, 6:20] = True
    objects[1, 10:30, 10:30] = True
    objects[2, 0:8, 0:8] = True
    holes = Holes.of(images, objects, 0.25, 0.6)
    draw = holes.draw(np.random.default_rng(0), 40)
    assert len(draw.images) == 40
    for image, hole, target, (top, left, h, w) in zip(draw.images, draw.holes, draw.targets, draw.rects, strict=True):
        k = next(i for i in range(3) if images[i] is image or np.array_equal(images[i], image))
        obj_rect = holes.objects[k]
        assert obj_rect[objects[k]].all()  # the grown rectangle covers the object
        assert (hole >= obj_rect).all()  # the object's rectangle is always hidden from the model
        assert not (target & obj_rect).any()  # and never supervised
        assert target.sum() >= 0.25 * h * w and 8 <= h <= 19 and 8 <= w <= 19
        assert target[top : top + h, left : left + w].sum() == target.sum()
    weights = loss_weights(draw, 0.9)
    assert (weights[~draw.targets] == 0).all() and (weights[draw.targets] > 0).all() and weights.max() == 1
