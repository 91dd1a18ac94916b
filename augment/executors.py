"""Where a build's tasks run: local processes (joblib's loky backend) or a dask.distributed cluster.

Either way a task's result is the same bytes, so the executor only decides speed and placement.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from joblib import Parallel, delayed

from augment import orphans
from augment.errors import BuildError


def run_tasks(
    fn: Callable[..., dict[str, Any]], calls: list[tuple], workers: int, scheduler: str | None
) -> Iterator[dict[str, Any]]:
    """Run ``fn(*args)`` for every args tuple, yielding results as they finish: on ``workers`` local processes, or on
    the dask.distributed cluster at ``scheduler``.

    A local worker exits when this process dies, even by SIGKILL (``augment.orphans``): left running, it would go on
    building shards nobody collects, into the folder a re-run is using. Dask workers are left alone: they may be on
    other machines, and outlive a client by design.
    """
    if scheduler is None:
        main = os.getpid()
        tasks = (delayed(orphans.child_task)(main, fn, *a) for a in calls)
        yield from Parallel(n_jobs=workers, return_as="generator_unordered")(tasks)
        return
    from distributed import Client, as_completed

    try:
        client = Client(scheduler, timeout="20s")
    except OSError as e:
        raise BuildError(f"--scheduler {scheduler}: no dask scheduler answered ({e}); start one with `dask scheduler` "
                         f"and workers with `dask worker {scheduler}`, then build again") from None  # fmt: skip
    with client:
        futures = [client.submit(fn, *a, pure=False) for a in calls]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)
