"""Smoke tests of the benchmark scripts (bench/): the in-process kernel comparison runs and checks its outputs,
the process-tree memory probe sees memory that a child process allocates, and the parity benchmark's quick mode
runs end to end (IN-9 layout -> build -> train fit and the plain loop) while its reference loop follows the
trainer's crop, loss and schedule. The other CLI-driven benchmarks run in ``make bench QUICK=1``, which takes
longer than a unit test should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))


def test_kernel_benchmark_quick(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    import kernels

    kernels.main(["--quick"])
    out = capsys.readouterr().out
    assert out.count("outside hole unchanged") == 7  # grey, random, shuffle, tile (CF); random, shuffle, mixed-rand (F)
    # the paper-style grey, tile and mixed-rand follow the same rules as ours
    assert out.count("identical fills 8/8") == 3, out


def test_tree_peak_counts_children(bench_path: None) -> None:
    from common import TreePeak

    # a parent whose child holds 200 MiB for a moment: only a probe that walks the tree sees it
    child = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"]
    )
    peak = TreePeak(parent.pid)
    parent.wait()
    assert peak.stop() > 200 * 2**20


def test_parity_benchmark_quick(bench_path: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import parity

    parity.main(["--quick", "--threads", "1", "--out", str(tmp_path)])  # 1 thread: no spinning on a busy machine
    report = json.loads((tmp_path / "parity.json").read_text())
    manifest = json.loads((tmp_path / "parity" / "shards" / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "in9"  # read through the IN-9 adapter, from the layout it wrote
    assert manifest["dataset"]["classes"] == ["circle", "square", "triangle", "cross", "star"]
    assert manifest["splits"]["train"]["num_samples"] == 64
    splits = {"val", "original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg"}
    assert set(manifest["splits"]) == {"train", *splits}
    assert list(report["methods"]) == ["Orig", "F(shuffle)", "CF(tile)+F(shuffle)"]
    for sides in report["methods"].values():
        assert set(sides) == {"train fit", "plain loop"}
        for side in sides.values():
            assert set(side["accuracy"]) == splits
            assert all(0.0 <= a <= 1.0 for a in side["accuracy"].values())
            assert side["img_per_s"] > 0
    assert set(report["goal"]) == {"original_difference", "accuracy_met", "img_per_s_ratio", "speed_met"}
    out = capsys.readouterr().out
    assert out.count("fit - plain") == 3 and "goal, Orig" in out


def test_parity_plain_loop_follows_the_trainer(bench_path: None) -> None:
    """The reference loop's own crop/flip, loss and schedule are those of train.data, train.losses and train.train."""
    import parity
    import torch

    from train.config import Config
    from train.losses import cf_loss
    from train.train import make_scheduler

    # crop + flip: one window of RandomCrop's range (offsets 0 .. 8 - 5) per sample, shared by all its channels
    x = torch.arange(2 * 6 * 8 * 8, dtype=torch.float32).reshape(2, 6, 8, 8)
    out = parity.crop_flip(x, 5, torch.Generator().manual_seed(0))
    assert out.shape == (2, 6, 5, 5)
    for sample, crop in zip(x, out, strict=True):
        windows = [sample[:, t : t + 5, u : u + 5] for t in range(4) for u in range(4)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)
    logits, y = torch.randn(7, 5) * 4, torch.randint(0, 5, (7,))
    for kind, written_here in parity.CF_LOSSES.items():
        assert torch.allclose(written_here(logits, y), cf_loss(logits, y, kind), atol=1e-5)
    for schedule, milestones in (("cosine", []), ("step", [2, 4])):
        config = Config.resolve("demo", shards="-", out="-", epochs=6, schedule=schedule, milestones=milestones)
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
        scheduler = make_scheduler(config, optimizer)
        for epoch in range(config.epochs):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(config.lr * parity.lr_factor(config, epoch))
            optimizer.step()
            scheduler.step()


