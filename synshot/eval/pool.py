"""Independent evaluation runs in a pool of spawned processes, results in task order.

Spawned (not forked) workers: a fork of a process that already ran torch's thread pool can
deadlock. Each worker gets ``threads`` torch threads (CPU cores // workers by default, so the pool
does not oversubscribe the cores) and the parent's logging level; ``init(*initargs)`` then builds
whatever per-process state the task function needs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_size(requested: int | None, n_tasks: int, threads: int | None = None) -> tuple[int, int]:
    """(processes, torch threads per process): ``requested`` (None = CPU cores) capped by the tasks."""
    cpus = available_cpus()
    workers = max(1, min(requested or cpus, n_tasks))
    return workers, threads or max(1, cpus // workers)


def _init(threads: int, level: int, init: Callable | None, initargs: tuple) -> None:
    import torch

    from synshot.cli import setup_logging

    torch.set_num_threads(threads)
    setup_logging(verbose=2 if level <= logging.DEBUG else 0, quiet=level > logging.INFO)
    if init is not None:
        init(*initargs)


def pool_map(fn: Callable, tasks: Iterable, workers: int, threads: int, init: Callable | None = None,
             initargs: tuple = (), on_result: Callable[[Any], None] = lambda _: None) -> list:
    """``[fn(t) for t in tasks]`` computed by ``workers`` spawned processes; ``on_result`` sees each result
    as it is collected (in task order). ``fn`` and ``init`` must be module-level functions."""
    level = logging.getLogger("synshot").getEffectiveLevel()
    out = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                             initargs=(threads, level, init, initargs)) as pool:
        for r in pool.map(fn, tasks):
            out.append(r)
            on_result(r)
    return out
