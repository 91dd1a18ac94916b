"""One default per setting: complete presets, `train fit` and `train study` resolving alike, recorded commands that
parse back to the same config (train and augment), and the summary columns over the declared test splits only."""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

import augment.runner.build
import train.data
import train.train
from augment.config import BuildConfig
from augment.runner.build import build
from train import report
from train.cli import app
from train.config import DEMO, PRESET_KEYS, PRESETS, Config, preset_of_build
from train.study import load_grid, make_spec

runner = CliRunner()
PAPER = ("in9", "waterbirds", "cct")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("config") / "shards"
    config = BuildConfig(
        dataset="synthetic", infill=["tile"], factual=["shuffle"], image_size=24, dataset_options={"size": 20}
    )
    build(out, config, progress=False)
    return out


@pytest.fixture
def captured(monkeypatch) -> list[Config]:
    """`train fit` parses, resolves and checks its config against the build, then stops: the trainer is not run."""
    configs: list[Config] = []
    monkeypatch.setattr(train.train, "fit", lambda config, **_: configs.append(config) or {})
    return configs


def fit(*args: str | Path):
    return runner.invoke(app, ["fit", *[str(a) for a in args]], prog_name="train")


def as_cct(manifest: dict) -> dict:
    """A build whose dataset is CCT: its val split is cis_val, as in the real one."""
    manifest = copy.deepcopy(manifest)
    manifest["dataset"]["name"] = "cct"
    manifest["splits"] = {("cis_val" if s == "val" else s): v for s, v in manifest["splits"].items()}
    return manifest


# ---- presets ------------------------------------------------------------------------------------------------------


def test_every_preset_sets_every_hyper_parameter_and_the_paper_ones_follow_table_8() -> None:
    for name, values in PRESETS.items():
        assert sorted(values) == sorted(PRESET_KEYS), name
        scratch = {"from_scratch": True} if name in PAPER else {}  # a fine-tuning recipe: without weights, on purpose
        assert Config.resolve(name, shards="s", out="o", **scratch).to_dict() == {
            **Config(shards="s", out="o").to_dict(),
            **values,
            **scratch,
            "preset": name,
        }
    for name in PAPER:
        p = PRESETS[name]
        assert (p["arch"], p["clip"], p["amp"], p["early_stop"]) == ("bit-s-r50x1", 1.0, True, 0), name
    cct = PRESETS["cct"]
    assert (
        cct["zero_head"] and cct["val_split"] == "cis_val" and cct["select"] == "auc" and cct["optimizer"] == "rmsprop"
    )
    assert PRESETS["demo"] is DEMO and DEMO["arch"] == "resnet8" and not DEMO["amp"]
    assert Config(shards="s", out="o") == Config.resolve("demo", shards="s", out="o")  # the dataclass = the demo


def test_resolve_rejects_unknown_keys_wrong_types_and_values_out_of_range() -> None:
    for overrides, message in (
        ({"learning_rate": 0.1}, r"unknown config keys \['learning_rate'\]; valid: amp, arch,"),
        ({"epochs": "ten"}, r"--epochs: got 'ten' \(str\), expected int"),
        ({"cf": "tile"}, r"--cf: got 'tile' \(str\), expected list\[str\]"),
        ({"amp": 1}, r"--amp: got 1 \(int\), expected bool"),
        ({"epochs": 0}, "--epochs: got 0, expected at least 1"),
        ({"label_smoothing": 2.0}, r"--label-smoothing: got 2.0, expected a value in \[0, 1\]"),
        ({"clip": 0.0}, "--clip: got 0.0, expected a gradient norm > 0"),
        ({"arch": "vit"}, "--arch: got 'vit', expected one of resnet18, resnet50, bit-s-r50x1, resnet8"),
    ):
        with pytest.raises(ValueError, match=message):
            Config.resolve("demo", shards="s", out="o", **overrides)
    assert (
        Config.resolve("demo", shards="s", out="o", lr=1).lr == 1.0
        and type(
            Config.resolve(  # an int is a float
                "demo", shards="s", out="o", lr=1
            ).lr
        )
        is float
    )


