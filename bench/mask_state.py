#!/usr/bin/env python3
"""Mask state on real photos (issue 12): the face-mask set's fixed protocol, the system as a detector.

    .venv/bin/python bench/mask_state.py --data ../shared/data/face-mask [--skip-train]

Train side = ``maksssksksssN.png`` with ``N % 8 != 0`` (746 photos), test side = ``N % 8 == 0`` (107).
Measured on the test side only:

(a) YOLO alone, as ``photosort train`` trains it with its defaults (on a CPU: a time budget),
(b) the system with the head that ships: face detector + mask head, no training at all (the labeller's
    box style learnt from the train side's labels),
(c) the system after ``photosort train`` on the train side.

Per-class AP50, mAP50, mAP50-95 (ultralytics' matching and AP, :mod:`sorter.training.detection`)
counting every labelled face as the published figures do, and again with faces under 16 px left out
(labels and detections). Detections are scored as ultralytics' validator scores YOLO: one per class
above conf 0.001 (``multi_label=True``), the protocol of the published figures; one box per face (its
best class only) is reported beside it. Per-face mask accuracy on the faces the system found
(IoU >= 0.5), by size.
Writes bench/results/mask_state.json and prints a table. Published: YOLOv3 + focal loss 0.757 mAP@0.5
(on its own 752/100 split); public YOLOv8m runs 0.911.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def number(p: Path) -> int:
    return int(re.search(r"(\d+)$", p.stem).group(1))


def split_folders(data: Path, work: Path) -> tuple[Path, Path]:
    """train/ and test/ folders of links to the photos and their XML (the data is never copied)."""
    sides = {"train": work / "train", "test": work / "test"}
    for folder in sides.values():
        folder.mkdir(parents=True, exist_ok=True)
    for img in sorted((data / "images").glob("*.png")):
        side = sides["test" if number(img) % 8 == 0 else "train"]
        for src, dst in (
            (img, side / img.name),
            (data / "annotations" / f"{img.stem}.xml", side / f"{img.stem}.xml"),
        ):
            if src.is_file() and not dst.exists():
                os.symlink(src.resolve(), dst)
    return sides["train"], sides["test"]


def analyse(images, masks, box_map=None):
    """Per photo: (faces found by the system, labelled boxes) with the given mask sorter."""
    from sorter.pipeline.analyse import Analyser
    from sorter.records import Photo

    analyser = Analyser(bundle=None, min_score=1.0, use_detector=False, masks=masks)
    out = []
    for img in images:
        st = img.image.stat()
        photo = Photo(path=img.image, rel=Path(img.image.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
        found = analyser.both(photo)
        out.append((found[0] if found else [], [(b.xyxy, b.name) for b in img.boxes]))
    return out


def scores(found, classes, box_map, min_px: float = 0.0, multi_label: bool = True) -> dict:
    """System metrics over all labelled faces, or over those at least ``min_px`` tall (detections
    under ``min_px`` then left out too). ``multi_label``: one detection per class above 0.001, as
    ultralytics' validator scores YOLO (the published figures' protocol); else one per face."""
    from sorter.training.detection import predictions, system_metrics

    photos = []
    for faces, truth in found:
        boxes, conf, cls = predictions(faces, classes, box_map, multi_label)
        keep = (boxes[:, 3] - boxes[:, 1]) >= min_px if len(boxes) else slice(None)
        photos.append(
            ((boxes[keep], conf[keep], cls[keep]), [t for t in truth if t[0][3] - t[0][1] >= min_px])
        )
    m = system_metrics(photos, classes)
    m.pop("pr_curve", None)
    return m


def face_accuracy(found, box_map) -> dict:
    """Mask state of each labelled face the system found (IoU >= 0.5 with one of its boxes), by size."""
    from sorter.boxes import iou
    from sorter.training.detection import labeller_box

    bands = {"all": [0, 0], ">=16px": [0, 0], ">=32px": [0, 0]}
    found_faces = total = 0
    confusion: dict[str, dict[str, int]] = {}
    for faces, truth in found:
        mapped = [labeller_box(f, box_map) for f in faces]
        for box, name in truth:
            total += 1
            k = max(range(len(faces)), key=lambda j: iou(mapped[j], box), default=None)
            if k is None or iou(mapped[k], box) < 0.5:
                continue
            found_faces += 1
            got = faces[k].mask
            confusion.setdefault(name, {}).setdefault(got, 0)
            confusion[name][got] += 1
            h = box[3] - box[1]
            for band, low in (("all", 0), (">=16px", 16), (">=32px", 32)):
                if h >= low:
                    bands[band][0] += got == name
                    bands[band][1] += 1
    return {
        "labelled_faces": total,
        "found": found_faces,
        "accuracy": {b: round(r / max(1, n), 4) for b, (r, n) in bands.items()},
        "faces": {b: n for b, (_, n) in bands.items()},
        "confusion": confusion,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-mask")
    ap.add_argument("--skip-train", action="store_true", help="only (b): no training")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_state.json")
    args = ap.parse_args()
    os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
    from sorter.heads.mask import MASK_CLASSES
    from sorter.io.labels import read_labelled
    from sorter.models.onet import cached_onet
    from sorter.pipeline.masks import MaskSorter
    from sorter.training.detection import learn_box_map, match_pairs

    classes = list(MASK_CLASSES)
    train_dir, test_dir = split_folders(args.data, args.work)
    train, test = read_labelled(train_dir), read_labelled(test_dir, classes=classes)
    result: dict = {"protocol": "train N % 8 != 0, test N % 8 == 0", "train_photos": len(train.images)}
    result["test_photos"] = len(test.images)

    # (b) the shipped system: the labeller's box style from (200 of) the train side's labels
    t = time.perf_counter()
    masks = MaskSorter(onet_ir=cached_onet())
    pairs = []
    for faces, truth in analyse(train.images[:200], masks):
        pairs += match_pairs(faces, [b for b, _ in truth])
    box_map = learn_box_map(pairs)
    found = analyse(test.images, masks)
    n_faces = sum(len(f) for f, _ in found)
    result["shipped"] = {
        "box_map": box_map,
        "all_faces": scores(found, classes, box_map),
        "faces_16px": scores(found, classes, box_map, 16),
        "single_label": scores(found, classes, box_map, multi_label=False),
        "face_accuracy": face_accuracy(found, box_map),
        "seconds": round(time.perf_counter() - t, 1),
        "faces_analysed": n_faces,
    }
    print(json.dumps({"shipped": result["shipped"]["all_faces"]}, indent=1), flush=True)

    if not args.skip_train:
        # (a) and (c): photosort train with its defaults on the train side, evaluate on the test side
        from sorter.settings import TrainSettings
        from sorter.training.evaluate import evaluate_model
        from sorter.training.train import train_model

        t = time.perf_counter()
        res = train_model(
            train_dir,
            name="face-mask",
            runs_dir=args.work / "runs",
            settings=TrainSettings(wandb="off"),
            log=print,
        )
        result["train_seconds"] = round(time.perf_counter() - t, 1)
        result["train_detector"] = res.metrics.get("detector_training")
        ev = evaluate_model(test_dir, res.bundle, wandb="off", log=print)
        result["yolo_alone"] = ev["detector"]
        result["trained"] = {"all_faces": ev["system"], "photo": ev["photo"]}
        result["trained"]["all_faces"].pop("pr_curve", None)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'':<34}{'mAP50':>8}{'mAP50-95':>10}" + "".join(f"{c[:14]:>16}" for c in classes))
    rows = [
        ("YOLO alone (train defaults)", result.get("yolo_alone")),
        ("system, shipped head", result["shipped"]["all_faces"]),
        ("system, shipped, faces >= 16 px", result["shipped"]["faces_16px"]),
        ("system, shipped, 1 class a face", result["shipped"]["single_label"]),
        ("system after train", result.get("trained", {}).get("all_faces")),
    ]
    for name, m in rows:
        if m:
            print(
                f"{name:<34}{m['mAP50']:>8.3f}{m['mAP50-95']:>10.3f}"
                + "".join(f"{m['per_class'][c]['ap50']:>16.3f}" for c in classes)
            )
    fa = result["shipped"]["face_accuracy"]
    print(f"per-face mask accuracy (shipped head, faces found): {fa['accuracy']} of {fa['faces']}")
    print("published: YOLOv3 + focal loss 0.757 mAP@0.5 (own split); YOLOv8m 0.911")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
