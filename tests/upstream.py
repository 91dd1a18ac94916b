"""Tiny datasets written in exactly their upstream layouts, for the adapter tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

IN9_CLASSES = ("00_dog", "01_bird", "02_wheeled vehicle")


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A mid-bright, smooth-ish texture (JPEG-friendly), never near black."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(90, 200, size=3)
    wave = 30 * np.sin(x / rng.uniform(3, 6) + rng.uniform(0, 6))[..., None]
    return np.clip(base + wave + rng.normal(0, 4, (h, w, 3)), 60, 255).astype(np.uint8)


def ellipse_mask(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def save_jpeg(path: Path, image: np.ndarray, quality: int = 90, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, "JPEG", quality=quality, **kw)


def in9_object(seed: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """An image with a bright object (and a dark spot inside it) and the object's exact mask."""
    image = textured(h, w, seed)
    mask = ellipse_mask(h, w, h / 2 + seed % 3, w / 2 - seed % 4, h / 4, w / 4)
    image[mask] = (230, 60 + 20 * (seed % 5), 40)
    image[int(h / 2) : int(h / 2) + 2, int(w / 2) : int(w / 2) + 2] = 12  # dark object pixels: no_fg can't tell them
    return image, mask


def make_in9(root: Path, per_class: int = 2) -> dict[str, dict[str, np.ndarray]]:
    """A bg_challenge/ tree; returns the true object masks by split and key-ish (class, stem)."""
    truth: dict[str, dict[str, np.ndarray]] = {}
    seed = 0
    for c, folder in enumerate(IN9_CLASSES):
        for subset, n in (("train", per_class), ("val", 1)):
            for i in range(n):
                seed += 1
                stem = f"n0{c}_{subset}{i}"
                image, mask = in9_object(seed)
                save_jpeg(root / "train/original" / subset / folder / f"{stem}.JPEG", image)
                if subset == "train":  # val comes without no_fg, as a plain sample
                    no_fg = image.copy()
                    no_fg[mask] = 0
                    save_jpeg(root / "train/no_fg" / subset / folder / f"{stem}.JPEG", no_fg, quality=75)
                truth.setdefault(subset, {})[f"{folder}/{stem}"] = mask
        seed += 1
        stem = f"n0{c}_test"
        image, mask = in9_object(seed)
        other = IN9_CLASSES[(c + 1) % len(IN9_CLASSES)]
        names = {
            "original": f"{stem}.JPEG",
            "only_fg": f"{stem}.JPEG",
            "no_fg": f"{stem}.JPEG",
            "mixed_same": f"fg_{stem}_bg_n0{c}_x.JPEG",
            "mixed_rand": f"fg_{stem}_bg_n09_y.JPEG",
            "mixed_next": f"fg_{stem}_bg_n0{(c + 1) % 3}_{other[:2]}.JPEG",
        }
        for variant, name in names.items():
            pixels = image.copy()
            if variant != "original":
                pixels[~mask] = textured(40, 48, seed + 100)[~mask]
            save_jpeg(root / "test" / variant / "val" / folder / name, pixels)
            truth.setdefault(variant, {})[f"{folder}/{Path(name).stem}"] = mask
        npy = root / "test/fg_mask/val" / folder / f"{stem}.npy"
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, mask)
    return truth


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
