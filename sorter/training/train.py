"""``photosort train``: labelImg folder in, model bundle out.

1. read and validate the labels (every problem reported at once, each naming its file),
2. build an ultralytics dataset inside the run folder, split grouped by photo content,
3. train the YOLO detector whose classes are the labelled people,
4. measure it on the validation split (box metrics and photo-level precision/recall per person),
5. write the bundle (weights, classes, settings, thresholds, metrics, checksums).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sorter.errors import PhotosortError
from sorter.heads.mask import MASK_CLASSES
from sorter.io.bundle import Bundle, write_json_atomic
from sorter.io.labels import format_problems, read_labelled, summary
from sorter.models.onet import export_onet
from sorter.models.yolo import load_yolo, pick_device
from sorter.pipeline.features import DLIB, SFACE
from sorter.pipeline.masks import MaskSorter
from sorter.settings import TrainSettings
from sorter.training.dataset import build_yolo_dataset, split
from sorter.training.export import export_detector
from sorter.training.fit import adopt_thresholds, fit_recogniser
from sorter.training.mask_fit import fit_mask_head
from sorter.training.measure import learn_labeller_boxes, log_metrics, measure, system_lines
from sorter.training.tracking import Tracker

FACE_DETECTOR_DIR = "face_detector"
RECOGNISER_FILE = "recogniser.npz"
# --embedder names for the feature kinds of sorter.pipeline.features
EMBEDDERS = {"sface": SFACE, "dlib": DLIB}


class TrainError(PhotosortError):
    """Training cannot start (no usable labels, bad options)."""


@dataclass
class TrainResult:
    run_dir: Path
    bundle: Bundle
    metrics: dict[str, Any]
    problems: list
    seconds: float
    wandb: str | None

    def summary(self) -> str:
        m = self.metrics
        box, photo = m["detector"], m["photo"]
        lines = [
            f"model saved to {self.run_dir}  ({self.seconds / 60:.1f} min)",
            f"validation: {m['val_photos']} photos",
            f"  YOLO    precision {box['precision']:.3f}  recall {box['recall']:.3f}  "
            f"mAP50 {box['mAP50']:.3f}  mAP50-95 {box['mAP50-95']:.3f}",
            f"  photos  precision {photo['precision']:.3f}  recall {photo['recall']:.3f}  "
            f"(at threshold {self.bundle.threshold:.2f})",
            *system_lines(m, "  "),
        ]
        lines.append(
            f"  {'person':<24} {'AP50':>6} {'AP50-95':>8} {'photo P':>8} {'photo R':>8} {'photos':>7}"
        )
        for c in self.bundle.classes:
            b, p = box["per_class"].get(c, {}), photo["per_person"].get(c, {})
            lines.append(
                f"  {c:<24} {b.get('ap50', 0):>6.3f} {b.get('ap50_95', 0):>8.3f} "
                f"{p.get('precision', 0):>8.3f} {p.get('recall', 0):>8.3f} {p.get('photos', 0):>7}"
            )
        use = m.get("detector_use")
        if use:
            lines.append(f"detector in classify: {'on' if use['used'] else 'off'} ({use['reason']})")
        ex = m.get("export")
        if ex:
            lines.append(f"detector on a CPU: {'OpenVINO' if ex['used'] else 'PyTorch'} ({ex['reason']})")
        if self.problems:
            lines.append(f"{len(self.problems)} label problems were skipped (listed above)")
        if self.wandb:
            lines.append(self.wandb)
        return "\n".join(lines)


def train_model(
    data: Path,
    name: str = "photosort",
    runs_dir: Path = Path("runs"),
    settings: TrainSettings | None = None,
    log=None,
) -> TrainResult:
    s = settings or TrainSettings()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    data = Path(data).absolute()
    if not data.is_dir():
        raise TrainError(f"{data}: no such folder")
    t0 = time.perf_counter()
    labelled = read_labelled(data)
    if labelled.problems:
        log(format_problems(labelled.problems))
    log(summary(labelled))
    if not any(img.boxes for img in labelled.images):
        raise TrainError(
            f"{data}: no labelled boxes found (expected labelImg .xml or .txt + classes.txt "
            "next to the photos)"
        )
    run_dir = Path(runs_dir).absolute() / name
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("detector", "weights", "dataset", "wandb"):  # a retrain under the same name starts clean
        shutil.rmtree(run_dir / stale, ignore_errors=True)
    sides = split(labelled, val_fraction=s.val_fraction, seed=s.seed)  # once: the dataset and measurement
    data_yaml = build_yolo_dataset(labelled, run_dir / "dataset", sides=sides)
    val_images = [img for img in labelled.images if sides.get(img.image) == "val"]
    train_images = [img for img in labelled.images if sides.get(img.image) != "val"]
    device = pick_device(s.device)
    config = asdict(s) | {
        "data": str(data),
        "classes": labelled.classes,
        "device": device,
        "train_photos": len(labelled.images) - len(val_images),
        "val_photos": len(val_images),
    }
    tracker = Tracker(s.wandb, run_dir, name, config, job_type="train", images=s.wandb_images)

    model = load_yolo(Path(s.model) if s.model.endswith(".pt") else s.model)
    seen_epochs: set[int] = set()

    def on_epoch(trainer: Any) -> None:
        # ultralytics calls this once more after its final validation; log each epoch once.
        if trainer.epoch in seen_epochs or trainer.epoch >= trainer.epochs:
            return
        seen_epochs.add(trainer.epoch)
        row = {"epoch": trainer.epoch + 1}
        for k, v in trainer.metrics.items():
            row[k.replace("(B)", "")] = float(v)
        for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items():
            row[k] = float(v)
        tracker.log(row, step=trainer.epoch + 1)
        # "YOLO alone": classify sorts with the face detector and heads when YOLO does not help, so these
        # figures (near zero after minutes on a CPU) are not what the user gets; the system is scored
        # on the validation photos after training (the summary's "system" lines)
        log(
            f"YOLO alone, epoch {trainer.epoch + 1}/{trainer.epochs}: "
            f"P {row.get('metrics/precision', 0):.3f} R {row.get('metrics/recall', 0):.3f} "
            f"mAP50 {row.get('metrics/mAP50', 0):.3f} mAP50-95 {row.get('metrics/mAP50-95', 0):.3f}"
        )

    model.add_callback("on_fit_epoch_end", on_epoch)
    epochs, hours, schedule = s.detector_schedule(device)
    log(schedule)
    timed = {"time": hours} if hours else {}
    model.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=s.imgsz,
        batch=s.batch or (4 if device == "cpu" else 8),
        device=device,
        seed=s.seed,
        deterministic=True,
        workers=min(2, os.cpu_count() or 1),
        project=str(run_dir),
        name="detector",
        exist_ok=True,
        plots=False,
        verbose=False,
        patience=s.patience,
        amp=device != "cpu",
        **timed,
        **s.extra,
    )
    best = run_dir / "detector" / "weights" / "best.pt"
    if not best.exists():
        best = run_dir / "detector" / "weights" / "last.pt"
    (run_dir / "weights").mkdir(exist_ok=True)
    shutil.copyfile(best, run_dir / "weights" / "best.pt")

    bundle = Bundle(
        path=run_dir,
        classes=labelled.classes,
        imgsz=s.imgsz,
        threshold=s.threshold,
        band=s.band,
        settings=config,
    )
    recogniser_cv = mask_fit = None
    if s.recogniser and set(labelled.classes) <= set(MASK_CLASSES):
        # Mask states, not people: the mask head tells them apart, the identity model has nothing to do.
        bundle.sorts_by = "mask"
        bundle.per_class_threshold, bundle.per_class_low = MaskSorter().thresholds()
        add_face_detector(bundle, log)
        mask_fit = add_mask_head(bundle, train_images, s, log)
        bundle.box_map = learn_labeller_boxes(bundle, train_images, device)
    elif s.recogniser:
        # Fit on the training side only, so the validation figures below are honest.
        recogniser_cv = add_recogniser(bundle, labelled, train_images, s, log)
        bundle.box_map = learn_labeller_boxes(bundle, train_images, device)
    metrics = measure(bundle, data_yaml, val_images, device, choose=True)
    if s.export:
        metrics["export"] = export_detector(
            bundle, data_yaml, metrics["detector"]["mAP50-95"], log=log
        ).as_dict()
    # Written once, when every file it names is in place: a model folder is complete or not a model.
    bundle.save()
    if recogniser_cv is not None:
        metrics["recogniser_cv"] = recogniser_cv
    if mask_fit is not None:
        metrics["mask_head"] = mask_fit
    metrics["detector_training"] = {"epochs": len(seen_epochs), "schedule": schedule}
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(run_dir / "metrics.json", metrics)
    log_metrics(tracker, metrics, bundle.classes, prefix="val")
    tracker.images(  # a no-op unless --wandb-images: these are children's faces
        "val/examples",
        [
            (
                img.image,
                [
                    {"xyxy": b.xyxy, "name": b.name, "class_id": bundle.classes.index(b.name)}
                    for b in img.boxes
                ],
            )
            for img in val_images[:8]
        ],
    )
    note = tracker.finish()
    return TrainResult(
        run_dir=run_dir,
        bundle=bundle,
        metrics=metrics,
        problems=labelled.problems,
        seconds=time.perf_counter() - t0,
        wandb=note,
    )


def add_recogniser(
    bundle: Bundle, labelled: Any, train_images: list, s: TrainSettings, log: Callable[[str], Any]
) -> dict[str, Any]:
    """Fit the face recogniser into the bundle's folder and adopt its calibrated thresholds (the bundle
    is changed in memory; the caller saves it)."""
    path = bundle.path / RECOGNISER_FILE
    cv = fit_recogniser(
        labelled,
        train_images,
        path,
        target_precision=s.precision,
        seed=s.seed,
        log=log,
        features=EMBEDDERS[s.embedder],
    )
    bundle.recogniser = RECOGNISER_FILE
    adopt_thresholds(bundle, path)
    add_face_detector(bundle, log)
    return cv


MASK_HEAD_DIR = "mask_head"


def add_mask_head(
    bundle: Bundle, train_images: list, s: TrainSettings, log: Callable[[str], Any]
) -> dict[str, Any]:
    """Fine-tune the shipped mask head on these mask-state labels; the model folder keeps it only if it
    beats the shipped head on a validation part of the training photos."""
    try:
        fit = fit_mask_head(
            train_images, bundle.path / MASK_HEAD_DIR, seed=s.seed, minutes=s.mask_head_minutes, log=log
        )
    except ValueError as exc:  # too few photos to fine-tune and validate: the shipped head it is
        log(f"mask head: not fine-tuned ({exc}); classify uses the one photosort ships")
        return {"improved": False, "reason": str(exc)}
    if fit.get("improved"):
        bundle.mask_head = f"{MASK_HEAD_DIR}/mask_head.onnx"
    b, a = fit["before"]["macro_f1"], fit["after"]["macro_f1"]
    log(
        f"mask head: fine-tuned on {fit['photos']['train']} photos, validation macro-F1 {b:.3f} -> {a:.3f}; "
        + ("kept" if fit.get("improved") else "not better: classify uses the one photosort ships")
    )
    return {k: v for k, v in fit.items() if k != "curve"}


def add_face_detector(bundle: Bundle, log: Callable[[str], Any]) -> None:
    """ONet as OpenVINO IR in the model folder, so that classify runs the face detector without torch
    (~0.5 GB less in each worker)."""
    bundle.face_detector = None
    try:
        ir = export_onet(bundle.path / FACE_DETECTOR_DIR)
        bundle.face_detector = ir.relative_to(bundle.path).as_posix()
    except Exception as exc:  # noqa: BLE001 - classify then runs ONet with torch: slower start, same faces
        log(f"face detector not exported to OpenVINO ({type(exc).__name__}: {exc}); using torch")
