"""Infill methods: the registry and the one mask convention of the code base.

**Mask convention (stated here once, used everywhere):** ``hole`` is a ``bool[H, W]`` array and
``hole == True`` means "this pixel is replaced". Every pixel where ``hole`` is False is returned unchanged,
bit for bit.

- For a counterfactual (CF) image the hole is the object's bounding rectangle (``masks.cf_hole``).
- For a factual (F) image the hole is the background (``masks.f_hole``).

Callers pass a different hole for each role; they never invert the meaning.

Every method is one function in its own file with the signature::

    fill(image: uint8[H, W, 3], hole: bool[H, W], rng: np.random.Generator) -> uint8[H, W, 3]

registered with ``@register(name, roles=..., stochastic=..., summary=...)``. Methods that need a second image
(``mixed-rand``) declare ``needs_donor=True`` and take it as the keyword argument ``donor``; methods that draw from
the split's value pool (``shuffle``, see ``augment.pool``) declare ``needs_pool=True`` and take it as ``pool``;
methods that paste a background drawn from the build's bank (``bank``, see ``augment.backgrounds``) declare
``needs_background=True`` and take it as ``background``.
Methods that run a model (``cagan``) also register ``batch=``, the same method over lists of images that the build
uses to fill a batch at once, and ``model=``, a :class:`ModelInfill` that owns their weights option, its check,
their provenance and their batched runner; they take the loaded model as the keyword argument ``inpainter`` and
count as ``needs_model``. Its weights file is ``BuildConfig.weights[name]``, given as ``--NAME-weights``
(:func:`weights_flag`), a flag `augment build` makes for every registered model method. An inpainting network
(``lama``, ``migan``) is a loader module in ``augment.inpainters`` (``required``, ``describe``, ``runner``) and a
method file of a few lines: ``model=inpainter_model(help, module)``, ``batch=fill_with_inpainter``. Adding a model
method is its own file plus its import below.
The registry name is also the CLI value and the shard field name (``cf.tile.jpg``). A method never mutates
its input and draws all its randomness from ``rng``.

Adding a method: write ``augment/infill/<name>.py`` with one registered function and import it at the bottom
of this file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

InfillFn = Callable[..., np.ndarray]

CF = "cf"  # counterfactual: remove the object, fill its rectangle
F = "f"  # factual: keep the object, replace the background
ROLES = (CF, F)


@dataclass(frozen=True)
class ModelInfill:
    """What the build needs to run one model method; the build names no model itself.

    ``help`` is the help of its weights flag (``--NAME-weights``, :func:`weights_flag`); ``default_weights()``
    resolves the file when the flag is not given; ``check(weights)`` refuses an unusable file before any work;
    ``metadata(weights)`` is what the manifest records of it besides path, sha256 and device; ``runner(weights,
    device, batch_size)`` returns the loaded model that ``batch`` takes as ``inpainter``."""

    help: str
    default_weights: Callable[[], Path]
    check: Callable[[Path], None]
    metadata: Callable[[Path], dict[str, Any]]
    runner: Callable[[Path, str, int], Any]


def weights_flag(name: str) -> str:
    """The `augment build` flag of model method ``name``'s weights file: ``--cagan-weights``."""
    return f"--{name}-weights"


def inpainter_model(help: str, module: str) -> ModelInfill:
    """The ``ModelInfill`` of an inpainting network whose loading lives in ``module`` (``augment.inpainters.lama``,
    ...), imported only when a build uses it: its ``required()`` (no default file: a one-line error naming the
    flag), ``describe(path)`` (the check, and the manifest's metadata) and ``runner(path, device, batch_size)``."""

    describe = Deferred(module, "describe")
    return ModelInfill(help, Deferred(module, "required"), describe, describe, Deferred(module, "runner"))


@dataclass(frozen=True)
class Deferred:
    """Function ``name`` of ``module``, imported at the first call; a plain value, so the registry pickles (build
    workers receive it)."""

    module: str
    name: str

    def __call__(self, *args: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args)


def fill_with_inpainter(images: list[np.ndarray], holes: list[np.ndarray], *, inpainter) -> list[np.ndarray]:
    """A model method's ``batch``: every image's hole filled by the loaded ``inpainter`` (a runner of
    ``augment.inpainters`` or ``augment.cagan``), which batches and pastes into the hole only."""
    for image, hole in zip(images, holes, strict=True):
        check_inputs(image, hole)
    return inpainter(images, holes)


@dataclass(frozen=True)
class Infill:
    """A registered method: the function plus what the build needs to know about it."""

    name: str
    fill: InfillFn
    roles: frozenset[str]
    stochastic: bool  # stochastic methods are stored in K copies: ``f.shuffle.0.jpg`` ...
    summary: str
    needs_donor: bool = False
    needs_model: bool = False
    needs_pool: bool = False  # takes the split's ValuePool as ``pool``
    needs_background: bool = False  # takes a background drawn from the bank as ``background`` (augment.backgrounds)
    batch: Callable[..., list[np.ndarray]] | None = None  # batch(images, holes, *, inpainter) for model methods
    model: ModelInfill | None = None  # how the build loads and records the model (model methods)


INFILLS: dict[str, Infill] = {}


