"""Objective terms that must treat every image on its own: Sal on BatchNorm models, and Mixup's draws."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from conftest import warmed_model

from augment.contract.zoo.models import build_model
from train.config import Config
from train.losses import (
    has_batch_statistics,
    mixup,
    per_image_saliency_penalty,
    saliency_penalty,
    twice_differentiable,
)
from train.train import objective


def bn_model() -> torch.nn.Module:
    """resnet8 with running statistics as after some training (not the initial 0 / 1)."""
    torch.manual_seed(0)
    model = build_model("resnet8", 4)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 16, 16) * 2 - 1)
    return model


def batch(n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    y = torch.randint(0, 4, (n,), generator=g)
    background = torch.ones(n, 1, size, size)
    background[:, :, 4:12, 4:12] = 0  # the object
    return x, y, background


def one_at_a_time(model, x, y, background) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The reference: each image through the model alone, BatchNorm on its running statistics (what evaluation
    uses; a train-mode batch of one is undefined on 1x1 maps), its penalty, its weight gradients; the batched
    penalty is the mean of these."""
    penalties, grads = [], []
    for i in range(x.shape[0]):
        alone = copy.deepcopy(model)
        for m in alone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        leaf = x[i : i + 1].clone().requires_grad_(True)
        penalty = saliency_penalty(alone(leaf), leaf, y[i : i + 1], background[i : i + 1])
        penalties.append(penalty.detach())
        grads.append(torch.autograd.grad(penalty, list(alone.parameters()), allow_unused=True))
    mean_grads = [
        sum(g[k] for g in grads) / len(grads) if grads[0][k] is not None else None for k in range(len(grads[0]))
    ]
    return torch.stack(penalties).mean(), mean_grads


def test_sal_on_a_batchnorm_model_equals_a_one_image_at_a_time_loop() -> None:
    model = bn_model()
    assert has_batch_statistics(model)
    x, y, background = batch()
    expected, expected_grads = one_at_a_time(model, x, y, background)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    penalty = per_image_saliency_penalty(model, x, y, background)
    torch.testing.assert_close(penalty, expected, rtol=1e-4, atol=1e-9)
    grads = torch.autograd.grad(penalty, list(model.parameters()), allow_unused=True)
    for got, want in zip(grads, expected_grads, strict=True):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-7)
    for k, v in model.state_dict().items():  # running statistics untouched, and every layer back in train mode
        assert torch.equal(v, before[k]), k
    assert all(m.training for m in model.modules())

    # the joint train-mode forward, which the per-image pass replaces, is measurably different: the test can fail
    leaf = x.clone().requires_grad_(True)
    joint = saliency_penalty(model(leaf), leaf, y, background)
    assert abs(joint.item() - expected.item()) > 0.05 * expected.item()


def test_the_objective_takes_sal_per_image_on_batchnorm_models() -> None:
    """Through train.train.objective: the step's loss with Sal minus the loss without it is sal x the per-image
    penalty, for a BatchNorm model."""
    model = bn_model()
    x, y, background = batch()
    mask = 1.0 - background
    data = {"image": x, "label": y, "has_object": torch.ones(len(y), dtype=torch.bool), "mask": mask}
    with_sal = Config.resolve("demo", shards="", out="", sal=10.0)
    without = Config.resolve("demo", shards="", out="")
    torch.manual_seed(0)
    loss_sal, _ = objective(copy.deepcopy(model), data, with_sal, 4, torch.device("cpu"), 0)
    loss_plain, _ = objective(copy.deepcopy(model), data, without, 4, torch.device("cpu"), 0)
    with torch.no_grad():  # the step's joint forward comes first and moves the running statistics
        model(x)
    expected, _ = one_at_a_time(model, x, y, background)
    torch.testing.assert_close(loss_sal - loss_plain, 10.0 * expected, rtol=1e-3, atol=1e-7)


# one model per kind of normalisation: (arch, what normalises it)
FAMILIES = [
    ("resnet8", "BatchNorm"),
    ("test_resnet", "BatchNorm"),  # timm's BatchNormAct2d-free ResNet: nn.BatchNorm2d
    ("test_efficientnet_gn", "GroupNorm"),
    ("test_efficientnet_ln", "LayerNorm"),  # LayerNorm2d over channels, per position
    ("test_convnext", "LayerNorm"),
    ("test_vit", "LayerNorm"),  # over the tokens' features; attention mixes tokens of one image only
]


def family_model(arch: str, size: int = 32) -> torch.nn.Module:
    """A seeded model in train mode, its BatchNorm running statistics moved by a few batches, every head nonzero."""
    return warmed_model(arch, 4, size, batches=3)


