"""``train fit``: fine-tune a classifier on augment shards with the combined objective of Chang et al.

Reads top to bottom: config -> data -> model -> optimizer -> loop -> eval -> checkpoint.

    train fit --shards shards/demo --preset demo --cf tile --f shuffle --out runs/demo-cf-f

Loss per batch (docs/METHOD.md, Loss), with every term's sum divided by the total number of rows in the batch
(originals + CF + F + FGSM images), as in the paper's code:

    L = [sum CE(x, y) + sum CE(x_f, y) + cf_weight * sum L_cf(x_cf, y) + sum CE(x_fgsm, y)] / rows + sal * L_sal

CF/F/FGSM rows exist only for samples with an object annotation. Progress: on a terminal, one run at a time, a
tqdm bar per epoch (steps, ETA, running loss and img/s; ``TQDM_DISABLE=1`` turns it off); otherwise (a pipe, a log
file, ``train study --jobs N`` running fits side by side) one line per ``LOG_EVERY`` steps (loss, lr, img/s,
data-wait vs step time). Either way one summary line per epoch (``epoch N: {...}``, the log.csv row) and one CSV row
per epoch; checkpoints atomically every epoch; ``--resume`` continues exactly (model, optimizer, scheduler, epoch,
best metric, RNG states).

DDP: ``torchrun --nproc-per-node N -m train fit ...`` runs one process per device (gloo on the CPU, nccl on
cuda:LOCAL_RANK); ``--batch-size`` is per process. Each step makes one forward of the wrapped model (originals, CF,
F and FGSM rows together; FGSM attacks the unwrapped module) and one backward. With Sal on a model with BatchNorm,
or on any model under ``--amp``, the penalty comes from a second, per-image forward of the unwrapped module, run with
its double backward in fp32 (see ``losses.per_image_saliency_penalty``): in the joint train-mode forward, batch
statistics mix the other images into each image's gradient, and half precision is unstable in the double backward.
Rank 0 evaluates, writes the run folder and sends its validation score (and loss) to the others, so that every rank
selects, schedules and stops alike; ``--resume`` reads ``<out>/last.pt`` on every rank (a folder they all see).

Speed: ``--channels-last`` (auto: on CUDA only) puts the model in the NHWC layout; ``--compile`` runs the step's
forward and backward through ``torch.compile`` of the wrapped model (DDP inside it, as torch documents). Evaluation,
FGSM's attack and Sal's double backward use the plain module, and checkpoints hold its state dict (no ``_orig_mod.``
prefix), so a compiled run's checkpoints load into any model.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from augment.contract.files import write_atomic
from augment.contract.zoo.devices import resolve_device
from augment.contract.zoo.models import build_model, checkpoint_state
from train import evaluate
from train.config import Config
from train.data import Fields, ShardStream, batches, loader, manifest_sha256, prepare, read_manifest
from train.ledger import DataError, Ledger, verify_hint
from train.losses import (
    cf_loss,
    fgsm_background,
    has_batch_statistics,
    mixup,
    per_image_saliency_penalty,
    saliency_penalty,
    twice_differentiable,
)
from train.progress import Progress, run_tag, show_progress
from train.terms import FGSM, TERMS

log = logging.getLogger("train")
LOG_EVERY = 20  # steps


def fit(
    config: Config,
    resume: bool = False,
    verify: bool = False,
    stop_after: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train, select on val, evaluate every split; ``stop_after`` ends the call after that epoch's checkpoint
    (what an interruption looks like, for tests of ``resume``). ``progress``: a tqdm bar per epoch on rank 0 instead
    of the per-step log lines (None: ``show_progress()``). Returns the results on rank 0, {} elsewhere."""
    rank, world_size, device = start_processes(config.device)
    threads = torch.get_num_threads()  # run() may lower it for its DataLoader workers; the caller gets it back
    try:
        with Progress.on(rank == 0 and (show_progress() if progress is None else progress)) as bar:
            return run(config, rank, world_size, device, resume, verify, stop_after, bar)
    finally:
        torch.set_num_threads(threads)
        if world_size > 1:
            dist.destroy_process_group()


