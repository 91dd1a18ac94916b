"""Objective terms that must treat every image on its own: Sal on BatchNorm models, and Mixup's draws."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from augment.zoo.models import build_model
from train.config import Config
from train.losses import has_batch_statistics, mixup, per_image_saliency_penalty, saliency_penalty
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
