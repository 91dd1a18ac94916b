"""The classifiers: logits shapes, BiT's arithmetic, the three weight formats, and the DeepLift-ready copy.

CPU only, small inputs, no downloads: every weight file is written by the test from a model it built itself.
Run: ``.venv/bin/python -m pytest -q tests/train/test_models.py``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from augment.zoo.models import (
    ARCHS,
    ResNetV2,
    StdConv2d,
    build_model,
    head_parameters,
    normalisation_of,
    unshare_relus,
)

# Models built without weights log that they train from scratch; test_no_weights_warns_and_weights_do_not checks it.

BIT = "bit-s-r50x1"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These inputs are tiny: with OpenMP threads on a busy machine, waiting costs 10-50x the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs as the models get them: RGB in [-1, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(arch: str, num_classes: int, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, num_classes, **kwargs).eval()


def assert_same_backbone(a: nn.Module, b: nn.Module, head: tuple[str, ...]) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if key not in head:
            assert torch.equal(sa[key], sb[key]), key


TV_HEAD = ("fc.weight", "fc.bias")
BIT_HEAD = ("head.conv.weight", "head.conv.bias")


# ---------------------------------------------------------------------------------------------------------------------
# Building


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_gives_logits_per_class(arch: str) -> None:
    logits = seeded(arch, 5)(images(2))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_unknown_arch_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="'vit'.*resnet18, resnet50, bit-s-r50x1, resnet8"):
        build_model("vit", 3)


def test_no_weights_warns_and_weights_do_not(tmp_path: Path, caplog) -> None:
    with caplog.at_level("WARNING", logger="train"):
        model = build_model("resnet18", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "resnet18: no weights given, training from scratch (random initialisation)"
    ]  # a log line of the `train` logger: no UserWarning with its source line
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"), warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model("resnet18", 3, weights=path)
        build_model("resnet18", 3, from_checkpoint=True)  # `train eval` loads best.pt into it next
    assert not caplog.records


@pytest.mark.parametrize(("arch", "head"), [("resnet18", TV_HEAD), (BIT, BIT_HEAD)])
def test_head_parameters_and_zero_head(arch: str, head: tuple[str, str], tmp_path: Path) -> None:
    model = seeded(arch, 4)
    named = dict(model.named_parameters())
    assert [id(p) for p in head_parameters(model)] == [id(named[k]) for k in head]
    assert all(p.abs().sum() > 0 for p in head_parameters(model))

    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    zeroed = build_model(arch, 4, weights=path, zero_head=True).eval()  # zero_head wins over a loaded head
    assert all(not p.any() for p in head_parameters(zeroed))
    assert not zeroed(images(2)).any()


# ---------------------------------------------------------------------------------------------------------------------
# BiT-S-R50x1 as docs/METHOD.md (Models) describes it


def test_standardised_conv_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    conv = StdConv2d(2, 3, kernel_size=3, padding=1, bias=False)
    x = images(1, 5)[:, :2]
    w = conv.weight.detach().double().numpy()
    mean = w.mean(axis=(1, 2, 3), keepdims=True)

    def by_hand(ddof: int) -> torch.Tensor:
        var = ((w - mean) ** 2).sum(axis=(1, 2, 3), keepdims=True) / (w[0].size - ddof)
        return F.conv2d(x.double(), torch.from_numpy((w - mean) / np.sqrt(var + 1e-10)), padding=1)

    out = conv(x).double()
    torch.testing.assert_close(out, by_hand(ddof=0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, by_hand(ddof=1), rtol=1e-3, atol=1e-3)  # the variance is the biased one
    assert torch.equal(conv.weight, torch.from_numpy(w).float())  # the stored kernel stays raw


def test_bit_layout() -> None:
    model = seeded(BIT, 10)
    backbone = sum(p.numel() for n, p in model.named_parameters() if n not in BIT_HEAD)
    assert backbone == 23_500_352  # ResNetV2-50: about 23.5M without the classifier
    assert sum(p.numel() for p in head_parameters(model)) == 2048 * 10 + 10
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(m.num_groups == 32 for m in model.modules() if isinstance(m, nn.GroupNorm))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [type(m) for m in convs].count(StdConv2d) == len(convs) - 1 and convs[-1] is model.head.conv
    assert all(m.bias is None for m in convs[:-1]) and model.head.conv.bias is not None
    assert [len(block) for block in model.body] == [3, 4, 6, 3]

    sizes = []
    for block in model.body:
        block.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
    model(images(1, 64))
    assert sizes == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    for b in (2, 3, 4):  # the stride-2 step sits on unit01's 3x3 conv (and its projection), not on the 1x1
        unit = model.body[b - 1][0]
        assert (unit.conv1.stride, unit.conv2.stride, unit.downsample.stride) == ((1, 1), (2, 2), (2, 2))


def test_bit_unit_and_head_follow_the_spec() -> None:
    model = randomised_norms(seeded(BIT, 3))

    def gn_relu(x: torch.Tensor, gn: nn.GroupNorm) -> torch.Tensor:
        return F.relu(F.group_norm(x, 32, gn.weight, gn.bias))

    def by_hand(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        pre = gn_relu(x, unit.gn1)
        shortcut = x if unit.downsample is None else unit.downsample(pre)  # the projection sees pre, not x
        out = unit.conv3(gn_relu(unit.conv2(gn_relu(unit.conv1(pre), unit.gn2)), unit.gn3))
        return out + shortcut

    x = torch.randn(1, 256, 8, 8, generator=torch.Generator().manual_seed(0))
    for unit in (model.body.block1[1], model.body.block2[0]):  # identity shortcut; projection with stride 2
        torch.testing.assert_close(unit(x), by_hand(unit, x), rtol=1e-5, atol=1e-5)
    features = torch.randn(2, 2048, 2, 2, generator=torch.Generator().manual_seed(1))
    pooled = gn_relu(features, model.head.gn).mean(dim=(2, 3))
    logits = F.linear(pooled, model.head.conv.weight.flatten(1), model.head.conv.bias)
    torch.testing.assert_close(model.head(features).flatten(1), logits)


def test_bit_stem_zero_pads_before_a_padding_free_max_pool() -> None:
    # By hand: on an all-negative map, zero padding lets 0 win at the border; MaxPool's own padding is -inf.
    negative = -torch.ones(1, 1, 4, 4)
    assert F.max_pool2d(F.pad(negative, (1, 1, 1, 1)), 3, 2)[0, 0, 0, 0] == 0
    assert F.max_pool2d(negative, 3, 2, padding=1)[0, 0, 0, 0] == -1

    model = seeded(BIT, 3)
    x = images(1, 64)
    conv = model.root.conv(x)
    zero_pad_then_pool = F.max_pool2d(F.pad(conv, (1, 1, 1, 1)), 3, 2)
    pool_with_padding = F.max_pool2d(conv, 3, 2, padding=1)
    assert not torch.equal(zero_pad_then_pool, pool_with_padding)  # on a real input too
    assert torch.equal(model.root(x), zero_pad_then_pool)


# ---------------------------------------------------------------------------------------------------------------------
# The official BiT .npz


def hwio(weight: torch.Tensor) -> np.ndarray:
    return weight.detach().permute(2, 3, 1, 0).numpy()  # OIHW -> TF's HWIO


def upstream_npz(model: ResNetV2) -> dict[str, np.ndarray]:
    """``model``'s weights under the official BiT-S-R50x1.npz names and layout (docs/METHOD.md, Models)."""
    arrays = {
        "resnet/root_block/standardized_conv2d/kernel": hwio(model.root.conv.weight),
        "resnet/group_norm/gamma": model.head.gn.weight.detach().numpy(),
        "resnet/group_norm/beta": model.head.gn.bias.detach().numpy(),
        "resnet/head/conv2d/kernel": hwio(model.head.conv.weight),
        "resnet/head/conv2d/bias": model.head.conv.bias.detach().numpy(),
    }
    for b, block in enumerate(model.body, start=1):
        for u, unit in enumerate(block, start=1):
            prefix = f"resnet/block{b}/unit{u:02d}"
            for letter, i in zip("abc", (1, 2, 3), strict=True):
                conv, gn = getattr(unit, f"conv{i}"), getattr(unit, f"gn{i}")
                arrays[f"{prefix}/{letter}/standardized_conv2d/kernel"] = hwio(conv.weight)
                arrays[f"{prefix}/{letter}/group_norm/gamma"] = gn.weight.detach().numpy()
                arrays[f"{prefix}/{letter}/group_norm/beta"] = gn.bias.detach().numpy()
            if u == 1:
                arrays[f"{prefix}/a/proj/standardized_conv2d/kernel"] = hwio(unit.downsample.weight)
    return arrays


