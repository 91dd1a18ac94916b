"""The classifiers the trainer can fine-tune: built by name, fitted with local weights, fed on one pixel scale.

``build_model(arch, num_classes, weights)`` takes a named architecture (``zoo.ARCHS``) or any timm model name:

- ``resnet18``, ``resnet50``: torchvision's ResNets, with ``fc`` sized to the number of classes.
- ``resnet8``: a CIFAR-style ResNet for small images (a 3x3 stem without downsampling, then one torchvision
  BasicBlock per stage at widths 16, 32, 64; 78k parameters): what the embedded study trains, many times, on a CPU.
- ``bit-s-r50x1``: BiT-S-R50x1, the paper's classifier: timm's ``resnetv2_50x1_bit`` (ResNetV2-50 with pre-activation
  bottlenecks, weight-standardised convolutions and GroupNorm) with upstream BiT's standardisation epsilon, 1e-10
  (timm's is 1e-8). Its official ``.npz`` is read by ``zoo.weights.read_bit_npz``.
- any other name: ``timm.create_model(name, pretrained=False)``, then the local weights. A model whose pretrained
  configuration fixes its input size (ViTs) is built for the crop it will see; weights made for another size are
  refused naming the size they expect.

Input convention: every model takes images on the trainer's pixel scale, [-1, 1] (``train.data.to_input``), and
maps them to the normalisation its weights expect in a forward pre-hook (:class:`InputNormalisation`): torchvision's
ImageNet weights get ImageNet's mean and std, BiT keeps [-1, 1], a timm model gets its pretrained configuration's
(``zoo.default_normalisation``) or its weights folder's. The hook sits on the first convolution, not on the
model, so that hooks of the model itself (captum's DeepLift concatenates inputs and baselines in one) see the model's
plain inputs. Training, evaluation, FGSM (whose epsilon is a share of the pixel range), Sal, DeepLiftShap and
Grad-CAM all go through the model, so each of them sees the weights' own normalisation. The state dict is unchanged
by it.

The classifier is always sized to ``num_classes``: head weights of another shape are skipped. ``unshare_relus``
gives the copy of a model that captum's DeepLift needs (one ReLU module per use).

Usage::

    model = build_model("bit-s-r50x1", num_classes=9, weights="weights/BiT-S-R50x1.npz")
    model = build_model("convnext_tiny", num_classes=9, weights="weights/convnext_tiny/")  # a timm model folder
    logits = model(images)  # images: float [N, 3, H, W] in [-1, 1], normalised inside as the weights expect
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from augment.contract.zoo import check_arch, normalisation_values, weights_normalisation
from augment.contract.zoo.weights import load_state, read_weights, upgrade_state

log = logging.getLogger("augment.contract.zoo")  # one logger for the zoo; the running command prints it


BIT_WS_EPS = 1e-10  # upstream BiT (bit_pytorch and the TF2 model) standardises with this epsilon


# ---------------------------------------------------------------------------------------------------------------------
# Building


def build_model(
    arch: str,
    num_classes: int,
    weights: str | Path | None = None,
    zero_head: bool = False,
    from_checkpoint: bool = False,
    normalisation: str | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """Build ``arch`` with a classifier for ``num_classes`` classes, optionally loading local weights.

    Args:
        arch: one of ``ARCHS`` or a timm model name.
        num_classes: the classifier's output width. A head of another width in ``weights`` is skipped, not loaded.
        weights: a local file or model folder (see ``WEIGHT_FORMATS``). None trains from scratch, with a warning,
            because the paper's results all start from pretrained weights.
        zero_head: zero the classifier's weight and bias after loading (the CCT preset).
        from_checkpoint: the caller loads a trained state dict into the model next (``train eval`` reads
            ``best.pt``), so the random initialisation is never used: no from-scratch warning.
        normalisation: what the model does to its [-1, 1] inputs (``zoo.normalisation_values``); None: its
            weights' own (a model folder's ``config.json``, else ``default_normalisation``). A checkpoint's model is
            built with the one it was trained with.
        input_size: the side of the images it will see (the crop); a model of fixed input size (ViT) is built for it.

    Raises:
        ValueError: unknown ``arch``, unknown weight format, or weights that do not fit the architecture.
        FileNotFoundError: ``weights`` does not exist.
    """
    check_arch(arch)
    if normalisation is None:
        normalisation = weights_normalisation(arch, weights)
    normalisation_values(normalisation)  # a bad one is refused before the model is built
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if arch == "resnet8":
        model = SmallResNet(num_classes)
    elif arch in ("resnet18", "resnet50"):
        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    else:
        model = _timm_model(arch, num_classes, input_size)
    if weights is not None:
        load_state(model, read_weights(Path(weights), model, arch), Path(weights), head_keys(model), _size_hint(model))
    elif not from_checkpoint:
        # a log line, once per model built: not a UserWarning, whose source line means nothing to a user and which
        # Python shows once per process, not per run
        log.warning("%s: no weights given, training from scratch (random initialisation)", arch)
    if zero_head:
        with torch.no_grad():
            for p in head_parameters(model):
                p.zero_()
    if normalisation != "half":  # half is the pixel scale itself: nothing to do
        first_conv(model).register_forward_pre_hook(InputNormalisation(normalisation))
    return model


def _timm_model(arch: str, num_classes: int, input_size: int | None) -> nn.Module:
    """A timm model at random initialisation (nothing is downloaded), for ``input_size`` where its size is fixed."""
    import timm  # deferred: only timm models need it
    from timm.layers import StdConv2d

    name = "resnetv2_50x1_bit" if arch == "bit-s-r50x1" else arch
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    cfg = model.pretrained_cfg
    if input_size and cfg.get("fixed_input_size") and tuple(cfg["input_size"][1:]) != (input_size, input_size):
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        if patch and input_size % patch[-1]:
            side = cfg["input_size"][-1]
            raise ValueError(
                f"{arch} cuts images into {patch[-1]}x{patch[-1]} patches, and the crop is {input_size} px: pass "
                f"--crop with a multiple of {patch[-1]} (its pretrained configuration takes {side})"
            )
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=input_size)
    if arch == "bit-s-r50x1":
        for module in model.modules():
            if isinstance(module, StdConv2d):
                module.eps = BIT_WS_EPS
    return model


def _size_hint(model: nn.Module) -> str:
    """For weights of another shape: the input size the model's pretrained configuration gives, where it is fixed."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if not cfg.get("fixed_input_size"):
        return ""
    side = cfg["input_size"][-1]
    return (
        f"{cfg.get('architecture')} takes a fixed input size and was built for the crop; weights made for "
        f"{side}x{side} need a crop of {side} (train fit --crop {side}, on a build of --image-size {side} or more)"
    )


