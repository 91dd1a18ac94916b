"""The classifiers: logits shapes, BiT's arithmetic against an independent reference, the weight formats, and the
DeepLift-ready copy.

CPU only, small inputs, no downloads: every weight file is written by the test from a model it built itself. The BiT
reference (tests/bit_reference.py) is the project's hand-written ResNetV2 from before timm, with its own ``.npz``
reader. Run: ``.venv/bin/python -m pytest -q tests/train/test_models.py``.
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
from bit_reference import ResNetV2, load_npz, random_npz
from safetensors.torch import save_file
from torch import nn

from augment.contract.zoo import ARCHS
from augment.contract.zoo.models import (
    BIT_WS_EPS,
    build_model,
    checkpoint_state,
    first_conv,
    head_parameters,
    normalisation_of,
    unshare_relus,
)
from augment.contract.zoo.weights import bit_npz_names

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
BIT_HEAD = ("head.fc.weight", "head.fc.bias")  # timm's resnetv2: a 1x1 conv classifier after the pooling


# ---------------------------------------------------------------------------------------------------------------------
# Building


@pytest.mark.parametrize("arch", [*ARCHS, "test_resnet", "test_efficientnet_gn", "test_convnext", "test_vit"])
def test_each_arch_gives_logits_per_class(arch: str) -> None:
    logits = seeded(arch, 5, input_size=64)(images(2))  # test_vit takes a fixed input size: built for 64 px
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_unknown_arch_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'vit', expected one of resnet18, resnet50, bit-s-r50x1, resnet8 or a timm"):
        build_model("vit", 3)


def test_no_weights_warns_and_weights_do_not(tmp_path: Path, caplog) -> None:
    with caplog.at_level("WARNING", logger="augment.contract.zoo"):
        model = build_model("resnet18", 3)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("augment.contract.zoo", "resnet18: no weights given, training from scratch (random initialisation)")
    ]  # a log line of the zoo's logger: no UserWarning with its source line
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    caplog.clear()
    with caplog.at_level("WARNING", logger="augment.contract.zoo"), warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model("resnet18", 3, weights=path)
        build_model("resnet18", 3, from_checkpoint=True)  # `train eval` loads best.pt into it next
    assert not caplog.records


@pytest.mark.parametrize(
    ("arch", "head"),
    [("resnet18", TV_HEAD), (BIT, BIT_HEAD), ("test_resnet", TV_HEAD), ("test_vit", ("head.weight", "head.bias"))],
)
def test_head_parameters_and_zero_head(arch: str, head: tuple[str, str], tmp_path: Path) -> None:
    model = seeded(arch, 4, input_size=64)
    named = dict(model.named_parameters())
    assert [id(p) for p in head_parameters(model)] == [id(named[k]) for k in head]
    with torch.no_grad():  # timm zero-initialises some heads (ViT) or biases (BiT): a head to zero, in the file
        for p in head_parameters(model):
            p.fill_(0.1)

    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    zeroed = build_model(arch, 4, weights=path, zero_head=True, input_size=64).eval()  # zero_head wins over the file
    assert all(not p.any() for p in head_parameters(zeroed))
    assert not zeroed(images(2)).any()


# ---------------------------------------------------------------------------------------------------------------------
# BiT-S-R50x1: timm's resnetv2_50x1_bit, with upstream BiT's standardisation epsilon


def test_standardised_conv_matches_a_hand_computation_with_bit_s_epsilon() -> None:
    """(w - mean) / sqrt(var + 1e-10) per output channel, the variance the biased one, the stored kernel raw. The
    epsilon matters: on a kernel of scale 1e-3 (variance ~1e-8), timm's default 1e-8 moves the output by ~30%."""
    model = seeded(BIT, 3)
    stds = [m for m in model.modules() if type(m).__name__ == "StdConv2d"]
    assert len(stds) == 53 and {m.eps for m in stds} == {BIT_WS_EPS} and BIT_WS_EPS == 1e-10
    conv = model.stem.conv
    with torch.no_grad():
        conv.weight.mul_(1e-3)
    x = images(1, 9)
    w = conv.weight.detach().double().numpy()
    mean = w.mean(axis=(1, 2, 3), keepdims=True)

    def by_hand(ddof: int, eps: float = 1e-10) -> torch.Tensor:
        var = ((w - mean) ** 2).sum(axis=(1, 2, 3), keepdims=True) / (w[0].size - ddof)
        return F.conv2d(x.double(), torch.from_numpy((w - mean) / np.sqrt(var + eps)), stride=2, padding=3)

    out = conv(x).double()
    torch.testing.assert_close(out, by_hand(ddof=0), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out, by_hand(ddof=1), rtol=1e-3, atol=1e-3)  # the variance is the biased one
    assert not torch.allclose(out, by_hand(ddof=0, eps=1e-8), rtol=0.1, atol=0.1)  # timm's default epsilon
    assert torch.equal(conv.weight.double(), torch.from_numpy(w))  # the stored kernel stays raw


