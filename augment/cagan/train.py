"""``augment cagan train``: train or fine-tune the generator on a dataset's own backgrounds (self-supervised).

No weights can be downloaded here, and the paper notes that fitting the inpainter to the target data helps. We
cut random square holes that avoid the annotated object (so the model learns to continue *background*, the
thing CF images need), and train with the DeepFill v1 objective:

- spatially discounted L1 inside the hole (weight ``gamma ** distance to the hole border``, gamma = 0.9) on the
  coarse and refined outputs, plus plain L1 outside it ("ae" loss), coarse terms weighted 1.2 as in the release
  config (L1 and AE alphas 1.2, GAN alpha 0.001, WGAN-GP lambda 10, Adam lr 1e-4, betas 0.5/0.9);
- WGAN-GP critics on the whole image (global) and on the hole patch (local).

Training state (generator, critics, optimizers, step, RNG) is checkpointed atomically to ``<run>/state.pt`` and
``--resume`` continues from it; loading uses ``torch.load(weights_only=True)``. The result is our safetensors
file with ``size``/``cnum`` metadata. Every ``eval_every`` steps, and at the end, the masked L1 on held-out
holes of the ``val`` split is measured for CAGAN and for the ``tile`` infill, side by side.
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

from augment import encode, schema
from augment.cagan.inpaint import Inpainter, resolve_device, to_model
from augment.cagan.net import Generator, conv_same
from augment.cagan.weights import DEFAULT_SIZE, save
from augment.infill import get_infill
from augment.shards import iter_records

log = logging.getLogger("augment.cagan")


@dataclass
class TrainConfig:
    """Training options; ``PRESETS`` hold the defaults a user starts from."""

    size: int | None = None  # working side (multiple of 8); None: the shards' stored size
    hole: float = 0.25  # hole side as a fraction of ``size``
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
    max_images: int = 5000  # training backgrounds held in memory
    eval_holes: int = 200  # held-out (image, hole) pairs from the val split
    eval_every: int = 500
    checkpoint_every: int = 100
    seed: int = 0


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(size=32, batch_size=2, steps=3, cnum=8, critic_cnum=8, eval_holes=4, eval_every=3,
                 checkpoint_every=2, max_images=16),
    "demo": dict(batch_size=8, steps=600, cnum=16, critic_cnum=16, eval_holes=200, eval_every=200,
                 checkpoint_every=50, max_images=2000),
    "full": dict(size=DEFAULT_SIZE, batch_size=16, steps=20000),
}  # fmt: skip


# -- data: backgrounds and holes that avoid the object ------------------------------------------------------------


def hole_positions(obj: np.ndarray, side: int) -> np.ndarray:
    """[n, 2] (top, left) of every side x side square that contains no object pixel (integral image)."""
    h, w = obj.shape
    if side > h or side > w:
        return np.zeros((0, 2), np.int64)
    ii = np.pad(obj.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]
    return np.argwhere(sums == 0)


def read_split(shards: Path, split: str, size: int | None, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``limit`` (image, object mask) pairs of ``split``, resized to ``size`` (None: as stored)."""
    import cv2

    manifest = schema.read_manifest(shards)
    if split not in manifest["splits"]:
        raise ValueError(f"{shards}: no {split!r} split in the manifest (has {', '.join(manifest['splits'])})")
    side = size or int(manifest["image_size"])
    images, objects = [], []
    for shard in manifest["splits"][split]["shards"]:
        for _, fields in iter_records(shards / shard["path"]):
            if schema.MASK not in fields:
                continue  # no annotation: we cannot know which pixels are background
            image, obj = encode.decode_image(fields[schema.IMAGE]), encode.decode_mask(fields[schema.MASK])
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
class Holes:
    """Training images with at least one object-free hole position, and those positions."""

    images: np.ndarray
    positions: list[np.ndarray]
    side: int

    @classmethod
    def of(cls, images: np.ndarray, objects: np.ndarray, side: int) -> Holes:
        positions = [hole_positions(o, side) for o in objects]
        keep = [i for i, p in enumerate(positions) if len(p)]
        if not keep:
            raise ValueError(f"no image has a {side}x{side} hole free of the object; lower --hole")
        return cls(images[keep], [positions[i] for i in keep], side)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """``n`` random (image, hole) pairs and the holes' (top, left)."""
        idx = rng.integers(len(self.images), size=n)
        corners = np.stack([self.positions[i][rng.integers(len(self.positions[i]))] for i in idx])
        holes = []
        for top, left in corners:
            hole = np.zeros(self.images.shape[1:3], bool)
            hole[top : top + self.side, left : left + self.side] = True
            holes.append(hole)
        return [self.images[i] for i in idx], holes, corners


