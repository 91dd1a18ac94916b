"""The trainer: objective terms checked by hand, the data stream, resume, the malicious shard, the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from augment.config import BuildConfig
from augment.contract.shards import iter_records, write_shard
from augment.runner.build import build
from train.config import Config
from train.data import Fields, ShardStream, read_manifest
from train.losses import cf_loss, fgsm_background, saliency_penalty


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "shards"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        copies=2,
        image_size=24,
        shard_size=16,
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


# ---- the objective -----------------------------------------------------------------------------------------------


def test_cf_loss_logp_equals_the_hand_computation_and_is_stable() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    expected = -torch.log(1 - p[torch.arange(2), labels])
    torch.testing.assert_close(cf_loss(logits, labels, "logp"), expected)
    extreme = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]])
    loss = cf_loss(extreme, torch.tensor([0, 0]), "logp")
    assert torch.isfinite(loss).all() and loss[0] > 900 and loss[1].abs() < 1e-6  # p_y ~ 1 costs, p_y ~ 0 is free
    uniform = cf_loss(logits, labels, "uniform")
    torch.testing.assert_close(uniform, -torch.log_softmax(logits, 1).mean(1))
    others = cf_loss(logits, labels, "uniform-others")
    torch.testing.assert_close(others[0], -(torch.log_softmax(logits, 1)[0, 1:]).mean())


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2 * 2 * 2, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def test_saliency_penalty_uses_each_image_own_logit() -> None:
    """For logits z = W x, d z_y / d x = W[y]: the penalty is mean over images, channels, pixels of (W[y_i] * bg)^2."""
    model = Linear()
    x = torch.randn(2, 2, 2, 2)
    y = torch.tensor([0, 2])
    background = torch.zeros(2, 1, 2, 2)
    background[:, :, 0, :] = 1  # top row is background
    leaf = x.clone().requires_grad_(True)
    penalty = saliency_penalty(model(leaf), leaf, y, background)
    w = model.w.detach().view(3, 2, 2, 2)
    expected = torch.stack([(w[y[i]] * background[i]).pow(2) for i in range(2)]).mean()
    torch.testing.assert_close(penalty, expected)
    penalty.backward()  # double backprop: the penalty trains the weights
    assert model.w.grad is not None and model.w.grad.abs().sum() > 0


def test_fgsm_touches_only_the_background_within_eps_and_moves_no_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)
    )
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    y = torch.tensor([0, 1, 2, 0])
    background = torch.ones(4, 1, 8, 8)
    background[:, :, 2:6, 2:6] = 0
    adv = fgsm_background(model, x, y, background, eps=0.3, steps=2, generator=torch.Generator().manual_seed(1))
    obj = background.expand_as(x) == 0
    assert torch.equal(adv[obj], x[obj])  # object pixels bit-identical
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= -1 and adv.max() <= 1
    assert (adv - x)[~obj].abs().max() > 0.1  # the background did move
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BatchNorm statistics unchanged
    assert model.training and all(p.grad is None for p in model.parameters())


# ---- the data stream ---------------------------------------------------------------------------------------------


def test_one_crop_and_flip_reach_the_original_its_cf_f_and_mask(shards: Path) -> None:
    manifest = read_manifest(shards)
    stream = ShardStream(shards, manifest, "train", Fields(cf=["tile"], f=["shuffle"]), train=True, crop=16)
    full = ShardStream(shards, manifest, "train", Fields(cf=["tile"], f=["shuffle"]), train=False, crop=24)
    uncropped = {s["key"]: s for s in full}
    for sample in list(stream)[:10]:
        original = uncropped[sample["key"]]
        # locate the crop in the full original, then check every other field went through the same window
        img, ref = sample["image"], original["image"]
        found = None
        for flip in (False, True):
            src = ref.flip(-1) if flip else ref
            for top in range(24 - 16 + 1):
                for left in range(24 - 16 + 1):
                    if torch.equal(src[:, top : top + 16, left : left + 16], img):
                        found = (flip, top, left)
        assert found is not None
        flip, top, left = found
        for name in ("cf.tile", "f.shuffle", "mask"):
            src = original[name].flip(-1) if flip else original[name]
            assert torch.equal(src[:, top : top + 16, left : left + 16], sample[name]), name


def test_copies_rotate_with_the_epoch(shards: Path) -> None:
    fields = Fields(f=["shuffle"], stored=("f.shuffle.1.jpg", "f.shuffle.0.jpg", "f.shuffle-image.0.jpg", "jpg"))
    assert fields.names(0) == {"f.shuffle": "f.shuffle.0.jpg"} and fields.names(3) == {"f.shuffle": "f.shuffle.1.jpg"}


def test_a_shard_with_pickled_payloads_executes_nothing(shards: Path, tmp_path: Path) -> None:
    """Shards come from strangers: a .pyd/.pth member must never be unpickled or torch.load-ed."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    manifest = read_manifest(shards)
    shard = shards / manifest["splits"]["val"]["shards"][0]["path"]
    records = [{"__key__": k, **f} for k, f in iter_records(shard)]
    for r in records:
        r["pyd"] = pickle.dumps(Evil())
        r["pth"] = pickle.dumps(Evil())
    evil = tmp_path / "evil"
    (evil / "val").mkdir(parents=True)
    info = write_shard(evil / "val/shard-000000.tar", records)
    manifest["splits"] = {"val": {**manifest["splits"]["val"], "shards": [{"path": "val/shard-000000.tar", **info}]}}
    manifest["num_samples"] = info["num_samples"]
    (evil / "manifest.json").write_text(json.dumps(manifest))
    from train.ledger import DataError

    with pytest.raises(DataError, match=r"unexpected \['pth', 'pyd'\]"):  # fields the schema has not: as verify
        list(ShardStream(evil, read_manifest(evil), "val", Fields(), train=False, crop=24))
    assert not marker.exists()


