"""YuNet proposals checked by ONet: the default face detector (boxes + five landmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sorter.io.decode import reduce_to
from sorter.models.base import LazyModel
from sorter.models.onet import load_onet
from sorter.models.packaged import YUNET_FILE, YUNET_SHA256, packaged_model


@dataclass
class YuNetDetector(LazyModel):
    """YuNet proposes faces, MTCNN's last stage (ONet) checks the doubtful ones and places landmarks.

    Why: MTCNN's image pyramid costs ~220 ms a 640-px photo on one core, most of a photo's budget.
    YuNet (OpenCV Zoo) scans the same photo in ~20 ms but scores masked faces low: at its usual 0.3 it
    finds only ~75% of them. So it proposes at a very low score, and ONet, run on a 48-px crop of each
    proposal (~1 ms), keeps a proposal when it says face (>= ``verify_at``) or YuNet itself was sure
    (>= ``sure_at``). The three thresholds were chosen on real photos (bench/face_geometry.py: a grid
    on 208 validation photos of the face-mask set's train side, the most labelled faces >= 16 px found
    with no more other boxes than before): 615 of 638 faces >= 16 px found (the earlier thresholds,
    fitted on make_library.py photos: 612), 8.3 other boxes a photo, mostly hands and clothing (10.9).
    The grid's best also moved ONet's crop (1.0 / 0.1: one face more, 8.9 other boxes), but the crop
    decides where the landmarks fall, which that grid does not measure, and on the benchmark's drawn
    masks identity recall was 0.945 with all five moved, 0.966 with all five as before (the crop alone
    not measured apart): the crop below is still the one fitted on
    make_library.py photos, to be re-derived on real photos by a landmark criterion. Recognisers keep
    the settings they were trained with (stored in the model).

    Boxes and landmarks come from ONet, as MTCNN's do, so they mean the same as MTCNN's: detector-style
    boxes (see :func:`to_detector_box`) and five points (eyes, nose tip, mouth corners).
    """

    kind: str = "yunet+onet"
    propose_at: float = 0.05
    verify_at: float = 0.05
    sure_at: float = 0.3
    max_side: int = 640
    # Photos smaller than this (long side) are enlarged to it first; 0: never (recognisers trained before
    # it keep 0 through their stored settings; the default detector gets MIN_SIDE, sorter.models.registry)
    min_side: int = 0
    # ONet was trained on MTCNN's own square boxes, which sit a little tighter and lower on the face
    # than YuNet's: crop 0.9 x YuNet's box, 5% of its height lower (fitted on make_library.py photos,
    # see the class docstring).
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
    # OpenVINO's precision for YuNet: "fast" is the CPU's fastest (bf16 where it has AVX-512 BF16 or
    # AMX, else fp32), "f32" as FaceDetectorYN computes. Measured on the face-mask set's 746 train-side
    # photos: the same faces (2,658 vs 2,656 of 2,724 labelled faces >= 16 px found, 11.27 vs 11.29
    # other boxes a photo); a 1,280-px photo's faces in 62 ms instead of 78 on a bf16 CPU
    # (bench/face_scale.py). Recognisers trained before keep fp32 (sorter.models.registry): their
    # stored vectors came from it.
    yunet_precision: str = "fast"
    threads: int | None = None
    # ONet as OpenVINO IR (:func:`export_onet`, kept in the model bundle): runs without torch, which
    # would cost ~0.5 GB in every worker process. Without it, facenet-pytorch's ONet (same weights).
    onet_ir: Path | None = field(default=None, repr=False)
    _yunet: Any = field(default=None, repr=False)
    _onet: Any = field(default=None, repr=False)

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
            "yunet_precision",
        )
        out = {k: getattr(self, k) for k in keys}
        if self.min_side:
            out["min_side"] = self.min_side
        return out

    def _is_loaded(self) -> bool:
        return self._yunet is not None

    def _load(self) -> None:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        path = packaged_model(YUNET_FILE, YUNET_SHA256)
        self._onet = load_onet(self.onet_ir, self.threads)
        if self.yunet_openvino:
            precision = None if self.yunet_precision == "fast" else self.yunet_precision
            self._yunet = _YuNetOpenVino(path, self.propose_at, self.threads, precision)
        else:
            # top-k 5000, NMS at IoU 0.3: YuNet's own defaults
            self._yunet = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.propose_at, 0.3, 5000)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, probs, _ = self.detect_landmarks(rgb)
        return boxes, probs

    def detect_landmarks(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``[n, 4]`` xyxy and scores ``[n]`` in the pixels of ``rgb``, five landmarks ``[n, 5, 2]``."""
        import cv2

        self.load()
        h, w = rgb.shape[:2]
        # the same reduction classify gives YOLO (decode.shrink), so training sees what classify sees
        img = np.ascontiguousarray(reduce_to(rgb, self.max_side))
        if self.min_side and max(img.shape[:2]) < self.min_side:
            # a small photo enlarged first: YuNet finds faces down to ~10 px of its input, so a face of
            # 8 px in a 400-px photo is found at 640
            k = self.min_side / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * k)), max(1, round(img.shape[0] * k)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        s = img.shape[1] / w
        self._yunet.setInputSize((img.shape[1], img.shape[0]))
        _, found = self._yunet.detect(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if found is None or not len(found):
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        x, y, bw, bh = (found[:, k] for k in range(4))
        side = np.maximum(bw, bh) * self.crop_scale
        squares = np.stack([x + bw / 2 - side / 2, y + bh / 2 + self.crop_shift * bh - side / 2, side], 1)
        boxes, points, prob = self._onet_pass(img, squares)
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
                    img, np.stack([*(centre - side[:, None] / 2).T, side], 1)
                )
                if k < passes - 1:
                    boxes = refined
        boxes, points = boxes / s, points / s
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes.astype(np.float32), prob.astype(np.float32), points.astype(np.float32)

    def _averaged_pass(self, img: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONet's refined boxes and landmarks for ``squares``, averaged over ``refine_jitter``-shifted
        crops (one ONet call for all of them)."""
        j = self.refine_jitter
        shifts = [(0.0, 0.0)] + ([(j, 0.0), (-j, 0.0), (0.0, j), (0.0, -j)] if j > 0 else [])
        n, k = len(squares), len(shifts)
        # [n, k, 3]: a face's k shifted squares share one side, so one blurred window (_cut48)
        groups = np.stack([squares + np.array([dx, dy, 0.0]) * squares[:, 2:3] for dx, dy in shifts], 1)
        boxes, points, _ = self._onet_pass(img, groups.reshape(n * k, 3), per_window=k)
        return boxes.reshape(n, k, 4).mean(1), points.reshape(n, k, 5, 2).mean(1)

    def _onet_pass(
        self, img: np.ndarray, squares: np.ndarray, per_window: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ONet on square crops ``[n, 3]`` (x0, y0, side) of ``img`` (black beyond its edges): refined
        boxes ``[n, 4]``, landmarks ``[n, 5, 2]`` and face probabilities ``[n]``. Each run of
        ``per_window`` squares has one side and is cut from one blurred window."""
        groups = squares.astype(np.float64).reshape(-1, per_window, 3)
        crops = [c for g in groups for c in _cut48(img, g)]
        batch = (np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) - 127.5) * 0.0078125
        reg, pts, prob = self._onet(batch)
        x0, y0, d = (squares[:, k : k + 1].astype(np.float32) for k in range(3))
        boxes = np.concatenate([x0, y0, x0 + d, y0 + d], 1) + reg * d  # ONet's box refinement
        points = np.stack([x0 + pts[:, :5] * d, y0 + pts[:, 5:] * d], 2)
        return boxes, points, prob[:, 1]


def _window(img: np.ndarray, x0: int, y0: int, wx: int, wy: int) -> np.ndarray:
    """The ``wx`` x ``wy`` pixels of ``img`` from (x0, y0), black where they fall outside it."""
    h, w = img.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + wx <= w and y0 + wy <= h:
        return img[y0 : y0 + wy, x0 : x0 + wx]
    out = np.zeros((wy, wx, *img.shape[2:]), img.dtype)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + wx, w), min(y0 + wy, h)
    if xb > xa and yb > ya:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = img[ya:yb, xa:xb]
    return out


