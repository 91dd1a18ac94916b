"""The options of one build (:class:`BuildConfig`): their one definition and default, recorded in the manifest.

A leaf: it imports nothing else of the project, so every stage and the CLI can read it. What the options mean
through the registries (which methods need a model, which mask source, which splits) and the checks against them
live in ``augment.options``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ON_ERROR = ("fail", "skip")  # --on-error: a bad source input stops the build, or is skipped and recorded
# --background-rule: how --factual bank draws a background (augment.backgrounds): uniformly from the bank, or an empty
# frame of another training location where the object's class occurs (Gao et al., ICML 2023, "Copy-Paste, Same Y")
ANY, SAME_CLASS_LOCATION = "any", "same-class-location"
BACKGROUND_RULES = (ANY, SAME_CLASS_LOCATION)
BANK_FROM_DATASET = "dataset"  # --backgrounds dataset: the dataset's own object-free images (CCT's empty frames)


@dataclass
class BuildConfig:
    """The resolved options of one build; recorded in the manifest."""

    dataset: str = "synthetic"
    infill: list[str] = field(default_factory=list)  # CF methods
    factual: list[str] = field(default_factory=list)  # F methods
    copies: int = 1  # draws stored per stochastic method
    seed: int = 0
    image_size: int | None = None  # None: the dataset's default
    shard_size: int = 1000  # samples per shard
    on_error: str = "fail"  # bad source inputs: "fail" stops the build, "skip" records them in rejects.jsonl
    dataset_options: dict[str, Any] = field(default_factory=dict)  # adapter options (--size, --bias, ...)
    # Model infills' weights files by method (--cagan-weights, --lama-weights, ...); a method absent here uses its
    # default (cagan: the only file in cagan_weights/; lama and migan have none: their flag is required with them).
    weights: dict[str, str] = field(default_factory=dict)
    device: str = "auto"  # where model infills run: auto | cpu | cuda
    batch_size: int = 16  # images per model call (model infills and model mask sources)
    masks_from: str = "annotation"  # where object masks come from (augment.mask_sources)
    mask_weights: str | None = None  # --masks-from sam / cam: the model's local weight file
    shifted_tests: bool = False  # also write the Backgrounds Challenge variants of the test splits (shifted_tests)
    backgrounds: str | None = None  # --factual bank: a folder of background photos, or "dataset" (BANK_FROM_DATASET)
    background_rule: str = ANY  # --factual bank: how a background is drawn (BACKGROUND_RULES)

    def check_values(self) -> None:
        """Refuse a value out of its range with a ValueError naming its flag; the registries' checks (methods,
        mask source, device, weights) are ``augment.options.check``'s."""
        if self.copies < 1:
            raise ValueError(f"--copies: got {self.copies}, expected at least 1")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"--on-error: got {self.on_error!r}, expected one of {', '.join(ON_ERROR)}")
        if self.seed < 0:
            raise ValueError(f"--seed: got {self.seed}, expected a non-negative integer")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size: got {self.shard_size}, expected at least 1 sample per shard")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size: got {self.batch_size}, expected at least 1")
        if self.background_rule not in BACKGROUND_RULES:
            raise ValueError(
                f"--background-rule: got {self.background_rule!r}, expected one of {', '.join(BACKGROUND_RULES)}"
            )