@pytest.fixture(scope="module")
def bit1000() -> nn.Module:
    return seeded(BIT, 1000)


def test_bit_layout_is_the_official_one(bit1000: nn.Module) -> None:
    """timm's names are exactly those the .npz mapping covers (153 arrays), and the sizes are BiT-S-R50x1's."""
    model = bit1000
    assert set(model.state_dict()) == set(bit_npz_names()) and len(bit_npz_names()) == 153
    assert sum(p.numel() for p in model.parameters()) == 25_549_352
    backbone = sum(p.numel() for n, p in model.named_parameters() if n not in BIT_HEAD)
    assert backbone == 23_500_352  # ResNetV2-50: about 23.5M without the classifier
    assert sum(p.numel() for p in head_parameters(seeded(BIT, 10))) == 2048 * 10 + 10
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(m.num_groups == 32 for m in model.modules() if isinstance(m, nn.GroupNorm))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(type(m).__name__ == "StdConv2d" for m in convs[:-1]) and convs[-1] is model.head.fc
    assert type(model.head.fc) is nn.Conv2d  # the classifier is a plain (unstandardised) 1x1 conv with a bias
    assert all(m.bias is None for m in convs[:-1]) and model.head.fc.bias is not None
    assert [len(stage.blocks) for stage in model.stages] == [3, 4, 6, 3]

    sizes = []
    handles = [s.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:]))) for s in model.stages]
    model(images(1, 64))
    for handle in handles:
        handle.remove()
    assert sizes == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    for s in (1, 2, 3):  # the stride-2 step sits on unit01's 3x3 conv (and its projection), not on the 1x1
        unit = model.stages[s].blocks[0]
        assert (unit.conv1.stride, unit.conv2.stride, unit.downsample.conv.stride) == ((1, 1), (2, 2), (2, 2))


def randomised_norms(model: nn.Module) -> nn.Module:
    """Fresh GroupNorms are all ones and zeros; give them distinct values so a swapped gamma/beta would show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def test_bit_unit_and_head_follow_the_spec() -> None:
    model = randomised_norms(seeded(BIT, 3))

    def gn_relu(x: torch.Tensor, gn: nn.GroupNorm) -> torch.Tensor:
        return F.relu(F.group_norm(x, 32, gn.weight, gn.bias))

    def by_hand(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        pre = gn_relu(x, unit.norm1)
        shortcut = x if unit.downsample is None else unit.downsample.conv(pre)  # the projection sees pre, not x
        out = unit.conv3(gn_relu(unit.conv2(gn_relu(unit.conv1(pre), unit.norm2)), unit.norm3))
        return out + shortcut

    x = torch.randn(1, 256, 8, 8, generator=torch.Generator().manual_seed(0))
    for unit in (model.stages[0].blocks[1], model.stages[1].blocks[0]):  # identity shortcut; projection, stride 2
        torch.testing.assert_close(unit(x), by_hand(unit, x), rtol=1e-5, atol=1e-5)
    features = torch.randn(2, 2048, 2, 2, generator=torch.Generator().manual_seed(1))
    pooled = gn_relu(features, model.norm).mean(dim=(2, 3))
    logits = F.linear(pooled, model.head.fc.weight.flatten(1), model.head.fc.bias)
    torch.testing.assert_close(model.forward_head(model.norm(features)), logits)


def test_bit_stem_zero_pads_before_a_padding_free_max_pool() -> None:
    # By hand: on an all-negative map, zero padding lets 0 win at the border; MaxPool's own padding is -inf.
    negative = -torch.ones(1, 1, 4, 4)
    assert F.max_pool2d(F.pad(negative, (1, 1, 1, 1)), 3, 2)[0, 0, 0, 0] == 0
    assert F.max_pool2d(negative, 3, 2, padding=1)[0, 0, 0, 0] == -1

    model = seeded(BIT, 3)
    x = images(1, 64)
    conv = model.stem.conv(x)
    zero_pad_then_pool = F.max_pool2d(F.pad(conv, (1, 1, 1, 1)), 3, 2)
    pool_with_padding = F.max_pool2d(conv, 3, 2, padding=1)
    assert not torch.equal(zero_pad_then_pool, pool_with_padding)  # on a real input too
    assert torch.equal(model.stem(x), zero_pad_then_pool)


# ---------------------------------------------------------------------------------------------------------------------
# The official BiT .npz: the zoo against an independent reference and against timm's own reader


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """A seeded random .npz with the official names, shapes and HWIO layout (tests/bit_reference.random_npz)."""
    return random_npz(tmp_path_factory.mktemp("bit") / "BiT-S-R50x1.npz", num_classes=1000, seed=0)


@pytest.fixture(scope="module")
def reference(official: Path) -> nn.Module:
    return load_npz(ResNetV2(1000), official).eval()


def logits64(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float64 logits of ``model`` (converted there and back)."""
    with torch.no_grad():
        out = model.double()(x.double())
    model.float()
    return out


