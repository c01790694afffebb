"""Stage 3: find faces. The detector is an ultralytics YOLO model trained on the labels.

Its classes are whatever was labelled (children's names, or mask states), so each detection already
carries a class score; a recogniser (:mod:`sorter.pipeline.recognise`) may refine who each face is.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sorter import offline
from sorter.errors import UnknownKind
from sorter.models.runtime import compile_cpu
from sorter.records import Decoded, Face

ULTRALYTICS, OPENVINO = "ultralytics", "openvino"
BACKENDS = (ULTRALYTICS, OPENVINO)


def min_box_score(recogniser: bool, low: dict[str, float]) -> float:
    """The weakest YOLO box classify keeps (train and evaluate measure with the same rule).

    With a recogniser, it finds faces itself and decides who they are: YOLO only adds confident boxes.
    Without one, every box that could reach a person's review band is kept.
    """
    return 0.25 if recogniser else max(0.001, min([0.05, *low.values()]))


def pick_device(device: str | None = None) -> str:
    """'cpu' unless a GPU is there (or the user named a device).

    Importing torch costs ~0.5 GB of memory in every process that does it, so a machine with no GPU
    device node at all is answered without asking torch.
    """
    if device:
        return device
    if not _may_have_gpu():
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return "0"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
    except ImportError:
        pass
    return "cpu"


def _may_have_gpu() -> bool:
    if sys.platform.startswith("linux"):  # NVIDIA (/dev/nvidia0...) or AMD ROCm (/dev/kfd)
        return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()
    if sys.platform == "darwin":
        return platform.machine() == "arm64"  # Apple silicon: MPS
    return True  # elsewhere torch is the one to ask


class OpenVinoYolo:
    """YOLO's OpenVINO export run by the OpenVINO runtime alone, without ultralytics or torch.

    Why not ultralytics' own OpenVINO backend: it imports torch, ~0.5 GB in each worker process, for
    nothing the export needs. This does what ultralytics' predictor does for a static 640x640 export:
    letterbox (resize keeping the aspect ratio, pad with grey 114; for a dynamic export only to the next
    multiple of 32), RGB in 0..1, the network, then
    per-class NMS at IoU 0.7 keeping at most 300 boxes. ``tests/test_export.py`` checks it finds the same
    boxes as ultralytics on the same export.
    """

    IOU = 0.7
    MAX_DET = 300
    STRIDE = 32  # YOLO11's largest stride

    def __init__(self, folder: Path, imgsz: int, threads: int | None = None) -> None:
        # the .bin beside the .xml is read with it
        self.compiled = compile_cpu(next(Path(folder).glob("*.xml")), threads)
        shape = self.compiled.input(0).get_partial_shape()
        # A dynamic export takes the photo's own aspect (640x480, not 640x640: ~25% less work), padded to
        # a multiple of the network stride, as ultralytics' predictor does for dynamic exports.
        self.rect = not shape.is_static
        self.size = (imgsz, imgsz) if self.rect else (shape[2].get_length(), shape[3].get_length())  # (h, w)

    def predict(self, bgr: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``[n, 4]`` xyxy in ``bgr``'s pixels, scores ``[n]``, class indices ``[n]``."""
        import cv2

        h, w = bgr.shape[:2]
        th, tw = self.size
        r = min(th / h, tw / w)
        nw, nh = round(w * r), round(h * r)
        dw, dh = tw - nw, th - nh
        if self.rect:
            dw, dh = dw % self.STRIDE, dh % self.STRIDE
        dw, dh = dw / 2, dh / 2
        img = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else bgr
        top, bottom = round(dh - 0.1), round(dh + 0.1)
        left, right = round(dw - 0.1), round(dw + 0.1)
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
        x = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255.0
        out = next(iter(self.compiled(x).values()))[0]  # [4 + classes, anchors]
        scores_all = out[4:]
        cls = scores_all.argmax(0)
        score = scores_all[cls, np.arange(out.shape[1])]
        keep = score > conf
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int)
        cx, cy, bw, bh = out[:4, keep]
        score, cls = score[keep], cls[keep]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        # per-class NMS as ultralytics does it: boxes of different classes shifted apart
        shifted = xyxy + (cls[:, None] * 7680.0)
        order = _nms(shifted, score, self.IOU)[: self.MAX_DET]
        xyxy, score, cls = xyxy[order], score[order], cls[order]
        xyxy -= np.array([left, top, left, top], np.float32)
        xyxy /= r
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        return xyxy.astype(np.float32), score.astype(np.float32), cls.astype(int)