# ---- every field: a `train fit` flag and a grid key -----------------------------------------------------------------

# A value for every field but shards and out (required), other than the demo's where the checks allow one (not
# from_scratch: with weights, a contradiction).
OTHER = dict(
    preset="in9",
    arch="resnet8",
    weights="w.pth",
    from_scratch=False,
    normalisation="imagenet",
    zero_head=True,
    cf=["tile"],
    cf_loss="uniform",
    cf_weight=0.5,
    f=["shuffle"],
    fgsm=0.1,
    fgsm_steps=2,
    sal=2.0,
    mixup=0.0,
    label_smoothing=0.0,
    epochs=3,
    batch_size=4,
    optimizer="rmsprop",
    lr=0.001,
    momentum=0.5,
    weight_decay=0.001,
    schedule="step",
    milestones=[1, 2],
    select="auc",
    val_split="original",
    crop=16,
    clip=2.0,
    early_stop=2,
    seed=3,
    train_fraction=0.5,
    workers=0,
    device="cpu",
    amp=True,
    saliency="deepliftshap",
    max_saliency_images=4,
    max_bad_samples=5,
    channels_last="on",
    compile=True,
)


def test_every_config_field_has_a_fit_option_and_a_grid_key(tmp_path: Path) -> None:
    import typer.main

    settable = [f.name for f in fields(Config) if f.name not in ("shards", "out")]
    assert sorted(OTHER) == sorted(settable)
    options = {o: p for p in typer.main.get_command(app).commands["fit"].params for o in p.opts}
    for key in settable:
        flag = "--" + key.replace("_", "-")
        assert flag in options, flag
        if isinstance(OTHER[key], bool):
            assert f"--no-{flag[2:]}" in options[flag].secondary_opts, flag
        assert options[flag].default is None, f"{flag} has a default of its own: {options[flag].default}"
    grid = tmp_path / "grid.toml"
    grid.write_text(
        "[defaults]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in OTHER.items() if k != "sal")
        + '[[run]]\nname = "A"\nsal = 2.0\n'
    )
    loaded = load_grid(grid)
    spec = make_spec(loaded, loaded.rows[0], 1, 1.0, "s", tmp_path, {})
    assert spec.config.to_dict() == {**OTHER, "seed": 4, "shards": "s", "out": str(tmp_path / "runs/A/s4")}