def test_zoo_bit_agrees_with_the_reference_and_timm_on_the_official_npz(official: Path, reference: nn.Module) -> None:
    """Issue #31, item 3. The same random official-layout .npz, read three ways: by the independent reference
    (tests/bit_reference.py, its own reader and arithmetic), by the zoo (build_model(weights=npz):
    zoo.weights.read_bit_npz into timm's resnetv2_50x1_bit, standardisation epsilon 1e-10), and by timm's own
    npz loader (``load_pretrained``; epsilon set to 1e-10 by hand). Same two 64x64 images.

    Measured (CPU, logits of max |z| ~1.28): float64, zoo vs reference 1.8e-14 absolute; float32 4.8e-6 absolute,
    3.8e-6 relative to max |z| (the reference itself is 6e-6 from its float64 logits). Tolerances: float64 1e-10
    absolute, float32 1e-4 relative to max |z|: 4 and 25 times above rounding, far below what a misplaced array (or
    the 1e-8 epsilon on small kernels) gives. The zoo and timm's loader hold identical tensors.
    """
    import timm
    from timm.layers import StdConv2d

    zoo = build_model(BIT, 1000, weights=official).eval()
    by_timm = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=1000)
    by_timm.load_pretrained(str(official))
    for m in by_timm.modules():
        if isinstance(m, StdConv2d):
            m.eps = 1e-10
    by_timm.eval()
    zoo_state, timm_state = zoo.state_dict(), by_timm.state_dict()
    assert zoo_state.keys() == timm_state.keys()
    assert all(torch.equal(zoo_state[k], timm_state[k]) for k in zoo_state)  # every array in the same place

    x = images(2, 64, seed=1)
    truth = logits64(reference, x)
    scale = truth.abs().max().item()
    assert 0.3 < scale < 10  # logits of a useful size: not all ~0, where any placement would agree
    with torch.no_grad():
        ref32 = reference(x)
    for model in (zoo, by_timm):
        assert (logits64(model, x) - truth).abs().max().item() < 1e-10
        with torch.no_grad():
            got = model(x)
        assert (got - ref32).abs().max().item() / scale < 1e-4
    assert got.argsort(1)[:, -5:].tolist() == ref32.argsort(1)[:, -5:].tolist()  # the same top-5 classes


def test_old_bit_checkpoints_load_through_checkpoint_state(reference: nn.Module) -> None:
    """A `train fit` checkpoint of the hand-written BiT (its names: root.conv, body.block1.unit01.gn1, head.conv)
    loads strictly into the timm BiT after ``checkpoint_state`` and gives the same logits."""
    old = reference.state_dict()
    assert "root.conv.weight" in old and "body.block1.unit01.downsample.weight" in old
    model = build_model(BIT, 1000, from_checkpoint=True)
    model.load_state_dict(checkpoint_state(BIT, old))  # strict
    x = images(1, 64, seed=2)
    with torch.no_grad():
        want, got = reference(x), model.eval()(x)
    assert (got - want).abs().max().item() / want.abs().max().item() < 1e-4
    new = model.state_dict()
    assert checkpoint_state(BIT, new) is new  # today's names are left alone, as are other archs'
    assert checkpoint_state("resnet18", old) is old


