"""``--masks-from cam``: a classifier's Grad-CAM, thresholded, gives the objects of a dataset of labels only.

The classifier is a resnet8 whose weights are set by hand so that the answer is known: its last stage carries two
feature maps, "how red" and "how green" each pixel is (saturated colour only), and class red's score is the mean of
the first, class green's of the second. Grad-CAM for red is then the red map, so the mask is the red object.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from typer.testing import CliRunner

from augment.cli import app
from augment.datasets import get_dataset
from augment.mask_sources import Request, cam

SIZE = 64
RED, GREEN = (225, 25, 35), (30, 210, 40)
CLASSES = ("red", "green")  # the checkpoint's order; the folder's classes are sorted: green = 0, red = 1
runner = CliRunner()


def colour_net(classes: tuple[str, ...] = CLASSES) -> torch.nn.Module:
    """resnet8 whose last stage's channel 0 is relu(R - G - B - 1) and channel 1 relu(G - R - B - 1) (inputs in
    [-1, 1]) at 1/4 resolution, every block's residual branch zero, and the class named "red" scoring channel 0,
    "green" channel 1."""
    from augment.contract.zoo.models import build_model

    torch.manual_seed(0)
    net = build_model("resnet8", len(classes), None, from_checkpoint=True)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.running_var.fill_(1.0)
        net.conv1.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])
        net.conv1.weight[1, :, 1, 1] = torch.tensor([-1.0, 1.0, -1.0])
        net.bn1.bias[:2] = -1.0  # only saturated colours get through
        for block in net.layers[1:]:  # the stride-2 blocks pass channels 0 and 1 through their 1x1 shortcut
            block.downsample[0].weight[0, 0] = 1.0
            block.downsample[0].weight[1, 1] = 1.0
        net.fc.weight[classes.index("red"), 0] = 1.0
        net.fc.weight[classes.index("green"), 1] = 1.0
    return net.eval()


def save_checkpoint(path: Path, classes: tuple[str, ...] = CLASSES, **changes) -> Path:
    """A checkpoint as `train fit` saves best.pt (train/train.py): model, epoch, config, classes."""
    state = {
        "model": colour_net(classes).state_dict(),
        "epoch": 3,
        "classes": list(classes),
        "config": {"arch": "resnet8", "method": "cf-f", "epochs": 4, "seed": 0},
        **changes,
    }
    torch.save(state, path)
    return path


def photo(name: str, top: int, left: int, side: int = 160) -> np.ndarray:
    """A square crop of one of scikit-image's sample photographs, at SIZE x SIZE, RGB."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.array(Image.fromarray(image[top : top + side, left : left + side]).resize((SIZE, SIZE), Image.BILINEAR))


def put(root: Path, split: str, cls: str, name: str, image: np.ndarray) -> None:
    path = root / split / cls / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def labels_only_tree(root: Path) -> Path:
    """<root>/<split>/<class>/<image>: photographs with a pasted square of their class's colour; plus a grey photo
    (no colour: the heatmap is zero, so no mask) and one nearly all red (a mask over 80% of it fails the gate)."""
    for i, (name, top, left) in enumerate((("chelsea", 60, 120), ("coffee", 100, 200), ("astronaut", 250, 300))):
        for cls, colour in (("red", RED), ("green", GREEN)):
            image = photo(name, top, left)
            y, x, side = 6 + 9 * i, 30 - 8 * i, 18 + 4 * i
            image[y : y + side, x : x + side] = colour
            put(root, "train", cls, f"{name}.png", image)
    put(root, "train", "green", "camera.png", photo("camera", 100, 100))
    flag = photo("rocket", 100, 200)
    flag[2:62, 2:62] = RED
    put(root, "train", "red", "flag.png", flag)
    for cls, colour in (("red", RED), ("green", GREEN)):
        image = photo("rocket", 200, 300)
        image[20:44, 14:38] = colour
        put(root, "val", cls, "rocket.png", image)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cam")
    return labels_only_tree(base / "tree"), save_checkpoint(base / "best.pt")


