"""The evaluation metrics of docs/METHOD.md (Metrics): accuracy, worst-group accuracy, macro AUC/AUPR, BG-gap,
background reliance, and saliency focus (AUPR of a saliency map against the object mask).

Scores come from scikit-learn, so the numbers match what everyone else computes. Arrays are numpy on the
host; the two saliency functions take a model and tensors and return tensors on the input's device.
Run the tests with ``python -m pytest -q tests/train/test_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score


def _check_logits_labels(logits: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"{name}: got scores {logits.shape} and labels {labels.shape}, expected [N, C] and [N]")
    if logits.shape[0] == 0:
        raise ValueError(f"{name}: got 0 samples, expected at least 1")
    return logits, labels


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    logits, labels = _check_logits_labels(logits, labels, "accuracy")
    return float(np.mean(logits.argmax(axis=1) == labels))


def group_accuracy(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[dict[int, float], float]:
    """Accuracy within each group present in ``groups``, and the worst of them (Waterbirds' (y, place) groups)."""
    logits, labels = _check_logits_labels(logits, labels, "group_accuracy")
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"group_accuracy: got groups {groups.shape}, expected {labels.shape} like the labels")
    correct = logits.argmax(axis=1) == labels
    per_group = {int(g): float(correct[groups == g].mean()) for g in np.unique(groups)}
    return per_group, min(per_group.values())


def _macro_one_vs_rest(score: Callable[..., float], probs: np.ndarray, labels: np.ndarray, name: str) -> float | None:
    """Mean of ``score(is_class_c, probs[:, c])`` over the classes c that have both positives and negatives."""
    probs, labels = _check_logits_labels(probs, labels, name)
    per_class = []
    for c in range(probs.shape[1]):
        positive = labels == c
        if positive.any() and not positive.all():  # the score is undefined for a one-sided class
            per_class.append(score(positive, probs[:, c]))
    return float(np.mean(per_class)) if per_class else None


