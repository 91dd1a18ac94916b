"""Photo backgrounds (issue #13): does F(shuffle) remove a real photo's colour cue, and what do F copies buy?

On photographs an image's colour histogram is mostly its background's, so an F image whose background is a
permutation of the image's *own* values (``shuffle-image``) keeps a colour cue to the class; ``shuffle`` draws from
a seeded pool of many images of the split (as the paper's batch-wide permutation does) and should not. Measured on:

1. **The fixture**: IN-9's Backgrounds Challenge layout (docs/DATASETS.md, ``in9``), written class folder by class
   folder as IN-9 is released, whose backgrounds are the colour photographs scikit-image ships (``PHOTOS``: one per
   class, read from skimage's own data folder, no network). A sample is a random crop (position, scale 0.3-1 of
   the short side, flip) of a photo resized to ``--source-size``, with the class's photo with probability 0.8 in
   train and val (else a uniformly drawn other photo), and an object whose shape is the class (``SHAPES``, random
   colour, size, position and rotation, exact mask). ``train/no_fg`` holds the copies with the object blacked out
   (where the adapter takes the train masks); ``test`` holds original, mixed_same (another crop of the class's
   photo), mixed_rand (a random other photo), mixed_next (photo c + 1 mod K), only_fg, no_fg, and ``test/fg_mask``
   the exact masks. Seeded (numpy Generators keyed by seed, split, index, part). ``--classes`` K takes the first K
   photos and shapes: 5 for training (the synthetic generator's five shapes; in development runs at this budget a
   ResNet-8 did not learn nine shapes at all, so every training row would have measured the background alone), and
   a second fixture with ``--probe-classes`` 9 (IN-9's count) for the probe only.
2. **Builds** with ``augment build --dataset in9``: ``--copies 1`` with ``--infill tile`` and F shuffle,
   shuffle-image, random and mixed-rand; ``--copies 4`` and ``--copies 8`` with F shuffle, random and mixed-rand
   (the 9-class fixture: ``--copies 1`` with the four F methods). Storage: MB of shards per build, and MB of each
   method's fields in the train shards (all copies).
3. **Colour-cue probe** on the stored train images of each copies-1 build (copy 0 of each F method), 5-fold
   stratified cross-validation (seeded), against the originals and chance (1/K):
   (a) nearest centroid (Euclidean, features on [0, 1]) on the mean and std per channel of the whole image;
   (b) logistic regression (standardised features) on 12 statistics of the background pixels (outside the stored
   mask): mean, std, 10% and 90% quantile per channel.
4. **Training** (``--preset demo --arch resnet8`` at 32 px, 28 px crops, as ``make reproduce``), through
   ``train.study.run_all`` (``train study --jobs 2``: each run in its own process with cores / jobs threads, no
   DataLoader workers): Orig, F(shuffle), F(shuffle-image), CF(tile)+F(shuffle), CF(tile)+F(shuffle-image) on the
   copies-1 build, and F(shuffle), F(random), F(mixed-rand) on each copies build (the trainer reads copy
   ``epoch % copies``); mean ± sd over the seeds of the accuracy per test split.

Writes ``<out>/photos.json`` (default bench/out/) and works in ``<out>/photos/`` (fixture kept between runs with the
same parameters; builds and runs redone every time).

    .venv/bin/python bench/photos.py            # the measurement of docs/results-photos.md
    .venv/bin/python bench/photos.py --quick    # smoke run: tiny data, 1 epoch, 1 seed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from common import OUT, OtherLoad, cli, git, machine
from PIL import Image

from augment.contract.encode import decode_image, decode_mask
from augment.contract.shards import iter_records
from augment.datasets.synthetic import shape_mask as synthetic_shape_mask

FIXTURE_VERSION = 1  # bump whenever the fixture's pixels for the same parameters change
# (class-folder name, file in skimage's data folder): the photo that is class c's background
PHOTOS = (
    ("astronaut", "astronaut.png"),
    ("coffee", "coffee.png"),
    ("chelsea", "chelsea.png"),
    ("rocket", "rocket.jpg"),
    ("hubble", "hubble_deep_field.jpg"),
    ("ihc", "ihc.png"),
    ("retina", "retina.jpg"),
    ("colorwheel", "color.png"),
    ("motorcycle", "motorcycle_left.png"),
)
# Second object style (``--objects texture``): class c's shape filled with a crop of scikit-image's texture photo c
# (greyscale, given a random tint), so the object carries a texture to learn as well as an outline.
TEXTURES = (
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "page.png",
    "camera.png",
    "moon.png",
    "text.png",
    "clock_motion.png",
)
OBJECTS = ("shape", "texture")
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "bar", "crescent", "dart")  # the class = the shape
CLASS_FOLDERS = tuple(f"{i:02d}_{name}" for i, name in enumerate(SHAPES))
TEST_VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg")
BAR = ((1, 0.3), (-1, 0.3), (-1, -0.3), (1, -0.3))  # polygon corners in units of the radius, before rotation
DART = ((1, 0), (-0.8, 0.8), (-0.3, 0), (-0.8, -0.8))  # an arrowhead: a triangle with a notch
BIAS = 0.8  # P(class c on photo c) in train and val
CROP_SCALE = (0.3, 1.0)  # crop side as a fraction of the photo's short side
OBJECT_SCALE = (0.45, 0.75)  # object diameter as a fraction of the image side
PHOTO_SIDE = 400  # photos are shrunk to this long side once (crops are resized to --source-size anyway)
SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
BACKGROUND_PART = {"train": 1, "val": 1, "original": 1, "mixed_same": 2, "mixed_rand": 3, "mixed_next": 4}

F_PROBED = ("shuffle", "shuffle-image", "random", "mixed-rand")
MAIN_ROWS = {
    "Orig": ([], []),
    "F(shuffle)": ([], ["shuffle"]),
    "F(shuffle-image)": ([], ["shuffle-image"]),
    "CF(tile)+F(shuffle)": (["tile"], ["shuffle"]),
    "CF(tile)+F(shuffle-image)": (["tile"], ["shuffle-image"]),
}
# The CF objective of the CF rows: the paper's, as when docs/results-photos.md was measured (this benchmark compares
# shuffle pools, not CF losses; make fgap compares those)
CF_OBJECTIVE = {"cf_loss": "logp", "cf_weight": 1.0}
COPIES_ROWS = {"F(shuffle)": ([], ["shuffle"]), "F(random)": ([], ["random"]), "F(mixed-rand)": ([], ["mixed-rand"])}
SPLITS_SHOWN = ("val", "original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg")
Drawn = tuple[np.ndarray, np.ndarray, int]  # a sample's image, object mask and photo index


# ---- 1. the fixture: IN-9's layout on scikit-image's photographs --------------------------------------------------


def load_photos(classes: int = len(PHOTOS), names: tuple[str, ...] = tuple(n for _, n in PHOTOS)) -> list[np.ndarray]:
    """The first ``classes`` of ``names`` (default ``PHOTOS``) as uint8 RGB, long side ``PHOTO_SIDE``, from the files
    scikit-image installs (no download)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit("bench/photos.py: scikit-image is not installed (its sample photos are the backgrounds)")
    folder = Path(spec.origin).parent / "data"
    photos = []
    for name in names[:classes]:
        path = folder / name
        try:
            photo = np.asarray(Image.open(path).convert("RGB"))
        except OSError as e:
            raise SystemExit(f"bench/photos.py: cannot load scikit-image's photo {path} ({e})") from None
        scale = PHOTO_SIDE / max(photo.shape[:2])
        if scale < 1:
            photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        photos.append(photo)
    return photos


