"""The whole system measured as a detector of the labelled classes (issue 12).

classify's faces (the face detector's, YOLO's where it runs, each with the heads' scores) are scored
against the labelled boxes as ultralytics (COCO-style) scores a detector: each predicted face is a
box of every class whose confidence reaches 0.001 (ultralytics' validator keeps a box's classes the
same way, ``multi_label=True``), matched to the labels at IoU 0.50:0.95 by ultralytics' own matching,
and AP computed by ultralytics' ``ap_per_class``. Nothing here re-implements AP.

Face detectors draw boxes differently from labellers (brows to chin against forehead to chin, and
each labeller has a habit), so a face detector's box is first mapped to a labeller's by a mapping
learnt from labelled photos (:func:`learn_box_map`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from sorter.boxes import Box, from_detector_box, iou, sureness, to_detector_box
from sorter.records import Face

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


# A labeller's box is not a fixed fraction of a face detector's: measured on the face-mask set's train
# side (a validation fifth of it), labelled boxes of faces ~12 px tall reach 1.15 of the detector box's
# width, those of ~90 px 1.03, since a person drawing a tiny face draws it a pixel or two wide all round.
# So the map is kept per band of face height: quantile bands, each the median of at least
# MIN_PAIRS_PER_BAND pairs, interpolated between bands and held flat beyond. With 8 bands the validation
# fifth scored mAP50 0.755 against 0.743 for one band (3 bands 0.748, 5 bands 0.753).
MAX_BANDS, MIN_PAIRS_PER_BAND = 8, 40


# ultralytics' validator keeps every (box, class) pair above conf 0.001 (DetectionValidator: "0.001"
# when conf is unset); the system's multi-label detections use the same floor.
MIN_CONF = 0.001

BoxMap = Sequence[float] | Sequence[Sequence[float]]


def learn_box_map(pairs: Sequence[tuple[Box, Box]]) -> list[list[float]]:
    """How a labeller draws a face against the face detector's box, by face height.

    ``pairs``: (detector-style box, labelled box) of the same face. Returns rows ``[height, x0, y0, x1,
    y1]``: the labelled box as fractions of detector boxes of about that height (px), medians (they
    resist the odd wrong match), one row per height band (:data:`MAX_BANDS`). With no pairs, the inverse
    of :data:`sorter.boxes.LABEL_TO_DETECTOR_BOX`.
    """
    rel, heights = [], []
    for d, lb in pairs:
        w, h = d[2] - d[0], d[3] - d[1]
        if w > 0 and h > 0:
            rel.append(((lb[0] - d[0]) / w, (lb[1] - d[1]) / h, (lb[2] - d[0]) / w, (lb[3] - d[1]) / h))
            heights.append(h)
    if not rel:
        return [[1.0, *default_map()]]
    r, lh = np.array(rel), np.log(np.array(heights))
    bands = int(np.clip(len(r) // MIN_PAIRS_PER_BAND, 1, MAX_BANDS))
    order = np.argsort(lh, kind="stable")
    rows = []
    for part in np.array_split(order, bands):
        m = np.median(r[part], 0)
        rows.append([round(float(np.exp(np.median(lh[part]))), 2), *(round(float(v), 4) for v in m)])
    return rows


def default_map() -> tuple[float, float, float, float]:
    # the labelled box of a unit detector box, by the default mapping itself
    x0, y0, x1, y1 = from_detector_box((0.0, 0.0, 1.0, 1.0))
    return (x0, y0, x1, y1)


def fractions(box_map: BoxMap, height: float) -> tuple[float, float, float, float]:
    """The map's (x0, y0, x1, y1) fractions for a detector box ``height`` px tall. ``box_map``: rows from
    :func:`learn_box_map`, or the four fractions of one band (models from before the bands)."""
    if not len(box_map) or not isinstance(box_map[0], Sequence):
        a, b, c, d = (float(v) for v in box_map)  # type: ignore[arg-type]
        return (a, b, c, d)
    rows = np.asarray(box_map, np.float64)
    at = np.log(max(height, 1e-3))
    a, b, c, d = (float(np.interp(at, np.log(rows[:, 0]), rows[:, 1 + k])) for k in range(4))
    return (a, b, c, d)


def apply_box_map(dbox: Sequence[float], box_map: BoxMap) -> Box:
    x0, y0, x1, y1 = dbox
    w, h = x1 - x0, y1 - y0
    a, b, c, d = fractions(box_map, h)
    return (x0 + a * w, y0 + b * h, x0 + c * w, y0 + d * h)


def labeller_box(face: Face, box_map: BoxMap) -> Box:
    """The face's box as the labeller draws it: the one the mask head drew, where its head draws boxes
    (learnt from labelled boxes, face by face: bench/mask_box.py), else the face detector's box mapped
    by ``box_map`` (learnt from labels by face height)."""
    if face.label_box is not None:
        return face.label_box
    return apply_box_map(to_detector_box(face.xyxy), box_map)


def match_pairs(faces: list[Face], labels: list[Box], min_iou: float = 0.3) -> list[tuple[Box, Box]]:
    """(detector-style box, labelled box) pairs of the same face, greedily by IoU."""
    out, used = [], set()
    for lb in labels:
        target = to_detector_box(lb)
        best = max(
            (k for k in range(len(faces)) if k not in used),
            key=lambda k: iou(to_detector_box(faces[k].xyxy), target),
            default=None,
        )
        if best is not None and iou(to_detector_box(faces[best].xyxy), target) >= min_iou:
            used.add(best)
            out.append((to_detector_box(faces[best].xyxy), lb))
    return out


def predictions(
    faces: list[Face], classes: list[str], box_map: BoxMap, multi_label: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo's faces as detections: labeller-style boxes [n, 4], confidences [n], class indices [n].

    Boxes: :func:`labeller_box`. Confidence: a class's probability with the face detector's score
    (:func:`sorter.boxes.sureness`). ``multi_label`` (the default) scores as
    ultralytics' validator scores YOLO (``non_max_suppression(multi_label=True)`` at conf 0.001, the
    protocol of every published mAP on the face-mask set): each face is one detection per class whose
    confidence reaches :data:`MIN_CONF`, so a face the head doubts between two states still counts, at
    its lower score, for the second. Otherwise each face is one box of its most likely class only. Faces
    whose best class is none of ``classes`` (a stranger) are not detections of any labelled class.
    """
    boxes, conf, cls = [], [], []
    for f in faces:
        known = {c: s for c, s in f.scores.items() if c in classes}
        if not known:
            continue
        box = labeller_box(f, box_map)
        best = max(known, key=known.__getitem__)
        for name in known if multi_label else [best]:
            c = sureness(known[name], f.det_score)
            if name == best or c >= MIN_CONF:
                boxes.append(box)
                conf.append(c)
                cls.append(classes.index(name))
    return (
        np.array(boxes, np.float64).reshape(-1, 4),
        np.array(conf, np.float64),
        np.array(cls, np.int64),
    )