def input_size_of(model: nn.Module) -> int | None:
    """The side of the images a model of fixed input size takes (ViTs); None where any size goes."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if not cfg.get("fixed_input_size"):
        return None
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return int(size[-1]) if size else int(cfg["input_size"][-1])


def probe_image(model: nn.Module, side: int) -> torch.Tensor:
    """A black image batch of one, ``side`` pixels square (the model's own side when it is fixed), on the model's
    device and in its dtype: what a probing forward feeds a model wherever it was moved."""
    side = input_size_of(model) or side
    first = next(model.parameters(), None)
    kind = {"device": first.device, "dtype": first.dtype} if first is not None else {}
    return torch.zeros(1, 3, side, side, **kind)


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


# ---------------------------------------------------------------------------------------------------------------------
# The head, the first convolution and the input normalisation


def classifier(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier's module name and module: ``fc`` for the torchvision ResNets, timm's ``get_classifier()``."""
    if isinstance(model, (ResNet, SmallResNet)):
        return "fc", model.fc
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name, module
    raise TypeError(f"expected a model from build_model (a torchvision ResNet or a timm model), got {type(model)}")


def head_keys(model: nn.Module) -> list[str]:
    name, module = classifier(model)
    return [f"{name}.{key}" for key in module.state_dict()]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters, for a separate learning rate or zero-initialisation of the head."""
    return list(classifier(model)[1].parameters())


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that takes the model's input: timm names it (``pretrained_cfg["first_conv"]``); the others
    start with it."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("first_conv"):
        return model.get_submodule(cfg["first_conv"])
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


class InputNormalisation:
    """A forward pre-hook: images on the pixel scale [-1, 1] become ``(x01 - mean) / std`` per channel, where
    ``x01 = (x + 1) / 2`` is the [0, 1] scale, i.e. ``(x - (2 mean - 1)) / (2 std)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        mean, std = normalisation_values(name)
        self.shift = torch.tensor([2 * m - 1 for m in mean]).view(1, 3, 1, 1)
        self.scale = torch.tensor([2 * s for s in std]).view(1, 3, 1, 1)

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, *rest = args
        shift, scale = self.shift.to(x.device, x.dtype), self.scale.to(x.device, x.dtype)
        return ((x - shift) / scale, *rest)


def normalisation_of(model: nn.Module) -> str:
    """The name of the normalisation ``model`` applies to its inputs (``half``: none, they stay in [-1, 1])."""
    hooks = [h for h in first_conv(model)._forward_pre_hooks.values() if isinstance(h, InputNormalisation)]
    return hooks[0].name if hooks else "half"


def checkpoint_state(arch: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's model state in today's names (a bit-s-r50x1 run from before timm has the old ones)."""
    return upgrade_state(arch, state)


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


def unshare_relus(model: nn.Module, input_size: int = 64) -> nn.Module:
    """A deep copy of ``model`` in which each nonlinearity module is called once per forward, and none is in-place.

    captum's DeepLift overrides the gradient of each nonlinearity module from that module's own input and output;
    torchvision's blocks call one ``self.relu`` two or three times, which breaks that. The copy gives each use its own
    module and returns the same numbers. timm's models are checked by one forward at ``input_size``; one that calls a
    module twice is refused. ``model`` itself is not changed.
    """
    model = copy.deepcopy(model)
    for module in list(model.modules()):  # a list: the loop adds submodules
        if type(module) in _UNSHARED:  # exact type: an already unshared block is left alone
            cls, n_relus = _UNSHARED[type(module)]
            del module.relu
            for i in range(1, n_relus + 1):
                setattr(module, f"relu{i}", nn.ReLU())
            module.__class__ = cls
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False  # DeepLift needs each nonlinearity's input and output as separate tensors
    calls: dict[str, int] = {}
    hooks = [
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, module in model.named_modules()
        if isinstance(module, _NONLINEAR)
    ]
    try:
        with torch.no_grad():
            model.eval()(probe_image(model, input_size))  # evaluation may run on CUDA
    finally:
        for hook in hooks:
            hook.remove()
    shared = [f"{name} ({n} times)" for name, n in calls.items() if n > 1]
    if shared:
        raise TypeError(
            f"captum's DeepLift needs each nonlinearity module called once per forward, and "
            f"{type(model).__name__} calls {', '.join(shared[:3])}; use --saliency gradient for it"
        )
    return model


_NONLINEAR = (nn.ReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LeakyReLU, nn.GELU, nn.SiLU)
