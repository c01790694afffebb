"""``photosort evaluate``: how good is a model on a labelled folder it has not seen."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from sorter.errors import PhotosortError
from sorter.io.bundle import Bundle, write_json_atomic
from sorter.io.labels import format_problems, read_labelled
from sorter.records import LabelledSet
from sorter.training.dataset import build_yolo_dataset
from sorter.training.measure import log_metrics, measure, system_lines
from sorter.training.tracking import Tracker


class EvaluateError(PhotosortError):
    """Evaluation cannot run (no such folder, no labels)."""


def evaluate_model(
    data: Path,
    bundle: Bundle,
    device: str | None = None,
    wandb: str = "offline",
    out: Path | None = None,
    log=None,
) -> dict[str, Any]:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    data = Path(data).absolute()
    if not data.is_dir():
        raise EvaluateError(f"{data}: no such folder")
    labelled = read_labelled(data, classes=bundle.classes)
    if labelled.problems:
        log(format_problems(labelled.problems))
    if not labelled.images:
        raise EvaluateError(f"{data}: no labelled photos found")
    if not any(img.boxes for img in labelled.images):
        # Photos but not one box (labels missing, or classes the model does not know): every figure
        # would be a meaningless zero.
        raise EvaluateError(
            f"{data}: no labels found (expected labelImg .xml, or .txt + classes.txt, beside the photos, "
            f"with classes of this model: {', '.join(bundle.classes)})"
        )
    with tempfile.TemporaryDirectory(prefix="photosort-eval-") as tmp:
        # Every photo is evaluated: put them all on the validation side of a throwaway dataset.
        everything = LabelledSet(root=labelled.root, classes=labelled.classes, images=labelled.images)
        data_yaml = build_yolo_dataset(everything, Path(tmp) / "dataset", val_fraction=1.0, seed=0)
        metrics = measure(bundle, data_yaml, labelled.images, device)
    metrics["data"] = str(data)
    metrics["problems"] = [str(p) for p in labelled.problems]
    tracker = Tracker(
        wandb, bundle.path / "evaluations", f"evaluate-{data.name}", {"data": str(data)}, job_type="evaluate"
    )
    log_metrics(tracker, metrics, bundle.classes, prefix="test")
    note = tracker.finish()
    if note:
        log(note)
    if out is not None:
        write_json_atomic(Path(out), metrics)
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    box, photo = metrics["detector"], metrics["photo"]
    lines = [
        f"{metrics['val_photos']} photos",
        f"YOLO    precision {box['precision']:.3f}  recall {box['recall']:.3f}  mAP50 {box['mAP50']:.3f}"
        f"  mAP50-95 {box['mAP50-95']:.3f}",
        f"photos  precision {photo['precision']:.3f}  recall {photo['recall']:.3f}  f1 {photo['f1']:.3f}",
        *system_lines(metrics),
        f"{'class':<24} {'P':>6} {'R':>6} {'AP50':>6} {'AP50-95':>8} {'photo P':>8} {'photo R':>8}",
    ]
    for c in metrics["classes"]:
        b, p = box["per_class"].get(c, {}), photo["per_person"].get(c, {})
        lines.append(
            f"{c:<24} {b.get('precision', 0):>6.3f} {b.get('recall', 0):>6.3f} {b.get('ap50', 0):>6.3f}"
            f" {b.get('ap50_95', 0):>8.3f} {p.get('precision', 0):>8.3f} {p.get('recall', 0):>8.3f}"
        )
    return "\n".join(lines)
