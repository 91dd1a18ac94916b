"""The manifest's ``dataset.params.evaluation``, declared once in the contract (``schema.Evaluation``): every
adapter's section parses to it and back, a wrongly typed one is refused in one line naming the key, and the trainer
reads the section only through the contract's parser, never by guessing its shape."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from upstream import release_options

from augment.contract import schema
from augment.datasets import DATASETS, get_dataset

ROOT = Path(__file__).resolve().parents[2]


def adapter(name: str, tmp_path: Path):
    """The registered adapter ``name`` on a small source of its own (tests/upstream.py)."""
    if name == "indexed":  # tests/conftest.py's fixture adapter
        return get_dataset(name)
    return get_dataset(name, **release_options(name, tmp_path), **({"on_error": "skip"} if name == "folder" else {}))


def raw(evaluation: schema.Evaluation) -> dict[str, Any]:
    """The typed section back as the manifest holds it (unset keys left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(evaluation):
        value = getattr(evaluation, f.name)
        if value is None or value is False or value == ():
            continue
        if dataclasses.is_dataclass(value):
            value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_adapters_evaluation_section_parses_and_round_trips(name: str, tmp_path: Path) -> None:
    params = adapter(name, tmp_path).describe()  # the manifest's dataset.params (augment.runner.plan)
    section = params.get("evaluation", {})
    parsed = schema.parse_evaluation({"dataset": {"params": params}})
    assert raw(parsed) == section
    expected = {
        "synthetic": ["mixed_same", "mixed_rand", "original", "mixed_next"],
        "in9": ["mixed_same", "mixed_rand", "original", "mixed_next"],
        "waterbirds": ["test_original", "test_flip"],
        "cct": ["cis_val", "cis_test", "trans_val", "trans_test"],
    }
    assert parsed.named_splits() == expected.get(name, [])
    assert schema.evaluation_of(section) == schema.evaluation_of(parsed) == parsed


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("x", "dataset.params.evaluation"),
        ({"bg_gap": ["a"]}, "dataset.params.evaluation.bg_gap"),
        ({"bg_gap": {"same": "a"}}, "dataset.params.evaluation.bg_gap"),
        ({"background_reliance": {"original": "a", "shifted": ["b"]}}, "dataset.params.evaluation.background_reliance"),
        ({"flip": {"original": 1, "shifted": "x"}}, "dataset.params.evaluation.flip"),
        (
            {"background_reliance": {"original": "a", "shifted": "b", "background_class": 1}},
            "dataset.params.evaluation.background_reliance.background_class",
        ),
        ({"cis": "cis_test"}, "dataset.params.evaluation.cis"),
        ({"trans": ["trans_test", 2]}, "dataset.params.evaluation.trans"),
        ({"worst_group": "yes"}, "dataset.params.evaluation.worst_group"),
        ({"model_selection": ["cis_val"]}, "dataset.params.evaluation.model_selection"),
        ({"metric": 1}, "dataset.params.evaluation.metric"),
    ],
)
def test_a_wrongly_typed_section_is_refused_in_one_line_naming_the_key(section: Any, key: str) -> None:
    manifest = {"dataset": {"params": {"evaluation": section}}}
    with pytest.raises(ValueError) as caught:
        schema.parse_evaluation(manifest, "b/manifest.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"b/manifest.json: {key}")
    with pytest.raises(ValueError, match="dataset.params.evaluation"):
        schema.check_evaluation("b/manifest.json", manifest)  # the manifest's check is the same parser


@pytest.mark.parametrize("params", [{}, {"evaluation": None}, {"evaluation": {}}, {"evaluation": []}])
def test_no_section_is_the_empty_evaluation(params: dict) -> None:
    assert schema.parse_evaluation({"dataset": {"params": params}}) == schema.Evaluation()
    assert schema.parse_evaluation({"dataset": {}}) == schema.Evaluation()


def test_contradicting_splits_are_the_shifted_sides() -> None:
    synthetic = schema.parse_evaluation({"dataset": {"params": get_dataset("synthetic").describe()}})
    assert synthetic.contradicting_splits() == ["mixed_rand", "mixed_next"]
    assert schema.evaluation_of({"flip": {"original": "a", "shifted": "b"}}).contradicting_splits() == ["b"]


READERS = {  # the trainer's readers of the section, and the functions in them that read it
    "train/evaluate.py": ("evaluate_all", "background_reliance"),
    "train/splits.py": ("declared_test_splits",),
    "train/study/report.py": ("contradicting_splits", "write_study_report"),
}


def test_the_trainer_reads_the_section_only_through_the_contracts_parser() -> None:
    """No module of train/ names the key ``evaluation`` (it reaches the section through
    ``schema.parse_evaluation``/``evaluation_of``), and no function that reads it guesses its shape with
    ``isinstance``."""
    for path in sorted((ROOT / "train").rglob("*.py")):
        tree = ast.parse(path.read_text())
        named = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "evaluation"]
        assert named == [], f"{path.relative_to(ROOT)}:{named}: the evaluation section read by key"
    for rel, functions in READERS.items():
        tree = ast.parse((ROOT / rel).read_text())
        found = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in functions}
        assert sorted(found) == sorted(functions), rel
        for name, function in found.items():
            guesses = [
                n.lineno
                for n in ast.walk(function)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "isinstance"
            ]
            assert guesses == [], f"{rel}:{guesses}: {name} guesses a shape with isinstance"
        assert "parse_evaluation" in (ROOT / rel).read_text() or "evaluation_of" in (ROOT / rel).read_text(), rel
