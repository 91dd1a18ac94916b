"""CAGAN weights: import from the two upstream layouts into one safetensors file with our names, and load strictly.

Sources (``augment cagan import SRC --out FILE``):

- the official TF checkpoint folder ``release_imagenet_256/`` (``checkpoint``, ``snap-*.index``,
  ``snap-*.data-*``), read without TensorFlow (:mod:`augment.cagan.tfbundle`). Only ``inpaint_net/*`` is taken;
  optimizer slots and the discriminator are ignored. Kernels are HWIO and become OIHW with ``permute(3, 2, 0, 1)``.
- the circulating PyTorch conversion ``torch_model.p``: a state dict named ``coarse_generator.<layer>.conv.weight``
  / ``fine_generator.<layer>.conv.weight``, read with ``torch.load(weights_only=True)``.

Every expected tensor must be there with the right shape, and nothing else from the generator may be left
over; otherwise the error lists what is missing, extra or misshapen. A partial load never happens silently.
The safetensors file carries metadata: ``format=cagan-v1``, ``cnum``, ``size`` (the side the model works at)
and where it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from augment.cagan.net import LAYERS, Generator, expected_shapes
from augment.contract.files import write_atomic

FORMAT = "cagan-v1"
DEFAULT_SIZE = 256  # the official model was trained at 256 x 256


class WeightsError(ValueError):
    """Weights that cannot be used as they are; the message names the file and the fix."""


def _stages() -> list[tuple[str, str]]:
    """(stage, layer name) for every convolution, in table order."""
    refine = ("hallu", "attention_in", "attention_out", "merge")
    out = [("coarse", layer.name) for layer in LAYERS["coarse"]]
    return out + [("refine", layer.name) for group in refine for layer in LAYERS[group]]


def tf_name(stage: str, layer: str, param: str) -> str:
    """The official checkpoint name: ``inpaint_net/conv13_upsample/conv13_upsample_conv/kernel`` and so on."""
    scope = f"{layer}/{layer}_conv" if layer.endswith("_upsample") else layer
    return f"inpaint_net/{scope}/{'kernel' if param == 'weight' else 'bias'}"


def torch_conversion_name(stage: str, layer: str, param: str) -> str:
    """The name in ``torch_model.p``: the refine stage's ``xconv*`` lose the x, deconvs lose ``_upsample``."""
    name = layer.removesuffix("_upsample")
    if stage == "refine" and name.startswith("xconv"):
        name = name[1:]
    prefix = "coarse_generator" if stage == "coarse" else "fine_generator"
    return f"{prefix}.{name}.conv.{param}"


def name_table() -> list[tuple[str, str, str]]:
    """(our name, TF name, torch-conversion name) for all 84 tensors."""
    return [
        (f"{stage}.{layer}.{param}", tf_name(stage, layer, param), torch_conversion_name(stage, layer, param))
        for stage, layer in _stages()
        for param in ("weight", "bias")
    ]


def _listing(title: str, items: list[str], most: int = 12) -> str:
    return f"  {title} ({len(items)}): " + ", ".join(items[:most]) + (" ..." if len(items) > most else "")


def check_strict(state: dict[str, torch.Tensor], source: str, cnum: int = 32) -> None:
    """Raise a :class:`WeightsError` listing every missing, extra or misshapen tensor."""
    expected = expected_shapes(cnum)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or extra or wrong:
        lines = [f"{source}: not a complete DeepFill v1 generator (cnum={cnum})"]
        lines += [
            _listing(t, items) for t, items in (("missing", missing), ("extra", extra), ("wrong shape", wrong)) if items
        ]
        first = state.get("refine.xconv1.weight")
        if first is not None and first.ndim == 4 and first.shape[1] == 3:
            lines.append("  (xconv1 takes 3 input channels: a DeepFill v2 checkpoint? CAGAN is DeepFill v1)")
        raise WeightsError("\n".join(lines))


