"""MTCNN (facenet-pytorch), the face detector of recognisers trained before YuNet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sorter.models.base import LazyModel


@dataclass
class MtcnnDetector(LazyModel):
    """MTCNN face detector, lazily loaded.

    ``thresholds`` are lower than facenet-pytorch's defaults (0.6, 0.7, 0.7): with the defaults about
    10% of masked faces are rejected by the last stage; at (0.3, 0.4, 0.2) masked recall is ~98% for
    ~0.1 extra boxes per photo, and those extra boxes are harmless because the recogniser scores
    non-faces as strangers. ``max_side`` bounds the image MTCNN sees (cost grows with pixels).
    """

    min_face_size: int = 12
    thresholds: tuple[float, float, float] = (0.3, 0.4, 0.2)
    max_side: int = 640
    threads: int | None = None
    _model: Any = None

    def settings(self) -> dict[str, Any]:
        """What a recogniser stores about the detector its face vectors came from."""
        return {
            "thresholds": list(self.thresholds),
            "min_face_size": self.min_face_size,
            "max_side": self.max_side,
        }

    def _is_loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        import torch
        from facenet_pytorch.models.mtcnn import MTCNN  # not facenet_pytorch: skips InceptionResnet

        if self.threads:
            torch.set_num_threads(self.threads)
        self._model = MTCNN(
            keep_all=True,
            min_face_size=self.min_face_size,
            thresholds=list(self.thresholds),
            device="cpu",
        )

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``[n, 4]`` xyxy in the pixel coordinates of ``rgb`` and scores ``[n]`` in 0..1."""
        boxes, probs, _ = self.detect_landmarks(rgb)
        return boxes, probs

    def detect_landmarks(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`detect` plus five landmarks per face ``[n, 5, 2]``: the eyes (image-left first), the
        nose tip and the mouth corners; on a masked face the nose and mouth are MTCNN's best guess."""
        self.load()
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        img = rgb
        if s < 1.0:
            from PIL import Image

            img = np.asarray(
                Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            )
        import torch

        with torch.inference_mode():
            boxes, probs, points = self._model.detect(np.ascontiguousarray(img), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes = np.asarray(boxes, np.float32) / s
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes, np.asarray(probs, np.float32), np.asarray(points, np.float32) / s
