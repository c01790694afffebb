"""Stage 3: find faces. The detector is an ultralytics YOLO model trained on the labels.

Its classes are whatever was labelled (children's names, or mask states), so each detection already
carries a class score; a recogniser (:mod:`sorter.recognise`) may refine who each face is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sorter import offline
from sorter.records import Decoded, Face


def pick_device(device: str | None = None) -> str:
    """'cpu' unless a GPU is there (or the user named a device)."""
    if device:
        return device
    try:
        import torch

        if torch.cuda.is_available():
            return "0"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
    except ImportError:
        pass
    return "cpu"


@dataclass
class YoloDetector:
    """Lazy wrapper: nothing heavy happens until the first :meth:`detect`."""

    weights: Path
    classes: list[str]
    imgsz: int = 640
    device: str | None = None
    min_score: float = 0.05  # keep weak boxes: the decision stage needs them for the review band
    # None: 1 on a CPU, where batching measured slower (140 vs 102 ms per 640-px image, YOLO11n); 8 on a GPU.
    batch: int | None = None
    _model: Any = None

    def load(self) -> YoloDetector:
        if self._model is None:
            offline.prepare()
            from sorter.bundle import load_yolo

            self._model = load_yolo(self.weights)
            self.device = pick_device(self.device)
            if self.batch is None:
                self.batch = 1 if self.device == "cpu" else 8
        return self

    def detect(self, images: list[Decoded]) -> list[list[Face]]:
        """Faces per image, boxes in full-size displayed coordinates."""
        if not images:
            return []
        self.load()
        # ultralytics expects numpy images as BGR (OpenCV order).
        arrays = [np.ascontiguousarray(d.rgb[..., ::-1]) for d in images]
        results = self._model.predict(
            arrays, imgsz=self.imgsz, conf=self.min_score, device=self.device, verbose=False, batch=self.batch
        )
        out: list[list[Face]] = []
        for decoded, res in zip(images, results, strict=True):
            faces = []
            boxes = res.boxes
            xyxy = boxes.xyxy.cpu().numpy() * decoded.scale
            conf = boxes.conf.cpu().numpy()
            cls = boxes.cls.cpu().numpy().astype(int)
            for b, c, k in zip(xyxy, conf, cls, strict=True):
                name = self.classes[k] if 0 <= k < len(self.classes) else str(k)
                faces.append(
                    Face(xyxy=tuple(float(v) for v in b), det_score=float(c), scores={name: float(c)})
                )
            out.append(faces)
        return out