def test_npz_loads_official_names_and_replaces_the_head(official: Path, reference: nn.Module) -> None:
    fresh = seeded(BIT, 7, seed=1)
    loaded = seeded(BIT, 7, seed=1, weights=official)
    ref = checkpoint_state(BIT, reference.state_dict())
    for key, value in loaded.state_dict().items():
        if key not in BIT_HEAD:
            assert torch.equal(value, ref[key]), key
    assert loaded.head.fc.weight.shape == (7, 2048, 1, 1)
    assert torch.equal(loaded.head.fc.weight, fresh.head.fc.weight)  # skipped: a fresh head for 7 classes


def test_npz_with_a_missing_array_names_it(official: Path, tmp_path: Path) -> None:
    with np.load(official) as npz:
        arrays = dict(npz)
    gone = "resnet/block3/unit04/b/group_norm/beta"
    del arrays[gone]
    arrays["resnet/block3/unit04/b/group_norm/mean"] = np.zeros(256, np.float32)
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"missing arrays \\[{re.escape(gone)}\\].*unexpected arrays .*/mean"):
        build_model(BIT, 10, weights=path)


@pytest.mark.parametrize("arch", ["resnet18", "test_resnet"])
def test_npz_is_only_for_bit(tmp_path: Path, arch: str) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, x=np.zeros(1))
    with pytest.raises(ValueError, match=f"only bit-s-r50x1, not {arch}"):
        build_model(arch, 3, weights=path)


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
    ("arch", "n_relus"),
    [
        ("resnet18", 1 + 8 * 2),
        ("resnet50", 1 + 16 * 3),
        (BIT, 16 * 3 + 1),
        ("resnet8", 1 + 3 * 2),
        ("test_resnet", 12),  # timm's ResNet: act1, act2 per block, already one module per use
    ],
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
    if arch in ("resnet18", "resnet50", "resnet8"):
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


class TwiceReLU(nn.Module):
    """One ReLU module applied twice, in a way unshare_relus cannot rewrite."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.act(self.conv(x)) - 0.5).mean((2, 3)))


def test_unshare_relus_refuses_a_model_that_calls_a_module_twice() -> None:
    with pytest.raises(TypeError, match=r"TwiceReLU calls act \(2 times\); use --saliency gradient"):
        unshare_relus(TwiceReLU())
    plain = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True), nn.Flatten())
    copy = unshare_relus(plain)  # any model whose nonlinearities run once each is fine
    assert copy is not plain and not copy[1].inplace and plain[1].inplace


def test_unshare_relus_checks_on_the_model_s_own_device_and_dtype() -> None:
    """Its check forward runs where the model is (evaluation may run on CUDA): here a float64 model."""
    model = seeded("test_resnet", 3).double()
    x = images(1, 32).double()
    assert torch.equal(unshare_relus(model)(x), model(x))


# ---------------------------------------------------------------------------------------------------------------------
# Each model's own input normalisation


def first_conv_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = first_conv(model).register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
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


@pytest.mark.parametrize("arch", [BIT, "resnet8", "test_resnet"])
def test_bit_and_the_small_resnets_see_the_pixel_scale_itself(arch: str) -> None:
    x = images(1, 32)
    assert torch.equal(first_conv_input(seeded(arch, 3), x), x)  # BiT's convention: [-1, 1]
    assert normalisation_of(seeded(arch, 3)) == "half"


def test_a_timm_model_gets_its_pretrained_configuration_s_normalisation() -> None:
    """test_efficientnet_ln's pretrained configuration gives ImageNet's mean and std; any other pair is written
    m,m,m/s,s,s and applied as such."""
    assert normalisation_of(seeded("test_efficientnet_ln", 3)) == "imagenet"
    model = seeded("test_efficientnet_ln", 3, normalisation="0.25,0.5,0.75/0.5,0.25,0.125")
    assert normalisation_of(model) == "0.25,0.5,0.75/0.5,0.25,0.125"
    x = images(1, 32)
    mean = torch.tensor([0.25, 0.5, 0.75]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    torch.testing.assert_close(first_conv_input(model, x), ((x + 1) / 2 - mean) / std, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_model_is_built_with_its_recorded_normalisation() -> None:
    x = images(1, 32)
    old = seeded("resnet18", 3, normalisation="half")  # what the trainer fed every model before it had one per weights
    assert torch.equal(first_conv_input(old, x), x)
    with pytest.raises(ValueError, match=r"got 'bgr', expected a name \(half, imagenet\) or mean/std"):
        build_model("resnet18", 3, normalisation="bgr")
