"""Evaluation: every split of a build, with the metrics of SPEC.md section 6, written to results.json and .tsv.

- accuracy, macro one-vs-rest AUC and AUPR, per-group and worst-group accuracy (when samples carry groups);
- BG-gap = acc(mixed_same) - acc(mixed_rand), and background reliance = mean increase of the probability of the
  class whose background was pasted in, from ``original`` to ``mixed_next`` (pairs recorded in the manifest);
- saliency AUPR: how well the input-gradient (or DeepLiftShap) attribution picks out the object mask.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train import metrics
from train.data import Fields, ShardStream, loader

EXAMPLES = 6  # images per run in the saliency overlay sheet


@torch.no_grad()
def predict(model, root: str | Path, manifest: dict, split: str, crop: int, config, device) -> dict[str, Any]:
    """Logits, labels, groups and keys of a split, plus saliency scores and masks for the first images."""
    stream = ShardStream(root, manifest, split, Fields(), train=False, crop=crop, seed=config.seed)
    model.eval()
    out: dict[str, list] = {"logits": [], "labels": [], "groups": [], "keys": [], "scores": [], "masks": [],
                            "images": []}  # fmt: skip
    budget = config.max_saliency_images
    for batch in loader(stream, 128, config.workers, drop_last=False):
        x = batch["image"].to(device)
        out["logits"].append(model(x).float().cpu())
        out["labels"].append(batch["label"])
        out["groups"].append(batch["group"])
        out["keys"].extend(batch["key"])
        with_mask = batch["has_object"].nonzero().flatten()[:budget]
        if len(with_mask):
            budget -= len(with_mask)
            with torch.enable_grad():
                scores = saliency(model, x[with_mask], batch["label"][with_mask].to(device), config)
            out["scores"].append(scores.cpu())
            out["masks"].append(batch["mask"][with_mask, 0] > 0.5)
            out["images"].append(((batch["image"][with_mask] + 1) * 127.5).round().byte().permute(0, 2, 3, 1))
    result = {k: torch.cat(v).numpy() if v and k not in ("keys",) else v for k, v in out.items()}
    return result


def saliency(model, x: torch.Tensor, target: torch.Tensor, config) -> torch.Tensor:
    if config.saliency == "deepliftshap":
        from train.models import unshare_relus

        # two uniform-noise baselines, seeded: an all-grey (zero) baseline gives NaN attributions through a freshly
        # initialised BiT, whose GroupNorms then see zero variance everywhere
        noise = torch.Generator().manual_seed(config.seed)
        baselines = (torch.rand((2, *x.shape[1:]), generator=noise) * 2 - 1).to(x.device)
        scores, delta = metrics.deepliftshap_saliency(unshare_relus(model).eval(), x, target, baselines)
        if delta.abs().max() > 0.05:  # attributions should add up to the change in output
            logging.getLogger("train").warning("DeepLiftShap convergence delta up to %.3g", delta.abs().max())
        return scores
    return metrics.input_gradient_saliency(model, x, target)


def split_metrics(model, root: str | Path, manifest: dict, split: str, crop: int, config, device) -> dict[str, Any]:
    p = predict(model, root, manifest, split, crop, config, device)
    return summarize(p)


def summarize(p: dict[str, Any]) -> dict[str, Any]:
    groups = p["groups"] if len(p["groups"]) and (p["groups"] >= 0).all() else None
    summary = metrics.summarize_split(p["logits"], p["labels"], groups)
    if len(p["scores"]):
        summary["saliency_aupr"] = metrics.saliency_aupr(p["scores"], p["masks"])
    summary["num_samples"] = int(len(p["labels"]))
    return summary


def pair_key(key: str, split: str) -> str:
    """The object a test key shows, across variants: ``mixed_next_000123`` and ``original_000123`` pair up, as do
    IN-9's ``..._fg_<stem>_bg_<...>`` and ``..._<stem>``."""
    rest = key[len(split) + 1 :] if key.startswith(split + "_") else key
    return re.sub(r"fg_(.*?)_bg_.*$", r"\1", rest)


def evaluate_all(model, root: str | Path, manifest: dict, crop: int, config, device) -> dict[str, Any]:
    """Metrics on every split but train, plus the paired metrics the manifest names."""
    predictions = {
        s: predict(model, root, manifest, s, crop, config, device) for s in manifest["splits"] if s != "train"
    }
    results: dict[str, Any] = {"splits": {s: summarize(p) for s, p in predictions.items()}}
    shown = next((p for s, p in predictions.items() if s != config.val_split and len(p["scores"])), None)
    if shown is not None:  # a few test images with their saliency, for `train report`'s overlay sheet
        results["_examples"] = {k: shown[k][:EXAMPLES] for k in ("images", "masks", "scores")}
    results["_predictions"] = {f"{s}.{k}": np.asarray(p[k]) for s, p in predictions.items()
                               for k in ("keys", "labels", "logits")}  # fmt: skip  # per sample: Fig. 6 of a study
    evaluation = manifest["dataset"]["params"].get("evaluation", {})
    gap = evaluation.get("bg_gap")
    if gap and gap["same"] in predictions and gap["rand"] in predictions:
        results["bg_gap"] = metrics.bg_gap(results["splits"][gap["same"]]["accuracy"],
                                           results["splits"][gap["rand"]]["accuracy"])  # fmt: skip
    reliance = evaluation.get("background_reliance")
    if reliance and reliance["original"] in predictions and reliance["shifted"] in predictions:
        results["background_reliance"] = background_reliance(predictions, reliance, len(manifest["dataset"]["classes"]))
    flip = evaluation.get("flip")
    if flip and flip["original"] in predictions and flip["shifted"] in predictions:
        results["flip_gap"] = (results["splits"][flip["original"]]["accuracy"]
                               - results["splits"][flip["shifted"]]["accuracy"])  # fmt: skip
    return results


def background_reliance(predictions: dict, pair: dict, num_classes: int) -> float | None:
    """Delta p of the pasted background's class (label + 1 mod K) from original to shifted, over paired images."""
    orig, shifted = predictions[pair["original"]], predictions[pair["shifted"]]
    index = {pair_key(k, pair["original"]): i for i, k in enumerate(orig["keys"])}
    rows = [(index[pair_key(k, pair["shifted"])], j) for j, k in enumerate(shifted["keys"])
            if pair_key(k, pair["shifted"]) in index]  # fmt: skip
    if not rows:
        return None
    oi, si = np.array(rows).T
    p_orig = torch.softmax(torch.from_numpy(orig["logits"][oi]), 1).numpy()
    p_shift = torch.softmax(torch.from_numpy(shifted["logits"][si]), 1).numpy()
    background_class = (shifted["labels"][si] + 1) % num_classes
    return metrics.background_reliance(p_orig, p_shift, background_class)


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
    (out / "results.tsv").write_text("\n".join(lines) + "\n")


def fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)
