"""Seeded fuzzing of real shards through the three readers of a build: ``augment verify``, ``augment preview`` and
the trainer's ``train.data.ShardStream`` (strict, and tolerant with a bad-sample budget).

Each case changes one shard of a tiny build (byte flips in a member's data or header, a truncation, two members
swapped in place or in content, a member duplicated, renamed or dropped, a pickle planted) and feeds the build to
one reader. A case must end in one of two ways:

- a named error: the reader's own exception type (``train.data.DataError``) with a one-line message naming the
  shard, or a CLI exit code 1/2 whose output names the file and holds no traceback;
- an exact, accounted read: verify passes only an unchanged shard; the strict trainer yields every sample of an
  unchanged split; the tolerant trainer's samples plus its ledger's count are the split's ``num_samples``, and a
  changed shard is in its ledger; preview (a picture, not a check) may draw a changed shard.

Never an unexpected exception type (a traceback), a hang (each reader run has ``GUARD_S`` seconds) or executed code
(every planted pickle makes a marker folder when unpickled; the marker must never appear).

A failing test lists every failing case by its outcome, each with the mutation that reproduces it:
``mutate(kind, index, ...)`` is a pure function of (kind, index) and the build.

``test_fuzz_hostile`` (issue #29) makes builds that are invalid while their checksums agree, each way in turn with
seeded values (``hostile_case(kind, index, ...)``): a manifest's numbers and sections (image_size, a split's or a
shard's count, a shard listed twice, shifted_tests, dataset.params.evaluation), a rewritten record whose manifest
entry matches it (a cls like ``0_1``, a group past int32, images larger than the build's, a PNG whose zTXt
decompresses past 1 MiB, a duplicate key, a stray field, has_object or label changed), and special files (a FIFO, a
link to ``/dev/zero`` or out of the build, a sparse shard gigabytes longer than its entry, a split folder linked
out, a folder). Verify must refuse each, and the strict trainer stop on each, with one line naming the file; the
tolerant trainer stops so or accounts for every sample with the file in its ledger.

Failing when this file was written (left failing, not xfail, until the trainer is fixed): the tolerant trainer's
accounting, ``test_fuzz[trainer-swap-members|duplicate|rename]``. A mutation that splits a record into fragments
(its key seen again after another key) or adds a member under a key of its own makes the ledger count each
fragment, and each bad member name, as a lost sample, so yielded + ledger.count exceeds the manifest's count; e.g.
``duplicate#1``: ``val_000004.json`` copied into the record before it, every real sample still yields (6 of 6),
and the ledger counts 1 more for the stray ``val_000004`` fragment (KeyError 'cls').
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import tarfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import train.data
from augment.cli import app

KINDS = [
    "flip-data",
    "flip-header",
    "truncate",
    "swap-members",
    "swap-contents",
    "duplicate",
    "rename",
    "drop",
    "plant",
]
CASES = 24  # per kind and reader: 216 mutated builds, each read by the 3 readers (the trainer twice)
GUARD_S = 20.0  # one reader run on one case; the slowest takes well under a second
BLOCK = 512
TOLERANT_BUDGET = 1000  # bad samples the tolerant trainer may skip: more than the build holds
FIELDS = ["jpg", "cls", "json", "mask.png", "cf.tile.jpg", "f.shuffle.0.jpg"]
PICKLE_NAMES = ["pyd", "pickle", "PYD", "pth", "jpg.pyd", "mask.pyd"]
runner = CliRunner()


class Hang(BaseException):
    """A reader ran past ``GUARD_S``; a BaseException, so that no reader's ``except Exception`` swallows it."""


