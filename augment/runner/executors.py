"""Where a build's tasks run: this process, local worker processes, or a dask.distributed cluster.

Either way a task's result is the same bytes, so the executor only decides speed and placement.

Local workers are forked from the build's process where that is safe (Linux, and torch not imported: no CUDA
context or torch thread pool to inherit): a forked worker starts in milliseconds with the parent's imports, where
a fresh interpreter (joblib's loky backend, used everywhere else) spends a noticeable share of a short build
spawning and importing NumPy, OpenCV and augment (docs/benchmarks.md, section 5).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from augment.errors import BuildError
from augment.runner import orphans


def run_tasks(
    fn: Callable[..., dict[str, Any]], calls: list[tuple], workers: int, client: Any = None
) -> Iterator[dict[str, Any]]:
    """Run ``fn(*args)`` for every args tuple, yielding results as they finish: on ``workers`` local processes, or on
    the dask.distributed cluster of ``client`` (from :func:`connect`).

    A local worker exits when this process dies, even by SIGKILL (``augment.runner.orphans``): left running, it would
    go on building shards nobody collects, into the folder a re-run is using. Dask workers are left alone: they may be
    on other machines, and outlive a client by design.
    """
    if client is None:
        if workers == 1 or len(calls) <= 1:
            yield from (fn(*a) for a in calls)
        elif forking_is_safe():
            yield from forked(fn, calls, workers)
        else:
            from joblib import Parallel, delayed

            tasks = (delayed(orphans.child_task)(os.getpid(), fn, *a) for a in calls)
            yield from Parallel(n_jobs=workers, return_as="generator_unordered")(tasks)
        return
    from distributed import as_completed

    futures = [client.submit(fn, *a, pure=False) for a in calls]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.cancel(futures)


@contextlib.contextmanager
def connect(scheduler: str | None) -> Iterator[Any]:
    """The dask client of ``--scheduler`` (None without one), connected before the build touches ``--out``, so that a
    scheduler that does not answer leaves no half-made build behind (a ValueError: the option's value is wrong).
    A refused TCP connection fails at once; otherwise dask tries for 20 s."""
    if scheduler is None:
        yield None
        return
    from distributed import Client
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    how = f"start one with `dask scheduler` and workers with `dask worker {scheduler}`, or fix the address"
    try:
        scheme, location = parse_address(scheduler)
        if scheme in ("tcp", "tls"):
            socket.create_connection(parse_host_port(location), timeout=20).close()
        client = Client(scheduler, timeout="20s")
    except ValueError as e:
        raise ValueError(f"--scheduler {scheduler}: not a scheduler address ({e}); expected tcp://HOST:PORT") from None
    except OSError as e:
        raise ValueError(f"--scheduler {scheduler}: no dask scheduler answered ({e}); {how}") from None
    with client:
        yield client


def forking_is_safe() -> bool:
    """Fork local workers on Linux when this process has not imported torch (a model method or mask source)."""
    return sys.platform == "linux" and "torch" not in sys.modules


def forked(fn: Callable[..., dict[str, Any]], calls: list[tuple], workers: int) -> Iterator[dict[str, Any]]:
    """``fn(*args)`` per call on ``workers`` processes forked from this one, results as they finish. However this
    generator ends (done, a task's error, Ctrl-C, closed early), no worker is left running when it returns: the
    caller may then remove the temp files of unfinished shards.

    The workers inherit ``fn`` and ``calls`` with the rest of this process's memory and receive only a call's
    index, so that nothing needs pickling on the way in (a method registered by a lambda would not pickle)."""
    global _inherited
    _inherited = (os.getpid(), fn, calls)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=ignore_sigint)
    interrupted = deferred_sigint()
    try:
        pending = {pool.submit(run_inherited, i) for i in range(len(calls))}  # the workers fork at the first submit
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            if interrupted():
                raise KeyboardInterrupt
            for future in finished:
                yield future.result()
        if interrupted():
            raise KeyboardInterrupt
    except BrokenProcessPool:
        raise BuildError(
            f"a worker process died mid-task (killed: out of memory?); try fewer than --workers {workers}"
        ) from None
    finally:
        processes = list((pool._processes or {}).values())  # private: Python 3.14 has pool.terminate_workers()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()  # an unfinished task's shard is left as a temp file, which the caller removes
        for process in processes:
            process.join()
        _inherited = None
        interrupted.restore()


_inherited: tuple[int, Callable[..., dict[str, Any]], list[tuple]] | None = None  # what forked workers run


def run_inherited(i: int) -> dict[str, Any]:
    """In a forked worker: call ``i`` of the build that forked it."""
    parent, fn, calls = _inherited
    return orphans.child_task(parent, fn, *calls[i])


class deferred_sigint:  # lower case: it is used as a function
    """Ctrl-C noted, to be raised where the caller checks (``interrupted()``), not inside concurrent.futures: a
    KeyboardInterrupt raised while ``wait`` holds the futures' locks would leave one held, and the executor's thread
    would then block on it forever, and with it this process's exit. Only in the main thread (signals go there)."""

    def __init__(self):
        self.seen, self.previous = False, None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self.note)

    def note(self, signum: int, frame: Any) -> None:
        self.seen = True

    def __call__(self) -> bool:
        return self.seen

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def ignore_sigint() -> None:
    """In a worker: Ctrl-C reaches the whole process group, and it is the build's process that stops the build."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
