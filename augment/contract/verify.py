"""The check of ``augment verify`` (and ``train fit --verify``): recompute every checksum and decode every sample of a
build.

Checks, per shard listed in the manifest: the file exists as a regular file inside the build (a FIFO, a device or
a link out of the build is not opened), its size and then its sha256 match (a file of another size is not hashed),
it reads as a tar, its record count matches, and every record meets ``schema.RecordCheck``, the rules the trainer
applies too (fields, labels, groups, sizes, image headers), and decodes. Keys must be unique across the build,
per-class counts must match the manifest, and no stray shard or temp file may sit next to the listed ones. Every
problem that can be reached is reported: a bad sample does not hide the ones after it; only a shard that cannot be
read on (truncated, a corrupt header, a member reaching past its end) ends its own check.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from augment.contract import encode, schema
from augment.contract.files import UnsafeFile, open_regular
from augment.contract.shards import Limits, ShardError, iter_records, sha256_file

REBUILD = "rebuild it with `augment build` (its command with --overwrite replaces it)"


def shape_problem(manifest: dict[str, Any]) -> str | None:
    """What of the manifest's shape ``info``, ``verify`` and ``preview`` rely on, beyond ``schema.check_structure``,
    is missing or of the wrong type (as ``key: what``), or None. Whether the methods are ones of this version of
    augment is augment's to check (``augment.verify.shape_problem``)."""
    methods, tool = manifest["methods"], manifest.get("tool")
    checks = [
        ("image_size", manifest.get("image_size"), int),
        ("command", manifest.get("command"), str),
        ("tool", tool, dict),
        ("tool.version", tool.get("version") if isinstance(tool, dict) else None, str),
        ("dataset.name", manifest["dataset"].get("name"), str),
        ("dataset.fingerprint", manifest["dataset"].get("fingerprint"), str),
        ("methods.cf", methods.get("cf"), list),
        ("methods.f", methods.get("f"), list),
        ("methods.copies", methods.get("copies"), int),
        *((f"splits.{s}.fields", info.get("fields"), list) for s, info in manifest["splits"].items()),
    ]
    names = {int: "an int", str: "a string", list: "a list", dict: "an object"}
    for key, value, kind in checks:
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key} is missing or not {names[kind]}"
    if not manifest["splits"]:
        return "splits is empty"
    lists = [
        ("dataset.classes", manifest["dataset"]["classes"]),
        ("methods.cf", methods["cf"]),
        ("methods.f", methods["f"]),
        *((f"splits.{s}.fields", i["fields"]) for s, i in manifest["splits"].items()),
    ]
    for key, values in lists:
        if not all(isinstance(v, str) for v in values):
            return f"{key} holds a value that is not a string"
    return None


def check_record(
    key: str, fields: dict[str, bytes], split: str, manifest: dict[str, Any], rules: schema.RecordCheck | None = None
) -> Iterator[str]:
    """Problems of one record (as messages without the file name): ``schema.RecordCheck``'s, the trainer's rules,
    then every image that passed them decoded."""
    found = (rules or schema.RecordCheck(manifest, split)).inspect(key, fields)
    yield from (f"sample {key!r}: {p}" for p in found.problems)
    for name in found.images:
        decode = encode.decode_mask if name == schema.MASK else encode.decode_image
        try:
            decode(fields[name])
        except Exception as e:  # any decoder failure is a finding, not a crash (pyproject.toml: BLE001 here)
            yield f"sample {key!r}: field {name!r} does not decode ({type(e).__name__}: {e})"