@pytest.mark.parametrize(("arch", "norm"), FAMILIES)
def test_each_image_s_sal_penalty_is_its_own_for_every_normalisation(arch: str, norm: str) -> None:
    """Issue #31, item 4: the step's Sal term is the mean of each image's own penalty, computed alone, whatever
    normalises the model. BatchNorm in train mode mixes the batch (its statistics are the batch's), so the trainer
    takes Sal from a second forward on the running statistics (``per_image_saliency_penalty``); GroupNorm and
    LayerNorm normalise each image by its own statistics, so the trainer keeps the joint train-mode forward, whose
    penalty is already per image. Through ``train.train.objective``, as the trainer runs it."""
    model = family_model(arch)
    assert has_batch_statistics(model) == (norm == "BatchNorm")
    x, y, background = batch(4, 32)
    data = {"image": x, "label": y, "has_object": torch.ones(len(y), dtype=torch.bool), "mask": 1.0 - background}
    stepped = copy.deepcopy(model)
    with torch.no_grad():  # the step's joint forward comes first and moves BatchNorm's running statistics
        stepped(x)
    with twice_differentiable():  # the reference's double backward through a ViT's attention (test_sal_trains_a_vit)
        expected, _ = one_at_a_time(stepped, x, y, background)
    assert expected > 0
    weight = 10.0 ** -math.floor(math.log10(expected.item()))  # sal x penalty in [1, 10): above the losses' rounding
    with_sal = Config.resolve("demo", shards="", out="", sal=weight)
    without = Config.resolve("demo", shards="", out="")
    torch.manual_seed(0)
    loss_sal, _ = objective(copy.deepcopy(model), data, with_sal, 4, torch.device("cpu"), 0)
    loss_plain, _ = objective(copy.deepcopy(model), data, without, 4, torch.device("cpu"), 0)
    torch.testing.assert_close(loss_sal - loss_plain, weight * expected, rtol=1e-4, atol=0)
    model = stepped

    leaf = x.clone().requires_grad_(True)  # the joint train-mode forward: per image unless BatchNorm mixes it
    joint = saliency_penalty(model(leaf), leaf, y, background).detach()
    if norm == "BatchNorm":
        assert abs(joint.item() - expected.item()) > 0.01 * expected.item()  # the test can fail
    else:
        torch.testing.assert_close(joint, expected, rtol=1e-4, atol=1e-12)


def test_sal_trains_a_vit() -> None:
    """Sal's penalty is an input gradient, trained through a second backward: PyTorch's fused attention kernels,
    which timm's ViTs call, have none ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is
    not implemented"); the trainer's ``twice_differentiable`` runs attention on the math kernel, same numbers."""
    model = family_model("test_vit")
    x, y, background = batch(2, 32)
    leaf = x.clone().requires_grad_(True)
    fused = saliency_penalty(model(leaf), leaf, y, background)
    with pytest.raises(RuntimeError, match="_scaled_dot_product_.*backward is not implemented"):
        fused.backward()
    leaf = x.clone().requires_grad_(True)
    with twice_differentiable():
        explicit = saliency_penalty(model(leaf), leaf, y, background)
    torch.testing.assert_close(explicit, fused.detach(), rtol=1e-4, atol=0)
    explicit.backward()
    assert all(p.grad is not None for p in model.blocks[-1].attn.parameters())


def test_models_without_batch_statistics_keep_the_joint_forward() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten())
    assert not has_batch_statistics(model)
    assert not has_batch_statistics(bn_model().eval())


def test_sal_under_autocast_is_all_fp32_forward_and_double_backward() -> None:
    """Under the trainer's autocast (CPU autocast runs bf16 here, as --amp does on a GPU) the penalty and its weight
    gradients equal the fp32 ones: the input gradient with create_graph=True must not run the head's backward in
    half precision (it did: 6e-4 relative error on resnet8's penalty before the fix)."""
    torch.manual_seed(0)
    model = build_model("resnet8", 5, from_checkpoint=True).train()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y, background = torch.tensor([0, 2, 4]), (torch.rand(3, 1, 32, 32) > 0.5).float()
    head = model.fc.weight
    exact = per_image_saliency_penalty(model, x, y, background)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = per_image_saliency_penalty(model, x, y, background)
    assert under_amp.dtype == torch.float32
    torch.testing.assert_close(under_amp, exact, rtol=1e-6, atol=0)
    (g_exact,) = torch.autograd.grad(exact, head)
    (g_amp,) = torch.autograd.grad(under_amp, head)
    torch.testing.assert_close(g_amp, g_exact, rtol=1e-6, atol=0)


def mixup_step(device: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    draws = random.Random("0:7:0")
    generator = torch.Generator(device=device).manual_seed(draws.getrandbits(63))
    lam = draws.betavariate(0.2, 0.2)
    x = torch.arange(8.0, device=device).view(8, 1, 1, 1).expand(8, 3, 2, 2)
    y = torch.arange(8, device=device) % 4
    mixed, soft = mixup(x, y, lam, 4, generator)
    return mixed, soft, lam


def check_mixup(mixed: torch.Tensor, soft: torch.Tensor, lam: float) -> None:
    partner = (mixed[:, 0, 0, 0] - lam * torch.arange(8.0, device=mixed.device)) / (1 - lam)
    perm = partner.round().long()
    assert sorted(perm.tolist()) == list(range(8))  # a permutation of the batch
    torch.testing.assert_close(soft.sum(1), torch.ones(8, device=soft.device))
    assert 0 <= lam <= 1


def test_mixup_draws_are_seeded_and_on_the_images_device() -> None:
    a, sa, lam_a = mixup_step("cpu")
    b, sb, lam_b = mixup_step("cpu")
    assert lam_a == lam_b and torch.equal(a, b) and torch.equal(sa, sb)  # same step seed, same draws
    check_mixup(a, sa, lam_a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixup_on_cuda() -> None:
    mixed, soft, lam = mixup_step("cuda")
    assert mixed.is_cuda and soft.is_cuda
    check_mixup(mixed, soft, lam)
