"""Which splits of a build are its test splits: the ones the summary columns of every report average (worst group,
mean saliency), which train.evaluate records in a run's results (``test_splits``), and the shifted test splits of
``augment build --shifted-tests``, which the reports show in a section of their own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from augment.contract.schema import Evaluation, ShiftedTests, evaluation_of

# The test splits of each dataset's build, by the split names its reader writes (augment/datasets/*.py), for runs
# whose results.json does not list them: the summary columns average over these and nothing else.
TEST_SPLIT_RULES = (
    ("in9, synthetic", ("original", "mixed_same", "mixed_rand", "mixed_next")),  # only_fg, no_fg, only_bg_*: probes
    ("waterbirds", ("test_original", "test_flip")),  # their union is `test`, counted once through them
    ("cct", ("cis_test", "trans_test")),  # cis_val, trans_val: validation sets
)


def declared_test_splits(
    splits: Iterable[str], val_split: str = "val", evaluation: Evaluation | Mapping[str, Any] | None = None
) -> list[str]:
    """The build's test splits, in build order: the splits the summary columns (worst group, mean saliency) average.

    Args:
        splits: the split names of the build (or of a run's results).
        val_split: the run's model-selection split, never a test split.
        evaluation: the manifest's ``dataset.params.evaluation``, parsed (``schema.parse_evaluation``) or as the
            manifest holds it (then parsed here, by the contract's parser). The splits it pairs up (IN-9's and
            synthetic's ``bg_gap`` and ``background_reliance``, Waterbirds' ``flip``) or lists (CCT's
            ``cis``/``trans``, less its ``*_val`` sets) are the test splits (``Evaluation.named_splits``). Without
            it, or when it names none of ``splits``, the first rule of ``TEST_SPLIT_RULES`` that matches a split
            name applies; else every split but train, val, ``val_split`` and ``*_val``.
    """
    splits = list(splits)
    named = evaluation_of(evaluation).named_splits()
    chosen = [s for s in splits if s in named and s != val_split and not s.endswith("_val")]
    for _, names in TEST_SPLIT_RULES:
        if chosen:
            break
        chosen = [s for s in splits if s in names]
    return chosen or [s for s in splits if s not in ("train", "val", val_split) and not s.endswith("_val")]


def generated_splits(shifted: ShiftedTests | None) -> set[str]:
    """The shifted test splits of ``augment build --shifted-tests``, from the manifest's ``shifted_tests`` parsed by
    ``schema.parse_shifted_tests`` (None: the build has none): reported in their own section, not as the dataset's
    splits."""
    return set() if shifted is None else shifted.generated_splits()


def run_generated_splits(results: Mapping[str, Any]) -> set[str]:
    """The same splits from a run's results, for a report that reads no manifest: the variant splits of each base
    in their ``shifted_tests.bases`` (train.evaluate's plain dict, not the manifest's section)."""
    bases = (results.get("shifted_tests") or {}).get("bases") or {}
    return {split for entry in bases.values() for split in entry.get("variants", {}).values()}
