"""Metrics against scikit-learn and hand-computed values; saliency against an analytic gradient (CPU, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score
from sklearn.preprocessing import label_binarize
from torch import nn

from train.metrics import (
    accuracy,
    background_reliance,
    bg_gap,
    deepliftshap_saliency,
    group_accuracy,
    input_gradient_saliency,
    macro_auc,
    macro_aupr,
    saliency_aupr,
    softmax,
    summarize_split,
)


def random_probs(n: int, c: int, seed: int = 0) -> np.ndarray:
    return softmax(np.random.default_rng(seed).normal(size=(n, c)))


def test_accuracy_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(60, 4)), rng.integers(0, 4, size=60)
    assert accuracy(logits, labels) == pytest.approx(accuracy_score(labels, logits.argmax(axis=1)))
    assert accuracy(np.eye(3), np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_macro_auc_and_aupr_match_sklearn_when_all_classes_present() -> None:
    probs, labels = random_probs(80, 4), np.random.default_rng(2).integers(0, 4, size=80)
    assert set(labels) == {0, 1, 2, 3}
    expected_auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    expected_ap = average_precision_score(label_binarize(labels, classes=range(4)), probs, average="macro")
    assert macro_auc(probs, labels) == pytest.approx(expected_auc)
    assert macro_aupr(probs, labels) == pytest.approx(expected_ap)


def test_macro_auc_and_aupr_skip_classes_missing_from_labels() -> None:
    probs = random_probs(70, 5, seed=3)
    labels = np.random.default_rng(3).choice([0, 2, 3], size=70)  # classes 1 and 4 never occur
    onehot = label_binarize(labels, classes=range(5))
    present = [0, 2, 3]
    assert macro_auc(probs, labels) == pytest.approx(roc_auc_score(onehot[:, present], probs[:, present]))
    assert macro_aupr(probs, labels) == pytest.approx(average_precision_score(onehot[:, present], probs[:, present]))


def test_macro_auc_undefined_for_single_class_split() -> None:
    probs = random_probs(10, 3)
    assert macro_auc(probs, np.full(10, 1)) is None
    assert macro_aupr(probs, np.full(10, 1)) is None


def test_group_and_worst_group_accuracy() -> None:
    # predictions 0 0 1 1 1 0 vs labels 0 1 1 1 0 0: right, wrong, right, right, wrong, right
    logits = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [1, 0]], dtype=float)
    labels = np.array([0, 1, 1, 1, 0, 0])
    groups = np.array([0, 0, 2, 2, 3, 3])  # group 1 absent: not reported, not counted as worst
    per_group, worst = group_accuracy(logits, labels, groups)
    assert per_group == {0: 0.5, 2: 1.0, 3: 0.5}
    assert worst == 0.5


def test_bg_gap_and_background_reliance_on_hand_numbers() -> None:
    assert bg_gap(0.9, 0.75) == pytest.approx(0.15)
    original = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    shifted = np.array([[0.4, 0.5, 0.1], [0.2, 0.7, 0.1]])
    background = np.array([1, 0])  # image 0 got class 1's background (+0.3), image 1 class 0's (+0.1)
    assert background_reliance(original, shifted, background) == pytest.approx(0.2)
    assert background_reliance(shifted, original, background) == pytest.approx(-0.2)


def test_saliency_aupr_skips_one_sided_masks_and_matches_sklearn() -> None:
    rng = np.random.default_rng(4)
    scores = rng.random((4, 5, 6))
    masks = rng.random((4, 5, 6)) < 0.3
    masks[1] = False  # all background: skipped
    masks[3] = True  # all object: skipped
    expected = np.mean([average_precision_score(masks[i].ravel(), scores[i].ravel()) for i in (0, 2)])
    assert saliency_aupr(scores, masks) == pytest.approx(expected)
    assert saliency_aupr(scores[[1, 3]], masks[[1, 3]]) is None


def test_saliency_aupr_is_one_for_a_perfect_map() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, :, 0] = True
    perfect = masks + 0.01 * np.random.default_rng(5).random(masks.shape)  # object pixels all above background
    assert saliency_aupr(perfect, masks) == pytest.approx(1.0)
    assert saliency_aupr(-perfect, masks) < 0.5


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        accuracy(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="expected"):
        saliency_aupr(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match="expected"):
        background_reliance(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3, dtype=int))


def test_softmax_matches_torch_and_survives_large_logits() -> None:
    logits = np.random.default_rng(5).normal(size=(50, 7)).astype(np.float32) * 5
    expected = torch.softmax(torch.from_numpy(logits), 1).numpy()
    np.testing.assert_allclose(softmax(logits), expected, rtol=1e-6, atol=1e-7)  # float32 in, float32 out
    assert softmax(logits).dtype == np.float32
    np.testing.assert_array_equal(softmax(logits[3]), softmax(logits)[3])  # one sample: a 1-D vector
    big = np.array([[1000.0, 0.0], [-1000.0, -1000.0]])
    np.testing.assert_array_equal(softmax(big), [[1.0, 0.0], [0.5, 0.5]])


def test_summarize_split_is_json_ready() -> None:
    rng = np.random.default_rng(6)
    logits, labels, groups = rng.normal(size=(40, 3)), rng.integers(0, 3, size=40), rng.integers(0, 4, size=40)
    summary = json.loads(json.dumps(summarize_split(logits, labels, groups)))
    per_group, worst = group_accuracy(logits, labels, groups)
    assert summary["accuracy"] == pytest.approx(accuracy(logits, labels))
    per_class = [roc_auc_score(labels == c, logits[:, c]) for c in range(3)]  # on the logits, as the official code
    assert summary["macro_auc"] == pytest.approx(np.mean(per_class))
    assert summary["group_accuracy"] == {str(g): pytest.approx(a) for g, a in per_group.items()}
    assert summary["worst_group_accuracy"] == pytest.approx(worst)
    assert set(summarize_split(logits, labels, None)) == {"accuracy", "loss", "macro_auc", "macro_aupr"}


def linear_model(c: int = 2, h: int = 3, w: int = 4, k: int = 3) -> nn.Sequential:
    """logit_k = w_k . x + b_k, behind a Dropout that only eval mode makes the identity."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Dropout(p=0.5), nn.Linear(c * h * w, k))


