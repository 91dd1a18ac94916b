"""``cam``: a classifier's class-activation heatmap, thresholded, as the object mask of a dataset of labels only.

A dataset with neither boxes nor masks still says which class each image shows; a classifier of those classes
lights up where it sees that class. The mask is Grad-CAM (Selvaraju et al., 2017) on the network's last
convolutional stage (``LAYERS``), for the sample's own class when the weights name it (a ``train fit`` checkpoint
whose classes include the sample's), else for the model's top-1 class (ImageNet weights on a folder of other
classes): upsampled to the image (bilinear), ReLU, divided by the image's maximum, then ``heatmap >= THRESHOLD``. A
heatmap that is zero everywhere gives no mask, and every mask then passes the gate (2% to 80% of the image) or the
sample has no object.

Grad-CAM is captum's ``LayerGradCam``, a core dependency already (the trainer's attributions): the ``grad-cam``
package would add ``ttach`` and a second OpenCV distribution.

Weights (``--mask-weights``), read with ``torch.load(weights_only=True)``, safetensors or ``np.load`` without pickle,
so no code is ever unpickled:

- a ``train fit`` checkpoint (``best.pt``/``last.pt``: ``model``, ``config`` with ``arch``, ``classes``), built with
  ``augment.zoo.models.build_model`` with the normalisation it was trained with, and loaded strictly; inputs on the
  trainer's [-1, 1] scale, which that model maps to its weights' normalisation itself (``augment.zoo.models``);
- a torchvision ResNet state dict (``.pth``/``.pt``/``.safetensors``; ResNet-18/34/50/101/152, told apart by their
  keys and shapes, e.g. the ImageNet weights), with the ImageNet mean and std;
- the official BiT-S-R50x1 ``.npz``, read by ``augment.zoo.models``' own loader, inputs in [-1, 1] as BiT expects.

The image goes in at its stored size, a batch of requests (grouped by image size) in one forward and backward pass
on ``--device``. Nothing is drawn: the mask of an image depends on the weights and its pixels only.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augment.mask_sources import MaskSource, Request, register

THRESHOLD = 0.5  # of the image's heatmap maximum
# The last convolutional stage of each network, whose output Grad-CAM weighs by its gradient. BiT's blocks are
# pre-activation, so the stage's features are those after the head's GroupNorm and ReLU (what the classifier pools).
LAYERS = {"resnet8": "layers.2", "resnet": "layer4", "bit-s-r50x1": "head.relu"}
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
BIT_HEAD = "resnet/head/conv2d/kernel"

WEIGHTS_HELP = (
    "--masks-from cam takes a classifier: a `train fit` checkpoint (RUN/best.pt), a torchvision ResNet state dict "
    "(.pth/.pt/.safetensors, e.g. ImageNet weights saved with torch.save(model.state_dict(), path)) or the official "
    "BiT-S-R50x1.npz"
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

    # a `train fit` checkpoint holds weights only; the classifier it belongs to (resnet8, BiT, ...) is defined in
    # the zoo the trainer builds it from, so it is built there rather than copied here
    from augment.zoo import ARCHS
    from augment.zoo.models import build_model

    config, classes, state = obj.get("config"), obj.get("classes"), obj.get("model")
    arch = config.get("arch") if isinstance(config, dict) else None
    if arch not in ARCHS:
        raise _fail(
            path, f"a `train fit` checkpoint whose config names arch {arch!r}, expected one of {', '.join(ARCHS)}"
        )
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _fail(
            path,
            f"a `train fit` checkpoint whose 'classes' is {type(classes).__name__}, expected the "
            "list of class names `train fit` saves",
        )
    if not _is_state_dict(state):
        raise _fail(path, "a `train fit` checkpoint whose 'model' is not a state dict of tensors")
    # the model normalises its [-1, 1] inputs as it was trained to (checkpoints before it was recorded: none)
    normalisation = config.get("normalisation") or "half"
    with torch.random.fork_rng(devices=[]):  # the random initialisation, overwritten next, leaves the global RNG
        net = build_model(arch, len(classes), None, from_checkpoint=True, normalisation=normalisation)
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

    from augment.zoo.models import (
        build_model,  # BiT is defined, and its .npz read, in augment.zoo.models (see _train_fit)
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


def check(path: Path) -> None:
    """Refuse, before the build writes anything, a file ``load`` could not use."""
    read(path)


def load(weights: Path, device: str) -> Classifier:
    from augment.zoo.devices import resolve_device

    net, arch, classes, mean = read(weights)
    chosen = resolve_device(device)
    net.requires_grad_(False)  # this process's own copy: Grad-CAM needs the layer's gradient only
    net.eval().to(chosen)
    layer = net.get_submodule(LAYERS.get(arch, LAYERS["resnet"]))
    std = HALF if mean == HALF else IMAGENET_STD
    kind = f"train fit {arch}" if classes is not None else f"{'BiT' if arch == 'bit-s-r50x1' else 'torchvision'} {arch}"
    return Classifier(net, layer, classes, mean, std, chosen, kind)


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
    given = torch.tensor([-1 if t is None else t for t in targets], device=model.device)

    def score(inputs: torch.Tensor) -> torch.Tensor:  # each image's target logit, [N, 1]: one forward for both rules
        logits = model.net(inputs)
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
    "method": "Grad-CAM (captum LayerGradCam) on the last convolutional stage",
    "layer": {"resnet8": LAYERS["resnet8"], "torchvision": LAYERS["resnet"], "bit-s-r50x1": LAYERS["bit-s-r50x1"]},
    "target": "the sample's class when the checkpoint's classes name it, else the model's top-1 class",
    "normalisation": f"train fit checkpoints and BiT .npz: mean = std = 0.5 on [0, 1]; torchvision ResNets: "
    f"ImageNet mean {list(IMAGENET_MEAN)}, std {list(IMAGENET_STD)}",
    "input": "the stored image at its own size",
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