# -- critics and losses --------------------------------------------------------------------------------------------


class Critic(nn.Module):
    """A DeepFill v1 WGAN critic: four 5x5 stride-2 convolutions (LeakyReLU 0.2) and a linear score."""

    def __init__(self, size: int, cnum: int) -> None:
        super().__init__()
        chans = [3, cnum, 2 * cnum, 4 * cnum, 4 * cnum]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 5, 2) for a, b in zip(chans[:-1], chans[1:], strict=True))
        side = size
        for _ in range(4):
            side = math.ceil(side / 2)
        self.fc = nn.Linear(4 * cnum * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv_same(x, conv.weight, conv.bias, 2), 0.2)
        return self.fc(x.flatten(1))


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def discount(side: int, gamma: float) -> torch.Tensor:
    """[side, side] weights gamma ** (distance to the nearest hole border), the DeepFill v1 spatial discount."""
    d = torch.arange(side)
    edge = torch.minimum(d, side - 1 - d).float()
    return torch.maximum(gamma ** edge[:, None], gamma ** edge[None, :])


def crop(x: torch.Tensor, corners: torch.Tensor, side: int) -> torch.Tensor:
    """The hole patches [N, C, side, side] of ``x`` at ``corners`` (top, left)."""
    patches = [x[i, :, top : top + side, left : left + side] for i, (top, left) in enumerate(corners.tolist())]
    return torch.stack(patches)


# -- evaluation ----------------------------------------------------------------------------------------------------


def masked_l1(a: list[np.ndarray], b: list[np.ndarray], holes: list[np.ndarray]) -> float:
    """Mean absolute difference inside the holes, in [0, 1] units of the 8-bit range."""
    diffs = [np.abs(x.astype(np.float64) - y.astype(np.float64))[h].mean() for x, y, h in zip(a, b, holes, strict=True)]
    return float(np.mean(diffs) / 255.0)


def evaluate(model: Generator, held_out: tuple[list, list], side: int, device: torch.device) -> dict[str, float]:
    """Masked L1 of CAGAN and of the tile infill on the same held-out holes."""
    images, holes = held_out
    was_training = model.training
    inpainter = Inpainter(model, size=side, batch_size=32, device=device)
    filled = inpainter(images, holes)
    model.train(was_training)
    tile = get_infill("tile").fill
    tiled = [tile(im, h, np.random.default_rng(0)) for im, h in zip(images, holes, strict=True)]
    return {"cagan_l1": masked_l1(filled, images, holes), "tile_l1": masked_l1(tiled, images, holes)}


# -- the loop ------------------------------------------------------------------------------------------------------


