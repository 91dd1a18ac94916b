"""The training objective of Chang et al. (docs/METHOD.md, Loss): CF loss, GradMask saliency penalty, online FGSM.

Conventions: images are in [-1, 1]; ``background`` is a float mask, 1 on the background (the F hole), 0 on the
object, broadcastable to the images. Every function is pure: it returns tensors and never steps an optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

CF_LOSSES = ("logp", "uniform", "uniform-others")


def cf_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row loss that says "not y" for counterfactual images.

    - ``logp``: -log(1 - p_y), computed stably as -(logsumexp_{k != y} z_k - logsumexp_k z_k);
    - ``uniform``: cross-entropy to the uniform distribution over all classes;
    - ``uniform-others``: cross-entropy to the uniform distribution over the classes other than y.
    """
    log_p = F.log_softmax(logits, dim=1)
    own = F.one_hot(labels, logits.shape[1]).bool()
    if kind == "logp":
        others = logits.masked_fill(own, float("-inf"))
        return -(torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1))
    if kind == "uniform":
        return -log_p.mean(dim=1)
    if kind == "uniform-others":
        return -log_p.masked_fill(own, 0.0).sum(dim=1) / (logits.shape[1] - 1)
    raise ValueError(f"--cf-loss: got {kind!r}, expected one of {', '.join(CF_LOSSES)}")


def saliency_penalty(
    logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """GradMask (uncontrasted): mean over images, channels and pixels of (d z_{y_i} / d x_i * background_i)^2.

    ``logits`` are the model's outputs for ``images``, a leaf tensor that requires grad (they may be rows of a larger
    forward, which is how DDP sees a single forward per step). Each image's gradient is of its **own** target logit
    (the paper's code summed every label's logit, a bug). The graph is kept (``create_graph=True``) so the penalty
    trains the model: double backprop.
    """
    own = logits.gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(own, images, create_graph=True)
    return (grad * background).pow(2).mean()


def per_image_saliency_penalty(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """The GradMask penalty from a forward of its own in which no image sees another: BatchNorm layers normalise
    with their running statistics, as at evaluation (running statistics are not updated).

    A joint train-mode forward mixes the other images of the batch into each image's gradient through the batch
    statistics, so its penalty is not that of any image's own saliency. An image's statistics alone (a train-mode
    batch of one) are undefined where a feature map is 1x1 (resnet18 below 32 px) and noisy where it is small; the
    running statistics are defined everywhere, and they are what the saliency AUPR of the evaluation uses, so the
    penalty trains exactly the saliency that is measured.

    The whole penalty runs in fp32 even under the trainer's autocast (``--amp``): its own forward, and the input
    gradient with ``create_graph=True``, whose ops are recorded under the autocast state in force when
    ``autograd.grad`` runs (half precision there would put the double backward of the head in fp16 or bf16, where
    it is unstable). The trainer's backward through the penalty then replays those fp32 ops.
    """
    leaf = images.detach().float().requires_grad_(True)
    with running_statistics(model), torch.autocast(images.device.type, enabled=False), twice_differentiable():
        logits = model(leaf)
        return saliency_penalty(logits, leaf, labels, background.float())


def twice_differentiable() -> AbstractContextManager:
    """Within the block, attention runs on PyTorch's math kernel of ``scaled_dot_product_attention``: the fused
    kernels (flash, memory-efficient; what timm's ViTs call) have no double backward, which the saliency penalty
    takes. Models without attention are unaffected."""
    return sdpa_kernel(SDPBackend.MATH)


def has_batch_statistics(model: nn.Module) -> bool:
    """Whether a forward of ``model`` mixes the images of a batch: a BatchNorm layer in train mode."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


@contextmanager
def running_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm of ``model`` in train mode normalises with its running statistics (eval
    mode: images are independent, nothing is updated); its affine parameters still get gradients. The rest of the
    model keeps its mode."""
    switched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for bn in switched:
        bn.train(False)
    try:
        yield
    finally:
        for bn in switched:
            bn.train(True)


@torch.enable_grad()
def fgsm_background(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    background: torch.Tensor,
    eps: float,
    steps: int = 1,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Factual images by attacking the background only (docs/METHOD.md, Loss), FGSM for one step, PGD for more.

    ``eps`` is on the [-1, 1] scale. delta starts uniform in [-eps, eps] on the background, then each step
    adds ``alpha * sign(grad of CE on the true label)`` (alpha = 1.25 eps by default) and is clipped to
    [-eps, eps]. Object pixels keep delta = 0 exactly, and x + delta stays in [-1, 1]. The gradient is taken with
    the model in eval mode and without parameter gradients, so neither weights nor BatchNorm statistics move.
    """
    alpha = 1.25 * eps if alpha is None else alpha
    was_training = model.training
    model.eval()
    try:
        noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        delta = (noise * 2 - 1) * eps * background
        for _ in range(steps):
            delta.requires_grad_(True)
            adv = (images + delta).clamp(-1, 1)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), labels), delta)
            delta = ((delta + alpha * grad.sign()).clamp(-eps, eps) * background).detach()
        adv = (images + delta).clamp(-1, 1)
        return torch.where(background.bool().expand_as(images), adv, images).detach()
    finally:
        model.train(was_training)


def mixup(images: torch.Tensor, labels: torch.Tensor, lam: float, num_classes: int, generator: torch.Generator):
    """Mix the batch with a random permutation of itself by ``lam`` (drawn by the caller from Beta(a, a), one per
    batch); returns images and soft targets. The permutation is drawn on the images' device, from ``generator``
    (which must live there too)."""
    perm = torch.randperm(images.shape[0], generator=generator, device=images.device)
    targets = F.one_hot(labels, num_classes).float()
    return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]
