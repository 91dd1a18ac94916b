"""The DeepFill v1 generator (coarse + refine with contextual attention), layer for layer as the official release.

The network is summarised in docs/METHOD.md (Models). What matters for loading the official weights exactly:

- every convolution pads like TF ``'SAME'``: symmetric for stride 1, but 0 top/left and 1 bottom/right for the
  stride-2 ``*_downsample`` layers on even sizes (:func:`conv_same`);
- downsampling by nearest neighbour uses TF's ``align_corners=True`` index rule (:func:`tf_nearest`), which is
  not PyTorch's; x2 upsampling is plain nearest;
- no normalisation, ELU everywhere except ``pmconv6`` (ReLU) and the two output layers (none, then clip to
  [-1, 1]; no tanh).

Tensors are NCHW, images in [-1, 1] in **BGR** order (the official channel order; :mod:`augment.cagan.inpaint`
converts), ``mask`` is ``[N, 1, H, W]`` with 1 = hole. H and W must be multiples of 8.

Parameter names are ours: ``coarse.<tf layer>.weight|bias`` and ``refine.<tf layer>.weight|bias``, with the TF
layer name as in the checkpoint (``conv13_upsample``, ``xconv4_downsample``, ``pmconv9`` ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Layer:
    """One convolution of the table: TF name, kernel, stride, dilation, channel multipliers of cnum, activation."""

    name: str
    k: int
    stride: int
    rate: int
    cin: float  # in units of cnum (5 input channels are written as -5)
    cout: float
    act: str = "elu"  # elu | relu | none
    upsample: bool = False  # a gen_deconv: x2 nearest, then the conv


def _layers() -> dict[str, list[Layer]]:
    """The official layer table (CAGAN.md section 1); channel counts in multiples of cnum."""
    coarse = [
        Layer("conv1", 5, 1, 1, -5, 1),
        Layer("conv2_downsample", 3, 2, 1, 1, 2),
        Layer("conv3", 3, 1, 1, 2, 2),
        Layer("conv4_downsample", 3, 2, 1, 2, 4),
        Layer("conv5", 3, 1, 1, 4, 4),
        Layer("conv6", 3, 1, 1, 4, 4),
        Layer("conv7_atrous", 3, 1, 2, 4, 4),
        Layer("conv8_atrous", 3, 1, 4, 4, 4),
        Layer("conv9_atrous", 3, 1, 8, 4, 4),
        Layer("conv10_atrous", 3, 1, 16, 4, 4),
        Layer("conv11", 3, 1, 1, 4, 4),
        Layer("conv12", 3, 1, 1, 4, 4),
        Layer("conv13_upsample", 3, 1, 1, 4, 2, upsample=True),
        Layer("conv14", 3, 1, 1, 2, 2),
        Layer("conv15_upsample", 3, 1, 1, 2, 1, upsample=True),
        Layer("conv16", 3, 1, 1, 1, 0.5),
        Layer("conv17", 3, 1, 1, 0.5, -3, act="none"),
    ]
    hallu = [
        Layer("xconv1", 5, 1, 1, -5, 1),
        Layer("xconv2_downsample", 3, 2, 1, 1, 1),
        Layer("xconv3", 3, 1, 1, 1, 2),
        Layer("xconv4_downsample", 3, 2, 1, 2, 2),
        Layer("xconv5", 3, 1, 1, 2, 4),
        Layer("xconv6", 3, 1, 1, 4, 4),
        Layer("xconv7_atrous", 3, 1, 2, 4, 4),
        Layer("xconv8_atrous", 3, 1, 4, 4, 4),
        Layer("xconv9_atrous", 3, 1, 8, 4, 4),
        Layer("xconv10_atrous", 3, 1, 16, 4, 4),
    ]
    attention_in = [
        Layer("pmconv1", 5, 1, 1, -5, 1),
        Layer("pmconv2_downsample", 3, 2, 1, 1, 1),
        Layer("pmconv3", 3, 1, 1, 1, 2),
        Layer("pmconv4_downsample", 3, 2, 1, 2, 4),
        Layer("pmconv5", 3, 1, 1, 4, 4),
        Layer("pmconv6", 3, 1, 1, 4, 4, act="relu"),
    ]
    attention_out = [Layer("pmconv9", 3, 1, 1, 4, 4), Layer("pmconv10", 3, 1, 1, 4, 4)]
    merge = [
        Layer("allconv11", 3, 1, 1, 8, 4),
        Layer("allconv12", 3, 1, 1, 4, 4),
        Layer("allconv13_upsample", 3, 1, 1, 4, 2, upsample=True),
        Layer("allconv14", 3, 1, 1, 2, 2),
        Layer("allconv15_upsample", 3, 1, 1, 2, 1, upsample=True),
        Layer("allconv16", 3, 1, 1, 1, 0.5),
        Layer("allconv17", 3, 1, 1, 0.5, -3, act="none"),
    ]
    return {
        "coarse": coarse,
        "hallu": hallu,
        "attention_in": attention_in,
        "attention_out": attention_out,
        "merge": merge,
    }


LAYERS = _layers()


def channels(units: float, cnum: int) -> int:
    """A table entry in channels: negative entries are absolute (5 input, 3 output channels)."""
    return int(-units) if units < 0 else int(units * cnum)


def tf_same_pads(size: int, k: int, stride: int, rate: int) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' for one dimension: the extra pixel goes after."""
    effective = (k - 1) * rate + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """``gen_conv``: a TF-'SAME' convolution with bias, then the layer's activation (optionally after x2 upsampling)."""

    def __init__(self, layer: Layer, cnum: int) -> None:
        super().__init__(
            channels(layer.cin, cnum), channels(layer.cout, cnum), layer.k, layer.stride, dilation=layer.rate
        )
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")  # TF align_corners x2 == floor(i / 2)
        x = conv_same(x, self.weight, self.bias, self.layer.stride, self.layer.rate)
        if self.layer.act == "elu":
            return F.elu(x)
        if self.layer.act == "relu":
            return F.relu(x)
        return x


