"""How close each CF fill comes to the background the object hid, and what it costs (issue #32, parts 3 and 4).

1. **The fixture**: crops of scikit-image's colour photographs (bench/photos.py's ``PHOTOS``, ``photo_crop``) with an
   object pasted on them (bench/photos.py's shapes, ``object_mask``, painted in one colour), at ``--sizes``. The
   photo under the object is kept, so every fill can be compared with the truth. Seeded per image.
2. **Fill error**: each CF method of ``augment.infill`` fills the CF hole (the object's rectangle,
   ``augment.masks.cf_hole``) as a build does (one generator per image; ``shuffle`` draws from a value pool of the
   fixture's images, as a build's split pool); against the true background inside the hole:

   - ``MAE``: mean absolute error per channel, on the 0-255 scale;
   - ``low-frequency MAE``: the same after a Gaussian blur of both images (sigma = 5% of the image side): whether the
     fill has the right colours and shading where it has the wrong detail;
   - ``gradient energy``: the mean gradient magnitude inside the hole over the truth's (1 = as much detail as the
     photo; a smear is far below 1, noise far above).

   A fill that leaves the object's colours in the hole would be caught by the error; none of them reads the object.
3. **Speed** at 224 px: images per second of each fill alone (one process, one thread, median of rounds), beside
   the JPEG encode of one image (the floor every stored image pays).
4. **The networks' runners, batch 1 against batched** (``--networks``; CPU, 2 threads): no LaMa or MI-GAN weights
   ship, so stand-ins of their signatures run through ``augment.inpainters``: a TorchScript network of six 3x3
   convolutions of 64 channels (LaMa's signature) and an ONNX graph of the same convolutions with uint8 input and
   output (MI-GAN's); 32 images at 224 px, ``--batch-size`` 1 against 8. It measures what batching buys the runner
   (padding, transfers, one call per batch), not the real networks' speed.

Writes ``<out>/fills.json`` (default bench/out/) and prints both tables. ``--preview PNG`` also builds bench/photos.py's
IN-9-layout fixture (textured objects) at 128 px with every weight-free CF fill and draws ``augment preview`` of it:
the fills side by side.

    .venv/bin/python bench/fills.py            # the measurement of docs/results-fills.md
    .venv/bin/python bench/fills.py --preview docs/fills-preview.png   # and the picture there
    .venv/bin/python bench/fills.py --quick    # smoke run: few images
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import photos
from common import OUT, cli, git, machine

from augment import infill, masks
from augment.contract.encode import encode_jpeg
from augment.infill import telea
from augment.pool import make_pool
from augment.rng import sample_rng

SEED = 0


def fixture(n: int, size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` (image with the object, the true background, the CF hole) at ``size`` px."""
    backgrounds = photos.load_photos()
    out = []
    for i in range(n):
        rng = np.random.default_rng([SEED, size, i])
        background = photos.photo_crop(backgrounds[i % len(backgrounds)], size, rng)
        mask = photos.object_mask(int(rng.integers(len(photos.SHAPES))), size, rng)
        image = photos.paint_object(background, mask, rng)
        hole = masks.cf_hole(mask, None, mask.shape)
        out.append((image, background, hole))
    return out


