"""Where frames come from: a camera (``0``), a stream (``rtsp://...``) or a video file, read in a thread.

The dropping policy lives here:

- A camera or a stream (and a file shown in a window, played at its own speed) never falls behind:
  the reader thread reads as fast as the source gives frames and keeps only the newest; a frame the
  loop had no time for is dropped (and counted), never queued.
- A file with no window is processed in file time: every frame, in order, times taken from the
  frame's number and the file's frame rate, so the annotated copy has every frame. The reader
  decodes ahead (at most a few frames) on the other core; the loop bounds its own work per frame by
  looking for faces only on some frames (:mod:`sorter.video.live`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sorter.errors import PhotosortError

DEFAULT_FPS = 30.0  # when a source does not say its frame rate
OPEN_TIMEOUT_MS, READ_TIMEOUT_MS = 10_000, 5_000  # a stream that does not answer is an error, not a hang
# FFmpeg's own messages ("moov atom not found") would go to stderr beside our one-line error; OpenCV
# reads this once, when it first uses FFmpeg, so it is set on import (set it yourself to see them).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class VideoError(PhotosortError):
    """A video source that cannot be opened or read, or an output that cannot be written."""


@dataclass
class Frame:
    index: int  # the frame's number in the source (gaps: dropped frames)
    t: float  # seconds from the start of the source
    bgr: np.ndarray


def is_live(source: str) -> bool:
    """A camera index or a network stream (as opposed to a file)."""
    return source.isdigit() or "://" in source


def _silent_cv2():
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


def open_capture(source: str) -> tuple[Any, float, tuple[int, int]]:
    """The opened ``cv2.VideoCapture``, its frame rate and frame size; :class:`VideoError` if none."""
    cv2 = _silent_cv2()
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise VideoError(f"camera {source}: cannot open it (no such camera, or another program uses it)")
        what = f"camera {source}"
    elif "://" in source:
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            READ_TIMEOUT_MS,
        ]
        cap, what = cv2.VideoCapture(source, cv2.CAP_FFMPEG, timeouts), source
    else:
        path = Path(source)
        if not path.is_file():
            raise VideoError(f"{source}: no such video file")
        cap, what = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG), source
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{what}: cannot open it as a video (not a video, damaged, or unreachable)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = DEFAULT_FPS
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return cap, fps, size


@dataclass
class FrameReader:
    """Reads ``source`` in a thread. ``newest``: keep only the latest frame (drop what the loop had no
    time for); else hand over every frame in order. ``paced``: a file read at its own speed."""

    source: str
    newest: bool
    paced: bool = False
    ahead: int = 4  # frames decoded ahead for in-order reading
    fps: float = DEFAULT_FPS
    size: tuple[int, int] = (0, 0)
    read: int = 0  # frames read from the source
    dropped: int = 0  # frames read and replaced by a newer one before the loop took them
    error: str | None = None
    _cap: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _queue: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=4))
    _slot: Frame | None = None
    _done: bool = False
    _t0: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> FrameReader:
        self._cap, self.fps, self.size = open_capture(self.source)
        self._queue = queue.Queue(maxsize=max(1, self.ahead))
        self._t0 = time.monotonic()
        first = self._read_one(0, self._t0)
        if first is None:
            self._cap.release()
            raise VideoError(f"{self.source}: no frame could be read (truncated or not a video)")
        self.size = (first.bgr.shape[1], first.bgr.shape[0])
        self._hand(first)
        self._thread = threading.Thread(target=self._run, name="photosort-frames", daemon=True)
        self._thread.start()
        return self

    def _read_one(self, index: int, t0: float) -> Frame | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        self.read += 1
        live = is_live(self.source)
        t = time.monotonic() - t0 if live else index / self.fps
        return Frame(index, t, bgr)

    def _hand(self, frame: Frame) -> None:
        if self.newest:
            with self._cond:
                if self._slot is not None:
                    self.dropped += 1
                self._slot = frame
                self._cond.notify_all()
            return
        while not self._stop.is_set():
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        t0 = self._t0
        index = 1
        try:
            while not self._stop.is_set():
                if self.paced:  # a file at its own speed: wait for the frame's time
                    delay = t0 + index / self.fps - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                frame = self._read_one(index, t0)
                if frame is None:
                    break
                self._hand(frame)
                index += 1
        except Exception as exc:  # a broken stream ends the video; the loop reports it
            self.error = f"{self.source}: reading stopped at frame {index}: {exc}"
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()
            if not self.newest:
                self._hand_end()

    def _hand_end(self) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> Frame | None:
        """The next frame to process (the newest, for a live source); None at the end."""
        if not self.newest:
            while True:
                try:
                    return self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        return None
        with self._cond:
            while self._slot is None and not self._done and not self._stop.is_set():
                self._cond.wait(0.1)
            frame, self._slot = self._slot, None
            return frame

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._cap is not None:
            self._cap.release()
