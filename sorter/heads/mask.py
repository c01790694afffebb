"""Mask state of a face: with_mask / without_mask / mask_weared_incorrect, with a probability each,
and whether the box is a face at all (the head's 4th output, ``no_face``).

A small CNN (trained from scratch by ``bench/mask_head.py`` on the train side of the CC0 Kaggle Face
Mask Detection set) shipped as ONNX in ``sorter/assets/mask_head.onnx``, with ``mask_head.json``
beside it (classes, input size, crop margin, normalisation, the file's sha256, provenance, figures).
It runs on the OpenVINO runtime (or OpenCV's dnn module); torch is never imported here.

Box convention: ``xyxy`` in the pixels of the image passed, *labeller style* (forehead to chin, as a
person draws a face in labelImg). Map a face detector's box first (``sorter.boxes.from_detector_box``
for MTCNN/YuNet-style boxes); the head was trained with box jitter (shift +-10%, scale 0.85-1.2,
aspect change) so a slightly-off box is fine.

Classes: the head's own, from its JSON: ``MASK_CLASSES + (NO_FACE,)`` for the shipped head (trained
with the face detector's non-face candidates as ``no_face``: hands, clothing, backs of heads), the three
``MASK_CLASSES`` for heads from before. :meth:`MaskHead.predict` gives probabilities over the head's
classes; :func:`face_probability` is 1 - p(no_face) (1.0 for a 3-class head); :func:`mask_state` and
:func:`mask_probabilities` read the mask states alone, renormalised over the three (the state *given*
that it is a face). A caller scoring boxes that may not be faces multiplies by the face probability.

Nothing heavy at import: OpenVINO / OpenCV load inside :meth:`MaskHead.load`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MASK_CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")  # the sorting classes
NO_FACE = "no_face"  # the head's 4th output: the box is not a face
HEAD_CLASSES = (*MASK_CLASSES, NO_FACE)  # the shipped head's outputs, in order
ASSETS = Path(__file__).resolve().parents[1] / "assets"
MODEL_PATH = ASSETS / "mask_head.onnx"
META_PATH = ASSETS / "mask_head.json"
DEFAULT_SIZE = 64
DEFAULT_MARGIN = 1.2
# Pixel normalisation on the 0-255 scale, per RGB channel: (x - mean) / std.
DEFAULT_MEAN = (127.5, 127.5, 127.5)
DEFAULT_STD = (64.0, 64.0, 64.0)


class MaskHeadFileError(RuntimeError):
    """The shipped model or its JSON is missing, unreadable, or does not match its checksum."""


def crop(
    rgb: np.ndarray, box: Sequence[float], size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN
) -> np.ndarray:
    """The square ``size`` x ``size`` RGB uint8 input of one face; training and inference both cut here.

    The square is centred on the box centre, its side ``margin`` x max(w, h) of the box; what falls
    outside the image is black. Faces smaller than the output are upsampled bilinearly with sub-pixel
    placement; larger ones are area-averaged down.
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty or invalid face box {tuple(box[:4])}")
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    H, W = rgb.shape[:2]
    cx, cy, side = crop_square(box, margin)
    if side <= size:
        # upsampling: exact sub-pixel placement (output pixel centres -> source coordinates)
        k = side / size
        m = np.array(
            [[k, 0.0, cx - side / 2.0 + 0.5 * k - 0.5], [0.0, k, cy - side / 2.0 + 0.5 * k - 0.5]],
            dtype=np.float64,
        )
        return cv2.warpAffine(
            np.ascontiguousarray(rgb),
            m,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    # downsampling: integer square, area-averaged; only the part inside the image is resized
    s = int(round(side))
    left, top = int(math.floor(cx - s / 2.0 + 0.5)), int(math.floor(cy - s / 2.0 + 0.5))
    out = np.zeros((size, size, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + s, W), min(top + s, H)
    if sx1 <= sx0 or sy1 <= sy0:
        return out
    scale = size / s
    ox0, oy0 = int(round((sx0 - left) * scale)), int(round((sy0 - top) * scale))
    ox1, oy1 = int(round((sx1 - left) * scale)), int(round((sy1 - top) * scale))
    ox1, oy1 = min(max(ox1, ox0 + 1), size), min(max(oy1, oy0 + 1), size)
    out[oy0:oy1, ox0:ox1] = cv2.resize(
        np.ascontiguousarray(rgb[sy0:sy1, sx0:sx1]), (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA
    )
    return out


def crop_square(box: Sequence[float], margin: float = DEFAULT_MARGIN) -> tuple[float, float, float]:
    """The square :func:`crop` cuts around ``box`` (xyxy): its centre x, centre y and side."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, margin * max(x1 - x0, y1 - y0)


def box_in_crop(crop_box: Sequence[float], box: Sequence[float], margin: float = DEFAULT_MARGIN) -> tuple:
    """``box`` (xyxy) in the units of the crop :func:`crop` cuts around ``crop_box``: its corners minus
    the crop's centre, over the crop's side. What a head with a box output predicts (the labelled box)."""
    cx, cy, side = crop_square(crop_box, margin)
    return ((box[0] - cx) / side, (box[1] - cy) / side, (box[2] - cx) / side, (box[3] - cy) / side)


def box_from_crop(crop_box: Sequence[float], t: Sequence[float], margin: float = DEFAULT_MARGIN) -> tuple:
    """The inverse of :func:`box_in_crop`: a box in crop units back to the image's pixels (xyxy)."""
    cx, cy, side = crop_square(crop_box, margin)
    return tuple(float(v) for v in (cx + t[0] * side, cy + t[1] * side, cx + t[2] * side, cy + t[3] * side))


def to_input(
    crops: np.ndarray | Sequence[np.ndarray],
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> np.ndarray:
    """N crops (N x S x S x 3 uint8 RGB) -> the model's float32 N x 3 x S x S input."""
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mask_probabilities(
    probs: Sequence[float] | np.ndarray, classes: Sequence[str] = MASK_CLASSES
) -> np.ndarray:
    """Probabilities over the head's ``classes`` (one face ``[k]`` or ``[n, k]``) -> the three mask
    states' in MASK_CLASSES order, renormalised to sum to 1 (the state given that it is a face; all
    zero where they were all zero)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[-1] != len(classes):
        raise ValueError(f"expected {len(classes)} probabilities, got {p.shape[-1]}")
    m = p[..., [list(classes).index(c) for c in MASK_CLASSES]]
    tot = m.sum(-1, keepdims=True)
    return np.divide(m, tot, out=np.zeros_like(m), where=tot > 0)


def face_probability(
    probs: Sequence[float] | np.ndarray, classes: Sequence[str] = HEAD_CLASSES
) -> float | np.ndarray:
    """1 - p(no_face): the probability that the box is a face (one face: a float; ``[n, k]``: ``[n]``).
    1.0 for a head without no_face (``classes`` = MASK_CLASSES, 3 probabilities)."""
    p = np.asarray(probs, dtype=np.float64)
    if NO_FACE not in classes:
        if len(classes) == len(HEAD_CLASSES) and p.shape[-1] == len(classes):
            raise ValueError(f"classes {tuple(classes)} have no {NO_FACE!r}")
        out = np.ones(p.shape[:-1])
    else:
        if p.shape[-1] != len(classes):
            raise ValueError(f"expected {len(classes)} probabilities, got {p.shape[-1]}")
        out = 1.0 - p[..., list(classes).index(NO_FACE)]
    return float(out) if out.ndim == 0 else out


def mask_state(
    probs: Sequence[float] | np.ndarray, classes: Sequence[str] = MASK_CLASSES
) -> tuple[str, float]:
    """One face's probabilities over ``classes`` -> (most likely mask state, its probability among the
    three mask states). no_face is ignored: the state is never "no_face", and its probability is
    renormalised over the mask states (the state given that it is a face; see :func:`face_probability`
    for whether it is one). With a 3-class head: the argmax and its probability, as before."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    m = mask_probabilities(p, classes)
    i = int(m.argmax())
    return MASK_CLASSES[i], float(m[i])


def box_outputs(meta: dict[str, Any]) -> int:
    """How many box outputs follow a head's logits, from its JSON: 4 for a head that also draws the
    face's box (``"box": {"outputs": 4, ...}``), 0 for one without (every head before box outputs)."""
    return int((meta.get("box") or {}).get("outputs", 0))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MaskHead:
    """The shipped mask-state head. Thread-safe; loads on first use (or call :meth:`load`).

    ``threads``: OpenVINO/OpenCV inference threads (None: the runtime's default; the pipeline's
    worker processes pass 1). ``backend``: "openvino" (default) or "cv2" (OpenCV dnn).
    ``precision``: OpenVINO inference precision hint; None (the default): what the head's JSON says
    (``inference_precision``), else "f32": the small CNN is tiny, and bf16 on AVX-512 BF16/AMX CPUs buys
    it nothing measurable while shifting scores slightly; the MobileNetV2 head says "fast" (OpenVINO's
    own choice: bf16 on such CPUs, f32 elsewhere), measured by bench/mask_head.py.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        meta_path: str | Path | None = None,
        threads: int | None = None,
        backend: str = "openvino",
        precision: str | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else MODEL_PATH
        if meta_path is None:
            meta_path = self.model_path.with_suffix(".json")
        self.meta_path = Path(meta_path)
        if backend not in ("openvino", "cv2"):
            raise ValueError(f"backend must be 'openvino' or 'cv2', not {backend!r}")
        self.threads = threads
        self.backend = backend
        self.precision = precision
        self.classes: tuple[str, ...] = MASK_CLASSES
        self.size = DEFAULT_SIZE
        self.margin = DEFAULT_MARGIN
        self.mean: tuple[float, ...] = DEFAULT_MEAN
        self.std: tuple[float, ...] = DEFAULT_STD
        self.meta: dict[str, Any] = {}
        self.n_box = 0  # 4 for a head that also draws the face's box (after its logits), else 0
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._run: Any = None

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> MaskHead:
        """Read the JSON, verify the ONNX file's sha256 against it, compile. Cheap after the first call."""
        if self._run is not None:
            return self
        with self._lock:
            if self._run is not None:
                return self
            meta = self._read_meta()
            try:
                data = self.model_path.read_bytes()
            except OSError as e:
                raise MaskHeadFileError(
                    f"mask head model missing or unreadable: {self.model_path} ({e})"
                ) from e
            digest = sha256_bytes(data)
            if digest != meta.get("sha256"):
                raise MaskHeadFileError(
                    f"mask head model {self.model_path} does not match its checksum in {self.meta_path} "
                    f"(sha256 {digest}, expected {meta.get('sha256')}): the file was altered or replaced; "
                    "reinstall photosort or retrain it with bench/mask_head.py"
                )
            self.meta = meta
            self.classes = tuple(meta["classes"])
            self.size = int(meta["input"]["size"])
            self.margin = float(meta["crop"]["margin"])
            self.mean = tuple(float(v) for v in meta["normalisation"]["mean"])
            self.std = tuple(float(v) for v in meta["normalisation"]["std"])
            self.n_box = box_outputs(meta)
            # compile from the bytes just verified, not from the path again
            self._run = (
                self._compile_openvino(data) if self.backend == "openvino" else self._compile_cv2(data)
            )
        return self

    def _read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except OSError as e:
            raise MaskHeadFileError(
                f"mask head description missing or unreadable: {self.meta_path} ({e})"
            ) from e
        except ValueError as e:
            raise MaskHeadFileError(f"mask head description {self.meta_path} is not valid JSON ({e})") from e
        for key in ("sha256", "classes", "input", "crop", "normalisation"):
            if key not in meta:
                raise MaskHeadFileError(f"mask head description {self.meta_path} has no {key!r}")
        return meta

    def _compile_openvino(self, data: bytes) -> Any:
        from sorter import offline

        offline.prepare(ultralytics=False)  # OpenVINO's telemetry made unimportable before it loads
        import openvino as ov

        core = ov.Core()
        model = core.read_model(data, ov.Tensor(np.empty(0, np.uint8)))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        precision = self.precision or str(self.meta.get("inference_precision", "f32"))
        if precision != "fast":
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.outputs[0]

        def run(x: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: x})[output], dtype=np.float32)

        return run

    def _compile_cv2(self, data: bytes) -> Any:
        import cv2

        if self.threads:
            cv2.setNumThreads(int(self.threads))
        net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))

        def run(x: np.ndarray) -> np.ndarray:
            net.setInput(x)
            return np.array(net.forward(), dtype=np.float32)

        return run

    # -- inference -----------------------------------------------------------------------------
    def face_probability(self, probs: Sequence[float] | np.ndarray) -> float | np.ndarray:
        """1 - p(no_face) of probabilities from this head (1.0 for a 3-class head)."""
        self.load()
        return face_probability(probs, self.classes)

    def mask_probabilities(self, probs: Sequence[float] | np.ndarray) -> np.ndarray:
        """The three mask states' probabilities (MASK_CLASSES order), renormalised over them."""
        self.load()
        return mask_probabilities(probs, self.classes)

    def crop(self, rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """This head's input crop of one face (see :func:`crop`)."""
        self.load()
        return crop(rgb, box, self.size, self.margin)

    def predict_crops(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [n, len(classes)] for crops made by :meth:`crop`."""
        return self._infer(crops)[0]

    def _infer(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [n, len(classes)] and box outputs [n, n_box] (crop units) of crops."""
        self.load()
        x = to_input(crops, self.mean, self.std)
        width = len(self.classes) + self.n_box
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, self.n_box), np.float32)
        with self._run_lock:  # one infer request (or cv2 net) shared by the threads of a process
            out = self._run(x).reshape(len(x), width)
        return softmax(out[:, : len(self.classes)]), out[:, len(self.classes) :]

    def predict(
        self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """Faces of one RGB uint8 image -> (mask state of each, probabilities [n, len(classes)] in
        ``classes`` order: 4 with no_face for the shipped head).

        The label is the best *mask* state (:func:`mask_state`, never "no_face"); whether the box is
        a face at all: :meth:`face_probability` of its probabilities. ``boxes_xyxy``: labeller-style
        face boxes in this image's pixels. Boxes with no area get label "" and all-zero probabilities.
        """
        labels, probs, _ = self.predict_boxes(rgb, boxes_xyxy)
        return labels, probs

    def predict_boxes(
        self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray
    ) -> tuple[list[str], np.ndarray, list[tuple[float, float, float, float] | None]]:
        """As :meth:`predict`, and each face's box as a labeller draws it (xyxy in ``rgb`` pixels), from a
        head with a box output (:func:`box_from_crop`); None for every face with a head without one,
        and for boxes with no area."""
        self.load()
        boxes = [tuple(float(v) for v in b[:4]) for b in boxes_xyxy]
        ok = [i for i, b in enumerate(boxes) if b[2] > b[0] and b[3] > b[1] and all(map(math.isfinite, b))]
        probs = np.zeros((len(boxes), len(self.classes)), np.float32)
        drawn: list[tuple[float, float, float, float] | None] = [None] * len(boxes)
        if ok:
            probs[ok], raw = self._infer(np.stack([crop(rgb, boxes[i], self.size, self.margin) for i in ok]))
            if self.n_box:
                for k, i in enumerate(ok):
                    drawn[i] = box_from_crop(boxes[i], raw[k], self.margin)
        valid = set(ok)
        labels = [mask_state(probs[i], self.classes)[0] if i in valid else "" for i in range(len(boxes))]
        return labels, probs, drawn
