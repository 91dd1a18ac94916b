"""Dataset adapters: each one turns a source dataset into the same sample model, registered by name.

An adapter is a picklable object (it travels to the build's worker processes) with:

- ``name``, ``classes`` (label -> class name) and ``default_image_size``;
- ``splits() -> dict[str, SplitPlan]``: every split's sample references (key and label, no pixels) and
  whether it gets CF/F images (training splits do; test splits hold originals for evaluation);
- ``load(split, index) -> Sample``: one sample, pixels resized to the stored image size;
- ``fingerprint()``: a sha256 that changes whenever the source data would;
- ``describe()``: the resolved adapter parameters, for the manifest;
- optionally ``shifted_splits``: the splits that show objects on changed backgrounds already (IN-9's mixed_*), which
  ``--shifted-tests`` makes no variants of;
- optionally ``empty_frames(split) -> list[Frame]`` and ``load_empty(split, index) -> uint8[H, W, 3]``: the split's
  object-free images (CCT's empty frames), which ``--factual bank --backgrounds dataset`` draws from, loaded at the
  stored size as the samples are.

A sample's ``location`` (and its ref's) is the camera location where the adapter knows one (CCT), else None:
``--background-rule same-class-location`` draws by it.

The registered factory takes the build's ``seed``, ``image_size`` and ``on_error`` and its own options as keywords;
each option is annotated ``Annotated[<type>, Flag(help, ...)]``, from which `augment build` makes its flag
(``--root``, ``--annotations``, ...). Adding an adapter is its file plus its import at the bottom of this file.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Ref:
    """What the build knows about a sample before loading it."""

    key: str  # unique in the build, no dots (webdataset splits the field name at the first dot)
    label: int
    annotated: bool = True  # has an object annotation, so it can donate its background to mixed-rand
    segmented: bool = True  # that annotation outlines the object (a mask), not only a box: shifted tests need one
    location: str | None = None  # the camera location (CCT), else None


@dataclass(frozen=True)
class Frame:
    """An object-free image of a split (``Dataset.empty_frames``): a background ``--backgrounds dataset`` can draw."""

    key: str  # unique in the dataset, as a sample key
    path: str  # relative to the dataset root
    size: int  # bytes on disk, -1 when missing (the bank's fingerprint)
    location: str | None = None


@dataclass(frozen=True)
class SplitPlan:
    """A split's samples in build order, and whether CF/F images are computed for it."""

    refs: tuple[Ref, ...]
    augment: bool


@dataclass
class Sample:
    """One source image with its annotation, at the stored size."""

    key: str
    image: np.ndarray  # uint8 [H, W, 3], RGB
    label: int
    class_name: str
    split: str
    source: str  # where it came from: a path, or the generator recipe
    mask: np.ndarray | None = None  # bool [H, W], True = object (exact segmentation)
    boxes: np.ndarray | None = None  # int [n, 4], x0 y0 x1 y1 with exclusive x1/y1
    group: int | None = None  # e.g. (class, background) for worst-group accuracy
    meta: dict[str, Any] = field(default_factory=dict)  # adapter-specific facts, stored in the sample's json
    mask_source: str | None = None  # where ``mask`` came from (``augment.mask_sources``), set by the build
    mask_gate: str | None = None  # why a produced mask was refused and the sample fell back to its boxes
    shifted: dict[str, Any] | None = None  # a shifted test variant's base sample and donor (augment.shifted_tests)
    # the object the image shows, the same in each of the dataset's own test variants of it (IN-9's original and
    # fg_<stem>_bg_<...> files): what paired metrics match images on, never a parse of the key
    object_id: str | None = None
    location: str | None = None  # the camera location (CCT), else None


