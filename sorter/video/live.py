"""``photosort live``: faces in a camera, a stream or a video file, named as they move.

Each frame: if it is a frame to look for faces on, the face detector (YuNet + ONet, as classify
runs it) finds them in the frame and :class:`~sorter.video.track.FaceTracks` puts each on its track;
tracks that want a vote are embedded and scored (at most ``EMBED_BUDGET`` a frame); in between, the
tracks' boxes are predicted from their motion. Every frame gets its boxes drawn, with the track's
voted name (or stranger), its mask state and score, and the frames per second.

How often faces are looked for (``detect_every``; 0, the default: chosen as it goes): from the time
a frame takes without detection and the extra time a detection frame takes (both averaged), the
smallest n for which detecting on every n-th frame keeps up with the source's frame rate, at most a
quarter of a second apart. Frames a live source gives while the loop is busy are dropped, never
queued (:mod:`sorter.video.source`); a file with no window is processed frame by frame in file time.

Outputs are written under a temporary name and renamed when the video ends, Ctrl-C is pressed or
``stop`` is set: a half-written file is never left under its final name (and on an error, removed).
The annotated video has the frames that were processed, at the source's frame rate: every frame of
a file with no window; of a camera or stream, those not dropped (so it plays faster than it was).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sorter.video.source import FrameReader, VideoError, is_live
from sorter.video.track import Appearance, CutDetector, FaceTracks, Track

EMBED_BUDGET = 2  # faces embedded on one detection frame at most
MAX_GAP_S = 0.25  # faces are looked for at least this often
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


@dataclass
class Identifier:
    """The models that find faces in a frame and say who (or which mask state) each is."""

    model: Any  # FaceRecogniser (by person) or MaskSorter (by mask)
    accept: dict[str, float]
    by: str  # "person" or "mask"

    @property
    def stranger(self) -> str:
        return "stranger" if self.by == "person" else "unsure"

    def find(self, rgb: np.ndarray):
        from sorter.records import Decoded, Photo

        here = Path("frame")
        return self.model.find(Decoded(Photo(here, here, 0, 0), rgb, 1.0, (rgb.shape[1], rgb.shape[0])))

    def faces(self, found) -> list:
        """The faces of a frame (the face detector's, one box a face), unscored; ``.detected`` is each
        one's index in ``found``."""
        from sorter.pipeline.faces import merge

        return merge(found, [])

    def describe(
        self, found, keep: list[int]
    ) -> list[tuple[dict[str, float], str | None, float | None, float]]:
        """(scores, mask state, its probability, probability of being a face) of the faces ``keep``
        (indices into ``found``, one box a face, as :meth:`faces` gives them)."""
        from dataclasses import replace

        from sorter.boxes import from_detector_box
        from sorter.pipeline.faces import merge

        sub = replace(
            found, boxes=found.boxes[keep], scores=found.scores[keep], landmarks=found.landmarks[keep]
        )
        merged = merge(sub, [])
        assert [m.detected for m in merged] == list(range(len(keep)))  # one box a face already
        if self.by == "mask":
            faces = self.model.describe(sub, [])  # the same merge inside: the same faces, in order
            return [(f.scores, f.mask, f.mask_score, float(sum(f.scores.values()))) for f in faces]
        faces = self.model.describe(sub, merged)
        head = self.model.masks.head
        boxes = [from_detector_box(tuple(float(v) for v in b)) for b in sub.boxes]
        _, probs = head.predict(sub.rgb, boxes)
        face_p = np.atleast_1d(head.face_probability(probs))
        return [(f.scores, f.mask, f.mask_score, float(p)) for f, p in zip(faces, face_p, strict=True)]


def load_identifier(model: Path | None, by: str, threads: int | None = None) -> Identifier:
    """The recogniser of a model folder (``by="person"``), or the mask sorter (``by="mask"``)."""
    from sorter.io.bundle import Bundle
    from sorter.pipeline.masks import mask_sorter

    bundle = Bundle.load(model) if model is not None else None
    if by == "person" and bundle is not None and bundle.sorts_by == "mask":
        by = "mask"  # a model trained on mask-state labels sorts by mask
    if by == "mask":
        sorter = mask_sorter(bundle)
        sorter.threads = threads
        return Identifier(sorter.load(), sorter.thresholds()[0], "mask")
    if bundle is None:
        raise VideoError("live needs --model RUN (a trained model folder) to name faces, or --by mask")
    from sorter.pipeline.recognise import load_recogniser

    recogniser = load_recogniser(bundle, threads)
    if recogniser is None:
        raise VideoError(f"{model}: this model has no face recogniser (trained with --no-recogniser)")
    return Identifier(recogniser.load(), bundle.thresholds()[0], "person")


@dataclass
class Cadence:
    """Every how many frames faces are looked for (see the module docstring)."""

    fixed: int  # 0: chosen as it goes
    fps: float  # the frame rate to keep up with
    busy: float = 0.0  # seconds a frame takes without detection (moving average)
    detect: float = 0.0  # extra seconds a detection frame takes (moving average)
    every: int = 1

    @property
    def most(self) -> int:
        return max(1, int(self.fps * MAX_GAP_S))

    def done(self, seconds: float, detected: bool) -> None:
        if detected:
            self.detect = (
                seconds - self.busy if not self.detect else 0.8 * self.detect + 0.2 * (seconds - self.busy)
            )
        else:
            self.busy = seconds if not self.busy else 0.9 * self.busy + 0.1 * seconds
        if self.fixed:
            self.every = self.fixed
            return
        slack = 1.0 / self.fps - self.busy
        need = max(self.detect, 0.0) / slack if slack > 1e-3 else math.inf
        self.every = int(min(self.most, max(1, math.ceil(need))))


@dataclass
class LiveReport:
    source: str
    frames: int = 0  # processed
    read: int = 0  # from the source
    dropped: int = 0
    detections: int = 0  # frames faces were looked for on
    embeddings: int = 0
    seconds: float = 0.0
    every: int = 1  # the cadence at the end
    stopped: str = "end"  # end | interrupted | stopped | window closed | frames
    appearances: list[Appearance] = field(default_factory=list)
    out: Path | None = None
    timeline: Path | None = None
    warning: str | None = None
    tracks: FaceTracks | None = field(default=None, repr=False)  # every track, for measurement

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s), "
            f"faces looked for on {self.detections} (every {self.every} at the end), "
            f"{self.embeddings} faces embedded, {self.dropped} frames dropped; stopped: {self.stopped}"
        ]
        people: dict[str, list[Appearance]] = {}
        for a in self.appearances:
            people.setdefault(a.person, []).append(a)
        for person, rows in sorted(people.items()):
            total = sum(a.end_s - a.start_s for a in rows)
            lines.append(f"  {person}: {len(rows)} appearances, {total:.1f} s")
        for what, path in (("annotated video", self.out), ("timeline", self.timeline)):
            if path is not None:
                lines.append(f"{what}: {path}")
        if self.warning:
            lines.append(f"warning: {self.warning}")
        return "\n".join(lines)


