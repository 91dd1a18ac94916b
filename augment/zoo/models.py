"""The classifiers the trainer can fine-tune, and how their weights are read from local files.

Four architectures (``ARCHS``):

- ``resnet18``, ``resnet50``: torchvision's ResNets, with ``fc`` sized to the number of classes.
- ``resnet8``: a CIFAR-style ResNet for small images (a 3x3 stem without downsampling, then one torchvision
  BasicBlock per stage at widths 16, 32, 64; 78k parameters): what the embedded study trains, many times, on a CPU.
- ``bit-s-r50x1``: BiT-S-R50x1, the paper's classifier. This is ResNetV2-50 with pre-activation bottlenecks,
  weight-standardised convolutions and GroupNorm, as docs/METHOD.md (Models) describes it. The module names follow the
  official ``bit_pytorch`` port, so the ``.npz`` names map onto them line by line (``_bit_npz_names``):

  | npz array, under ``resnet/``                              | module                                 |
  |-----------------------------------------------------------|----------------------------------------|
  | ``root_block/standardized_conv2d/kernel``                 | ``root.conv``                          |
  | ``block{b}/unit{uu}/{a,b,c}/standardized_conv2d/kernel``  | ``body.block{b}.unit{uu}.conv{1,2,3}`` |
  | ``block{b}/unit{uu}/{a,b,c}/group_norm/{gamma,beta}``     | ``body.block{b}.unit{uu}.gn{1,2,3}``   |
  | ``block{b}/unit01/a/proj/standardized_conv2d/kernel``     | ``body.block{b}.unit01.downsample``    |
  | ``group_norm/{gamma,beta}``                               | ``head.gn``                            |
  | ``head/conv2d/{kernel,bias}``                             | ``head.conv`` (the classifier)         |

Input convention: every model takes images on the trainer's pixel scale, [-1, 1] (``train.data.to_input``), and
maps them to the normalisation its weights expect in a forward pre-hook (:class:`InputNormalisation`): torchvision's
ImageNet weights get ImageNet's mean and std, BiT keeps [-1, 1] (``augment.zoo.NORMALISATIONS``). The hook sits on the
first convolution, not on the model, so that hooks of the model itself (captum's DeepLift concatenates inputs and
baselines in one) see the model's plain inputs. Training, evaluation, FGSM (whose epsilon is a share of the pixel
range), Sal, DeepLiftShap and Grad-CAM all go through the model, so each of them sees the weights' own
normalisation. The state dict is unchanged by it.

Weights come only from local files (nothing is downloaded): a torchvision-style state dict in ``.pth``/``.pt``
(read with ``weights_only=True``, so no arbitrary object is ever unpickled), a ``.safetensors`` state dict, or, for
BiT, the official ``.npz``. The classifier is always sized to ``num_classes``: head weights of another shape are
skipped. ``unshare_relus`` gives the copy of a model that captum's DeepLift needs (one ReLU module per use).

Usage::

    model = build_model("bit-s-r50x1", num_classes=9, weights="weights/BiT-S-R50x1.npz")
    logits = model(images)  # images: float [N, 3, H, W] in [-1, 1], normalised inside as the weights expect
"""

from __future__ import annotations

import copy
import logging
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from augment.zoo import ARCH_NORMALISATION, ARCHS, NORMALISATIONS  # the choices, without torch

log = logging.getLogger("augment.zoo.models")  # the trainer's log, where its warnings have always gone

WEIGHT_FORMATS = {
    ".pth": "a torchvision-style state dict saved with torch.save(model.state_dict(), path)",
    ".pt": "same as .pth",
    ".safetensors": "a state dict saved with safetensors.torch.save_file",
    ".npz": "the official BiT checkpoint, e.g. BiT-S-R50x1.npz (bit-s-r50x1 only)",
}

# Upstream BiT (bit_pytorch and the TF2 model) standardises with this epsilon, not 1e-5.
_WS_EPS = 1e-10


def _formats_help() -> str:
    return "; ".join(f"{suffix}: {what}" for suffix, what in WEIGHT_FORMATS.items())


# ---------------------------------------------------------------------------------------------------------------------
# BiT-S-R50x1 (ResNetV2-50)


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


# ---------------------------------------------------------------------------------------------------------------------
# Building and loading