def photo_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``photo`` (side CROP_SCALE of its short side, any position, flipped half the time),
    resized to ``size`` x ``size``."""
    h, w = photo.shape[:2]
    side = max(8, round(rng.uniform(*CROP_SCALE) * min(h, w)))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = photo[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def object_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A bool [size, size] mask of shape ``SHAPES[label]``: random size, centre and rotation, inside the image. The
    first five are the synthetic generator's; ring, bar, crescent and dart are drawn here the same way."""
    if label < 5:
        return synthetic_shape_mask(label, size, rng, OBJECT_SCALE)
    radius = rng.uniform(*OBJECT_SCALE) * size / 2
    cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
    theta = rng.uniform(0, 2 * np.pi)
    canvas = np.zeros((size, size), dtype=np.uint8)
    centre = (round(cx), round(cy))
    kind = SHAPES[label]
    if kind in ("ring", "crescent"):
        cv2.circle(canvas, centre, round(radius), 1, thickness=-1, lineType=cv2.LINE_8)
        shift = 0.0 if kind == "ring" else 0.45 * radius
        bite = (round(cx + shift * np.cos(theta)), round(cy + shift * np.sin(theta)))
        cv2.circle(canvas, bite, round(radius * (0.55 if kind == "ring" else 0.8)), 0, thickness=-1)
        return canvas.astype(bool)
    pts = np.array(BAR if kind == "bar" else DART, dtype=np.float64) * radius
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    poly = pts @ rot.T + (cx, cy)
    cv2.fillPoly(canvas, [np.rint(poly).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def paint_object(background: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``background`` with the object in one random colour (value >= 0.45, so the adapter's near-black test finds it
    in ``no_fg``) plus slight shading."""
    hsv = np.uint8([[[rng.integers(180), rng.integers(77, 256), rng.integers(115, 256)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
    shading = rng.normal(0, 8, size=(*mask.shape, 3))
    obj = np.clip(colour + shading, 0, 255)
    return np.where(mask[..., None], np.rint(obj), background).astype(np.uint8)


def paint_texture(
    background: np.ndarray, mask: np.ndarray, texture: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``background`` with the object filled by a random crop of ``texture`` (its class's): its grey levels times a
    random pale colour, so that the texture, not the colour, carries the class."""
    patch = photo_crop(texture, max(mask.shape), rng)[: mask.shape[0], : mask.shape[1]]
    patch = patch.astype(np.float64).mean(axis=2, keepdims=True) / 255.0
    hsv = np.uint8([[[rng.integers(180), rng.integers(0, 160), 255]]])
    tint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
    obj = np.clip(patch * tint, 0, 255)
    return np.where(mask[..., None], np.rint(obj), background).astype(np.uint8)


def train_photo(seed: int, split: str, index: int, label: int, k: int) -> int:
    """Photo of a train/val sample: the class's with probability BIAS, else a uniformly drawn other one."""
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index, 9])
    return label if rng.random() < BIAS else (label + 1 + int(rng.integers(k - 1))) % k


def test_photo(seed: int, variant: str, index: int, label: int, k: int) -> int:
    if variant in ("original", "mixed_same"):
        return label
    if variant == "mixed_next":
        return (label + 1) % k
    rng = np.random.default_rng([seed, SPLIT_CODE["test"], index, 9])  # mixed_rand: a random other photo
    return (label + 1 + int(rng.integers(k - 1))) % k


def sample(
    photos: list[np.ndarray], seed: int, split: str, index: int, size: int, textures: list[np.ndarray] | None = None
) -> Drawn:
    """(image, mask, photo index) of sample ``index`` of ``split``; every test variant shares the object of index i.
    With ``textures`` the object is filled with its class's texture (``paint_texture``), else one colour."""
    k = len(photos)
    label = index % k
    code = SPLIT_CODE.get(split, SPLIT_CODE["test"])
    obj_rng = np.random.default_rng([seed, code, index, 0])
    bg_rng = np.random.default_rng([seed, code, index, BACKGROUND_PART.get(split, 1)])
    mask = object_mask(label, size, obj_rng)
    photo = (train_photo if split in ("train", "val") else test_photo)(seed, split, index, label, k)
    background = photo_crop(photos[photo], size, bg_rng)
    if textures is not None:
        return paint_texture(background, mask, textures[label], obj_rng), mask, photo
    return paint_object(background, mask, obj_rng), mask, photo


def save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


def blacked_out(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], 0, image).astype(np.uint8)


