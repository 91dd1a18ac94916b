"""Saliency for every model family (issue #31): the input-gradient saliency of any model, per image; DeepLiftShap
where captum's DeepLift applies, and a one-line refusal naming ``--saliency gradient`` where it does not.

What captum does per family (``train.metrics.deeplift_refusal``): its DeepLift rules cover ReLU, ELU, LeakyReLU,
Sigmoid, Tanh, Softplus, Softmax and the max pools, by exact module type; anything else keeps its plain gradient,
i.e. counts as linear. So ResNets (BatchNorm, ReLU) and BiT (GroupNorm, ReLU, the paper's) are attributed, and
ViTs and ConvNeXts (GELU, attention) and EfficientNets (SiLU) are refused rather than given wrong numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from conftest import warmed_model
from torch import nn

from augment.contract.zoo.models import build_model
from train import evaluate
from train.config import Config
from train.metrics import deeplift_refusal, deepliftshap_saliency, input_gradient_saliency

SIZE = 32
FAMILIES = {  # arch: what normalises its activations
    "resnet8": "BatchNorm",
    "test_resnet": "BatchNorm",
    "test_efficientnet_gn": "GroupNorm",
    "test_convnext": "LayerNorm",
    "test_vit": "LayerNorm",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_of(arch: str, num_classes: int = 4) -> nn.Module:
    """A seeded model whose BatchNorm running statistics are those of some training, not the initial 0 / 1."""
    return warmed_model(arch, num_classes, SIZE, batches=2)


def batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1, torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("arch", FAMILIES)
def test_input_gradient_saliency_is_each_image_s_own_for_every_family(arch: str) -> None:
    """The evaluation's saliency of image i, computed in a batch, is that of image i alone (eval mode), and the model
    is left in the mode it was in."""
    model = model_of(arch)
    x, y = batch()
    together = input_gradient_saliency(model, x, y)
    assert together.shape == (4, SIZE, SIZE) and (together >= 0).all() and together.sum() > 0
    alone = torch.cat([input_gradient_saliency(model, x[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-3, atol=1e-5 * together.max().item())  # float rounding
    assert all(m.training for m in model.modules())  # restored: train mode, as the trainer left it


def test_captum_s_rules_are_what_the_refusal_assumes() -> None:
    """If captum gains a rule for GELU or SiLU, the refusal below should be revisited: this test says so."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    assert nn.ReLU in SUPPORTED_NON_LINEAR and nn.MaxPool2d in SUPPORTED_NON_LINEAR
    assert not {nn.GELU, nn.SiLU, nn.Hardswish, nn.ReLU6, nn.GroupNorm, nn.LayerNorm} & set(SUPPORTED_NON_LINEAR)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")
@pytest.mark.parametrize("arch", ["resnet8", "test_resnet"])
def test_deepliftshap_runs_on_relu_networks(arch: str) -> None:
    model = model_of(arch).eval()
    x, y = batch(2)
    config = Config(shards="x", out="y", saliency="deepliftshap")
    scores = evaluate.saliency(model, x, y, config, baselines=batch(3)[0])
    assert scores.shape == (2, SIZE, SIZE) and torch.isfinite(scores).all() and scores.sum() > 0
    # the scores are each image's own: a batch of one gives the same
    alone = evaluate.saliency(model, x[:1], y[:1], config, baselines=batch(3)[0])
    torch.testing.assert_close(scores[:1], alone, rtol=1e-4, atol=1e-12)


def test_bit_is_attributed_as_in_the_paper() -> None:
    """BiT's GroupNorm and ReLU modules (timm's GroupNormAct) are not refused: the paper ran DeepLiftShap on it."""
    torch.manual_seed(0)
    assert deeplift_refusal(build_model("bit-s-r50x1", 3, from_checkpoint=True)) is None


@pytest.mark.parametrize(
    ("arch", "named"),
    [
        ("test_vit", "Attention (e.g. blocks.0.attn), GELU (e.g. blocks.0.mlp.act)"),
        ("test_convnext", "GELUTanh (e.g. stages.0.blocks.0.mlp.act)"),
        ("test_efficientnet_gn", "SiLU (e.g. bn1.act)"),
    ],
)
def test_deepliftshap_refuses_a_family_captum_would_linearise_in_one_line(arch: str, named: str) -> None:
    model = model_of(arch).eval()
    x, y = batch(2)
    config = Config(shards="x", out="y", saliency="deepliftshap")
    with pytest.raises(ValueError) as err:
        evaluate.saliency(model, x, y, config, baselines=batch(3)[0])
    message = str(err.value)
    assert message.startswith(f"--saliency deepliftshap: captum's DeepLift has no rule for {named}")
    assert message.endswith("would treat it as linear: the attributions would be wrong; use --saliency gradient for it")
    assert "\n" not in message
    with pytest.raises(ValueError, match="use --saliency gradient"):  # the trainer can ask before it trains
        evaluate.check_saliency(model, config, SIZE)
    evaluate.check_saliency(model, Config(shards="x", out="y", saliency="gradient"), SIZE)  # gradient: any model
    with pytest.raises(ValueError, match="no rule for"):  # the metric itself refuses too, not only the evaluation
        deepliftshap_saliency(model, x, y, batch(3)[0])


class TwiceReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.act(self.conv(x)) - 0.5).mean((2, 3)))


def test_deepliftshap_refuses_a_module_called_twice_in_one_line() -> None:
    x, _ = batch(2)
    config = Config(shards="x", out="y", saliency="deepliftshap")
    with pytest.raises(ValueError) as err:
        evaluate.saliency(TwiceReLU().eval(), x, torch.tensor([0, 1]), config, baselines=batch(3)[0])
    assert str(err.value) == (
        "--saliency deepliftshap: captum's DeepLift needs each nonlinearity module called once per forward, and "
        "TwiceReLU calls act (2 times); use --saliency gradient for it"
    )
