"""The command line of a run: the `train fit` arguments that give back a resolved config (``fit_args``), and the
whole command as the reports print it (``command_of``)."""

from __future__ import annotations

import shlex
from typing import Any

from augment.contract.zoo import weights_normalisation
from train.config import Config, flag, preset_values, recorded


def command_of(config: dict[str, Any]) -> str:
    """The `train fit` command that reproduces a run, serialised from its resolved config (``fit_args``): every
    setting that differs from its preset's value, as a flag; keys that are no setting any more (a run of an older
    version) follow as a note."""
    args, notes = fit_args(config)
    return shlex.join(["train", "fit", *args]) + (f"  # not settings any more: {', '.join(notes)}" if notes else "")


def fit_args(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The `train fit` arguments that give back ``config`` (a Config as a dict): --shards, --preset, then every field
    whose value differs from the preset's (and always --epochs and --seed), then --out.

    Lists repeat their flag (``--cf tile --cf grey``), milestones are comma-separated, bools are ``--x``/``--no-x``.
    Also returns ``key=value`` notes for keys that are no config field (a run of an older version); a run of an
    older version that ran a fine-tuning preset without weights gets ``--from-scratch`` (``recorded``)."""
    config = recorded(config)
    preset = config.get("preset", "demo")
    base = Config(shards="", out="", preset=preset, **preset_values(preset)).to_dict()  # unchecked: no weights
    # what resolve() gives without the flag
    base["normalisation"] = weights_normalisation(config.get("arch"), config.get("weights"))
    args, notes = ["--shards", str(config.get("shards")), "--preset", preset], []
    for key, value in config.items():
        if key not in base:
            notes.append(f"{key}={value}")
            continue
        same = value == base[key] and key not in ("epochs", "seed")
        if key in ("shards", "out", "preset") or same or value is None:  # None: weights, crop (no preset sets them)
            continue
        if isinstance(value, bool):
            args.append(flag(key) if value else f"--no-{flag(key)[2:]}")
        elif key == "milestones":
            args += [flag(key), ",".join(str(m) for m in value)]
        elif isinstance(value, list):
            args += [a for v in value for a in (flag(key), str(v))]
        else:
            args += [flag(key), str(value)]
    return [*args, "--out", str(config.get("out"))], notes