def test_input_gradient_saliency_equals_analytic_gradient_of_own_target() -> None:
    model = linear_model()
    model.train()
    model[2].eval()  # a submodule in its own mode must keep it
    x, target = torch.randn(4, 2, 3, 4), torch.tensor([0, 2, 1, 2])
    saliency = input_gradient_saliency(model, x, target)
    weight = model[2].weight.detach().view(3, 2, 3, 4)  # d logit_k / d x = w_k
    expected = weight[target].pow(2).sum(dim=1)
    assert saliency.shape == (4, 3, 4)
    torch.testing.assert_close(saliency, expected)
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model] == [True, True, False]


def test_input_gradient_saliency_runs_under_no_grad_in_eval_mode() -> None:
    model = linear_model().eval()
    with torch.no_grad():
        saliency = input_gradient_saliency(model, torch.randn(2, 2, 3, 4), torch.tensor([1, 1]))
    assert saliency.shape == (2, 3, 4) and not model.training


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")  # captum's notice of its hooks
def test_deepliftshap_saliency_converges_on_piecewise_linear_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(  # one ReLU module per use, as captum's DeepLift rules need
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )
    x, baselines, target = torch.randn(3, 3, 6, 6), torch.randn(4, 3, 6, 6), torch.tensor([0, 2, 4])
    saliency, delta = deepliftshap_saliency(model, x, target, baselines)
    assert saliency.shape == (3, 6, 6) and bool((saliency >= 0).all()) and float(saliency.sum()) > 0
    assert delta.shape == (3 * 4,)  # one per input-baseline pair
    assert float(delta.abs().max()) < 1e-3
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_split_auc_is_on_logits_as_the_official_code_and_loss_is_the_mean_cross_entropy() -> None:
    """Class 0's logit ranks b above a; its softmax probability ranks a above b (b's class 1 logit is as high).
    With b the only class-0 sample, class 0's AUC is 1 on logits and 0 on probabilities."""
    logits = np.array([[2.0, 0.0, 0.0], [3.0, 3.0, 0.0]])  # a, b
    labels = np.array([1, 0])
    assert softmax(logits)[0, 0] > softmax(logits)[1, 0]  # the probabilities would rank a first
    summary = summarize_split(logits, labels)
    class_auc = {c: roc_auc_score(labels == c, logits[:, c]) for c in (0, 1)}
    assert class_auc[0] == 1.0
    assert summary["macro_auc"] == pytest.approx(np.mean(list(class_auc.values())))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert summary["loss"] == pytest.approx(-(log_p[0, 1] + log_p[1, 0]) / 2)
