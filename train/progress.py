"""How a run shows its progress: one tqdm bar per epoch on a terminal, for a run that has the terminal alone
(``show_progress``); log lines tagged with the run (``run_tag``) in a worker of ``train study --jobs N``. Read by
``train.train.fit`` and by the final evaluation (``train.evaluate.progress_bar``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train.config import Config


def show_progress() -> bool:
    """Whether ``fit`` draws a bar: only on a terminal, and only for a run that has it alone. ``train study --jobs N``
    trains each run in a worker process of its own, all writing to one terminal, where bars would overwrite each
    other's lines: those runs log lines (``run_tag`` says whose)."""
    import multiprocessing

    return sys.stderr.isatty() and multiprocessing.parent_process() is None


def run_tag(config: Config) -> str:
    """The prefix of a run's log lines: none for a run on its own; ``<method> <folder>: `` (e.g. ``Orig s0: ``) in
    a worker process of ``train study --jobs N``, whose lines interleave with other runs'."""
    import multiprocessing

    return "" if multiprocessing.parent_process() is None else f"{config.method_name()} {Path(config.out).name}: "


class Progress:
    """One tqdm bar for the run on stderr, started anew at every epoch (so its rate and ETA are the epoch's); log
    lines print above it meanwhile. It is cleared when the run ends, however it ends: the epoch lines stay."""

    def __init__(self) -> None:
        self.bar: Any = None  # made at the first epoch: nothing is drawn while the run reads its build and model

    @classmethod
    @contextlib.contextmanager
    def on(cls, enabled: bool) -> Iterator[Progress | None]:
        if not enabled:
            yield None
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        progress = cls()
        try:
            with logging_redirect_tqdm():
                yield progress
        finally:
            if progress.bar is not None:
                progress.bar.close()

    def epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, unit="step", leave=False, dynamic_ncols=True, file=sys.stderr)
        self.bar.reset(total=steps)
        self.bar.set_postfix_str("", refresh=False)
        self.bar.set_description(f"epoch {epoch}/{epochs - 1}", refresh=False)

    def step(self, loss: float, images_per_s: float) -> None:
        self.bar.set_postfix_str(f"loss {loss:.4f}, {images_per_s:.0f} img/s", refresh=False)
        self.bar.update()

    def note(self, text: str, description: str | None = None) -> None:
        """``text`` after the bar's figures (e.g. what the run does between epochs' steps)."""
        if description is not None:
            self.bar.set_description(description, refresh=False)
        self.bar.set_postfix_str(text)
