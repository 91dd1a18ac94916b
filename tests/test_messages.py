"""Errors are one line on stderr naming the file or sample and the fix, never a traceback; exit codes follow one rule
(1 = a check failed, 2 = a usage error, 130 = interrupted); `augment verify` reports every problem it can reach."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from augment import infill
from augment.cli import app
from augment.contract import shards
from augment.contract.cli_errors import EXIT_CODES, OneLineErrors
from augment.contract.shards import iter_records

runner = CliRunner()
VAL = "val/shard-000000.tar"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], prog_name="augment")


def one_line_error(result, code: int) -> str:
    """The single stderr line of a failed command, after checking its exit code and that nothing crashed."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("messages") / "build"
    result = invoke(
        "build",
        "--dataset",
        "synthetic",
        "--size",
        40,
        "--image-size",
        32,
        "--infill",
        "tile",
        "--workers",
        1,
        "-q",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return out


def val_members(build: Path) -> list[tuple[str, bytes]]:
    """The val split's 8 records as (member name, bytes), in file order."""
    return [(f"{k}.{f}", d) for k, fields in iter_records(build / VAL) for f, d in sorted(fields.items())]


def keys(build: Path) -> list[str]:
    return list(dict.fromkeys(name.split(".")[0] for name, _ in val_members(build)))


def hostile(build: Path, out: Path, entries: list, same_entry: bool = True) -> Path:
    """A copy of ``build`` whose val shard is a tar of ``entries`` ((name, data) or a TarInfo: a link); its manifest
    entry matches the new bytes (``same_entry``), or is left as built (a checksum and size problem too)."""
    shutil.copytree(build, out)
    buf = io.BytesIO()
    for entry in entries:
        if isinstance(entry, tarfile.TarInfo):
            buf.write(entry.tobuf(format=tarfile.GNU_FORMAT))
            continue
        name, data = entry
        info = tarfile.TarInfo(name)
        info.size = len(data)
        buf.write(info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512))
    shard = out / VAL
    shard.write_bytes(buf.getvalue() + b"\0" * 1024)
    if same_entry:
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["splits"]["val"]["shards"][0].update(bytes=shard.stat().st_size, sha256=shards.sha256_file(shard))
        (out / "manifest.json").write_text(json.dumps(manifest))
    return shard


def replaced(entries: list, name: str, value: tuple[str, bytes] | tarfile.TarInfo) -> list:
    """``entries`` with the member ``name`` replaced by ``value``."""
    return [value if isinstance(e, tuple) and e[0] == name else e for e in entries]