def verify(
    out: Path, progress: bool = True, shape: Callable[[dict[str, Any]], str | None] = shape_problem
) -> tuple[list[str], int]:
    """All problems found in the build at ``out`` (empty = valid) and the number of samples read; ``shape`` finds
    what is wrong with the manifest's shape (None: nothing), before any shard is read."""
    out = Path(out)
    try:
        manifest = schema.read_manifest(out)
    except (OSError, ValueError) as e:
        return [str(e)], 0
    if (problem := shape(manifest)) is not None:
        return [f"{out / schema.MANIFEST}: {problem}; {REBUILD}"], 0
    problems: list[str] = []
    seen: set[str] = set()
    listed = {out / s["path"] for split in manifest["splits"].values() for s in split["shards"]}
    for stray in sorted(set(out.glob("*/shard-*.tar*")) - listed):
        problems.append(f"{stray}: not listed in {schema.MANIFEST} (a leftover of an interrupted or other build?)")
    total = sum(s["num_samples"] for s in manifest["splits"].values())
    limits = Limits.for_image_size(manifest["image_size"])  # shards may come from strangers: bound them
    read = 0
    refused: list[ShardError] = []

    def refuse(error: ShardError) -> None:
        """A bad sample: report it and read on (only a shard that cannot be read on stops its check)."""
        refused.append(error)
        problems.append(str(error))

    with tqdm(total=total, unit="img", desc="augment verify", disable=not progress) as bar:
        for split, info in manifest["splits"].items():
            per_class: Counter[str] = Counter()
            rules = schema.RecordCheck(manifest, split, limits.pixels)
            for shard in info["shards"]:
                path = out / shard["path"]
                found, readable = file_problems(path, out, shard["bytes"], shard["sha256"])
                problems.extend(found)
                if not readable:
                    continue
                count, before = 0, len(refused)
                try:
                    for key, fields in iter_records(path, limits=limits, on_error=refuse, inside=out):
                        count += 1
                        if key in seen:
                            problems.append(f"{path}: sample {key!r} appears more than once in the build")
                        seen.add(key)
                        problems.extend(f"{path}: {p}" for p in check_record(key, fields, split, manifest, rules))
                        cls = manifest["dataset"]["classes"]
                        try:
                            index = schema.parse_label(fields.get(schema.LABEL, b""))
                        except ValueError:
                            index = -1
                        label = fields.get(schema.LABEL, b"")[:20].decode(errors="replace")
                        per_class[cls[index] if 0 <= index < len(cls) else label] += 1
                        bar.update()
                except ShardError as e:  # the shard cannot be read on
                    problems.append(str(e))
                read += count
                count += len(refused) - before  # refused samples are in the file too (reported as they came)
                if count != shard["num_samples"]:
                    problems.append(f"{path}: {count} samples, manifest says {shard['num_samples']}")
            if dict(per_class) != {c: n for c, n in info["per_class"].items() if n}:
                problems.append(f"{out / split}: per-class counts {dict(per_class)} differ from the manifest")
            counted = sum(per_class.values())
            if counted != info["num_samples"] or sum(s["num_samples"] for s in info["shards"]) != counted:
                problems.append(f"{out / split}: {counted} samples read, manifest says {info['num_samples']}")
    if read != manifest["num_samples"]:
        problems.append(f"{out / schema.MANIFEST}: {read} samples read, num_samples says {manifest['num_samples']}")
    return problems, read


def file_problems(path: Path, out: Path, size: int, sha256: str) -> tuple[list[str], bool]:
    """What is wrong with the shard file ``path`` of the build ``out`` against its manifest entry, and whether its
    records can be read: missing, not a regular file inside the build (neither is read), of another size (then it
    is not hashed: a sparse file of 100 GB would be read whole to learn what its size already says) or of another
    sha256."""
    try:
        with open_regular(path, inside=out) as fh:
            actual = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        return [f"{path}: missing shard (listed in {schema.MANIFEST})"], False
    except UnsafeFile as e:
        return [f"{path}: {e}"], False
    except OSError as e:
        return [f"{path}: unreadable ({e.strerror or e})"], False
    if actual != size:
        return [
            f"{path}: {actual} bytes, manifest says {size} (truncated?)",
            f"{path}: sha256 mismatch (not hashed: a file of another size cannot match)",
        ], True
    try:
        if sha256_file(path, inside=out) != sha256:
            return [f"{path}: sha256 mismatch (file changed after the build)"], True
    except OSError as e:
        return [f"{path}: unreadable ({e.strerror or e})"], False
    return [], True
