"""The terms of the training objective (docs/METHOD.md, Loss), listed once: ``TERMS``.

Everything that names, checks or sums the terms reads this table: ``train.train.objective`` (which rows join the
batch, and each one's loss and weight), ``Config.check`` (the baselines are exclusive), ``Config.method_name`` (the
row label, ``CF(tile)+F(shuffle)+Sal(10)``), ``train.report.objective_label`` / ``objective_key`` (the loss legend
and its caption) and ``single_method`` (the rows that ``train study`` picks its "best" methods from).
tests/train/test_terms.py checks each of those places against every term of the table, so a term added here and
forgotten in one of them fails.

A term is on when its config field is: a non-empty list of methods, or a non-zero number. A config is read as a
``Config`` or as its dict (a run's recorded config.json, where an absent key is off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Term:
    """One term of the objective.

    Attributes:
        field: the config field that turns it on (a list of methods or a number); "" for CE on the originals, always
            on.
        name: its short name in method names and loss legends (``CF``, ``Sal``, ``LS``).
        rows: what its images are called among the batch's rows (``originals``, ``CF``): its images are rows of the
            one forward, and each term's sum is divided by their number; "" when it adds no rows.
        stored: its images are read from the shards, one set per method (``<field>.<method>``); else made online.
        loss: the config field of its loss kind ("not y": ``train.losses.cf_loss``); "" for cross-entropy on y.
        weight: the config field of its weight; "" for 1. A penalty (no rows) is weighted by its own value.
        legend: its text in the loss legend, ``{value:g}`` its value: for a term without rows, after ``per row``; for
            a baseline, the CE it replaces (or the whole objective, with ``whole``).
        caption: what it is, in the caption under the loss curves (``{loss}``: its loss kinds); "" for none.
        within: the term whose method name lists it, as ``<field><value>`` (``F(shuffle,fgsm0.3)``); "" for its own.
        baseline: an exclusive baseline: never with a non-baseline term, nor with another baseline.
        whole: its loss replaces the whole objective (mixup's soft-label CE), rather than CE on the originals.
        best: a grid row marked "best" takes its method: ``train study`` picks among its single-method rows.
    """

    field: str
    name: str
    rows: str = ""
    stored: bool = False
    loss: str = ""
    weight: str = ""
    legend: str = ""
    caption: str = ""
    within: str = ""
    baseline: bool = False
    whole: bool = False
    best: bool = False


CE = Term("", "CE", rows="originals", legend="CE", caption="cross-entropy on the original images")
CF = Term(
    "cf",
    "CF",
    rows="CF",
    stored=True,
    loss="cf_loss",
    weight="cf_weight",
    legend="CF",
    caption="{loss} on the counterfactual images",
    best=True,
)
FACTUAL = Term("f", "F", rows="F", stored=True, legend="F", caption="cross-entropy on the factual images", best=True)
FGSM = Term(
    "fgsm", "FGSM", rows="FGSM", legend="FGSM", caption="cross-entropy on background-attacked images", within="f"
)
SAL = Term("sal", "Sal", legend="{value:g}·Sal", caption="the GradMask penalty")
MIXUP = Term("mixup", "Mixup", legend="soft-label CE of mixup({value:g}) images, per image", baseline=True, whole=True)
LABEL_SMOOTHING = Term("label_smoothing", "LS", legend="CE (smoothing {value:g})", baseline=True)

# In the order of the method name, the loss legend and the batch's rows: CE, CF, F, FGSM, then Sal, then baselines.
TERMS: tuple[Term, ...] = (CE, CF, FACTUAL, FGSM, SAL, MIXUP, LABEL_SMOOTHING)
OPTIONAL = tuple(t for t in TERMS if t.field)  # the terms a config turns on
BASELINES = tuple(t for t in TERMS if t.baseline)
METHODS = tuple(t for t in OPTIONAL if not t.baseline)  # the paper's terms, which the baselines exclude
BEST_ROLES = tuple(t.field for t in TERMS if t.best)  # the fields a grid row may set to "best": cf, f

# The CF loss kinds (train.losses.CF_LOSSES), spelt out for the caption.
LOSS_NAMES = {
    "logp": "-log(1 - p_y)",
    "uniform": "CE to the uniform distribution",
    "uniform-others": "CE to the uniform distribution over the other classes",
}


def value(config: Any, key: str, default: Any = None) -> Any:
    """``key`` of ``config``, a Config or its dict (``default`` where the dict lacks it); None for no key (CE's)."""
    if not key:
        return None
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key)


def on(term: Term, config: Any) -> bool:
    """Whether ``config`` trains with ``term``."""
    return not term.field or bool(value(config, term.field))


def used(config: Any) -> tuple[Term, ...]:
    """The terms ``config`` trains with, CE among them, in table order."""
    return tuple(t for t in TERMS if on(t, config))


def single_method(config: Any, role: str) -> str | None:
    """The method of ``role`` (a field of ``BEST_ROLES``: cf, f) that ``config`` trains alone: one method of it and
    no other term; else None. What the rows marked "best" choose from (``train.study.specs.pick_best``)."""
    methods = value(config, role) or []
    if len(methods) != 1 or any(on(t, config) for t in OPTIONAL if t.field != role):
        return None
    return methods[0]