def macro_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC of the scores ``probs`` [N, C] (logits or probabilities: the evaluation passes
    logits, as the official code) over the classes that are both present and absent in ``labels``.

    Classes missing from a split (e.g. CCT's trans locations) are left out rather than failing; ``None`` when no
    class qualifies (e.g. a single-class split).
    """
    return _macro_one_vs_rest(roc_auc_score, probs, labels, "macro_auc")


def macro_aupr(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Like :func:`macro_auc` with average precision (area under the precision-recall curve) per class."""
    return _macro_one_vs_rest(average_precision_score, probs, labels, "macro_aupr")


def bg_gap(acc_mixed_same: float, acc_mixed_rand: float) -> float:
    """IN-9's BG-gap: accuracy on mixed_same minus mixed_rand; how much a same-class background helps."""
    return acc_mixed_same - acc_mixed_rand


def background_reliance(probs_original: np.ndarray, probs_shifted: np.ndarray, background_class: np.ndarray) -> float:
    """Mean gain in probability of the class whose background was pasted in (lower is better).

    Args:
        probs_original: [N, C] probabilities on the original images.
        probs_shifted: [N, C] probabilities on the same images with another class's background (IN-9 mixed_next).
        background_class: [N] the class that background came from.
    """
    probs_original, probs_shifted = np.asarray(probs_original), np.asarray(probs_shifted)
    background_class = np.asarray(background_class)
    if probs_original.ndim != 2 or probs_shifted.shape != probs_original.shape:
        raise ValueError(
            f"background_reliance: got probabilities {probs_original.shape} and {probs_shifted.shape}, "
            "expected two equal [N, C]"
        )
    if background_class.shape != (probs_original.shape[0],) or probs_original.shape[0] == 0:
        raise ValueError(
            f"background_reliance: got background_class {background_class.shape}, expected [{probs_original.shape[0]}]"
            " with N >= 1"
        )
    rows = np.arange(probs_original.shape[0])
    return float(np.mean(probs_shifted[rows, background_class] - probs_original[rows, background_class]))


def saliency_aupr(scores: np.ndarray, masks: np.ndarray) -> float | None:
    """Saliency focus: per image, the average precision of pixel ``scores`` [N, H, W] against the object ``masks``.

    Images whose mask is all 0 or all 1 are skipped (their AP is undefined or trivially 1); the result is the
    mean over the rest, or ``None`` when none is left.
    """
    scores, masks = np.asarray(scores), np.asarray(masks, dtype=bool)
    if scores.ndim != 3 or masks.shape != scores.shape:
        raise ValueError(
            f"saliency_aupr: got scores {scores.shape} and masks {masks.shape}, expected two equal [N, H, W]"
        )
    per_image = [
        average_precision_score(mask.ravel(), score.ravel())
        for score, mask in zip(scores, masks, strict=True)
        if mask.any() and not mask.all()
    ]
    return float(np.mean(per_image)) if per_image else None


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own flag (a plain ``train(was)`` would not)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def input_gradient_saliency(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel saliency [N, H, W]: the squared gradient of each image's ``target`` logit w.r.t. its input, summed
    over channels.

    The gradients of the summed target logits are taken w.r.t. ``x`` only, so no parameter ``.grad`` is touched.
    This equals the per-image gradient because in eval mode images do not interact (BatchNorm uses running stats).
    """
    with _eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        picked = logits.gather(1, target.to(logits.device).long().view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return grad.pow(2).sum(dim=1)


# The modules that define nonlinearities (torch's and timm's activation modules): captum's DeepLift has a rule for
# some of them (``SUPPORTED_NON_LINEAR``, matched by exact type); any other it silently treats as linear.
_ACTIVATION_MODULES = ("torch.nn.modules.activation", "timm.layers.activations", "timm.layers.activations_me")
# captum 0.7-0.9's SUPPORTED_NON_LINEAR, for a captum that no longer exposes it
_CAPTUM_RULES = ("ReLU", "ELU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "MaxPool1d", "MaxPool2d", "MaxPool3d")


def _deeplift_rules() -> tuple[type, ...]:
    try:
        from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
    except ImportError:  # a private name: fall back to the rules of the captum versions this was written for
        return (*(getattr(torch.nn, name) for name in _CAPTUM_RULES), torch.nn.Softmax)
    return tuple(SUPPORTED_NON_LINEAR)


def deeplift_refusal(model: torch.nn.Module) -> str | None:
    """Why captum's DeepLift(Shap) would give ``model`` wrong numbers without saying so, or None where it applies.

    captum overrides the gradient of each nonlinearity *module* whose exact type it has a rule for (``nn.ReLU``,
    ``nn.ELU``, ``nn.LeakyReLU``, ``nn.Sigmoid``, ``nn.Tanh``, ``nn.Softplus``, ``nn.Softmax``, the max pools);
    every other operation keeps its plain gradient, i.e. is treated as linear. That is right for convolutions,
    linear layers and BatchNorm in eval mode (affine), and an approximation the paper itself made for BiT's
    GroupNorm (LayerNorm is the same kind), whose size the convergence delta shows. It is not right for an
    activation module captum has no rule for, which would pass for linear everywhere: GELU (ViT, ConvNeXt), SiLU
    (EfficientNet, timm's RegNets), Hardswish and ReLU6 (MobileNets), Mish, PReLU, timm's own GELU/Sigmoid/Tanh
    classes... nor for attention (a product of two functions of the input, and a functional softmax). Those are
    refused here, naming the module types. A module called more than once per forward is ``unshare_relus``'s
    refusal (``augment.contract.zoo.models``).
    """
    rules = _deeplift_rules()
    unsupported: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = type(module)
        activation = kind.__module__ in _ACTIVATION_MODULES and kind is not torch.nn.MultiheadAttention
        attention = "attention" in kind.__name__.lower() or kind.__name__.lower().endswith("attn")
        if (activation and kind not in rules) or attention:
            unsupported.setdefault(kind.__name__, []).append(name)
    if not unsupported:
        return None
    found = ", ".join(f"{kind} (e.g. {names[0]})" for kind, names in sorted(unsupported.items()))
    return (
        f"captum's DeepLift has no rule for {found} in {type(model).__name__}, and would treat it as linear: "
        "the attributions would be wrong"
    )


def deepliftshap_saliency(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLiftShap saliency (the paper's): per-pixel squared attribution summed over channels, [N, H, W].

    Also returns captum's convergence delta (one value per input-baseline pair), which is ~0 when the attributions
    add up to the change in the target logit; check it to catch a model captum cannot handle.

    The model must use a distinct ``nn.ReLU`` module at each place it applies one (no reused module and no
    ``F.relu``): captum's DeepLift rules hook modules, so it raises on a module used twice and gives a
    functional ReLU plain gradients (attributions then stop adding up, and the delta shows it).
    ``baselines`` is [B, C, H, W] with B >= 2 (e.g. a few background images); the model runs in eval mode.

    Raises:
        ValueError: a model DeepLift cannot attribute (``deeplift_refusal``, or a module captum finds called more
            than once), in one line naming ``--saliency gradient``.
    """
    from captum.attr import DeepLiftShap  # deferred: only saliency evaluation needs captum

    reason = deeplift_refusal(model)
    if reason is not None:
        raise ValueError(f"--saliency deepliftshap: {reason}; use --saliency gradient for it")
    with _eval_mode(model):
        try:
            attributions, delta = DeepLiftShap(model).attribute(
                x, baselines=baselines, target=target, return_convergence_delta=True
            )
        except RuntimeError as err:
            if "more than once" not in str(err):
                raise
            found = " ".join(str(err).split())
            raise ValueError(
                f"--saliency deepliftshap: captum refused the model ({found}); use --saliency gradient"
            ) from err
    return attributions.detach().pow(2).sum(dim=1), delta.detach()


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Class probabilities from ``logits`` along ``axis`` (the class axis: last by default), in the logits' float
    dtype. The max is subtracted before ``exp``, so large logits do not overflow."""
    logits = np.asarray(logits)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of ``logits`` [N, C] against ``labels`` [N] (the validation loss the plateau schedule
    watches), computed in float64 through a stable log-softmax."""
    logits, labels = _check_logits_labels(logits, labels, "cross_entropy")
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def summarize_split(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> dict[str, Any]:
    """All label metrics of one test split, JSON-ready (plain floats or ``None``, string keys).

    Keys: ``accuracy``, ``loss`` (mean cross-entropy), ``macro_auc`` and ``macro_aupr`` (on the logits, as the
    official code scores CCT: a class's ranking of the samples by its logit can differ from its ranking by softmax
    probability, which also depends on the other classes' logits), and when ``groups`` is given ``group_accuracy``
    ({group: accuracy}) and ``worst_group_accuracy``.
    """
    logits, labels = _check_logits_labels(logits, labels, "summarize_split")
    scores = logits.astype(np.float64)
    summary: dict[str, Any] = {
        "accuracy": accuracy(logits, labels),
        "loss": cross_entropy(logits, labels),
        "macro_auc": macro_auc(scores, labels),
        "macro_aupr": macro_aupr(scores, labels),
    }
    if groups is not None:
        per_group, worst = group_accuracy(logits, labels, groups)
        summary["group_accuracy"] = {str(g): acc for g, acc in per_group.items()}
        summary["worst_group_accuracy"] = worst
    return summary