def errors(filled: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> dict[str, float]:
    """MAE, low-frequency MAE and relative gradient energy of ``filled`` against ``truth`` inside ``hole``."""
    a, b = filled.astype(np.float32), truth.astype(np.float32)
    sigma = 0.05 * hole.shape[0]
    blur_a, blur_b = (cv2.GaussianBlur(x, (0, 0), sigma) for x in (a, b))

    def energy(x: np.ndarray) -> float:
        grey = x.mean(axis=2)
        gy, gx = np.gradient(grey)
        return float(np.hypot(gx, gy)[hole].mean())

    return {
        "mae": float(np.abs(a - b)[hole].mean()),
        "lowfreq_mae": float(np.abs(blur_a - blur_b)[hole].mean()),
        "energy": energy(a) / max(energy(b), 1e-6),
    }


def cf_methods() -> list[str]:
    """Every weight-free CF method (a model infill needs its weights file, which a fresh clone lacks), and OpenCV's
    Navier-Stokes inpainting beside ``telea``."""
    return [name for name in infill.names(infill.CF) if not infill.INFILLS[name].needs_model] + [NAVIER_STOKES]


NAVIER_STOKES = "navier-stokes (not registered)"


def fill(name: str, image: np.ndarray, hole: np.ndarray, key: str, pool: Any) -> np.ndarray:
    if name == NAVIER_STOKES:  # OpenCV's other inpainting, measured to decide whether it earns a method of its own
        filled = cv2.inpaint(image, hole.view(np.uint8), telea.RADIUS, cv2.INPAINT_NS)
        return infill.paste(image, hole, filled)
    method = infill.INFILLS[name]
    rng = sample_rng(SEED, key, infill.CF, name, 0)
    return method.fill(image, hole, rng, **({"pool": pool} if method.needs_pool else {}))


def measure_errors(n: int, sizes: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    """{size: {method: mean of each error over the fixture}}."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for size in sizes:
        data = fixture(n, size)
        pool = make_pool(SEED, [(f"img{i}", image) for i, (image, _, _) in enumerate(data[:64])])
        table[str(size)] = {}
        for name in cf_methods():
            rows = [errors(fill(name, im, hole, f"img{i}", pool), bg, hole) for i, (im, bg, hole) in enumerate(data)]
            table[str(size)][name] = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    return table


def measure_speed(n: int, rounds: int) -> dict[str, float]:
    """Images per second at 224 px of each fill, and of the JPEG encode; median over ``rounds``."""
    cv2.setNumThreads(1)
    data = fixture(n, 224)
    pool = make_pool(SEED, [(f"img{i}", image) for i, (image, _, _) in enumerate(data)])
    work = {name: (lambda im, hole, i, name=name: fill(name, im, hole, f"img{i}", pool)) for name in cf_methods()}
    work["JPEG encode (floor)"] = lambda im, hole, i: encode_jpeg(im)
    speed = {}
    for name, fn in work.items():
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for i, (im, _, hole) in enumerate(data):
                fn(im, hole, i)
            times.append(time.perf_counter() - start)
        speed[name] = len(data) / statistics.median(times)
    return speed


def preview(png: Path, work: Path) -> None:
    """The fills side by side: ``augment build`` of a small photo fixture with every weight-free CF fill, then
    ``augment preview`` (one row per class)."""
    root = work / "bg_challenge"
    photos.write_fixture(root, 50, 5, 160, SEED, classes=5, objects="texture")
    fills = [x for name in cf_methods() if name != NAVIER_STOKES for x in ("--infill", name)]
    shards = work / "shards"
    cli(
        "augment",
        "build",
        "--dataset",
        "in9",
        "--root",
        root,
        "--image-size",
        128,
        *fills,
        "--factual",
        "shuffle",
        "--out",
        shards,
        "--overwrite",
        "-q",
    )
    cli("augment", "preview", shards, "--rows", 5, "--cell", 96, "--out", png)


class ConvStandIn:
    """Six 3x3 convolutions of 64 channels with seeded weights, ReLU between, and a sigmoid: a compute-bound stand-in
    for an inpainting network (its output is not an inpainting)."""

    WIDTH, DEPTH = 64, 6

    @classmethod
    def weights(cls) -> list[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(SEED)
        chans = [3, *[cls.WIDTH] * (cls.DEPTH - 1), 3]
        return [
            (
                (rng.standard_normal((o, i, 3, 3)) * np.sqrt(2 / (9 * i))).astype(np.float32),
                np.zeros(o, np.float32),
            )
            for i, o in zip(chans, chans[1:], strict=False)
        ]

    @classmethod
    def torchscript(cls, path: Path) -> Path:
        import warnings

        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.convs = torch.nn.ModuleList()
                for w, b in cls.weights():
                    conv = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
                    conv.weight.data, conv.bias.data = torch.from_numpy(w), torch.from_numpy(b)
                    self.convs.append(conv)

            def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                x = image
                for i, conv in enumerate(self.convs):
                    x = conv(x)
                    if i < len(self.convs) - 1:
                        x = torch.relu(x)
                return image * (1 - mask) + torch.sigmoid(x) * mask

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, not gone
            torch.jit.script(Net()).save(str(path))
        return path

    @classmethod
    def onnx(cls, path: Path) -> Path:
        from onnx import TensorProto, helper, numpy_helper

        nodes = [
            helper.make_node("Cast", ["image"], ["x0"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["x0", "c255"], ["h0"]),
        ]
        inits = [numpy_helper.from_array(np.array(255, np.float32), "c255")]
        weights = cls.weights()
        for k, (w, b) in enumerate(weights):
            inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
            nodes.append(helper.make_node("Conv", [f"h{k}", f"w{k}", f"b{k}"], [f"c{k}"], pads=[1, 1, 1, 1]))
            act = "Relu" if k < len(weights) - 1 else "Sigmoid"
            nodes.append(helper.make_node(act, [f"c{k}"], [f"h{k + 1}"]))
        nodes += [
            helper.make_node("Mul", [f"h{len(weights)}", "c255"], ["y"]),
            helper.make_node("Round", ["y"], ["r"]),
            helper.make_node("Cast", ["r"], ["out"], to=TensorProto.UINT8),
        ]
        dims = ["n", 3, "h", "w"]
        graph = helper.make_graph(
            nodes,
            "conv-stand-in",
            [
                helper.make_tensor_value_info("image", TensorProto.UINT8, dims),
                helper.make_tensor_value_info("mask", TensorProto.UINT8, ["n", 1, "h", "w"]),
            ],
            [helper.make_tensor_value_info("out", TensorProto.UINT8, dims)],
            inits,
        )
        path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
        return path


def measure_networks(work: Path, rounds: int) -> dict[str, dict[str, Any]]:
    """img/s of each network runner at --batch-size 1 and 8 on 32 images of 224 px (median of ``rounds``), and
    whether the ONNX runner batched (its probe checks that a batch gives the bytes of each image alone)."""
    import torch

    from augment.inpainters import lama, migan

    torch.set_num_threads(2)
    work.mkdir(parents=True, exist_ok=True)
    data = fixture(32, 224)
    images, holes = [im for im, _, _ in data], [hole for _, _, hole in data]
    files = {"lama": ConvStandIn.torchscript(work / "stand-in.pt"), "migan": ConvStandIn.onnx(work / "stand-in.onnx")}
    table: dict[str, dict[str, Any]] = {}
    for name, module in (("lama", lama), ("migan", migan)):
        table[name] = {}
        for batch in (1, 8):
            runner = module.runner(files[name], "cpu", batch)
            runner(images[:batch], holes[:batch])  # warm-up
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                runner(images, holes)
                times.append(time.perf_counter() - start)
            table[name][str(batch)] = len(images) / statistics.median(times)
        table[name]["batched"] = getattr(module.runner(files[name], "cpu", 8), "batched", True)
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="fixture images per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="image sides, px")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 images, 1 round")
    parser.add_argument("--preview", type=Path, help="also draw the fills side by side into this PNG")
    parser.add_argument("--networks", action="store_true", help="also time the network runners, batch 1 and 8")
    args = parser.parse_args(argv)
    n, rounds = (8, 1) if args.quick else (args.images, args.rounds)
    report = {
        "command": "bench/fills.py" + (" --quick" if args.quick else ""),
        "commit": (git("rev-parse", "--short", "HEAD") or ["?"])[0],
        "machine": machine(),
        "images": n,
        "errors": measure_errors(n, args.sizes),
        "speed_224": measure_speed(min(n, 50), rounds),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fills.json").write_text(json.dumps(report, indent=1))
    for size, table in report["errors"].items():
        print(f"\nfill error inside the hole at {size} px ({n} images; 0-255 scale; energy: detail / the photo's)")
        print("| fill | MAE | low-frequency MAE | gradient energy |\n|---|---|---|---|")
        for name, e in sorted(table.items(), key=lambda kv: kv[1]["mae"]):
            print(f"| {name} | {e['mae']:.1f} | {e['lowfreq_mae']:.1f} | {e['energy']:.2f} |")
    floor = report["speed_224"]["JPEG encode (floor)"]
    print("\nspeed at 224 px, one thread (img/s; x: of the JPEG encode every stored image pays)")
    print("| fill | img/s | x encode |\n|---|---|---|")
    for name, rate in report["speed_224"].items():
        print(f"| {name} | {rate:.0f} | {rate / floor:.2f} |")
    print(f"\n{report['machine']}; commit {report['commit']}; wrote {args.out / 'fills.json'}")
    if args.networks:
        report["networks"] = measure_networks(args.out / "fills", rounds)
        (args.out / "fills.json").write_text(json.dumps(report, indent=1))
        print("\nnetwork runners on stand-ins, 32 images at 224 px, CPU, 2 threads (img/s)")
        print("| runner | --batch-size 1 | --batch-size 8 | 8 / 1 |\n|---|---|---|---|")
        for name, row in report["networks"].items():
            note = "" if row["batched"] else " (probe: one image per call)"
            print(f"| {name}{note} | {row['1']:.1f} | {row['8']:.1f} | {row['8'] / row['1']:.2f} |")
    if args.preview:
        preview(args.preview, args.out / "fills")
        print(f"drew {args.preview}")
    return report


if __name__ == "__main__":
    main()