# ---- training ----------------------------------------------------------------------------------------------------


def run_fit(shards: Path, out: Path, **kw):
    from train.train import fit

    config = Config.resolve(
        "demo", shards=str(shards), out=str(out), workers=0, batch_size=16, crop=16, max_saliency_images=8, **kw
    )
    return fit(config, resume=kw.pop("resume", False) if "resume" in kw else False)


def test_loss_decreases_over_a_few_steps(shards: Path) -> None:
    from augment.contract.zoo.models import build_model
    from train.train import objective

    torch.manual_seed(0)
    manifest = read_manifest(shards)
    stream = ShardStream(shards, manifest, "train", Fields(cf=["tile"], f=["shuffle"]), train=True, crop=16)
    batch = torch.utils.data.default_collate(list(stream)[:16])
    config = Config.resolve("demo", shards=str(shards), out="x", cf=["tile"], f=["shuffle"], sal=1.0, fgsm=0.1)
    model = build_model("resnet18", 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(8):
        loss, rows = objective(model, batch, config, 5, torch.device("cpu"), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the mean of the last 4 steps: at this lr one step may bounce back up, and which one depends on the 16 samples
    assert rows == 16 + 3 * 16 and sum(losses[-4:]) / 4 < 0.7 * losses[0], losses


def test_fit_writes_results_and_resume_reproduces_an_uninterrupted_run(shards: Path, tmp_path: Path) -> None:
    from train.train import fit

    def config(out: Path, epochs: int) -> Config:
        return Config.resolve(
            "demo",
            shards=str(shards),
            out=str(out),
            workers=0,
            batch_size=16,
            crop=16,
            epochs=epochs,
            cf=["tile"],
            f=["shuffle"],
            max_saliency_images=8,
        )

    straight = fit(config(tmp_path / "straight", 2))
    assert fit(config(tmp_path / "resumed", 2), stop_after=0) == {}  # interrupted after epoch 0's checkpoint
    resumed = fit(config(tmp_path / "resumed", 2), resume=True)
    a = torch.load(tmp_path / "straight/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed/last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert straight["splits"]["original"]["accuracy"] == resumed["splits"]["original"]["accuracy"]
    run = tmp_path / "straight"
    results = json.loads((run / "results.json").read_text())
    assert set(results["splits"]) == {"val", "original", "mixed_same", "mixed_rand", "mixed_next"}
    assert results["method"] == "CF(tile)+F(shuffle)" and "bg_gap" in results and "background_reliance" in results
    assert 0 <= results["splits"]["original"]["saliency_aupr"] <= 1
    assert len((run / "log.csv").read_text().splitlines()) == 3 and (run / "saliency_examples.npz").is_file()
    assert json.loads((run / "config.json").read_text())["cf"] == ["tile"]


def test_cli_fit_eval_report(shards: Path, tmp_path: Path) -> None:
    from train.cli import app

    runner = CliRunner()
    runs = tmp_path / "runs"
    for seed in (0, 1):
        result = runner.invoke(
            app,
            [
                "fit",
                "--shards",
                str(shards),
                "--out",
                str(runs / f"orig-s{seed}"),
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--crop",
                "16",
                "--workers",
                "0",
                "--seed",
                str(seed),
            ],
            prog_name="train",
        )
        assert result.exit_code == 0, result.output
        assert "mixed_next" in result.output
    result = runner.invoke(app, ["eval", str(runs / "orig-s0"), "--shards", str(shards), "--workers", "0"])
    assert result.exit_code == 0 and "original" in result.output
    result = runner.invoke(app, ["report", str(runs), "--out", str(runs / "report.md")])
    assert result.exit_code == 0, result.output
    report = (runs / "report.md").read_text()
    assert "| Orig | 2 |" in report and "±" in report and "train fit --shards" in report
    assert (runs / "saliency_vs_accuracy.png").is_file() and (runs / "curves.png").is_file()
    bad = runner.invoke(
        app, ["fit", "--shards", str(shards), "--out", str(tmp_path / "x"), "--cf", "grey"], prog_name="train"
    )
    assert bad.exit_code == 2 and "--cf grey: the shards hold no cf.grey images; built with ['tile']" in bad.output
    bad = runner.invoke(
        app,
        ["fit", "--shards", str(shards), "--out", str(tmp_path / "x"), "--cf", "tile", "--mixup", "0.2"],
        prog_name="train",
    )
    assert bad.exit_code == 2 and "baselines" in bad.output


def test_a_corrupt_sample_stops_the_stream_or_is_skipped_with_its_key_and_shard_and_counted(
    shards: Path, tmp_path: Path, caplog
) -> None:
    from train.ledger import DataError, Ledger

    manifest = read_manifest(shards)
    shard = shards / manifest["splits"]["val"]["shards"][0]["path"]
    records = [{"__key__": k, **f} for k, f in iter_records(shard)]
    records[1]["jpg"] = b"\xff\xd8 not a jpeg"
    bad = tmp_path / "bad"
    (bad / "val").mkdir(parents=True)
    info = write_shard(bad / "val/shard-000000.tar", records)
    manifest["splits"] = {"val": {**manifest["splits"]["val"], "shards": [{"path": "val/shard-000000.tar", **info}]}}
    (bad / "manifest.json").write_text(json.dumps({**manifest, "num_samples": info["num_samples"]}))
    with pytest.raises(DataError, match=rf"shard-000000.tar \(sample '{records[1]['__key__']}'\).*1 sample"):
        list(ShardStream(bad, read_manifest(bad), "val", Fields(), train=False, crop=24))
    stream = ShardStream(bad, read_manifest(bad), "val", Fields(), train=False, crop=24, ledger=Ledger(1, bad))
    with caplog.at_level("WARNING"):
        samples = list(stream)
    assert len(samples) == info["num_samples"] - 1 and stream.ledger.count == 1
    assert records[1]["__key__"] in caplog.text and "shard-000000.tar" in caplog.text


def test_deepliftshap_saliency_through_the_evaluation_path() -> None:
    from augment.contract.zoo.models import build_model
    from train import evaluate

    torch.manual_seed(0)
    model = build_model("resnet18", 5).eval()
    config = Config(shards="x", out="y", saliency="deepliftshap")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    scores = evaluate.saliency(model, x, torch.tensor([0, 3]), config)
    assert scores.shape == (2, 32, 32) and torch.isfinite(scores).all() and (scores >= 0).all()


def test_deepliftshap_baselines_are_the_split_s_own_images(shards: Path) -> None:
    """As the official code, DeepLiftShap attributes against real evaluation images: the first BASELINES images of
    the split's saliency subset, not noise."""
    from augment.contract.zoo.models import build_model, unshare_relus
    from train import evaluate
    from train.metrics import deepliftshap_saliency

    torch.manual_seed(0)
    model = build_model("resnet8", 5, from_checkpoint=True).eval()
    config = Config.resolve(
        "demo", shards=str(shards), out="unused", workers=0, saliency="deepliftshap", max_saliency_images=10
    )
    p = evaluate.predict(model, shards, read_manifest(shards), "original", 16, config, "cpu")
    images = torch.from_numpy(p["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    labels = torch.from_numpy(p["saliency_labels"])
    assert len(images) >= 2  # the subset itself is the baseline set (noise would stand in below 2)
    expected, _ = deepliftshap_saliency(unshare_relus(model).eval(), images, labels, images[: evaluate.BASELINES])
    torch.testing.assert_close(torch.from_numpy(p["scores"]), expected, rtol=1e-4, atol=1e-6)


def test_the_plateau_schedule_steps_on_validation_loss(shards: Path, tmp_path: Path, monkeypatch) -> None:
    """The official Waterbirds recipe lowers the lr when the validation *loss* stops falling (patience 1), even while
    the accuracy still rises."""
    from train import evaluate
    from train.train import fit

    epochs = iter(range(100))

    def rising_accuracy_and_loss(*args, **kwargs) -> dict:
        epoch = next(epochs)
        return {"accuracy": 0.2 + 0.1 * epoch, "loss": 1.0 + epoch, "macro_auc": None}

    monkeypatch.setattr(evaluate, "split_metrics", rising_accuracy_and_loss)
    config = Config.resolve(
        "demo",
        shards=str(shards),
        out=str(tmp_path / "run"),
        workers=0,
        batch_size=16,
        crop=16,
        epochs=4,
        schedule="plateau",
        lr=0.1,
        max_saliency_images=0,
    )
    fit(config)
    rows = (tmp_path / "run/log.csv").read_text().splitlines()
    header = rows[0].split(",")
    lrs = [float(r.split(",")[header.index("lr")]) for r in rows[1:]]
    losses = [float(r.split(",")[header.index("val_loss")]) for r in rows[1:]]
    assert losses == [1.0, 2.0, 3.0, 4.0]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01])  # epochs 1 and 2 did not improve on epoch 0's loss


def test_a_method_the_trainer_has_never_heard_of_trains_from_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train fit --cf` takes the method names a build's manifest lists, not a list of its own: shards from an augment
    with a method this trainer does not know (here ``sketch``, registered for this test only) still train."""
    from dataclasses import replace

    from augment import infill
    from train.cli import app

    monkeypatch.setitem(infill.INFILLS, "sketch", replace(infill.INFILLS["grey"], name="sketch"))
    out = tmp_path / "shards"
    config = BuildConfig(infill=["sketch"], image_size=24, shard_size=16, dataset_options={"size": 20})
    build(out, config, workers=1, progress=False)
    assert read_manifest(out)["methods"]["cf"] == ["sketch"]
    monkeypatch.delitem(infill.INFILLS, "sketch")  # the trainer must find it in the manifest, not in augment
    result = CliRunner().invoke(
        app,
        ["fit", "--shards", str(out), "--out", str(tmp_path / "run"), "--cf", "sketch", "--epochs", "1"]
        + ["--batch-size", "8", "--crop", "16", "--workers", "0"],
        prog_name="train",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cf"] == ["sketch"]


def test_a_field_name_is_not_a_method(shards: Path) -> None:
    """``--f shuffle.0`` names one stored copy, not a method the build made: refused, naming what was built."""
    from train.data import check_fields

    manifest = read_manifest(shards)
    check_fields(manifest, Fields(cf=["tile"], f=["shuffle"]))
    with pytest.raises(ValueError, match=r"--f shuffle.0: the shards hold no f.shuffle.0 images; built with \['shuf"):
        check_fields(manifest, Fields(f=["shuffle.0"]))