def system_metrics(
    photos: list[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[tuple[Box, str]]]],
    classes: list[str],
) -> dict[str, Any]:
    """Box precision, recall, mAP50, mAP50-95 overall and per class, ultralytics' way.

    ``photos``: per photo, (predictions from :func:`predictions`, labelled boxes with class names).
    Also the precision-recall curve at IoU 0.5 per class (``pr_curve``: 101 recall points), for plots.
    """
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    matcher = SimpleNamespace(iouv=torch.tensor(IOU_THRESHOLDS))
    tps, confs, pcls, tcls = [], [], [], []
    for (boxes, conf, cls), truth in photos:
        order = np.argsort(-conf, kind="stable")
        boxes, conf, cls = boxes[order], conf[order], cls[order]
        t_cls = np.array([classes.index(n) for _, n in truth if n in classes], np.int64)
        t_box = np.array([b for b, n in truth if n in classes], np.float64).reshape(-1, 4)
        tcls.append(t_cls)
        if not len(cls):
            continue
        if len(t_cls):
            overlap = box_iou(torch.tensor(t_box), torch.tensor(boxes))
            correct = BaseValidator.match_predictions(
                matcher, torch.tensor(cls), torch.tensor(t_cls), overlap
            ).numpy()
        else:
            correct = np.zeros((len(cls), len(IOU_THRESHOLDS)), bool)
        tps.append(correct)
        confs.append(conf)
        pcls.append(cls)
    target = np.concatenate(tcls) if tcls else np.zeros(0, np.int64)
    per = {
        c: {"precision": 0.0, "recall": 0.0, "ap50": 0.0, "ap50_95": 0.0, "boxes": int((target == i).sum())}
        for i, c in enumerate(classes)
    }
    if not len(target) or not tps:
        return {"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50-95": 0.0, "per_class": per}
    tp, conf, pc = np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls)
    _, _, p, r, _, ap, present, *_rest, prec_values = ap_per_class(tp, conf, pc, target)
    curves = {}
    for k, c in enumerate(present):
        name = classes[int(c)]
        per[name].update(
            precision=round(float(p[k]), 4),
            recall=round(float(r[k]), 4),
            ap50=round(float(ap[k, 0]), 4),
            ap50_95=round(float(ap[k].mean()), 4),
        )
        curves[name] = [round(float(v), 4) for v in prec_values[k][::10]]
    return {
        "precision": round(float(p.mean()), 4),
        "recall": round(float(r.mean()), 4),
        "mAP50": round(float(ap[:, 0].mean()), 4),
        "mAP50-95": round(float(ap.mean()), 4),
        "per_class": per,
        "pr_curve": {
            "recall": [round(v, 2) for v in np.linspace(0, 1, 1000)[::10].tolist()],
            "precision": curves,
        },
    }