def run(
    config: Config,
    rank: int,
    world_size: int,
    device: torch.device,
    resume: bool,
    verify: bool,
    stop_after: int | None,
    bar: Progress | None = None,
) -> dict[str, Any]:
    # ---- config ------------------------------------------------------------------------------------------------
    main = rank == 0  # writes the run folder and evaluates
    tag = run_tag(config)
    out = Path(config.out)
    if (out / "last.pt").exists() and not resume:
        raise ValueError(f"--out {out}: holds a run already; pass --resume to continue it, or choose another --out")
    seed_everything(config.seed)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # leave a core to each DataLoader worker: intra-op threads that compete with the workers for the cores slow
        # training down (docs/benchmarks.md, section 7); never more threads than the caller set (train study sets
        # each run's share)
        torch.set_num_threads(min(torch.get_num_threads(), max(1, (os.cpu_count() or 1) - config.workers)))

    # ---- data --------------------------------------------------------------------------------------------------
    manifest = read_manifest(config.shards, verify=verify and main)
    built = manifest_sha256(config.shards)  # names the build: results and checkpoints carry it
    classes = manifest["dataset"]["classes"]
    config.check_build(manifest)  # its val split and CF/F images are in the build
    # every stream of the run (train, val, the final evaluation) reports what it cannot read here: by default the
    # first bad sample, short shard or changed shard stops the run; --max-bad-samples N skips and lists up to N
    ledger = Ledger(config.max_bad_samples, root=config.shards)
    fields = Fields(cf=config.cf, f=config.f)
    crop = config.crop_size(manifest["image_size"])
    train_stream = ShardStream(
        config.shards,
        manifest,
        "train",
        fields,
        train=True,
        crop=crop,
        seed=config.seed,
        batch_size=config.batch_size,
        rank=rank,
        world_size=world_size,
        fraction=config.train_fraction,
        ledger=ledger,
    )
    train_loader = loader(train_stream, config.batch_size, config.workers, drop_last=True)
    steps_per_epoch = train_stream.steps  # the same on every rank
    if steps_per_epoch == 0:
        raise ValueError(
            f"{config.shards}: {train_stream.num_samples} train samples make no full batch of "
            f"{config.batch_size} for each of {world_size} process(es); lower --batch-size"
        )

    # ---- model -------------------------------------------------------------------------------------------------
    # DDP broadcasts rank 0's weights to the others, whose own random initialisation is never used: only rank 0
    # says that the run trains from scratch
    module = build_model(
        config.arch,
        len(classes),
        config.weights,
        zero_head=config.zero_head,
        from_checkpoint=not main,
        normalisation=config.normalisation,
        input_size=crop,  # a model of fixed input size (ViT) is built for the crop
    ).to(device)
    evaluate.check_saliency(module, config, crop)  # a --saliency the model cannot take stops here, not after training
    if uses_channels_last(config.channels_last, device):
        module = module.to(memory_format=torch.channels_last)
    model = module  # the training step's; ``module`` stays the plain model that is evaluated and saved
    if world_size > 1:  # broadcasts rank 0's weights now, averages gradients in every backward
        model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:  # around DDP, as torch documents it: TorchDynamo splits the graph at DDP's gradient buckets
        model = torch.compile(model)

    # ---- optimizer and schedule --------------------------------------------------------------------------------
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            module.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.RMSprop(
            module.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    scheduler = make_scheduler(config, optimizer)
    amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)

    start, best, stale = 0, -math.inf, 0
    if resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        if state.get("manifest_sha256", built) != built:
            raise ValueError(
                f"--resume: {out / 'last.pt'} was trained on another build of --shards (manifest sha256 "
                f"{state['manifest_sha256'][:12]}..., now {built[:12]}...); choose another --out"
            )
        module.load_state_dict(checkpoint_state(config.arch, state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        set_rng_state(state["rng"])
        log.info("%sresumed from %s at epoch %d", tag, out / "last.pt", start)

    # ---- loop (the run folder is made only now that training can start) -----------------------------------------
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    rows_csv = out / "log.csv"
    for epoch in range(start, config.epochs):
        train_stream.set_epoch(epoch)
        model.train()
        totals = {"loss": 0.0, "rows": 0, "steps": 0, "data_s": 0.0, "step_s": 0.0}
        if bar is not None:
            bar.epoch(epoch, config.epochs, steps_per_epoch)
        tick = time.perf_counter()
        for step, batch in enumerate(batches(train_loader, ledger)):
            loaded = time.perf_counter()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                loss, rows = objective(model, batch, config, len(classes), device, epoch * steps_per_epoch + step, rank)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.clip)
            scaler.step(optimizer)
            scaler.update()
            done = time.perf_counter()
            totals["loss"] += loss.item()
            totals["rows"] += rows
            totals["steps"] += 1
            totals["data_s"] += loaded - tick
            totals["step_s"] += done - loaded
            if bar is not None:  # the epoch's running mean loss and throughput
                bar.step(totals["loss"] / totals["steps"], totals["rows"] / (totals["data_s"] + totals["step_s"]))
            elif step % LOG_EVERY == 0:
                log.info(
                    "%sepoch %d step %d/%d loss %.4f lr %.2e %.0f img/s data %.3fs step %.3fs",
                    tag,
                    epoch,
                    step,
                    steps_per_epoch,
                    loss.item(),
                    optimizer.param_groups[0]["lr"],
                    rows / (done - tick),
                    loaded - tick,
                    done - loaded,
                )
            tick = time.perf_counter()
        ledger.collect()  # what this rank's workers skipped, against --max-bad-samples
        if world_size > 1 and ledger.allowed:  # and every other rank's: the bound is the run's
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, list(ledger.items.values()))
            for item in (i for items in gathered for i in items):
                ledger.add(item)
            ledger.check(f"rank {rank}, epoch {epoch}")
        if totals["steps"] != steps_per_epoch:
            raise DataError(
                f"epoch {epoch} read {totals['steps']} of its {steps_per_epoch} batches from "
                f"{config.shards}; {verify_hint(config.shards)}"
            )
        if world_size > 1:  # the epoch's loss and rows over all ranks; BatchNorm statistics as on rank 0
            summed = torch.tensor([totals["loss"], totals["rows"], totals["steps"]], dtype=torch.float64, device=device)
            dist.all_reduce(summed)
            totals["loss"], totals["rows"], totals["steps"] = summed.tolist()
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

        # ---- eval and checkpoint (rank 0; the others wait for its score, then decide as it does) -----------------
        score, val_loss = 0.0, 0.0
        if bar is not None:
            bar.note(f"loss {totals['loss'] / max(totals['steps'], 1):.4f}, evaluating {config.val_split}")
        if main:
            val = evaluate.split_metrics(
                module, config.shards, manifest, config.val_split, crop, config, device, ledger
            )
            score = val["accuracy"] if config.select == "accuracy" else (val.get("macro_auc") or 0.0)
            val_loss = val["loss"]
        if world_size > 1:
            score, val_loss = from_rank0(score, device), from_rank0(val_loss, device)
        if config.schedule == "plateau":  # on the validation loss, as the official Waterbirds code
            scheduler.step(val_loss)
        else:
            scheduler.step()
        improved = score > best
        best, stale = (score, 0) if improved else (best, stale + 1)
        if main:
            seconds = max(totals["data_s"] + totals["step_s"], 1e-9)
            row = {
                "epoch": epoch,
                "loss": totals["loss"] / totals["steps"],
                "lr": optimizer.param_groups[0]["lr"],
                f"val_{config.select}": score,
                "val_loss": val_loss,
                "img_per_s": totals["rows"] / seconds,
                "data_wait_fraction": totals["data_s"] / seconds,
            }
            append_csv(rows_csv, row)
            log.info("%sepoch %d: %s", tag, epoch, json.dumps({k: round(v, 4) for k, v in row.items()}))
            state = {
                "model": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best": best,
                "stale": stale,
                "rng": rng_state(),
                "config": config.to_dict(),
                "classes": classes,
                "input_size": crop,
                "manifest_sha256": built,
            }
            atomic_save(state, out / "last.pt")
            if improved:
                atomic_save(
                    {
                        "model": module.state_dict(),
                        "epoch": epoch,
                        "config": config.to_dict(),
                        "classes": classes,
                        "input_size": crop,
                    },
                    out / "best.pt",
                )
        if config.early_stop and stale >= config.early_stop:
            log.info("%searly stop: no %s gain for %d epochs", tag, config.select, stale)
            break
        if stop_after is not None and epoch >= stop_after:
            return {}
    if not main:
        return {}

    # ---- final evaluation on every split, with the selected model ------------------------------------------------
    if bar is not None:
        bar.note(", ".join(s for s in manifest["splits"] if s != "train"), "final evaluation of best.pt on")
    module.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
    results = evaluate.evaluate_all(
        module, config.shards, manifest, crop, config, device, ledger, progress=bar is not None
    )  # bars where this run draws them
    results["method"] = config.method_name()
    results["manifest_sha256"] = built  # which build it learnt from: the study retrains when the build changes
    evaluate.write_results(out, results)
    return results