class Plant:
    """Unpickling it creates the folder ``marker``: proof that a reader ran code from the shard."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@dataclass
class Build:
    root: Path  # the working copy the readers read; each case writes one shard into it and restores it after
    pristine: dict[str, bytes]  # shard path (relative) -> its bytes as built
    manifest: dict[str, Any]
    marker: Path
    png: Path

    def split_of(self, rel: str) -> str:
        return rel.split("/")[0]

    def num_samples(self, split: str) -> int:
        return self.manifest["splits"][split]["num_samples"]


@dataclass
class Case:
    kind: str
    index: int
    shard: str  # relative path of the changed shard
    what: str  # the mutation, in words
    data: bytes  # the changed shard's bytes
    changed: bool  # whether they differ from the shard as built

    def __str__(self) -> str:
        return f"{self.kind}#{self.index} {self.shard}: {self.what}"


@dataclass
class Member:
    info: tarfile.TarInfo
    header: bytes  # its raw header block(s), kept when neither name nor size change
    data: bytes

    def block(self) -> bytes:
        return self.header + self.data + b"\0" * (-len(self.data) % BLOCK)

    def renamed(self, name: str) -> Member:
        return self.rebuilt(name, self.data)

    def with_data(self, data: bytes) -> Member:
        return self.rebuilt(self.info.name, data)

    def rebuilt(self, name: str, data: bytes) -> Member:
        info = copy.copy(self.info)
        info.name, info.size = name, len(data)
        return Member(info, info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"), data)


def parse(raw: bytes) -> tuple[list[Member], bytes]:
    """A shard as built (USTAR, one header block per member): its members and the bytes after the last one."""
    members, end = [], 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for m in tar.getmembers():
            end = m.offset_data + m.size + (-m.size % BLOCK)
            members.append(Member(m, raw[m.offset : m.offset_data], raw[m.offset_data : m.offset_data + m.size]))
    return members, raw[end:]


def join(members: list[Member], trailer: bytes) -> bytes:
    return b"".join(m.block() for m in members) + trailer


def offsets(members: list[Member]) -> list[int]:
    """Where each member's header starts in the joined shard."""
    out, at = [], 0
    for m in members:
        out.append(at)
        at += len(m.block())
    return out


