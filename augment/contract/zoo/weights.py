"""Weight files: which kinds the zoo reads, how, and how a state dict is fitted to a model (the head may differ).

Only local files, nothing downloaded, and no file can run code: ``.pth``/``.pt``/``.bin`` through
``torch.load(weights_only=True)``, ``.safetensors``, BiT's official ``.npz`` through ``np.load(allow_pickle=False)``,
and a folder as timm or the Hugging Face hub save a model (``config.json`` and ``model.safetensors``, or
``pytorch_model.bin``), whose ``config.json`` may also give the normalisation the weights expect.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("augment.contract.zoo")  # one logger for the zoo; the running command prints it

WEIGHT_FORMATS = {
    ".pth": "a state dict saved with torch.save(model.state_dict(), path) (also under 'state_dict' or 'model')",
    ".pt": "same as .pth",
    ".bin": "same as .pth (the hub's pytorch_model.bin)",
    ".safetensors": "a state dict saved with safetensors.torch.save_file",
    ".npz": "the official BiT checkpoint, e.g. BiT-S-R50x1.npz (bit-s-r50x1 only)",
    "folder": "a model folder as timm.models.save_for_hf or the Hugging Face hub write it: config.json and "
    "model.safetensors (or pytorch_model.bin)",
}
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")


def formats_help() -> str:
    return "; ".join(f"{suffix}: {what}" for suffix, what in WEIGHT_FORMATS.items())


def read_weights(path: Path, model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (a file of ``WEIGHT_FORMATS`` or a model folder), in ``model``'s names."""
    if path.is_dir():
        files = [path / name for name in FOLDER_FILES if (path / name).is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: a model folder holds one of {', '.join(FOLDER_FILES)}; found none")
        path = files[0]
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_FORMATS:
        raise ValueError(f"{path}: unknown weight format {path.suffix!r}; expected one of: {formats_help()}")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; expected one of: {formats_help()}")
    if suffix == ".npz":
        if arch != "bit-s-r50x1":
            raise ValueError(f"{path}: .npz (official BiT format) fits only bit-s-r50x1, not {arch}")
        return read_bit_npz(path)
    if suffix == ".safetensors":
        from safetensors import SafetensorError  # only needed for this format
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except SafetensorError as err:
            raise ValueError(f"{path}: not a readable .safetensors file ({err})") from err
    else:
        state = read_torch(path)
    return upgrade_state(arch, strip_prefix(state))


def read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``torch.save``; the file may also be a dict holding it under "state_dict" or "model"."""
    try:
        # weights_only: tensors and plain containers only. Unpickling anything else could run code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False; keep only its reason, e.g. "Unsupported global: ...".
        reason = str(err).partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0]
        reason = " ".join(reason.split()) or str(err).splitlines()[0]
        raise ValueError(
            f"{path}: refused to load: torch.load(weights_only=True) reads only tensors and plain containers, and "
            f"this file holds something else ({reason}). Save only the weights: torch.save(model.state_dict(), path)"
        ) from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable torch.save file ({type(err).__name__}: {err})") from err
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (str -> tensor), got {type(obj).__name__}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path}: expected a state dict (str -> tensor), itself or under 'state_dict' or 'model'; "
            f"these entries are not tensors: {short(not_tensors)}"
        )
    return obj


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without the ``module.`` that a DDP-wrapped model's ``state_dict()`` puts before every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


# ---- BiT: the official .npz, and the names of checkpoints from before timm ------------------------------------------

BIT_UNITS = (3, 4, 6, 3)  # ResNetV2-50


def bit_npz_names() -> dict[str, str]:
    """Each state-dict key of timm's ``resnetv2_50x1_bit`` -> its array in the official BiT ``.npz``."""
    names = {
        "stem.conv.weight": "resnet/root_block/standardized_conv2d/kernel",
        "norm.weight": "resnet/group_norm/gamma",
        "norm.bias": "resnet/group_norm/beta",
        "head.fc.weight": "resnet/head/conv2d/kernel",
        "head.fc.bias": "resnet/head/conv2d/bias",
    }
    for s, units in enumerate(BIT_UNITS):
        for b in range(units):
            key, npz = f"stages.{s}.blocks.{b}.", f"resnet/block{s + 1}/unit{b + 1:02d}/"
            for i, letter in enumerate("abc", start=1):
                names[f"{key}conv{i}.weight"] = f"{npz}{letter}/standardized_conv2d/kernel"
                names[f"{key}norm{i}.weight"] = f"{npz}{letter}/group_norm/gamma"
                names[f"{key}norm{i}.bias"] = f"{npz}{letter}/group_norm/beta"
            if b == 0:
                names[f"{key}downsample.conv.weight"] = f"{npz}a/proj/standardized_conv2d/kernel"
    return names


def read_bit_npz(path: Path) -> dict[str, torch.Tensor]:
    """The official BiT arrays as a state dict in timm's names (``bit_npz_names``); HWIO kernels become OIHW."""
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz ({err})") from err
    except ValueError as err:  # numpy's message here suggests allow_pickle=True; we never unpickle
        raise ValueError(f"{path}: not an .npz archive of plain arrays (pickled data is refused)") from err
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single .npy array, expected an .npz archive of named arrays")
    names = bit_npz_names()
    with arrays:
        missing = [n for n in names.values() if n not in arrays.files]
        unexpected = sorted(set(arrays.files) - set(names.values()))
        if missing or unexpected:
            raise ValueError(
                f"{path}: not the official BiT-S-R50x1 layout ({len(names)} arrays); "
                f"missing arrays {short(missing)}, unexpected arrays {short(unexpected)}"
            )
        state = {}
        for key, name in names.items():
            tensor = torch.from_numpy(arrays[name])
            # TF kernels are HWIO; gamma/beta/bias are 1-D (reshape tolerates a stray singleton axis).
            state[key] = tensor.permute(3, 2, 0, 1).contiguous() if tensor.ndim == 4 else tensor.reshape(-1)
    return state


# the project's own BiT, before timm (its names followed bit_pytorch) -> timm's names
_OLD_BIT_UNIT = re.compile(r"^body\.block(\d)\.unit(\d\d)\.(gn|conv|downsample)(\d?)\.")
_OLD_BIT_ENDS = {"root.conv.": "stem.conv.", "head.gn.": "norm.", "head.conv.": "head.fc."}


def _old_bit_key(key: str) -> str:
    unit = _OLD_BIT_UNIT.match(key)
    if unit:
        block, index, kind, i = unit.groups()
        new = {"gn": f"norm{i}.", "conv": f"conv{i}.", "downsample": "downsample.conv."}[kind]
        return f"stages.{int(block) - 1}.blocks.{int(index) - 1}.{new}{key[unit.end() :]}"
    for old, new in _OLD_BIT_ENDS.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def upgrade_state(arch: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in today's names: a bit-s-r50x1 checkpoint from before timm gets timm's names; others as they are."""
    if arch != "bit-s-r50x1" or "root.conv.weight" not in state:
        return state
    return {_old_bit_key(key): value for key, value in state.items()}


# ---- fitting a state dict to a model ---------------------------------------------------------------------------------


def short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, head: list[str], hint: str = "") -> None:
    """Copy ``state`` into ``model``: every backbone tensor must be present with its shape; the ``head`` keys may
    differ or be missing (a fresh head). ``hint``: what to do when a backbone tensor has another shape."""
    own = model.state_dict()
    state = dict(state)
    for key in head:
        if key in state and state[key].shape != own[key].shape:
            log.info(
                "%s: skipping %s %s (model has %s): the head is replaced",
                path,
                key,
                tuple(state[key].shape),
                tuple(own[key].shape),
            )
            del state[key]
    # A missing head means a fresh head; old torchvision checkpoints predate BatchNorm's num_batches_tracked.
    optional = set(head) | {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: weights do not fit {type(model).__name__}: missing keys {short(missing)}, "
            f"unexpected keys {short(unexpected)}, wrong shapes {short(wrong_shape)}"
            + (f"; {hint}" if wrong_shape and hint else "")
        )
    model.load_state_dict(state, strict=False)
