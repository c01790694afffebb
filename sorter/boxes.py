"""Face-box geometry shared by every layer: box styles, IoU, landmark templates.

Coordinates are ``xyxy`` pixels. Two box styles exist: *labeller-style* (as drawn in labelImg: forehead
to chin; YOLO learns these) and *detector-style* (MTCNN/ONet's: brows to chin); names say which.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]

# Where the face detector's box corners sit relative to a labeller's box (x0, y0, x1, y1, as fractions
# of the labelled box from its top-left corner): the embedder's landmark model expects detector-style
# boxes, so labeller-style boxes (labelImg's, YOLO's) are mapped first. Median over 2,467 real faces of
# the face-mask set's train side, labelled >= 16 px (bench/face_geometry.py, bench/results/
# face_geometry.json; IQR of y0 -0.24..-0.14): those labellers drew from the brows, so the detector's box
# starts above theirs. How a labeller draws differs from person to person, so training also learns the
# user's own style for its measurements (sorter.training.detection.learn_box_map).
LABEL_TO_DETECTOR_BOX = (-0.020, -0.188, 0.936, 0.875)


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


# Where the face detector's five landmarks sit in its own box, as fractions of the box (x, y); used for a
# face that has a box but no landmarks (a YOLO box the face detector did not confirm, a labelled box it
# missed). Medians over the same 2,467 real faces (bench/face_geometry.py; IQR about +-0.05 in x, +-0.03
# in y). The detector's box sits a little left of the face, hence the right eye at 0.76, not 0.69.
def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """The share of the smaller box that the two boxes have in common (1.0: one inside the other). Two
    boxes on one face overlap this way even when one is shifted to a cheek and their IoU is low."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / smaller) if smaller > 0 else 0.0


LANDMARKS_IN_BOX = ((0.322, 0.391), (0.763, 0.381), (0.548, 0.600), (0.357, 0.779), (0.711, 0.778))


def template_landmarks(box: Box) -> np.ndarray:
    """Five landmarks ``[5, 2]`` placed where they usually are in a detector-style ``box``."""
    x0, y0, x1, y1 = box
    rel = np.array(LANDMARKS_IN_BOX, np.float32)
    return np.stack([x0 + rel[:, 0] * (x1 - x0), y0 + rel[:, 1] * (y1 - y0)], 1).astype(np.float32)


# Two boxes sharing half the smaller one are one face: children side by side in a crowd overlap a little
# at the edges, one face's two detections (the face detector's box shifted to a cheek) overlap by most.
SAME_FACE_OVERLAP = 0.5


def one_per_face(boxes: Sequence[Sequence[float]], strength: Sequence[float]) -> list[int]:
    """Indices of ``boxes`` to keep, one per face: strongest first, a box sharing at least
    :data:`SAME_FACE_OVERLAP` of the smaller one with a kept, stronger box is the same face, dropped.
    Kept indices in their original order. (Greedy NMS, by :func:`overlap` rather than IoU: a box shifted
    to a cheek has a low IoU with the face's own box but lies mostly inside it.)"""
    kept: list[int] = []
    for k in sorted(range(len(boxes)), key=lambda j: -strength[j]):
        if all(overlap(boxes[k], boxes[j]) < SAME_FACE_OVERLAP for j in kept):
            kept.append(k)
    return sorted(kept)


# How much the face detector's own score weighs in a detection's confidence beside the head's class
# probability (which already carries the head's face probability). Chosen on a validation fifth of the
# face-mask train side: power 1 mAP50 0.755, 0.5 0.762, 0.25 0.763, 0 (the head alone) 0.755.
DET_SCORE_POWER = 0.25


def sureness(score: float, det_score: float) -> float:
    """A face's confidence as a detection of a class: the class score times the face detector's score to
    the power :data:`DET_SCORE_POWER` (a likely non-face ranks below a sure face, but a masked face the
    detector is unsure of is not ranked below every bare one)."""
    return float(score) * min(1.0, max(float(det_score), 0.0)) ** DET_SCORE_POWER
