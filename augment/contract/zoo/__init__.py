"""The classifier zoo: the architectures ``train fit`` builds, fine-tunes and writes checkpoints of, and whose
checkpoints augment's ``--masks-from cam`` loads: the second file both stages share, after the build. Here the names
and normalisations, which need no torch; the models in ``models``, their weight files in ``weights``; where models
run (``--device``, both stages) in ``devices``. Part of the contract, it imports nothing else of the project
(tests/test_layout.py checks it), so that ``train`` and ``augment`` both build the same classifier without
``augment`` importing ``train``.

``--arch`` is one of the named architectures below or any model name of timm's zoo (``timm.list_models()``, e.g.
``convnext_tiny``, ``vit_small_patch16_224``, ``efficientnet_b0``, ``resnet50.a1_in1k``).
"""

from __future__ import annotations

import json
from pathlib import Path

# The named architectures: torchvision's ResNets, the paper's BiT-S-R50x1 (timm's resnetv2_50x1_bit with upstream
# BiT's standardisation epsilon) and a CIFAR-style ResNet-8 for small images.
ARCHS = ("resnet18", "resnet50", "bit-s-r50x1", "resnet8")
# What a model does to its inputs, which the trainer hands it on the pixel scale [-1, 1] (augment.contract.zoo.models,
# InputNormalisation): mean and std per RGB channel on the [0, 1] scale. "half" (BiT's convention, mean = std = 0.5)
# is [-1, 1] itself; torchvision's ImageNet weights expect ImageNet's mean and std. Any other pair is written
# "m,m,m/s,s,s" (normalisation_name), as a timm model's pretrained configuration may give it.
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Each named architecture's: the normalisation of the weights it is loaded from (resnet8 only trains from scratch).
ARCH_NORMALISATION = {"resnet18": "imagenet", "resnet50": "imagenet", "bit-s-r50x1": "half", "resnet8": "half"}
NORMALISATION_FORM = "a name (half, imagenet) or mean/std per RGB channel on [0, 1], as 0.5,0.5,0.5/0.5,0.5,0.5"


def normalisation_values(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) of a normalisation: a name of ``NORMALISATIONS`` or ``"m,m,m/s,s,s"``; ValueError otherwise."""
    if name in NORMALISATIONS:
        return NORMALISATIONS[name]
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in str(name).split("/"))
    except ValueError:
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"got {name!r}, expected {NORMALISATION_FORM}")
    return mean, std


def normalisation_name(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """The name of (``mean``, ``std``): a name of ``NORMALISATIONS`` where it is one, else ``"m,m,m/s,s,s"``."""
    pair = (tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std))
    for name, values in NORMALISATIONS.items():
        if pair == values:
            return name
    return f"{','.join(f'{v:g}' for v in pair[0])}/{','.join(f'{v:g}' for v in pair[1])}"


def check_arch(arch: str) -> None:
    """Refuse an ``--arch`` that is neither a named architecture nor a timm model, naming both kinds."""
    if arch in ARCHS:
        return
    import difflib

    import timm  # deferred: the CLIs' options and checks load without it

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch.split(".")[0], [*ARCHS, *timm.list_models()], n=4)
        hint = f"; timm models with a similar name: {', '.join(close)}" if close else ""
        raise ValueError(
            f"--arch: got {arch!r}, expected one of {', '.join(ARCHS)} or a timm model name (timm.list_models()){hint}"
        )


def default_normalisation(arch: str | None) -> str | None:
    """The normalisation ``arch``'s pretrained weights expect: ``ARCH_NORMALISATION`` for a named one, the pretrained
    configuration's mean and std for a timm model (a weights folder's own ``config.json`` may say otherwise:
    ``folder_normalisation`` below); None for an unknown name."""
    if not isinstance(arch, str):  # a record without an arch (an old results.json)
        return None
    if arch in ARCHS:
        return ARCH_NORMALISATION[arch]
    from timm.models import get_pretrained_cfg, is_model

    if not is_model(arch):
        return None
    cfg = get_pretrained_cfg(arch)
    return normalisation_name(cfg.mean, cfg.std) if cfg is not None else "imagenet"


def weights_normalisation(arch: str | None, weights: str | Path | None) -> str | None:
    """The normalisation a model of ``arch`` with ``weights`` expects when none is asked for: the weights folder's
    own (``folder_normalisation``), else the architecture's pretrained one (``default_normalisation``)."""
    return folder_normalisation(weights) or default_normalisation(arch)


def folder_normalisation(path: str | Path | None) -> str | None:
    """The normalisation a model folder's ``config.json`` gives its weights (its ``pretrained_cfg`` mean and std, as
    timm's ``save_for_hf`` writes it), or None: not a folder, or no such entry."""
    config = Path(path) / "config.json" if path is not None else None
    if config is None or not config.is_file():
        return None
    try:
        cfg = json.loads(config.read_text()).get("pretrained_cfg") or {}
        return normalisation_name(cfg["mean"], cfg["std"]) if "mean" in cfg and "std" in cfg else None
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{config}: not a model folder's config.json ({err})") from err