def build(root: Path, weights: Path, out: Path, *extra: str):
    args = [
        "build",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--image-size",
        str(SIZE),
        "--infill",
        "tile",
        "--masks-from",
        "cam",
        "--mask-weights",
        str(weights),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "-q",
        *extra,
    ]
    if "--factual" not in extra:
        args += ["--factual", "shuffle"]
    if "--workers" not in extra:
        args += ["--workers", "1"]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "out"
    result = build(*data, out)
    assert result.exit_code == 0, result.output
    return out


def records(shard: Path) -> list[dict[str, bytes]]:
    """A shard's records in order, each field by name (``json``, ``mask.png``, ...)."""
    out: list[dict[str, bytes]] = []
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key, _, name = member.name.partition(".")
            if not out or out[-1]["__key__"] != key:
                out.append({"__key__": key})
            out[-1][name] = tar.extractfile(member).read()
    return out


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.tar"))}


def test_heatmap_of_a_hand_made_classifier_lights_the_object(tmp_path: Path) -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    image[10:34, 20:44] = RED
    truth = np.zeros((SIZE, SIZE), bool)
    truth[10:34, 20:44] = True
    weights = save_checkpoint(tmp_path / "best.pt")
    rng_before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    model = cam.load(weights, "cpu")
    assert model.classes == CLASSES and model.mean == model.std == (0.5, 0.5, 0.5)
    red, green, unknown = cam.produce(
        [
            Request(image, None, 1, "red", 1),
            Request(image, None, 0, "green", 2),
            Request(image, None, 0, "a class it does not know", 3),
        ],
        model,
    )
    assert red.dtype == bool and red.shape == (SIZE, SIZE)
    assert (red & truth).sum() / (red | truth).sum() > 0.6
    assert green is None  # its own class, green, is nowhere: the heatmap is zero
    assert np.array_equal(unknown, red)  # a class the checkpoint does not name: its top-1 class, red
    # nothing drawn: the global generators are as they were; the network is left as it was found
    assert torch.equal(torch.get_rng_state(), rng_before) and np.array_equal(np.random.get_state()[1], np_before)
    assert not model.net.training and not any(p.requires_grad for p in model.net.parameters())
    model.net.train()
    again = cam.produce([Request(image, None, 1, "red", 1)], model)[0]
    assert model.net.training and np.array_equal(again, red)  # produce runs in eval mode and restores the mode


