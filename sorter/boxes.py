"""Face-box geometry shared by every layer: box styles, IoU, landmark templates.

Coordinates are ``xyxy`` pixels. Two box styles exist: *labeller-style* (as drawn in labelImg: forehead
to chin; YOLO learns these) and *detector-style* (MTCNN/ONet's: brows to chin); names say which.
"""

from __future__ import annotations

from collections.abc import Sequence

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


# Where MTCNN's five landmarks sit in its own box, as fractions of the box (x, y); used for a face that
# has a box but no landmarks (a YOLO box MTCNN did not confirm, a labelled box MTCNN missed). Measured as
# the mean over the matched faces of a make_library.py library.
LANDMARKS_IN_BOX = ((0.31, 0.40), (0.69, 0.40), (0.50, 0.58), (0.35, 0.78), (0.65, 0.78))


def template_landmarks(box: Box) -> np.ndarray:
    """Five landmarks ``[5, 2]`` placed where they usually are in a detector-style ``box``."""
    x0, y0, x1, y1 = box
    rel = np.array(LANDMARKS_IN_BOX, np.float32)
    return np.stack([x0 + rel[:, 0] * (x1 - x0), y0 + rel[:, 1] * (y1 - y0)], 1).astype(np.float32)
