"""The analyse step: photo -> faces with scores (decode -> detect -> recognise), in worker processes.

One :class:`Analyser` serves classify (:func:`analyse_all`, on a pool of workers), and training's and
evaluate's measurement (:meth:`Analyser.both`): the same decoding, the same models, the same faces.
Only small records cross process boundaries (a :class:`~sorter.records.Photo` in, :class:`Analysed`
out): decoded pixels never leave the worker, which keeps memory bounded however large the library is.
The main process keeps what must be serial and ordered: the index, the decision and the copies.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sorter.io.bundle import Bundle
from sorter.io.decode import WORK_SIDE, DecodeError, decode_work, read_photo, shrink
from sorter.io.formats import is_video_name
from sorter.models.yolo import YoloDetector, pick_device
from sorter.pipeline.faces import merge
from sorter.pipeline.masks import MaskSorter
from sorter.pipeline.pool import (
    MIN_PHOTOS_PER_WORKER,
    WorkersFailed,
    batches,
    cores,
    default_workers,
    parallel_map,
)
from sorter.pipeline.recognise import FaceRecogniser, load_recogniser
from sorter.records import Decoded, Face, Photo


@dataclass
class Analysed:
    """What the analyse step made of one photo. Exactly one of ``faces``/``error``/``read_error`` is
    set, unless ``known`` (its content hash is already in the index: a renamed or moved photo)."""

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

    bundle: Bundle | None  # None: no trained model (sorting by mask state with the shipped head)
    min_score: float
    device: str | None = None
    batch: int | None = None
    known: frozenset[str] = frozenset()  # content hashes the index already has faces for
    threads: int | None = None
    use_detector: bool = True  # False: only the recogniser's face detector looks for faces
    yolo: object = None  # an ultralytics YOLO already loaded, to reuse instead of loading the weights again
    masks: MaskSorter | None = None  # sort by mask state instead of by person
    # Videos: (recogniser or mask sorter, photo, known hashes) -> Analysed, given by a higher layer
    # (sorter.video.library.analyse_video, bound to the thresholds); None: videos are not analysed.
    video: Callable[..., Analysed] | None = None
    _detector: YoloDetector | None = None
    _recogniser: FaceRecogniser | MaskSorter | None = None
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
        if self.masks is not None:
            self._recogniser = dataclasses.replace(self.masks, threads=self.threads)
        else:
            assert self.bundle is not None
            self._recogniser = load_recogniser(self.bundle, self.threads)
        self._loaded = True
        if self._recogniser is None:
            assert self.bundle is not None
            # Without a recogniser only the detector looks at the photo: decode no larger than it needs.
            self._side = self.bundle.imgsz
        if not self.use_detector and self._recogniser is not None:
            return  # not even loaded: no memory, no start-up
        assert self.bundle is not None
        device = pick_device(self.device)
        weights, backend = self.bundle.detector(device)
        if self.yolo is not None:
            weights, backend = self.bundle.weights_path, "ultralytics"
        self._detector = YoloDetector(
            weights=weights,
            classes=self.bundle.classes,
            imgsz=self.bundle.imgsz,
            device=device,
            batch=self.batch,
            min_score=self.min_score,
            threads=self.threads,
            backend=backend,
            _model=self.yolo,
        )

    def load(self) -> Analyser:
        """Load the models now rather than on the first photo (a worker that starts once, then serves)."""
        self._load()
        return self

    def _decode(self, a: Analysed) -> Decoded | None:
        ts = time.perf_counter()
        try:
            # one read: the bytes that are hashed are the bytes decoded
            a.sha, data = read_photo(a.photo)
            if a.sha in self.known:
                a.known = True
                return None
            return decode_work(a.photo, data, side=self._side)
        except DecodeError as exc:
            a.error = str(exc)
        except OSError as exc:
            a.read_error = f"cannot read: {exc.strerror or exc}"
        finally:
            a.seconds["decode"] = time.perf_counter() - ts
        return None

    def _yolo(self, decoded: list[Decoded]) -> list[list[Face]]:
        assert self._detector is not None
        # The detector wants its own input size; the recogniser gets the larger canonical decode.
        return self._detector.detect([shrink(d, self._detector.imgsz) for d in decoded])

    def run(self, photos: list[Photo]) -> list[Analysed]:
        """Analyse a small batch of photos (the detector sees them as one batch)."""
        self._load()
        out, stills = [], []
        for p in photos:
            if self.video is not None and is_video_name(p.path.name):
                out.append(self.video(self._recogniser, p, self.known))
            else:
                out.append(Analysed(photo=p))
                stills.append(out[-1])
        todo = [(a, d) for a in stills if (d := self._decode(a)) is not None]
        if not todo:
            return out
        if self._detector is not None:
            ts = time.perf_counter()
            found = self._yolo([d for _, d in todo])
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

    def both(self, photo: Photo) -> tuple[list[Face], list[Face] | None] | None:
        """One photo's faces as classify finds them with YOLO's boxes merged in, and (with a recogniser)
        with the face detector's alone; None when the photo cannot be read.

        The photo is decoded once and each face the face detector found is embedded once; only YOLO's
        extra faces are embedded on their own.
        """
        self._load()
        d = self._decode(Analysed(photo=photo))
        if d is None:
            return None
        yolo = self._yolo([d])[0] if self._detector is not None else []
        if self._recogniser is None:
            return yolo, None
        if isinstance(self._recogniser, MaskSorter):
            found = self._recogniser.find(d)  # the face detector runs once for both answers
            faces = self._recogniser.describe(found, yolo)
            return faces, (self._recogniser.describe(found, []) if self._detector is not None else faces)
        found = self._recogniser.find(d)
        vectors: dict = {}
        alone = self._recogniser.describe(found, merge(found, []), vectors)
        if self._detector is None:
            return alone, alone
        return self._recogniser.describe(found, merge(found, yolo), vectors), alone


def unloaded(analyser: Analyser, threads: int) -> Analyser:
    """A copy of ``analyser`` to send to a worker process, with ``threads`` of its own.

    Its models are not loaded (a loaded one holds locks and sessions that cannot be sent to a process);
    each worker loads them once. The caller's analyser is left as it was.
    """
    masks = analyser.masks and dataclasses.replace(analyser.masks, _detector=None, _masks=None)
    return dataclasses.replace(
        analyser, threads=threads, masks=masks, _detector=None, _recogniser=None, _loaded=False
    )


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
    todo = batches(photos, max(1, chunk))
    if workers >= 2:
        pooled = unloaded(analyser, threads=max(1, cores() // workers))
        done = 0
        try:
            for results in parallel_map(_run, todo, workers, _init_worker, (pooled,)):
                done += len(results)
                yield from results
            return
        except WorkersFailed as exc:
            (log or print)(f"worker processes failed ({exc}); going on in this process")
            todo = batches(photos[done:], max(1, chunk))
    for b in todo:
        yield from analyser.run(b)


_WORKER: Analyser | None = None


def _init_worker(analyser: Analyser) -> None:
    global _WORKER
    _WORKER = analyser


def _run(photos: list[Photo]) -> list[Analysed]:
    assert _WORKER is not None
    return _WORKER.run(photos)
