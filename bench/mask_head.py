#!/usr/bin/env python3
"""Train the mask-state head (sorter/heads/mask.py) from real photos and measure it.

    .venv/bin/python bench/mask_head.py --data ../shared/data/face-mask --out sorter/assets

Data: Kaggle Face Mask Detection (andrewmvd, CC0 1.0): 853 PNG photos with labelImg Pascal VOC boxes,
classes with_mask / without_mask / mask_weared_incorrect. Fixed protocol: photo ``maksssksksssN``
with N % 8 == 0 is the TEST side and is used once, at the end, for the reported figures; everything
else (training, the validation split, every choice) uses the train side N % 8 != 0 only. The
validation split is grouped by photo, byte-identical photos (sha256) kept on one side.

Steps: (1) train the same small CNN three times on the train split, once per way of handling the class
imbalance (class-weighted cross-entropy, focal loss gamma 2, a class-balanced sampler), score each on
the validation photos (macro-F1, then mask_weared_incorrect recall); (2) retrain the best on the whole
train side; (3) export it to ONNX (opset 17, dynamic batch) with a JSON beside it; (4) load that file
through sorter.heads.mask.MaskHead (OpenVINO, no torch) and score the test side, by face size, and
time it on one thread. Writes bench/results/mask_head.json and prints a table. Deterministic given
--seed (same machine, same thread count).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sorter.heads.mask import (  # noqa: E402
    DEFAULT_MEAN,
    DEFAULT_STD,
    MASK_CLASSES,
    MaskHead,
    crop,
    to_input,
)

LOSSES = ("weighted_ce", "focal", "sampler")
DUP_NOTE = "byte-identical photos (same sha256) are grouped; a group split by the fixed protocol is reported"


# ---------------------------------------------------------------------------------------------- data
def load_set(data: Path) -> list[dict]:
    """Every photo of the set: number, path, sha256, boxes [(x0, y0, x1, y1)], labels [class index]."""
    import defusedxml.ElementTree as ET

    photos = []
    for xml in sorted(
        (data / "annotations").glob("*.xml"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1])
    ):
        n = int(re.findall(r"\d+", xml.stem)[-1])
        img = data / "images" / f"{xml.stem}.png"
        root = ET.parse(xml).getroot()
        boxes, labels = [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            b = obj.find("bndbox")
            box = tuple(float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            if name not in MASK_CLASSES:
                raise SystemExit(f"{xml}: unknown class {name!r}")
            boxes.append(box)
            labels.append(MASK_CLASSES.index(name))
        photos.append(
            {
                "n": n,
                "path": img,
                "sha256": hashlib.sha256(img.read_bytes()).hexdigest(),
                "boxes": boxes,
                "labels": labels,
            }
        )
    return photos


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def split_val(train_side: list[dict], frac: float, seed: int) -> tuple[set[int], list[list[int]]]:
    """Photo numbers of the validation split: whole sha256 groups, stratified on the rare class."""
    groups: dict[str, list[dict]] = {}
    for p in train_side:
        groups.setdefault(p["sha256"], []).append(p)
    rng = np.random.default_rng([seed, 7])
    buckets: list[list[list[dict]]] = [[], [], []]  # has mask_weared_incorrect / has without_mask / rest
    for g in groups.values():
        labs = {lab for p in g for lab in p["labels"]}
        buckets[0 if 2 in labs else 1 if 1 in labs else 2].append(g)
    val: set[int] = set()
    for bucket in buckets:
        order = rng.permutation(len(bucket))
        for i in order[: int(round(frac * len(bucket)))]:
            val.update(p["n"] for p in bucket[i])
    dups = [sorted(p["n"] for p in g) for g in groups.values() if len(g) > 1]
    return val, dups


def faces_of(photos: list[dict], min_side: float = 0.0) -> list[tuple[int, tuple, int]]:
    """(photo index, box, label) of every face with area (short side >= min_side)."""
    out = []
    for i, p in enumerate(photos):
        for box, lab in zip(p["boxes"], p["labels"], strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            if w > 0 and h > 0 and min(w, h) >= min_side:
                out.append((i, box, lab))
    return out


# ------------------------------------------------------------------------------------ augmentation
def jitter_box(box: tuple, rng: np.random.Generator) -> tuple:
    """A labelled box as a face detector might give it: shift +-10%, scale 0.85-1.2, aspect +-15%."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    s = rng.uniform(0.85, 1.2)
    a = math.exp(rng.uniform(-0.15, 0.15))
    cx = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * w
    cy = (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * h
    nw, nh = w * s * a, h * s / a
    return (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2)


def augment(c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    size = c.shape[0]
    if rng.random() < 0.5:
        c = c[:, ::-1]
    angle = rng.uniform(-10, 10)
    m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
    c = cv2.warpAffine(
        np.ascontiguousarray(c), m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    r = rng.random()
    if r < 0.3:  # a tiny face: down to 6-32 px and back, as crop() upsamples one
        side = int(rng.integers(6, 33))
        c = cv2.resize(
            cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA),
            (size, size),
            interpolation=cv2.INTER_LINEAR,
        )
    elif r < 0.45:
        c = cv2.GaussianBlur(c, (0, 0), rng.uniform(0.4, 1.3))
    x = c.astype(np.float32)
    if rng.random() < 0.8:  # colour: brightness, contrast, saturation
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        sat = rng.uniform(0.6, 1.4) if rng.random() > 0.05 else 0.0
        x = gray[..., None] + (x - gray[..., None]) * sat
        x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() * rng.uniform(0.7, 1.3)
        x = x + rng.normal(0, 3, size=3).astype(np.float32)
    c = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:  # JPEG, as the photos classify sees
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        if ok:
            c = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return c


# ------------------------------------------------------------------------------------------- model
def make_model(width: tuple[int, ...] = (16, 32, 64, 96)):
    import torch.nn as nn

    def cbr(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers: list = []
    cin = 3
    for i, c in enumerate(width):
        layers += cbr(cin, c) + (cbr(c, c) if i > 0 else []) + [nn.MaxPool2d(2)]
        cin = c
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, len(MASK_CLASSES))
    )


def loss_fn(kind: str, counts: np.ndarray):
    import torch
    import torch.nn.functional as F

    if kind == "weighted_ce":
        w = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
        return lambda logits, y: F.cross_entropy(logits, y, weight=w)
    if kind == "focal":

        def focal(logits, y, gamma=2.0):
            logp = F.log_softmax(logits, 1).gather(1, y[:, None])[:, 0]
            return (-((1 - logp.exp()) ** gamma) * logp).mean()

        return focal
    if kind == "sampler":
        return lambda logits, y: F.cross_entropy(logits, y)
    raise ValueError(kind)


def make_batch(images, faces, idx, size, margin, rng, train: bool) -> tuple[np.ndarray, np.ndarray]:
    crops, ys = [], []
    for k in idx:
        i, box, lab = faces[k]
        if train:
            c = augment(crop(images[i], jitter_box(box, rng), size, margin), rng)
        else:
            c = crop(images[i], box, size, margin)
        crops.append(c)
        ys.append(lab)
    return to_input(np.stack(crops), DEFAULT_MEAN, DEFAULT_STD), np.array(ys, np.int64)


def predict_torch(model, images, faces, size, margin, batch=256) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(faces), batch):
            x, _ = make_batch(images, faces, range(s, min(s + batch, len(faces))), size, margin, None, False)
            out.append(torch.softmax(model(torch.from_numpy(x)), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(MASK_CLASSES)), np.float32)


