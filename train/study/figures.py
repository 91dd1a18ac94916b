"""The report's figures: saliency AUPR against accuracy (Fig. 4), the gain over Orig against the training-set size
(Fig. 5), and test images the best method gets right and Orig wrong (Fig. 6). Each is a PNG; the text beside it
comes back with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.metrics import softmax
from train.study.results import Run, accuracy_on, metric

TOP = 3  # predictions shown per model in the Fig. 6 sheet
SHEET_ROWS = 8


def scatter(runs: list[Run], tests: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tests), figsize=(3.2 * len(tests), 3.2), squeeze=False, sharey=True)
    rows = list(dict.fromkeys(r.row for r in runs))
    colours = {n: plt.cm.tab20(i % 20) for i, n in enumerate(rows)}
    for ax, split in zip(axes[0], tests, strict=True):
        for r in runs:
            x, y = metric(r, split, "saliency_aupr"), metric(r, split, "accuracy")
            if x is not None:
                ax.scatter(x, y, color=colours[r.row], s=18)
        ax.set_title(split, fontsize=9)
        ax.set_xlabel("saliency AUPR", fontsize=8)
    axes[0, 0].set_ylabel("accuracy", fontsize=8)
    for n in rows:
        axes[0, -1].scatter([], [], color=colours[n], label=n)
    axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def gain_curve(curve: list[Run], grid, splits: list[str], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({*grid.fractions, 1.0})
    orig = "Orig" if "Orig" in grid.curve_rows else None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    lines = []
    for name in grid.curve_rows:
        if name == orig:
            continue
        ys = []
        for f in fractions:
            mine = accuracy_on([r for r in curve if r.row == name and r.fraction == f], splits)
            base = accuracy_on([r for r in curve if r.row == orig and r.fraction == f], splits) if orig else 0.0
            ys.append(None if mine is None or base is None else mine - base)
        ax.plot(fractions, [np.nan if y is None else y for y in ys], marker="o", label=name)
        lines.append(
            f"{name}: " + ", ".join(f"{f:g} -> {y:+.3f}" for f, y in zip(fractions, ys, strict=True) if y is not None)
        )
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("fraction of the training set")
    ax.set_ylabel(f"accuracy gain over Orig ({', '.join(splits)})" if orig else "accuracy", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, (
        f"Mean accuracy on {', '.join(splits)} minus Orig's, per training-set fraction: " + "; ".join(lines) + "."
    )


def contact_sheet(runs: list[Run], rows: list[str], splits: list[str], shards: str, manifest, path: Path):
    """Test images (seed 0) where the best row is right and Orig wrong, with both models' top-3 predictions."""
    if "Orig" not in rows:
        return None
    others = [n for n in rows if n != "Orig"]
    if not others:
        return None
    best = max(others, key=lambda n: accuracy_on([r for r in runs if r.row == n], splits) or 0.0)
    first = {n: min((r for r in runs if r.row == n), key=lambda r: r.seed) for n in ("Orig", best)}
    preds = {
        n: np.load(r.folder / "predictions.npz", allow_pickle=False)
        for n, r in first.items()
        if (r.folder / "predictions.npz").is_file()
    }
    if len(preds) < 2:
        return None
    classes = manifest["dataset"]["classes"]
    chosen = []  # (split, key, label, orig top-3, best top-3)
    for split in splits:
        a, o = preds[best], preds["Orig"]
        if f"{split}.keys" not in a.files:
            continue
        index = {k: i for i, k in enumerate(o[f"{split}.keys"])}
        for i, key in enumerate(a[f"{split}.keys"]):
            j = index.get(key)
            label = int(a[f"{split}.labels"][i])
            if j is None:
                continue
            pa, po = softmax(a[f"{split}.logits"][i]), softmax(o[f"{split}.logits"][j])
            if pa.argmax() == label and po.argmax() != label:
                chosen.append((split, str(key), label, po, pa))
            if len(chosen) >= SHEET_ROWS * (splits.index(split) + 1) // len(splits):
                break
    if not chosen:
        return None
    images = read_images(shards, manifest, {(s, k) for s, k, *_ in chosen})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(chosen), figsize=(2.3 * len(chosen), 3.4), squeeze=False)
    for ax, (split, key, label, po, pa) in zip(axes[0], chosen, strict=True):
        ax.imshow(images[(split, key)])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{split}\ntrue: {classes[label]}", fontsize=7)
        ax.set_xlabel(f"Orig: {top(po, classes)}\n{best}: {top(pa, classes)}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, (
        f"{len(chosen)} test images (seed 0) that {best} classifies right and Orig wrong, with each "
        f"model's top-{TOP} classes and probabilities."
    )


def top(p: np.ndarray, classes: list[str]) -> str:
    order = np.argsort(-p)[:TOP]
    return " ".join(f"{classes[i][:8]} {p[i]:.2f}" for i in order)


def read_images(root: str, manifest, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
    """The stored originals of the wanted (split, key) pairs, read as the trainer reads shards (untrusted)."""
    from augment.contract import encode, schema, shards

    limits = shards.Limits.for_image_size(manifest["image_size"])
    found = {}
    for split in sorted({s for s, _ in wanted}):
        for shard in manifest["splits"][split]["shards"]:
            for key, fields in shards.iter_records(shards.join(root, shard["path"]), {schema.IMAGE}, limits):
                if (split, key) in wanted:
                    found[(split, key)] = encode.decode_image(fields[schema.IMAGE], limits.pixels)
    return found
