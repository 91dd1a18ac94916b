"""IN-9, the Backgrounds Challenge (Xiao et al. 2020), read as released.

    <root>/train/original/{train,val}/<NN_class>/<img>.JPEG
    <root>/train/no_fg/{train,val}/<NN_class>/<img>.JPEG      same image, object blacked out (train masks)
    <root>/test/<variant>/val/<NN_class>/<img>.JPEG           original, mixed_same, mixed_rand, mixed_next,
                                                              only_fg, no_fg (and only_bg_b, only_bg_t)
    <root>/test/fg_mask/val/<NN_class>/<stem>.npy             test object masks; mixed files are named
                                                              fg_<stem>_bg_<...>

Train masks: a pixel is object where ``no_fg`` is near-black and differs from the original. Both are JPEG, so
both tests use a tolerance (``NEAR_BLACK``, ``MIN_DIFFERENCE``), and a small closing fills the pinholes left by
object pixels that were dark already. Only ``train`` gets CF/F images; every test variant is its own split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np

from augment.datasets import register
from augment.datasets.files import (
    MAX_IMAGE_PIXELS,
    RESIZE,
    ROOT,
    FileDataset,
    Item,
    MaskFile,
    Rejects,
    file_options,
    image_files,
    safe_key,
)
from augment.read import DEFAULT_MAX_IMAGE_PIXELS, Decoded, SourceError, read_image

TEST_VARIANTS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg")
BACKGROUND_ONLY = ("only_bg_b", "only_bg_t")  # no object: plain samples, kept when present
NEAR_BLACK = 40  # no_fg max channel at or below this is "blacked out" (JPEG leaves the black region noisy)
MIN_DIFFERENCE = 24  # ... and the original must differ by more than this in some channel
EVALUATION = {
    "bg_gap": {"same": "mixed_same", "rand": "mixed_rand"},
    "background_reliance": {"original": "original", "shifted": "mixed_next", "background_class": "label + 1 mod K"},
}


@dataclass(frozen=True)
class NoFgMask:
    """IN-9 train mask: object = near-black in the no_fg image and different from the original."""

    path: str

    def read(self, decoded: Decoded, image_path: Path) -> np.ndarray:
        no_fg = read_image(Path(self.path), decoded.max_pixels)
        if no_fg.image.shape != decoded.image.shape:
            raise SourceError(self.path, f"no_fg image is {no_fg.size}, expected the original's {decoded.size}")
        return object_from_no_fg(decoded.image, no_fg.image)

    def files(self) -> list[str]:
        return [self.path]


def object_from_no_fg(original: np.ndarray, no_fg: np.ndarray) -> np.ndarray:
    """The object mask implied by an original and its blacked-out copy (both uint8 RGB)."""
    black = no_fg.max(axis=2) <= NEAR_BLACK
    changed = np.abs(original.astype(np.int16) - no_fg.astype(np.int16)).max(axis=2) > MIN_DIFFERENCE
    mask = (black & changed).astype(np.uint8)
    closed = cv2.morphologyEx(
        mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    return (closed.astype(bool) & black) | mask.astype(bool)


def fg_stem(name: str) -> str:
    """The foreground image's stem: ``fg_<stem>_bg_<...>`` for mixed files, else the file's own stem."""
    stem = Path(name).stem
    if stem.startswith("fg_") and "_bg_" in stem:
        return stem[3:].split("_bg_", 1)[0]
    return stem


def class_folders(root: Path) -> list[str]:
    folder = root / "train" / "original" / "train"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not found; --root should be the bg_challenge folder of IN-9")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder}: no class folders (expected 00_dog ... 08_insect)")
    return classes


def scan(root: Path, rejects: Rejects) -> tuple[list[str], dict[str, list[Item]], list[str]]:
    folders = class_folders(root)
    items: dict[str, list[Item]] = {}

    def add(split: str, image_dir: Path, mask_for) -> None:
        rows = items.setdefault(split, [])
        for label, folder in enumerate(folders):
            class_dir = image_dir / folder
            files = image_files(class_dir) if class_dir.is_dir() else []
            if not files:
                rejects.add(class_dir, "class folder with no images", split)
                continue
            for path in files:
                mask = mask_for(folder, path)
                if mask is False:
                    continue
                rows.append(
                    Item(
                        safe_key(split, folder, path.stem),
                        label,
                        str(path.relative_to(root)),
                        mask=mask,
                        object_id=f"{folder}/{fg_stem(path.name)}",
                    )
                )

    def no_fg_mask(subset: str):
        def find(folder: str, path: Path):
            no_fg = root / "train" / "no_fg" / subset / folder / path.name
            if no_fg.is_file():
                return NoFgMask(str(no_fg))
            if subset == "train":  # train images need their mask; val may come without no_fg (plain samples)
                rejects.add(no_fg, f"missing no_fg image for {path.relative_to(root)}", subset)
                return False
            return None

        return find

    for subset in ("train", "val"):
        source = root / "train" / "original" / subset
        if source.is_dir():
            add(subset, source, no_fg_mask(subset))
    missing = []
    for variant in (*TEST_VARIANTS, *BACKGROUND_ONLY):
        source = root / "test" / variant / "val"
        if not source.is_dir():
            missing.append(variant)
            continue

        def fg_mask(folder: str, path: Path, variant: str = variant):
            if variant in BACKGROUND_ONLY:
                return None
            npy = root / "test" / "fg_mask" / "val" / folder / f"{fg_stem(path.name)}.npy"
            if not npy.is_file():
                rejects.add(npy, f"missing test mask for {path.relative_to(root)}", variant)
                return False
            return MaskFile(str(npy))

        add(variant, source, fg_mask)
    if "train" not in items or not items["train"]:
        raise FileNotFoundError(f"{root / 'train/original/train'}: no training images")
    return folders, items, [m for m in missing if m not in BACKGROUND_ONLY]


@register("in9", "IN-9 Backgrounds Challenge (bg_challenge/ folder): train masks from no_fg, test variants as splits")
def make_in9(
    *,
    seed: int = 0,
    image_size: int | None = None,
    on_error: str = "fail",
    root: Annotated[str | None, ROOT] = None,
    resize: Annotated[str, RESIZE] = "squash",
    max_image_pixels: Annotated[int, MAX_IMAGE_PIXELS] = DEFAULT_MAX_IMAGE_PIXELS,
) -> FileDataset:
    root_path = file_options(root, "in9")
    rejects = Rejects(on_error)
    folders, items, missing = scan(root_path, rejects)
    return FileDataset(
        name="in9",
        root=str(root_path),
        classes=tuple(f.split("_", 1)[1] if f[:2].isdigit() and "_" in f else f for f in folders),
        items=items,
        image_size=image_size,
        resize_mode=resize,
        max_image_pixels=max_image_pixels,
        params={"class_folders": folders, "missing_test_variants": missing, "evaluation": EVALUATION},
        rejects=rejects.items,
        shifted_splits=(*TEST_VARIANTS[1:], *BACKGROUND_ONLY),
    )
