"""Mask sources: where a sample's object mask comes from (``augment build --masks-from``), registered by name.

A dataset gives boxes, masks or labels only. The F hole (the background, ``augment.masks``) needs the object's
outline; from a box alone it would keep the background inside the box as if it were the object. A mask source
makes the outline from what the dataset gives:

- ``annotation`` (the default): the dataset's own mask, else its boxes, as released;
- ``box``: the boxes only, even where the dataset has a mask (the baseline that the others improve on);
- ``grabcut``: OpenCV's GrabCut started from each box (no weights);
- ``sam``: Segment Anything, prompted with each box (``--mask-weights``: a local SAM checkpoint);
- ``cam``: a classifier's class-activation map, thresholded (``--mask-weights``: a classifier), for labels only.

Every produced mask passes the quality gate (``augment.mask_sources.gate``) or the sample falls back to its boxes
(or, without boxes, to no object); each sample's JSON records ``mask_source`` and, after a fallback, ``mask_gate``
(why). The mask convention is ``augment.infill``'s: a mask is ``bool[H, W]``, True = object.

Each source is one module here that registers a :class:`MaskSource` whose ``produce`` maps a list of
:class:`Request` to one mask (or None) per request, batched, with the model ``load`` returned. Randomness comes
from each request's ``seed`` (its sample's), never a global generator, so a build is byte-identical whatever the
workers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from augment import masks
from augment.mask_sources.gate import GATE, gate
from augment.rng import sample_rng

ANNOTATION = "annotation"
BOX = "box"  # the mask_source of a sample whose F hole is everything outside its boxes


@dataclass(frozen=True)
class Request:
    """One sample's input to a mask source: the stored image, its boxes (None: labels only) and its label."""

    image: np.ndarray  # uint8 [H, W, 3]
    boxes: np.ndarray | None  # int [n, 4], x0 y0 x1 y1, exclusive x1/y1
    label: int
    class_name: str
    seed: int  # this sample's, for sources that draw


@dataclass(frozen=True)
class MaskSource:
    """A registered source: ``produce(requests, model) -> [bool[H, W] | None]``, and what the build must know."""

    name: str
    summary: str
    produce: Callable[[list[Request], Any], list[np.ndarray | None]] | None  # None: annotation, box
    needs_box: bool = True  # a sample without a box (or a mask to take one from) is left as it is
    needs_weights: bool = False  # --mask-weights
    batched: bool = False  # worth a batch of samples per call (a model on --device)
    load: Callable[[Path, str], Any] | None = None  # (weights, device) -> model, loaded once per process
    check: Callable[[Path], None] | None = None  # refuse a bad weight file before any work
    params: dict[str, Any] = field(default_factory=dict)  # thresholds and settings, recorded in the manifest
    weights_help: str = ""  # where such weights come from, for the missing-file error


MASK_SOURCES: dict[str, MaskSource] = {}


def register(source: MaskSource) -> MaskSource:
    if source.name in MASK_SOURCES:
        raise ValueError(f"mask source {source.name!r} registered twice")
    MASK_SOURCES[source.name] = source
    return source


def get_source(name: str) -> MaskSource:
    if name not in MASK_SOURCES:
        raise ValueError(f"--masks-from: got {name!r}, expected one of {', '.join(MASK_SOURCES)}")
    return MASK_SOURCES[name]


def check_weights(name: str, weights: str | None) -> None:
    """Refuse, before any work, a model source without its weight file, or a file it cannot load safely."""
    source = get_source(name)
    if not source.needs_weights:
        if weights is not None:
            takers = " or ".join(n for n, s in MASK_SOURCES.items() if s.needs_weights)
            raise ValueError(f"--mask-weights is for --masks-from {takers}; --masks-from {name} takes none")
        return
    if weights is None:
        raise ValueError(f"--masks-from {name} needs --mask-weights FILE; {source.weights_help}")
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"--mask-weights {path}: no such file; {source.weights_help}")
    if source.check is not None:
        source.check(path)


_MODELS: dict[tuple, Any] = {}  # this process's loaded model: build workers load it once


