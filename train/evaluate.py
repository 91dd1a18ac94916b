"""Evaluation: every split of a build, with the metrics of docs/METHOD.md (Metrics), written to results.json and .tsv.

- accuracy, macro one-vs-rest AUC and AUPR, per-group and worst-group accuracy (when samples carry groups);
- BG-gap = acc(mixed_same) - acc(mixed_rand), and background reliance = mean increase of the probability of the
  class whose background was pasted in, from ``original`` to ``mixed_next`` (pairs recorded in the manifest); for
  the shifted test splits of ``--shifted-tests``, per base split, with the donor classes the records name;
- saliency AUPR: how well the input-gradient (or DeepLiftShap) attribution picks out the object mask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augment.contract import schema
from train import metrics
from train.data import Fields, ShardStream, batches, loader, prepare
from train.ledger import Ledger
from train.splits import declared_test_splits, generated_splits

EXAMPLES = 6  # images per run in the saliency overlay sheet
BASELINES = 8  # evaluation images DeepLiftShap averages over (its baselines)
TEXT = ("keys", "pair_keys", "object_ids")  # per-sample strings of predict's result
log = logging.getLogger("train")


@torch.no_grad()
def predict(
    model,
    root: str | Path,
    manifest: dict,
    split: str,
    crop: int,
    config,
    device,
    saliency_images: int | None = None,
    ledger: Ledger | None = None,
    bar=None,
) -> dict[str, Any]:
    """Logits, labels, groups and keys of a split, plus saliency scores and masks of up to ``saliency_images``
    images with an object mask (default: the config's ``max_saliency_images``; 0 = no saliency pass), chosen by
    :class:`SaliencySubset` (class-balanced, the same for every run). What cannot be read goes to ``ledger``
    (default: a fresh one that allows the config's ``max_bad_samples``). ``bar``: a tqdm bar (``progress_bar``)
    counting the split's images, then the images scored for saliency."""
    ledger = Ledger(config.max_bad_samples, root=str(root)) if ledger is None else ledger
    stream = ShardStream(root, manifest, split, Fields(), train=False, crop=crop, seed=config.seed, ledger=ledger)
    model.eval()
    out: dict[str, list] = {
        "logits": [],
        "labels": [],
        "groups": [],
        "keys": [],
        "pair_keys": [],
        "donor_labels": [],
        "object_ids": [],
    }
    budget = config.max_saliency_images if saliency_images is None else saliency_images
    subset = SaliencySubset(budget, len(manifest["dataset"]["classes"]))
    phase(bar, f"evaluating {split}", manifest["splits"][split].get("num_samples"))
    for batch in batches(loader(stream, 128, config.workers, drop_last=False), ledger):
        batch = prepare(batch, "cpu")  # normalised on the host: the saliency subset keeps some images there
        x = batch["image"].to(device)
        out["logits"].append(model(x).float().cpu())
        out["labels"].append(batch["label"])
        out["groups"].append(batch["group"])
        out["keys"].extend(batch["key"])
        out["pair_keys"].extend(batch["pair_key"])
        out["object_ids"].extend(batch["object_id"])
        out["donor_labels"].append(batch["donor_label"])
        subset.offer(batch)
        if bar is not None:
            bar.update(len(batch["label"]))
    ledger.collect()  # what the workers skipped, against the bound
    result = {k: torch.cat(v).numpy() if v and k not in TEXT else v for k, v in out.items()}
    images, masks, labels = subset.chosen()
    result["split"] = split
    result["saliency_labels"] = labels.numpy()
    result["saliency_logits"] = (
        model(images[:EXAMPLES].to(device)).float().cpu().numpy()
        if len(images)
        else np.zeros((0, len(manifest["dataset"]["classes"])), np.float32)
    )
    baselines = images[:BASELINES].to(device)
    scores = []
    if len(images):
        phase(bar, f"saliency ({config.saliency}) of {split}", len(images))
        scorer = saliency_model(model, config, images.shape[-1])  # DeepLift's copy made once per split
    for i in range(0, len(images), 64):
        x, target = images[i : i + 64].to(device), labels[i : i + 64].to(device)
        scores.append(attribute(scorer, x, target, config, baselines).cpu())
        if bar is not None:
            bar.update(len(scores[-1]))
    result["scores"] = torch.cat(scores).numpy() if scores else np.zeros((0,))
    result["masks"] = masks.numpy()
    result["images"] = ((images + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return result


def progress_bar(enabled: bool | None) -> Any:
    """The bar of a final evaluation on stderr, one phase after another (``phase``): each split's images, then its
    saliency scoring. ``enabled`` None: where `train fit` draws its bars (``train.progress.show_progress``: on a
    terminal, for a run alone); a disabled bar draws nothing."""
    from tqdm import tqdm

    if enabled is None:
        from train.progress import show_progress

        enabled = show_progress()
    return tqdm(
        desc="evaluating", total=0, unit="img", leave=False, dynamic_ncols=True, file=sys.stderr, disable=not enabled
    )


def phase(bar: Any, description: str, total: int | None) -> None:
    """Start the next phase of ``bar``: its description and count of images (None: unknown)."""
    if bar is not None:
        bar.reset(total=total)
        bar.set_description(description)  # drawn now: a phase may end before the next redraw


class SaliencySubset:
    """The images of a split that the saliency AUPR is computed on, chosen in one streaming pass: a class-balanced
    sample of up to ``budget`` images with an object mask.

    Each image gets a priority from a hash of its key alone (so every run, seed and method scores the same images,
    and the stream's order does not matter); each class keeps its ``ceil(budget / classes)`` lowest priorities.
    The result takes the classes in turn, lowest priority first, until ``budget``. Memory: at most that many
    images per class times the classes, i.e. about ``budget`` images.
    """

    def __init__(self, budget: int, num_classes: int):
        self.budget, self.per_class = budget, -(-budget // max(num_classes, 1)) if budget else 0
        self.kept: dict[int, list[tuple[int, str, torch.Tensor, torch.Tensor]]] = {}

    def offer(self, batch: dict[str, Any]) -> None:
        if not self.per_class:
            return
        for i in batch["has_object"].nonzero().flatten().tolist():
            key, label = batch["key"][i], int(batch["label"][i])
            priority = int.from_bytes(hashlib.blake2b(f"saliency:{key}".encode(), digest_size=8).digest(), "big")
            kept = self.kept.setdefault(label, [])
            if len(kept) < self.per_class or priority < kept[-1][0]:
                kept.append((priority, key, batch["image"][i].clone(), batch["mask"][i, 0] > 0.5))
                kept.sort(key=lambda item: (item[0], item[1]))
                del kept[self.per_class :]

    def chosen(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images [N, 3, H, W] in [-1, 1], masks [N, H, W] bool, labels [N]): the classes in turn."""
        order = []
        for rank in range(self.per_class):
            order += [(*kept[rank], label) for label, kept in sorted(self.kept.items()) if rank < len(kept)]
        order = order[: self.budget]
        if not order:
            return torch.zeros(0, 3, 1, 1), torch.zeros(0, 1, 1, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
        return (
            torch.stack([o[2] for o in order]),
            torch.stack([o[3] for o in order]),
            torch.tensor([o[4] for o in order]),
        )


def saliency(
    model, x: torch.Tensor, target: torch.Tensor, config, baselines: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel saliency [N, H, W] of ``config.saliency`` (``saliency_model`` then ``attribute``)."""
    return attribute(saliency_model(model, config, x.shape[-1]), x, target, config, baselines)


def saliency_model(model, config, input_size: int):
    """The model ``attribute`` scores with: DeepLiftShap's copy (``deeplift_ready``), else the model itself."""
    return deeplift_ready(model, input_size) if config.saliency == "deepliftshap" else model


def attribute(
    model, x: torch.Tensor, target: torch.Tensor, config, baselines: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel saliency [N, H, W] of ``config.saliency`` by ``model`` as ``saliency_model`` made it.
    DeepLiftShap's baselines are real evaluation images, as in the official code: ``baselines`` (the first
    ``BASELINES`` images of the split's saliency subset, the same for every run); with fewer than 2 of them, two
    seeded uniform-noise images instead (an all-grey baseline gives NaN attributions through a freshly initialised
    BiT, whose GroupNorms then see zero variance everywhere)."""
    if config.saliency == "deepliftshap":
        if baselines is None or len(baselines) < 2:
            noise = torch.Generator().manual_seed(config.seed)
            baselines = (torch.rand((2, *x.shape[1:]), generator=noise) * 2 - 1).to(x.device)
        scores, delta = metrics.deepliftshap_saliency(model, x, target, baselines)
        if delta.abs().max() > 0.05:  # attributions should add up to the change in output
            log.warning("DeepLiftShap convergence delta up to %.3g", delta.abs().max())
        return scores
    return metrics.input_gradient_saliency(model, x, target)


def deeplift_ready(model, input_size: int = 64):
    """The copy of ``model`` that captum's DeepLift needs (``zoo.models.unshare_relus``: one module per use
    of each nonlinearity, none in-place), in eval mode; a model it cannot attribute is a ValueError of one line
    naming ``--saliency gradient``.

    Per family (``metrics.deeplift_refusal`` says why): torchvision's and timm's ResNets and resnet8 (BatchNorm,
    ReLU, max pool) and BiT (GroupNorm, ReLU: the paper's) are attributed; ViTs and ConvNeXts (GELU, attention),
    EfficientNets and RegNets (SiLU), MobileNets (Hardswish, ReLU6) are refused, since captum would treat their
    activations as linear; so is a model that calls one nonlinearity module twice in a way unshare_relus cannot
    undo. ``input_size``: the side of the images, for unshare_relus's check forward.
    """
    from augment.contract.zoo.models import unshare_relus

    reason = metrics.deeplift_refusal(model)  # before the copy: the refusal needs no forward
    if reason is not None:
        raise ValueError(f"--saliency deepliftshap: {reason}; use --saliency gradient for it")
    try:
        return unshare_relus(model, input_size).eval()
    except TypeError as err:
        raise ValueError(f"--saliency deepliftshap: {' '.join(str(err).split())}") from err


def check_saliency(model, config, input_size: int = 64) -> None:
    """Refuse, before any training, a ``--saliency`` the model cannot be evaluated with (``deeplift_ready``)."""
    if config.saliency == "deepliftshap":
        deeplift_ready(model, input_size)


def split_metrics(
    model, root: str | Path, manifest: dict, split: str, crop: int, config, device, ledger: Ledger | None = None
) -> dict[str, Any]:
    """Metrics of one split without the saliency pass: what model selection needs each epoch."""
    return summarize(predict(model, root, manifest, split, crop, config, device, saliency_images=0, ledger=ledger))


def summarize(p: dict[str, Any]) -> dict[str, Any]:
    groups = p["groups"] if len(p["groups"]) and (p["groups"] >= 0).all() else None
    summary = metrics.summarize_split(p["logits"], p["labels"], groups)
    if len(p["scores"]):
        summary["saliency_aupr"] = metrics.saliency_aupr(p["scores"], p["masks"])
    summary["num_samples"] = int(len(p["labels"]))
    return summary


def evaluate_all(
    model,
    root: str | Path,
    manifest: dict,
    crop: int,
    config,
    device,
    ledger: Ledger | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Metrics on every split but train, plus the paired metrics the manifest names, and ``bad_samples``: what
    could not be read (of these splits, and of whatever else ``ledger`` saw, e.g. the training run's). ``progress``:
    a bar over each split's images and saliency scoring (None: where `train fit` draws bars, ``progress_bar``)."""
    ledger = Ledger(config.max_bad_samples, root=str(root)) if ledger is None else ledger
    with progress_bar(progress) as bar:
        predictions = {
            s: predict(model, root, manifest, s, crop, config, device, ledger=ledger, bar=bar)
            for s in manifest["splits"]
            if s != "train"
        }
    results: dict[str, Any] = {"splits": {s: summarize(p) for s, p in predictions.items()}}
    results["bad_samples"] = ledger.summary()
    shown = next((p for s, p in predictions.items() if s != config.val_split and len(p["scores"])), None)
    if shown is not None:  # a few test images with their saliency, for `train report`'s overlay sheet
        results["_examples"] = {k: shown[k][:EXAMPLES] for k in ("images", "masks", "scores")}
        results["_examples"] |= {"labels": shown["saliency_labels"][:EXAMPLES], "logits": shown["saliency_logits"]}
    results["_predictions"] = {
        f"{s}.{k}": np.asarray(p[k]) for s, p in predictions.items() for k in ("keys", "labels", "logits")
    }  # per sample: Fig. 6 of a study
    evaluation, shifted = schema.parse_evaluation(manifest), schema.parse_shifted_tests(manifest)
    own = [s for s in predictions if s not in generated_splits(shifted)]
    results["test_splits"] = declared_test_splits(own, config.val_split, evaluation)  # the summary columns'
    gap = evaluation.bg_gap
    if gap and gap.same in predictions and gap.rand in predictions:
        results["bg_gap"] = metrics.bg_gap(
            results["splits"][gap.same]["accuracy"], results["splits"][gap.rand]["accuracy"]
        )
    reliance = evaluation.background_reliance
    if reliance and reliance.original in predictions and reliance.shifted in predictions:
        paired = background_reliance(predictions, reliance, len(manifest["dataset"]["classes"]))
        results["background_reliance"], results["background_reliance_pairs"] = paired.value, paired.counts()
    flip = evaluation.flip
    if flip and flip.original in predictions and flip.shifted in predictions:
        results["flip_gap"] = results["splits"][flip.original]["accuracy"] - results["splits"][flip.shifted]["accuracy"]
    if shifted is not None:
        results["shifted_tests"] = shifted_test_metrics(predictions, results["splits"], shifted, config.val_split)
        headline = results["shifted_tests"]["headline"]
        if headline is not None:  # the dataset's own pairs, when it has them (IN-9, synthetic), come first
            base = results["shifted_tests"]["bases"][headline]
            results.setdefault("bg_gap", base.get("bg_gap"))
            results.setdefault("background_reliance", base["background_reliance"].get(base["reliance_split"]))
            results.setdefault("background_reliance_pairs", base["reliance_pairs"].get(base["reliance_split"]))
    return results


def shifted_test_metrics(
    predictions: dict, splits: dict, section: schema.ShiftedTests, val_split: str
) -> dict[str, Any]:
    """The metrics of the shifted test splits of ``augment build --shifted-tests`` (the manifest's
    ``shifted_tests``, parsed by ``schema.parse_shifted_tests``), per base split: each variant's accuracy, BG-gap, and
    background reliance on each mixed split with the background's class read from the records
    (``shifted.donor_label``), paired by ``shifted.base_key``. A plain dict (JSON-ready) for results.json.

    ``headline`` is the base whose BG-gap and reliance (on mixed_next, as IN-9's) stand for the build when the
    dataset pairs none of its own: the first base that is not ``val_split``, else the first.
    """
    bases: dict[str, Any] = {}
    for base, pair in section.pairs.items():
        if base not in predictions:
            continue
        accuracy = {v: splits[s]["accuracy"] for v, s in pair.variants.items() if s in splits}
        entry: dict[str, Any] = {"accuracy": accuracy}
        gap = pair.bg_gap
        if gap.same in splits and gap.rand in splits:
            entry["bg_gap"] = metrics.bg_gap(splits[gap.same]["accuracy"], splits[gap.rand]["accuracy"])
        shifted = pair.background_reliance.shifted
        paired = {s: recorded_reliance(predictions[base], predictions[s]) for s in shifted if s in predictions}
        entry["background_reliance"] = {s: p.value for s, p in paired.items()}
        entry["reliance_pairs"] = {s: p.counts() for s, p in paired.items()}
        entry["reliance_split"] = shifted[0]  # mixed_next, the paper's
        entry["variants"] = dict(pair.variants)
        bases[base] = entry
    headline = next((b for b in bases if b != val_split), next(iter(bases), None))
    return {"bases": bases, "headline": headline}


@dataclass(frozen=True)
class Paired:
    """A paired metric and what it was computed from: ``pairs`` shifted images matched with their original, and
    ``unpaired`` shifted images that had none (or no background class) and so do not count."""

    value: float | None
    pairs: int
    unpaired: int

    def counts(self) -> dict[str, int]:
        return {"pairs": self.pairs, "unpaired": self.unpaired}


def recorded_reliance(original: dict[str, Any], shifted: dict[str, Any]) -> Paired:
    """Background reliance from the donors the records name: the rise, from each original image to its mixed
    version, of the probability of the donor's class (``donor_labels``); images paired by ``pair_keys`` (the
    shifted record's ``shifted.base_key`` and the original's own key)."""
    return paired_reliance(original, shifted, original["pair_keys"], shifted["pair_keys"], shifted["donor_labels"])


def background_reliance(predictions: dict, pair: schema.SplitPair, num_classes: int) -> Paired:
    """Delta p of the pasted background's class (label + 1 mod K) from original to shifted, over the images paired
    by the object the adapter recorded for each (``object_id``: IN-9's class folder and foreground stem)."""
    orig, shifted = predictions[pair.original], predictions[pair.shifted]
    return paired_reliance(
        orig, shifted, orig["object_ids"], shifted["object_ids"], (shifted["labels"] + 1) % num_classes
    )


def paired_reliance(
    original: dict[str, Any],
    shifted: dict[str, Any],
    original_keys: list[str],
    shifted_keys: list[str],
    background: np.ndarray,
) -> Paired:
    """The mean rise of the probability of class ``background[j]`` from the original image paired with shifted
    image j (equal, non-empty keys) to image j. Shifted images without a pair or with background -1 do not count:
    they are counted as unpaired, and a warning on stderr names how many and an example."""
    index = {k: i for i, k in enumerate(original_keys) if k}
    rows, lost = [], []
    for j, k in enumerate(shifted_keys):
        if k in index and background[j] >= 0:
            rows.append((index[k], j))
        else:
            lost.append(j)
    if lost:
        split, example = shifted.get("split"), shifted.get("keys", shifted_keys)[lost[0]]
        log.warning(
            "background reliance%s: %d of %d image(s) have no original to pair with and are left out (e.g. %s)",
            f" on {split}" if split else "",
            len(lost),
            len(shifted_keys),
            example,
        )
    if not rows:
        return Paired(None, 0, len(lost))
    oi, si = np.array(rows).T
    p_orig, p_shift = metrics.softmax(original["logits"][oi]), metrics.softmax(shifted["logits"][si])
    return Paired(metrics.background_reliance(p_orig, p_shift, np.asarray(background)[si]), len(rows), len(lost))


def write_results(out: Path, results: dict[str, Any]) -> None:
    """results.json (everything), results.tsv (one row per split, the main metrics), saliency_examples.npz, and
    predictions.npz (``<split>.keys``, ``.labels``, ``.logits`` per sample; plain arrays, no pickles)."""
    examples = results.pop("_examples", None)
    if examples is not None:
        np.savez_compressed(out / "saliency_examples.npz", **examples)
    predictions = results.pop("_predictions", None)
    if predictions is not None:
        np.savez_compressed(out / "predictions.npz", **predictions)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    columns = ["split", "num_samples", "accuracy", "worst_group_accuracy", "macro_auc", "macro_aupr", "saliency_aupr"]
    lines = ["\t".join(columns)]
    for split, m in results["splits"].items():
        lines.append("\t".join([split] + [fmt(m.get(c)) for c in columns[1:]]))
    for extra in ("bg_gap", "background_reliance", "flip_gap"):
        if results.get(extra) is not None:
            lines.append(f"{extra}\t{fmt(results[extra])}")
    for base, entry in results.get("shifted_tests", {}).get("bases", {}).items():
        if entry.get("bg_gap") is not None:
            lines.append(f"bg_gap[{base}]\t{fmt(entry['bg_gap'])}")
        lines += [f"background_reliance[{s}]\t{fmt(v)}" for s, v in entry["background_reliance"].items()]
    (out / "results.tsv").write_text("\n".join(lines) + "\n")


def fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)