def mutate(kind: str, index: int, build: Build) -> Case:
    """Case ``index`` of ``kind``: a pure function of both and the build."""
    rng = random.Random(f"fuzz:{kind}:{index}")
    rel = rng.choice(sorted(build.pristine))
    raw = build.pristine[rel]
    members, trailer = parse(raw)
    i = rng.randrange(len(members))
    name = members[i].info.name
    key = name.partition(".")[0]
    if kind in ("flip-data", "flip-header"):
        data, where = bytearray(raw), []
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(members))
            start = offsets(members)[j]
            if kind == "flip-header":
                pos = start + rng.randrange(BLOCK)
            elif members[j].data:
                pos = start + len(members[j].header) + rng.randrange(len(members[j].data))
            else:
                pos = len(raw) - 1 - rng.randrange(len(trailer))  # an empty member: the padding after the end
            bit = 1 << rng.randrange(8)
            data[pos] ^= bit
            where.append(f"byte {pos} ^= {bit:#04x} ({members[j].info.name})")
        return finish(kind, index, rel, "flip " + ", ".join(where), bytes(data), raw)
    if kind == "truncate":
        cut = rng.randrange(len(raw) // BLOCK) * BLOCK if rng.random() < 0.5 else rng.randrange(len(raw))
        return finish(kind, index, rel, f"cut to {cut} of {len(raw)} bytes", raw[:cut], raw)
    if kind == "swap-members":
        j = rng.choice([j for j in range(len(members)) if j != i])
        members[i], members[j] = members[j], members[i]
        return finish(
            kind,
            index,
            rel,
            f"members {i} ({name}) and {j} ({members[i].info.name}) swap places",
            join(members, trailer),
            raw,
        )
    if kind == "swap-contents":
        j = rng.choice([j for j in range(len(members)) if j != i])
        a, b = members[i], members[j]
        members[i], members[j] = a.with_data(b.data), b.with_data(a.data)
        return finish(kind, index, rel, f"{a.info.name} and {b.info.name} swap contents", join(members, trailer), raw)
    if kind == "duplicate":
        j = rng.choice([i + 1, rng.randrange(len(members) + 1)])
        members.insert(j, members[i])
        return finish(kind, index, rel, f"{name} copied to position {j}", join(members, trailer), raw)
    if kind == "rename":
        field_ = name.partition(".")[2]
        other_keys = sorted({m.info.name.partition(".")[0] for m in members} - {key})
        choices = [
            f"{rng.choice(other_keys)}.{field_}" if other_keys else f"zz_000999.{field_}",  # into another record
            f"zz_000999.{field_}",  # a record of its own
            f"{key}.{rng.choice([f for f in FIELDS if f != field_])}",  # another field of its record
            f"{key}.{field_.upper()}",
            f"{key}.npy",
            f"../{name}",
            f"sub/{name}",
            key,
            f"{key}..{field_}",
            f"{key}.\x01{field_}",
            f"{key}.{field_}.gz",
        ]
        new = rng.choice(choices)
        members[i] = members[i].renamed(new)
        return finish(kind, index, rel, f"{name} renamed {new!r}", join(members, trailer), raw)
    if kind == "drop":
        del members[i]
        return finish(kind, index, rel, f"{name} dropped", join(members, trailer), raw)
    if kind == "plant":
        payload = pickle.dumps(Plant(build.marker))
        if rng.random() < 0.3:  # a real field holds the pickle
            members[i] = members[i].with_data(payload)
            return finish(kind, index, rel, f"{name} holds a pickle", join(members, trailer), raw)
        planted = f"{key}.{rng.choice(PICKLE_NAMES)}"
        j = max(k for k, m in enumerate(members) if m.info.name.partition(".")[0] == key) + 1
        info = tarfile.TarInfo(planted)
        info.size, info.mode, info.uname, info.gname = len(payload), 0o444, "augment", "augment"
        members.insert(j, Member(info, info.tobuf(tarfile.USTAR_FORMAT), payload))
        return finish(kind, index, rel, f"pickle {planted!r} added at position {j}", join(members, trailer), raw)
    raise AssertionError(kind)


def finish(kind: str, index: int, rel: str, what: str, data: bytes, raw: bytes) -> Case:
    return Case(kind, index, rel, what, data, changed=data != raw)


@contextlib.contextmanager
def guard(seconds: float = GUARD_S) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise Hang(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- the readers: each returns None (an accepted outcome) or why the case fails, in one line --------------------


def judge_cli(result: Any, case: Case, names: list[str], must_fail: bool | None) -> str | None:
    """A CLI run: exit 0, or exit 1/2 with a message naming one of ``names`` and no traceback. ``must_fail``:
    True = must exit 1/2 (the shard changed), False = must exit 0, None = either."""
    output = result.output  # stdout and stderr, as the user sees them
    error = result.exception
    if error is not None and not isinstance(error, SystemExit):
        return f"traceback: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if "Traceback" in output:
        return "traceback in output: " + output.strip().splitlines()[-1]
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if result.exit_code == 0:
        return "exit 0 on a changed shard" if must_fail else None
    if result.exit_code not in (1, 2):
        return f"exit {result.exit_code}: {last}"
    if must_fail is False:
        return f"exit {result.exit_code} on an unchanged shard: {last}"
    if not any(n in output for n in names):
        return f"error names no file: {last}"
    return None


def read_verify(build: Build, case: Case) -> str | None:
    result = runner.invoke(app, ["verify", str(build.root), "-q"], prog_name="augment")
    return judge_cli(result, case, [case.shard], must_fail=case.changed)


def read_preview(build: Build, case: Case) -> str | None:
    split = build.split_of(case.shard)
    build.png.unlink(missing_ok=True)
    args = [
        "preview",
        str(build.root),
        "--out",
        str(build.png),
        "--split",
        split,
        "--rows",
        str(build.num_samples(split)),
        "--cell",
        "16",
    ]  # rows: every record is read
    result = runner.invoke(app, args, prog_name="augment")
    problem = judge_cli(result, case, [str(build.root)], must_fail=None)
    if problem is None and result.exit_code == 0 and not build.png.is_file():
        return "exit 0 without a contact sheet"
    return problem


def trainer_fields(split: str) -> train.data.Fields:
    return train.data.Fields(cf=["tile"], f=["shuffle"]) if split == "train" else train.data.Fields()


def stream(build: Build, split: str, allowed: int) -> train.data.ShardStream:
    """The trainer's evaluation stream of ``split``; ``allowed``: bad samples it may skip (0 = strict)."""
    args = (build.root, build.manifest, split, trainer_fields(split))
    if not allowed:
        return train.data.ShardStream(*args, train=False, crop=28)
    params = inspect.signature(train.data.ShardStream).parameters
    if "max_bad_samples" in params:
        return train.data.ShardStream(*args, train=False, crop=28, max_bad_samples=allowed)
    from train.ledger import Ledger

    return train.data.ShardStream(*args, train=False, crop=28, ledger=Ledger(allowed=allowed, root=str(build.root)))


def named(error: BaseException, case: Case) -> str | None:
    text = str(error)
    if "\n" in text.strip():
        return f"{type(error).__name__} of {len(text.splitlines())} lines: {text.splitlines()[0]}"
    if case.shard not in text:
        return f"{type(error).__name__} names no shard: {text}"
    return None


def read_trainer(build: Build, case: Case) -> str | None:
    split = build.split_of(case.shard)
    expected = build.num_samples(split)
    problems = []
    for allowed in (0, TOLERANT_BUDGET):
        mode = "strict" if not allowed else "tolerant"
        s = stream(build, split, allowed)
        got = 0
        try:
            for _ in s:
                got += 1
        except train.data.DataError as e:
            if not case.changed:
                problems.append(f"{mode}: DataError on an unchanged shard: {e}")
            elif (why := named(e, case)) is not None:
                problems.append(f"{mode}: {why}")
            continue
        except Exception as e:  # any other type is the finding (pyproject.toml: BLE001 here)
            problems.append(f"{mode}: traceback: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        ledger = s.ledger
        if not allowed:
            if case.changed:
                problems.append(f"{mode}: no DataError on a changed shard ({got} of {expected} samples yielded)")
            elif got != expected:
                problems.append(f"{mode}: {got} of {expected} samples from an unchanged split")
        elif got + ledger.count != expected:
            problems.append(f"{mode}: {got} yielded + {ledger.count} in the ledger != {expected} in the manifest")
        elif case.changed and not any(case.shard in str(item.get("shard")) for item in ledger.items.values()):
            problems.append(f"{mode}: the changed shard is not in the ledger ({got} of {expected} yielded)")
    return "; ".join(problems) or None


READERS: dict[str, Callable[[Build, Case], str | None]] = {
    "verify": read_verify,
    "preview": read_preview,
    "trainer": read_trainer,
}
TRAINER_READY = hasattr(train.data, "DataError")  # the trainer's integrity checks; until they land, no trainer cases


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    base = tmp_path_factory.mktemp("fuzz")
    built = base / "built"
    args = [
        "build",
        "--dataset",
        "synthetic",
        "--size",
        "30",
        "--image-size",
        "32",
        "--infill",
        "tile",
        "--factual",
        "shuffle",
        "--shard-size",
        "4",
        "--workers",
        "1",
        "--out",
        str(built),
        "-q",
    ]
    result = runner.invoke(app, args, prog_name="augment")
    assert result.exit_code == 0, result.output
    root = base / "work"
    shutil.copytree(built, root)
    manifest = train.data.read_manifest(root)
    pristine = {s["path"]: (root / s["path"]).read_bytes() for v in manifest["splits"].values() for s in v["shards"]}
    return Build(root, pristine, manifest, base / "marker", base / "sheet.png")


def run_case(build: Build, case: Case, reader: str) -> str | None:
    path = build.root / case.shard
    path.write_bytes(case.data)
    try:
        with guard():
            problem = READERS[reader](build, case)
    except Hang as e:
        problem = f"hang: {e}"
    finally:
        path.write_bytes(build.pristine[case.shard])
    if build.marker.exists():
        build.marker.rmdir()
        problem = "executed planted code" + (f"; {problem}" if problem else "")
    return problem


def summary(failures: list[tuple[Case, str]], cases: int) -> str:
    """Failures grouped by outcome, each with its cases (the first few)."""
    groups: dict[str, list[Case]] = defaultdict(list)
    for case, problem in failures:
        groups[problem].append(case)
    failing = len({str(case) for case, _ in failures})  # a hostile case fails once per reader it fails
    lines = [f"{failing} of {cases} cases fail ({len(failures)} failures), {len(groups)} distinct outcomes:"]
    for problem, cases_ in sorted(groups.items(), key=lambda g: -len(g[1])):
        lines.append(f"- {problem}  [{len(cases_)} case(s)]")
        lines.extend(f"    {c}" for c in cases_[:3])
    return "\n".join(lines)


def test_pristine_build_reads_clean(build):
    """Every reader accepts the build as built: the harness itself finds no problem where there is none."""
    firsts = {build.split_of(rel): rel for rel in sorted(build.pristine, reverse=True)}  # one shard per split
    for rel in sorted(firsts.values()):
        case = Case("none", 0, rel, "unchanged", build.pristine[rel], changed=False)
        for reader in READERS if TRAINER_READY else ("verify", "preview"):
            assert run_case(build, case, reader) is None, (reader, rel)


def test_mutations_change_bytes_and_plants_would_run(build, tmp_path):
    """The mutations do change shards, and the planted payload does run code when unpickled (so that its marker
    would show a reader that unpickles)."""
    changed = sum(mutate(kind, i, build).changed for kind in KINDS for i in range(CASES))
    assert changed >= 0.95 * len(KINDS) * CASES
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Plant(marker)))
    assert marker.is_dir()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", list(READERS))
def test_fuzz(build, reader, kind):
    if reader == "trainer" and not TRAINER_READY:
        pytest.skip("train.data has no DataError yet: the trainer's integrity checks have not landed")
    failures = []
    for index in range(CASES):
        case = mutate(kind, index, build)
        if (problem := run_case(build, case, reader)) is not None:
            failures.append((case, problem))
    assert not failures, summary(failures, CASES)


# ---- hostile builds: a stranger's manifest, records that checksum fine, special files (issue #29) ----------------
#
# Each case copies the build, changes it in one way that leaves it invalid while every checksum that can still agree
# does (the manifest entry of a rewritten shard is updated), and reads the copy with every reader. Verify must exit
# 1 (2 when the folder is no longer a build) naming the changed file; the strict trainer must stop with one line
# naming it; the tolerant trainer must stop so, or account for every sample with the changed file in its ledger;
# preview may draw or fail naming the build. No reader may hang (``GUARD_S``) or crash.

HOSTILE = ["manifest", "record", "special"]
HOSTILE_CASES = 8  # per kind, each way of it in turn: 24 hostile builds, each read by the 3 readers (trainer twice)


@dataclass
class Hostile:
    kind: str
    index: int
    split: str  # the split the trainer reads
    names: list[str]  # relative paths of which an error must name one
    what: str
    apply: Callable[[Path], None]  # changes a copy of the build in place

    def __str__(self) -> str:
        return f"{self.kind}#{self.index}: {self.what}"


def hostile_case(kind: str, index: int, build: Build) -> Hostile:
    """Hostile case ``index`` of ``kind``: a pure function of both and the build."""
    rng = random.Random(f"hostile:{kind}:{index}")
    manifest = build.manifest
    rel = rng.choice(sorted(build.pristine))
    split = build.split_of(rel)
    if kind == "manifest":
        return manifest_case(kind, index, rng, manifest, split)
    if kind == "record":
        return record_case(kind, index, rng, build, rel)
    return special_case(kind, index, rng, rel)


def edit_manifest(root: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def manifest_case(kind: str, index: int, rng: random.Random, manifest: dict[str, Any], split: str) -> Hostile:
    info = manifest["splits"][split]
    n = info["num_samples"]
    choice = index % 6  # every way in turn; the rng draws the values
    if choice == 0:
        size = rng.choice(
            [
                rng.randint(6325, 10**9),
                0,
                -rng.randint(1, 99),
                rng.randint(33, 6324),
                rng.randint(1, 31),
                "32",
                32.0,
                True,
            ]
        )
        what, edit = f"image_size {size!r}", lambda m: m.update(image_size=size)
    elif choice == 1:
        count = rng.choice([n // 2, n * 10 ** rng.randint(1, 12), 0])
        what, edit = f"splits.{split}.num_samples {count}", lambda m: m["splits"][split].update(num_samples=count)
    elif choice == 2:
        j = rng.randrange(len(info["shards"]))

        def edit(m: dict[str, Any]) -> None:
            m["splits"][split]["shards"].append(dict(m["splits"][split]["shards"][j]))
            m["splits"][split]["num_samples"] += m["splits"][split]["shards"][j]["num_samples"]

        what = f"shard {j} of {split} listed twice"
    elif choice == 3:
        section = rng.choice(
            [
                [],
                "x",
                {"variants": {}, "skipped": {}, "pairs": {split: {"original": split}}},
                {"variants": 1, "skipped": {}, "pairs": {}},
                {"variants": {}, "skipped": {}, "pairs": {"nope": {}}},
            ]
        )
        what, edit = f"shifted_tests {section!r}", lambda m: m.update(shifted_tests=section)
    elif choice == 4:
        value = rng.choice([[], "x", {"bg_gap": ["a"]}, {"flip": {"original": 1, "shifted": "x"}}])
        what, edit = f"dataset.params.evaluation {value!r}", lambda m: m["dataset"]["params"].update(evaluation=value)
    else:
        j = rng.randrange(len(info["shards"]))
        count = rng.choice([0, 1, 10 ** rng.randint(1, 12)]) + info["shards"][j]["num_samples"] * rng.randint(2, 3)

        def edit(m: dict[str, Any]) -> None:
            entry = m["splits"][split]["shards"][j]
            m["splits"][split]["num_samples"] += count - entry["num_samples"]
            entry["num_samples"] = count

        what = f"shard {j} of {split} says {count} samples, and its split agrees"
    return Hostile(kind, index, split, ["manifest.json", f"{split}/"], what, lambda root: edit_manifest(root, edit))


def zTXt(png: bytes, text_bytes: int) -> bytes:
    """``png`` with a zTXt chunk after its IHDR that decompresses to ``text_bytes`` bytes."""
    body = b"zTXtComment\0\0" + zlib.compress(b"\0" * text_bytes, 9)
    return png[:33] + struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


def record_case(kind: str, index: int, rng: random.Random, build: Build, rel: str) -> Hostile:
    from augment.contract import encode
    from augment.contract.shards import iter_records

    split = build.split_of(rel)
    records = [{"__key__": k, **f} for k, f in iter_records(build.root / rel)]  # as built: run_case restores it
    i = rng.randrange(len(records))
    record, key = dict(records[i]), records[i]["__key__"]
    meta, label = json.loads(record["json"]), int(record["cls"])
    choice = index % 8
    if choice == 0:
        record["cls"] = rng.choice(
            [
                f"0_{label}",
                f"+{label}",
                f"{label}.0",
                f" {label}x",
                str(label + len(build.manifest["dataset"]["classes"])),
            ]
        ).encode()
        what = f"{key}.cls {record['cls']!r}"
    elif choice == 1:
        meta["group"] = rng.choice([10 ** rng.randint(10, 40), -rng.randint(2, 9), 1.5, "3", True, [1]])
        what = f"{key} json group {meta['group']!r}"
    elif choice == 2:
        size = 32 + rng.randint(1, 32)
        for name in [n for n in record if n.endswith("jpg")]:
            record[name] = encode.encode_jpeg(np.full((size, size, 3), rng.randrange(256), np.uint8))
        if "mask.png" in record:
            record["mask.png"] = encode.encode_mask(np.ones((size, size), bool))
        meta.update(width=size, height=size)
        what = f"{key} re-encoded at {size} x {size}, its json saying so"
    elif choice == 3 and "mask.png" in record:
        record["mask.png"] = zTXt(record["mask.png"], rng.randint(1_100_000, 4_000_000))
        what = f"{key}.mask.png with a zTXt of over 1 MiB"
    elif choice == 4:
        twin = rng.choice([r["__key__"] for r in records if r["__key__"] != key])  # every shard holds 2 or more
        record["__key__"], meta["key"] = twin, twin
        what = f"{key} renamed {twin!r}, a key of the same split"
    elif choice == 5:
        record[rng.choice(["npy", "txt", "jpg.1"])] = b"extra"
        what = f"{key} with an extra field"
    elif choice == 6:
        meta["has_object"] = not meta["has_object"]
        what = f"{key} json has_object flipped"
    else:
        meta["label"] = (label + 1) % len(build.manifest["dataset"]["classes"])
        what = f"{key} json label {meta['label']} for cls {label}"
    record["json"] = json.dumps(meta).encode()
    records[i] = record

    def apply(root: Path) -> None:
        from augment.contract.shards import write_shard

        info = write_shard(root / rel, records)
        edit_manifest(root, lambda m: next(s for s in m["splits"][split]["shards"] if s["path"] == rel).update(info))

    return Hostile(kind, index, split, [rel], what, apply)


def special_case(kind: str, index: int, rng: random.Random, rel: str) -> Hostile:
    split = rel.split("/")[0]
    choice = index % 6
    if choice == 0:
        what, apply = "a FIFO", lambda root: ((root / rel).unlink(), os.mkfifo(root / rel))
    elif choice == 1:
        what, apply = "a link to /dev/zero", lambda root: ((root / rel).unlink(), (root / rel).symlink_to("/dev/zero"))
    elif choice == 2:

        def apply(root: Path) -> None:
            outside = root.parent / f"outside-{index}.tar"
            shutil.copyfile(root / rel, outside)
            (root / rel).unlink()
            (root / rel).symlink_to(outside)

        what = "a link to an identical copy outside the build"
    elif choice == 3:
        extra = rng.randint(1, 100) << 30
        what = f"sparse, {extra >> 30} GiB longer"

        def apply(root: Path) -> None:
            os.truncate(root / rel, (root / rel).stat().st_size + extra)

    elif choice == 4:

        def apply(root: Path) -> None:
            outside = root.parent / f"outside-{index}"
            shutil.move(root / split, outside)
            (root / split).symlink_to(outside, target_is_directory=True)

        what = f"the split folder {split}/ a link out of the build"
        return Hostile(kind, index, split, [f"{split}/"], what, apply)  # any of its shards
    else:
        what, apply = "a folder", lambda root: ((root / rel).unlink(), (root / rel).mkdir())
    return Hostile(kind, index, split, [rel], what, apply)


def judge_hostile(build: Build, root: Path, case: Hostile, reader: str) -> str | None:
    """One reader on the hostile copy ``root``: None when it ended as the block above says, else why not."""
    names = [str(root / n) for n in case.names]
    if reader == "verify":
        result = runner.invoke(app, ["verify", str(root), "-q"], prog_name="augment")
        problem = judge_cli(result, None, names, must_fail=True)
        return None if problem is None or (result.exit_code == 2 and "not a build folder" in result.output) else problem
    if reader == "preview":
        png = root.parent / "sheet.png"
        args = ["preview", str(root), "--out", str(png), "--split", case.split, "--rows", "40", "--cell", "16"]
        return judge_cli(runner.invoke(app, args, prog_name="augment"), None, [str(root)], must_fail=None)
    problems = []
    for allowed in (0, TOLERANT_BUDGET):
        mode = "strict" if not allowed else "tolerant"
        got, stream_ = 0, None
        try:
            manifest = train.data.read_manifest(root)
            from train.ledger import Ledger

            stream_ = train.data.ShardStream(
                root,
                manifest,
                case.split,
                trainer_fields(case.split),
                train=False,
                crop=28,
                ledger=Ledger(allowed=allowed, root=str(root)),
            )
            for _ in stream_:
                got += 1
        except (ValueError, FileNotFoundError) as e:  # DataError is a ValueError: the CLI's one line
            text = str(e)
            if "\n" in text.strip() or not any(n in text for n in names):
                problems.append(f"{mode}: {type(e).__name__} not one line naming {case.names}: {text[:200]}")
            continue  # any other exception type is the finding: it fails the test with its traceback
        expected = manifest["splits"][case.split]["num_samples"]
        if not allowed:
            problems.append(f"{mode}: no error ({got} of {expected} samples yielded)")
        elif got + stream_.ledger.count != expected:
            problems.append(f"{mode}: {got} yielded + {stream_.ledger.count} in the ledger != {expected}")
        elif not any(any(n in str(item.get("shard")) for n in names) for item in stream_.ledger.items.values()):
            problems.append(f"{mode}: the changed file is not in the ledger ({got} of {expected} yielded)")
    return "; ".join(problems) or None


def run_hostile(build: Build, case: Hostile, base: Path) -> list[str]:
    """Every reader on a copy of the build changed by ``case``: the failures, one line each."""
    root = base / f"{case.kind}-{case.index}" / "build"
    shutil.copytree(build.root, root)
    case.apply(root)
    failures = []
    for reader in READERS:
        try:
            with guard():
                problem = judge_hostile(build, root, case, reader)
        except Hang as e:
            problem = f"hang: {e}"
        if problem is not None:
            failures.append(f"{reader}: {problem}")
    return failures


@pytest.mark.parametrize("kind", HOSTILE)
def test_fuzz_hostile(build, tmp_path, kind):
    failures = []
    for index in range(HOSTILE_CASES):
        case = hostile_case(kind, index, build)
        failures += [(case, problem) for problem in run_hostile(build, case, tmp_path)]
    assert not failures, summary(failures, HOSTILE_CASES)
