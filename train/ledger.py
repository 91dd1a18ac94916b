"""What a run could not read from its build, and when that stops the run.

The trainer reads shards it did not write. Each shard is hashed while it streams and compared with its manifest
entry at its end (``augment.contract.shards.ShardCheck``), so a flipped byte, a truncation or a missing sample is found
without a second pass. What happens then is the :class:`Ledger`'s decision:

- ``allowed == 0`` (the default): the first bad sample, short shard or changed shard stops the run with a
  :class:`DataError` naming the shard, the count and how to check the build (:func:`verify_hint`);
- ``allowed == N`` (``--max-bad-samples N``): up to N samples that cannot be read are skipped, each with a warning,
  and listed in ``results.json``; a changed shard whose samples still read is listed too. One sample more stops
  the run.

DataLoader workers are other processes: each appends what it records to a file in the ledger's folder, and the
main process merges them (:meth:`Ledger.collect`) after each pass. A sample skipped in every epoch counts once. A
worker that must stop the run does not raise through the DataLoader (whose re-raised error embeds the worker's
traceback, and whose workers are then slow to shut down): it writes the reason (:meth:`Ledger.stop`) and ends
its stream, and ``train.data.batches`` raises it in the main process after the batch in hand.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from torch.utils.data import get_worker_info

from augment.contract.files import write_atomic
from augment.contract.shards import ShardError, is_url

log = logging.getLogger(__name__)
TRACEBACK_MARK = "Original Traceback"  # how torch's DataLoader embeds a worker's traceback in the error it re-raises


def one_line(error: BaseException) -> str:
    """The message of ``error`` without the worker traceback a DataLoader puts in front of it."""
    text = str(error)
    if TRACEBACK_MARK not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    name, sep, message = last.partition(": ")
    return message if sep and " " not in name else last


def verify_hint(root: str | Path = "") -> str:
    """How to check the build at ``root``: ``augment verify`` takes a local folder, so a URL's build is checked by
    ``train fit --verify`` (every shard's sha256) or, sample by sample, in a local copy."""
    if not root:
        return "check it with `augment verify`"
    if is_url(root):
        return (
            f"check the build with `train fit --shards {root} --verify` (checksums), or copy it to a folder and "
            "run `augment verify FOLDER` (every sample)"
        )
    return f"check the build with `augment verify {root}`"


def remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


class DataError(ValueError):
    """The build's data is not what its manifest promises. One line, also when a DataLoader worker raised it."""

    def __init__(self, message: str):
        super().__init__(one_line(Exception(message)))


class Ledger:
    """The samples (and shards) of a build that a run could not use, shared by all of the run's streams.

    ``items`` maps (shard, sample key, problem) to an entry ``{"shard", "key", "samples", "problem"}``; ``samples``
    is how many samples the entry stands for (1 for a bad sample, the unread rest for a cut shard, 0 for a changed
    shard whose samples all read)."""

    def __init__(self, allowed: int = 0, root: str = ""):
        if allowed < 0:
            raise ValueError(f"--max-bad-samples: got {allowed}, expected a count >= 0")
        self.allowed, self.root = allowed, str(root)
        self.items: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="train-ledger-"))
        weakref.finalize(self, remove_folder, self.folder, os.getpid())  # by this process only, not by a worker

    @property
    def count(self) -> int:
        """Samples skipped, over every split read so far (each sample once)."""
        return sum(item["samples"] for item in self.items.values())

    def record(self, error: ShardError, samples: int = 1, counted: bool = True) -> None:
        """Account for ``samples`` samples lost to ``error`` (0: a changed shard whose samples read); raises
        DataError when that is more than the run allows. ``counted=False`` lists a problem whose loss is counted
        elsewhere (with its shard's), so that a sample is never counted twice."""
        hint = verify_hint(self.root)
        if not self.allowed:
            lost = "its samples decode, but are not the ones built" if not samples else f"{samples} sample(s) lost"
            raise DataError(f"{error} ({lost}); {hint}, or pass --max-bad-samples N to skip up to N bad samples")
        item = {"shard": error.path, "key": error.key, "samples": samples if counted else 0, "problem": error.problem}
        self.add(item)
        if get_worker_info() is not None:
            with open(self.folder / f"worker-{os.getpid()}.jsonl", "a") as fh:
                fh.write(json.dumps(item) + "\n")
        log.warning("%s: %s", "skipping" if counted else "found", error)
        self.check(error)

    def add(self, item: dict[str, Any]) -> None:
        self.items.setdefault((item["shard"], item["key"] or "", item["problem"]), item)

    def check(self, last: BaseException | str = "") -> None:
        if self.count > self.allowed:
            raise DataError(
                f"{self.count} bad samples, over --max-bad-samples {self.allowed}; the last: {last}; "
                f"{verify_hint(self.root)}"
            )

    def stop(self, error: DataError) -> None:
        """In a DataLoader worker: leave ``error`` for the main process to raise (the first one stays)."""
        stop = self.folder / "stop"
        if not stop.exists():
            write_atomic(stop, lambda tmp: tmp.write_text(str(error)), tmp=self.folder / f"stop-{os.getpid()}.tmp")

    def stopped(self) -> str | None:
        """Why a worker stopped the run, or None: one stat per call, cheap enough for every batch."""
        try:
            return (self.folder / "stop").read_text()
        except FileNotFoundError:
            return None

    def collect(self) -> None:
        """Raise what a worker stopped on; merge what the workers recorded, then apply the bound to the run's
        total."""
        if (message := self.stopped()) is not None:
            raise DataError(message)
        for path in sorted(self.folder.glob("worker-*.jsonl")):
            for line in path.read_text().splitlines():
                self.add(json.loads(line))
        last = next(reversed(self.items.values()), None)
        self.check(f"{last['shard']} (sample {last['key']!r}): {last['problem']}" if last else "")

    def summary(self) -> dict[str, Any]:
        """What results.json records: the bound, the count, and every entry."""
        return {"allowed": self.allowed, "count": self.count, "items": list(self.items.values())}
