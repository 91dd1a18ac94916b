"""What a build's options ask for, read through the registries: its model methods and their weights, its mask
source, the splits it writes, and the check of every option before any work.

``BuildConfig`` (``augment.config``) only holds the values; this module knows what they mean.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from augment import infill, mask_sources
from augment.config import ANY, BANK_FROM_DATASET, SAME_CLASS_LOCATION, BuildConfig
from augment.contract.zoo.devices import DEVICES, resolve_device
from augment.mask_sources import MaskSource
from augment.shifted_tests import ShiftedPlans, plan_splits

if TYPE_CHECKING:
    from augment.datasets import Dataset


def check(config: BuildConfig) -> None:
    """Refuse a bad option with a ValueError naming its flag, before any work; fills in the default weights of the
    model methods asked for."""
    for name in config.infill:
        infill.get_infill(name, infill.CF)
    for name in config.factual:
        infill.get_infill(name, infill.F)
    for flag, names in (("--infill", config.infill), ("--factual", config.factual)):
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise ValueError(f"{flag} {dup[0]!r} given twice; each method is stored once (use --copies for more)")
    config.check_values()
    if config.device not in DEVICES:
        raise ValueError(f"--device: got {config.device!r}, expected one of {', '.join(DEVICES)}")
    if config.device.startswith("cuda"):  # refused even where no model runs: the build would record it
        resolve_device(config.device)
    check_weights_given(config)
    if model_methods(config):
        check_model_options(config)
    check_mask_source(config)
    check_backgrounds(config)


def model_methods(config: BuildConfig) -> list[str]:
    """The CF methods that run a model (batched, on ``--device``)."""
    return [n for n in config.infill if infill.INFILLS[n].needs_model]


def model_weights(config: BuildConfig, name: str) -> Path:
    """The weights file of model method ``name`` (resolved by :func:`check`)."""
    return Path(config.weights[name])


def needs_pool(config: BuildConfig) -> bool:
    """Whether a requested method (``shuffle``) fills from the split's value pool."""
    return any(infill.INFILLS[n].needs_pool for n in (*config.infill, *config.factual))


def mask_source(config: BuildConfig) -> MaskSource:
    return mask_sources.get_source(config.masks_from)


def splits(config: BuildConfig, dataset: Dataset) -> ShiftedPlans:
    """Every split the build writes: the dataset's own and, with ``shifted_tests``, the generated variants."""
    return plan_splits(dataset, config.shifted_tests, mask_source(config))


def check_mask_source(config: BuildConfig) -> None:
    """A known --masks-from, with the weight file a model source needs, loadable safely; before any work."""
    if mask_source(config).batched:
        resolve_device(config.device)  # asking for CUDA without one fails here, before any work
    mask_sources.check_weights(config.masks_from, config.mask_weights)


def check_weights_given(config: BuildConfig) -> None:
    """A weights file goes with a model method. (One for a method the build does not ask for is recorded and left
    unused, as the recorded commands of earlier versions hold it.)"""
    for name in config.weights:
        if name not in infill.INFILLS or not infill.INFILLS[name].needs_model:
            models = ", ".join(infill.weights_flag(n) for n, m in infill.INFILLS.items() if m.needs_model)
            raise ValueError(f"{infill.weights_flag(name)}: {name!r} is not a model method; weights options: {models}")


def check_model_options(config: BuildConfig) -> None:
    """Resolve the default weights and check the device and each model's weights file, before any work."""
    given = {name: path for name, path in config.weights.items() if path is not None}
    for name in model_methods(config):
        if name not in given:
            given[name] = str(infill.INFILLS[name].model.default_weights())
    config.weights = {name: given[name] for name in infill.INFILLS if name in given}  # registry order, as the CLI
    resolve_device(config.device)  # asking for CUDA without one fails here, before any work
    for name in model_methods(config):
        infill.INFILLS[name].model.check(model_weights(config, name))


def needs_backgrounds(config: BuildConfig) -> bool:
    """Whether a requested method (``bank``) pastes a background drawn from ``--backgrounds``."""
    return any(infill.INFILLS[n].needs_background for n in config.factual)


def check_backgrounds(config: BuildConfig) -> None:
    """``--backgrounds`` and ``--background-rule`` go with ``--factual bank`` and with each other, before any work;
    what only the dataset can tell (its empty frames, its locations) is ``augment.backgrounds.open_banks``'."""
    bank = ", ".join(n for n in config.factual if infill.INFILLS[n].needs_background) or "bank"
    if not needs_backgrounds(config):
        if config.backgrounds is not None or config.background_rule != ANY:
            flag = "--backgrounds" if config.backgrounds is not None else "--background-rule"
            raise ValueError(f"{flag} is for --factual bank, which this build does not ask for; add --factual bank")
        return
    if config.backgrounds is None:
        raise ValueError(
            f"--factual {bank} needs --backgrounds: a folder of background photos, or {BANK_FROM_DATASET} for the "
            "dataset's own empty frames (cct)"
        )
    if config.backgrounds != BANK_FROM_DATASET and not Path(config.backgrounds).is_dir():
        what = "is a file" if Path(config.backgrounds).exists() else "no such folder"
        raise ValueError(
            f"--backgrounds {config.backgrounds}: {what}; pass a folder of background photos, or "
            f"{BANK_FROM_DATASET} for the dataset's own empty frames"
        )
    if config.background_rule == SAME_CLASS_LOCATION and config.backgrounds != BANK_FROM_DATASET:
        raise ValueError(
            "--background-rule same-class-location draws empty frames by camera location, which a folder of photos "
            f"has none of; pass --backgrounds {BANK_FROM_DATASET} (cct), or --background-rule any"
        )