def link(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb's header), with no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


DEEP = b"[" * 50_000 + b"]" * 50_000


# ---- 1, 2: preview and verify on hostile records ------------------------------------------------------------------


def test_preview_of_a_record_of_only_pickles_names_the_sample(build: Path, tmp_path: Path) -> None:
    payload = pickle.dumps({"a": 1})
    hostile(build, tmp_path / "b", [("val_x.pyd", payload), *val_members(build)])
    line = one_line_error(invoke("preview", tmp_path / "b", "--split", "val", "--out", tmp_path / "p.png"), 1)
    assert f"{tmp_path / 'b' / VAL} (sample 'val_x'): no json or cls field (it holds pyd)" in line, line
    assert "augment verify" in line and not (tmp_path / "p.png").exists()


def test_json_nested_50000_deep_is_a_finding_of_verify_and_preview(build: Path, tmp_path: Path) -> None:
    victim = keys(build)[0]
    hostile(build, tmp_path / "b", replaced(val_members(build), f"{victim}.json", (f"{victim}.json", DEEP)))
    result = invoke("verify", "-q", tmp_path / "b")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"sample {victim!r}: unreadable json/cls (ValueError: JSON nested too deep)" in result.stderr
    line = one_line_error(invoke("preview", tmp_path / "b", "--split", "val", "--out", tmp_path / "p.png"), 1)
    assert f"(sample {victim!r}): field 'json' is not valid JSON (JSON nested too deep)" in line, line


# ---- 3: cagan train on hostile shards --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bomb", "link"])
def test_cagan_train_on_a_bomb_or_a_link_says_which_sample(build: Path, tmp_path: Path, kind: str) -> None:
    victim = keys(build)[2]
    bad = (f"{victim}.jpg", png_declaring(5000, 5000)) if kind == "bomb" else link(f"{victim}.jpg")
    shard = hostile(build, tmp_path / "b", replaced(val_members(build), f"{victim}.jpg", bad))
    result = invoke(
        "cagan",
        "train",
        "--shards",
        tmp_path / "b",
        "--out",
        tmp_path / "w.safetensors",
        "--preset",
        "tiny",
        "--steps",
        1,
        "--run-dir",
        tmp_path / "run",
        "--device",
        "cpu",
    )
    line = one_line_error(result, 1)
    assert f"{shard} (sample {victim!r})" in line and f"augment verify {tmp_path / 'b'}" in line, line
    assert ("over the limit" in line) if kind == "bomb" else ("unexpected tar entry" in line), line
    assert not (tmp_path / "w.safetensors").exists()


# ---- 4: --out that cannot be written --------------------------------------------------------------------------------

TINY = ["build", "--dataset", "synthetic", "--size", 5, "--image-size", 32, "--infill", "tile", "-q", "--workers", 1]


def test_out_under_a_file_or_in_proc_names_out_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = one_line_error(invoke(*TINY, "--out", tmp_path / "file/sub"), 2)
    assert line == (
        f"augment: error: --out {tmp_path / 'file/sub'}: {tmp_path / 'file'} is a file, not a folder; "
        "choose a writable folder"
    ), line
    line = one_line_error(invoke(*TINY, "--out", "/proc/x"), 2)
    assert line.startswith("augment: error: --out /proc/x: cannot create or write /proc/x") and "writable" in line


def test_out_without_permission_names_out(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "out"
    else:  # root passes chmod; /sys refuses new entries even to root
        target = Path("/sys/cfaug-messages-test")
        try:
            target.mkdir()
        except OSError:
            pass
        else:
            target.rmdir()
            pytest.skip("no location here refuses a new folder")
    line = one_line_error(invoke(*TINY, "--out", target), 2)
    assert line.startswith(f"augment: error: --out {target}: cannot create or write") and "writable folder" in line
    assert "permitted" in line or "denied" in line, line


# ---- 5: verify reports every problem it can reach -------------------------------------------------------------------


def test_verify_reports_every_bad_sample_and_the_checksum(build: Path, tmp_path: Path) -> None:
    first, _, third, _, fifth, *_, last = keys(build)
    entries = replaced(val_members(build), f"{first}.jpg", link(f"{first}.jpg"))  # refused by the reader
    entries = replaced(entries, f"{third}.jpg", (f"{third}.jpg", png_declaring(5000, 5000)))  # a bomb: refused
    entries = replaced(entries, f"{fifth}.json", (f"{fifth}.json", DEEP))  # read, then found unreadable
    entries = replaced(entries, f"{last}.cls", (f"{last}.cls", b"x"))  # the last sample too
    shard = hostile(build, tmp_path / "b", entries, same_entry=False)
    result = invoke("verify", "-q", tmp_path / "b")
    assert result.exit_code == 1 and "Traceback" not in result.output
    err = result.stderr
    assert f"{shard} (sample {first!r}): unexpected tar entry '{first}.jpg'" in err, err
    assert f"{shard} (sample {third!r}): field 'jpg': image declares 5000 x 5000 pixels" in err, err
    assert f"{shard}: sample {fifth!r}: unreadable json/cls" in err and f"{shard}: sample {last!r}: unreadable" in err
    assert f"{shard}: sha256 mismatch" in err and "bytes, manifest says" in err
    assert f"{shard}: 8 samples" not in err  # the refused samples are counted as present: no count problem
    assert err.strip().splitlines()[-1].startswith("augment: error: ") and "problem(s)" in err


# ---- 6: a method given to the option of the other role ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args,hint",
    [
        (["--infill", "mixed-rand"], "mixed-rand is an F method: use --factual mixed-rand"),
        (["--factual", "tile"], "tile is a CF method: use --infill tile"),
        (["--infill", "blur"], "'blur' is not one of 'grey', 'random', 'shuffle', 'shuffle-image', 'tile'"),
    ],
)
def test_a_method_of_the_other_role_names_the_right_option(tmp_path: Path, args: list[str], hint: str) -> None:
    line = one_line_error(invoke("build", "--out", tmp_path / "x", *args), 2)
    assert line.startswith("augment build: error: Invalid value for") and hint in line, line
    assert not (tmp_path / "x").exists()
    help_text = invoke("build", "--help").output
    cf_choices = "|".join(infill.names(infill.CF))  # the registry's order, every CF method
    assert f"<{cf_choices}>" in help_text and "<random|shuffle|" in help_text
    assert cf_choices.startswith("grey|random|shuffle|shuffle-image|tile|telea|cagan")


# ---- 7, 8 and other bad folders: not a build, a file, no folder, a damaged manifest ---------------------------------


@pytest.mark.parametrize("command", ["info", "verify", "preview"])
def test_paths_that_are_not_a_build_exit_2_saying_what_to_pass(tmp_path: Path, command: str) -> None:
    (tmp_path / "file").write_text("x")
    line = one_line_error(invoke(command, tmp_path), 2)
    assert f"{tmp_path}: not a build folder (no manifest.json); pass the --out folder" in line and "rebuild" not in line
    line = one_line_error(invoke(command, tmp_path / "file"), 2)
    assert line == f"augment: error: {tmp_path / 'file'} is a file; expected a build folder (holding manifest.json)"
    line = one_line_error(invoke(command, tmp_path / "nowhere"), 2)
    assert f"{tmp_path / 'nowhere'}: no such folder" in line


@pytest.mark.parametrize(
    "manifest,message",
    [
        (b"{not json", "not valid JSON"),
        (b"[" * 50_000, "not valid JSON"),
        (b"[1, 2]", "format 'list', expected"),
        (None, "methods.cf is missing or not a list"),
        (None, "image_size is missing or not an int"),
        (None, "splits is empty"),
    ],
)
@pytest.mark.parametrize("command", ["info", "verify", "preview"])
def test_a_damaged_manifest_exits_1_naming_it(build, tmp_path, command, manifest, message) -> None:
    copy = tmp_path / "b"
    shutil.copytree(build, copy)
    if manifest is None:  # valid JSON of the wrong shape
        data = json.loads((copy / "manifest.json").read_text())
        if "methods.cf" in message:
            del data["methods"]["cf"]
        elif "image_size" in message:
            data["image_size"] = "32"
        else:
            data["splits"] = {}
        manifest = json.dumps(data).encode()
    (copy / "manifest.json").write_bytes(manifest)
    line = one_line_error(invoke(command, copy), 1)
    assert line.startswith(f"augment: error: {copy / 'manifest.json'}: ") and message in line, line


def test_merge_of_a_folder_that_is_not_a_build_exits_2(tmp_path: Path) -> None:
    line = one_line_error(invoke("merge", tmp_path), 2)
    assert "not a build folder" in line and "--shard-range" in line
    assert "no such folder" in one_line_error(invoke("merge", tmp_path / "nowhere"), 2)


# ---- 9: exit codes --------------------------------------------------------------------------------------------------


def test_the_exit_code_rule_is_in_the_help_and_kept(build: Path, tmp_path: Path) -> None:
    assert "1 = a check failed" in EXIT_CODES and "2 = a usage error" in EXIT_CODES and "130" in EXIT_CODES
    assert "Exit codes: 0 = done" in invoke("--help").output
    assert invoke("verify", "-q", build).exit_code == 0
    one_line_error(invoke("preview", build, "--split", "nope", "--out", tmp_path / "p.png"), 2)  # a bad option value
    assert "valid choices: train, val" in invoke("preview", build, "--split", "nope").stderr
    (tmp_path / "d").mkdir()
    one_line_error(invoke("preview", build, "--out", tmp_path / "d"), 2)  # a folder where a file is expected
    one_line_error(invoke("build", "--out", tmp_path / "x", "--copies", "0"), 2)
    copy = tmp_path / "b"
    shutil.copytree(build, copy)
    (copy / VAL).write_bytes((copy / VAL).read_bytes()[:-3000])
    assert invoke("verify", "-q", copy).exit_code == 1  # a check failed
    assert invoke("info", copy, "--diff", build).exit_code == 0  # the manifests agree: the shards are verify's job


# ---- 10: Ctrl-C -----------------------------------------------------------------------------------------------------


def test_ctrl_c_during_a_build_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "augment",
        "build",
        "--dataset",
        "synthetic",
        "--size",
        "2000",
        "--infill",
        "tile",
        "--workers",
        "1",
        "-q",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # (SIGINT as a terminal delivers it: a shell without job control starts background jobs with it ignored)
    deadline = time.monotonic() + 60
    while not out.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the build has started writing: interrupt it mid-way
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines() == [OneLineErrors.interrupted_message] and "Traceback" not in stderr, stderr
    assert OneLineErrors.interrupted_message == "interrupted; run the same command again to resume"
