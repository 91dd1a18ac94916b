"""The classifier zoo: the architectures ``train fit`` builds and fine-tunes, and whose checkpoints augment's
``--masks-from cam`` loads (``augment.zoo.models``). Here the names and normalisations, which need no torch; the
models in ``augment.zoo.models``; where models run (``--device``, both stages) in ``augment.zoo.devices``. None
imports anything else of the project (tests/test_layout.py checks it), so that ``train`` and ``augment`` may both
use the zoo without ``augment`` importing ``train``.
"""

from __future__ import annotations

ARCHS = ("resnet18", "resnet50", "bit-s-r50x1", "resnet8")
# What a model does to its inputs, which the trainer hands it on the pixel scale [-1, 1] (augment.zoo.models,
# InputNormalisation): mean and std per RGB channel on the [0, 1] scale. "half" (BiT's convention, mean = std = 0.5)
# is [-1, 1] itself; torchvision's ImageNet weights expect ImageNet's mean and std.
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Each architecture's: the normalisation of the weights it is loaded from (resnet8 only ever trains from scratch).
ARCH_NORMALISATION = {"resnet18": "imagenet", "resnet50": "imagenet", "bit-s-r50x1": "half", "resnet8": "half"}