def randomised_norms(model: nn.Module) -> nn.Module:
    """Fresh GroupNorms are all ones and zeros; give them distinct values so a swapped gamma/beta would show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def test_npz_loads_official_names_and_replaces_the_head(tmp_path: Path) -> None:
    source = randomised_norms(seeded(BIT, 1000))
    arrays = upstream_npz(source)
    assert len(arrays) == 153
    path = tmp_path / "BiT-S-R50x1.npz"
    np.savez(path, **arrays)

    same_head = build_model(BIT, 1000, weights=path).eval()
    assert torch.equal(same_head(images(1)), source(images(1)))  # every array landed where it belongs

    fresh = seeded(BIT, 7, seed=1)
    loaded = seeded(BIT, 7, seed=1, weights=path)
    assert_same_backbone(loaded, source, BIT_HEAD)
    assert loaded.head.conv.weight.shape == (7, 2048, 1, 1)
    assert torch.equal(loaded.head.conv.weight, fresh.head.conv.weight)  # skipped: a fresh head for 7 classes


def test_npz_with_a_missing_array_names_it(tmp_path: Path) -> None:
    arrays = upstream_npz(seeded(BIT, 10))
    gone = "resnet/block3/unit04/b/group_norm/beta"
    del arrays[gone]
    arrays["resnet/block3/unit04/b/group_norm/mean"] = np.zeros(256, np.float32)
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"missing arrays \\[{re.escape(gone)}\\].*unexpected arrays .*/mean"):
        build_model(BIT, 10, weights=path)


def test_npz_is_only_for_bit(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, x=np.zeros(1))
    with pytest.raises(ValueError, match="only bit-s-r50x1, not resnet18"):
        build_model("resnet18", 3, weights=path)


# ---------------------------------------------------------------------------------------------------------------------
# State dicts: .pth / .pt and .safetensors


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_pth_round_trip_and_head_replacement(wrapper: str | None, tmp_path: Path) -> None:
    source = seeded("resnet18", 5)
    state = source.state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)

    same = build_model("resnet18", 5, weights=path).eval()
    assert torch.equal(same(images(1)), source(images(1)))
    other = build_model("resnet18", 3, weights=path).eval()
    assert_same_backbone(other, source, TV_HEAD)
    assert other.fc.weight.shape == (3, 512)


def test_safetensors_round_trip_bit(tmp_path: Path) -> None:
    source = randomised_norms(seeded(BIT, 4))
    path = tmp_path / "bit.safetensors"
    save_file(source.state_dict(), str(path))
    assert torch.equal(build_model(BIT, 4, weights=path).eval()(images(1)), source(images(1)))


def test_old_torchvision_checkpoint_without_num_batches_tracked_loads(tmp_path: Path) -> None:
    source = seeded("resnet50", 1000)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet50-old.pt"
    torch.save(state, path)
    assert_same_backbone(build_model("resnet50", 10, weights=path), source, TV_HEAD)


def test_mismatched_state_dict_lists_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(seeded("resnet18", 3).state_dict(), path)
    with pytest.raises(ValueError, match=r"missing keys \[layer1\.0\.conv3\.weight.*wrong shapes \[layer1\.0\.conv1"):
        build_model("resnet50", 3, weights=path)


def _touch(path: str) -> None:
    Path(path).touch()


class Payload:
    """Unpickling this creates a file: stands in for a checkpoint that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return _touch, (str(self.marker),)


