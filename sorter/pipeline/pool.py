"""A small pool of worker processes for CPU-bound model code, results in input order.

The per-photo work is CPU-bound model code (JPEG decode, YOLO, YuNet, ONet, SFace), each single-threaded,
so the way to use every core of a laptop is a small pool of processes, each with its own models and one
thread per core it owns. Used by classify's analyse step and by the recogniser's training.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import signal
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Starting a worker costs a few seconds (importing torch, loading models); below this many items per
# worker, one in-process worker finishes first.
MIN_PHOTOS_PER_WORKER = 12


def cores() -> int:
    """CPU cores this process may use (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """One worker per core, at most four: each holds its own models (~0.5 GB)."""
    return min(4, cores())


class WorkersFailed(RuntimeError):
    """A worker process died (killed, out of memory, could not start)."""


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    initializer: Callable[..., object] = None,  # type: ignore[assignment]
    initargs: tuple = (),
    models: bool = True,
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` fresh processes, results in input order as they finish.

    Processes are spawned (not forked: the parent may hold torch/OpenMP threads, which fork does not
    copy safely) without re-running the caller's ``__main__``, so a user's script that calls the API
    without an ``if __name__ == "__main__"`` guard does not run again in every worker. A worker that
    dies raises :class:`WorkersFailed` instead of hanging; stopping early (Ctrl-C, an error in the
    caller) cancels what is queued and stops the workers. ``models=False``: the workers run no model,
    so they skip the offline set-up (which imports ultralytics, seconds per worker).
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ex = ProcessPoolExecutor(
        workers,
        mp_context=mp.get_context("spawn"),
        initializer=_chain(initializer, models),
        initargs=initargs,
    )
    try:
        with _main_hidden():
            pending = collections.deque(ex.submit(fn, item) for item in items)  # starts the workers
        while pending:
            future = pending.popleft()  # a result once handed on is not kept: memory stays flat
            try:
                yield future.result()
            except BrokenProcessPool as exc:
                raise WorkersFailed(str(exc).split(".")[0] or "a worker died") from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _chain(initializer: Callable[..., object] | None, models: bool) -> Callable[..., None]:
    return functools.partial(_init_chain, initializer, models)


def _init_chain(initializer: Callable[..., object] | None, models: bool, *args: object) -> None:
    worker_setup(models)
    if initializer is not None:
        initializer(*args)


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """While workers start, ``__main__`` looks like an interactive session: spawn then imports nothing
    of it in the child (it would otherwise re-run the caller's script, or fail on ``python -``)."""
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def worker_setup(models: bool = True) -> None:
    """First thing in every worker process (also the recogniser's training pool)."""
    # The parent handles Ctrl-C (it says how to resume); workers just stop when it terminates them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if models:
        from sorter import offline

        # The switches, not ultralytics itself: it imports torch (~0.5 GB a worker), which runs on the
        # CPU only when there is no OpenVINO export; then the detector imports it (and turns sync off).
        offline.prepare(ultralytics=False)


def _die_with_parent() -> None:
    """Linux: if the parent is killed (SIGKILL, OOM), the kernel kills this worker too, at once.

    Otherwise an orphaned worker would finish its current photos for nothing before noticing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    batch: list[T] = []
    for p in items:
        batch.append(p)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
