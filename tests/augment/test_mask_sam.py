"""``--masks-from sam``: the checkpoint's architecture read off its shapes, the build end to end with a tiny random
SAM (and one whose masks pass the gate), determinism across runs and workers, and the bad weight files."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from augment import masks
from augment.cli import app
from augment.contract import encode
from augment.contract.shards import iter_records
from augment.mask_sources import Request, sam

runner = CliRunner()
IMG = 128  # the tiny encoder's input size: a 32-pixel image is resized by 4
BUILD = (
    "build --dataset synthetic --size 20 --image-size 32 --infill tile --factual shuffle --masks-from sam "
    "--device cpu --batch-size 4 -q"
).split()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], prog_name="augment")


def tiny_sam(depth: int = 2, global_attn: tuple[int, ...] = (1,), window: int = 14, mlp_ratio: float = 4.0):
    """A randomly initialised SAM of the package's own classes, small enough for the CPU, seeded locally."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Sam(
            image_encoder=ImageEncoderViT(
                img_size=IMG,
                patch_size=16,
                embed_dim=32,
                depth=depth,
                num_heads=2,
                mlp_ratio=mlp_ratio,
                out_chans=32,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                rel_pos_zero_init=False,
                window_size=window,
                global_attn_indexes=global_attn,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=32, image_embedding_size=(IMG // 16, IMG // 16), input_image_size=(IMG, IMG), mask_in_chans=8
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer_dim=32,
                iou_head_depth=3,
                iou_head_hidden_dim=32,
                transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
            ),
        )
    return model.eval()


def save(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return save(tiny_sam().state_dict(), tmp_path_factory.mktemp("sam") / "sam_tiny.pth")


def samples(out: Path) -> dict[str, dict[str, bytes]]:
    return {k: f for p in sorted(out.glob("*/shard-*.tar")) for k, f in iter_records(p)}


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/shard-*.tar"))}


@pytest.fixture(scope="module")
def built(weights: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "out"
    result = invoke(*BUILD, "--mask-weights", weights, "--workers", "1", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    "kind",
    [
        {},  # windowed blocks over SAM's 14, as in vit_b/l/h
        {"depth": 3, "global_attn": (0, 2), "window": 4, "mlp_ratio": 2.0},
    ],
)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_rebuilds_the_architecture_from_the_shapes(tmp_path: Path, kind: dict, suffix: str) -> None:
    original = tiny_sam(**kind).state_dict()
    path = tmp_path / f"sam{suffix}"
    if suffix == ".pth":
        save(original, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in original.items()}, str(path))
    sam.check(path)
    model = sam.load(path, "cpu")
    assert not model.training and model.device == torch.device("cpu")
    assert model.image_encoder.img_size == IMG
    assert [b.window_size for b in model.image_encoder.blocks] == [
        0 if i in kind.get("global_attn", (1,)) else kind.get("window", 14) for i in range(kind.get("depth", 2))
    ]
    loaded = model.state_dict()
    assert list(loaded) == list(original)
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(sam.PIXEL_MEAN))


