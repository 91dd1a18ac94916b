"""The processes of a local build: killed (SIGKILL) or interrupted (SIGINT, Ctrl-C), `augment build` leaves no worker
running and no partial shard under a final name, and the same command resumes to the bytes of an uninterrupted build.

Each build runs as a real `augment build` process with two workers forked from it (augment.runner.executors); the
workers are found as its descendants with its command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augment.config import BuildConfig
from augment.contract import schema
from augment.runner import journal, orphans
from augment.runner.build import build

psutil = pytest.importorskip("psutil")  # installed with distributed
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# 6000 samples in 60 shards: about 4 s of work for two workers (2.4 s with half of it once raced the test's wait for
# the first finished shard on a busy machine), so the build is still running when signalled.
# --out is relative, so builds in different folders write the same manifest bytes.
COMMAND = [
    sys.executable,
    "-m",
    "augment",
    "build",
    "--dataset",
    "synthetic",
    "--size",
    "3000",
    "--image-size",
    "32",
    "--infill",
    "tile",
    "--factual",
    "shuffle",
    "--shard-size",
    "100",
    "--workers",
    "2",
    "-q",
    "--out",
    "shards",
]
# the manifest records the checkout's commit, and a plan of another commit is not resumed: no commit, so that one
# made in this checkout while the test runs changes nothing
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_DIR": os.devnull}
GONE_WITHIN = 10.0  # seconds from the main process's death to the last of its descendants
# how the build is stopped: SIGKILL (nothing runs in the main process), SIGINT to the main process alone, and a
# terminal's Ctrl-C (SIGINT to the whole foreground process group, workers included)
SIGNALS = {
    "sigkill": (os.kill, signal.SIGKILL),
    "sigint": (os.kill, signal.SIGINT),
    "ctrl-c": (os.killpg, signal.SIGINT),
}


def default_sigint() -> None:
    """In the child, before exec: SIGINT as a terminal delivers it. A shell without job control starts background
    jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt (make test run with `&`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tree(out: Path) -> dict[str, str]:
    """The sha256 of every file of a build, by relative path."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def running(procs: list) -> list:
    """The processes of ``procs`` that still run (a zombie has exited: it only waits to be reaped)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted build's folder."""
    root = tmp_path_factory.mktemp("reference")
    done = subprocess.run(COMMAND, cwd=root, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming" not in done.stderr  # a fresh build has nothing to report on stderr
    return root / "shards"


@pytest.mark.parametrize("how", SIGNALS)
def test_a_killed_build_leaves_no_worker_and_resumes_to_identical_bytes(
    tmp_path: Path, reference: Path, how: str
) -> None:
    """After SIGKILL no cleanup runs in the main process: its workers must notice that it is gone themselves."""
    out, expected = tmp_path / "shards", tree(reference)
    shards = sum(1 for name in expected if name.endswith(".tar"))
    with open(tmp_path / "stderr", "w") as err:
        main = subprocess.Popen(
            COMMAND, cwd=tmp_path, env=ENV, stderr=err, start_new_session=True, preexec_fn=default_sigint
        )
    try:
        deadline, workers, records = time.monotonic() + 120, [], out / journal.JOURNAL / journal.DONE
        while time.monotonic() < deadline:
            assert main.poll() is None, f"ended before it was signalled: {(tmp_path / 'stderr').read_text()}"
            descendants = psutil.Process(main.pid).children(recursive=True)
            workers = [p for p in descendants if p.cmdline() == psutil.Process(main.pid).cmdline()]
            if len(workers) == 2 and list(records.glob("*.json")):  # mid-build: a shard done, more under way
                break
            time.sleep(0.05)
        assert len(workers) == 2, f"expected the build's 2 workers, found {[p.cmdline() for p in descendants]}"
        send, sig = SIGNALS[how]
        send(main.pid, sig)
        main.wait(timeout=60)
        died = time.monotonic()
        while running(descendants) and time.monotonic() - died < GONE_WITHIN:
            time.sleep(0.05)
        left = running(descendants)
        assert not left, f"{how}: {[p.cmdline() for p in left]} still running {GONE_WITHIN} s after the build died"
        print(f"{how}: exit code {main.returncode}; descendants gone {time.monotonic() - died:.2f} s after the main")
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)  # whatever a failed assertion left of this build's processes
        except (ProcessLookupError, PermissionError):
            pass
    assert main.returncode != 0
    assert not (out / schema.MANIFEST).exists()
    finished = {name: sha for name, sha in tree(out).items() if name.endswith(".tar")}
    assert 0 < len(finished) < shards
    assert finished == {name: expected[name] for name in finished}  # a final name is only given to a whole shard

    again = subprocess.run(COMMAND, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    said = re.search(
        rf"^augment build: resuming {re.escape(str(out))}: (\d+) of (\d+) shards kept$", again.stderr, re.MULTILINE
    )
    assert said and int(said[1]) >= 1 and int(said[2]) == shards, again.stderr
    manifest, want = (json.loads((o / schema.MANIFEST).read_text()) for o in (out, reference))
    assert manifest["splits"] == want["splits"]  # every shard entry: path, count, bytes, sha256
    result = tree(out)  # every shard, the manifest (which holds no time or absolute path), no journal or temp file
    assert result == expected, sorted(set(result.items()) ^ set(expected.items()))


def test_quiet_resume_says_on_stderr_how_many_shards_were_kept(tmp_path: Path, capsys) -> None:
    def config() -> BuildConfig:
        return BuildConfig(dataset="synthetic", infill=["tile"], dataset_options={"size": 40}, shard_size=8)

    out = tmp_path / "out"
    summary = build(out, config(), shard_range="0:3", progress=False)  # an unfinished build: its first 3 shards
    assert capsys.readouterr().err == ""
    build(out, config(), progress=False)
    assert capsys.readouterr().err == f"augment build: resuming {out}: 3 of {summary['shards_total']} shards kept\n"
    build(out, config(), progress=False)  # finished already: nothing to resume, nothing said
    assert capsys.readouterr().err == ""


def test_exit_with_ends_a_process_once_the_process_it_watches_is_gone() -> None:
    """The watchdog of a process whose watched one is not its parent (checked by PID), and a no-op on itself."""
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    code = (
        f"import os, time; from augment.runner import orphans; orphans.exit_with(os.getpid()); orphans.exit_with("
        f"{watched.pid}); time.sleep(120)"
    )
    watcher = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    try:
        time.sleep(1.5)
        assert watcher.poll() is None  # the watched process lives: so does the watcher
        watched.kill()
        watched.wait()
        assert watcher.wait(timeout=GONE_WITHIN) == orphans.EXIT_CODE
    finally:
        watched.kill()
        watcher.kill()
