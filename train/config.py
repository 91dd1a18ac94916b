"""The trainer's configuration: one flat, typed dataclass, presets from the paper (docs/METHOD.md, Presets), and checks.

Every field has exactly one default:

- the hyper-parameters in ``PRESET_KEYS`` (model, length, optimizer, schedule, selection, precision) come from the
  preset, and every preset names all of them;
- every other field (the method: ``cf``, ``f``, ``sal``, ...; the run: ``seed``, ``workers``, ...) has its default
  on the dataclass below.

``Config.resolve(preset, **overrides)`` is the one way a run's config is made: ``train fit`` passes its flags
(None = not given), ``train study`` a grid row's settings. Unknown keys, values of the wrong type and values out of
range are errors. The resolved config is written to the run folder and into every checkpoint, and is never
reloaded implicitly. Without a preset, a run takes the preset of the build's dataset (``preset_of_build``).

The paper's presets (``FINE_TUNING_PRESETS``) are fine-tuning recipes: a config of one of them needs ``weights``, or
``from_scratch`` to run the recipe from random weights on purpose; ``demo`` is the recipe from scratch.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from augment.contract.zoo import (  # the classifier zoo's choices, without torch
    check_arch,
    normalisation_values,
    weights_normalisation,
)
from train.losses import CF_LOSSES
from train.terms import BASELINES, METHODS, OPTIONAL, Term, on

OPTIMIZERS = ("sgd", "rmsprop")
CROP_SHARE = 7 / 8  # the default crop, as a share of the stored image size: 224 of 256
SCHEDULES = ("step", "plateau", "cosine")
SELECT = ("accuracy", "auc")
SALIENCY = ("gradient", "deepliftshap")
CHANNELS_LAST = ("auto", "on", "off")

# The hyper-parameters a preset sets, all of them in every preset (tests/train/test_config.py checks it).
PRESET_KEYS = (
    "arch",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "milestones",
    "zero_head",
    "clip",
    "select",
    "val_split",
    "early_stop",
    "amp",
)

# The demo: the embedded synthetic data (32 px) on a CPU in minutes, a CIFAR-style ResNet-8 from scratch (resnet18's
# stride-4 stem leaves 8 px of a 28 px crop, and costs 3-4x the time). Its model and length are set here and nowhere
# else (the dataclass defaults below are these values).
DEMO: dict[str, Any] = dict(
    arch="resnet8",
    epochs=16,
    batch_size=32,
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    milestones=[],
    zero_head=False,
    clip=1.0,
    select="accuracy",
    val_split="val",
    early_stop=0,
    amp=False,
)

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's code (Table 8), per dataset: BiT-S-R50x1 with all layers fine-tuned, gradients clipped at 1.0,
    # mixed precision (fp16, or bf16 where the GPU has it; amp only acts on CUDA, a CPU run stays fp32).
    # "Early stopping" there is model selection: the checkpoint of the best val epoch is the one evaluated (best.pt);
    # training runs all the epochs, since the paper gives no patience (early_stop = 0, off).
    # Waterbirds' plateau schedule has patience 1 (train.train.make_scheduler).
    "in9": dict(
        arch="bit-s-r50x1",
        epochs=25,
        batch_size=32,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="step",
        milestones=[6, 12, 18],
        zero_head=False,
        clip=1.0,
        select="accuracy",
        val_split="val",
        early_stop=0,
        amp=True,
    ),
    "waterbirds": dict(
        arch="bit-s-r50x1",
        epochs=40,
        batch_size=32,
        optimizer="sgd",
        lr=8e-4,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="plateau",
        milestones=[],
        zero_head=False,
        clip=1.0,
        select="accuracy",
        val_split="val",
        early_stop=0,
        amp=True,
    ),
    "cct": dict(
        arch="bit-s-r50x1",
        epochs=50,
        batch_size=64,
        optimizer="rmsprop",
        lr=3e-3,
        momentum=0.9,
        weight_decay=0.0,
        schedule="step",
        milestones=[15, 30, 45],
        zero_head=True,
        clip=1.0,
        select="auc",
        val_split="cis_val",
        early_stop=0,
        amp=True,
    ),
    "demo": DEMO,
}

# The presets that fine-tune pretrained weights (their lr, schedule and length assume them): a run of one of them
# needs --weights, or --from-scratch to run it from random weights on purpose (Config.check). demo trains from scratch.
FINE_TUNING_PRESETS = frozenset({"in9", "waterbirds", "cct"})

# The preset a run takes without one: the build's dataset's (manifest["dataset"]["name"]); any other dataset: demo.
DATASET_PRESETS = {"in9": "in9", "waterbirds": "waterbirds", "cct": "cct"}


def preset_of_build(manifest: dict[str, Any]) -> str:
    """The preset of the build's dataset: ``cct``, ``in9``, ``waterbirds``, else ``demo``."""
    return DATASET_PRESETS.get(manifest["dataset"]["name"], "demo")


