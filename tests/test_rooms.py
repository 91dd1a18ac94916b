"""The tests mirror the rooms of the project (issue #30): ``tests/contract/`` for the shard contract, ``tests/augment/``
for the build, ``tests/train/`` for the trainer, each file named after the behaviour it checks. At the top level stay
only the tests that span the project and the shared helpers, so a test dropped there is noticed here; and the folders
named after the packages never shadow them (``pythonpath`` in pyproject.toml puts the root first)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import augment
import train

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ROOMS = {"contract", "augment", "train"}
SPANNING = {
    "test_bench.py",
    "test_everyday_mistakes.py",
    "test_layout.py",
    "test_messages.py",
    "test_readme_read.py",
    "test_rooms.py",
    "test_settings.py",
}
HELPERS = {"conftest.py", "upstream.py", "tf_checkpoint.py", "bit_reference.py"}


def test_every_test_file_lives_in_its_room() -> None:
    top = {p.name for p in TESTS.glob("*.py")}
    assert top - SPANNING - HELPERS == set(), "a test at the top level: move it into tests/contract, augment or train"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders == ROOMS, f"tests/ holds {sorted(folders)}; the rooms are {sorted(ROOMS)}"
    for room in ROOMS:
        files = {p.name for p in (TESTS / room).rglob("*.py")}
        assert files, f"tests/{room} is empty"
        assert all(name.startswith("test_") for name in files), f"tests/{room}: a helper belongs at tests/"


def test_no_two_test_files_share_a_name() -> None:
    """pytest's default import mode imports each test file by its basename: a duplicate fails the collection."""
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []


def test_the_packages_are_the_real_ones_not_the_test_folders() -> None:
    assert Path(train.__file__).resolve() == ROOT / "train" / "__init__.py"
    assert Path(augment.__file__).resolve() == ROOT / "augment" / "__init__.py"