def train(
    images,
    faces,
    kind: str,
    epochs: int,
    size: int,
    margin: float,
    seed: int,
    batch: int,
    lr: float,
    val=None,
    log=print,
):
    """Train one model; ``val`` = (images, faces) scored after every epoch (curve)."""
    import torch

    torch.manual_seed(seed)
    model = make_model().to(memory_format=torch.channels_last)  # 1.4-2x faster on a CPU (measured)
    labels = np.array([f[2] for f in faces])
    counts = np.bincount(labels, minlength=len(MASK_CLASSES)).astype(np.float64)
    crit = loss_fn(kind, counts)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * math.ceil(len(faces) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    sample_p = (1.0 / counts)[labels]
    sample_p /= sample_p.sum()
    curve = []
    t0 = time.time()
    for ep in range(epochs):
        rng = np.random.default_rng([seed, ep, 1])
        if kind == "sampler":
            order = rng.choice(len(faces), size=len(faces), replace=True, p=sample_p)
        else:
            order = rng.permutation(len(faces))
        model.train()
        tot, nb = 0.0, 0
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            if len(idx) < 2:
                continue
            x, y = make_batch(images, faces, idx, size, margin, rng, True)
            xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            loss = crit(model(xt), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
            nb += 1
        entry = {"epoch": ep + 1, "loss": round(tot / max(nb, 1), 4), "seconds": round(time.time() - t0, 1)}
        if val is not None:
            m = metrics(np.array([f[2] for f in val[1]]), predict_torch(model, *val, size, margin).argmax(1))
            entry["val_macro_f1"] = m["macro_f1"]
            entry["val_incorrect_recall"] = m["per_class"]["mask_weared_incorrect"]["recall"]
        curve.append(entry)
        log(
            f"  [{kind}] epoch {ep + 1}/{epochs} "
            + " ".join(f"{k}={v}" for k, v in entry.items() if k != "epoch")
        )
    model.eval()
    return model.to(memory_format=torch.contiguous_format), curve, time.time() - t0


# ----------------------------------------------------------------------------------------- metrics
def metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    k = len(MASK_CLASSES)
    cm = np.zeros((k, k), np.int64)
    for a, b in zip(y, pred, strict=True):
        cm[a, b] += 1
    per = {}
    for c, name in enumerate(MASK_CLASSES):
        tp = cm[c, c]
        p = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        r = tp / cm[c].sum() if cm[c].sum() else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[name] = {
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
            "support": int(cm[c].sum()),
        }
    present = [n for n in MASK_CLASSES if per[n]["support"]]
    return {
        "faces": int(len(y)),
        "accuracy": round(float((y == pred).mean()), 4) if len(y) else None,
        "macro_f1": round(float(np.mean([per[n]["f1"] for n in present])), 4) if present else None,
        "per_class": per,
        "confusion": {"rows_true_cols_pred": list(MASK_CLASSES), "matrix": cm.tolist()},
    }


def count(faces: list) -> dict[str, int]:
    """Faces per class."""
    n = np.bincount([f[2] for f in faces], minlength=len(MASK_CLASSES)).tolist()
    return dict(zip(MASK_CLASSES, n, strict=True))


def by_size(y, pred, short_sides) -> dict:
    out = {}
    for lo in (0, 16, 32):
        sel = short_sides >= lo
        out[f"short_side_ge_{lo}px" if lo else "all"] = {
            "faces": int(sel.sum()),
            "accuracy": round(float((y[sel] == pred[sel]).mean()), 4) if sel.any() else None,
        }
    return out


def time_head(head: MaskHead, crops: np.ndarray, reps: int) -> dict:
    out = {}
    for b in (1, 8):
        x = crops[:b]
        for _ in range(10):
            head.predict_crops(x)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            head.predict_crops(x)
            ts.append(time.perf_counter() - t)
        out[f"batch{b}_ms_per_face"] = round(1000 * float(np.median(ts)) / b, 4)
    return out


def sample_figures(head: MaskHead, sample_dir: Path, min_side: float = 32) -> dict | None:
    """Accuracy on the repo's face-mask-sample test photos (test side, JPEG), faces >= min_side px."""
    import defusedxml.ElementTree as ET

    if not sample_dir.is_dir():
        return None
    ys, ps = [], []
    for xml in sorted(sample_dir.glob("*.xml")):
        root = ET.parse(xml).getroot()
        rgb = read_rgb(xml.with_suffix(".jpg"))
        boxes, labs = [], []
        for obj in root.iter("object"):
            b = obj.find("bndbox")
            box = tuple(float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            if min(box[2] - box[0], box[3] - box[1]) >= min_side:
                boxes.append(box)
                labs.append(MASK_CLASSES.index(obj.findtext("name").strip()))
        if boxes:
            labels, _ = head.predict(rgb, boxes)
            ys += labs
            ps += [MASK_CLASSES.index(lab) for lab in labels]
    y, p = np.array(ys), np.array(ps)
    return {
        "min_short_side_px": min_side,
        "faces": int(len(y)),
        "accuracy": round(float((y == p).mean()), 4),
        "per_class_support": np.bincount(y, minlength=3).tolist(),
    }


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "sorter" / "assets", help="where mask_head.onnx/.json go"
    )
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "mask_head.json")
    ap.add_argument("--epochs", type=int, default=30, help="epochs of the final training")
    ap.add_argument(
        "--compare-epochs", type=int, default=None, help="epochs of each comparison run (default --epochs)"
    )
    ap.add_argument("--size", type=int, default=64, help="input side in px")
    ap.add_argument(
        "--also-size", type=int, default=48, help="also try this input side on validation (0: skip)"
    )
    ap.add_argument("--margin", type=float, default=1.2, help="crop side = margin x max(box w, h)")
    ap.add_argument(
        "--loss",
        choices=("auto", *LOSSES),
        default="auto",
        help="auto: compare the three on the validation split and keep the best",
    )
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: with another job on the 2 cores, 2 threads ran 6x slower, measured)",
    )
    ap.add_argument("--no-export", action="store_true", help="compare only; do not write --out")
    args = ap.parse_args()

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cv2.setNumThreads(1)
    t_start = time.time()
    command = shlex.join([".venv/bin/python", "bench/mask_head.py", *sys.argv[1:]])

    photos = load_set(args.data)
    test_side = [p for p in photos if p["n"] % 8 == 0]
    train_side = [p for p in photos if p["n"] % 8 != 0]
    test_sha = {p["sha256"]: p["n"] for p in test_side}
    cross = [[test_sha[p["sha256"]], p["n"]] for p in train_side if p["sha256"] in test_sha]
    val_ns, dups = split_val(train_side, args.val_frac, args.seed)
    tr = [p for p in train_side if p["n"] not in val_ns]
    va = [p for p in train_side if p["n"] in val_ns]
    print(
        f"photos: {len(photos)} (train side {len(train_side)}: {len(tr)} train + {len(va)} val; "
        f"test side {len(test_side)})"
    )
    print(f"duplicate groups on the train side: {dups}; test/train duplicates: {cross}")

    img_tr = [read_rgb(p["path"]) for p in tr]
    img_va = [read_rgb(p["path"]) for p in va]
    f_tr, f_va = faces_of(tr), faces_of(va)
    print(f"faces: train {count(f_tr)}, val {count(f_va)}")

    results: dict = {
        "benchmark": "mask-state head (sorter/heads/mask.py), bench/mask_head.py",
        "command": command,
        "seed": args.seed,
        "threads": args.threads,
        "config": {
            "size": args.size,
            "margin": args.margin,
            "epochs": args.epochs,
            "batch": args.batch,
            "lr": args.lr,
            "optimizer": "AdamW wd 5e-4, one-cycle",
            "model": "4 conv blocks 16-32-64-96",
        },
        "protocol": {
            "test_side": "N % 8 == 0 (used once, for the final figures)",
            "train_side": "N % 8 != 0",
            "photos": {"train": len(tr), "val": len(va), "test": len(test_side)},
            "faces": {"train": count(f_tr), "val": count(f_va)},
            "duplicates": DUP_NOTE,
            "duplicate_groups_train_side": dups,
            "duplicates_across_test_and_train": cross,
        },
    }

    # (1) compare the imbalance methods on the validation split
    comp_epochs = args.compare_epochs or args.epochs
    kinds = LOSSES if args.loss == "auto" else (args.loss,)
    comparison = {}
    y_va = np.array([f[2] for f in f_va])

    def val_run(kind: str, size: int) -> dict:
        model, curve, secs = train(
            img_tr, f_tr, kind, comp_epochs, size, args.margin, args.seed, args.batch, args.lr,
            val=(img_va, f_va),
        )  # fmt: skip
        m = metrics(y_va, predict_torch(model, img_va, f_va, size, args.margin).argmax(1))
        print(
            f"{kind} at {size} px: val macro-F1 {m['macro_f1']}, incorrect recall "
            f"{m['per_class']['mask_weared_incorrect']['recall']}, accuracy {m['accuracy']} ({secs:.0f} s)"
        )
        return {
            "epochs": comp_epochs,
            "size": size,
            "train_seconds": round(secs, 1),
            "val": m,
            "curve": curve,
        }

    def rule(run: dict) -> tuple[float, float]:
        return run["val"]["macro_f1"], run["val"]["per_class"]["mask_weared_incorrect"]["recall"]

    for kind in kinds:  # with one --loss given, its validation figures alone
        comparison[kind] = val_run(kind, args.size)
    best = max(kinds, key=lambda k: rule(comparison[k]))
    results["validation_comparison"] = comparison
    results["chosen_loss"] = best
    results["choice_rule"] = "highest validation macro-F1, then mask_weared_incorrect recall"
    print(f"chosen: {best}")
    # (1b) the input size: the chosen loss at --also-size too, kept by the same rule (ties: --size)
    size = args.size
    if args.also_size and args.also_size != args.size:
        runs = {args.size: comparison[best], args.also_size: val_run(best, args.also_size)}
        size = max(runs, key=lambda z: (*rule(runs[z]), z == args.size))
        results["size_comparison"] = {
            "loss": best,
            **{f"{z}px": {k: v for k, v in r.items() if k != "curve"} for z, r in runs.items()},
        }
        print(f"input size kept: {size} px")
    results["chosen_size"] = size
    if args.no_export:
        write(args.results, results)
        return

    # (2) retrain the chosen one on the whole train side
    img_all = img_tr + img_va
    f_all = faces_of(tr + va)
    model, curve, secs = train(
        img_all, f_all, best, args.epochs, size, args.margin, args.seed, args.batch, args.lr
    )
    results["final_training"] = {
        "loss": best,
        "epochs": args.epochs,
        "faces": count(f_all),
        "train_seconds": round(secs, 1),
        "curve": curve,
    }

    # (3) export
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path, meta_path = args.out / "mask_head.onnx", args.out / "mask_head.json"
    tmp = onnx_path.with_suffix(".onnx.tmp")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(tmp),
            opset_version=17,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    os.replace(tmp, onnx_path)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    meta = {
        "name": "mask_head",
        "description": "Mask state of one face: a small CNN "
        "(4 conv blocks, BN+ReLU, global average pool, 3 logits)",
        "classes": list(MASK_CLASSES),
        "input": {
            "name": "input",
            "size": size,
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": "float32",
            "output": "logits (softmax -> probabilities in classes order)",
        },
        "crop": {
            "margin": args.margin,
            "shape": "square centred on the box centre, side = margin x max(w, h)",
            "padding": "black outside the image",
            "box": "xyxy pixels, labeller style (labelImg: forehead to chin)",
            "function": "sorter.heads.mask.crop",
        },
        "normalisation": {
            "mean": list(DEFAULT_MEAN),
            "std": list(DEFAULT_STD),
            "formula": "(rgb_uint8 - mean) / std, per channel",
        },
        "sha256": digest,
        "bytes": onnx_path.stat().st_size,
        "opset": 17,
        "provenance": {
            "data": "Kaggle Face Mask Detection (andrewmvd), CC0 1.0 Public Domain; "
            "https://www.kaggle.com/datasets/andrewmvd/face-mask-detection "
            "(copy: ../shared/data/face-mask, see its PROVENANCE.md)",
            "train_side_only": "photos maksssksksssN.png with N % 8 != 0",
            "training_photos": len(tr) + len(va),
            "training_faces": count(f_all),
            "weights": "trained from scratch (no pretrained weights)",
            "loss": best,
            "seed": args.seed,
            "torch": torch.__version__,
        },
        "training_command": command,
    }

    # (4) the shipped file, through the inference code (OpenVINO, one thread): test side, once
    write_json(meta_path, meta)  # figures added below; sha256 is final already
    head = MaskHead(onnx_path, meta_path, threads=1).load()
    img_te = [read_rgb(p["path"]) for p in test_side]
    f_te = faces_of(test_side)
    y = np.array([f[2] for f in f_te])
    probs = np.zeros((len(f_te), len(MASK_CLASSES)), np.float32)
    for i in range(len(test_side)):  # all faces of a photo in one call, as the pipeline does
        ks = [k for k, f in enumerate(f_te) if f[0] == i]
        if ks:
            probs[ks] = head.predict(img_te[i], [f_te[k][1] for k in ks])[1]
    pred = probs.argmax(1)
    short = np.array([min(f[1][2] - f[1][0], f[1][3] - f[1][1]) for f in f_te])
    test = metrics(y, pred)
    test["by_size"] = by_size(y, pred, short)
    jr = np.random.default_rng([args.seed, 99])
    jit = [(i, jitter_box(b, jr), lab) for i, b, lab in f_te]
    pj = np.array([head.predict(img_te[i], [b])[1][0].argmax() for i, b, _ in jit])
    test["jittered_boxes"] = {
        "accuracy": round(float((pj == y).mean()), 4),
        "by_size": by_size(y, pj, short),
        "note": "each labelled box jittered once (shift +-10%, scale 0.85-1.2, aspect +-15%)",
    }
    # agreement of the ONNX/OpenVINO file with the torch model it came from
    pt = predict_torch(model, img_te, f_te, size, args.margin)
    test["torch_vs_openvino_max_abs_prob_diff"] = float(np.abs(pt - probs).max())
    results["test"] = test
    sample = sample_figures(head, ROOT / "datasets" / "face-mask-sample" / "test")
    results["face_mask_sample_test"] = sample

    # speed, one thread, model only (crops made beforehand) and the crop itself
    crops = np.stack([crop(img_te[i], b, size, args.margin) for i, b, _ in f_te[:64]])
    speed = {"threads": 1, "note": "median of 300 calls after 10 warm-up; model only unless named crop"}
    speed["openvino_f32"] = time_head(head, crops, 300)
    speed["openvino_default_precision"] = time_head(
        MaskHead(onnx_path, meta_path, threads=1, precision=None).load(), crops, 300
    )
    speed["cv2_dnn"] = time_head(MaskHead(onnx_path, meta_path, threads=1, backend="cv2").load(), crops, 300)
    t = time.perf_counter()
    for _ in range(5):
        for i, b, _ in f_te:
            crop(img_te[i], b, size, args.margin)
    speed["crop_ms_per_face"] = round(1000 * (time.perf_counter() - t) / (5 * len(f_te)), 4)
    results["speed"] = speed
    results["wall_seconds"] = round(time.time() - t_start, 1)

    best_val = comparison.get(best, {}).get("val")
    meta["figures"] = {
        "validation": (
            {
                "split": f"{len(va)} train-side photos, {len(f_va)} faces",
                "macro_f1": best_val["macro_f1"],
                "accuracy": best_val["accuracy"],
                "per_class": best_val["per_class"],
                "trained_on": "the other train-side photos",
            }
            if best_val
            else None
        ),
        "test": {
            "photos": len(test_side),
            "faces": test["faces"],
            "accuracy": test["accuracy"],
            "macro_f1": test["macro_f1"],
            "per_class": test["per_class"],
            "by_size": test["by_size"],
        },
        "ms_per_face_openvino_1_thread": speed["openvino_f32"],
        "results": "bench/results/mask_head.json",
    }
    write_json(meta_path, meta)
    write(args.results, results)
    table(results)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write(path: Path, results: dict) -> None:
    write_json(path, results)
    print(f"wrote {path}")


