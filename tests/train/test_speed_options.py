"""The trainer's speed settings, ``--channels-last`` and ``--compile`` (issue #31): their defaults leave the CPU path
as it was, the flags and grid keys reach the config, a compiled run saves the plain module's state dict and trains as
the plain one does, and the objective's FGSM and Sal work through a compiled, DDP-wrapped model.

The compiled runs here use torch.compile's ``aot_eager`` backend (TorchDynamo and AOTAutograd, the parts that meet
the trainer: the ``_orig_mod`` wrapper, DDP, hooks, input gradients) in place of inductor, whose first compilation of
resnet8 takes 30-40 s on 2 CPU cores; inductor itself generates the kernels, which these checks do not concern.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from augment.config import BuildConfig
from augment.contract.zoo.models import build_model
from augment.runner.build import build
from train.cli import ChannelsLast, fit_config
from train.commands import command_of
from train.config import Config, recorded
from train.train import fit, objective, uses_channels_last


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("speed") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        image_size=24,
        shard_size=16,
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch.compile with the aot_eager backend, for the trainer's own call (see the module docstring); the list
    names the modules it compiled."""
    compiled: list[str] = []
    compile_ = functools.partial(torch.compile, backend="aot_eager")

    def counted(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return compile_(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", counted)
    return compiled


def test_the_defaults_keep_the_cpu_path_and_bad_values_name_the_flag() -> None:
    config = Config.resolve("demo", shards="s", out="o")
    assert (config.channels_last, config.compile) == ("auto", False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not uses_channels_last("auto", cpu) and uses_channels_last("auto", cuda)  # as the trainer did before
    assert uses_channels_last("on", cpu) and not uses_channels_last("off", cuda)
    with pytest.raises(ValueError, match=r"--channels-last: got 'yes', expected one of auto, on, off"):
        Config.resolve("demo", shards="s", out="o", channels_last="yes")
    with pytest.raises(ValueError, match=r"--compile: got 1 \(int\), expected bool"):
        Config.resolve("demo", shards="s", out="o", compile=1)


def test_the_flags_reach_the_config_and_the_command_line_and_old_runs_read_as_the_defaults() -> None:
    given = {f.name: None for f in fields(Config)} | {"shards": "s", "out": "o"}
    manifest = {"dataset": {"name": "synthetic"}}
    config, _ = fit_config({**given, "channels_last": ChannelsLast.on, "compile": True}, manifest)
    assert (config.channels_last, config.compile) == ("on", True)
    assert "--channels-last on --compile" in command_of(config.to_dict())
    plain, _ = fit_config(given, manifest)
    assert "channels" not in command_of(plain.to_dict()) and "compile" not in command_of(plain.to_dict())
    # a run recorded before the settings existed ran as their defaults do: a study still reuses it
    old = {k: v for k, v in plain.to_dict().items() if k not in ("channels_last", "compile")}
    assert recorded(old) == plain.to_dict()


def test_a_compiled_fit_saves_plain_keys_and_trains_as_the_plain_one(
    shards: Path, tmp_path: Path, aot_eager: list[str]
) -> None:
    def run(name: str, compile: bool) -> tuple[list[str], dict[str, torch.Tensor]]:
        config = Config.resolve(
            "demo",
            shards=str(shards),
            out=str(tmp_path / name),
            workers=0,
            batch_size=8,
            crop=16,
            epochs=2,
            cf=["tile"],
            f=["shuffle"],
            fgsm=0.1,  # its attack runs the plain module in eval mode
            max_saliency_images=4,
            compile=compile,
        )
        fit(config)
        log = (tmp_path / name / "log.csv").read_text().splitlines()[1:]
        return [line.split(",")[1] for line in log], torch.load(tmp_path / name / "last.pt", weights_only=True)

    plain_losses, plain = run("plain", False)
    assert aot_eager == []
    losses, state = run("compiled", True)
    assert len(aot_eager) == 1  # the compiled run did compile its model, once
    torch.testing.assert_close(torch.tensor([float(v) for v in losses]), torch.tensor([float(v) for v in plain_losses]))
    best = torch.load(tmp_path / "compiled" / "best.pt", weights_only=True)
    assert list(state["model"]) == list(plain["model"]) == list(best["model"])  # no _orig_mod. prefix
    assert state["config"]["compile"] and not plain["config"]["compile"]
    build_model("resnet8", 5, from_checkpoint=True).load_state_dict(state["model"])  # strict: loads as it is


class GroupNormNet(nn.Module):
    """A model without batch statistics: Sal takes its penalty from the joint forward, double backward through it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def test_fgsm_and_sal_work_through_a_compiled_ddp_model(tmp_path: Path, aot_eager: None) -> None:
    """compile(DDP(module)), as the trainer wraps it: FGSM attacks the plain module, Sal's double backward goes
    through the uncompiled DDP model, and the loss and gradients are those of the plain module."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(6, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    batch = {"image": x, "label": torch.arange(6) % 4, "has_object": torch.ones(6, dtype=torch.bool), "mask": mask}
    config = Config.resolve("demo", shards="s", out="o", fgsm=0.1, sal=1.0)
    torch.manual_seed(0)
    reference = GroupNormNet()
    module = copy.deepcopy(reference)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = torch.compile(DistributedDataParallel(module))
        loss, rows = objective(model, dict(batch), config, 4, torch.device("cpu"), 0)
        loss.backward()
    finally:
        dist.destroy_process_group()
    expected, expected_rows = objective(reference, dict(batch), config, 4, torch.device("cpu"), 0)
    expected.backward()
    assert rows == expected_rows == 12  # the originals and their FGSM images
    torch.testing.assert_close(loss, expected)
    for (name, got), want in zip(module.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, msg=name)