class AtomicVideo:
    """A cv2.VideoWriter on a temporary name beside ``path``, renamed to ``path`` by :meth:`finish`."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        codec = CODECS.get(path.suffix.lower())
        if codec is None:
            raise VideoError(f"{path}: write the annotated video as {', '.join(CODECS)}")
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self._writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise VideoError(f"{path}: cannot write a video there")

    def write(self, bgr: np.ndarray) -> None:
        self._writer.write(bgr)

    def finish(self) -> None:
        self._writer.release()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self._writer.release()
        self.tmp.unlink(missing_ok=True)


def write_timeline(path: Path, rows: list[Appearance]) -> None:
    """``person,start_s,end_s,score``, one row per appearance, written atomically."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["person", "start_s", "end_s", "score"])
        for a in rows:
            w.writerow([a.person, f"{a.start_s:.3f}", f"{a.end_s:.3f}", f"{a.score:.4f}"])
    os.replace(tmp, path)


def _colour(name: str | None) -> tuple[int, int, int]:
    if name is None:
        return (255, 255, 255)
    if name in ("stranger", "unsure"):
        return (160, 160, 160)
    h = zlib.crc32(name.encode())
    return (64 + h % 192, 64 + (h >> 8) % 192, 64 + (h >> 16) % 192)