def _rename(found: dict[str, torch.Tensor], column: int, source: str) -> dict[str, torch.Tensor]:
    """Our names for ``found`` keyed by the names of ``column`` (1 = TF, 2 = torch conversion); strict."""
    table = {row[column]: row[0] for row in name_table()}
    missing = sorted(set(table) - set(found))
    extra = sorted(set(found) - set(table))
    if missing or extra:
        lines = [f"{source}: the generator's tensors do not match the official DeepFill v1 (v1, cnum 32) names"]
        lines += [_listing(t, items) for t, items in (("missing", missing), ("extra", extra)) if items]
        raise WeightsError("\n".join(lines))
    return {table[k]: v for k, v in found.items()}


def from_tf_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Our state dict from the official TF checkpoint folder (or prefix / .index path), without TensorFlow."""
    from augment.cagan.tfbundle import read_bundle

    def keep(name: str) -> bool:
        return name.startswith("inpaint_net/") and "/Adam" not in name

    arrays = read_bundle(Path(path), keep=keep)
    found = {}
    for name, array in arrays.items():
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        found[name] = tensor.permute(3, 2, 0, 1).contiguous() if tensor.ndim == 4 else tensor  # HWIO -> OIHW
    state = _rename(found, 1, str(path))
    check_strict(state, str(path))
    return state


def from_torch_conversion(path: Path) -> dict[str, torch.Tensor]:
    """Our state dict from ``torch_model.p`` (a plain state dict; a ``module.`` prefix from DataParallel is dropped)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file; expected the PyTorch conversion torch_model.p") from None
    except Exception as e:  # weights_only refuses pickled code: say so rather than a traceback
        raise WeightsError(f"{path}: cannot be read as a tensor-only torch file ({type(e).__name__}: {e})") from e
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: got a {type(raw).__name__}, expected a state dict of tensors")
    found = {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    found = {k: v for k, v in found.items() if k.startswith(("coarse_generator.", "fine_generator."))}
    state = _rename({k: v.float().contiguous() for k, v in found.items()}, 2, str(path))
    check_strict(state, str(path))
    return state


def import_weights(src: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Our state dict and a description of the source, from either upstream layout (told apart by the path)."""
    src = Path(src)
    if src.is_dir() or src.suffix == ".index" or Path(f"{src}.index").exists():
        return from_tf_checkpoint(src), "tf-checkpoint"
    if not src.exists():
        raise WeightsError(
            f"{src}: no such file or folder; expected the official TF checkpoint folder (release_imagenet_256/ with "
            "checkpoint, snap-0.index, snap-0.data-00000-of-00001) or the PyTorch conversion torch_model.p"
        )
    return from_torch_conversion(src), "torch-conversion"


def save(
    path: Path,
    state: dict[str, torch.Tensor],
    *,
    cnum: int = 32,
    size: int = DEFAULT_SIZE,
    source: str = "",
    extra: dict[str, str] | None = None,
) -> None:
    """Write ``state`` as safetensors (temp name, then rename) with the metadata :func:`load` needs."""
    from safetensors.torch import save_file

    check_strict(state, str(path), cnum)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "cnum": str(cnum), "size": str(size), "source": source, **(extra or {})}
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load(path: Path, device: str | torch.device = "cpu") -> tuple[Generator, dict[str, str]]:
    """A generator in eval mode from one of our safetensors files, and the file's metadata."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; {HOW_TO_GET}")
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except Exception as e:  # a corrupt or foreign file: say which
        raise WeightsError(f"{path}: not a safetensors file ({type(e).__name__}: {e}); {HOW_TO_GET}") from e
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: metadata format={meta.get('format')!r}, expected {FORMAT!r}; {HOW_TO_GET}")
    cnum = int(meta.get("cnum", 32))
    check_strict(state, str(path), cnum)
    model = Generator(cnum)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


HOW_TO_GET = (
    "import the official weights with `augment cagan import release_imagenet_256/ --out cagan_weights/imagenet."
    "safetensors` (or torch_model.p), or train them with `augment cagan train --shards SHARDS --out "
    "cagan_weights/NAME.safetensors`"
)


def default_weights(folder: Path = Path("cagan_weights")) -> Path:
    """The only ``*.safetensors`` in ``cagan_weights/``, or an error that says how to get one."""
    found = sorted(Path(folder).glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightsError(f"--cagan-weights not given and no *.safetensors in {folder}/; {HOW_TO_GET}")
    names = ", ".join(p.name for p in found)
    raise WeightsError(f"--cagan-weights not given and {folder}/ holds several weights ({names}); pass one")