def test_grid_rejects_unknown_keys_and_bad_values_listing_the_valid_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    for text, message in (
        (
            '[defaults]\nlearning_rate = 0.1\n[[run]]\nname = "A"\n',
            r"\[defaults\]: unknown settings \['learning_rate'\]; valid: amp, arch, batch_size,",
        ),
        (
            '[[run]]\nname = "A"\n[curve]\nfraction = [0.5]\n',
            r"\[curve\]: unknown keys \['fraction'\]; valid: fractions, rows",
        ),
        ('[[run]]\nname = "A"\n[select]\nbest = "val"\n', r"\[select\]: unknown keys \['best'\]; valid: best_by"),
        ('[[run]]\nname = "A"\nepochs = "ten"\n', r"bad.toml: \[\[run\]\] #1: --epochs: got 'ten' \(str\)"),
        ('[[run]]\nname = "A"\npreset = "imagenet"\n', r"#1: --preset: got 'imagenet', expected one of in9"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_grid(bad)


# ---- `train fit` and `train study` resolve alike; the preset of the build's dataset --------------------------------


@pytest.mark.parametrize("preset", [None, "in9", "cct"])
def test_fit_and_a_study_row_resolve_to_the_same_config(shards: Path, tmp_path: Path, captured, preset) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(
        ("" if preset is None else f'[defaults]\npreset = "{preset}"\nfrom_scratch = true\n')
        + '[[run]]\nname = "CF+F"\ncf = ["tile"]\nf = "shuffle"\nval_split = "val"\n'
    )
    loaded = load_grid(grid)
    build_preset = preset_of_build(train.data.read_manifest(shards))  # as train.study.study finds it
    spec = make_spec(loaded, loaded.rows[0], 0, 1.0, str(shards), tmp_path, {}, build_preset)
    args = ["--preset", preset, "--from-scratch"] if preset else []
    result = fit(
        "--shards", shards, *args, "--cf", "tile", "--f", "shuffle", "--val-split", "val", "--out", spec.config.out
    )
    assert result.exit_code == 0, result.output
    assert captured[0].to_dict() == spec.config.to_dict()
    assert captured[0].preset == (preset or "demo") and captured[0].arch == (
        "resnet8" if preset in (None, "demo") else "bit-s-r50x1"
    )
    assert ("no --preset: using 'demo', the preset of the build's dataset" in result.output) == (preset is None)


def test_without_preset_fit_takes_the_build_dataset_preset_and_a_missing_val_split_names_real_options(
    shards: Path, tmp_path: Path, captured, monkeypatch
) -> None:
    import train.data

    cct = as_cct(train.data.read_manifest(shards))
    monkeypatch.setattr(train.data, "read_manifest", lambda *a, **k: cct)
    result = fit("--shards", shards, "--from-scratch", "--out", tmp_path / "x")
    assert result.exit_code == 0, result.output
    assert "no --preset: using 'cct', the preset of the build's dataset (cct)" in result.output
    assert captured[0].preset == "cct" and captured[0].val_split == "cis_val" and captured[0].zero_head
    result = fit("--shards", shards, "--preset", "demo", "--out", tmp_path / "x")
    assert result.exit_code == 2 and len(captured) == 1
    assert (
        "the preset's (demo) val_split 'val' is not a split of this build (splits: cis_val, original, "
        "mixed_same, mixed_rand, mixed_next); pass --val-split SPLIT or --preset cct"
    ) in result.output
    assert "not in the build" not in result.output
    result = fit("--shards", shards, "--preset", "demo", "--val-split", "cis_val", "--out", tmp_path / "x")
    assert result.exit_code == 0 and captured[1].val_split == "cis_val"


# ---- the paper's presets are fine-tuning recipes: without weights, a run says how to train from scratch -------------

SCRATCH_OPTIONS = ("--weights FILE", "--preset demo", "(any --arch)", "--from-scratch")


def error_line(result: Result) -> str:
    """The one line a refused command writes on stderr (exit 2)."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_a_fine_tuning_preset_without_weights_is_refused_in_one_line(
    shards: Path, tmp_path: Path, captured, monkeypatch
) -> None:
    from train.config import FINE_TUNING_PRESETS

    assert FINE_TUNING_PRESETS == set(PAPER) and "demo" not in FINE_TUNING_PRESETS
    for preset in PAPER:
        with pytest.raises(ValueError, match=f"^--preset {preset} is a fine-tuning recipe"):
            Config.resolve(preset, shards="s", out="o", arch="resnet18")  # another model: still a fine-tuning recipe
        line = error_line(fit("--shards", shards, "--preset", preset, "--out", tmp_path / "x"))
        assert line.startswith(f"train: error: --preset {preset} is a fine-tuning recipe"), line
        assert all(option in line for option in SCRATCH_OPTIONS), line
    cct = as_cct(train.data.read_manifest(shards))  # no --preset: the build's dataset chooses cct
    monkeypatch.setattr(train.data, "read_manifest", lambda *a, **k: cct)
    line = error_line(fit("--shards", shards, "--arch", "resnet18", "--out", tmp_path / "x"))
    assert line.startswith(
        "train: error: no --preset: using 'cct', the preset of the build's dataset (cct), which is a fine-tuning recipe"
    ), line
    assert all(option in line for option in SCRATCH_OPTIONS), line
    assert not captured and not (tmp_path / "x").exists()


def test_from_scratch_is_an_explicit_choice_and_contradicts_weights(
    shards: Path, tmp_path: Path, captured, monkeypatch
) -> None:
    result = fit(
        "--shards", shards, "--preset", "waterbirds", "--arch", "resnet18", "--from-scratch", "--out", tmp_path / "x"
    )
    assert result.exit_code == 0, result.output
    assert (captured[-1].preset, captured[-1].arch, captured[-1].weights) == ("waterbirds", "resnet18", None)
    assert captured[-1].from_scratch and captured[-1].lr == PRESETS["waterbirds"]["lr"]
    for arch in ("resnet8", "resnet18"):  # the demo is a from-scratch recipe for any model
        result = fit("--shards", shards, "--preset", "demo", "--arch", arch, "--out", tmp_path / "x")
        assert result.exit_code == 0 and not result.stderr, result.output
        assert (captured[-1].preset, captured[-1].arch, captured[-1].from_scratch) == ("demo", arch, False)
    assert Config.resolve("cct", shards="s", out="o", weights="w.pth").weights == "w.pth"  # fine-tuning, as meant
    for preset in ("in9", "demo"):
        line = error_line(
            fit("--shards", shards, "--preset", preset, "--from-scratch", "--weights", "w.pth", "--out", tmp_path / "x")
        )
        assert line.startswith("train: error: --from-scratch and --weights contradict each other"), line
    with pytest.raises(ValueError, match="--from-scratch and --weights contradict each other"):
        Config.resolve("demo", shards="s", out="o", from_scratch=True, weights="w.pth")
    cct = as_cct(train.data.read_manifest(shards))  # the automatic preset, from scratch on purpose
    monkeypatch.setattr(train.data, "read_manifest", lambda *a, **k: cct)
    result = fit("--shards", shards, "--from-scratch", "--out", tmp_path / "x")
    assert result.exit_code == 0, result.output
    assert captured[-1].preset == "cct" and captured[-1].from_scratch
    assert "no --preset: using 'cct', the preset of the build's dataset (cct)" in result.stderr
    assert len(captured) == 4


def test_a_grid_with_a_fine_tuning_preset_needs_weights_or_from_scratch(
    shards: Path, tmp_path: Path, monkeypatch
) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('[defaults]\npreset = "in9"\n[[run]]\nname = "Orig"\n')
    with pytest.raises(ValueError, match=r"grid.toml: \[\[run\]\] #1: --preset in9 is a fine-tuning recipe"):
        load_grid(grid)
    for fix in ('preset = "in9"\nfrom_scratch = true', 'preset = "in9"\nweights = "w.pth"', 'preset = "demo"'):
        grid.write_text(f'[defaults]\n{fix}\n[[run]]\nname = "Orig"\n')
        loaded = load_grid(grid)
        config = make_spec(loaded, loaded.rows[0], 0, 1.0, "s", tmp_path, {}).config
        assert (config.preset, config.from_scratch, config.weights) == {
            'preset = "in9"\nfrom_scratch = true': ("in9", True, None),
            'preset = "in9"\nweights = "w.pth"': ("in9", False, "w.pth"),
            'preset = "demo"': ("demo", False, None),
        }[fix]
    grid.write_text('[[run]]\nname = "Orig"\n')  # no preset: the build's dataset's, cct here
    cct = as_cct(train.data.read_manifest(shards))
    monkeypatch.setattr(train.data, "read_manifest", lambda *a, **k: cct)
    result = runner.invoke(app, ["study", "--shards", str(shards), "--grid", str(grid), "--out", str(tmp_path / "st")])
    line = error_line(result)
    assert (
        "grid.toml: row 'Orig': no preset in the grid: using 'cct', the preset of the build's dataset (cct), "
        "which is a fine-tuning recipe" in line
    ), line
    assert all(option in line for option in SCRATCH_OPTIONS) and not (tmp_path / "st").exists()


def test_a_run_from_before_from_scratch_still_evaluates_reports_and_reruns(
    shards: Path, tmp_path: Path, captured
) -> None:
    """A run of the in9 recipe from random weights, written before --from-scratch existed: its config has no such
    key. `train eval` evaluates it, its recorded command reruns it, and a study that asks for it reuses it."""
    from augment.contract.zoo.models import build_model
    from train.study import finished
    from train.study.specs import RunSpec

    run = tmp_path / "run"
    run.mkdir()
    old = {
        **Config(shards=str(shards), out=str(run)).to_dict(),
        **PRESETS["in9"],
        "preset": "in9",
        "arch": "resnet8",
        "val_split": "val",
        "workers": 0,
        "max_saliency_images": 2,
    }
    old.pop("from_scratch", None)
    classes = train.data.read_manifest(shards)["dataset"]["classes"]
    model = build_model("resnet8", len(classes), from_checkpoint=True)
    torch.save({"model": model.state_dict(), "epoch": 0, "config": old, "classes": classes}, run / "best.pt")
    result = runner.invoke(app, ["eval", str(run), "--shards", str(shards)], prog_name="train")
    assert result.exit_code == 0, result.output
    command = report.command_of(old)
    assert " --from-scratch " in command, command
    result = fit(*shlex.split(command)[2:])
    assert result.exit_code == 0, (command, result.output)
    assert captured[-1].to_dict() == {**old, "from_scratch": True}
    (run / "config.json").write_text(json.dumps(old))
    (run / "results.json").write_text(json.dumps({"manifest_sha256": train.data.manifest_sha256(shards)}))
    assert finished(RunSpec("Orig", 0, 1.0, captured[-1]))  # the study's run of the same config: reused


# ---- the recorded commands parse back to the same config -----------------------------------------------------------


def configs(shards: Path, tmp_path: Path) -> list[Config]:
    where = dict(shards=str(shards), out=str(tmp_path / "a run"))
    return [
        Config.resolve("demo", **where),
        Config.resolve(
            "cct",
            **where,
            val_split="val",
            milestones=[],
            schedule="cosine",
            amp=False,
            zero_head=False,
            cf=["tile"],
            f=["shuffle"],
            fgsm=0.3,
            sal=10.0,
            lr=1e-4,
            weights="w 1.pth",
            crop=16,
            device="cuda:1",
            seed=2,
            train_fraction=0.25,
        ),
        Config.resolve("in9", **{**{k: v for k, v in OTHER.items() if k != "preset"}, **where}),
        Config.resolve(
            "waterbirds", **where, mixup=0.2, clip=float("inf"), epochs=1, early_stop=3, workers=0, from_scratch=True
        ),
    ]


def test_command_of_a_run_parses_back_to_its_config(shards: Path, tmp_path: Path, captured, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # `train fit` refuses a device that is not here
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    originals = configs(shards, tmp_path)
    for config in originals:
        command = report.command_of(config.to_dict())
        assert command.startswith(f"train fit --shards {shards} --preset {config.preset}")
        assert command.endswith(f"--out '{tmp_path / 'a run'}'")
        result = fit(*shlex.split(command)[2:])
        assert result.exit_code == 0, (command, result.output)
        assert captured[-1] == config, command
    cct = report.command_of(originals[1].to_dict())
    assert "--milestones ''" in cct and "--no-amp" in cct and "--no-zero-head" in cct  # none / off, unlike the preset
    assert "--lr " not in report.command_of(originals[0].to_dict())  # the preset's value is not repeated
    old = {**originals[0].to_dict(), "lr_head": 0.1}  # a key of an older version
    assert report.command_of(old).endswith("  # not settings any more: lr_head=0.1")


def test_the_build_command_parses_back_to_the_same_build_config(tmp_path: Path, monkeypatch) -> None:
    from augment.cli import app as augment_app

    seen: list[tuple[BuildConfig, str]] = []

    def fake_build(out, config, *, command, **_):
        seen.append((copy.deepcopy(config), command))
        return {"num_samples": 0, "splits": {}, "rejects": {"count": 0}}

    monkeypatch.setattr(augment.runner.build, "build", fake_build)
    for args in (
        [
            "--dataset",
            "synthetic",
            "--infill",
            "tile",
            "--factual",
            "shuffle",
            "--size",
            "20",
            "--bias",
            "0.8",
            "--device",
            "cpu",
            "--copies",
            "2",
            "--seed",
            "5",
            "--image-size",
            "32",
            "--shard-size",
            "8",
        ],
        ["--dataset", "synthetic", "--infill", "grey"],  # every default, recorded too
        [
            "--dataset",
            "coco",
            "--infill",
            "tile",
            "--root",
            str(tmp_path / "my data"),
            "--annotations",
            "train=a.json",
            "--annotations",
            "val=b.json",
            "--label-from",
            "area",
            "--on-error",
            "skip",
            "--max-image-pixels",
            "1000",
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--overwrite",
            "-q",
        ],
    ):
        result = runner.invoke(augment_app, ["build", *args, "--out", str(tmp_path / "out")], prog_name="augment")
        assert result.exit_code == 0, result.output
        config, command = seen[-1]
        again = runner.invoke(augment_app, shlex.split(command)[1:], prog_name="augment")
        assert again.exit_code == 0, (command, again.output)
        assert asdict(seen[-1][0]) == asdict(config) and seen[-1][1] == command, command
    first, second, third = (c for _, c in seen[::2])
    assert "--device cpu" in first and "--bias 0.8" in first and "--device auto" in second
    assert "--size 2000 --bias 0.9" in second  # the synthetic dataset's own defaults, as `augment info` shows them
    assert "--workers" not in third and "--overwrite" not in third and "--annotations train=a.json" in third
    # the adapter's options in the order its factory declares them, whatever the order of --help or of the flags given
    coco = "--annotations train=a.json --annotations val=b.json --label-from area --max-image-pixels 1000 --device"
    assert f"--on-error skip --root '{tmp_path / 'my data'}' {coco}" in third, third


# ---- `train eval`: the GPU when there is one, no from-scratch warning ----------------------------------------------


def test_eval_loads_the_checkpoint_without_a_from_scratch_warning(shards: Path, tmp_path: Path, caplog) -> None:
    from augment.contract.zoo.models import build_model

    run = tmp_path / "run"
    run.mkdir()
    config = Config.resolve("demo", shards=str(shards), out=str(run), arch="resnet8", workers=0, max_saliency_images=2)
    classes = train.data.read_manifest(shards)["dataset"]["classes"]
    model = build_model("resnet8", len(classes), from_checkpoint=True)
    torch.save(
        {"model": model.state_dict(), "epoch": 0, "config": config.to_dict(), "classes": classes}, run / "best.pt"
    )
    with caplog.at_level("INFO"):
        result = runner.invoke(app, ["eval", str(run), "--shards", str(shards)], prog_name="train")
    assert result.exit_code == 0, result.output
    # the zoo logs "from scratch" (logger augment.contract.zoo) when a model is built without weights
    assert "from scratch" not in caplog.text
    assert "mixed_next" in result.output and (run / "results.json").is_file()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["eval", str(run), "--shards", str(shards), "--device", "cuda"])
        assert result.exit_code == 2 and "--device cuda: no such CUDA device here (0 visible)" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_eval_runs_on_the_gpu_by_default(shards: Path, tmp_path: Path, monkeypatch) -> None:
    import train.evaluate

    devices = []
    real = train.evaluate.evaluate_all
    monkeypatch.setattr(train.evaluate, "evaluate_all", lambda m, *a: devices.append(a[-1]) or real(m, *a))
    test_eval_loads_the_checkpoint_without_a_from_scratch_warning(shards, tmp_path)
    assert devices and devices[0].type == "cuda"


# ---- summary columns: the declared test splits only -----------------------------------------------------------------

EVALUATIONS = {  # as augment/datasets/*.py declare them in the manifest
    "cct": {
        "metric": "macro one-vs-rest AUC",
        "cis": ["cis_val", "cis_test"],
        "trans": ["trans_val", "trans_test"],
        "model_selection": "cis_val",
    },
    "in9": {
        "bg_gap": {"same": "mixed_same", "rand": "mixed_rand"},
        "background_reliance": {"original": "original", "shifted": "mixed_next", "background_class": "..."},
    },
    "waterbirds": {"worst_group": True, "flip": {"original": "test_original", "shifted": "test_flip"}},
}
SPLITS = {
    "cct": (["train", "cis_val", "cis_test", "trans_val", "trans_test"], "cis_val", ["cis_test", "trans_test"]),
    "in9": (
        ["train", "val", "original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg", "only_bg_b"],
        "val",
        ["original", "mixed_same", "mixed_rand", "mixed_next"],
    ),
    "waterbirds": (["train", "val", "test", "test_original", "test_flip"], "val", ["test_original", "test_flip"]),
    "folder": (["train", "val", "test"], "val", ["test"]),
}


@pytest.mark.parametrize("dataset", list(SPLITS))
def test_summary_columns_take_only_the_declared_test_splits(dataset: str) -> None:
    from augment.datasets import in9, synthetic

    assert EVALUATIONS["in9"]["bg_gap"] == in9.EVALUATION["bg_gap"] == synthetic.EVALUATION["bg_gap"]
    splits, val, tests = SPLITS[dataset]
    assert report.declared_test_splits(splits, val, EVALUATIONS.get(dataset)) == tests  # from the manifest
    assert report.declared_test_splits(splits, val) == tests  # by the rule, for results without the list
    results = {
        "splits": {
            s: {"worst_group_accuracy": 0.1 if s in tests else 0.01, "saliency_aupr": 0.5 if s in tests else 0.9}
            for s in splits
            if s != "train"
        }
    }
    assert report.worst_group(results, {"val_split": val}) == 0.1
    assert report.mean_saliency(results, {"val_split": val}) == 0.5
    results["test_splits"] = tests[:1]  # what train.evaluate writes, when it does, wins
    results["splits"][tests[0]]["saliency_aupr"] = 0.25
    assert report.mean_saliency(results) == 0.25


def test_each_arch_gets_its_weights_normalisation_recorded_and_old_runs_keep_theirs() -> None:
    from train.config import recorded

    assert Config.resolve("demo", shards="s", out="o", arch="resnet18").normalisation == "imagenet"
    assert Config.resolve("demo", shards="s", out="o", arch="resnet50").normalisation == "imagenet"
    assert Config.resolve("demo", shards="s", out="o").normalisation == "half"  # resnet8
    assert Config.resolve("in9", shards="s", out="o", weights="w.npz").normalisation == "half"  # BiT: [-1, 1]
    chosen = Config.resolve("demo", shards="s", out="o", arch="resnet18", normalisation="half")
    assert chosen.to_dict()["normalisation"] == "half"  # written into config.json and every checkpoint
    old = {
        k: v
        for k, v in Config.resolve("demo", shards="s", out="o", arch="resnet18").to_dict().items()
        if k != "normalisation"
    }
    assert Config(**recorded(old)).normalisation == "half"  # what the trainer fed every model before
    with pytest.raises(ValueError, match=r"--normalisation: got 'bgr', expected a name \(half, imagenet\) or mean/std"):
        Config.resolve("demo", shards="s", out="o", normalisation="bgr")


def test_the_cf_objective_is_named_where_it_is_not_the_default_and_old_runs_keep_logp() -> None:
    from train.config import recorded

    default = Config.resolve("demo", shards="s", out="o", cf=["tile"], f=["shuffle"])
    assert (default.cf_loss, default.cf_weight) == ("uniform-others", 0.5)
    assert default.method_name() == "CF(tile)+F(shuffle)"
    paper = Config.resolve("demo", shards="s", out="o", cf=["tile"], cf_loss="logp", cf_weight=1.0)
    assert paper.method_name() == "CF(tile:logp×1)"
    assert Config.resolve("demo", shards="s", out="o", cf=["grey"], cf_weight=0.25).method_name() == "CF(grey:×0.25)"
    assert (
        Config.resolve("demo", shards="s", out="o", cf=["grey"], cf_loss="uniform").method_name() == "CF(grey:uniform)"
    )
    old = {k: v for k, v in default.to_dict().items() if k not in ("cf_loss", "cf_weight")}
    assert (Config(**recorded(old)).cf_loss, Config(**recorded(old)).cf_weight) == ("logp", 1.0)
