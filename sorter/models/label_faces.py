"""Faces boxed as labellers box them: a face detector learnt from labelled photos.

The face detector (YuNet, trained on WIDER FACE) draws tight boxes, brows to chin, and misses some
small, masked or turned faces that people label. This detector was trained on labelled boxes (the
face-mask set's train side, ``N % 8 != 0``: bench/mask_detector.py, which chose it on validation and
reproduces it): one class, "face", an ultralytics detector on torchvision's ImageNet MobileNetV2. Its
boxes join the face detector's as candidates of the mask sorter (:mod:`sorter.pipeline.masks`), where
the mask head says whether each is a face and what it wears, and one box a face is kept.

It ships as an OpenVINO IR with 8-bit weights (``sorter/assets/label_faces/``), each file checked by
its sha256 against ``label_faces.json``, and runs on the OpenVINO runtime alone
(:class:`sorter.models.yolo.OpenVinoYolo`: no torch).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sorter.errors import PhotosortError
from sorter.models.base import LazyModel

FOLDER = Path(__file__).resolve().parents[1] / "assets" / "label_faces"
META = "label_faces.json"


class LabelFacesFileError(PhotosortError):
    """The shipped detector's files are missing or not the ones its JSON names."""


@dataclass
class LabelFaces(LazyModel):
    """The learnt face detector, loaded on first :meth:`detect`; pickles unloaded into a worker."""

    folder: Path = FOLDER
    threads: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _ov: Any = field(default=None, repr=False)

    def _is_loaded(self) -> bool:
        return self._ov is not None

    def _load(self) -> None:
        from sorter.models.yolo import OpenVinoYolo

        self.meta = verified(self.folder)
        self._ov = OpenVinoYolo(self.folder, int(self.meta["imgsz"]), self.threads)

    def __getstate__(self) -> dict[str, Any]:
        return super().__getstate__() | {"_ov": None}  # a compiled network does not pickle: load again

    @property
    def min_score(self) -> float:
        return float(self.load().meta["min_score"])

    @property
    def key(self) -> str:
        """What the boxes depend on (for the index's analysis key)."""
        return str(self.load().meta["files"])

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labeller-style boxes ``[n, 4]`` (xyxy, px of ``rgb``) and their scores ``[n]``."""
        self.load()
        bgr = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
        boxes, scores, _ = self._ov.predict(bgr, self.min_score)
        return boxes.astype(np.float64), scores.astype(np.float64)


def verified(folder: Path) -> dict[str, Any]:
    """``label_faces.json`` of ``folder``, once every file it names has the sha256 it gives."""
    try:
        meta = json.loads((folder / META).read_text())
        for name, digest in meta["files"].items():
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
                raise LabelFacesFileError(
                    f"{folder / name}: not the file {META} names (sha256 differs): altered or replaced; "
                    "reinstall photosort or rebuild it with bench/mask_detector.py"
                )
    except (OSError, KeyError, ValueError) as e:
        raise LabelFacesFileError(f"learnt face detector missing or unreadable in {folder}: {e}") from e
    return meta