def test_photo_fixture_reads_as_in9_with_its_masks(bench_path: None, tmp_path: Path) -> None:
    """bench/photos.py's fixture: scikit-image photos in IN-9's layout, read by the in9 adapter with train masks from
    no_fg close to the drawn ones and exact test masks; the probes' features are those the docstring names."""
    pytest.importorskip("skimage")
    import numpy as np
    import photos

    from augment.datasets import get_dataset

    root = tmp_path / "bg_challenge"
    counts = photos.write_fixture(root, n_train=18, n_test=9, size=64, seed=0)
    assert counts == {"train": 18, "val": 9, **{v: 9 for v in photos.TEST_VARIANTS}}
    data = get_dataset("in9", root=str(root), image_size=64)
    assert data.classes == photos.SHAPES
    plans = data.splits()
    assert [r.label for r in plans["train"].refs] == sorted(i % 9 for i in range(18))  # class folder by class folder
    images = photos.load_photos()
    for i, item in enumerate(data.items["train"]):
        index = int(item.path.rsplit("_", 2)[1])
        _, drawn, _ = photos.sample(images, 0, "train", index, 64)
        derived = data.load("train", i).mask
        assert (derived & drawn).sum() / (derived | drawn).sum() > 0.8, item.path  # JPEG rings on dark photos
    for i in range(len(data.items["mixed_next"])):
        sample = data.load("mixed_next", i)
        _, drawn, photo = photos.sample(images, 0, "mixed_next", sample.label, 64)
        assert photo == (sample.label + 1) % 9 and np.array_equal(sample.mask, drawn)
    image, mask = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool)
    image[:2], mask[:2] = 255, True  # object white, background black
    assert photos.whole_stats(image).tolist() == [0.5] * 6
    assert photos.background_stats(image, mask).tolist() == [0.0] * 12


def test_gpu_benchmark_runs_its_cpu_paths_without_cuda(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/gpu.py is ready for a device machine: without CUDA its every step runs on the CPU at toy sizes."""
    import gpu
    import torch

    if torch.cuda.is_available():
        pytest.skip("with CUDA, make bench-gpu is the run to make")
    gpu.main(["--quick", "--skip-tests", "--families", "vit_small_patch16_224"])  # one family: 10 s, not 60
    out = capsys.readouterr().out
    assert "[gpu] CAGAN inpainting" in out and "train fit --arch resnet50 --amp" in out
    assert "FAILED" not in out and "\ntimm vit_small_patch16_224 " in out  # its row, with figures
    assert "passed: exit code 0" in out and "no figure above is a GPU measurement" in out


@pytest.mark.parametrize("source", ["online", "online-pool", "online-jpeg"])
def test_fgap_online_f_refills_each_batch_from_its_own_values_and_keeps_the_object(
    bench_path: None, source: str
) -> None:
    """bench/fgap.py's online path: the F field the trainer then reads is recomputed at every call (fresh draws),
    the object's pixels stay, and the batch-wide shuffle's background values come from the batch's own images."""
    import numpy as np
    import torch
    from fgap import OnlineF

    seen = []
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 4, (4, 3, 8, 8), dtype=np.uint8) * 60)  # values 0, 60, 120, 180
    mask = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6, 2:6] = True
    batch = {
        "image": images,
        "mask": mask,
        "has_object": torch.tensor([True, True, True, False]),
        "f.shuffle": torch.full_like(images, 7),
    }
    pool = rng.choice(np.uint8([240, 250]), (64, 8, 8, 3))  # the split pool's values, unlike any of the batch's
    online = OnlineF(
        lambda b, device, non_blocking: seen.append(b["f.shuffle"].clone()) or b,
        ("shuffle",),
        source,
        seed=0,
        pool_images=pool,
    )
    online(dict(batch), "cpu")
    online(dict(batch), "cpu")
    first, second = seen
    assert not torch.equal(first, second)  # fresh draws at every step
    assert torch.equal(first[:3][mask[:3].expand(-1, 3, -1, -1)], images[:3][mask[:3].expand(-1, 3, -1, -1)]) or (
        source == "online-jpeg"
    )
    assert (first[3] == 0).all()  # no object: zeros, as the loader gives
    background = first[:3][~mask[:3].expand(-1, 3, -1, -1)]
    if source == "online":
        assert set(background.unique().tolist()) <= {0, 60, 120, 180}
    elif source == "online-pool":
        assert set(background.unique().tolist()) <= {240, 250}