def table(r: dict) -> None:
    print("\nvalidation (train-side photos held out)")
    print(f"{'loss':<12} {'macro-F1':>8} {'acc':>6} {'incorrect R':>11} {'without R':>9} {'s':>6}")
    for k, v in r["validation_comparison"].items():
        pc = v["val"]["per_class"]
        print(
            f"{k:<12} {v['val']['macro_f1']:>8.3f} {v['val']['accuracy']:>6.3f} "
            f"{pc['mask_weared_incorrect']['recall']:>11.3f} {pc['without_mask']['recall']:>9.3f} "
            f"{v['train_seconds']:>6.0f}"
        )
    t = r["test"]
    print(f"\ntest side ({t['faces']} faces), loss {r['chosen_loss']}")
    print(f"{'class':<22} {'P':>6} {'R':>6} {'F1':>6} {'n':>5}")
    for c, v in t["per_class"].items():
        print(f"{c:<22} {v['precision']:>6.3f} {v['recall']:>6.3f} {v['f1']:>6.3f} {v['support']:>5}")
    for k, v in t["by_size"].items():
        print(f"accuracy {k:<20} {v['accuracy']:.3f} ({v['faces']} faces)")
    print(f"confusion (rows true, cols pred {MASK_CLASSES}): {t['confusion']['matrix']}")
    s = r["speed"]
    print(
        f"ms/face 1 thread: openvino f32 {s['openvino_f32']}, cv2 {s['cv2_dnn']}, "
        f"crop {s['crop_ms_per_face']}"
    )


if __name__ == "__main__":
    main()