def train(shards: Path, out: Path, config: TrainConfig, *, run_dir: Path, init: Path | None = None,
          resume: bool = False, device: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Train, checkpoint, evaluate, and write the generator to ``out``; returns the final evaluation."""
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    images, objects, side = read_split(shards, "train", config.size, config.max_images)
    if side % 8:
        raise ValueError(f"working size {side} is not a multiple of 8; pass --size (e.g. {side // 8 * 8 or 8})")
    config = replace(config, size=side)
    hole = max(int(round(config.hole * side)), 4)
    data = Holes.of(images, objects, hole)
    val_images, val_objects, _ = read_split(shards, "val", side, config.eval_holes)
    val = Holes.of(val_images, val_objects, hole)
    ev_images, ev_holes, _ = val.draw(np.random.default_rng([config.seed, 1]), config.eval_holes)
    held_out = (ev_images, ev_holes)

    generator = Generator(config.cnum).to(dev)
    if init is not None:
        from augment.cagan.weights import load

        loaded, meta = load(init)
        if loaded.cnum != config.cnum:
            raise ValueError(f"--init {init}: cnum {loaded.cnum}, but training with --cnum {config.cnum}")
        generator.load_state_dict(loaded.state_dict())
    critic_g, critic_l = Critic(side, config.critic_cnum).to(dev), Critic(hole, config.critic_cnum).to(dev)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam([*critic_g.parameters(), *critic_l.parameters()], lr=config.lr, betas=(0.5, 0.9))
    rng = np.random.default_rng([config.seed, 0])
    gp_rng = torch.Generator().manual_seed(config.seed)
    weights = discount(hole, config.gamma).to(dev)
    step, history = 0, []
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.pt"
    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no {state_path}; start without --resume")
        state = torch.load(state_path, map_location=dev, weights_only=True)
        for module, key in ((generator, "generator"), (critic_g, "critic_global"), (critic_l, "critic_local"),
                            (opt_g, "opt_g"), (opt_d, "opt_d")):  # fmt: skip
            module.load_state_dict(state[key])
        step, history = int(state["step"]), json.loads(state["history"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        gp_rng.set_state(state["torch_rng"])
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))

    def checkpoint() -> None:
        state = {"generator": generator.state_dict(), "critic_global": critic_g.state_dict(),
                 "critic_local": critic_l.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "step": step, "history": json.dumps(history), "numpy_rng": json.dumps(rng.bit_generator.state),
                 "torch_rng": gp_rng.get_state()}  # fmt: skip
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(state_path)

    generator.train()
    started = time.perf_counter()
    from tqdm import tqdm

    first = step
    for step in tqdm(range(first, config.steps), initial=first, total=config.steps, desc="cagan train", unit="step"):
        batch, holes, corners = data.draw(rng, config.batch_size)
        x, m = to_model(batch, holes, side)
        x, m, corners_t = x.to(dev), m.to(dev), torch.from_numpy(corners)
        coarse, refined = generator(x, m)
        complete = refined * m + x * (1 - m)
        real_local, fake_local = crop(x, corners_t, hole), crop(complete, corners_t, hole)

        # critics: WGAN-GP on the whole image and on the hole patch
        fake_g, fake_l = complete.detach(), fake_local.detach()
        d_loss = critic_g(fake_g).mean() - critic_g(x).mean() + critic_l(fake_l).mean() - critic_l(real_local).mean()
        d_loss = d_loss + config.gp_lambda * (gradient_penalty(critic_g, x, fake_g, gp_rng)
                                              + gradient_penalty(critic_l, real_local, fake_l, gp_rng))  # fmt: skip
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        # generator: discounted L1 in the hole, L1 outside it, and the critics' scores
        l1 = config.coarse_alpha * ((real_local - crop(coarse, corners_t, hole)).abs() * weights).mean()
        l1 = l1 + ((real_local - crop(refined, corners_t, hole)).abs() * weights).mean()
        known = 1 - m
        ae = config.coarse_alpha * ((x - coarse).abs() * known).mean() + ((x - refined).abs() * known).mean()
        ae = ae / known.mean()
        adv = -(critic_g(complete).mean() + critic_l(fake_local).mean())
        g_loss = config.l1_alpha * l1 + config.ae_alpha * ae + config.gan_alpha * adv
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            generator.eval()
            scores = evaluate(generator, held_out, side, dev)
            generator.train()
            history.append({"step": done, "l1": round(l1.item(), 5), "d_loss": round(d_loss.item(), 5), **scores,
                            "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
            log.info("step %d: masked L1 on held-out holes: cagan %.4f, tile %.4f", done, scores["cagan_l1"],
                     scores["tile_l1"])  # fmt: skip
        if done % config.checkpoint_every == 0 or done == config.steps:
            step = done
            checkpoint()
    step = config.steps

    generator.eval()
    final = history[-1] if history and history[-1]["step"] == config.steps else {
        "step": config.steps, **evaluate(generator, held_out, side, dev)}  # fmt: skip
    save(out, generator.state_dict(), cnum=config.cnum, size=side, source=f"augment cagan train on {shards}",
         extra={"steps": str(config.steps), "hole": str(hole), "config": json.dumps(asdict(config))})  # fmt: skip
    result = {"weights": str(out), "final": final, "history": history, "config": asdict(config),
              "shards": str(shards)}  # fmt: skip
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    return result