class InputNormalisation:
    """A forward pre-hook: images on the pixel scale [-1, 1] become ``(x01 - mean) / std`` per channel, where
    ``x01 = (x + 1) / 2`` is the [0, 1] scale, i.e. ``(x - (2 mean - 1)) / (2 std)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        mean, std = NORMALISATIONS[name]
        self.shift = torch.tensor([2 * m - 1 for m in mean]).view(1, 3, 1, 1)
        self.scale = torch.tensor([2 * s for s in std]).view(1, 3, 1, 1)

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, *rest = args
        shift, scale = self.shift.to(x.device, x.dtype), self.scale.to(x.device, x.dtype)
        return ((x - shift) / scale, *rest)


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that takes the model's input: the first one it holds (every arch of ``ARCHS`` starts so)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def normalisation_of(model: nn.Module) -> str:
    """The name of the normalisation ``model`` applies to its inputs (``half``: none, they stay in [-1, 1])."""
    hooks = [h for h in first_conv(model)._forward_pre_hooks.values() if isinstance(h, InputNormalisation)]
    return hooks[0].name if hooks else "half"


def _torchvision_resnet(arch: str, num_classes: int) -> nn.Module:
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


class SmallResNet(nn.Module):
    """``resnet8``: stem conv 3x3 (stride 1), stages of one BasicBlock at ``widths`` (stride 1, 2, 2), pool, ``fc``.

    Small images keep their resolution in the first stage, where ImageNet ResNets would divide it by 4 at once.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        blocks, width = [], widths[0]
        for i, out in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = (
                None
                if stride == 1 and out == width
                else nn.Sequential(nn.Conv2d(width, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            )
            blocks.append(BasicBlock(width, out, stride, down))
            width = out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.relu(self.bn1(self.conv1(x))))).flatten(1))


