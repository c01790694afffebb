"""Measuring a model: box metrics (ultralytics validation) and photo-level sorting metrics.

Photo-level is what the user feels: for each person, of the photos sorted into their folder how
many really show them (precision), and of the photos that show them how many reached the folder
(recall). Box AP says how well faces are found and named; photo P/R says how well the folders are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sorter.decide import decide
from sorter.decode import WORK_SIDE, DecodeError, decode_work, read_photo, shrink
from sorter.records import Face, LabelledImage, Photo


def box_metrics(
    model: Any, data_yaml: Path, classes: list[str], imgsz: int, device: str, batch: int = 8
) -> dict[str, Any]:
    """Precision, recall, AP50, AP50-95 overall and per class on the dataset's val split."""
    res = model.val(
        data=str(data_yaml),
        split="val",
        imgsz=imgsz,
        device=device,
        batch=batch,
        plots=False,
        verbose=False,
        workers=0,
        project=str(data_yaml.parent / "val"),
        exist_ok=True,
    )
    box = res.box
    per = {c: {"precision": 0.0, "recall": 0.0, "ap50": 0.0, "ap50_95": 0.0, "boxes": 0} for c in classes}
    counts = getattr(res, "nt_per_class", None)
    for i, k in enumerate(box.ap_class_index):
        name = classes[int(k)]
        per[name] = {
            "precision": float(box.p[i]),
            "recall": float(box.r[i]),
            "ap50": float(box.ap50[i]),
            "ap50_95": float(box.ap[i]),
            "boxes": int(counts[int(k)]) if counts is not None else None,
        }
    return {
        "precision": float(box.mp),
        "recall": float(box.mr),
        "mAP50": float(box.map50),
        "mAP50-95": float(box.map),
        "per_class": per,
    }


@dataclass
class PhotoScore:
    truth: set[str]
    accepted: list[str]
    uncertain: list[str]
    faces: list[Face]


def predict_labelled(
    images: list[LabelledImage], detector: Any, recogniser: Any, accept: dict, low: dict, max_side: int = 1280
) -> list[PhotoScore]:
    """Run the classify stages on labelled photos and keep the truth beside each decision.

    Decoded as classify decodes (the canonical size with a recogniser, ``max_side`` without; the
    detector gets its own smaller copy), so these figures describe what classify will do.
    ``detector`` None: the recogniser's face detector alone finds the faces.
    """
    out = []
    for img in images:
        st = img.image.stat()
        photo = Photo(path=img.image, rel=Path(img.image.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
        try:
            d = decode_work(
                photo, read_photo(photo)[1], side=WORK_SIDE if recogniser is not None else max_side
            )
        except DecodeError:
            continue
        faces = detector.detect([shrink(d, detector.imgsz)])[0] if detector is not None else []
        if recogniser is not None:
            faces = recogniser.recognise(d, faces)
        dec = decide(photo, faces, accept, low)
        out.append(PhotoScore({b.name for b in img.boxes}, dec.accepted, dec.uncertain, faces))
    return out


def photo_metrics(scores: list[PhotoScore], classes: list[str]) -> dict[str, Any]:
    per, tp_all, fp_all, fn_all = {}, 0, 0, 0
    for c in classes:
        tp = sum(1 for s in scores if c in s.accepted and c in s.truth)
        fp = sum(1 for s in scores if c in s.accepted and c not in s.truth)
        fn = sum(1 for s in scores if c not in s.accepted and c in s.truth)
        unc = sum(1 for s in scores if c in s.uncertain)
        per[c] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "photos": tp + fn,
            "sorted": tp + fp,
            "uncertain": unc,
        }
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    p, r = _ratio(tp_all, tp_all + fp_all), _ratio(tp_all, tp_all + fn_all)
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "photos": len(scores),
        "uncertain_photos": sum(1 for s in scores if s.uncertain),
        "per_person": per,
    }


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0