def model(name: str, weights: str, device: str) -> Any:
    """Source ``name``'s model from ``weights`` on ``device``, loaded once per process (again if the file changed)."""
    stat = Path(weights).stat()
    key = (name, str(Path(weights).resolve()), stat.st_size, stat.st_mtime_ns, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = get_source(name).load(Path(weights), device)
    return _MODELS[key]


def sample_boxes(mask: np.ndarray | None, boxes: np.ndarray | None) -> np.ndarray | None:
    """The boxes a box-prompted source starts from: the sample's, else the rectangle around its mask."""
    if boxes is not None and len(boxes):
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if mask is not None and mask.any():
        return masks.mask_to_box(mask)[None]
    return None


@dataclass
class Outcome:
    """What a source gave one sample: its new mask and boxes, ``mask_source`` and, after a fallback, why."""

    mask: np.ndarray | None
    boxes: np.ndarray | None
    source: str | None  # None: the sample has no object
    gate: str | None = None


def annotated(mask: np.ndarray | None, boxes: np.ndarray | None) -> Outcome:
    """The dataset's own annotation, unchanged."""
    has_boxes = boxes is not None and len(boxes) > 0
    source = ANNOTATION if mask is not None and mask.any() else BOX if has_boxes else None
    return Outcome(mask, boxes, source)


def resolve(name: str, samples: list[Any], seed: int, weights: str | None = None, device: str = "cpu") -> list[Outcome]:
    """Each sample's outcome under source ``name`` (``samples``: objects with ``key``, ``image``, ``mask``,
    ``boxes``, ``label``, ``class_name``), one ``produce`` call for the batch."""
    source = get_source(name)
    if name == ANNOTATION:
        return [annotated(s.mask, s.boxes) for s in samples]
    if name == BOX:
        outs = []
        for s in samples:
            boxes = sample_boxes(s.mask, s.boxes)
            outs.append(Outcome(None, boxes, BOX if boxes is not None else None))
        return outs
    outs: dict[int, Outcome] = {}  # by sample position, every one filled below
    todo, requests = [], []
    for i, s in enumerate(samples):
        boxes = sample_boxes(s.mask, s.boxes)
        if source.needs_box and boxes is None:
            outs[i] = Outcome(None, None, None)  # no box to start from: no object, as before
            continue
        rng_seed = int(sample_rng(seed, s.key, "mask", name).integers(2**31))
        todo.append((i, boxes))
        requests.append(Request(s.image, boxes, s.label, s.class_name, rng_seed))
    loaded = model(name, weights, device) if source.load is not None and requests else None
    produced = source.produce(requests, loaded) if requests else []
    for (i, boxes), mask in zip(todo, produced, strict=True):
        reason = gate(mask, boxes, samples[i].image.shape[:2])
        if reason is None:
            outs[i] = Outcome(mask, boxes, name)
        else:  # fall back to the boxes; without any, the sample has no object
            outs[i] = Outcome(None, boxes, BOX if boxes is not None else None, reason)
    return [outs[i] for i in range(len(samples))]


def refine(samples: list[Any], config: Any) -> list[Any]:
    """``samples`` (``augment.datasets.Sample``) with the masks of the build's ``--masks-from``: new samples, with
    ``mask``, ``boxes``, ``mask_source`` and ``mask_gate`` set (``config``: the ``BuildConfig``)."""
    outcomes = resolve(config.masks_from, samples, config.seed, config.mask_weights, config.device)
    return [
        replace(s, mask=o.mask, boxes=o.boxes, mask_source=o.source, mask_gate=o.gate)
        for s, o in zip(samples, outcomes, strict=True)
    ]


def describe(name: str, weights: str | None, device: str, batch_size: int) -> dict[str, Any]:
    """The manifest's record of where the build's masks came from: the source, its settings, the gate's bounds
    and, for model sources, the weights' sha256."""
    from augment.contract.shards import sha256_file

    source = get_source(name)
    out: dict[str, Any] = {"source": name, "params": source.params}
    if source.produce is not None:
        out["gate"] = GATE
    if source.needs_weights and weights is not None:
        out["weights"] = {"path": str(weights), "sha256": sha256_file(Path(weights))}
        from augment.contract.zoo.devices import resolve_device

        out["device"], out["batch_size"] = str(resolve_device(device)), batch_size
    return out


# Import every source so that it registers itself; this order is the order of --help.
for _source in ("annotation", "grabcut", "sam", "cam"):
    importlib.import_module(f"augment.mask_sources.{_source}")