def write_fixture(
    root: Path, n_train: int, n_test: int, size: int, seed: int, classes: int = len(PHOTOS), objects: str = "shape"
) -> dict[str, int]:
    """The fixture of the module docstring as ``root`` = ``bg_challenge/``; images per split. ``objects``: one of
    ``OBJECTS``. Kept for the next run with the same parameters (a ``done-...json`` marker beside ``root``)."""
    tag = "" if objects == "shape" else f"-{objects}"
    marker = root.parent / f"done-{classes}-{n_train}-{n_test}-{size}-{seed}{tag}-v{FIXTURE_VERSION}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    for old in root.parent.glob("done-*.json"):
        old.unlink()
    shutil.rmtree(root, ignore_errors=True)
    photos = load_photos(classes)
    textures = load_photos(classes, TEXTURES) if objects == "texture" else None
    k = len(photos)
    counts: dict[str, int] = defaultdict(int)
    for subset, n in (("train", n_train), ("val", max(n_train // 5, k))):
        for label, folder in enumerate(CLASS_FOLDERS[:k]):  # class folder by class folder, as IN-9 is released
            for i in range(label, n, k):
                image, mask, photo = sample(photos, seed, subset, i, size, textures)
                stem = f"n{label:02d}_{i:06d}_p{photo}"
                save_jpeg(root / "train/original" / subset / folder / f"{stem}.JPEG", image)
                save_jpeg(root / "train/no_fg" / subset / folder / f"{stem}.JPEG", blacked_out(image, mask))
                counts[subset] += 1
    for label, folder in enumerate(CLASS_FOLDERS[:k]):
        for i in range(label, n_test, k):
            write_test_sample(root, photos, folder, label, i, size, seed, counts, textures)
    marker.write_text(json.dumps(counts))
    return dict(counts)


def write_test_sample(
    root: Path,
    photos: list[np.ndarray],
    folder: str,
    label: int,
    i: int,
    size: int,
    seed: int,
    counts: dict[str, int],
    textures: list[np.ndarray] | None = None,
) -> None:
    """Test object i in every variant, IN-9's names: ``<stem>.JPEG``, mixed ones ``fg_<stem>_bg_<...>.JPEG``."""
    original, mask, _ = sample(photos, seed, "original", i, size, textures)
    stem = f"n{label:02d}_t{i:06d}"
    npy = root / "test/fg_mask/val" / folder / f"{stem}.npy"
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, mask)
    for variant in TEST_VARIANTS:
        name, pixels = f"{stem}.JPEG", original
        if variant == "only_fg":
            pixels = np.where(mask[..., None], original, 0).astype(np.uint8)
        elif variant == "no_fg":
            pixels = blacked_out(original, mask)
        elif variant != "original":
            pixels, _, photo = sample(photos, seed, variant, i, size, textures)
            name = f"fg_{stem}_bg_p{photo}_b{i:06d}.JPEG"
        save_jpeg(root / "test" / variant / "val" / folder / name, pixels)
        counts[variant] += 1


# ---- 2. builds and their storage -----------------------------------------------------------------------------------


def build(
    root: Path, out: Path, infill: list[str], factual: list[str], copies: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One ``augment build --dataset in9`` from scratch; its wall time and storage."""
    shutil.rmtree(out, ignore_errors=True)
    methods = [x for m in infill for x in ("--infill", m)] + [x for m in factual for x in ("--factual", m)]
    seconds, _ = cli(
        "augment",
        "build",
        "--dataset",
        "in9",
        "--root",
        root,
        "--image-size",
        args.image_size,
        *methods,
        "--copies",
        copies,
        "--seed",
        args.data_seed,
        "--out",
        out,
        "-q",
    )
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(p.stat().st_size for p in out.rglob("*.tar"))
    return {
        "path": str(out),
        "copies": copies,
        "cf": infill,
        "f": factual,
        "build_s": seconds,
        "shards_mb": total / 1e6,
        "field_mb": field_megabytes(out, manifest),
        "command": manifest["command"],
        "format_version": manifest.get("format_version"),
        "pool": manifest["methods"].get("pool"),
    }


def field_megabytes(out: Path, manifest: dict[str, Any]) -> dict[str, float]:
    """MB of the train shards' member bytes per field kind: ``jpg``, ``mask.png``, ``cf.tile``, ``f.shuffle`` (all
    copies together), ..."""
    sizes: dict[str, int] = defaultdict(int)
    for shard in manifest["splits"]["train"]["shards"]:
        for _, fields in iter_records(out / shard["path"]):
            for field, data in fields.items():
                parts = field.split(".")
                sizes[".".join(parts[:2]) if parts[0] in ("cf", "f") else field] += len(data)
    return {k: v / 1e6 for k, v in sorted(sizes.items())}


# ---- 3. the colour-cue probe ---------------------------------------------------------------------------------------


def read_train(out: Path, factual: list[str]) -> dict[str, Any]:
    """Labels, masks, originals and copy 0 of each F method of the train records with an object, in key order."""
    records: dict[str, dict[str, Any]] = {}
    manifest = json.loads((out / "manifest.json").read_text())
    wanted = {"jpg": "original", **{f"f.{m}.0.jpg": m for m in factual}}
    for shard in manifest["splits"]["train"]["shards"]:
        for key, fields in iter_records(out / shard["path"], ["json", "mask.png", *wanted]):
            if "mask.png" not in fields:
                continue  # no object: no F images
            record = {name: decode_image(fields[field]) for field, name in wanted.items()}
            records[key] = {
                "label": json.loads(fields["json"])["label"],
                "mask": decode_mask(fields["mask.png"]),
                **record,
            }
    keys = sorted(records)
    return {name: [records[k][name] for k in keys] for name in ("label", "mask", "original", *factual)}


def whole_stats(image: np.ndarray) -> np.ndarray:
    """Probe (a)'s 6 features: mean and std per channel of the whole image, on [0, 1]."""
    x = image.reshape(-1, 3) / 255.0
    return np.concatenate([x.mean(0), x.std(0)])


def background_stats(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probe (b)'s 12 features: mean, std, 10% and 90% quantile per channel of the pixels outside the mask."""
    x = image[~mask] / 255.0
    if len(x) == 0:
        x = np.zeros((1, 3))
    return np.concatenate([x.mean(0), x.std(0), np.quantile(x, 0.1, axis=0), np.quantile(x, 0.9, axis=0)])


def probe(images: dict[str, Any], factual: list[str], seed: int) -> dict[str, Any]:
    """Cross-validated accuracy (mean and sd over 5 stratified folds) of both probes, per image kind."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array(images["label"])
    folds = StratifiedKFold(n_splits=min(5, int(np.bincount(y).min())), shuffle=True, random_state=seed)
    results = {}
    for kind in ("original", *factual):
        whole = np.stack([whole_stats(im) for im in images[kind]])
        background = np.stack([background_stats(im, m) for im, m in zip(images[kind], images["mask"], strict=True)])
        logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on features without signal
            a = cross_val_score(NearestCentroid(), whole, y, cv=folds)
            b = cross_val_score(logistic, background, y, cv=folds)
        results[kind] = {
            "nearest_centroid_whole": [float(a.mean()), float(a.std())],
            "logistic_background": [float(b.mean()), float(b.std())],
        }
    return {"samples": int(len(y)), "chance": 1 / len(np.unique(y)), "folds": folds.get_n_splits(), "by_image": results}


# ---- 4. training ---------------------------------------------------------------------------------------------------


def run_specs(builds: dict[int, dict[str, Any]], args: argparse.Namespace, work: Path) -> list[Any]:
    """Every (row, copies, seed) run, row by row."""
    from train.config import Config
    from train.study import RunSpec, slug

    specs = []
    for copies, b in builds.items():
        rows = {**MAIN_ROWS, **COPIES_ROWS} if copies == 1 else COPIES_ROWS
        for name, (cf, f) in rows.items():
            for seed in range(args.seeds):
                config = Config.resolve(
                    "demo",
                    shards=b["path"],
                    out=str(work / "runs" / f"c{copies}" / slug(name) / f"s{seed}"),
                    arch=args.arch,
                    epochs=args.epochs,
                    cf=cf,
                    f=f,
                    seed=seed,
                    workers=0,
                    max_saliency_images=0,
                    **CF_OBJECTIVE,
                )
                specs.append(RunSpec(f"{name}@c{copies}", seed, 1.0, config))
    return specs


def train_all(builds: dict[int, dict[str, Any]], args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], float]:
    """Train every run ``args.jobs`` at a time, as ``train study`` does; per row, each split's accuracies over seeds."""
    from train.study import run_all

    shutil.rmtree(work / "runs", ignore_errors=True)
    specs = run_specs(builds, args, work)
    start = time.perf_counter()
    # the costliest first (CF+F trains 3 images per sample, F 2, Orig 1), so that the job slots end together
    run_all(sorted(specs, key=lambda s: -(1 + len(s.config.cf) + len(s.config.f))), args.jobs)
    seconds = time.perf_counter() - start
    rows: dict[str, Any] = {}
    for spec in specs:
        results = json.loads((Path(spec.config.out) / "results.json").read_text())
        row = rows.setdefault(spec.row, {"accuracy": defaultdict(list), "bg_gap": [], "background_reliance": []})
        for split, metrics in results["splits"].items():
            row["accuracy"][split].append(metrics["accuracy"])
        row["bg_gap"].append(results.get("bg_gap"))
        row["background_reliance"].append(results.get("background_reliance"))
    return rows, seconds


def mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ---- the report ----------------------------------------------------------------------------------------------------


def fixture_arguments(parser: argparse.ArgumentParser) -> None:
    """The fixture's sizes and the training length, as this benchmark and bench/fgap.py take them."""
    parser.add_argument("--size", type=int, default=1000, help="train images (val gets 1/5)")
    parser.add_argument("--test-size", type=int, default=500, help="images per test variant")
    parser.add_argument("--source-size", type=int, default=64, help="side of the written IN-9 JPEGs")
    parser.add_argument("--image-size", type=int, default=32, help="augment build --image-size (crop: 7/8)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. N-1 per row")
    parser.add_argument(
        "--objects",
        choices=OBJECTS,
        default="shape",
        help="shape: the class's shape in one random colour; texture: filled with its texture photo",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=5, help="classes (photos and shapes) of the training fixture")
    parser.add_argument("--probe-classes", type=int, default=9, help="classes of a second fixture, probe only")
    fixture_arguments(parser)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 8], help="--copies of the builds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (train study --jobs)")
    parser.add_argument("--arch", default="resnet8")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the fixture and of the builds")
    parser.add_argument("--out", type=Path, default=OUT, help="writes photos.json here, works in OUT/photos/")
    parser.add_argument("--quick", action="store_true", help="smoke run: 90 images, 20 per variant, 1 epoch, 1 seed")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.quick:
        args.size, args.test_size, args.epochs, args.seeds = 90, 20, 1, 1
    if 1 not in args.copies:
        parser.error("--copies must include 1 (the build of the main rows and of the probe)")
    for flag, k in (("--classes", args.classes), ("--probe-classes", args.probe_classes)):
        if not 2 <= k <= len(PHOTOS):
            parser.error(f"{flag}: got {k}, expected 2 .. {len(PHOTOS)} (one scikit-image photo per class)")
    return run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from augment.infill import INFILLS

    missing = [m for m in F_PROBED if m not in INFILLS]
    if missing:
        raise SystemExit(f"bench/photos.py: this checkout has no infill method {', '.join(missing)}")
    other, start = OtherLoad(), time.perf_counter()
    work = args.out / "photos"
    root = work / f"k{args.classes}" / "bg_challenge"
    counts = write_fixture(
        root, args.size, args.test_size, args.source_size, args.data_seed, args.classes, args.objects
    )
    fixture_s = time.perf_counter() - start
    builds = {}
    for copies in args.copies:
        factual = list(F_PROBED) if copies == 1 else [f[0] for _, f in COPIES_ROWS.values()]
        cf = ["tile"] if copies == 1 else []
        builds[copies] = build(root, work / f"k{args.classes}" / f"shards-c{copies}", cf, factual, copies, args)
    tick = time.perf_counter()
    probes = {args.classes: probe(read_train(Path(builds[1]["path"]), list(F_PROBED)), list(F_PROBED), args.data_seed)}
    if args.probe_classes != args.classes:  # the same probe on a fixture of another class count (IN-9 has 9)
        k = args.probe_classes
        other_root = work / f"k{k}" / "bg_challenge"
        write_fixture(other_root, args.size, k, args.source_size, args.data_seed, k, args.objects)  # test splits unused
        b = build(other_root, work / f"k{k}" / "shards-c1", [], list(F_PROBED), 1, args)
        probes[k] = {**probe(read_train(Path(b["path"]), list(F_PROBED)), list(F_PROBED), args.data_seed), "build": b}
    probe_s = time.perf_counter() - tick
    rows, train_s = train_all(builds, args, work / f"k{args.classes}")
    report = {
        "machine": machine(),
        "git_log": git("log", "--oneline", "-3"),
        "git_status": git("status", "--short", "--untracked-files=no"),
        "command": " ".join([".venv/bin/python bench/photos.py", *args.argv]),
        "fixture": {
            "layout": "in9 (bg_challenge/)",
            "classes": list(CLASS_FOLDERS[: args.classes]),
            "photos": [p for p, _ in PHOTOS[: args.classes]],
            "objects": args.objects,
            "bias": BIAS,
            "images": counts,
            "source_size": args.source_size,
            "image_size": args.image_size,
            "seed": args.data_seed,
            "version": FIXTURE_VERSION,
            "write_s": fixture_s,
        },
        "training": {
            "preset": "demo",
            "arch": args.arch,
            "epochs": args.epochs,
            "seeds": args.seeds,
            "jobs": args.jobs,
            "workers": 0,
            "wall_s": train_s,
        },
        "builds": {str(c): b for c, b in builds.items()},
        "probe": {str(k): v for k, v in probes.items()},
        "probe_s": probe_s,
        "rows": {name: summarise(row) for name, row in rows.items()},
        "wall_s": time.perf_counter() - start,
        "other_load": other.line().strip(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "photos.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return report


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": {s: {"mean_sd": mean_sd(v), "seeds": v} for s, v in row["accuracy"].items()},
        "bg_gap": mean_sd(row["bg_gap"]),
        "background_reliance": mean_sd(row["background_reliance"]),
    }


def cell(pair: list[float] | tuple[float, float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def print_report(report: dict[str, Any]) -> None:
    fx, tr = report["fixture"], report["training"]
    print(
        f"\n[photos] IN-9 layout on {len(fx['photos'])} scikit-image photos ({fx['images']['train']} train, "
        f"{fx['images']['original']} per test variant), {fx['image_size']} px, {tr['arch']}, {tr['epochs']} epochs, "
        f"{tr['seeds']} seeds, {tr['jobs']} jobs"
    )
    for k, pr in report["probe"].items():
        print_probe(pr, int(k))
    print_storage(report["builds"])
    print_main_rows(report["rows"])
    print_copies_rows(report["rows"], report["builds"])
    print(
        f"\nwall time {report['wall_s']:.0f} s (fixture {fx['write_s']:.0f} s, builds "
        f"{sum(b['build_s'] for b in report['builds'].values()):.0f} s, probe {report['probe_s']:.0f} s, training "
        f"{tr['wall_s']:.0f} s)\n    {report['other_load']}"
    )


def print_probe(pr: dict[str, Any], k: int) -> None:
    print(
        f"\ncolour-cue probe, {k} classes: the {pr['samples']} train images, {pr['folds']}-fold CV, mean ± sd over "
        f"folds; chance {pr['chance']:.3f}"
    )
    print(f"{'image':<18} {'(a) centroid, whole 6':>22} {'(b) logistic, bg 12':>22}")
    for kind, r in pr["by_image"].items():
        name = "original" if kind == "original" else f"F({kind})"
        print(f"{name:<18} {cell(r['nearest_centroid_whole']):>22} {cell(r['logistic_background']):>22}")


def print_storage(builds: dict[str, Any]) -> None:
    print("\nbuilds: MB of shards (all splits), build wall time, MB of each field in the train shards (all copies)")
    for c, b in builds.items():
        fields = ", ".join(f"{k} {v:.2f}" for k, v in b["field_mb"].items() if k not in ("cls", "json"))
        print(f"  --copies {c}: {b['shards_mb']:.2f} MB, {b['build_s']:.1f} s; {fields}")


NAMES = {"original": "orig", "mixed_same": "m_same", "mixed_rand": "m_rand", "mixed_next": "m_next"}


def print_main_rows(rows: dict[str, Any]) -> None:
    print("\naccuracy, mean ± sd over seeds (--copies 1 build)")
    print(f"{'row':<26}" + "".join(f"{NAMES.get(s, s):>15}" for s in SPLITS_SHOWN) + f"{'bg_gap':>15}")
    for name in MAIN_ROWS:
        r = rows[f"{name}@c1"]
        accs = "".join(f"{cell(r['accuracy'][s]['mean_sd']):>15}" for s in SPLITS_SHOWN)
        print(f"{name:<26}{accs}{cell(r['bg_gap']):>15}")


def print_copies_rows(rows: dict[str, Any], builds: dict[str, Any]) -> None:
    splits = ("original", "mixed_rand", "mixed_next")
    print("\n--copies: accuracy, mean ± sd over seeds; MB of the method's train fields")
    print(f"{'row':<16}{'copies':>7}{'MB':>7}" + "".join(f"{NAMES[s]:>15}" for s in splits))
    for name, (_, f) in COPIES_ROWS.items():
        for c, b in builds.items():
            r = rows[f"{name}@c{c}"]
            accs = "".join(f"{cell(r['accuracy'][s]['mean_sd']):>15}" for s in splits)
            print(f"{name:<16}{c:>7}{b['field_mb'][f'f.{f[0]}']:>7.2f}{accs}")


if __name__ == "__main__":
    main()