def test_pth_with_a_pickled_object_is_refused_unexecuted(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"state_dict": seeded("resnet18", 3).state_dict(), "extra": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the payload is live: a plain unpickle runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match=r"evil\.pth: refused to load: torch\.load\(weights_only=True\).*_touch"):
        build_model("resnet18", 3, weights=path)
    assert not marker.exists()


def test_missing_file_and_unknown_format_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth does not exist; expected one of: \.pth.*\.npz"):
        build_model("resnet18", 3, weights=tmp_path / "nowhere.pth")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match=r"unknown weight format '\.ckpt'; expected one of: \.pth.*\.safetensors"):
        build_model("resnet18", 3, weights=ckpt)


# ---------------------------------------------------------------------------------------------------------------------
# unshare_relus


def relu_calls(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """How many times each nn.ReLU module runs in one forward."""
    calls = {name: 0 for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    handles = [
        m.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        for name, m in model.named_modules()
        if isinstance(m, nn.ReLU)
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return calls


@pytest.mark.parametrize(
    ("arch", "n_relus"), [("resnet18", 1 + 8 * 2), ("resnet50", 1 + 16 * 3), (BIT, 16 * 3 + 1), ("resnet8", 1 + 3 * 2)]
)
def test_unshare_relus_one_module_per_use_same_outputs(arch: str, n_relus: int) -> None:
    model = seeded(arch, 4)
    if arch == BIT:
        randomised_norms(model)
    before = relu_calls(model, images(1))
    unshared = unshare_relus(model).eval()
    x = images(2)
    assert torch.equal(unshared(x), model(x))

    calls = relu_calls(unshared, x)
    assert len(calls) == n_relus and set(calls.values()) == {1}
    assert not any(m.inplace for m in unshared.modules() if isinstance(m, nn.ReLU))
    assert relu_calls(model, x) == before  # the original is left as it was
    if arch != BIT:
        assert max(before.values()) > 1  # torchvision shares: the test above has something to catch


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")
def test_deeplift_runs_on_the_unshared_copy_only() -> None:
    from captum.attr import DeepLift

    # on the [-1, 1] scale, so that the zero baseline is a uniform image at the max pool too: DeepLift's max-pool rule
    # is exact only there (with ImageNet's normalisation the zero-padded borders make it vary)
    model = seeded("resnet18", 3, normalisation="half")
    unshared = unshare_relus(model).eval()
    x = images(2, 32)
    attributions, delta = DeepLift(unshared).attribute(
        x, baselines=torch.zeros_like(x), target=1, return_convergence_delta=True
    )
    assert attributions.shape == x.shape
    assert delta.abs().max() < 1e-4  # completeness: attributions sum to f(x) - f(baseline)
    with pytest.raises(RuntimeError, match="used more than once"):
        DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=1)


def test_unshare_relus_refuses_unknown_models() -> None:
    with pytest.raises(TypeError, match="Sequential"):
        unshare_relus(nn.Sequential(nn.ReLU()))


# ---------------------------------------------------------------------------------------------------------------------
# Each model's own input normalisation


def first_conv_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    conv = model.conv1 if hasattr(model, "conv1") else model.root.conv
    handle = conv.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_a_torchvision_weights_model_sees_imagenet_mean_std_normalised_inputs(arch: str, tmp_path: Path) -> None:
    """The loader's uint8 images go through the trainer's prepare(); a torchvision ResNet loaded from ImageNet-style
    weights then sees (x / 255 - mean) / std at its first conv, as torchvision's weights expect."""
    from train.data import prepare

    path = tmp_path / "w.pth"
    torch.save(seeded(arch, 1000).state_dict(), path)
    model = build_model(arch, 4, weights=path).eval()
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = prepare({"image": pixels}, "cpu")["image"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(first_conv_input(model, x), (pixels / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert normalisation_of(model) == "imagenet"


@pytest.mark.parametrize("arch", [BIT, "resnet8"])
def test_bit_and_the_small_resnet_see_the_pixel_scale_itself(arch: str) -> None:
    x = images(1, 32)
    assert torch.equal(first_conv_input(seeded(arch, 3), x), x)  # BiT's convention: [-1, 1]
    assert normalisation_of(seeded(arch, 3)) == "half"


def test_a_checkpoint_model_is_built_with_its_recorded_normalisation() -> None:
    x = images(1, 32)
    old = seeded("resnet18", 3, normalisation="half")  # what the trainer fed every model before it had one per weights
    assert torch.equal(first_conv_input(old, x), x)
    with pytest.raises(ValueError, match="unknown normalisation 'bgr'; choose from"):
        build_model("resnet18", 3, normalisation="bgr")