def conv_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, rate: int = 1):
    """``conv2d`` with TF 'SAME' padding (asymmetric when TF's is)."""
    k = weight.shape[-1]
    (top, bottom), (left, right) = (tf_same_pads(n, k, stride, rate) for n in x.shape[-2:])
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride, (top, left), rate)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, rate)


def tf_nearest_index(n_in: int, n_out: int, device: torch.device | None = None) -> torch.Tensor:
    """Source indices of TF1 ``resize_nearest_neighbor(align_corners=True)``: round(i * (in-1) / (out-1))."""
    if n_out == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    scale = (n_in - 1) / (n_out - 1)
    idx = [min(math.floor(i * scale + 0.5), n_in - 1) for i in range(n_out)]  # roundf: half away from zero
    return torch.tensor(idx, dtype=torch.long, device=device)


def tf_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize NCHW ``x`` to ``size`` by nearest neighbour, picking pixels the way TF1 does (align_corners=True)."""
    rows = tf_nearest_index(x.shape[-2], size[0], x.device)
    cols = tf_nearest_index(x.shape[-1], size[1], x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _patches(x: torch.Tensor, k: int, stride: int, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """[N, L, C, k, k] patches of ``x`` (L in row-major order of patch positions), after zero padding ``pad``."""
    n, c = x.shape[:2]
    cols = F.unfold(F.pad(x, pad), k, stride=stride)  # [N, C*k*k, L], channel-major within a patch
    return cols.view(n, c, k, k, -1).permute(0, 4, 1, 2, 3)


def _diagonal_sum(scores: torch.Tensor) -> torch.Tensor:
    """The 3x3 identity-kernel convolution of the fuse step on [N, F, B] scores: s[i-1, j-1] + s[i, j] + s[i+1, j+1]."""
    p = F.pad(scores, (1, 1, 1, 1))
    return p[:, :-2, :-2] + p[:, 1:-1, 1:-1] + p[:, 2:, 2:]


def contextual_attention(
    f: torch.Tensor,
    b: torch.Tensor,
    mask: torch.Tensor,
    ksize: int = 3,
    rate: int = 2,
    fuse_k: int = 3,
    softmax_scale: float = 10.0,
) -> torch.Tensor:
    """Fill the hole's features of ``f`` with softly attended patches of ``b`` (the official layer, stride 1, fuse).

    ``mask`` ([N, 1, h, w] at f's resolution, 1 = hole) marks the background patches that may not be used. The
    official layer takes it from batch item 0 only (it ran one image at a time); here every image uses its own.
    """
    if fuse_k != 3 or ksize != 3 or rate != 2:
        raise ValueError("contextual_attention: only ksize=3, fuse_k=3, rate=2 (the official setting) are implemented")
    with torch.autocast(f.device.type, enabled=False):  # fp32 even under AMP: softmax(10 * cosine) needs precision
        return _attention(f.float(), b.float(), mask.float(), ksize, rate, softmax_scale).to(f.dtype)


def _attention(f: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, ksize: int, rate: int, softmax_scale: float):
    n, c, h, w = f.shape
    kernel = 2 * rate
    raw = _patches(b, kernel, rate, (1, 1, 1, 1))  # [N, L, C, 4, 4]: the patches pasted back, at full resolution
    hd, wd = h // rate, w // rate
    f_down, b_down = tf_nearest(f, (hd, wd)), tf_nearest(b, (hd, wd))
    m_down = tf_nearest(mask, (hd, wd))
    weights = _patches(b_down, ksize, 1, (1, 1, 1, 1))  # [N, L, C, 3, 3], L = hd * wd
    norms = weights.pow(2).sum(dim=(2, 3, 4), keepdim=True).sqrt().clamp_min(1e-4)
    weights = weights / norms
    num = weights.shape[1]
    # cosine scores of every foreground position against every background patch, all images in one grouped conv
    scores = F.conv2d(f_down.reshape(1, n * c, hd, wd), weights.reshape(n * num, c, ksize, ksize), padding=1, groups=n)
    scores = scores.view(n, num, hd * wd).transpose(1, 2)  # [N, F (row-major y*w+x), B (row-major)]
    # fuse: identity-kernel convolution in row-major order, then again in column-major order (x*h+y)
    scores = _diagonal_sum(scores)
    col_major = scores.view(n, hd, wd, hd, wd).permute(0, 2, 1, 4, 3).reshape(n, hd * wd, hd * wd)
    scores = _diagonal_sum(col_major).view(n, wd, hd, wd, hd).permute(0, 2, 1, 4, 3).reshape(n, hd * wd, hd * wd)
    # a background patch is usable when its 3x3 window on the downsampled mask is fully known (zero padding known)
    known = (F.avg_pool2d(F.pad(m_down, (1, 1, 1, 1)), 3, stride=1) == 0).to(scores.dtype).view(n, 1, num)
    attention = F.softmax(scores * known * softmax_scale, dim=2) * known  # masked patches enter with logit 0
    attention = attention.transpose(1, 2).reshape(1, n * num, hd, wd)
    out = F.conv_transpose2d(attention, raw.reshape(n * num, c, kernel, kernel), stride=rate, padding=1, groups=n)
    return out.view(n, c, h, w) / 4.0


class Generator(nn.Module):
    """DeepFill v1 ``inpaint_net``: returns (coarse, refined) images in [-1, 1], each [N, 3, H, W]."""

    def __init__(self, cnum: int = 32) -> None:
        super().__init__()
        self.cnum = cnum
        self.coarse = nn.ModuleDict({layer.name: Conv(layer, cnum) for layer in LAYERS["coarse"]})
        refine = [*LAYERS["hallu"], *LAYERS["attention_in"], *LAYERS["attention_out"], *LAYERS["merge"]]
        self.refine = nn.ModuleDict({layer.name: Conv(layer, cnum) for layer in refine})

    def _run(self, stage: nn.ModuleDict, group: str, x: torch.Tensor) -> torch.Tensor:
        for layer in LAYERS[group]:
            x = stage[layer.name](x)
        return x

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` [N, 3, H, W] in [-1, 1] (BGR), ``mask`` [N, 1, H, W] with 1 = hole; hole pixels are ignored."""
        if image.shape[-1] % 8 or image.shape[-2] % 8:
            raise ValueError(f"CAGAN input: got {tuple(image.shape[-2:])}, expected H and W multiples of 8")
        mask = mask.to(image.dtype)
        xin = image * (1 - mask)
        ones = torch.ones_like(mask)
        coarse = self._run(self.coarse, "coarse", torch.cat([xin, ones, mask], 1)).clamp(-1, 1)
        xnow = torch.cat([coarse * mask + xin * (1 - mask), ones, mask], 1)
        hallu = self._run(self.refine, "hallu", xnow)
        features = self._run(self.refine, "attention_in", xnow)
        mask_s = tf_nearest(mask, tuple(features.shape[-2:]))  # resize_mask_like: 256 -> 64, TF's index rule
        attended = contextual_attention(features, features, mask_s)
        pm = self._run(self.refine, "attention_out", attended)
        refined = self._run(self.refine, "merge", torch.cat([hallu, pm], 1)).clamp(-1, 1)
        return coarse, refined


def expected_shapes(cnum: int = 32) -> dict[str, tuple[int, ...]]:
    """Our parameter names and shapes (OIHW); the strict loaders check against this."""
    return {name: tuple(p.shape) for name, p in Generator(cnum).state_dict().items()}