class Dataset(Protocol):
    name: str
    classes: tuple[str, ...]
    default_image_size: int

    def splits(self) -> dict[str, SplitPlan]: ...

    def load(self, split: str, index: int) -> Sample: ...

    def fingerprint(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    factory: Callable[..., Dataset]
    summary: str


DATASETS: dict[str, DatasetEntry] = {}


def register(name: str, summary: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Register a dataset factory under ``name``; registering a name twice is an error."""

    def deco(factory: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        DATASETS[name] = DatasetEntry(name, factory, summary)
        return factory

    return deco


BUILD_KEYWORDS = ("seed", "image_size", "on_error")  # every factory's; given by the build, not dataset options


@dataclass(frozen=True)
class Flag:
    """How `augment build` offers a dataset option, declared where the adapter takes it: a factory keyword annotated
    ``Annotated[<type>, Flag(...)]``. ``help`` may hold ``{default}``, the keyword's default in the signatures;
    ``kind`` is the value's type on the command line (``str``, ``Path``, ``int``, ``float``, or ``list`` for a
    repeated option); ``min``/``max`` bound a number, ``choices`` a text."""

    help: str
    kind: type = str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.choices and self.kind is not str:
            raise ValueError(f"Flag {self.help[:40]!r}: choices are for a text option (kind str)")
        if (self.min is not None or self.max is not None) and self.kind not in (int, float):
            raise ValueError(f"Flag {self.help[:40]!r}: min and max are for a number (kind int or float)")


def adapter_options(entry: DatasetEntry) -> dict[str, inspect.Parameter]:
    """The options of one adapter: the keyword-only parameters of its factory, less the build's own."""
    params = inspect.signature(entry.factory).parameters
    return {p: v for p, v in params.items() if p not in BUILD_KEYWORDS and v.kind == v.KEYWORD_ONLY}


def option_names() -> list[str]:
    """Every dataset option of the registered adapters (``--size``, ``--root``, ...), each once: the `augment build`
    flags that go into ``BuildConfig.dataset_options``."""
    return list(dict.fromkeys(k for entry in DATASETS.values() for k in adapter_options(entry)))


def option_flag(key: str) -> Flag | None:
    """The ``Flag`` that the adapters taking dataset option ``key`` declare for it, or None when none does (an
    adapter registered by a test or a script, set through ``get_dataset`` only). Adapters that declare two
    different ones are an error; tests/test_settings.py checks that every shipped adapter declares one."""
    flags: dict[Flag, str] = {}
    for entry in DATASETS.values():
        if key in adapter_options(entry):
            try:
                hint = typing.get_type_hints(entry.factory, include_extras=True).get(key)
            except (NameError, TypeError):  # annotations only a type checker resolves: no Flag to read
                hint = None
            for flag in (m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Flag)):
                flags.setdefault(flag, entry.name)
    if len(flags) > 1:
        raise ValueError(f"dataset option {key!r}: the adapters {', '.join(flags.values())} declare different Flags")
    return next(iter(flags), None)


def option_default(key: str) -> Any:
    """The default of the dataset option ``key`` in the adapters' signatures, for the help text (one value: the
    adapters that take ``key`` agree on it, tests/test_settings.py checks it)."""
    defaults = {
        repr(v.default): v.default for e in DATASETS.values() for k, v in adapter_options(e).items() if k == key
    }
    if len(defaults) != 1:
        raise ValueError(f"dataset option {key!r}: defaults {', '.join(defaults) or 'none'} (expected one)")
    return next(iter(defaults.values()))


def get_dataset(name: str, **options: Any) -> Dataset:
    """Instantiate a registered dataset; the error lists the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    factory = DATASETS[name].factory
    params = inspect.signature(factory).parameters
    takes = list(adapter_options(DATASETS[name]))
    open_ended = any(v.kind == v.VAR_KEYWORD for v in params.values())
    unexpected = [] if open_ended else [k for k in options if k not in params]
    if unexpected:  # an option this adapter does not take is an error, never silently dropped

        def flags(keys: list[str]) -> str:
            return ", ".join("--" + k.replace("_", "-") for k in keys) or "no dataset options"

        raise ValueError(f"--dataset {name} does not take {flags(unexpected)}; it takes {flags(takes)}")
    return factory(**options)


# Import every adapter so that it registers itself; this order is the order of `augment datasets`.
for _adapter in ("synthetic", "in9", "waterbirds", "cct", "coco", "folder"):
    importlib.import_module(f"augment.datasets.{_adapter}")