def register(
    name: str,
    *,
    roles: tuple[str, ...],
    stochastic: bool,
    summary: str,
    needs_donor: bool = False,
    needs_pool: bool = False,
    needs_background: bool = False,
    batch: Callable[..., list[np.ndarray]] | None = None,
    model: ModelInfill | None = None,
) -> Callable[[InfillFn], InfillFn]:
    """Register ``fn`` under ``name``; registering a name twice is an error."""
    bad = set(roles) - set(ROLES)
    if bad:
        raise ValueError(f"infill {name!r}: unknown roles {sorted(bad)}, expected a subset of {list(ROLES)}")
    if (batch is None) != (model is None):
        raise ValueError(f"infill {name!r}: a model method registers both batch= and model=")

    def deco(fn: InfillFn) -> InfillFn:
        if name in INFILLS:
            raise ValueError(f"infill {name!r} registered twice ({INFILLS[name].fill.__module__}, {fn.__module__})")
        INFILLS[name] = Infill(
            name,
            fn,
            frozenset(roles),
            stochastic,
            summary,
            needs_donor,
            model is not None,
            needs_pool,
            needs_background,
            batch,
            model,
        )
        return fn

    return deco


def names(role: str | None = None) -> list[str]:
    """Registered method names, optionally only those usable in ``role`` (``"cf"`` or ``"f"``)."""
    return [n for n, m in INFILLS.items() if role is None or role in m.roles]


def get_infill(name: str, role: str | None = None) -> Infill:
    """Look a method up by name; the error lists the valid choices for the role."""
    flag = {CF: "--infill", F: "--factual", None: "method"}[role]
    valid = ", ".join(names(role))
    if name not in INFILLS:
        raise ValueError(f"unknown {flag} {name!r}; valid choices: {valid}")
    method = INFILLS[name]
    if role is not None and role not in method.roles:
        only = "CF" if method.roles == {CF} else "F"
        raise ValueError(f"{flag} {name!r} is a {only}-only method; valid {flag} choices: {valid}")
    return method


def field_names(name: str, role: str, copies: int) -> list[str]:
    """Shard field names for one method: ``cf.tile.jpg`` or ``f.shuffle.0.jpg`` ... one per copy."""
    if INFILLS[name].stochastic:
        return [f"{role}.{name}.{k}.jpg" for k in range(copies)]
    return [f"{role}.{name}.jpg"]


def check_inputs(image: np.ndarray, hole: np.ndarray) -> None:
    """Raise a clear error when ``image``/``hole`` do not follow the convention above."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: got {image.dtype} {image.shape}, expected uint8 [H, W, 3]")
    if hole.dtype != bool or hole.shape != image.shape[:2]:
        raise ValueError(f"hole: got {hole.dtype} {hole.shape}, expected bool {image.shape[:2]}")


def bounds(
    hole: np.ndarray, rows_hit: np.ndarray | None = None, cols_hit: np.ndarray | None = None
) -> tuple[slice, slice] | None:
    """The rows and columns of the hole's bounding rectangle, or None for an empty hole. A method that computes its
    fill only there saves the work outside it (a CF hole is a rectangle or a union of boxes). ``rows_hit`` and
    ``cols_hit`` are ``hole.any(axis=1)`` and ``hole.any(axis=0)``, for a caller that has them already."""
    rows_hit = hole.any(axis=1) if rows_hit is None else rows_hit
    cols_hit = hole.any(axis=0) if cols_hit is None else cols_hit
    rows, cols = np.flatnonzero(rows_hit), np.flatnonzero(cols_hit)
    if rows.size == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def paste(image: np.ndarray, hole: np.ndarray, filled: np.ndarray | int) -> np.ndarray:
    """A new image: ``filled`` (a full [H, W, 3] image or a scalar) inside the hole, ``image`` outside.

    A masked copy in OpenCV (``cv2.copyTo``), much faster than ``np.where`` over the image (docs/benchmarks.md,
    section 2); a scalar fill of a rectangular hole is a slice assignment."""
    out = image.copy()
    if np.isscalar(filled) or np.ndim(filled) == 0:
        rect = bounds(hole)
        if rect is not None and hole[rect].all():
            out[rect] = filled
            return out
        filled = np.full_like(image, filled)
    cv2.copyTo(np.ascontiguousarray(filled, dtype=np.uint8), np.ascontiguousarray(hole).view(np.uint8), out)
    return out


def paste_block(image: np.ndarray, hole: np.ndarray, rect: tuple[slice, slice], block: np.ndarray) -> np.ndarray:
    """A new image: ``block``, the fill of the hole's bounding rectangle ``rect`` (``bounds``), inside the hole."""
    out = image.copy()
    inside = hole[rect]
    out[rect] = block if inside.all() else np.where(inside[..., None], block, out[rect])
    return out


def scatter(image: np.ndarray, hole: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``image`` whose hole pixels, in row-major order, become ``values`` ([n_hole, 3])."""
    # np.place fills the True positions of a mask in order. Placing whole pixels packed as uint32 (RGBA, one
    # OpenCV pass each way) is faster than placing the bytes under a 3x repeated mask, or than boolean indexing
    # (docs/benchmarks.md, section 2).
    if not hole.any():
        return image.copy()
    rgba = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    packed = cv2.cvtColor(np.ascontiguousarray(values, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2RGBA)
    np.place(rgba.view(np.uint32).reshape(-1), np.ascontiguousarray(hole).reshape(-1), packed.view(np.uint32))
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)


def to_uint8(scaled: np.ndarray) -> np.ndarray:
    """``np.clip(np.rint(scaled), 0, 255).astype(np.uint8)`` for float32 values on the [0, 255] scale, in one OpenCV
    pass instead of three: adding 0 is exact, and OpenCV's saturating cast rounds half to even, as ``np.rint``
    does."""
    return cv2.add(scaled, 0.0, dtype=cv2.CV_8U)


# Import every method so that it registers itself (order = order in `augment datasets` and the CLI enums).
for _method in (
    *("grey", "random", "shuffle", "shuffle_image", "tile", "telea", "mixed_rand", "bank"),
    *("cagan", "lama", "migan"),
):
    importlib.import_module(f"augment.infill.{_method}")
