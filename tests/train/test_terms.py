"""The objective's terms are listed once (train.terms.TERMS), and every place that names, checks or sums them handles
each one: a term added to the table and forgotten in one of those places fails here.

The places: the objective (train.train.objective), Config.check (the baselines are exclusive), Config.method_name,
the loss legend and its caption (train.report.objective_label / objective_key), and the rows the "best" methods of a
study are picked from (train.study.specs.pick_best, train.terms.single_method).
"""

from __future__ import annotations

import copy
import json
import re
import typing
from pathlib import Path

import pytest
import torch

from train import report
from train.config import RANGES, Config, flag
from train.study.grid import Grid
from train.study.specs import RunSpec, pick_best
from train.terms import BASELINES, BEST_ROLES, CE, METHODS, OPTIONAL, TERMS, Term, on, single_method

METHOD_OF = {"cf": "tile", "f": "shuffle"}  # a method of each term whose field is a list of methods
NUMBER = 0.1  # a value that turns a numeric term on, in range for every one of them


def setting(term: Term, method: str | None = None) -> typing.Any:
    """A value of ``term``'s field that turns it on: a list of one method, or ``NUMBER``."""
    if typing.get_origin(typing.get_type_hints(Config)[term.field]) is list:
        return [method or METHOD_OF[term.field]]
    return NUMBER


def alone(term: Term) -> Config:
    return Config.resolve("demo", shards="s", out="o", **{term.field: setting(term)})


def test_the_table_is_whole() -> None:
    fields = {f for f in typing.get_type_hints(Config)}
    assert TERMS[0] is CE and not CE.field and all(t.field in fields for t in OPTIONAL)
    assert len({t.field for t in TERMS}) == len(TERMS) and len({t.name for t in TERMS}) == len(TERMS)
    for term in TERMS:  # the fields a term names exist, and what it is within is a term of its own
        assert all(key in fields for key in (term.loss, term.weight) if key), term
        assert not term.within or term.within in {t.field for t in OPTIONAL if not t.within}, term
        assert not term.best or term in METHODS, term
        assert not term.whole or term.baseline, term
        assert term.caption or term.baseline, f"{term.name}: no caption under the loss curves"


@pytest.mark.parametrize("term", OPTIONAL, ids=lambda t: t.field)
def test_every_term_is_named_in_the_method_name(term: Term) -> None:
    name = alone(term).method_name()
    owner = next(t for t in OPTIONAL if t.field == (term.within or term.field))
    assert name != "Orig" and name.startswith(f"{owner.name}(")
    if term.within:  # one of its owner's methods: F(fgsm0.1)
        assert f"{term.field}{NUMBER:g}" in name


def test_every_term_has_its_own_method_name() -> None:
    names = [alone(t).method_name() for t in OPTIONAL]
    assert len(set(names)) == len(names), names


@pytest.mark.parametrize("term", OPTIONAL, ids=lambda t: t.field)
def test_every_term_shows_in_the_loss_legend_and_its_caption(term: Term) -> None:
    orig = Config.resolve("demo", shards="s", out="o").to_dict()
    config = alone(term).to_dict()
    label, key = report.objective_label(config), report.objective_key([config])
    assert label != report.objective_label(orig)
    assert term.legend.format(value=NUMBER) in label
    if term.caption:
        assert f"{term.name}: " in key and f"{term.name}: " not in report.objective_key([orig])
    if term.rows:  # its images count among the rows each sum is divided by
        assert f"+ {term.rows})" in key.splitlines()[1]


@pytest.mark.parametrize("term", OPTIONAL, ids=lambda t: t.field)
def test_the_baselines_exclude_every_other_term(term: Term) -> None:
    for baseline in BASELINES:
        if baseline is term:
            continue
        with pytest.raises(ValueError, match="are (separate )?baselines") as refused:
            Config.resolve("demo", shards="s", out="o", **{baseline.field: NUMBER, term.field: setting(term)})
        named = re.split(r"[ ,:]+", str(refused.value))
        assert flag(baseline.field) in named and flag(term.field) in named, str(refused.value)


def fake_run(folder: Path, accuracy: float, **settings: typing.Any) -> RunSpec:
    """A finished run of ``settings`` (unchecked: a combination Config.check refuses still reaches pick_best only
    through the table) with ``accuracy`` on val."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"splits": {"val": {"accuracy": accuracy}}}))
    return RunSpec(folder.name, 0, 1.0, Config(shards="s", out=str(folder), **settings))


@pytest.mark.parametrize("term", OPTIONAL, ids=lambda t: t.field)
def test_best_is_picked_from_rows_of_one_method_and_no_other_term(term: Term, tmp_path: Path) -> None:
    grid = Grid(defaults={}, rows=[], best_by="val", path="grid.toml")
    for role in BEST_ROLES:
        folder = tmp_path / role / term.field
        with_term = {role: ["m1", "m3"]} if term.field == role else {role: ["m1"], term.field: setting(term, "x")}
        specs = [fake_run(folder / "with", 0.9, **with_term), fake_run(folder / "alone", 0.5, **{role: ["m2"]})]
        assert pick_best(grid, specs)[role] == "m2", (role, with_term)
        assert single_method(specs[0].config, role) is None and single_method(specs[1].config, role) == "m2"
        assert single_method(specs[1].config.to_dict(), role) == "m2"  # a run's recorded config reads the same
        plain = [fake_run(folder / "plain", 0.9, **{role: ["m1"]}), specs[1]]  # the check can fail
        assert pick_best(grid, plain)[role] == "m1"


def tiny_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n, size = 6, 16
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, 4:12, 4:12] = 1
    batch = {
        "image": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
        "label": torch.randint(0, 4, (n,), generator=g),
        "has_object": torch.ones(n, dtype=torch.bool),
        "mask": mask,
    }
    for field, method in METHOD_OF.items():
        batch[f"{field}.{method}"] = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return batch


def test_the_objective_sums_every_term() -> None:
    from augment.contract.zoo.models import build_model
    from train.train import objective

    torch.manual_seed(0)
    model, batch = build_model("resnet8", 4).eval(), tiny_batch()  # eval: BatchNorm keeps each row to itself

    def loss(config: Config) -> tuple[float, int]:
        value, rows = objective(copy.deepcopy(model), dict(batch), config, 4, torch.device("cpu"), 0)
        return value.item(), rows

    orig, originals = loss(Config.resolve("demo", shards="", out=""))
    for term in OPTIONAL:  # a number at the top of its range (or 1000): Sal's penalty is tiny on an untrained model
        strong = setting(term) if isinstance(setting(term), list) else RANGES[term.field][1] or 1000.0
        value, rows = loss(Config.resolve("demo", shards="", out="", **{term.field: strong}))
        assert value != orig, term.name
        assert (rows > originals) == bool(term.rows), term.name  # its images join the batch's rows
    weighted = [t for t in OPTIONAL if t.weight]
    for term in weighted:  # the weight scales its sum: at 0 the term adds nothing, and its rows only divide
        config = Config.resolve("demo", shards="", out="", **{term.field: setting(term), term.weight: 0.0})
        value, rows = loss(config)
        assert value == pytest.approx(orig * originals / rows, rel=1e-5), term.name


def test_a_config_and_its_dict_turn_on_the_same_terms() -> None:
    for term in OPTIONAL:
        config = alone(term)
        assert [t for t in TERMS if on(t, config)] == [t for t in TERMS if on(t, config.to_dict())] == [CE, term]
