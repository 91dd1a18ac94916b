"""The manifest's ``shifted_tests`` (``augment build --shifted-tests``), declared once in the contract
(``schema.ShiftedTests``): a build's section parses to it, a damaged one is refused in one line naming the key, and
the readers of a manifest reach the section only through the contract's parser, never by indexing it."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from augment.config import BuildConfig
from augment.contract import schema
from augment.runner.build import build
from augment.shifted_tests import VARIANTS

ROOT = Path(__file__).resolve().parents[2]
GONE = object()  # a key to delete rather than set
BASES = ("val", "original")  # synthetic's splits without CF/F images that it does not ship shifted itself


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict[str, Any]:
    """The manifest of a small synthetic build with --shifted-tests, as read back from its folder."""
    out = tmp_path_factory.mktemp("shifted") / "out"
    config = BuildConfig(dataset="synthetic", dataset_options={"size": 10}, image_size=32, shifted_tests=True)
    build(out, config, workers=1, progress=False)
    return schema.read_manifest(out)


def test_a_builds_section_parses_to_the_typed_object(manifest: dict[str, Any]) -> None:
    shifted = schema.parse_shifted_tests(manifest)
    assert isinstance(shifted, schema.ShiftedTests)
    assert shifted.variants == VARIANTS and shifted.skipped == {} and shifted.left_out == {}
    assert list(shifted.pairs) == list(BASES)  # build order
    for base in BASES:
        pair = shifted.pairs[base]
        assert pair.original == base
        assert pair.variants == {v: f"{base}.{v}" for v in VARIANTS}
        assert pair.bg_gap == schema.BgGap(f"{base}.mixed_same", f"{base}.mixed_rand")
        assert pair.background_reliance == schema.ShiftedReliance(base, (f"{base}.mixed_next", f"{base}.mixed_rand"))
    generated = {s for s in manifest["splits"] if "." in s}
    assert shifted.generated_splits() == generated and len(generated) == len(BASES) * len(VARIANTS)
    raw = manifest["shifted_tests"]
    assert shifted.pairs["val"].variants == raw["pairs"]["val"]["variants"]
    assert shifted.pairs["val"].variants is not raw["pairs"]["val"]["variants"]  # a copy, not the manifest's dict


def test_no_section_is_none_and_an_older_build_without_left_out_has_none(manifest: dict[str, Any]) -> None:
    assert schema.parse_shifted_tests({k: v for k, v in manifest.items() if k != "shifted_tests"}) is None
    older = copy.deepcopy(manifest)
    del older["shifted_tests"]["left_out"]
    assert schema.parse_shifted_tests(older).left_out == {}


def damaged(manifest: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``manifest`` whose ``shifted_tests`` has ``value`` at ``keys`` (deleted for ``GONE``)."""
    out = copy.deepcopy(manifest)
    parent = out
    for key in ("shifted_tests", *keys[:-1]):
        parent = parent[key]
    if value is GONE:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    return out


@pytest.mark.parametrize(
    ("keys", "value", "key"),
    [
        (("variants",), 1, ".variants"),
        (("skipped",), {"train": 1}, ".skipped"),
        (("left_out",), "val", ".left_out"),
        (("pairs",), GONE, ".pairs"),
        (("pairs", "val"), ["val.only_fg"], ".pairs"),
        (("pairs", "nope"), {}, ".pairs key 'nope'"),
        (("pairs", "val", "original"), "nope", ".pairs.val.original 'nope'"),
        (("pairs", "val", "variants"), ["val.only_fg"], ".pairs.val.variants"),
        (("pairs", "val", "variants", "only_fg"), "gone", ".pairs.val.variants.only_fg 'gone'"),
        (("pairs", "val", "bg_gap", "same"), 3, ".pairs.val.bg_gap"),
        (("pairs", "val", "bg_gap", "rand"), GONE, ".pairs.val.bg_gap.rand None"),
        (("pairs", "val", "background_reliance"), None, ".pairs.val.background_reliance"),
        (("pairs", "val", "background_reliance", "original"), GONE, ".pairs.val.background_reliance.original"),
        (("pairs", "val", "background_reliance", "shifted"), [], ".pairs.val.background_reliance.shifted"),
        (("pairs", "val", "background_reliance", "shifted"), "val.next", ".pairs.val.background_reliance.shifted"),
        (
            ("pairs", "val", "background_reliance", "shifted"),
            ["val.mixed_next", 2],
            ".pairs.val.background_reliance.shifted[1] 2",
        ),
    ],
)
def test_a_damaged_section_is_refused_in_one_line_naming_the_key(
    manifest: dict[str, Any], keys: tuple[str, ...], value: Any, key: str
) -> None:
    bad = damaged(manifest, keys, value)
    with pytest.raises(ValueError) as caught:
        schema.parse_shifted_tests(bad, "b/manifest.json")
    message = str(caught.value)
    prefix = f"b/manifest.json: shifted_tests{key}"
    assert "\n" not in message and message.startswith(prefix) and message[len(prefix)] in ": ", message
    with pytest.raises(ValueError) as checked:  # the manifest's check (every reader's) is the same parser
        schema.parse_manifest(json.dumps(bad).encode(), "b/manifest.json")
    assert str(checked.value) == message


def test_a_section_that_is_no_object_is_refused(manifest: dict[str, Any]) -> None:
    for section in (None, [], "pairs"):
        with pytest.raises(ValueError, match=r"^b/manifest.json: shifted_tests: expected an object"):
            schema.check_shifted_tests("b/manifest.json", {**manifest, "shifted_tests": section})


def indexed_section(tree: ast.AST) -> list[int]:
    """The lines where anything is read at ``shifted_tests`` by hand (``x["shifted_tests"]``,
    ``x.y.get("shifted_tests")``...), but the trainer's own ``results`` (results.json, not a manifest)."""

    def is_key(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value == "shifted_tests"

    def is_results(owner: ast.AST) -> bool:
        return isinstance(owner, ast.Name) and owner.id == "results"

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_key(node.slice) and not is_results(node.value):
            found.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if node.args and is_key(node.args[0]) and not is_results(node.func.value):
                found.append(node.lineno)
    return found


def test_the_guard_sees_a_read_by_key_on_any_name() -> None:
    code = 'a = plan.header.get("shifted_tests")\nb = header["shifted_tests"]\nc = results["shifted_tests"]\n'
    assert indexed_section(ast.parse(code)) == [1, 2]


def test_the_readers_reach_the_section_only_through_the_contracts_parser() -> None:
    """No module of ``train/`` or ``augment/`` but the contract's schema indexes a manifest at ``shifted_tests``:
    each reads ``schema.parse_shifted_tests``'s typed object."""
    paths = sorted([*(ROOT / "train").rglob("*.py"), *(ROOT / "augment").rglob("*.py")])
    for path in paths:
        if path == ROOT / "augment/contract/schema.py":
            continue
        lines = indexed_section(ast.parse(path.read_text()))
        assert lines == [], f"{path.relative_to(ROOT)}:{lines}: the shifted_tests section read by key"
