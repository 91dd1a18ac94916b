"""Where a build's bytes came from, for the manifest header: the tool's commit and the model infills' weights."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import augment
from augment import infill, options
from augment.config import BuildConfig
from augment.contract.shards import sha256_file
from augment.contract.zoo.devices import resolve_device


def git_sha() -> str | None:
    """The source checkout's commit, when the tool runs from one."""
    try:
        root = Path(augment.__file__).resolve().parent.parent
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() or None if sha.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def model_provenance(config: BuildConfig) -> dict[str, Any]:
    """What each model infill ran with: weights file, its sha256 and metadata, device (bytes depend on all three)."""
    if not options.model_methods(config):
        return {}
    out: dict[str, Any] = {}
    for name in options.model_methods(config):
        weights = options.model_weights(config, name)
        out[name] = {
            "weights": str(weights),
            "sha256": sha256_file(weights),
            "metadata": infill.INFILLS[name].model.metadata(weights),
            "device": str(resolve_device(config.device)),
            "batch_size": config.batch_size,
        }
    return out