class _YuNetOpenVino:
    """YuNet's network on the OpenVINO runtime, with what ``cv2.FaceDetectorYN`` does around it.

    The same interface as FaceDetectorYN (``setInputSize``, ``detect(bgr) -> (1, faces [n, 15])``) and
    the same faces (to ~1e-4 px: fp32, tested against it), ~2x faster on one core. OpenCV's steps:
    pad the image at the bottom and right to a multiple of 32, run the network on it as float BGR,
    score = sqrt(cls * obj), boxes and five points decoded on the grid of each stride (8, 16, 32), then
    NMS at IoU 0.3 over the proposals above the score threshold, at most 5,000.
    """

    STRIDES = (8, 16, 32)

    def __init__(
        self, path: Path, score_at: float, threads: int | None, precision: str | None = "f32"
    ) -> None:
        from sorter.models.runtime import compile_cpu

        self.score_at = score_at
        # None: OpenVINO's own choice for the CPU (bf16 where it has it)
        self._compiled = compile_cpu(path, threads, [1, 3, -1, -1], precision=precision)

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


def _cut48(img: np.ndarray, squares: np.ndarray) -> list[np.ndarray]:
    """The squares ``[k, 3]`` (x0, y0, side: pixel edges, sub-pixel; all of one side) of ``img`` as
    48x48 px crops.

    Why sub-pixel: cut at whole pixels, a box that moves by a hundredth of a pixel can move the crop by
    a whole one, and ONet's landmarks with it. A photo decoded two ways (reduced, or in full and then
    reduced) then got landmarks up to 6% of the face apart (1.9% at the 90th percentile), enough to
    flip a borderline photo. Here a larger face is blurred in proportion to its reduction (what the area
    resize of MTCNN's crops does, but shift-invariant), then warped to 48 px. The squares of one face
    (refinement's shifted crops) share one blurred window; beyond the edges of ``img`` it is black.
    (Blurring each crop's own window of the whole photo padded on every side, as this once did, cost
    ~25 ms of a 1280-px photo's 85.)
    """
    import cv2

    side = max(float(squares[0, 2]), 1.0)
    sigma = max(0.0, (side / 48.0 - 1.0) / 2.0)  # anti-aliasing for a reduction by side / 48
    xi = yi = 0
    if sigma > 0.3:
        pad = int(np.ceil(3 * sigma)) + 2
        xi, yi = int(np.floor(squares[:, 0].min())) - pad, int(np.floor(squares[:, 1].min())) - pad
        wx = int(np.ceil(squares[:, 0].max() + side)) + pad + 1 - xi
        wy = int(np.ceil(squares[:, 1].max() + side)) + pad + 1 - yi
        img = cv2.GaussianBlur(_window(img, xi, yi, wx, wy), (0, 0), sigma)
    s = 48.0 / side
    out = []
    for x0, y0 in squares[:, :2] - (xi, yi):
        # output pixel u (centre u + 0.5 in edge coordinates) samples x0 + (u + 0.5) / s, which is
        # OpenCV's pixel-centre coordinate x0 + (u + 0.5) / s - 0.5
        m = np.array([[s, 0.0, 0.5 * s - 0.5 - x0 * s], [0.0, s, 0.5 * s - 0.5 - y0 * s]])
        out.append(cv2.warpAffine(img, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
    return out
