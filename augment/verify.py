"""``augment verify``: the contract's check of a build (``augment.contract.verify``), with what only augment knows:
that the manifest's CF/F methods are ones of this version, and that each split's fields are the ones they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from augment import infill
from augment.contract import verify as contract
from augment.contract.verify import REBUILD, check_record, file_problems
from augment.runner.plan import record_fields

__all__ = ["REBUILD", "check_record", "fields_problem", "file_problems", "shape_problem", "verify"]


def shape_problem(manifest: dict[str, Any]) -> str | None:
    """``augment.contract.verify.shape_problem``, then methods this version does not know (as ``key: what``), or
    None."""
    if (problem := contract.shape_problem(manifest)) is not None:
        return problem
    methods = manifest["methods"]
    for role in (infill.CF, infill.F):
        if unknown := [m for m in methods[role] if m not in infill.names(role)]:
            return (
                f"methods.{role} lists {', '.join(map(repr, unknown))}, not {role.upper()} methods of this version "
                f"(it has {', '.join(infill.names(role))})"
            )
    return None


def fields_problem(manifest: dict[str, Any]) -> str | None:
    """``shape_problem``, then a split whose fields (from which every reader takes a record's) are not those the
    manifest's methods make, or None."""
    if (problem := shape_problem(manifest)) is not None:
        return problem
    methods = manifest["methods"]
    for split, info in manifest["splits"].items():
        made = record_fields(True, info["augmented"], methods["cf"], methods["f"], methods["copies"])
        if info["fields"] != made:
            return f"splits.{split}.fields {info['fields']} are not those its methods make ({made})"
    return None


def verify(out: Path, progress: bool = True) -> tuple[list[str], int]:
    """All problems found in the build at ``out`` (empty = valid) and the number of samples read."""
    return contract.verify(out, progress, fields_problem)