def test_fgap_help_and_rows_refuse_unknown_names(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    import fgap

    with pytest.raises(SystemExit) as done:
        fgap.main(["--help"])
    assert done.value.code == 0 and "--copies" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--rows: got \['F\(shuffle\)'\], expected names among: Orig, "):
        fgap.main(["--quick", "--rows", "F(shuffle)"])


def test_fgap_online_mixed_rand_takes_a_background_of_another_class_from_the_batch(bench_path: None) -> None:
    """bench/fgap.py's online mixed-rand: the object stays, the background is a donor of the batch with another
    label (its own object rectangle tiled over), drawn afresh at every step."""
    import torch
    from fgap import OnlineF

    seen = []
    images = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (10, 20, 30, 40)])
    images[:, :, 3:5, 3:5] = 200  # every object's pixels
    mask = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 3:5, 3:5] = True
    batch = {
        "image": images,
        "mask": mask,
        "label": torch.tensor([0, 0, 1, 1]),
        "has_object": torch.ones(4, dtype=torch.bool),
        "f.mixed-rand": torch.zeros_like(images),
    }
    online = OnlineF(
        lambda b, device, non_blocking: seen.append(b["f.mixed-rand"].clone()) or b, ("mixed-rand",), "online", seed=0
    )
    for _ in range(8):
        online(dict(batch), "cpu")
    for filled in seen:
        assert (filled[:, :, 3:5, 3:5] == 200).all()  # the object kept
        corner = filled[:, 0, 0, 0].tolist()  # the donor's background, never its own class's or its object
        assert corner[0] in (30, 40) and corner[1] in (30, 40) and corner[2] in (10, 20) and corner[3] in (10, 20)
    assert len({tuple(f[:, 0, 0, 0].tolist()) for f in seen}) > 1  # fresh donors


