"""Measuring a model on labelled photos: box metrics (ultralytics validation) and photo-level sorting
metrics, with the same analyse step classify runs.

Photo-level is what the user feels: for each person, of the photos sorted into their folder how
many really show them (precision), and of the photos that show them how many reached the folder
(recall). Box AP says how well faces are found and named; photo P/R says how well the folders are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sorter.io.bundle import Bundle
from sorter.models.yolo import load_yolo, min_box_score, pick_device
from sorter.pipeline.analyse import Analyser
from sorter.pipeline.decide import decide
from sorter.pipeline.masks import mask_sorter
from sorter.records import Face, LabelledImage, Photo
from sorter.training.detection import learn_box_map, match_pairs, predictions, system_metrics
from sorter.training.tracking import Tracker


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
    boxes: list[tuple[tuple[float, float, float, float], str]] = field(default_factory=list)  # labelled


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


def analyse_labelled(
    bundle: Bundle, images: list[LabelledImage], device: str | None, yolo: Any = None
) -> tuple[list[PhotoScore], list[PhotoScore] | None]:
    """Sort labelled photos as classify would, keeping the truth beside each decision: with the YOLO
    detector's boxes merged in, and (with a recogniser) with the face detector's alone.

    One analyse step (:meth:`sorter.pipeline.analyse.Analyser.both`): each photo is decoded once and
    each face the face detector found is embedded once. Photos that cannot be read are left out.
    """
    accept, low = bundle.thresholds()
    masks = mask_sorter(bundle) if bundle.sorts_by == "mask" else None
    analyser = Analyser(
        bundle=bundle,
        device=device,
        min_score=min_box_score(bool(bundle.recogniser) or masks is not None, low),  # as classify runs it
        use_detector=True,
        yolo=yolo,
        masks=masks,
    )
    with_det: list[PhotoScore] = []
    alone: list[PhotoScore] = []
    for img in images:
        st = img.image.stat()
        photo = Photo(path=img.image, rel=Path(img.image.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
        faces = analyser.both(photo)
        if faces is None:
            continue
        truth = {b.name for b in img.boxes}
        boxes = [(b.xyxy, b.name) for b in img.boxes]
        for out, found in zip((with_det, alone), faces, strict=True):
            if found is not None:
                dec = decide(photo, found, accept, low, exclusive=masks is None)
                out.append(PhotoScore(truth, dec.accepted, dec.uncertain, found, boxes))
    return with_det, (alone if bundle.recogniser or masks is not None else None)


def measure(
    bundle: Bundle, data_yaml: Path, images: list[LabelledImage], device: str | None, choose: bool = False
) -> dict[str, Any]:
    """Box metrics and photo-level metrics of a bundle on the given labelled images.

    With a recogniser, photos are sorted with the YOLO detector's boxes merged in and with the face
    detector's alone (:func:`analyse_labelled`). ``choose``: set ``bundle.use_detector`` from that
    (:func:`choose_detector`). ``photo`` holds the figures of the way classify will run.
    """
    device = pick_device(device)
    model = load_yolo(bundle.weights_path)  # loaded once: validated here, then predicting below
    box = box_metrics(model, data_yaml, bundle.classes, bundle.imgsz, device)
    with_det, alone = analyse_labelled(bundle, images, device, yolo=model)
    photo = photo_metrics(with_det, bundle.classes)
    out: dict[str, Any] = {
        "detector": box,
        "photo": photo,
        "val_photos": len(images),
        "classes": bundle.classes,
        "threshold": bundle.threshold,
        "band": bundle.band,
    }
    ran = with_det
    if alone is not None:
        photo_alone = photo_metrics(alone, bundle.classes)
        use = choose_detector(photo, photo_alone)
        if choose:
            bundle.use_detector = use["used"]
        out["detector_use"] = use | {"used": bundle.use_detector}
        out["photo"] = photo if bundle.use_detector else photo_alone
        ran = with_det if bundle.use_detector else alone
    # the whole system as classify runs it, scored as a detector of the labelled classes
    box_map = bundle.box_map or learn_box_map([])
    out["system"] = system_metrics(
        [(predictions(s.faces, bundle.classes, box_map), s.boxes) for s in ran], bundle.classes
    )
    return out


def choose_detector(with_detector: dict[str, Any], alone: dict[str, Any]) -> dict[str, Any]:
    """Should classify run the YOLO detector beside the face detector? Only if it sorts better.

    Measured, not assumed: photo-level F1 on the validation photos with YOLO's boxes merged in against
    the face detector's alone. YOLO costs ~100 ms a photo on a CPU (more than decoding), and one trained
    from scratch on a CPU finds no face the face detector misses, so a tie means off. A detector from
    pretrained weights (``--model yolo11n.pt``) that finds faces the face detector misses earns its place.
    """
    f_with, f_alone = with_detector["f1"], alone["f1"]
    used = f_with > f_alone
    verdict = "better" if used else ("the same" if f_with == f_alone else "worse")
    return {
        "used": used,
        "photo_f1_with_detector": round(f_with, 4),
        "photo_f1_face_detector_alone": round(f_alone, 4),
        "reason": f"photo F1 with the detector's boxes {f_with:.3f} against {f_alone:.3f} without: {verdict}"
        + ("" if used else "; classify skips it (~100 ms a photo saved; classify --detector on forces it)"),
    }


def learn_labeller_boxes(
    bundle: Bundle, images: list[LabelledImage], device: str | None
) -> list[list[float]]:
    """How the labeller draws a face against the face detector's box (:func:`learn_box_map`), from
    (up to 150 of) the training photos: the system's boxes are then scored in the labeller's style."""
    masks = mask_sorter(bundle) if bundle.sorts_by == "mask" else None
    analyser = Analyser(bundle=bundle, device=device, min_score=1.0, use_detector=False, masks=masks)
    pairs = []
    for img in images[:150]:
        st = img.image.stat()
        photo = Photo(path=img.image, rel=Path(img.image.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
        faces = analyser.both(photo)
        if faces is not None and faces[0]:
            pairs += match_pairs(faces[0], [b.xyxy for b in img.boxes])
    return learn_box_map(pairs)


def log_metrics(tracker: Tracker, metrics: dict[str, Any], classes: list[str], prefix: str) -> None:
    box, photo = metrics["detector"], metrics["photo"]
    system = metrics.get("system")
    if system:
        # what the user asked wandb for: precision, recall, mAP50, mAP50-95 of what classify does
        tracker.summary(
            {f"{prefix}/system/{k}": system[k] for k in ("precision", "recall", "mAP50", "mAP50-95")}
        )
        tracker.table(
            f"{prefix}/system/per_class",
            ["class", "precision", "recall", "AP50", "AP50-95", "boxes"],
            [
                [c, v["precision"], v["recall"], v["ap50"], v["ap50_95"], v["boxes"]]
                for c, v in system["per_class"].items()
            ],
        )
        curve = system.get("pr_curve")
        if curve:
            tracker.table(
                f"{prefix}/system/pr_curve",
                ["class", "recall", "precision"],
                [
                    [c, r, pr]
                    for c, values in curve["precision"].items()
                    for r, pr in zip(curve["recall"], values, strict=True)
                ],
            )
    tracker.summary(
        {
            f"{prefix}/precision": box["precision"],
            f"{prefix}/recall": box["recall"],
            f"{prefix}/mAP50": box["mAP50"],
            f"{prefix}/mAP50-95": box["mAP50-95"],
            f"{prefix}/photo_precision": photo["precision"],
            f"{prefix}/photo_recall": photo["recall"],
        }
    )
    rows = []
    for c in classes:
        b, p = box["per_class"].get(c, {}), photo["per_person"].get(c, {})
        rows.append(
            [
                c,
                b.get("precision", 0.0),
                b.get("recall", 0.0),
                b.get("ap50", 0.0),
                b.get("ap50_95", 0.0),
                p.get("precision", 0.0),
                p.get("recall", 0.0),
                p.get("photos", 0),
            ]
        )
    cv = metrics.get("recogniser_cv")
    if cv:
        tracker.summary({f"recogniser/{k}": v for k, v in cv.items() if isinstance(v, (int, float))})
        # Cross-validated on the labelled photos at the chosen thresholds: is anyone harder to recognise,
        # and how much do masks cost each child?
        cols = ["precision", "recall", "recall_masked", "recall_unmasked", "photos_masked", "photos_unmasked"]
        tracker.table(
            "recogniser/per_person",
            ["person", *cols, "accept"],
            [[c, *(v.get(k, 0) for k in cols), v.get("accept", 1.0)] for c, v in cv["per_person"].items()],
        )
    tracker.table(
        f"{prefix}/per_person",
        [
            "person",
            "box_precision",
            "box_recall",
            "AP50",
            "AP50-95",
            "photo_precision",
            "photo_recall",
            "photos",
        ],
        rows,
    )


def system_lines(metrics: dict[str, Any], indent: str = "") -> list[str]:
    """The system-as-detector figures for the train and evaluate summaries (empty if not measured)."""
    system = metrics.get("system")
    if not system:
        return []
    lines = [
        f"{indent}system  precision {system['precision']:.3f}  recall {system['recall']:.3f}  "
        f"mAP50 {system['mAP50']:.3f}  mAP50-95 {system['mAP50-95']:.3f}  "
        "(face detector + heads, as classify runs; boxes scored like a detector's)"
    ]
    for c, v in system["per_class"].items():
        lines.append(
            f"{indent}  {c:<24} P {v['precision']:.3f}  R {v['recall']:.3f}  AP50 {v['ap50']:.3f}  "
            f"AP50-95 {v['ap50_95']:.3f}  ({v['boxes']} boxes)"
        )
    return lines
