"""Independent evaluation runs in a pool of spawned processes, results in task order.

Spawned (not forked) workers: a fork of a process that already ran torch's thread pool can
deadlock. Each worker gets ``threads`` torch threads (CPU cores // workers by default, so the pool
does not oversubscribe the cores) and the parent's logging level; ``init(*initargs)`` then builds
whatever per-process state the task function needs. A worker dies with its parent (Linux
``PR_SET_PDEATHSIG``): an evaluation stopped with Ctrl-C, ``kill`` or ``scancel`` leaves no orphaned
inversions running.
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


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent exits; exit now if the parent is already gone."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except OSError:  # no glibc (e.g. musl): workers may outlive a killed parent
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _init(threads: int, level: int, init: Callable | None, initargs: tuple, parent_pid: int) -> None:
    import torch

    die_with_parent(parent_pid)

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
                             initargs=(threads, level, init, initargs, os.getpid())) as pool:
        for r in pool.map(fn, tasks):
            out.append(r)
            on_result(r)
    return out
