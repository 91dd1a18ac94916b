"""``augment cagan train``: train or fine-tune the generator on a dataset's own backgrounds (self-supervised).

No weights can be downloaded here, and the paper notes that fitting the inpainter to the target data helps. A CF
image asks the model to fill the object's rectangle with *background*, so that is what it learns: every training
input hides the object's rectangle (it is always part of the hole, and never supervised) plus a random rectangle
of 25-60% of the side; the loss is taken on the random rectangle minus the object's rectangle, which is pure
background. The model therefore learns large holes without ever being taught, or shown, the object. Objective
(DeepFill v1):

- spatially discounted L1 on the supervised pixels (weight ``gamma ** distance to the rectangle's border``,
  gamma = 0.9) for the coarse and refined outputs, plus plain L1 outside the hole ("ae" loss), coarse terms
  weighted 1.2 as in the release config (L1 and AE alphas 1.2, GAN alpha 0.001, WGAN-GP lambda 10, Adam lr 1e-4,
  betas 0.5/0.9);
- WGAN-GP critics on the whole image (global) and on the random rectangle resized to a fixed size (local); both
  see the object's rectangle blanked, in real and generated images alike, so they cannot ask for objects.

Training state (generator, critics, optimizers, step, RNG) is checkpointed atomically to ``<run>/state.pt`` and
``--resume`` continues from it; loading uses ``torch.load(weights_only=True)``. The result is our safetensors
file with ``size``/``cnum`` metadata. Every ``eval_every`` steps, and at the end, the masked L1 on held-out
holes of the ``val`` split (drawn the same way; without a val split, of the last train images, kept out of
training) is measured for CAGAN and for the ``tile`` infill, side by side.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augment import masks
from augment.cagan.inpaint import Inpainter, resolve_device, to_model
from augment.cagan.net import Generator, conv_same
from augment.cagan.weights import DEFAULT_SIZE, save
from augment.contract import encode, schema
from augment.contract.files import write_atomic
from augment.contract.shards import Limits, ShardError, iter_records
from augment.infill import get_infill

log = logging.getLogger("augment.cagan")


@dataclass
class TrainConfig:
    """Training options; ``PRESETS`` hold the defaults a user starts from."""

    size: int | None = None  # working side (multiple of 8); None: the shards' stored size
    hole_min: float = 0.25  # random rectangle sides, as fractions of ``size``
    hole_max: float = 0.6
    cnum: int = 32  # 32 is the official generator (needed to fine-tune imported weights)
    batch_size: int = 16
    steps: int = 20000
    lr: float = 1e-4
    l1_alpha: float = 1.2
    ae_alpha: float = 1.2
    coarse_alpha: float = 1.2
    gan_alpha: float = 0.001
    gp_lambda: float = 10.0
    gamma: float = 0.9  # spatial discount of the L1 inside the hole
    critic_cnum: int = 64
    critic_steps: int = 5  # critic updates per generator update (upstream v1: 5)
    max_images: int = 5000  # training backgrounds held in memory
    eval_holes: int = 200  # held-out (image, hole) pairs from the val split
    eval_every: int = 500
    checkpoint_every: int = 100
    seed: int = 0


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        size=32,
        batch_size=2,
        steps=3,
        cnum=8,
        critic_cnum=8,
        critic_steps=2,
        eval_holes=4,
        eval_every=3,
        checkpoint_every=2,
        max_images=16,
    ),
    # from scratch on CPU in minutes: a narrow network and a 5x larger step than the release's 1e-4, and enough
    # steps to reach tile's masked L1 on the demo shards (docs/cagan.md); one critic update per step, where
    # upstream does 5
    "demo": dict(
        batch_size=8,
        steps=3000,
        lr=5e-4,
        cnum=16,
        critic_cnum=16,
        critic_steps=1,
        eval_holes=200,
        eval_every=500,
        checkpoint_every=100,
        max_images=2000,
    ),
    "full": dict(size=DEFAULT_SIZE, batch_size=16, steps=20000),
}


# -- data: backgrounds and holes that avoid the object ------------------------------------------------------------


def read_split(shards: Path, split: str, size: int | None, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``limit`` (image, object mask) pairs of ``split``, resized to ``size`` (None: as stored). Shards are
    read as untrusted (images bounded by the build's image size); a bad sample raises ``ShardError`` naming it."""
    import cv2

    manifest = schema.read_manifest(shards)
    if split not in manifest["splits"]:
        raise ValueError(f"{shards}: no {split!r} split in the manifest (has {', '.join(manifest['splits'])})")
    side = size or int(manifest["image_size"])
    limits = Limits.for_image_size(int(manifest["image_size"]))
    images, objects = [], []
    for shard in manifest["splits"][split]["shards"]:
        path = shards / shard["path"]
        for key, fields in iter_records(path, fields={schema.IMAGE, schema.MASK}, limits=limits):
            if schema.MASK not in fields:
                continue  # no annotation: we cannot know which pixels are background
            if schema.IMAGE not in fields:
                raise ShardError(path, f"a {schema.MASK} without its {schema.IMAGE}", key=key)
            try:
                image = encode.decode_image(fields[schema.IMAGE], limits.pixels)
                obj = encode.decode_mask(fields[schema.MASK], limits.pixels)
            except (OSError, ValueError) as e:
                raise ShardError(path, f"image or mask does not decode ({type(e).__name__}: {e})", key=key) from None
            if image.shape[:2] != obj.shape:
                raise ShardError(path, f"image {image.shape[:2]} and mask {obj.shape} differ in size", key=key)
            if image.shape[:2] != (side, side):
                image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
                obj = cv2.resize(obj.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0
            images.append(image)
            objects.append(obj)
            if len(images) >= limit:
                return np.stack(images), np.stack(objects), side
    if not images:
        raise ValueError(f"{shards}: the {split!r} split has no annotated samples to learn backgrounds from")
    return np.stack(images), np.stack(objects), side


@dataclass
class Draw:
    """A batch of training inputs: the model's holes, the supervised pixels and the random rectangles."""

    images: list[np.ndarray]
    holes: list[np.ndarray]  # the model's hole: random rectangle | object rectangle
    targets: np.ndarray  # [n, H, W] bool: random rectangle minus the (dilated) object rectangle
    rects: np.ndarray  # [n, 4] top, left, height, width of the random rectangles


@dataclass
class Holes:
    """Images and their object rectangles (grown by 2 px against JPEG halos), to draw training holes from."""

    images: np.ndarray
    objects: np.ndarray  # [n, H, W] bool object rectangles
    low: int
    high: int

    @classmethod
    def of(cls, images: np.ndarray, objects: np.ndarray, low: float, high: float) -> Holes:
        import cv2

        side = images.shape[1]
        empty = np.zeros(objects.shape[1:], bool)
        rects = [r if (r := masks.cf_hole(o, None, o.shape)) is not None else empty for o in objects]
        grown = np.stack([cv2.dilate(r.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for r in rects])
        return cls(images, grown, max(int(low * side), 4), max(int(high * side), 5))

    def draw(self, rng: np.random.Generator, n: int, tries: int = 50) -> Draw:
        """``n`` random training inputs; a rectangle must keep a quarter of its area outside the object."""
        side = self.images.shape[1]
        images, holes, targets, rects = [], [], [], []
        while len(images) < n:
            i = int(rng.integers(len(self.images)))
            for _ in range(tries):
                h, w = (int(v) for v in rng.integers(self.low, self.high + 1, size=2))
                top, left = int(rng.integers(side - h + 1)), int(rng.integers(side - w + 1))
                rect = np.zeros((side, side), bool)
                rect[top : top + h, left : left + w] = True
                target = rect & ~self.objects[i]
                if target.sum() >= 0.25 * h * w:
                    images.append(self.images[i])
                    holes.append(rect | self.objects[i])
                    targets.append(target)
                    rects.append((top, left, h, w))
                    break
        return Draw(images, holes, np.stack(targets), np.array(rects))


# -- critics and losses --------------------------------------------------------------------------------------------


class Critic(nn.Module):
    """A DeepFill v1 WGAN critic: four 5x5 stride-2 convolutions (LeakyReLU 0.2) and a linear score.

    Upstream's global critic ends with 4 * cnum channels, the local one with 8 * cnum (``last``).
    """

    def __init__(self, size: int, cnum: int, last: int = 4) -> None:
        super().__init__()
        chans = [3, cnum, 2 * cnum, 4 * cnum, last * cnum]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 5, 2) for a, b in zip(chans[:-1], chans[1:], strict=True))
        side = size
        for _ in range(4):
            side = math.ceil(side / 2)
        self.fc = nn.Linear(last * cnum * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv_same(x, conv.weight, conv.bias, 2), 0.2)
        return self.fc(x.flatten(1))


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 on random interpolates; ``mask`` limits the norm to its pixels."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    squared = grad.pow(2) if mask is None else grad.pow(2) * mask
    return ((squared.flatten(1).sum(dim=1) + 1e-12).sqrt() - 1).pow(2).mean()