def test_photo_fixture_texture_objects_fill_the_shape_with_the_class_texture(bench_path: None, tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    import numpy as np
    import photos

    images, textures = photos.load_photos(5), photos.load_photos(5, photos.TEXTURES)
    plain, mask, photo = photos.sample(images, 0, "train", 7, 64)
    textured, mask2, photo2 = photos.sample(images, 0, "train", 7, 64, textures)
    assert np.array_equal(mask, mask2) and photo == photo2  # the same draw, only the object's pixels differ
    assert np.array_equal(plain[~mask], textured[~mask]) and not np.array_equal(plain[mask], textured[mask])
    assert textured[mask].std(axis=0).mean() > 2 * plain[mask].std(axis=0).mean()  # a texture, not one colour
    counts = photos.write_fixture(tmp_path / "bg_challenge", 10, 5, 64, 0, 5, "texture")
    assert counts["train"] == 10 and any(tmp_path.glob("done-*-texture-*.json"))


def test_waterbirds_fixture_reads_with_soft_masks_and_the_bias(bench_path: None, tmp_path: Path) -> None:
    """bench/waterbirds.py's fixture: the release's metadata and species folders, read by the waterbirds adapter;
    the soft rim is background; train follows y with the bias, test does not."""
    pytest.importorskip("skimage")
    import numpy as np
    import waterbirds
    from PIL import Image

    from augment.datasets import get_dataset

    counts = waterbirds.write_fixture(tmp_path, 200, 80, 64, 0.95, 0)
    assert counts == {"0": 200, "1": 40, "2": 100}
    root = tmp_path / "waterbird_complete95_forest2water2"
    lines = (root / "metadata.csv").read_text().splitlines()
    assert lines[0] == "img_id,img_filename,y,split,place,place_filename"
    assert lines[1].startswith("1,001.Black_footed_Albatross/Black_Footed_Albatross_0001_1.jpg,1,")
    rows = [line.split(",") for line in lines[1:]]
    train = [(int(r[2]), int(r[4])) for r in rows if r[3] == "0"]
    test = [(int(r[2]), int(r[4])) for r in rows if r[3] == "2"]
    assert sum(y == p for y, p in train) / len(train) > 0.9 and 0.3 < sum(y == p for y, p in test) / len(test) < 0.7
    data = get_dataset("waterbirds", root=str(root), image_size=64)
    sample = data.load("train", 0)
    seg = np.asarray(Image.open(tmp_path / "segmentations" / Path(rows[0][1]).with_suffix(".png")))
    assert set(np.unique(seg)) >= {0, 100, 255}
    bird, rim = (seg == 255).mean(), (seg >= 100).mean()
    assert rim - bird > 0.03 and abs(sample.mask.mean() - bird) < 0.01  # the rim (100) and the blur are background
    assert len(data.items["test_flip"]) + len(data.items["test_original"]) == len(test)


def test_paired_differences_pair_seeds_and_mark_two_standard_errors(bench_path: None, tmp_path: Path) -> None:
    import paired

    def run(seed: int, value: float) -> dict:
        return {
            "seed": seed,
            **{w: {"original": 0.9, "mixed_rand": value, "mixed_next": value} for w in ("best", "last")},
        }

    report = {"runs": {"A": [run(0, 0.5), run(1, 0.7), run(2, 0.6)], "B": [run(2, 0.5), run(0, 0.4), run(1, 0.61)]}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    lines = paired.main([str(path), "A", str(path), "B"])
    # A - B by seed: 0.1, 0.09, 0.1 (seed 1 paired with seed 1, not with B's second entry)
    assert lines[0].startswith("| A − B (3 seeds) | best | +0.000 ± 0.000 | **+0.097 ± 0.003** |"), lines[0]
    with pytest.raises(SystemExit, match="no row 'C'"):
        paired.main([str(path), "C", str(path), "B"])


def test_fills_benchmark_measures_every_weight_free_cf_fill(bench_path: None, tmp_path: Path) -> None:
    """bench/fills.py --quick: every weight-free CF method is scored against the hidden background and timed beside
    the JPEG encode; on photographs telea comes closer to the truth than tile, and grey has the least detail."""
    import fills

    from augment import infill

    report = fills.main(["--quick", "--sizes", "64", "--out", str(tmp_path)])
    table = report["errors"]["64"]
    weight_free = {n for n in infill.names(infill.CF) if not infill.INFILLS[n].needs_model}
    assert set(table) == weight_free | {fills.NAVIER_STOKES}
    assert table["telea"]["mae"] < table["tile"]["mae"] < table["grey"]["mae"]
    assert table["grey"]["energy"] < 1 < table["shuffle"]["energy"]
    assert set(report["speed_224"]) == set(table) | {"JPEG encode (floor)"}
    assert json.loads((tmp_path / "fills.json").read_text())["errors"] == report["errors"]


def test_bank_fixture_reads_as_cct_with_locations_and_empty_frames(bench_path: None, tmp_path: Path) -> None:
    import argparse

    import bank

    from augment.datasets import get_dataset

    args = argparse.Namespace(
        source_size=32,
        classes=3,
        cis_locations=4,
        trans_locations=2,
        class_locations=2,
        per_location=6,
        eval_per_location=2,
        empty=3,
        data_seed=0,
    )
    counts = bank.write_fixture(tmp_path / "cct", args)
    data = get_dataset("cct", root=str(tmp_path / "cct"), image_size=16)
    assert data.classes == ("circle", "square", "triangle")
    assert counts["class_locations"] == {"circle": [0, 1], "square": [1, 2], "triangle": [2, 3]}
    refs = data.splits()["train"].refs
    assert len(refs) == 24 and {r.location for r in refs} == {"0", "1", "2", "3"}
    for ref in refs:  # a class only where it occurs
        assert int(ref.location) in counts["class_locations"][data.classes[ref.label]]
    frames = data.empty_frames("train")
    assert len(frames) == 12 and sorted({f.location for f in frames}) == ["0", "1", "2", "3"]
    assert {r.location for r in data.splits()["trans_test"].refs} == {"4", "5"}  # held-out locations
    assert data.describe()["evaluation"]["trans"] == ["trans_val", "trans_test"]