def draw(bgr: np.ndarray, tracks: FaceTracks, shown: list[Track], t: float, fps: float) -> None:
    """Each shown track's box, name and score, mask state; the frames per second."""
    import cv2

    for tr in shown:
        if tr.samples and not tracks.is_face(tr):
            continue  # a hand, a sleeve
        x0, y0, x1, y1 = (int(round(v)) for v in tr.box_at(t))
        name, score = tracks.label(tr)
        colour = _colour(name)
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, 2)
        text = "..." if name is None else f"{name} {score:.2f}"
        mask, mask_p = tr.mask_state()
        lines = [text] + ([f"{mask} {mask_p:.2f}"] if mask and tracks.stranger != "unsure" else [])
        for k, line in enumerate(lines):
            y = max(12, y0 - 6 - 16 * (len(lines) - 1 - k))
            cv2.putText(bgr, line, (x0, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(bgr, line, (x0, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    label = f"{fps:.1f} frames/s"
    cv2.putText(bgr, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(bgr, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 1, cv2.LINE_AA)


def _check_display() -> None:
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise VideoError("no display to open a window on: use --no-window (with --out and/or --timeline)")


def run_live(
    source: str | int | Path,
    *,
    model: Path | None = None,
    by: str = "person",
    window: bool = False,
    out: Path | None = None,
    timeline: Path | None = None,
    detect_every: int = 0,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    threads: int | None = None,
    log: Callable[[str], object] | None = None,
) -> LiveReport:
    """Track and name the faces of ``source`` (a camera index, ``rtsp://...`` or a video file).

    ``window``: show the annotated frames (q or Esc closes); ``out``: the annotated video; ``timeline``:
    the CSV of appearances. ``max_frames`` or ``stop`` end it early, as Ctrl-C does, with the outputs
    written. ``detect_every``: look for faces on every n-th frame (0: as often as keeps up).
    """
    from sorter.pipeline.pool import cores

    source = str(source)
    if window:
        _check_display()
    out, timeline = (Path(p) if p is not None else None for p in (out, timeline))
    for p in (out, timeline):
        if p is not None and not p.parent.is_dir():
            raise VideoError(f"{p.parent}: no such folder")
    ident = load_identifier(Path(model) if model is not None else None, by, threads or cores())
    live = is_live(source)
    reader = FrameReader(source, newest=live or window, paced=window and not live).start()
    report = LiveReport(source, out=out, timeline=timeline)
    writer: AtomicVideo | None = None
    try:
        writer = AtomicVideo(out, reader.fps, reader.size) if out is not None else None
        _loop(reader, ident, writer, window, detect_every, max_frames, stop, report)
    except BaseException:
        reader.stop()
        if writer is not None:
            writer.discard()
        raise
    reader.stop()
    report.read, report.dropped, report.warning = reader.read, reader.dropped, reader.error
    if writer is not None:
        writer.finish()
    if timeline is not None:
        write_timeline(timeline, report.appearances)
    if log is not None:
        log(report.summary())
    return report


def _loop(
    reader: FrameReader,
    ident: Identifier,
    writer: AtomicVideo | None,
    window: bool,
    detect_every: int,
    max_frames: int | None,
    stop: threading.Event | None,
    report: LiveReport,
) -> None:
    import cv2

    tracks = FaceTracks(ident.accept, stranger=ident.stranger, fps=reader.fps, exclusive=ident.by == "person")
    cadence = Cadence(detect_every, reader.fps)
    cuts = CutDetector()
    ticks: deque[float] = deque(maxlen=30)
    next_detect, start = 0, time.perf_counter()
    try:
        while not (stop is not None and stop.is_set()):
            if max_frames is not None and report.frames >= max_frames:
                report.stopped = "frames"
                break
            frame = reader.get()
            if frame is None:
                break
            busy = time.perf_counter()
            if cuts(frame.bgr):
                tracks.cut()
                next_detect = frame.index
            detected = frame.index >= next_detect
            if detected:
                rgb = cv2.cvtColor(frame.bgr, cv2.COLOR_BGR2RGB)
                found = ident.find(rgb)
                merged = ident.faces(found)
                ids = tracks.update(frame.index, frame.t, [m.face for m in merged])
                want = tracks.wanted(frame.t, ids, EMBED_BUDGET)
                if want:
                    keep = [k for k, tid in enumerate(ids) if tid in want]
                    answers = ident.describe(found, [merged[k].detected for k in keep])
                    for k, (scores, mask, mask_p, face_p) in zip(keep, answers, strict=True):
                        tracks.add_sample(ids[k], scores, mask, mask_p, face_p, t=frame.t)  # type: ignore[arg-type]
                    report.embeddings += len(keep)
                report.detections += 1
            ticks.append(time.perf_counter())
            fps = (
                (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
            )
            if writer is not None or window:
                draw(frame.bgr, tracks, tracks.shown(frame.t), frame.t, fps)
            if writer is not None:
                writer.write(frame.bgr)
            report.frames += 1
            if window:
                cv2.imshow("photosort live", frame.bgr)
                key = cv2.waitKey(1) & 0xFF
                if key in (27, ord("q")) or cv2.getWindowProperty("photosort live", cv2.WND_PROP_VISIBLE) < 1:
                    report.stopped = "window closed"
                    break
            cadence.done(time.perf_counter() - busy, detected)
            if detected:
                next_detect = frame.index + cadence.every
        else:
            report.stopped = "stopped"
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    finally:
        report.seconds = time.perf_counter() - start
        report.every = cadence.every
        report.appearances = tracks.appearances()
        report.tracks = tracks
        if window:
            cv2.destroyAllWindows()
