"""Stages 2-4 for one photo at a time: decode -> detect -> recognise, in worker processes.

The per-photo work is CPU-bound model code (JPEG decode, YOLO, YuNet, ONet, SFace), each single-threaded,
so the way to use every core of a laptop is a small pool of processes, each with its own models and one
thread per core it owns. Decoding of one photo then overlaps inference on another. Only small records
cross process boundaries (a :class:`~sorter.records.Photo` in, :class:`Analysed` out): decoded pixels
never leave the worker, which keeps memory bounded however large the library is.

The main process keeps what must be serial and ordered: the index, the decision and the copies.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from sorter.bundle import Bundle
from sorter.decode import WORK_SIDE, DecodeError, decode_work, read_photo, shrink
from sorter.records import Face, Photo

T = TypeVar("T")
R = TypeVar("R")

# Starting a worker costs a few seconds (importing torch, loading models); below this many photos to
# analyse, one in-process worker finishes first.
MIN_PHOTOS_PER_WORKER = 12


@dataclass
class Analysed:
    """What stages 2-4 made of one photo. Exactly one of ``faces``/``error``/``read_error`` is set,
    unless ``known`` (its content hash is already in the index: a renamed or moved photo)."""

    photo: Photo
    sha: str | None = None
    faces: list[Face] | None = None
    error: str | None = None  # not a photo we can read (cached: the same bytes fail the same way)
    read_error: str | None = None  # the file system's error (vanished, permission): not cached
    known: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Analyser:
    """Decode, detect and recognise photos with one bundle's models, loaded on first use."""

    bundle: Bundle
    min_score: float
    device: str | None = None
    batch: int | None = None
    known: frozenset[str] = frozenset()  # content hashes the index already has faces for
    threads: int | None = None
    use_detector: bool = True  # False: only the recogniser's face detector looks for faces
    _detector: object = None
    _recogniser: object = None
    _side: int = WORK_SIDE
    _loaded: bool = False

    def _load(self) -> None:
        if self._loaded:
            return
        if self.threads:
            import cv2

            cv2.setNumThreads(self.threads)
            if "torch" in sys.modules:  # never imported just to set this: it costs ~0.5 GB
                sys.modules["torch"].set_num_threads(self.threads)
        from sorter.detect import YoloDetector, pick_device
        from sorter.recognise import load_recogniser

        self._recogniser = load_recogniser(self.bundle, self.threads)
        # Without a recogniser only the detector looks at the photo: decode no larger than it needs.
        self._side = WORK_SIDE if self._recogniser is not None else self.bundle.imgsz
        self._loaded = True
        if not self.use_detector and self._recogniser is not None:
            return  # not even loaded: no memory, no start-up
        device = pick_device(self.device)
        self._detector = YoloDetector(
            weights=self.bundle.detector_path(device),
            classes=self.bundle.classes,
            imgsz=self.bundle.imgsz,
            device=device,
            batch=self.batch,
            min_score=self.min_score,
            threads=self.threads,
        )

    def run(self, photos: list[Photo]) -> list[Analysed]:
        """Analyse a small batch of photos (the detector sees them as one batch)."""
        self._load()
        out = [Analysed(photo=p) for p in photos]
        todo = []
        for a in out:
            ts = time.perf_counter()
            try:
                # one read: the bytes that are hashed are the bytes decoded
                a.sha, data = read_photo(a.photo)
                if a.sha in self.known:
                    a.known = True
                else:
                    todo.append((a, decode_work(a.photo, data, side=self._side)))
            except DecodeError as exc:
                a.error = str(exc)
            except OSError as exc:
                a.read_error = f"cannot read: {exc.strerror or exc}"
            a.seconds["decode"] = time.perf_counter() - ts
        if not todo:
            return out
        if self._detector is not None:
            ts = time.perf_counter()
            # The detector wants its own input size; the recogniser gets the larger canonical decode.
            found = self._detector.detect([shrink(d, self.bundle.imgsz) for _, d in todo])
            per = (time.perf_counter() - ts) / len(todo)
        else:
            found, per = [[] for _ in todo], None
        for (a, d), faces in zip(todo, found, strict=True):
            if per is not None:
                a.seconds["detect"] = per
            if self._recogniser is not None:
                ts = time.perf_counter()
                faces = self._recogniser.recognise(d, faces)
                a.seconds["recognise"] = time.perf_counter() - ts
            a.faces = faces
        return out


def cores() -> int:
    """CPU cores this process may use (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """One worker per core, at most four: each holds its own models (~0.5 GB)."""
    return min(4, cores())


def analyse_all(
    analyser: Analyser,
    photos: list[Photo],
    workers: int | None = None,
    chunk: int = 2,
    log: Callable[[str], object] | None = None,
) -> Iterator[Analysed]:
    """Analyse ``photos`` in input order, on ``workers`` processes (0: in this process).

    Results stream back in order as they finish, so the caller can decide and copy while the workers
    go on, and a run killed half-way has finished work to resume from.
    """
    workers = default_workers() if workers is None else workers
    workers = min(workers, len(photos) // MIN_PHOTOS_PER_WORKER)
    batches = _batches(photos, max(1, chunk))
    if workers >= 2:
        # each worker gets a copy with its share of the cores; the caller's analyser is left as it was
        pooled = dataclasses.replace(
            analyser, threads=max(1, cores() // workers), _detector=None, _recogniser=None, _loaded=False
        )
        done = 0
        try:
            for results in parallel_map(_run, batches, workers, _init_worker, (pooled,)):
                done += len(results)
                yield from results
            return
        except WorkersFailed as exc:
            (log or print)(f"worker processes failed ({exc}); going on in this process")
            batches = _batches(photos[done:], max(1, chunk))
    for b in batches:
        yield from analyser.run(b)


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


_WORKER: Analyser | None = None


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


def _init_worker(analyser: Analyser) -> None:
    global _WORKER
    _WORKER = analyser


def _die_with_parent() -> None:
    """Linux: if the parent is killed (SIGKILL, OOM), the kernel kills this worker too, at once.

    Otherwise an orphaned worker would finish its current photos for nothing before noticing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _run(photos: list[Photo]) -> list[Analysed]:
    assert _WORKER is not None
    return _WORKER.run(photos)


def _batches(photos: Iterable[Photo], size: int) -> Iterator[list[Photo]]:
    batch: list[Photo] = []
    for p in photos:
        batch.append(p)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
