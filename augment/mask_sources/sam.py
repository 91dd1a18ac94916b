"""``sam``: Segment Anything (Kirillov et al., 2023) prompted with each of a sample's boxes; ``--mask-weights``: a
local SAM checkpoint.

A box keeps the background inside it as if it were the object; SAM, given the box as its prompt, returns the
object's outline within it. The model is the ``segment-anything`` package's own definition, with its sizes read off
the checkpoint's tensor shapes, so ViT-B, ViT-L, ViT-H (and small test models) all load from a plain state dict;
nothing is downloaded and no pickled code is run (``torch.load(weights_only=True)``, or ``.safetensors``).
A sample with several boxes gets the union of its boxes' masks (one mask per box, ``multimask_output=False``).
Inference is deterministic: no randomness is drawn, so the requests' seeds are unused.
MobileSAM is not supported: no package on the registry provides its model code (``mobile-sam`` is not on the index).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from augment.mask_sources import MaskSource, Request, register

if TYPE_CHECKING:
    import torch

WEIGHTS_HELP = (
    "pass a SAM checkpoint such as sam_vit_b_01ec64.pth (or sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth) from the "
    "segment-anything release (github.com/facebookresearch/segment-anything, 'Model Checkpoints'); nothing is "
    "downloaded"
)
RESAVE = "re-save it with torch.save(model.state_dict(), PATH) (or safetensors.torch.save_file)"

MASK_THRESHOLD = 0.0  # Sam.mask_threshold: a pixel whose logit is above it is object
WINDOW_SIZE = 14  # the windowed attention of SAM's encoder, when no windowed block says otherwise
DECODER_HEADS = 8  # the mask decoder's attention heads: not in the tensor shapes, fixed by SAM
LAYER_NORM_EPS = 1e-6
PIXEL_MEAN = [123.675, 116.28, 103.53]  # Sam's defaults; not in the state dict (non-persistent buffers)
PIXEL_STD = [58.395, 57.12, 57.375]

ENCODER = "image_encoder."
REQUIRED = (  # the tensors the architecture is read from
    "image_encoder.patch_embed.proj.weight",
    "image_encoder.pos_embed",
    "image_encoder.neck.0.weight",
    "prompt_encoder.mask_downscaling.3.weight",
    "mask_decoder.mask_tokens.weight",
    "mask_decoder.iou_prediction_head.layers.0.weight",
    "mask_decoder.transformer.layers.0.mlp.lin1.weight",
    "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight",
)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, on the CPU; ValueError (one line) when the file is not a plain SAM state dict."""
    import pickle
    import re

    import torch

    where = f"--mask-weights {path}"
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{where}: not a readable safetensors file ({first_line(e)}); {WEIGHTS_HELP}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            refused = re.search(r"Unsupported (?:global: GLOBAL|class) (\S+)", str(e))
            if refused:  # weights_only met a class or function: code that a full unpickling would run
                raise ValueError(
                    f"{where}: holds pickled objects ({refused[1]}), not a plain state dict of tensors, "
                    f"and is not loaded (that would run their code); {RESAVE}"
                ) from None
            raise ValueError(f"{where}: not a torch checkpoint ({unpickler_error(e)}); {WEIGHTS_HELP}") from None
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise ValueError(f"{where}: not a torch checkpoint ({first_line(e)}); {WEIGHTS_HELP}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(
            f"{where}: holds a {type(state).__name__}, expected a state dict (names to tensors); {WEIGHTS_HELP}"
        )
    for inner in ("model", "state_dict"):
        if isinstance(state.get(inner), dict) and REQUIRED[0] in state[inner]:
            fix = RESAVE.replace("model.state_dict()", f"checkpoint[{inner!r}]")
            raise ValueError(
                f"{where}: the SAM state dict is wrapped under the key {inner!r}, expected it at the top level; {fix}"
            )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        odd = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
        raise ValueError(
            f"{where}: {odd!r} holds a {type(state[odd]).__name__}, expected only tensors (a plain "
            f"state dict); {RESAVE}"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        found = ", ".join(list(state)[:3]) + (", ..." if len(state) > 3 else "") or "nothing"
        raise ValueError(
            f"{where}: not a SAM state dict: no {missing[0]!r} among its {len(state)} tensors "
            f"({found}); expected the image_encoder/prompt_encoder/mask_decoder tensors of a "
            f"segment-anything checkpoint; {WEIGHTS_HELP}"
        )
    return state


def unpickler_error(error: BaseException) -> str:
    """The line of torch's weights_only refusal that says what it met (its other lines are advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if "WeightsUnpickler error" in line), None)
    if at is None:
        return first_line(error)
    rest = lines[at].split("WeightsUnpickler error:", 1)[1].strip()
    return rest or (lines[at + 1] if at + 1 < len(lines) else "unreadable")


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def count(state: dict[str, Any], prefix: str) -> int:
    """How many numbered modules ``prefix.N.`` the state dict holds (0 ..)."""
    found = {
        int(k[len(prefix) :].split(".", 1)[0])
        for k in state
        if k.startswith(prefix) and k[len(prefix) :].split(".", 1)[0].isdigit()
    }
    return max(found) + 1 if found else 0


def architecture(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """The sizes the checkpoint was trained with, read off its tensor shapes (``_build_sam``'s arguments and more)."""
    where = f"--mask-weights {path}"

    def shape(key: str) -> tuple[int, ...]:
        return tuple(state[key].shape)

    def bad(found: str, expected: str) -> ValueError:
        return ValueError(f"{where}: {found}, expected {expected} as in a SAM checkpoint; {WEIGHTS_HELP}")

    proj = shape("image_encoder.patch_embed.proj.weight")
    if len(proj) != 4 or proj[1] != 3 or proj[2] != proj[3]:
        raise bad(f"image_encoder.patch_embed.proj.weight has shape {list(proj)}", "[embed_dim, 3, patch, patch]")
    embed_dim, patch = proj[0], proj[2]
    pos = shape("image_encoder.pos_embed")
    if len(pos) != 4 or pos[1] != pos[2] or pos[3] != embed_dim:
        raise bad(f"image_encoder.pos_embed has shape {list(pos)}", f"[1, grid, grid, {embed_dim}]")
    grid = pos[1]
    depth = count(state, "image_encoder.blocks.")
    if depth == 0:
        raise bad("no image_encoder.blocks.N tensors", "at least one encoder block")
    head_dim, global_blocks, windows = None, [], set()
    for i in range(depth):
        key = f"image_encoder.blocks.{i}.attn.rel_pos_h"
        if key not in state:
            raise bad(f"no {key!r}", "relative position tensors in every encoder block")
        rel = shape(key)
        if len(rel) != 2 or rel[0] % 2 == 0 or (head_dim is not None and rel[1] != head_dim):
            raise bad(f"{key} has shape {list(rel)}", f"[2 * size - 1, {head_dim or 'head_dim'}]")
        head_dim, size = rel[1], (rel[0] + 1) // 2
        if size == grid:
            global_blocks.append(i)
        else:
            windows.add(size)
    if len(windows) > 1 or embed_dim % head_dim:
        raise bad(
            f"encoder windows {sorted(windows)} and head dim {head_dim} for embed dim {embed_dim}",
            "one window size and a head dim dividing the embed dim",
        )
    mlp_hidden = (
        shape("image_encoder.blocks.0.mlp.lin1.weight")[0]
        if "image_encoder.blocks.0.mlp.lin1.weight" in state
        else 4 * embed_dim
    )
    prompt_dim = shape("image_encoder.neck.0.weight")[0]
    decoder_dim = shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[1]
    q_dim = shape("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0]
    return {
        "img_size": grid * patch,
        "patch_size": patch,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": embed_dim // head_dim,
        "mlp_ratio": mlp_hidden / embed_dim,
        "window_size": windows.pop() if windows else WINDOW_SIZE,
        "global_attn_indexes": tuple(global_blocks),
        "qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in state,
        "prompt_dim": prompt_dim,
        "mask_in_chans": shape("prompt_encoder.mask_downscaling.3.weight")[0],
        "num_multimask_outputs": shape("mask_decoder.mask_tokens.weight")[0] - 1,
        "decoder_depth": count(state, "mask_decoder.transformer.layers."),
        "decoder_mlp_dim": shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        "attention_downsample_rate": max(decoder_dim // max(q_dim, 1), 1),
        "iou_head_depth": count(state, "mask_decoder.iou_prediction_head.layers."),
        "iou_head_hidden_dim": shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
    }


def build(arch: dict[str, Any]) -> Any:
    """A ``segment_anything.modeling.Sam`` of these sizes, as ``build_sam._build_sam`` makes one (on the current
    default device: ``meta`` to check shapes without allocating)."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch["img_size"] // arch["patch_size"]
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch["depth"],
            embed_dim=arch["embed_dim"],
            img_size=arch["img_size"],
            mlp_ratio=arch["mlp_ratio"],
            norm_layer=partial(torch.nn.LayerNorm, eps=LAYER_NORM_EPS),
            num_heads=arch["num_heads"],
            patch_size=arch["patch_size"],
            qkv_bias=arch["qkv_bias"],
            use_rel_pos=True,
            global_attn_indexes=arch["global_attn_indexes"],
            window_size=arch["window_size"],
            out_chans=arch["prompt_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch["prompt_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(arch["img_size"], arch["img_size"]),
            mask_in_chans=arch["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=arch["decoder_depth"],
                embedding_dim=arch["prompt_dim"],
                mlp_dim=arch["decoder_mlp_dim"],
                num_heads=DECODER_HEADS,
                attention_downsample_rate=arch["attention_downsample_rate"],
            ),
            transformer_dim=arch["prompt_dim"],
            iou_head_depth=arch["iou_head_depth"],
            iou_head_hidden_dim=arch["iou_head_hidden_dim"],
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )


def matched(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
    """The checkpoint's tensors, its architecture and a shape-only (``meta``) model they fit exactly; ValueError
    (one line) naming the first missing, unexpected or wrongly shaped tensor otherwise."""
    import torch

    where = f"--mask-weights {path}"
    state = read_state_dict(path)
    arch = architecture(state, path)
    try:
        with torch.device("meta"):
            skeleton = build(arch)
    except (AssertionError, ValueError, RuntimeError, ZeroDivisionError) as e:
        raise ValueError(
            f"{where}: its tensor shapes give a SAM architecture that cannot be built ({arch}: "
            f"{first_line(e)}); {WEIGHTS_HELP}"
        ) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{where}: {k} has shape {list(state[k].shape)}, expected {list(expected[k])} for the "
            f"architecture its other tensors give ({len(wrong)} tensors differ); "
            f"{WEIGHTS_HELP}"
        )
    if missing or unexpected:
        what = f"no {missing[0]!r}" if missing else f"an unexpected {unexpected[0]!r}"
        raise ValueError(
            f"{where}: {what} ({len(missing)} missing, {len(unexpected)} unexpected tensors), expected "
            f"exactly the tensors of segment-anything's Sam; {WEIGHTS_HELP}"
        )
    return state, arch, skeleton


def check(path: Path) -> None:
    """Refuse a file that is not a plain SAM state dict, before the build writes anything: the tensors are read on
    the CPU and matched against a shape-only model; nothing is allocated for the model itself."""
    matched(path)


def load(weights: Path, device: str) -> Any:
    """The checkpoint as ``segment_anything.modeling.Sam``, in eval mode on ``device`` (``auto`` | ``cpu`` | ``cuda``).

    The model is built on the ``meta`` device and takes the checkpoint's tensors as its own (``assign=True``), so no
    random initialisation is computed; the pixel mean and std (not in a state dict) are then set to SAM's."""
    import torch

    from augment.contract.zoo.devices import resolve_device

    state, _, sam = matched(Path(weights))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    sam.load_state_dict(state, strict=True, assign=True)
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)
    left = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"sam: {left[0]} was not loaded from {weights}")  # a segment-anything we do not know
    return sam.requires_grad_(False).eval().to(resolve_device(device))


def produce(requests: list[Request], model: Any) -> list[np.ndarray | None]:
    """One bool [H, W] mask per request: the union of SAM's masks for each of its boxes, in one forward pass for
    the batch (images resized so their longest side is the encoder's, boxes with them)."""
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(model.image_encoder.img_size)
    device = model.device
    batch = []
    for r in requests:
        size = tuple(r.image.shape[:2])
        image = transform.apply_image(np.ascontiguousarray(r.image, dtype=np.uint8))
        boxes = torch.as_tensor(np.asarray(r.boxes, dtype=np.float32).reshape(-1, 4), device=device)
        batch.append(
            {
                "image": torch.as_tensor(image, device=device).permute(2, 0, 1).contiguous(),
                "original_size": size,
                "boxes": transform.apply_boxes_torch(boxes, size),
            }
        )
    if not batch:
        return []
    with torch.inference_mode():
        outputs = model(batch, multimask_output=False)
    return [out["masks"].any(dim=0).any(dim=0).cpu().numpy().astype(bool) for out in outputs]


PARAMS = {
    "prompt": "each box of the sample; the sample's mask is the union of its boxes' masks",
    "multimask_output": False,
    "mask_threshold": MASK_THRESHOLD,
    "resize": "longest side to the encoder's image size (ResizeLongestSide), padded square",
    "architecture": "read from the checkpoint's tensor shapes",
    "decoder_heads": DECODER_HEADS,
    "default_window_size": WINDOW_SIZE,
    "layer_norm_eps": LAYER_NORM_EPS,
    "pixel_mean": PIXEL_MEAN,
    "pixel_std": PIXEL_STD,
}
register(
    MaskSource(
        "sam",
        "Segment Anything prompted with each box (--mask-weights: a local SAM checkpoint)",
        produce,
        needs_box=True,
        needs_weights=True,
        batched=True,
        load=load,
        check=check,
        params=PARAMS,
        weights_help=WEIGHTS_HELP,
    )
)