def test_produce_is_deterministic_one_mask_per_request(weights: Path) -> None:
    model = sam.load(weights, "cpu")
    rng = np.random.default_rng(0)
    cases = [((32, 32), [[4, 5, 20, 30]]), ((24, 40), [[1, 1, 9, 9], [20, 4, 38, 22]])]
    requests = [Request(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.array(b), 0, "a", 1) for (h, w), b in cases]
    before = torch.random.get_rng_state()
    first, again = sam.produce(requests, model), sam.produce(requests, model)
    assert torch.equal(torch.random.get_rng_state(), before)  # no global generator is touched
    assert [m.shape for m in first] == [(32, 32), (24, 40)] and all(m.dtype == bool for m in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def ellipse(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Logits, positive exactly inside the ellipse at 0.8 of each box's half-axes (union over the boxes)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    out = np.full(shape, -1.0)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        rx, ry = 0.4 * (x1 - x0), 0.4 * (y1 - y0)
        inside = 1 - ((xs - (x0 + x1) / 2) / max(rx, 1e-9)) ** 2 - ((ys - (y0 + y1) / 2) / max(ry, 1e-9)) ** 2
        out = np.maximum(out, inside)
    return out


@pytest.fixture
def ellipses(monkeypatch) -> list[np.ndarray]:
    """Make SAM answer each box prompt with its ellipse, through the real forward pass: the wrapper checks that the
    image and boxes reach the model resized by the encoder's factor, and swaps the upscaled logits for the ellipse's."""
    from segment_anything.modeling import Sam

    forward, seen = Sam.forward, []

    def fake(self, batched_input, multimask_output):
        assert multimask_output is False
        prompts = []
        for item in batched_input:
            h, w = item["original_size"]
            scale = IMG / max(h, w)
            assert tuple(item["image"].shape) == (3, round(h * scale), round(w * scale))
            boxes = item["boxes"].cpu().numpy() / scale
            assert np.allclose(boxes, boxes.round(), atol=1e-4) and boxes.shape[1] == 4  # whole stored pixels
            prompts.append(boxes.round())
            seen.append(boxes.round())
        real = self.postprocess_masks

        def post(low_res, input_size, original_size):
            logits = real(low_res, input_size, original_size)
            box = prompts.pop(0)
            assert logits.shape == (len(box), 1, *original_size)
            per_box = [torch.as_tensor(ellipse(b, tuple(original_size)), dtype=logits.dtype) for b in box]
            return torch.stack(per_box)[:, None]

        self.postprocess_masks = post
        try:
            return forward(self, batched_input, multimask_output)
        finally:
            del self.postprocess_masks

    monkeypatch.setattr(Sam, "forward", fake)
    return seen


def test_produce_unions_the_boxes_masks(weights: Path, ellipses: list) -> None:
    boxes = np.array([[2, 2, 14, 12], [18, 10, 30, 30]])
    (mask,) = sam.produce([Request(np.zeros((32, 32, 3), np.uint8), boxes, 0, "a", 1)], sam.load(weights, "cpu"))
    np.testing.assert_array_equal(mask, ellipse(boxes, (32, 32)) > 0)
    assert mask[7, 8] and mask[20, 24] and not mask[0, 0] and len(ellipses) == 1


def test_build_records_the_source_and_falls_back_to_the_box(built: Path, weights: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    record = manifest["masks"]
    assert record["source"] == "sam" and record["params"] == json.loads(json.dumps(sam.PARAMS))
    assert record["weights"] == {"path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert record["device"] == "cpu" and record["batch_size"] == 4 and "inside_min" in record["gate"]
    found = samples(built)
    assert len(found) == manifest["num_samples"] == sum(s["num_samples"] for s in manifest["splits"].values())
    sources = {"sam": 0, "box": 0}
    for fields in found.values():
        meta = json.loads(fields["json"])
        assert meta["mask_source"] in sources, meta
        sources[meta["mask_source"]] += 1
        if meta["mask_source"] == "box":  # a random model's mask rarely passes: the box, and why
            assert meta["mask_gate"]
            box = masks.boxes_to_mask(np.array(meta["boxes"]), (meta["height"], meta["width"]))
            np.testing.assert_array_equal(encode.decode_mask(fields["mask.png"]), box)
    assert sources["box"] > 0
    for split, s in manifest["splits"].items():
        assert sum(s["mask_sources"].values()) == s["num_samples"], split


def test_info_names_the_masks_and_counts_per_split(built: Path, weights: Path) -> None:
    result = invoke("info", built)
    assert result.exit_code == 0, result.output
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    assert f"masks:    sam {weights} (sha256 {sha}) on cpu" in result.output
    manifest = json.loads((built / "manifest.json").read_text())
    lines = result.output.splitlines()
    for split, s in manifest["splits"].items():  # the layout is cli.mask_lines's; each split's counts on its line
        counts = ", ".join(f"{n} {src}" for src, n in s["mask_sources"].items())
        assert counts and any(split in line and counts in line for line in lines), (split, counts, result.output)


def test_a_mask_that_passes_the_gate_is_stored(weights: Path, ellipses: list, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(*BUILD, "--mask-weights", weights, "--workers", "1", "--out", out)
    assert result.exit_code == 0, result.output
    found, stored = samples(out), 0
    for fields in found.values():
        meta = json.loads(fields["json"])
        shape = (meta["height"], meta["width"])
        if meta["mask_source"] == "sam":
            stored += 1
            assert meta["mask_gate"] is None and meta["has_segmentation"]
            expected = ellipse(np.array(meta["boxes"]), shape) > 0  # from the stored boxes, not the model's prompt
            np.testing.assert_array_equal(encode.decode_mask(fields["mask.png"]), expected)
        else:
            assert meta["mask_source"] == "box" and meta["mask_gate"], meta
    assert stored >= 0.8 * len(found) and len(ellipses) == len(found)


def test_builds_are_byte_identical_across_runs_and_workers(built: Path, weights: Path, tmp_path: Path) -> None:
    reference = shard_bytes(built)
    assert reference
    for name, workers in [("again", "1"), ("two", "2")]:
        result = invoke(*BUILD, "--mask-weights", weights, "--workers", workers, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert shard_bytes(tmp_path / name) == reference, name


class Code:  # pickled as a class reference: weights_only loading refuses it
    pass


def bad_files(tmp: Path) -> list[tuple[str, Path, list[str]]]:
    good = tiny_sam().state_dict()
    reshaped = {**good, "mask_decoder.iou_token.weight": torch.zeros(1, 33)}
    return [
        ("missing", tmp / "nope.pth", ["nope.pth: no such file", "sam_vit_b_01ec64.pth", "segment-anything"]),
        (
            "shape",
            save(reshaped, tmp / "shape.pth"),
            ["mask_decoder.iou_token.weight has shape [1, 33], expected [1, 32]"],
        ),
        (
            "code",
            save({"model": Code()}, tmp / "code.pth"),
            ["pickled objects (test_mask_sam.Code), not a plain state dict", "torch.save(model.state_dict()"],
        ),
        ("instance", save(Code(), tmp / "instance.pth"), ["pickled objects (test_mask_sam.Code)"]),
        (
            "not sam",
            save({"foo": torch.zeros(2)}, tmp / "foo.pth"),
            ["not a SAM state dict", "tensors (foo)", "sam_vit_b_01ec64.pth"],
        ),
        ("wrapped", save({"model": good}, tmp / "wrapped.pth"), ["wrapped under the key 'model'"]),
        ("garbage", tmp / "garbage.pth", ["not a torch checkpoint (Unsupported operand"]),
    ]


def test_bad_weight_files_exit_2_in_one_line_before_any_shard(tmp_path: Path) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    for name, path, expected in bad_files(tmp_path):
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        result = invoke(*BUILD, "--mask-weights", path, "--workers", "1", "--out", out)
        assert result.exit_code == 2, (name, result.output)
        assert result.output.startswith(f"augment: error: --mask-weights {path}"), (name, result.output)
        assert len(result.output.strip().splitlines()) == 1, (name, result.output)
        assert all(e in result.output for e in expected), (name, result.output)
        assert not list(out.glob("**/*.tar")), name
    assert "--masks-from sam needs --mask-weights FILE" in invoke(*BUILD, "--out", tmp_path / "o").output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_match_the_cpu_ones(weights: Path) -> None:
    rng = np.random.default_rng(0)
    requests = [
        Request(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.array([[4, 5, 20, 30]]), 0, "a", 1)
        for _ in range(4)
    ]
    cpu = sam.produce(requests, sam.load(weights, "cpu"))
    gpu = sam.produce(requests, sam.load(weights, "cuda"))
    for a, b in zip(cpu, gpu, strict=True):
        assert (a != b).mean() < 0.02  # float rounding may flip a pixel whose logit is near 0
