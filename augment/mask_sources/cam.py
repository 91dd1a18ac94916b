"""``cam``: a classifier's class-activation heatmap, thresholded, as the object mask of a dataset of labels only.

A dataset with neither boxes nor masks still says which class each image shows; a classifier of those classes
lights up where it sees that class. The mask is Grad-CAM (Selvaraju et al., 2017) on the network's last spatial
feature map, for the sample's own class when the weights name it (a ``train fit`` checkpoint whose classes include
the sample's), else for the model's top-1 class (ImageNet weights on a folder of other classes): upsampled to the
image (bilinear), ReLU, divided by the image's maximum, then ``heatmap >= THRESHOLD``. A heatmap that is zero
everywhere gives no mask, and every mask then passes the gate (2% to 80% of the image) or the sample has no object.

The feature map (``PARAMS["layer"]``): the last stage of the torchvision ResNets and of resnet8 (``LAYERS``); for a
timm model (every other ``--arch``, BiT included), what its ``forward_features`` returns, which its
``forward_head`` turns into the logits: a convolutional network's last map (BiT's after the final GroupNorm and
ReLU, what the classifier pools). A ViT's features are tokens: the patch tokens entering its last block, laid out on
their grid, prefix (class, register) tokens left out; the last block's own output would not do, since a
class-token ViT's logits read only its class token there. A model whose features are neither is refused in one line.

Grad-CAM is captum's ``LayerGradCam``, a core dependency already (the trainer's attributions): the ``grad-cam``
package would add ``ttach`` and a second OpenCV distribution.

Weights (``--mask-weights``), read with ``torch.load(weights_only=True)``, safetensors or ``np.load`` without pickle,
so no code is ever unpickled:

- a ``train fit`` checkpoint (``best.pt``/``last.pt``: ``model``, ``config`` with ``arch``, ``classes``) of any
  ``--arch`` (a named one or a timm model), built with ``augment.contract.zoo.models.build_model`` with the
  normalisation and input size it was trained with, and loaded strictly (a BiT checkpoint from before timm through
  ``checkpoint_state``); inputs on the trainer's [-1, 1] scale, which that model maps to its weights' normalisation
  itself (``augment.contract.zoo.models``);
- a torchvision ResNet state dict (``.pth``/``.pt``/``.safetensors``; ResNet-18/34/50/101/152, told apart by their
  keys and shapes, e.g. the ImageNet weights), with the ImageNet mean and std;
- the official BiT-S-R50x1 ``.npz``, read by ``augment.contract.zoo``'s own loader, inputs in [-1, 1] as BiT expects.

The image goes in at its stored size (a model of fixed input size, a ViT, takes it resized to that size, bilinear),
a batch of requests (grouped by image size) in one forward and backward pass on ``--device``. Nothing is drawn: the
mask of an image depends on the weights and its pixels only.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augment.mask_sources import MaskSource, Request, register

THRESHOLD = 0.5  # of the image's heatmap maximum
# The last convolutional stage of the networks that are not timm's, whose output Grad-CAM weighs by its gradient;
# a timm model's map is that of its forward_features (``_timm_map``).
LAYERS = {"resnet8": "layers.2", "resnet": "layer4"}
PROBE = 64  # the side of the blank image whose features tell a timm model's layout (any size goes but a ViT's)
TIMM_LAYER = (
    "forward_features, the map forward_head pools (BiT: after its final GroupNorm and ReLU); ViTs: the patch tokens "
    "entering the last block, on their grid"
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # train.data.to_input: [0, 1] -> [-1, 1]
# torchvision's ResNets: (block, blocks per stage) -> builder
TORCHVISION = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
BIT_HEAD = "resnet/head/conv2d/kernel"  # bit_npz_names()["head.fc.weight"] (tests/augment/test_mask_cam.py)

WEIGHTS_HELP = (
    "--masks-from cam takes a classifier: a `train fit` checkpoint (RUN/best.pt, any --arch), a torchvision ResNet "
    "state dict (.pth/.pt/.safetensors, e.g. ImageNet weights saved with torch.save(model.state_dict(), path)) or "
    "the official BiT-S-R50x1.npz"
)


@dataclass
class Classifier:
    """What ``load`` gives ``produce``: the network in eval mode on its device, the layer Grad-CAM reads, and how
    inputs are normalised and targets chosen."""

    net: Any  # torch.nn.Module
    layer: Any  # a submodule of net
    classes: tuple[str, ...] | None  # the class names the outputs mean (train fit checkpoints), else None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: Any  # torch.device
    kind: str  # "train fit resnet8", "torchvision resnet50", ...
    forward: Callable[[Any], Any] | None = None  # inputs -> logits through ``layer``; None: ``net`` itself
    input_size: int | None = None  # the side a model of fixed input size takes (ViT); None: the image's own size


def _fail(path: Path, found: str, fix: str = "") -> ValueError:
    return ValueError(f"--mask-weights {path}: {found}; {fix or WEIGHTS_HELP}")


def _short(items: list[str], limit: int = 4) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused what it read
        reason = str(err).partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0]
        reason = " ".join(reason.split()).partition(" was not an allowed global")[0].partition(". ")[0].rstrip(".")
        if "global" not in reason.lower():  # not a pickle of objects at all: another kind of file
            raise _fail(path, f"not a readable torch.save file ({reason or 'UnpicklingError'})") from err
        found = f"holds pickled objects, not only tensors ({reason}); refused, since unpickling them could run code"
        fix = f"save the weights only, torch.save(model.state_dict(), path); {WEIGHTS_HELP}"
        raise _fail(path, found, fix) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        found = " ".join(str(err).split())[:200]
        raise _fail(path, f"not a readable torch.save file ({type(err).__name__}: {found})") from err


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _load_strict(net: Any, state: dict[str, Any], path: Path, what: str) -> None:
    """``net.load_state_dict(state, strict=True)``, its failure as one line."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        found = "; ".join(
            f"{name} {_short(keys)}"
            for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        )
        raise _fail(
            path,
            f"the weights do not fit {what}: {found}",
            f"pass the checkpoint of the network it names, unchanged; {WEIGHTS_HELP}",
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # e.g. a dtype torch cannot copy
        raise _fail(path, f"the weights do not load into {what} ({' '.join(str(err).split())[:200]})") from err


def _train_fit(obj: dict[str, Any], path: Path) -> tuple[Any, str, tuple[str, ...] | None, tuple[float, ...]]:
    import torch

    # a `train fit` checkpoint holds weights only; the classifier it belongs to (resnet8, BiT, a timm model...) is
    # defined in the zoo the trainer builds it from, so it is built there rather than copied here
    from augment.contract.zoo import ARCHS, check_arch
    from augment.contract.zoo.models import build_model, checkpoint_state

    config, classes, state = obj.get("config"), obj.get("classes"), obj.get("model")
    arch = config.get("arch") if isinstance(config, dict) else None
    try:
        check_arch(arch if isinstance(arch, str) else "")
    except ValueError:
        raise _fail(
            path,
            f"a `train fit` checkpoint whose config names arch {arch!r}, expected one of {', '.join(ARCHS)} or a timm "
            "model name",
        ) from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _fail(
            path,
            f"a `train fit` checkpoint whose 'classes' is {type(classes).__name__}, expected the "
            "list of class names `train fit` saves",
        )
    if not _is_state_dict(state):
        raise _fail(path, "a `train fit` checkpoint whose 'model' is not a state dict of tensors")
    # the model normalises its [-1, 1] inputs as it was trained to (checkpoints before it was recorded: none), and
    # a model of fixed input size (ViT) is built for the crop it was trained on (train.py records it)
    normalisation = config.get("normalisation") or "half"
    size = obj.get("input_size")
    size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
    try:
        with torch.random.fork_rng(devices=[]):  # the random initialisation, overwritten next, leaves the global RNG
            net = build_model(
                arch, len(classes), None, from_checkpoint=True, normalisation=normalisation, input_size=size
            )
    except ValueError as err:  # e.g. a normalisation the zoo does not know
        raise _fail(
            path, f"a `train fit` checkpoint the zoo cannot build ({' '.join(str(err).split())[:200]})"
        ) from err
    state = checkpoint_state(arch, state)  # a BiT run from before timm has the old names
    _load_strict(net, state, path, f"{arch} with {len(classes)} classes (its config and classes)")
    return net, arch, tuple(classes), HALF


def _torchvision(state: dict[str, Any], path: Path) -> tuple[Any, str, None, tuple[float, ...]]:
    import torch
    import torchvision

    if not {"conv1.weight", "fc.weight"} <= set(state) or not any(k.startswith("layer4.") for k in state):
        raise _fail(
            path,
            f"a state dict of {len(state)} tensors ({_short([str(k) for k in state])}) that is not "
            "a torchvision ResNet's (conv1.weight, layer1-4, fc.weight)",
        )
    block = "bottleneck" if any(k.endswith(".conv3.weight") for k in state) else "basic"
    counts = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    arch = TORCHVISION.get((block, counts))
    if arch is None:
        raise _fail(
            path,
            f"a torchvision-style ResNet with {block} blocks {list(counts)} per stage, expected one of "
            + ", ".join(f"{a} ({b} {list(c)})" for (b, c), a in TORCHVISION.items()),
        )
    num_classes = int(state["fc.weight"].shape[0])
    with torch.random.fork_rng(devices=[]):
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    _load_strict(net, state, path, f"torchvision {arch} with {num_classes} outputs")
    return net, arch, None, IMAGENET_MEAN


def _bit(path: Path) -> tuple[Any, str, None, tuple[float, ...]]:
    import torch

    from augment.contract.zoo.models import (
        build_model,  # BiT is timm's resnetv2_50x1_bit; its .npz is read in augment.contract.zoo.weights
    )

    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = list(arrays.files)
            head = tuple(arrays[BIT_HEAD].shape) if BIT_HEAD in names else None
    except (OSError, zipfile.BadZipFile, ValueError, AttributeError) as err:  # AttributeError: a single .npy
        raise _fail(path, f"not an .npz archive of plain arrays ({type(err).__name__})") from err
    if head is None:
        raise _fail(
            path, f"an .npz of {len(names)} arrays without {BIT_HEAD}, expected the official BiT-S-R50x1 layout"
        )
    num_classes = int(head[-1])
    try:
        with torch.random.fork_rng(devices=[]):
            net = build_model("bit-s-r50x1", num_classes, path)
    except ValueError as err:
        raise _fail(path, " ".join(str(err).split()).removeprefix(f"{path}: ")) from err
    return net, "bit-s-r50x1", None, HALF


def read(path: Path) -> tuple[Any, str, tuple[str, ...] | None, tuple[float, ...]]:
    """``(network, arch, class names or None, mean)`` from a weight file, on the CPU; a bad file is a ValueError."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _bit(path)
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _torchvision(load_file(str(path), device="cpu"), path)
        except (SafetensorError, OSError) as err:
            raise _fail(path, f"not a readable .safetensors file ({' '.join(str(err).split())[:200]})") from err
    obj = _torch_load(path)
    if isinstance(obj, dict) and "model" in obj and "config" in obj:
        return _train_fit(obj, path)
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for wrapper in ("state_dict", "model"):  # a state dict saved inside a dict
            if _is_state_dict(obj.get(wrapper)):
                return _torchvision(obj[wrapper], path)
        keys = _short([repr(k) for k in obj])
        raise _fail(
            path,
            f"a dict with keys {keys or '(none)'}, neither a `train fit` checkpoint ('model', 'config', "
            "'classes') nor a torchvision ResNet state dict",
        )
    if not isinstance(obj, dict):
        raise _fail(path, f"a {type(obj).__name__}, expected a `train fit` checkpoint or a state dict")
    return _torchvision(obj, path)


def feature_map(net: Any, arch: str, path: Path) -> tuple[Any, Callable[[Any], Any] | None, int | None]:
    """``(layer, forward, input size)``: the module whose output Grad-CAM weighs, the function from inputs to logits
    through it (None: the network itself) and the side of a model of fixed input size (else None)."""
    from torchvision.models import ResNet

    if arch == "resnet8":
        return net.get_submodule(LAYERS["resnet8"]), None, None
    if isinstance(net, ResNet):
        return net.get_submodule(LAYERS["resnet"]), None, None
    return _timm_map(net, arch, path)


def _timm_map(net: Any, arch: str, path: Path) -> tuple[Any, Callable[[Any], Any] | None, int | None]:
    """A timm model's last feature map made explicit: an ``nn.Identity`` it passes through on the way from
    ``forward_features`` to ``forward_head`` (as [N, C, H, W]), or, for a ViT's tokens, on the way into the last
    block (a forward pre-hook of that block lays the patch tokens out on their grid and back)."""
    import torch

    from augment.contract.zoo.models import input_size_of, probe_image

    if not (callable(getattr(net, "forward_features", None)) and callable(getattr(net, "forward_head", None))):
        raise _fail(path, f"a {type(net).__name__} ({arch}) without timm's forward_features and forward_head")
    side = input_size_of(net)
    was_training = net.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            features = net.eval().forward_features(probe_image(net, PROBE))  # where load moved it: CUDA too
    except RuntimeError as err:
        found = " ".join(str(err).split())[:200]
        raise _fail(path, f"a {arch} that fails on a {side or PROBE}x{side or PROBE} image ({found})") from err
    finally:
        net.train(was_training)
    shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
    width = getattr(net, "num_features", None)
    grid = torch.nn.Identity()
    if isinstance(features, torch.Tensor) and features.ndim == 4:  # a map: [N, C, H, W], or [N, H, W, C] (Swin)
        channels_last = features.shape[1] != width and features.shape[-1] == width

        def forward(x: Any) -> Any:
            maps = net.forward_features(x)
            if channels_last:
                return net.forward_head(grid(maps.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
            return net.forward_head(grid(maps))

        return grid, forward, side
    prefix = int(getattr(net, "num_prefix_tokens", 0) or 0)
    blocks = getattr(net, "blocks", None)
    if (
        isinstance(features, torch.Tensor)
        and features.ndim == 3
        and isinstance(blocks, (torch.nn.Sequential, torch.nn.ModuleList))
        and len(blocks)
        and math.isqrt(features.shape[1] - prefix) ** 2 == features.shape[1] - prefix > 0
    ):

        def on_grid(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            tokens, *rest = args
            side = math.isqrt(tokens.shape[1] - prefix)
            patches = tokens[:, prefix:].unflatten(1, (side, side)).permute(0, 3, 1, 2)  # [N, C, h, w]
            patches = grid(patches).permute(0, 2, 3, 1).flatten(1, 2)
            return (torch.cat([tokens[:, :prefix], patches], 1), *rest)

        blocks[-1].register_forward_pre_hook(on_grid)
        return grid, None, side
    raise _fail(
        path,
        f"a `train fit` checkpoint of {arch}, whose features ({shape}) are not a spatial map for Grad-CAM (a "
        "[N, C, H, W] map or patch tokens on a square grid)",
        "--masks-from cam needs a convolutional or patch-token classifier; choose another --mask-weights, or another "
        "--masks-from",
    )


def check(path: Path) -> None:
    """Refuse, before the build writes anything, a file ``load`` could not use."""
    net, arch, *_ = read(path)
    feature_map(net, arch, path)


def load(weights: Path, device: str) -> Classifier:
    from augment.contract.zoo.devices import resolve_device

    net, arch, classes, mean = read(weights)
    chosen = resolve_device(device)
    net.requires_grad_(False)  # this process's own copy: Grad-CAM needs the layer's gradient only
    net.eval().to(chosen)
    layer, forward, input_size = feature_map(net, arch, weights)
    std = HALF if mean == HALF else IMAGENET_STD
    kind = f"train fit {arch}" if classes is not None else f"{'BiT' if arch == 'bit-s-r50x1' else 'torchvision'} {arch}"
    return Classifier(net, layer, classes, mean, std, chosen, kind, forward, input_size)


def heatmaps(model: Classifier, images: np.ndarray, targets: list[int | None]) -> np.ndarray:
    """Grad-CAM of ``images`` (uint8 [N, H, W, 3]) for each one's target class (None: its top-1), upsampled,
    ReLU'd and divided by each image's maximum: float [N, H, W] in [0, 1], all zero where the map is."""
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    x = torch.from_numpy(np.ascontiguousarray(images)).to(model.device).permute(0, 3, 1, 2).float()
    if model.mean == HALF and model.std == HALF:
        x = x.div(127.5).sub(1.0)  # train.data.to_input, the same arithmetic as training
    else:
        mean = torch.tensor(model.mean, device=model.device).view(1, 3, 1, 1)
        std = torch.tensor(model.std, device=model.device).view(1, 3, 1, 1)
        x = x.div(255.0).sub(mean).div(std)
    if model.input_size is not None and tuple(x.shape[2:]) != (model.input_size,) * 2:  # a ViT's fixed size
        x = torch.nn.functional.interpolate(x, size=(model.input_size,) * 2, mode="bilinear", align_corners=False)
    given = torch.tensor([-1 if t is None else t for t in targets], device=model.device)
    forward = model.net if model.forward is None else model.forward

    def score(inputs: torch.Tensor) -> torch.Tensor:  # each image's target logit, [N, 1]: one forward for both rules
        logits = forward(inputs)
        chosen = torch.where(given >= 0, given, logits.detach().argmax(1))
        return logits.gather(1, chosen[:, None])

    was_training = model.net.training
    model.net.eval()
    try:
        with torch.enable_grad():
            cam = LayerGradCam(score, model.layer).attribute(x.requires_grad_(), target=0)
    finally:
        model.net.train(was_training)
    cam = torch.relu(LayerAttribution.interpolate(cam.detach(), tuple(images.shape[1:3]), "bilinear"))[:, 0]
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    return cam.cpu().numpy()


def target(model: Classifier, request: Request) -> int | None:
    """The sample's own class when the weights name it, else None (the top-1 class)."""
    if model.classes is not None and request.class_name in model.classes:
        return model.classes.index(request.class_name)
    return None


def produce(requests: list[Request], model: Classifier) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = [None] * len(requests)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(requests):
        by_shape.setdefault(tuple(r.image.shape), []).append(i)
    for group in by_shape.values():
        images, targets = np.stack([requests[i].image for i in group]), [target(model, requests[i]) for i in group]
        maps = heatmaps(model, images, targets)
        for i, heat in zip(group, maps, strict=True):
            out[i] = heat >= THRESHOLD if heat.max() > 0 else None
    return out


PARAMS = {
    "method": "Grad-CAM (captum LayerGradCam) on the last spatial feature map",
    "layer": {"resnet8": LAYERS["resnet8"], "torchvision": LAYERS["resnet"], "timm (bit-s-r50x1 too)": TIMM_LAYER},
    "target": "the sample's class when the checkpoint's classes name it, else the model's top-1 class",
    "normalisation": f"train fit checkpoints and BiT .npz: mean = std = 0.5 on [0, 1]; torchvision ResNets: "
    f"ImageNet mean {list(IMAGENET_MEAN)}, std {list(IMAGENET_STD)}",
    "input": "the stored image at its own size (a model of fixed input size: resized to it, bilinear)",
    "heatmap": "bilinear upsampling to the image, ReLU, divided by the image's maximum (all zero: no mask)",
    "threshold": THRESHOLD,
}
register(
    MaskSource(
        "cam",
        "a classifier's Grad-CAM heatmap, thresholded (labels only; --mask-weights: a classifier)",
        produce,
        needs_box=False,
        needs_weights=True,
        batched=True,
        load=load,
        check=check,
        params=PARAMS,
        weights_help=WEIGHTS_HELP,
    )
)