def _nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-score, kind="stable")
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(xyxy[i, 2], xyxy[rest, 2]) - np.maximum(xyxy[i, 0], xyxy[rest, 0]), 0, None)
        iy = np.clip(np.minimum(xyxy[i, 3], xyxy[rest, 3]) - np.maximum(xyxy[i, 1], xyxy[rest, 1]), 0, None)
        inter = ix * iy
        order = rest[inter / (area[i] + area[rest] - inter + 1e-9) <= iou]
    return np.array(keep, int)


@dataclass
class YoloDetector:
    """The trained YOLO detector, loaded on first :meth:`detect`."""

    weights: Path
    classes: list[str]
    imgsz: int = 640
    device: str | None = None
    min_score: float = 0.05  # keep weak boxes: the decision stage needs them for the review band
    # None: 1 on a CPU, where batching measured slower (140 vs 102 ms per 640-px image, YOLO11n); 8 on a GPU.
    batch: int | None = None
    threads: int | None = None  # CPU threads for the OpenVINO runtime (None: all)
    # ULTRALYTICS: the .pt weights through ultralytics (torch); OPENVINO: the export folder on the OpenVINO
    # runtime alone (sorter.io.bundle.Bundle.detector says which a bundle gives for a device)
    backend: str = ULTRALYTICS
    _model: Any = None  # an ultralytics YOLO already loaded may be handed in (measurement reuses its own)
    _ov: OpenVinoYolo | None = None

    def load(self) -> YoloDetector:
        self.device = pick_device(self.device)
        if self.batch is None:
            self.batch = 1 if self.device == "cpu" else 8
        if self._model is None and self._ov is None:
            if self.backend not in BACKENDS:
                raise UnknownKind("detector backend", self.backend, list(BACKENDS))
            if self.backend == OPENVINO:
                self._ov = OpenVinoYolo(Path(self.weights), self.imgsz, self.threads)
            else:
                self._model = load_yolo(self.weights)
        return self

    def detect(self, images: list[Decoded]) -> list[list[Face]]:
        """Faces per image, boxes in full-size displayed coordinates."""
        if not images:
            return []
        self.load()
        # ultralytics expects numpy images as BGR (OpenCV order).
        import cv2

        arrays = [cv2.cvtColor(np.ascontiguousarray(d.rgb), cv2.COLOR_RGB2BGR) for d in images]
        if self._ov is not None:
            return [
                self._faces(d, *self._ov.predict(a, self.min_score))
                for d, a in zip(images, arrays, strict=True)
            ]
        results = self._model.predict(
            arrays, imgsz=self.imgsz, conf=self.min_score, device=self.device, verbose=False, batch=self.batch
        )
        return [
            self._faces(
                d,
                r.boxes.xyxy.cpu().numpy(),
                r.boxes.conf.cpu().numpy(),
                r.boxes.cls.cpu().numpy().astype(int),
            )
            for d, r in zip(images, results, strict=True)
        ]

    def _faces(self, decoded: Decoded, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> list[Face]:
        faces = []
        for b, c, k in zip(xyxy * decoded.scale, conf, cls, strict=True):
            name = self.classes[k] if 0 <= k < len(self.classes) else str(k)
            faces.append(Face(xyxy=tuple(float(v) for v in b), det_score=float(c), scores={name: float(c)}))
        return faces


def load_yolo(weights: Path | str) -> Any:
    """An ultralytics YOLO from weights (of a verified bundle, or a .pt/.yaml the user named)."""
    offline.prepare()
    from ultralytics import YOLO

    return YOLO(str(weights))