def objective(model, batch: dict[str, Any], config: Config, num_classes: int, device, step: int, rank: int = 0):
    """The batch loss and its number of rows (see the module docstring). ``model`` may be DDP-wrapped: it then
    runs exactly one forward, and the FGSM attack runs on the unwrapped module outside DDP's bookkeeping. ``model``
    may be compiled (``--compile``): the joint forward runs compiled, except where Sal takes its double backward
    through it (a compiled graph's backward is not differentiable again); FGSM's attack (in eval mode) and the
    per-image Sal forward run the plain module."""
    batch = prepare(batch, device, non_blocking=True)  # uint8 from the loader, normalised here, on the device
    x, y, has = batch["image"], batch["label"], batch["has_object"]
    background = (1.0 - batch["mask"]) * has[:, None, None, None]  # 0 on the object and without a mask
    draws = random.Random(f"{config.seed}:{step}:{rank}")  # every random draw of the step comes from here
    generator = torch.Generator(device=device).manual_seed(draws.getrandbits(63))
    plain = getattr(model, "_orig_mod", model)  # what torch.compile wrapped, if it did
    net = plain.module if isinstance(plain, DistributedDataParallel) else plain

    if config.mixup:
        lam = draws.betavariate(config.mixup, config.mixup)
        mixed, soft = mixup(x, y, lam, num_classes, generator)
        return torch.sum(-soft * F.log_softmax(model(mixed), dim=1), dim=1).mean(), x.shape[0]

    # the rows that join the originals, in the order of TERMS: the stored images of each CF and F method, then FGSM's
    extra_x, extra_y, terms = [], [], []
    for term in (t for t in TERMS if t.stored):
        for m in getattr(config, term.field):
            extra_x.append(batch[f"{term.field}.{m}"][has])
            extra_y.append(y[has])
            terms.append(term)
    if config.fgsm and has.any():
        eps = 2 * config.fgsm  # fraction of the pixel range -> the [-1, 1] scale
        extra_x.append(
            fgsm_background(net, x[has], y[has], background[has], eps, config.fgsm_steps, generator=generator)
        )
        extra_y.append(y[has])
        terms.append(FGSM)

    # Sal: each image's gradient must be its own. Without batch statistics (BiT's GroupNorm) and in fp32 the rows
    # of the joint forward are independent, so the penalty comes from it; otherwise (BatchNorm, or --amp) from a
    # per-image forward whose penalty, forward and double backward, runs in fp32.
    sal = bool(config.sal and has.any())
    joint_sal = sal and not has_batch_statistics(net) and not torch.is_autocast_enabled(device.type)
    if joint_sal:
        x = x.detach().requires_grad_(True)  # a leaf, so that the saliency gradient can be taken w.r.t. it
    with twice_differentiable() if joint_sal else nullcontext():  # the penalty's double backward runs through it
        logits = (plain if joint_sal else model)(torch.cat([x, *extra_x]))  # one forward for the whole batch
    logits_x, logits_extra = logits[: x.shape[0]], logits[x.shape[0] :]
    penalty = x.new_zeros(())
    if joint_sal:  # mean over the images that have a mask
        penalty = saliency_penalty(logits_x, x, y, background) * x.shape[0] / has.sum()
    elif sal:
        penalty = per_image_saliency_penalty(net, x[has], y[has], background[has])

    total = F.cross_entropy(logits_x, y, label_smoothing=config.label_smoothing, reduction="sum")
    offset = 0
    for part_x, part_y, term in zip(extra_x, extra_y, terms, strict=True):
        part = logits_extra[offset : offset + part_x.shape[0]]
        offset += part_x.shape[0]
        if term.loss:  # "not y", of its kind (--cf-loss)
            loss = cf_loss(part, part_y, getattr(config, term.loss)).sum()
        else:
            loss = F.cross_entropy(part, part_y, reduction="sum")
        total = total + (getattr(config, term.weight) * loss if term.weight else loss)
    rows = x.shape[0] + sum(p.shape[0] for p in extra_x)
    return total / rows + config.sal * penalty, rows


def uses_channels_last(setting: str, device: torch.device) -> bool:
    """Whether the model runs in channels_last (``--channels-last``): on, off, or auto: on CUDA only, where NHWC
    convolutions pay (cuDNN's tensor-core kernels); a CPU run keeps the layout of every result recorded on one."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def make_scheduler(config: Config, optimizer):
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=0.1)
    if config.schedule == "plateau":
        # the official Waterbirds recipe: x0.1 when the validation loss has not fallen for more than 1 epoch
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=1, factor=0.1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))  # "cosine"


def start_processes(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) this joins the process group: nccl with one
    GPU per process (cuda:LOCAL_RANK) when the device is CUDA, else gloo on the CPU."""
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    chosen = resolve_device(device)
    if world_size > 1:
        if chosen.type == "cuda":
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(chosen)
        # rank 0 evaluates (and with --verify, checks the build) while the others wait in a collective
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    return rank, world_size, chosen


def from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (a collective: every rank waits here for rank 0)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return tensor.item()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, keys.tolist(), pos, has_gauss, cached]  # plain types: loadable with weights_only=True
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp name, then rename: a crash never leaves a truncated checkpoint."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