def discount(h: int, w: int, gamma: float) -> np.ndarray:
    """[h, w] weights gamma ** (distance to the rectangle's nearest border), DeepFill v1's spatial discount
    exactly as upstream writes it: ``min(i, h - i)``, so the top/left edge gets 1 and the bottom/right gamma."""
    dy, dx = np.arange(h), np.arange(w)
    ey, ex = np.minimum(dy, h - dy), np.minimum(dx, w - dx)
    return np.maximum(gamma ** ey[:, None], gamma ** ex[None, :])


def loss_weights(draw: Draw, gamma: float) -> np.ndarray:
    """[n, H, W] discounted weights on the supervised pixels, zero elsewhere."""
    out = np.zeros(draw.targets.shape, np.float32)
    for k, (top, left, h, w) in enumerate(draw.rects):
        out[k, top : top + h, left : left + w] = discount(h, w, gamma)
    return out * draw.targets


def local_patches(x: torch.Tensor, draw: Draw, keep: torch.Tensor, size: int) -> torch.Tensor:
    """The random rectangles of ``x`` with the object blanked (``keep`` = 0 there), resized to size x size."""
    patches = []
    for k, (top, left, h, w) in enumerate(draw.rects.tolist()):
        patch = (x[k] * keep[k])[:, top : top + h, left : left + w]
        patches.append(F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(patches)


# -- evaluation ----------------------------------------------------------------------------------------------------


def masked_l1(a: list[np.ndarray], b: list[np.ndarray], holes: list[np.ndarray] | np.ndarray) -> float:
    """Mean absolute difference on the ``holes`` pixels, in [0, 1] units of the 8-bit range."""
    diffs = [np.abs(x.astype(np.float64) - y.astype(np.float64))[h].mean() for x, y, h in zip(a, b, holes, strict=True)]
    return float(np.mean(diffs) / 255.0)


def evaluate(model: Generator, held_out: Draw, side: int, device: torch.device) -> dict[str, float]:
    """Masked L1 of CAGAN and of the tile infill on the supervised pixels of the same held-out holes."""
    images, holes, targets = held_out.images, held_out.holes, held_out.targets
    was_training = model.training
    inpainter = Inpainter(model, size=side, batch_size=32, device=device)
    filled = inpainter(images, holes)
    model.train(was_training)
    tile = get_infill("tile").fill
    tiled = [tile(im, h, np.random.default_rng(0)) for im, h in zip(images, holes, strict=True)]
    return {"cagan_l1": masked_l1(filled, images, targets), "tile_l1": masked_l1(tiled, images, targets)}


# -- the loop ------------------------------------------------------------------------------------------------------


def train(
    shards: Path,
    out: Path,
    config: TrainConfig,
    *,
    run_dir: Path,
    init: Path | None = None,
    resume: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Train, checkpoint, evaluate, and write the generator to ``out``; returns the final evaluation."""
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    has_val = "val" in schema.read_manifest(shards)["splits"]
    extra = 0 if has_val else config.eval_holes  # without a val split, the last train images are held out
    images, objects, side = read_split(shards, "train", config.size, config.max_images + extra)
    if side % 8:
        raise ValueError(f"working size {side} is not a multiple of 8; pass --size (e.g. {side // 8 * 8 or 8})")
    config = replace(config, size=side)
    if has_val:
        val_images, val_objects, _ = read_split(shards, "val", side, config.eval_holes)
    else:
        if len(images) < 2:
            raise ValueError(f"{shards}: no val split and fewer than 2 annotated train images to hold some out")
        keep = max(len(images) - extra, len(images) // 2)
        images, objects, val_images, val_objects = images[:keep], objects[:keep], images[keep:], objects[keep:]
    data = Holes.of(images, objects, config.hole_min, config.hole_max)
    held_out = Holes.of(val_images, val_objects, config.hole_min, config.hole_max).draw(
        np.random.default_rng([config.seed, 1]), config.eval_holes
    )
    local = max(side // 2, 8)  # the local critic's input side

    generator = Generator(config.cnum).to(dev)
    if init is not None:
        from augment.cagan.weights import load

        loaded, meta = load(init)
        if loaded.cnum != config.cnum:
            raise ValueError(f"--init {init}: cnum {loaded.cnum}, but training with --cnum {config.cnum}")
        generator.load_state_dict(loaded.state_dict())
    critic_g, critic_l = Critic(side, config.critic_cnum).to(dev), Critic(local, config.critic_cnum, last=8).to(dev)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam([*critic_g.parameters(), *critic_l.parameters()], lr=config.lr, betas=(0.5, 0.9))
    rng = np.random.default_rng([config.seed, 0])
    gp_rng = torch.Generator().manual_seed(config.seed)
    step, history = 0, []
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.pt"
    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no {state_path}; start without --resume")
        state = torch.load(state_path, map_location=dev, weights_only=True)
        for module, key in (
            (generator, "generator"),
            (critic_g, "critic_global"),
            (critic_l, "critic_local"),
            (opt_g, "opt_g"),
            (opt_d, "opt_d"),
        ):
            module.load_state_dict(state[key])
        step, history = int(state["step"]), json.loads(state["history"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        gp_rng.set_state(state["torch_rng"].cpu())  # map_location moved it; generator states live on the CPU
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))

    def checkpoint() -> None:
        state = {
            "generator": generator.state_dict(),
            "critic_global": critic_g.state_dict(),
            "critic_local": critic_l.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "step": step,
            "history": json.dumps(history),
            "numpy_rng": json.dumps(rng.bit_generator.state),
            "torch_rng": gp_rng.get_state(),
        }
        write_atomic(state_path, lambda tmp: torch.save(state, tmp))

    def forward(draw: Draw) -> tuple[torch.Tensor, ...]:
        """Generator outputs for a batch, and what the critics compare (object rectangle blanked in both)."""
        x, m = to_model(draw.images, draw.holes, side)
        weights = torch.from_numpy(loss_weights(draw, config.gamma)).unsqueeze(1)
        objects = torch.from_numpy(np.stack(draw.holes) & ~draw.targets).unsqueeze(1).float()
        x, m, weights, keep = x.to(dev), m.to(dev), weights.to(dev), (1 - objects).to(dev)
        coarse, refined = generator(x, m)
        complete = refined * m + x * (1 - m)
        real_l, fake_l = local_patches(x, draw, keep, local), local_patches(complete, draw, keep, local)
        return x, m, weights, coarse, refined, x * keep, complete * keep, real_l, fake_l

    def critic_step(real_g, fake_g, real_l, fake_l, m) -> torch.Tensor:
        """One WGAN-GP update of both critics; the global penalty counts gradients on hole pixels (upstream)."""
        d_loss = critic_g(fake_g).mean() - critic_g(real_g).mean() + critic_l(fake_l).mean() - critic_l(real_l).mean()
        d_loss = d_loss + config.gp_lambda * (
            gradient_penalty(critic_g, real_g, fake_g, gp_rng, m) + gradient_penalty(critic_l, real_l, fake_l, gp_rng)
        )
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        return d_loss.detach()

    generator.train()
    started = time.perf_counter()
    from tqdm import tqdm

    first = step
    for step in tqdm(range(first, config.steps), initial=first, total=config.steps, desc="cagan train", unit="step"):
        for _ in range(config.critic_steps - 1):  # critic-only updates on fresh batches (upstream: 5 per step)
            with torch.no_grad():
                x, m, *_, real_g, fake_g, real_l, fake_l = forward(data.draw(rng, config.batch_size))
            critic_step(real_g, fake_g, real_l, fake_l, m)
        draw = data.draw(rng, config.batch_size)
        x, m, weights, coarse, refined, real_g, fake_g, real_l, fake_l = forward(draw)
        d_loss = critic_step(real_g, fake_g.detach(), real_l, fake_l.detach(), m)

        # generator: discounted L1 on the supervised background (a mean over the rectangles' pixels, as upstream
        # averages over the local patch), L1 outside the hole, and the critics' scores
        area = 3 * float(np.prod(draw.rects[:, 2:], axis=1).sum())
        l1 = config.coarse_alpha * ((x - coarse).abs() * weights).sum() / area
        l1 = l1 + ((x - refined).abs() * weights).sum() / area
        known = 1 - m
        ae = config.coarse_alpha * ((x - coarse).abs() * known).mean() + ((x - refined).abs() * known).mean()
        ae = ae / known.mean()
        adv = -(critic_g(fake_g).mean() + critic_l(fake_l).mean())
        g_loss = config.l1_alpha * l1 + config.ae_alpha * ae + config.gan_alpha * adv
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            generator.eval()
            scores = evaluate(generator, held_out, side, dev)
            generator.train()
            history.append(
                {
                    "step": done,
                    "l1": round(l1.item(), 5),
                    "d_loss": round(d_loss.item(), 5),
                    **scores,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            log.info(
                "step %d: masked L1 on held-out holes: cagan %.4f, tile %.4f",
                done,
                scores["cagan_l1"],
                scores["tile_l1"],
            )
        if done % config.checkpoint_every == 0 or done == config.steps:
            step = done
            checkpoint()
    step = config.steps

    generator.eval()
    final = (
        history[-1]
        if history and history[-1]["step"] == config.steps
        else {"step": config.steps, **evaluate(generator, held_out, side, dev)}
    )
    save(
        out,
        generator.state_dict(),
        cnum=config.cnum,
        size=side,
        source=f"augment cagan train on {shards}",
        extra={"steps": str(config.steps), "config": json.dumps(asdict(config))},
    )
    result = {"weights": str(out), "final": final, "history": history, "config": asdict(config), "shards": str(shards)}
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    return result
