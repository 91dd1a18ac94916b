"""The trainer's configuration: one flat, typed dataclass, presets from the paper (SPEC.md section 3), and checks.

Explicit flags override a preset; unknown keys are errors. The resolved config is written to the run folder
and into every checkpoint, and is never reloaded implicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from train.losses import CF_LOSSES

OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("step", "plateau", "cosine", "constant")
SELECT = ("accuracy", "auc")

PRESETS: dict[str, dict[str, Any]] = {
    # paper's code, per dataset: all layers fine-tuned, gradients clipped at 1.0
    "in9": dict(epochs=25, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4,
                schedule="step", milestones=[6, 12, 18], select="accuracy", val_split="val"),
    "waterbirds": dict(epochs=40, batch_size=32, optimizer="sgd", lr=8e-4, momentum=0.9, weight_decay=1e-4,
                       schedule="plateau", select="accuracy", val_split="val"),
    "cct": dict(epochs=50, batch_size=64, optimizer="rmsprop", lr=3e-3, momentum=0.9, weight_decay=0.0,
                schedule="step", milestones=[15, 30, 45], zero_head=True, select="auc", val_split="cis_val"),
    # the embedded synthetic data on a CPU in minutes: a small ResNet from scratch
    "demo": dict(epochs=10, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                 schedule="cosine", select="accuracy", val_split="val", arch="resnet18"),
}  # fmt: skip


@dataclass
class Config:
    shards: str
    out: str
    preset: str = "demo"
    arch: str = "resnet18"
    weights: str | None = None
    zero_head: bool = False
    cf: list[str] = field(default_factory=list)  # CF methods read from the shards
    cf_loss: str = "logp"
    cf_weight: float = 1.0
    f: list[str] = field(default_factory=list)  # F methods read from the shards
    fgsm: float = 0.0  # eps as a fraction of the pixel range (0.3 = the paper's 0.6 on [-1, 1]); 0 = off
    fgsm_steps: int = 1  # > 1: PGD
    sal: float = 0.0  # lambda of the GradMask penalty; 0 = off
    mixup: float = 0.0  # Beta(a, a); 0 = off (baseline, exclusive with CF/F/Sal)
    label_smoothing: float = 0.0  # baseline, exclusive with CF/F/Sal
    epochs: int = 8
    batch_size: int = 64  # per process: under torchrun a step sees batch_size x nproc originals
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    select: str = "accuracy"  # model selection metric on val_split
    val_split: str = "val"
    crop: int | None = None  # default: 7/8 of the stored image size (224 of 256)
    clip: float = 1.0
    early_stop: int = 0  # patience in epochs; 0 = off
    seed: int = 0
    train_fraction: float = 1.0  # train on this share of the train split (a fixed subset by key): Fig. 5's curve
    workers: int = 2
    device: str = "auto"
    amp: bool = False  # mixed precision on GPU (bf16 where supported); Sal runs in fp32 unless this is set
    saliency: str = "gradient"  # gradient | deepliftshap (captum)
    max_saliency_images: int = 256  # per test split, for the saliency AUPR

    @classmethod
    def resolve(cls, preset: str, **overrides: Any) -> Config:
        """Preset values, then every override that is not None; unknown keys are errors."""
        if preset not in PRESETS:
            raise ValueError(f"--preset: got {preset!r}, expected one of {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.cf_loss not in CF_LOSSES:
            raise ValueError(f"--cf-loss: got {self.cf_loss!r}, expected one of {', '.join(CF_LOSSES)}")
        for name, value, valid in (("--optimizer", self.optimizer, OPTIMIZERS), ("--schedule", self.schedule,
                                   SCHEDULES), ("--select", self.select, SELECT)):  # fmt: skip
            if value not in valid:
                raise ValueError(f"{name}: got {value!r}, expected one of {', '.join(valid)}")
        if (self.mixup or self.label_smoothing) and (self.cf or self.f or self.sal or self.fgsm):
            raise ValueError("--mixup and --label-smoothing are baselines: use them without --cf, --f, --fgsm, --sal")
        if self.mixup and self.label_smoothing:
            raise ValueError("--mixup and --label-smoothing are separate baselines: pick one")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train-fraction: got {self.train_fraction}, expected a fraction in (0, 1]")
        if not 0 <= self.fgsm <= 1 or self.fgsm_steps < 1:
            raise ValueError(f"--fgsm: got {self.fgsm}, expected a fraction of the pixel range in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def method_name(self) -> str:
        """A row label for tables: Orig, CF(tile)+F(shuffle)+Sal(10), Mixup(0.2), ..."""
        parts = []
        if self.cf:
            parts.append(f"CF({','.join(self.cf)}{'' if self.cf_loss == 'logp' else ':' + self.cf_loss})")
        if self.f or self.fgsm:
            parts.append(f"F({','.join(self.f + ([f'fgsm{self.fgsm:g}'] if self.fgsm else []))})")
        if self.sal:
            parts.append(f"Sal({self.sal:g})")
        if self.mixup:
            parts.append(f"Mixup({self.mixup:g})")
        if self.label_smoothing:
            parts.append(f"LS({self.label_smoothing:g})")
        return "+".join(parts) or "Orig"
