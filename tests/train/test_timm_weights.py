"""Weights for timm models from every file kind a user has (issue #31, item 6): .safetensors, .pth, .bin, a
``{'state_dict': ...}`` wrapper, a DDP state dict (``module.`` prefixes), and a model folder as timm's ``save_for_hf``
writes it, whose config.json also gives the normalisation. A head of another width is replaced; a backbone that does
not fit is one line naming the keys; a ViT's weights made for another input size name the crop they need.

Nothing is downloaded: every file is written here from a tiny model built at random, the hub is offline and a
connection attempt fails the test.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from augment.contract.zoo.models import build_model, head_keys, normalisation_of

ARCH = "test_efficientnet_gn"  # GroupNorm, SiLU, squeeze-excitation: 0.1M parameters
HEAD = ("classifier.weight", "classifier.bias")


@pytest.fixture(autouse=True)
def offline(monkeypatch) -> Iterator[None]:
    """No downloads: the hub is offline, and any connection is an error."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield


def images(n: int = 2, size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def source(num_classes: int = 5, arch: str = ARCH, **kwargs: object) -> nn.Module:
    """A seeded model whose every tensor differs from a fresh build's (so a tensor not loaded shows)."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes, from_checkpoint=True, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def same(a: nn.Module, b: nn.Module, x: torch.Tensor | None = None) -> bool:
    x = images() if x is None else x
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def save_kind(model: nn.Module, kind: str, folder: Path) -> Path:
    """``model``'s weights as a user may hold them."""
    state = model.state_dict()
    if kind == "safetensors":
        save_file(state, str(folder / "w.safetensors"))
        return folder / "w.safetensors"
    if kind == "folder":
        import timm.models

        timm.models.save_for_hf(model, folder / "hf", safe_serialization=True)
        return folder / "hf"
    path = folder / {"pth": "w.pth", "bin": "pytorch_model.bin", "state_dict": "ckpt.pth", "ddp": "ddp.pt"}[kind]
    if kind == "state_dict":
        state = {"state_dict": state, "epoch": 7, "arch": ARCH}
    elif kind == "ddp":  # what a DistributedDataParallel-wrapped model's state_dict() gives
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("kind", ["safetensors", "pth", "bin", "state_dict", "ddp", "folder"])
def test_every_file_kind_loads_every_tensor(kind: str, tmp_path: Path) -> None:
    model = source()
    path = save_kind(model, kind, tmp_path)
    loaded = build_model(ARCH, 5, weights=path)
    assert same(loaded, model)
    mine, theirs = loaded.state_dict(), model.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("kind", ["safetensors", "folder"])
def test_a_head_of_another_width_is_replaced(kind: str, tmp_path: Path) -> None:
    """ImageNet-style weights (here 7 classes) fine-tuned on 3: the backbone loads, the classifier is fresh."""
    model = source(7)
    path = save_kind(model, kind, tmp_path)
    torch.manual_seed(1)
    fresh = build_model(ARCH, 3, from_checkpoint=True)
    torch.manual_seed(1)
    loaded = build_model(ARCH, 3, weights=path)
    assert list(head_keys(loaded)) == list(HEAD)
    theirs = model.state_dict()
    for key, value in loaded.state_dict().items():
        if key in HEAD:
            assert value.shape[0] == 3 and torch.equal(value, fresh.state_dict()[key]), key
        else:
            assert torch.equal(value, theirs[key]), key


def test_a_backbone_that_does_not_fit_is_one_line_naming_the_keys(tmp_path: Path) -> None:
    path = save_kind(source(5, "test_resnet"), "safetensors", tmp_path)
    with pytest.raises(ValueError) as err:
        build_model(ARCH, 5, weights=path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: weights do not fit EfficientNet: ")
    assert "missing keys [conv_stem.weight, blocks.0.0.conv.weight" in message
    assert re.search(r"unexpected keys \[[^\]]*layer1\.0\.bn1\.", message)  # test_resnet's own

    state = source().state_dict()
    state["conv_stem.weight"] = state["conv_stem.weight"][:, :, :2].contiguous()  # a kernel of another size
    save_file(state, str(tmp_path / "cut.safetensors"))
    with pytest.raises(ValueError, match=r"wrong shapes \[conv_stem\.weight \(file \(\d+, 3, 2, 3\), model") as err:
        build_model(ARCH, 5, weights=tmp_path / "cut.safetensors")
    assert "\n" not in str(err.value) and "missing keys []" in str(err.value)


def test_vit_weights_for_another_input_size_name_the_crop_they_need(tmp_path: Path) -> None:
    """A ViT's position embedding fixes its input size: weights made at 160 px (test_vit's pretrained size) do not
    load into a model built for a crop of 64, and the message says which crop they need."""
    path = save_kind(source(5, "test_vit"), "safetensors", tmp_path)
    with pytest.raises(ValueError) as err:
        build_model("test_vit", 5, weights=path, input_size=64)
    message = str(err.value)
    assert "\n" not in message and "wrong shapes [pos_embed (file (1, 101, 64), model (1, 17, 64))" in message
    assert message.endswith(
        "test_vit takes a fixed input size and was built for the crop; weights made for 160x160 need a crop of 160 "
        "(train fit --crop 160, on a build of --image-size 160 or more)"
    )
    at_160 = build_model("test_vit", 5, weights=path, input_size=160)  # the crop they were made for
    assert same(at_160, source(5, "test_vit"), images(1, 160))


def test_a_model_folder_s_config_gives_the_normalisation(tmp_path: Path) -> None:
    """save_for_hf writes the pretrained configuration's mean and std into config.json: a folder whose weights
    expect another normalisation (here edited by hand) is normalised that way, by build_model and in the run's
    recorded config, unless --normalisation says otherwise."""
    from train.config import Config

    folder = save_kind(source(), "folder", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]  # test_efficientnet_gn's own
    assert normalisation_of(build_model(ARCH, 5, weights=folder)) == "half"

    config["pretrained_cfg"] |= {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (folder / "config.json").write_text(json.dumps(config))
    assert normalisation_of(build_model(ARCH, 5, weights=folder)) == "imagenet"
    resolved = Config.resolve("demo", shards="s", out="o", arch=ARCH, weights=str(folder))
    assert resolved.normalisation == "imagenet" and resolved.to_dict()["normalisation"] == "imagenet"

    config["pretrained_cfg"] |= {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    (folder / "config.json").write_text(json.dumps(config))
    assert normalisation_of(build_model(ARCH, 5, weights=folder)) == "0.1,0.2,0.3/0.4,0.5,0.6"
    assert Config.resolve("demo", shards="s", out="o", arch=ARCH, weights=str(folder)).normalisation == (
        "0.1,0.2,0.3/0.4,0.5,0.6"
    )
    chosen = Config.resolve("demo", shards="s", out="o", arch=ARCH, weights=str(folder), normalisation="half")
    assert chosen.normalisation == "half"  # the flag wins over the folder


def test_the_folder_normalisation_is_applied_to_the_inputs(tmp_path: Path) -> None:
    """The model built from an ImageNet-normalised folder sees (x01 - mean) / std at its first convolution."""
    from augment.contract.zoo.models import first_conv

    folder = save_kind(source(), "folder", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"] |= {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (folder / "config.json").write_text(json.dumps(config))
    model = build_model(ARCH, 5, weights=folder).eval()
    seen = []
    handle = first_conv(model).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = images(1)
    with torch.no_grad():
        model(x)
    handle.remove()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], ((x + 1) / 2 - mean) / std, rtol=1e-5, atol=1e-5)