def _head_keys(model: nn.Module) -> tuple[str, str]:
    if isinstance(model, (ResNet, SmallResNet)):
        return "fc.weight", "fc.bias"
    if isinstance(model, ResNetV2):
        return "head.conv.weight", "head.conv.bias"
    raise TypeError(f"expected a model from build_model (torchvision ResNet or ResNetV2), got {type(model).__name__}")


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters: ``fc`` for the torchvision ResNets, ``head.conv`` for BiT.

    For a separate learning rate or zero-initialisation of the head.
    """
    if isinstance(model, (ResNet, SmallResNet)):
        return list(model.fc.parameters())
    if isinstance(model, ResNetV2):
        return list(model.head.conv.parameters())
    raise TypeError(f"expected a model from build_model (torchvision ResNet or ResNetV2), got {type(model).__name__}")


def build_model(
    arch: str,
    num_classes: int,
    weights: str | Path | None = None,
    zero_head: bool = False,
    from_checkpoint: bool = False,
    normalisation: str | None = None,
) -> nn.Module:
    """Build ``arch`` with a classifier for ``num_classes`` classes, optionally loading local weights.

    Args:
        arch: one of ``ARCHS``.
        num_classes: the classifier's output width. A head of another width in ``weights`` is skipped, not loaded.
        weights: a local file (see ``WEIGHT_FORMATS``). None trains from scratch, with a warning, because the
            paper's results all start from pretrained weights.
        zero_head: zero the classifier's weight and bias after loading (the CCT preset).
        from_checkpoint: the caller loads a trained state dict into the model next (``train eval`` reads
            ``best.pt``), so the random initialisation is never used: no from-scratch warning.
        normalisation: what the model does to its [-1, 1] inputs, a name of ``NORMALISATIONS``; None: the arch's
            weights' own (``ARCH_NORMALISATION``). A checkpoint's model is built with the one it was trained with.

    Raises:
        ValueError: unknown ``arch``, unknown weight format, or weights that do not fit the architecture.
        FileNotFoundError: ``weights`` does not exist.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    normalisation = ARCH_NORMALISATION[arch] if normalisation is None else normalisation
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose from {', '.join(NORMALISATIONS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if arch == "bit-s-r50x1":
        model = ResNetV2(num_classes)
    elif arch == "resnet8":
        model = SmallResNet(num_classes)
    else:
        model = _torchvision_resnet(arch, num_classes)
    if weights is not None:
        _load_weights(model, arch, Path(weights))
    elif not from_checkpoint:
        # a log line of the `train` logger (this module's parent), once per model built: not a UserWarning, whose
        # source line means nothing to a user and which Python shows once per process, not per run
        log.warning("%s: no weights given, training from scratch (random initialisation)", arch)
    if zero_head:
        with torch.no_grad():
            for p in head_parameters(model):
                p.zero_()
    if normalisation != "half":  # half is the pixel scale itself: nothing to do
        first_conv(model).register_forward_pre_hook(InputNormalisation(normalisation))
    return model


def _load_weights(model: nn.Module, arch: str, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_FORMATS:
        raise ValueError(f"{path}: unknown weight format {path.suffix!r}; expected one of: {_formats_help()}")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; expected one of: {_formats_help()}")
    if suffix == ".npz":
        if not isinstance(model, ResNetV2):
            raise ValueError(f"{path}: .npz (official BiT format) fits only bit-s-r50x1, not {arch}")
        state = _read_npz(path, model)
    elif suffix == ".safetensors":
        from safetensors import SafetensorError  # only needed for this format
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except SafetensorError as err:
            raise ValueError(f"{path}: not a readable .safetensors file ({err})") from err
    else:
        state = _read_torch(path)
    _load_state(model, state, path)


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``torch.save``; the file may also be a dict holding it under "state_dict" or "model"."""
    try:
        # weights_only: tensors and plain containers only. Unpickling anything else could run code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False; keep only its reason, e.g. "Unsupported global: ...".
        reason = str(err).partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0]
        reason = " ".join(reason.split()) or str(err).splitlines()[0]
        raise ValueError(
            f"{path}: refused to load: torch.load(weights_only=True) reads only tensors and plain containers, and "
            f"this file holds something else ({reason}). Save only the weights: torch.save(model.state_dict(), path)"
        ) from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable torch.save file ({type(err).__name__}: {err})") from err
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (str -> tensor), got {type(obj).__name__}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path}: expected a state dict (str -> tensor), itself or under 'state_dict' or 'model'; "
            f"these entries are not tensors: {_short(not_tensors)}"
        )
    return obj


def _read_npz(path: Path, model: ResNetV2) -> dict[str, torch.Tensor]:
    """The official BiT arrays as a state dict of ``model``; HWIO kernels become OIHW."""
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz ({err})") from err
    except ValueError as err:  # numpy's message here suggests allow_pickle=True; we never unpickle
        raise ValueError(f"{path}: not an .npz archive of plain arrays (pickled data is refused)") from err
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single .npy array, expected an .npz archive of named arrays")
    names = _bit_npz_names(model)
    with arrays:
        missing = [n for n in names.values() if n not in arrays.files]
        unexpected = sorted(set(arrays.files) - set(names.values()))
        if missing or unexpected:
            raise ValueError(
                f"{path}: not the official BiT-S-R50x1 layout ({len(names)} arrays); "
                f"missing arrays {_short(missing)}, unexpected arrays {_short(unexpected)}"
            )
        state = {}
        for key, name in names.items():
            tensor = torch.from_numpy(arrays[name])
            # TF kernels are HWIO; gamma/beta/bias are 1-D (reshape tolerates a stray singleton axis).
            state[key] = tensor.permute(3, 2, 0, 1).contiguous() if tensor.ndim == 4 else tensor.reshape(-1)
    return state


def _short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy ``state`` into ``model``: every backbone tensor must be present with its shape; the head may differ."""
    own = model.state_dict()
    state = dict(state)
    for key in _head_keys(model):
        if key in state and state[key].shape != own[key].shape:
            log.info(
                "%s: skipping %s %s (model has %s): the head is replaced",
                path,
                key,
                tuple(state[key].shape),
                tuple(own[key].shape),
            )
            del state[key]
    # A missing head means a fresh head; old torchvision checkpoints predate BatchNorm's num_batches_tracked.
    optional = set(_head_keys(model)) | {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: weights do not fit {type(model).__name__}: missing keys {_short(missing)}, "
            f"unexpected keys {_short(unexpected)}, wrong shapes {_short(wrong_shape)}"
        )
    model.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------------------------------------------------------
# One ReLU module per use, for DeepLift


class _UnsharedBasicBlock(BasicBlock):
    """torchvision's BasicBlock with ``relu1``/``relu2`` in place of the shared ``relu``; same arithmetic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class _UnsharedBottleneck(Bottleneck):
    """torchvision's Bottleneck with ``relu1``/``relu2``/``relu3`` in place of the shared ``relu``; same arithmetic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


_UNSHARED: dict[type[nn.Module], tuple[type[nn.Module], int]] = {
    BasicBlock: (_UnsharedBasicBlock, 2),
    Bottleneck: (_UnsharedBottleneck, 3),
}


def unshare_relus(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in which each ``nn.ReLU`` module is called once per forward, and none is in-place.

    captum's DeepLift overrides the gradient of each nonlinearity module from that module's own input and output;
    torchvision's blocks call one ``self.relu`` two or three times, which breaks that. The copy gives each use its own
    module and returns the same numbers. ``model`` itself is not changed; BiT is already built this way.
    """
    if not isinstance(model, (ResNet, ResNetV2, SmallResNet)):
        raise TypeError(
            f"unshare_relus knows how torchvision ResNets and ResNetV2 use their ReLUs, not {type(model).__name__}"
        )
    model = copy.deepcopy(model)
    for module in list(model.modules()):  # a list: the loop adds submodules
        if type(module) in _UNSHARED:  # exact type: an already unshared block is left alone
            cls, n_relus = _UNSHARED[type(module)]
            del module.relu
            for i in range(1, n_relus + 1):
                setattr(module, f"relu{i}", nn.ReLU())
            module.__class__ = cls
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # DeepLift needs each ReLU's input and output as separate tensors
    return model