def test_labels_only_build_end_to_end(data, built: Path) -> None:
    root, weights = data
    manifest = json.loads((built / "manifest.json").read_text())
    masks = manifest["masks"]
    assert masks["source"] == "cam" and masks["params"]["threshold"] == cam.THRESHOLD == 0.5
    assert masks["weights"] == {"path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert masks["device"] == "cpu" and masks["batch_size"] == 4
    dataset = get_dataset("folder", root=str(root), image_size=SIZE)
    index = {(split, r.key): i for split, plan in dataset.splits().items() for i, r in enumerate(plan.refs)}
    model = cam.load(weights, "cpu")
    gates: dict[str, str] = {}
    for split, summary in manifest["splits"].items():
        counts: dict[str, int] = {}
        for shard in summary["shards"]:
            recs = records(built / shard["path"])
            for first in range(0, len(recs), 4):  # the build's batches: a shard's samples, 4 at a time
                batch = recs[first : first + 4]
                samples = [dataset.load(split, index[split, r["__key__"]]) for r in batch]
                expected = cam.produce([Request(s.image, None, s.label, s.class_name, 0) for s in samples], model)
                for rec, sample, mask in zip(batch, samples, expected, strict=True):
                    meta = json.loads(rec["json"])
                    counts[meta["mask_source"] or "none"] = counts.get(meta["mask_source"] or "none", 0) + 1
                    fields = {k for k in rec if k.startswith(("cf.", "f."))}
                    if meta["mask_source"] is None:
                        gates[sample.source] = meta["mask_gate"]
                        assert not meta["has_object"] and "mask.png" not in rec and not fields
                        continue
                    assert meta["mask_source"] == "cam" and meta["mask_gate"] is None and meta["boxes"] == []
                    stored = np.array(Image.open(io.BytesIO(rec["mask.png"]))) > 0
                    assert np.array_equal(stored, mask)
                    assert fields == ({"cf.tile.jpg", "f.shuffle.0.jpg"} if split == "train" else set())
        assert summary["mask_sources"] == dict(sorted(counts.items()))
    assert manifest["splits"]["train"]["mask_sources"] == {"cam": 6, "none": 2}
    assert manifest["splits"]["val"]["mask_sources"] == {"cam": 2}
    assert gates["train/green/camera.png"] == "empty mask"  # no saturated colour: a zero heatmap
    assert re.fullmatch(r"covers 0\.8[1-9] of the image, outside \[0.02, 0.8\]", gates["train/red/flag.png"])
    info = runner.invoke(app, ["info", str(built)])
    assert info.exit_code == 0, info.output
    assert f"masks:    cam {weights} (sha256 {masks['weights']['sha256'][:12]}) on cpu" in info.output
    assert re.search(r"\btrain\s+6 cam, 2 none\b", info.output) and re.search(r"\bval\s+2 cam\b", info.output)


def test_mixed_rand_donors_get_cam_masks(data, tmp_path: Path) -> None:
    # a donor of labels only has no object unless cam finds one: without it, every draw fails and so does the build
    result = build(*data, tmp_path / "out", "--factual", "mixed-rand")
    assert result.exit_code == 0, result.output
    recs = records(tmp_path / "out/train/shard-000000.tar")
    with_object = [r for r in recs if json.loads(r["json"])["mask_source"] == "cam"]
    assert len(with_object) == 6 and all("f.mixed-rand.0.jpg" in r for r in with_object)


def test_same_build_twice_and_any_workers_are_byte_identical(data, built: Path, tmp_path: Path) -> None:
    again = build(*data, tmp_path / "again")
    assert again.exit_code == 0, again.output
    two = build(*data, tmp_path / "two", "--workers", "2")
    assert two.exit_code == 0, two.output
    expected = shard_bytes(built)
    assert list(expected) == ["train/shard-000000.tar", "val/shard-000000.tar"]
    assert shard_bytes(tmp_path / "again") == expected and shard_bytes(tmp_path / "two") == expected


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_resnet18_state_dict_uses_the_top1_class(tmp_path: Path, suffix: str) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    cam.check(path)
    model = cam.load(path, "cpu")
    assert model.kind == "torchvision resnet18" and model.classes is None and model.mean == cam.IMAGENET_MEAN
    images = [photo("chelsea", 60, 120), photo("coffee", 100, 200), photo("astronaut", 0, 100)]
    masks = cam.produce([Request(im, None, 0, "cat", 0) for im in images], model)
    assert len(masks) == 3 and any(m is not None for m in masks)
    assert all(m is None or (m.dtype == bool and m.shape == (SIZE, SIZE)) for m in masks)
    stacked = np.stack(images)
    with torch.no_grad():
        x = (
            torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255 - torch.tensor(cam.IMAGENET_MEAN)[:, None, None]
        ) / torch.tensor(cam.IMAGENET_STD)[:, None, None]
        top1 = model.net(x).argmax(1).tolist()
    assert np.array_equal(cam.heatmaps(model, stacked, [None] * 3), cam.heatmaps(model, stacked, top1))


def test_bit_npz_loads_with_the_zoo_reader(tmp_path: Path) -> None:
    """The official layout (HWIO kernels; here in float16, as a converted file may hold them), read by the zoo into
    timm's BiT; Grad-CAM on its forward_features, the map after the final GroupNorm and ReLU."""
    from bit_reference import random_npz

    path = random_npz(tmp_path / "random.npz")
    with np.load(path) as arrays:
        np.savez(tmp_path / "BiT-S-R50x1.npz", **{k: v.astype(np.float16) for k, v in arrays.items()})
    model = cam.load(tmp_path / "BiT-S-R50x1.npz", "cpu")
    assert model.kind == "BiT bit-s-r50x1" and model.classes is None and model.mean == model.std == cam.HALF
    image = photo("coffee", 100, 200)
    assert np.allclose(cam.heatmaps(model, image[None], [3])[0], grad_cam_by_hand(model.net, image, 3), atol=1e-4)
    (mask,) = cam.produce([Request(image, None, 0, "cup", 0)], model)
    assert mask is None or (mask.dtype == bool and mask.shape == (SIZE, SIZE))


def grad_cam_by_hand(net: torch.nn.Module, image: np.ndarray, target: int) -> np.ndarray:
    """Grad-CAM of a timm model written out: the map A = forward_features(x) (a ViT: the patch tokens entering its last
    block, on their grid), weights = the target logit's gradient averaged over the map, ReLU(sum_c w_c A_c),
    upsampled bilinearly to the image, divided by its maximum."""
    from augment.contract.zoo.models import input_size_of

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    side = input_size_of(net)
    if side:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    x.requires_grad_(True)  # the loaded network's parameters do not need gradients; the map's must flow
    seen = {}
    if hasattr(net, "blocks"):  # tokens [1, prefix + h * w, C]
        handle = net.blocks[-1].register_forward_pre_hook(lambda m, args: seen.setdefault("a", args[0]))
        logits = net(x)
        handle.remove()
        tokens = seen["a"]
        (grad,) = torch.autograd.grad(logits[0, target], tokens)
        n = tokens.shape[1] - net.num_prefix_tokens
        h = int(n**0.5)
        a, g = (t[0, net.num_prefix_tokens :].T.reshape(-1, h, h) for t in (tokens, grad))
    else:
        features = net.forward_features(x)
        (grad,) = torch.autograd.grad(net.forward_head(features)[0, target], features)
        a, g = features[0], grad[0]
    heat = (g.mean((1, 2))[:, None, None] * a).sum(0)
    heat = torch.nn.functional.interpolate(heat[None, None], size=image.shape[:2], mode="bilinear")[0, 0].relu()
    return (heat / heat.max()).detach().numpy() if heat.max() > 0 else heat.detach().numpy()


def timm_checkpoint(path: Path, arch: str, input_size: int = 48, **changes) -> Path:
    """A `train fit` checkpoint of a tiny timm model as train/train.py saves best.pt: model, epoch, config (with the
    normalisation it trained with), classes, and the crop it was built for (``input_size``)."""
    from augment.contract.zoo.models import build_model

    torch.manual_seed(0)
    net = build_model(arch, len(CLASSES), from_checkpoint=True, input_size=input_size)
    config = {"arch": arch, "method": "cf-f", "epochs": 1, "seed": 0, "normalisation": "half"}
    state = {
        "model": net.state_dict(),
        "epoch": 0,
        "config": config,
        "classes": list(CLASSES),
        "input_size": input_size,
    }
    torch.save({**state, **changes}, path)
    return path


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_a_timm_checkpoint_gives_the_grad_cam_of_its_feature_map(tmp_path: Path, arch: str) -> None:
    """Any --arch's `train fit` checkpoint loads (a ViT built for the crop it trained on, 48 px, takes the 64 px
    images resized to it), and its heatmap is Grad-CAM written out by hand on forward_features (the ViT: on the patch
    tokens entering its last block)."""
    path = timm_checkpoint(tmp_path / "best.pt", arch)
    cam.check(path)
    model = cam.load(path, "cpu")
    assert model.kind == f"train fit {arch}" and model.classes == CLASSES
    assert model.input_size == (48 if arch == "test_vit" else None)
    images = [photo("chelsea", 60, 120), photo("coffee", 100, 200), photo("rocket", 200, 300)]
    peaks = []
    for image in images:
        for target in (0, 1):
            got = cam.heatmaps(model, image[None], [target])[0]
            assert got.shape == (SIZE, SIZE)
            np.testing.assert_allclose(got, grad_cam_by_hand(model.net, image, target), atol=1e-4)
            peaks.append(got.max())
    assert sum(peak == pytest.approx(1.0) for peak in peaks) >= 4  # maps to threshold (a random net's may be <= 0)
    masks = cam.produce([Request(im, None, 0, "red", 0) for im in images], model)
    assert any(m is not None for m in masks)
    assert all(m is None or (m.dtype == bool and m.shape == (SIZE, SIZE)) for m in masks)


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_the_feature_map_is_found_wherever_load_moved_the_model(tmp_path: Path, arch: str) -> None:
    """``load`` moves the net to --device before it looks for the feature map: the probing forward must follow the
    net there (float64 here stands for CUDA, which a CPU-only machine lacks: both refuse a CPU float32 input)."""
    net, found_arch, *_ = cam.read(timm_checkpoint(tmp_path / "best.pt", arch))
    layer, _, side = cam.feature_map(net.double(), found_arch, tmp_path / "best.pt")
    assert isinstance(layer, torch.nn.Module) and side == (48 if arch == "test_vit" else None)


def test_a_class_token_vit_s_last_tokens_do_not_reach_its_logits(tmp_path: Path) -> None:
    """Why a ViT's map is taken where its tokens enter the last block: after it, the logits read the class token
    only, and Grad-CAM on the final patch tokens would be zero everywhere."""
    from augment.contract.zoo.models import build_model

    torch.manual_seed(0)
    net = build_model("test_vit", 2, from_checkpoint=True, input_size=48).eval()
    assert net.global_pool == "token"
    tokens = net.forward_features(torch.rand(1, 3, 48, 48) * 2 - 1)
    (grad,) = torch.autograd.grad(net.forward_head(tokens)[0, 0], tokens)
    assert not grad[0, net.num_prefix_tokens :].any() and grad[0, 0].any()


def test_a_model_without_a_spatial_map_is_refused_in_one_line(data, tmp_path: Path, monkeypatch) -> None:
    """A timm model whose forward_features gives pooled features [N, C] has no map for Grad-CAM: refused before the
    build writes anything, in one line."""
    import timm.models.resnet

    path = timm_checkpoint(tmp_path / "best.pt", "test_resnet")
    original = timm.models.resnet.ResNet.forward_features
    monkeypatch.setattr(timm.models.resnet.ResNet, "forward_features", lambda self, x: original(self, x).mean((2, 3)))
    monkeypatch.setattr(timm.models.resnet.ResNet, "forward_head", lambda self, x: self.fc(x))
    out = tmp_path / "out"
    result = build(data[0], path, out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"augment: error: --mask-weights {path}: a `train fit` checkpoint of test_resnet, ")
    assert "features ((1, 96)) are not a spatial map for Grad-CAM" in result.output
    assert "--masks-from cam needs a convolutional or patch-token classifier" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_an_old_bit_checkpoint_loads_through_checkpoint_state(tmp_path: Path) -> None:
    """A bit-s-r50x1 run from before timm (the hand-written BiT's names, tests/bit_reference.py) still gives masks."""
    from bit_reference import ResNetV2

    torch.manual_seed(0)
    state = ResNetV2(2).state_dict()
    path = tmp_path / "best.pt"
    torch.save({"model": state, "epoch": 0, "config": {"arch": "bit-s-r50x1"}, "classes": list(CLASSES)}, path)
    model = cam.load(path, "cpu")
    assert model.kind == "train fit bit-s-r50x1"
    (mask,) = cam.produce([Request(photo("coffee", 100, 200), None, 0, "red", 0)], model)
    assert mask is None or mask.shape == (SIZE, SIZE)


class Payload:
    """Not a tensor nor a plain container: ``torch.load(weights_only=True)`` must refuse to unpickle it."""

    def __init__(self) -> None:
        self.code = "print('hello')"


def bad_weights(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A bad --mask-weights file of ``kind``, and a part of the one-line error it must give."""
    path = tmp_path / f"{kind}.pt"
    if kind == "missing":
        return path, "no such file; --masks-from cam takes a classifier: a `train fit` checkpoint"
    if kind == "wrong-shape":  # a checkpoint whose classes do not match its head
        save_checkpoint(path, model=colour_net(("red", "green", "blue")).state_dict())
        return path, "wrong shapes fc.weight (3, 64) (expected (2, 64))"
    if kind == "pickled-code":
        torch.save({"model": Payload()}, path)
        return path, "holds pickled objects, not only tensors"
    if kind == "not-a-classifier":
        torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
        return path, "neither a `train fit` checkpoint"
    if kind == "not-a-resnet":
        torch.save(torch.nn.Linear(4, 2).state_dict(), path)
        return path, "that is not a torchvision ResNet's"
    if kind == "unknown-arch":  # neither a named arch nor a timm model (vgg16 is one of timm's)
        save_checkpoint(path, config={"arch": "vgg-sixteen"})
        return (
            path,
            "config names arch 'vgg-sixteen', expected one of resnet18, resnet50, bit-s-r50x1, resnet8 or a timm",
        )
    if kind == "not-torch":
        path.write_text("not a checkpoint")
        return path, "not a readable torch.save file"
    if kind == "not-bit":
        path = tmp_path / "weights.npz"
        np.savez(path, kernel=np.zeros((2, 2), np.float32))
        return path, "expected the official BiT-S-R50x1 layout"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "wrong-shape",
        "pickled-code",
        "not-a-classifier",
        "not-a-resnet",
        "unknown-arch",
        "not-torch",
        "not-bit",
    ],
)
def test_bad_weight_file_is_one_line_before_any_shard(data, tmp_path: Path, kind: str) -> None:
    path, message = bad_weights(kind, tmp_path)
    out = tmp_path / "out"
    result = build(data[0], path, out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"augment: error: --mask-weights {path}: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()  # refused before the build wrote anything


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_heatmaps_match_the_cpu_ones(tmp_path: Path) -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    image[10:34, 20:44] = RED
    weights = save_checkpoint(tmp_path / "best.pt")
    requests = [Request(image, None, 1, "red", 1)] * 4
    cpu = cam.produce(requests, cam.load(weights, "cpu"))
    gpu = cam.produce(requests, cam.load(weights, "cuda"))
    for a, b in zip(cpu, gpu, strict=True):
        assert (a & b).sum() / (a | b).sum() > 0.95  # float rounding may move a pixel at the threshold


@pytest.mark.parametrize("recorded", [None, "half", "imagenet"])
def test_a_train_fit_checkpoint_is_read_with_the_normalisation_it_trained_with(tmp_path: Path, recorded) -> None:
    """Grad-CAM feeds a `train fit` model the trainer's [-1, 1] scale; the model itself normalises as it was trained
    (a resnet18 fine-tuned from ImageNet weights: ImageNet's mean and std), and a checkpoint from before the
    normalisation was recorded was trained on [-1, 1]."""
    from augment.contract.zoo.models import build_model, normalisation_of
    from augment.mask_sources.cam import read

    torch.manual_seed(0)
    state = build_model("resnet18", 2, from_checkpoint=True).state_dict()
    config = {"arch": "resnet18", **({"normalisation": recorded} if recorded else {})}
    path = tmp_path / "best.pt"
    torch.save({"model": state, "epoch": 0, "classes": ["a", "b"], "config": config}, path)
    net, arch, classes, mean = read(path)
    assert (arch, classes, normalisation_of(net)) == ("resnet18", ("a", "b"), recorded or "half")


def test_the_bit_head_cam_looks_for_is_the_one_the_zoo_reads() -> None:
    from augment.contract.zoo.weights import bit_npz_names

    assert cam.BIT_HEAD == bit_npz_names()["head.fc.weight"]
