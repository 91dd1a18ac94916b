"""The options of one build (:class:`BuildConfig`), checked before any work and recorded in the manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augment import infill
from augment.datasets.files import ON_ERROR
from augment.zoo.devices import DEVICES


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
    # Model infills' weights, one field per ModelInfill.option: None = the method's default (cagan: the only file in
    # cagan_weights/).
    cagan_weights: str | None = None
    device: str = "auto"  # where model infills run: auto | cpu | cuda
    batch_size: int = 16  # images per model call (model infills and model mask sources)
    masks_from: str = "annotation"  # where object masks come from (augment.mask_sources)
    mask_weights: str | None = None  # --masks-from sam / cam: the model's local weight file
    shifted_tests: bool = False  # also write the Backgrounds Challenge variants of the test splits (shifted_tests)

    def model_methods(self) -> list[str]:
        return [n for n in self.infill if infill.INFILLS[n].needs_model]

    def splits(self, dataset):  # noqa: ANN001, ANN201  (augment.shifted_tests.ShiftedPlans)
        """Every split the build writes: the dataset's own and, with ``shifted_tests``, the generated variants."""
        from augment.shifted_tests import plan_splits

        return plan_splits(dataset, self.shifted_tests, self.mask_source())

    def needs_pool(self) -> bool:
        """Whether a requested method (``shuffle``) fills from the split's value pool."""
        return any(infill.INFILLS[n].needs_pool for n in (*self.infill, *self.factual))

    def validate(self) -> None:
        """Refuse a bad option with a ValueError naming its flag, before any work."""
        for name in self.infill:
            infill.get_infill(name, infill.CF)
        for name in self.factual:
            infill.get_infill(name, infill.F)
        for flag, names in (("--infill", self.infill), ("--factual", self.factual)):
            dup = [n for n, c in Counter(names).items() if c > 1]
            if dup:
                raise ValueError(f"{flag} {dup[0]!r} given twice; each method is stored once (use --copies for more)")
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
        if self.device not in DEVICES:
            raise ValueError(f"--device: got {self.device!r}, expected one of {', '.join(DEVICES)}")
        if self.device.startswith("cuda"):  # refused even where no model runs: the build would record it
            from augment.zoo.devices import resolve_device

            resolve_device(self.device)
        if self.model_methods():
            self.check_model_options()
        self.check_mask_source()

    def mask_source(self):  # noqa: ANN201  (augment.mask_sources.MaskSource, imported when used)
        from augment.mask_sources import get_source

        return get_source(self.masks_from)

    def check_mask_source(self) -> None:
        """A known --masks-from, with the weight file a model source needs, loadable safely; before any work."""
        from augment.mask_sources import check_weights

        source = self.mask_source()
        if source.batched:
            from augment.zoo.devices import resolve_device

            resolve_device(self.device)  # asking for CUDA without one fails here, before any work
        check_weights(self.masks_from, self.mask_weights)

    def check_model_options(self) -> None:
        """Resolve the default weights and check the device and each model's weights file, before any work."""
        from augment.zoo.devices import resolve_device

        for name in self.model_methods():
            model = infill.INFILLS[name].model
            if getattr(self, model.option, None) is None:
                setattr(self, model.option, str(model.default_weights()))
        resolve_device(self.device)  # asking for CUDA without one fails here, before any work
        for name in self.model_methods():
            model = infill.INFILLS[name].model
            model.check(self.model_weights(name))

    def model_weights(self, name: str) -> Path:
        """The weights file of model method ``name``, from the option its ``ModelInfill`` declares."""
        return Path(getattr(self, infill.INFILLS[name].model.option))
