"""Finding the faces of one photo: the face detector's, with the YOLO detector's boxes merged in.

:func:`find` runs the face detector once on a photo; :func:`merge` folds the YOLO detector's boxes
into what it found. Kept apart so that measurement can find (and embed) a photo's faces once and
then score them with and without YOLO's boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sorter.boxes import from_detector_box, iou, template_landmarks, to_detector_box
from sorter.io.decode import canonical, shrink
from sorter.models.registry import FaceDetector
from sorter.records import Decoded, Face

MERGE_IOU = 0.4  # a YOLO box and a face detector box (both detector-style) are the same face at this IoU


@dataclass
class Detected:
    """The face detector's answer for one photo, in pixels of ``rgb`` (the canonical decode)."""

    rgb: np.ndarray
    scale: float  # full-size displayed px per px of rgb
    boxes: np.ndarray  # [n, 4] detector-style xyxy, px of rgb
    scores: np.ndarray  # [n]
    landmarks: np.ndarray  # [n, 5, 2], px of rgb


@dataclass
class Found:
    """One face to embed: the face record, its detector-style box and five landmarks in full-size px."""

    face: Face
    dbox: tuple[float, ...]
    landmarks: np.ndarray
    detected: int | None = None  # index into Detected.boxes when the face detector found it


def full_size(box: Sequence[float] | None, scale: float) -> tuple[float, float, float, float] | None:
    """A box in px of ``Detected.rgb`` in full-size displayed px (``scale``: ``Detected.scale``)."""
    if box is None:
        return None
    x0, y0, x1, y1 = (float(v) * scale for v in box[:4])
    return (x0, y0, x1, y1)


def find(detector: FaceDetector, image: Decoded) -> Detected:
    """Run the face detector on ``image``.

    A photo larger than the canonical decode (:func:`sorter.io.decode.canonical`) is reduced to it
    first, so the answer for a photo is the same however large it was decoded.
    """
    given = np.asarray(image.rgb)
    rgb, k = canonical(given)
    scale = float(image.scale) * given.shape[1] / rgb.shape[1]  # full-size px per px of rgb
    if k == 1:  # the face detector's input: the same reduced copy YOLO was given, when there is one
        view = shrink(image, detector.max_side)
    else:
        view = shrink(replace(image, rgb=rgb, scale=scale, views={}), detector.max_side)
    det, det_p, marks = detector.detect_landmarks(np.asarray(view.rgb))
    return Detected(
        rgb=rgb,
        scale=scale,
        boxes=det * (view.scale / scale),
        scores=det_p,
        landmarks=marks * (view.scale / scale),
    )


def merge(found: Detected, yolo: list[Face]) -> list[Found]:
    """The faces of a photo: ``yolo``'s boxes matched to the face detector's, then the face detector's
    other faces. Without YOLO boxes, simply every face the face detector found.

    YOLO boxes are labeller-style, the face detector's are tighter: compare like with like. YOLO may
    report one face twice (one box per class): duplicates fold into the stronger one. A YOLO box the
    face detector did not confirm gets landmarks where they usually sit in such a box.
    """
    det, scale = found.boxes, found.scale
    merged: list[Found] = []
    used: set[int] = set()
    for f in sorted(yolo, key=lambda f: -f.det_score):
        dbox = to_detector_box(f.xyxy)
        dup = next((m for m in merged if iou(m.dbox, dbox) >= MERGE_IOU), None)
        if dup is not None:
            for name, sc in f.scores.items():
                dup.face.scores[name] = max(sc, dup.face.scores.get(name, 0.0))
            continue
        j = max(
            (k for k in range(len(det)) if k not in used),
            key=lambda k: iou(det[k] * scale, dbox),
            default=None,
        )
        face = Face(xyxy=f.xyxy, det_score=f.det_score, scores=dict(f.scores), masked=f.masked)
        lm, matched = template_landmarks(dbox), None
        if j is not None and iou(det[j] * scale, dbox) >= MERGE_IOU:
            used.add(j)
            dbox = tuple(float(v) * scale for v in det[j])
            face.det_score = max(f.det_score, float(found.scores[j]))
            lm, matched = found.landmarks[j] * scale, j
        merged.append(Found(face, dbox, lm, matched))
    for j in range(len(det)):
        if j in used:
            continue
        dbox = tuple(float(v) * scale for v in det[j])
        if any(iou(dbox, m.dbox) >= MERGE_IOU for m in merged):
            continue
        face = Face(xyxy=from_detector_box(dbox), det_score=float(found.scores[j]))
        merged.append(Found(face, dbox, found.landmarks[j] * scale, j))
    return merged
