"""classify's analyse step on a Ray cluster (``--backend ray``): the same :class:`Analyser`, on actors.

Only the analyse step moves. Plan and commit (index, copies, manifest, resume, the lock) stay in the
process that runs classify, the driver, exactly as with the local backend: the Ray workers only read
photos and send back :class:`Analysed` records, so OUT is written by one process on one machine and a
run killed anywhere resumes from the index like any other.

The photos go through Ray Data: ``map_batches`` on a fixed pool of actors, each loading the models
once in its constructor; the actors read the files themselves from their paths (so the library must be
at the same path on every node) and only small records cross the network. Results come back in input
order as they finish (``preserve_order``) and Ray Data's backpressure bounds what is in flight, so the
driver's memory does not grow with the library. A lost actor (its process killed, its node gone) is
restarted by Ray and its unfinished batches are retried (``max_restarts``/``max_task_retries``).

Ray is an optional extra (``pip install 'photosort[ray]'``) and is only imported here, inside functions.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from sorter.errors import PhotosortError
from sorter.pipeline.analyse import Analysed, Analyser, analyse_all, unloaded
from sorter.pipeline.pool import cores
from sorter.records import Photo
from sorter.settings import ClassifySettings

INSTALL_HINT = "--backend ray needs Ray, which is not installed here: pip install 'photosort[ray]'"
# Photos per Ray Data block at most: small enough that the pool stays balanced to the last photo and a
# lost actor costs little to redo, large enough that per-task overhead stays negligible (~1 ms a task
# against ~0.1-0.5 s a photo).
MAX_BLOCK = 32
# A batch whose actor keeps dying (a photo that crashes the decoder, say) is retried this many times,
# then the run stops with a message instead of looping forever; a re-run resumes.
TASK_RETRIES = 3


class RayBackendError(PhotosortError):
    """Ray is missing, the cluster cannot be reached, or its workers kept failing (one line)."""


Analyse = Callable[..., Iterator[Analysed]]


def backend(settings: ClassifySettings) -> Analyse:
    """The analyse step for ``settings.backend``; with ``ray``, refused at once if Ray is missing."""
    if settings.backend == "local":
        return analyse_all
    _import_ray()  # before the lock and the index: a missing extra costs nothing and says what to do
    return functools.partial(analyse_on_ray, address=settings.ray_address)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the extra, not only ray core)
    except ImportError:
        raise RayBackendError(INSTALL_HINT) from None
    return ray


def analyse_on_ray(
    analyser: Analyser,
    photos: list[Photo],
    workers: int | None = None,
    chunk: int = 2,
    log: Callable[[str], object] | None = None,
    address: str | None = None,
) -> Iterator[Analysed]:
    """:func:`~sorter.pipeline.analyse.analyse_all` on Ray: the same records, in input order.

    ``address`` None: a Ray of this machine's cores only, started here (and stopped at the end);
    otherwise the cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``). Already connected
    (``ray.init`` called by the caller): that cluster, left running. ``workers``: actors, one core each
    (None: one per core of the cluster).
    """
    if not photos:
        return
    ray = _import_ray()
    started = _connect(ray, address)
    try:
        yield from _stream(ray, analyser, photos, workers, chunk)
    except ray.exceptions.RayTaskError:
        raise  # an error in our own code on a worker: a bug, shown with its traceback
    except ray.exceptions.RayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayBackendError(
            f"the Ray workers failed ({first}); run the same command again to resume"
        ) from None
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to Ray without anything leaving the machine; True when this call started it."""
    # Ray's usage statistics would be reported to Anyscale: off, in this process and every one it starts.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = dict(
        configure_logging=True, logging_level=logging.ERROR, log_to_driver=False, ignore_reinit_error=True
    )
    if address is None:
        # This machine only: every Ray port bound to the loopback interface, no dashboard (a web server
        # that would also fetch nothing but listen on a port), one CPU per core this process may use.
        ray.init(num_cpus=cores(), include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        return True
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        raise RayBackendError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return True


def _stream(
    ray: Any, analyser: Analyser, photos: list[Photo], workers: int | None, chunk: int
) -> Iterator[Analysed]:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    # in input order, like the local pool (commit copies and journals in order); classify draws its own bar
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
    _quiet_ray_data()
    try:
        actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Rows are (position, pickled Photo): pickles cross untouched, whatever a record holds.
        items = [{"i": i, "photo": pickle.dumps(p)} for i, p in enumerate(photos)]
        per_block = max(chunk, min(MAX_BLOCK, math.ceil(len(items) / (actors * 8))))
        ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_block))
        del items  # in the object store now: not twice in the driver's memory
        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote arguments for 2.64 but has no named one for retries yet
            # (its own docs say to pass them so); the extra pins 2.60.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                RayAnalyser,
                fn_constructor_args=(unloaded(analyser, threads=1),),
                batch_size=chunk,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,  # one thread per actor, one actor per core: Ray places them, one core each
                max_restarts=-1,  # a lost actor is replaced (it loads its models again) ...
                max_task_retries=TASK_RETRIES,  # ... and its unfinished batches are run again
            )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for blob in batch["result"]:
                yield pickle.loads(blob)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def _quiet_ray_data() -> None:
    """Ray Data logs every run's plan and progress (and that its bars are off) to the console; classify's
    own output is enough. Errors still show; its file log (in the Ray session folder) keeps everything.
    """
    from ray.data._internal.logging import SessionFileHandler

    for h in logging.getLogger("ray.data").handlers:
        if not isinstance(h, SessionFileHandler):
            h.setLevel(logging.ERROR)


class RayAnalyser:
    """One Ray Data actor: loads the models once, then analyses batches of photos read from their paths."""

    def __init__(self, analyser: Analyser) -> None:
        from sorter import offline

        # the same offline switches as a local worker process: nothing reaches the network
        offline.prepare(ultralytics=False)
        self.analyser = analyser.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        done = self.analyser.run([pickle.loads(b) for b in batch["photo"]])
        return {"i": batch["i"], "result": np.array([pickle.dumps(a) for a in done], dtype=object)}
