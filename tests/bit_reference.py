"""An independent BiT-S-R50x1 (ResNetV2-50), written from the paper's description and the official ``.npz`` layout,
and its own reader of that ``.npz``: the reference the zoo's BiT (timm's ``resnetv2_50x1_bit``) is checked against
(tests/train/test_models.py). It was the project's own BiT until timm took its place; its module names follow the
official ``bit_pytorch`` port, so old checkpoints' names are these too.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Upstream BiT (bit_pytorch and the TF2 model) standardises with this epsilon.
_WS_EPS = 1e-10


class StdConv2d(nn.Conv2d):
    """A conv whose kernel is standardised per output channel before use: (w - mean) / sqrt(var + 1e-10).

    The variance is the biased one, over (in, kh, kw), as in upstream BiT. The stored ``weight`` stays raw, so
    checkpoints hold the same numbers as the official ones.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        weight = (self.weight - mean) / torch.sqrt(var + _WS_EPS)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PreActBottleneck(nn.Module):
    """One ResNetV2 unit: pre = relu(gn1(x)); conv1 1x1, relu(gn2), conv2 3x3, relu(gn3), conv3 1x1, plus shortcut.

    The shortcut is ``downsample(pre)`` (the npz's ``a/proj``) when the unit changes width or stride, else ``x``.
    Each ReLU is its own module, so the model works with DeepLift without ``unshare_relus``.
    """

    def __init__(self, in_width: int, out_width: int, mid_width: int, stride: int) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(32, in_width)
        self.relu1 = nn.ReLU()
        self.conv1 = StdConv2d(in_width, mid_width, kernel_size=1, bias=False)
        self.gn2 = nn.GroupNorm(32, mid_width)
        self.relu2 = nn.ReLU()
        self.conv2 = StdConv2d(mid_width, mid_width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(32, mid_width)
        self.relu3 = nn.ReLU()
        self.conv3 = StdConv2d(mid_width, out_width, kernel_size=1, bias=False)
        self.downsample: StdConv2d | None = None
        if stride != 1 or in_width != out_width:
            self.downsample = StdConv2d(in_width, out_width, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.gn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu2(self.gn2(out)))
        out = self.conv3(self.relu3(self.gn3(out)))
        return out + shortcut


class ResNetV2(nn.Module):
    """BiT-S-R50x1: ResNetV2-50 (units [3, 4, 6, 3]) with a 1x1-conv classifier. Returns logits [N, num_classes].

    The stem pads with zeros *before* a padding-free max pool. MaxPool(padding=1) would pad with -inf instead and
    give different numbers wherever a border window is all negative, so the official weights would not fit.
    """

    UNITS = (3, 4, 6, 3)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.root = nn.Sequential(
            OrderedDict(
                conv=StdConv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
                pad=nn.ConstantPad2d(1, 0.0),
                pool=nn.MaxPool2d(kernel_size=3, stride=2, padding=0),
            )
        )
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        in_width = 64
        for b, n_units in enumerate(self.UNITS, start=1):
            mid_width = 64 * 2 ** (b - 1)
            out_width = 4 * mid_width
            units: OrderedDict[str, nn.Module] = OrderedDict()
            for u in range(1, n_units + 1):
                stride = 2 if u == 1 and b > 1 else 1  # the stride-2 step sits on unit01's 3x3 conv, blocks 2-4
                units[f"unit{u:02d}"] = PreActBottleneck(in_width, out_width, mid_width, stride)
                in_width = out_width
            blocks[f"block{b}"] = nn.Sequential(units)
        self.body = nn.Sequential(blocks)
        self.head = nn.Sequential(
            OrderedDict(
                gn=nn.GroupNorm(32, in_width),
                relu=nn.ReLU(),
                avg=nn.AdaptiveAvgPool2d(1),
                conv=nn.Conv2d(in_width, num_classes, kernel_size=1, bias=True),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.root(x))).flatten(1)


def _bit_npz_names(model: ResNetV2) -> dict[str, str]:
    """Map each state-dict key of ``model`` to its array name in the official BiT ``.npz`` (docs/METHOD.md, Models)."""
    names = {
        "root.conv.weight": "resnet/root_block/standardized_conv2d/kernel",
        "head.gn.weight": "resnet/group_norm/gamma",
        "head.gn.bias": "resnet/group_norm/beta",
        "head.conv.weight": "resnet/head/conv2d/kernel",
        "head.conv.bias": "resnet/head/conv2d/bias",
    }
    for block_name, block in model.body.named_children():
        for unit_name, unit in block.named_children():
            key, npz = f"body.{block_name}.{unit_name}.", f"resnet/{block_name}/{unit_name}/"
            for i, letter in enumerate("abc", start=1):
                names[f"{key}conv{i}.weight"] = f"{npz}{letter}/standardized_conv2d/kernel"
                names[f"{key}gn{i}.weight"] = f"{npz}{letter}/group_norm/gamma"
                names[f"{key}gn{i}.bias"] = f"{npz}{letter}/group_norm/beta"
            if unit.downsample is not None:
                names[f"{key}downsample.weight"] = f"{npz}a/proj/standardized_conv2d/kernel"
    return names


def load_npz(model: ResNetV2, path: Path) -> ResNetV2:
    """``model`` with the official arrays of ``path``; HWIO kernels become OIHW. Every array must be there."""
    with np.load(path, allow_pickle=False) as arrays:
        state = {}
        for key, name in _bit_npz_names(model).items():
            tensor = torch.from_numpy(arrays[name])
            state[key] = tensor.permute(3, 2, 0, 1).contiguous() if tensor.ndim == 4 else tensor.reshape(-1)
    model.load_state_dict(state, strict=True)
    return model


def random_npz(path: Path, num_classes: int = 1000, seed: int = 0) -> Path:
    """A seeded random ``.npz`` with the official array names and shapes: He-scaled HWIO kernels, gamma in [0.5, 1.5],
    beta and bias in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    model = ResNetV2(num_classes)
    state = model.state_dict()
    arrays = {}
    for key, name in _bit_npz_names(model).items():
        shape = tuple(state[key].shape)
        if len(shape) == 4:
            o, i, h, w = shape
            std = 0.01 if name.endswith("head/conv2d/kernel") else np.sqrt(2.0 / (i * h * w))
            arrays[name] = rng.normal(0.0, std, size=(h, w, i, o)).astype(np.float32)
        elif name.endswith("gamma"):
            arrays[name] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        else:
            arrays[name] = rng.uniform(-0.5, 0.5, size=shape).astype(np.float32)
    np.savez(path, **arrays)
    return path
