"""Worker processes whose build is gone: a watchdog thread that ends them when the build's main process dies.

A main process killed with SIGKILL (or SIGTERM, or by the OOM killer) runs no cleanup, and its workers (forked, or
loky's) outlive it: blocked on a result pipe nobody reads, or still building queued shards, and racing the shards of a
re-run. So each local worker polls whether the process that submitted its task is still its parent, and ``os._exit``s
when it is not. Polling ``os.getppid()`` is used rather than ``prctl(PR_SET_PDEATHSIG)``, which fires when the parent
*thread* that forked exits (loky starts workers from a helper thread) and exists on Linux only. Its temp files are
left to the re-run, which removes them before it builds (``augment.runner.journal.remove_temp_files``); a final name
is only ever given to a whole shard, by an atomic rename.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_SECONDS = 0.2
EXIT_CODE = 70  # what a worker that outlived its build exits with (EX_SOFTWARE: it stopped mid-task)

_watched: set[int] = set()  # the main processes this process's watchdogs follow
_lock = threading.Lock()


def child_task(parent: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, in a worker that exits soon after process ``parent`` (the build's main process) is gone."""
    exit_with(parent)
    return fn(*args)


def exit_with(parent: int, poll: float = POLL_SECONDS) -> None:
    """Start (once per process and ``parent``) a daemon thread that ends this process when ``parent`` is gone.

    Nothing happens in ``parent`` itself (tasks run in the main process when there is one worker). Only call it with
    the PID of a process on this machine (not on dask workers, which may run elsewhere under other PIDs).
    """
    if parent == os.getpid():
        return
    with _lock:
        if parent in _watched:
            return
        _watched.add(parent)
    threading.Thread(target=_watch, args=(parent, poll), name=f"exit-with-{parent}", daemon=True).start()


def _watch(parent: int, poll: float) -> None:
    """Return never; ``os._exit`` once ``parent`` has died."""
    if os.getppid() == parent:  # our parent: a reparented worker sees another PPID, even while the parent is a zombie
        while os.getppid() == parent:
            time.sleep(poll)
    else:  # an ancestor further up: ask the kernel whether the PID still exists
        while alive(parent):
            time.sleep(poll)
    os._exit(EXIT_CODE)


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