@dataclass
class Config:
    shards: str
    out: str
    preset: str = "demo"
    arch: str = DEMO["arch"]
    weights: str | None = None  # a local file; None = from scratch (with a warning)
    from_scratch: bool = False  # a fine-tuning preset from random weights, on purpose (else it needs weights)
    zero_head: bool = DEMO["zero_head"]
    # the model's input normalisation (augment.contract.zoo.normalisation_values); None: its weights' (their folder's
    # config.json, else the arch's pretrained configuration), written in when the config is made, so that
    # config.json and every checkpoint record it
    normalisation: str | None = None
    cf: list[str] = field(default_factory=list)  # CF methods read from the shards
    # the CF objective: uniform-others at half weight, measured ahead of the paper's logp at 1 (docs/METHOD.md, "Which
    # method for which data"); the paper's is --cf-loss logp --cf-weight 1
    cf_loss: str = "uniform-others"
    cf_weight: float = 0.5
    f: list[str] = field(default_factory=list)  # F methods read from the shards
    fgsm: float = 0.0  # eps as a fraction of the pixel range (0.3 = the paper's 0.6 on [-1, 1]); 0 = off
    fgsm_steps: int = 1  # > 1: PGD
    sal: float = 0.0  # lambda of the GradMask penalty; 0 = off
    mixup: float = 0.0  # Beta(a, a); 0 = off (baseline, exclusive with CF/F/Sal)
    label_smoothing: float = 0.0  # baseline, exclusive with CF/F/Sal
    epochs: int = DEMO["epochs"]
    batch_size: int = DEMO["batch_size"]  # per process: under torchrun a step sees batch_size x nproc originals
    optimizer: str = DEMO["optimizer"]
    lr: float = DEMO["lr"]
    momentum: float = DEMO["momentum"]
    weight_decay: float = DEMO["weight_decay"]
    schedule: str = DEMO["schedule"]
    milestones: list[int] = field(default_factory=lambda: list(DEMO["milestones"]))  # schedule "step": lr x 0.1
    select: str = DEMO["select"]  # model selection metric on val_split
    val_split: str = DEMO["val_split"]
    crop: int | None = None  # default: CROP_SHARE of the stored image size (see crop_size)
    clip: float = DEMO["clip"]  # gradient-norm clip
    early_stop: int = DEMO["early_stop"]  # patience in epochs; 0 = off (the best val epoch is still selected)
    seed: int = 0
    train_fraction: float = 1.0  # train on this share of the train split (a fixed subset by key): Fig. 5's curve
    workers: int = 2
    device: str = "auto"
    amp: bool = DEMO["amp"]  # mixed precision on CUDA (bf16 where supported, else fp16); a CPU run stays fp32
    # the model's memory layout: channels_last (NHWC) convolutions pay on CUDA (tensor cores); auto: on for CUDA, off
    # on the CPU, where every recorded result ran without it (train.train.uses_channels_last)
    channels_last: str = "auto"
    # torch.compile the model of the training step (its one joint forward and backward); FGSM's attack, Sal's double
    # backward and evaluation run the plain module, and checkpoints hold the plain module's state dict
    compile: bool = False
    saliency: str = "gradient"  # gradient | deepliftshap (captum)
    max_saliency_images: int = 256  # per test split, for the saliency AUPR
    max_bad_samples: int = 0  # unreadable samples of the build a run skips (listed in results.json); more stop it

    @classmethod
    def resolve(cls, preset: str, *, chosen: str = "", **overrides: Any) -> Config:
        """The preset's values, then every override that is not None.

        Unknown keys, values of the wrong type (a float field takes an int) and values out of range are errors;
        their messages name the `train fit` flag, which is also the grid key with ``_`` for ``-``. ``chosen``: why
        the caller chose ``preset`` when the user named none (the refusal of a fine-tuning preset without weights
        says it).
        """
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(overrides) - set(hints) | set(overrides) & {"preset"})
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {', '.join(sorted(set(hints) - {'preset'}))}")
        values = preset_values(preset)
        for key, value in overrides.items():
            if value is None:
                continue
            if not conforms(value, hints[key]):
                raise ValueError(
                    f"{flag(key)}: got {value!r} ({type(value).__name__}), expected {type_name(hints[key])}"
                )
            values[key] = float(value) if hints[key] is float else list(value) if isinstance(value, list) else value
        config = cls(**values, preset=preset)
        config.check(chosen)
        return config

    def __post_init__(self) -> None:
        if self.normalisation is None:  # the weights' own; an unknown arch is refused by check()
            self.normalisation = weights_normalisation(self.arch, self.weights)

    def check(self, chosen: str = "") -> None:
        """Choices, ranges and exclusive options, and weights for a fine-tuning preset; raises ValueError naming the
        flag. ``chosen``: why the preset was chosen, when the user named none (``resolve``).

        Only ``resolve`` checks: a config read back from a run (``train eval``'s checkpoint) is taken as it was.
        """
        for key, valid in (
            ("preset", PRESETS),
            ("cf_loss", CF_LOSSES),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("select", SELECT),
            ("saliency", SALIENCY),
            ("channels_last", CHANNELS_LAST),
        ):
            if getattr(self, key) not in valid:
                raise ValueError(f"{flag(key)}: got {getattr(self, key)!r}, expected one of {', '.join(valid)}")
        check_arch(self.arch)
        try:
            normalisation_values(self.normalisation)
        except ValueError as e:
            raise ValueError(f"--normalisation: {e}") from None
        for key, (low, high) in RANGES.items():
            value = getattr(self, key)
            if value is not None and (value < low or (high is not None and value > high)):
                expected = f"a value in [{low}, {high}]" if high is not None else f"at least {low}"
                raise ValueError(f"{flag(key)}: got {value}, expected {expected}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train-fraction: got {self.train_fraction}, expected a fraction in (0, 1]")
        if not self.clip > 0:
            raise ValueError(f"--clip: got {self.clip}, expected a gradient norm > 0 (inf: no clipping)")
        if any(m < 1 for m in self.milestones):
            raise ValueError(f"--milestones: got {self.milestones}, expected epochs >= 1")
        baselines = " and ".join(flag(t.field) for t in BASELINES)
        if any(on(t, self) for t in BASELINES) and any(on(t, self) for t in METHODS):
            raise ValueError(f"{baselines} are baselines: use them without {', '.join(flag(t.field) for t in METHODS)}")
        if sum(on(t, self) for t in BASELINES) > 1:
            raise ValueError(f"{baselines} are separate baselines: pick one")
        if self.from_scratch and self.weights is not None:
            raise ValueError(
                "--from-scratch and --weights contradict each other: --weights FILE fine-tunes FILE, "
                "--from-scratch starts from random weights; pass one"
            )
        if self.preset in FINE_TUNING_PRESETS and self.weights is None and not self.from_scratch:
            raise ValueError(without_weights(self.preset, chosen))

    def check_build(self, manifest: dict[str, Any]) -> None:
        """That the build has what this config reads: its val split, its CF/F images in the train split, and images
        at least as large as ``--crop`` (a larger crop would pad every image to it)."""
        from train.data import Fields, check_fields

        size = manifest.get("image_size")  # an int in every manifest read (augment.contract.schema.check_structure)
        if self.crop is not None and isinstance(size, int) and self.crop > size:
            raise ValueError(
                f"--crop {self.crop}: larger than the build's images ({size} px, its image_size), so "
                f"every image would be padded to it; pass --crop {size} or less"
            )

        if self.val_split not in manifest["splits"] or self.val_split == "train":
            splits = ", ".join(s for s in manifest["splits"] if s != "train")
            whose = f"the preset's ({self.preset})" if self.val_split == PRESETS[self.preset]["val_split"] else "the"
            own = preset_of_build(manifest)
            hint = f" or --preset {own}, the preset of its dataset" if own != self.preset else ""
            raise ValueError(
                f"{whose} val_split {self.val_split!r} is not a split of this build (splits: {splits}); "
                f"pass --val-split SPLIT{hint}"
            )
        check_fields(manifest, Fields(cf=self.cf, f=self.f))
        from augment.contract.schema import POOLED_SHUFFLE_SINCE

        version = manifest.get("format_version")
        if "shuffle" in (*self.cf, *self.f) and isinstance(version, int) and version < POOLED_SHUFFLE_SINCE:
            raise ValueError(
                f"this build is format version {version}, whose shuffle images are the per-image "
                "variant (now called shuffle-image), not the pooled shuffle; rebuild it with this version "
                "of augment (--infill/--factual shuffle, or shuffle-image for the per-image variant)"
            )

    def crop_size(self, image_size: int) -> int:
        """The crop of a build of ``image_size`` images: ``--crop``, else 7/8 of it (the paper's 224 of 256)."""
        return self.crop or default_crop(image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def method_name(self) -> str:
        """A row label for tables: Orig, CF(tile)+F(shuffle)+Sal(10), Mixup(0.2), ...: each term of
        ``train.terms.TERMS`` that is on, by its name; a term ``within`` another is one of its methods
        (``F(shuffle,fgsm0.3)``)."""
        parts = []
        for term in (t for t in OPTIONAL if not t.within):
            setting = getattr(self, term.field)
            if not isinstance(setting, list):  # a number: Sal(10)
                parts += [f"{term.name}({setting:g})"] if setting else []
                continue
            inner = [t for t in OPTIONAL if t.within == term.field and on(t, self)]
            methods = setting + [f"{t.field}{getattr(self, t.field):g}" for t in inner]
            if methods:
                parts.append(f"{term.name}({','.join(methods)}{self.qualifier(term)})")
        return "+".join(parts) or "Orig"

    def qualifier(self, term: Term) -> str:
        """``term``'s loss kind and weight where they are not the defaults, as in ``CF(tile:logp×1)``; "" when both
        are."""
        changed = [
            (key, text)
            for key, text in ((term.loss, "{}"), (term.weight, "×{:g}"))
            if key and getattr(self, key) != getattr(Config, key)
        ]
        return ":" + "".join(text.format(getattr(self, key)) for key, text in changed) if changed else ""


def preset_values(preset: str) -> dict[str, Any]:
    """A copy of the values ``preset`` sets (``PRESET_KEYS``); an unknown preset is an error that lists them."""
    if preset not in PRESETS:
        raise ValueError(f"--preset: got {preset!r}, expected one of {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[preset].items()}


def without_weights(preset: str, chosen: str = "") -> str:
    """The one-line refusal of fine-tuning preset ``preset`` without weights; ``chosen`` says why it was chosen when
    the user named no preset."""
    what = f"{chosen}, which is" if chosen else f"--preset {preset} is"
    return (
        f"{what} a fine-tuning recipe (the paper's hyper-parameters for pretrained weights) and no --weights "
        "were given: pass --weights FILE, or train from scratch with --preset demo (any --arch) or with "
        "--from-scratch (this recipe, from random weights)"
    )


def recorded(config: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded config (config.json, a checkpoint's ``config``) with the keys of this version that it lacks:
    those that mean something else than their default (a run from before ``from_scratch`` existed that had a
    fine-tuning preset and no weights ran it from scratch; a run from before ``normalisation`` fed its model
    [-1, 1] (``half``); a config without the CF objective is from before uniform-others at 0.5 was the default, when
    it was the paper's logp at 1), and the speed settings ``channels_last`` and ``compile`` at their defaults, which
    are how a run from before them ran (a study compares configs to reuse its runs)."""
    config = dict(config)
    if "from_scratch" not in config:
        config["from_scratch"] = config.get("preset") in FINE_TUNING_PRESETS and config.get("weights") is None
    # before each model had its weights' normalisation, every model was fed [-1, 1]
    config.setdefault("normalisation", "half")
    config.setdefault("cf_loss", "logp")
    config.setdefault("cf_weight", 1.0)
    for key in ("channels_last", "compile"):
        config.setdefault(key, getattr(Config, key))
    return config


# Closed ranges [low, high] (high None: unbounded) of the numeric fields; train_fraction and clip are checked apart.
RANGES: dict[str, tuple[float, float | None]] = {
    "cf_weight": (0, None),
    "fgsm": (0, 1),
    "fgsm_steps": (1, None),
    "sal": (0, None),
    "mixup": (0, None),
    "label_smoothing": (0, 1),
    "epochs": (1, None),
    "batch_size": (1, None),
    "lr": (0, None),
    "momentum": (0, None),
    "weight_decay": (0, None),
    "crop": (8, None),
    "early_stop": (0, None),
    "seed": (0, None),
    "workers": (0, None),
    "max_saliency_images": (0, None),
    "max_bad_samples": (0, None),
}


def default_crop(image_size: int) -> int:
    """The crop when --crop is not given: 7/8 of the stored image size (the paper's 224 of 256)."""
    return round(image_size * CROP_SHARE)


def flag(key: str) -> str:
    """The `train fit` flag of a config field (the grid key is the field name)."""
    return "--" + key.replace("_", "-")


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` (int, float, str, bool, list[...], X | None); an int is a float."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(conforms(v, typing.get_args(hint)[0]) for v in value)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else hint.__name__
