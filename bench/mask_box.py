#!/usr/bin/env python3
"""Should the mask head also draw the face's box as the labeller does? Chosen on validation, never the
test side.

    .venv/bin/python bench/mask_box.py --data ../shared/data/face-mask

The system scores a face detector's box against a labeller's: at IoU 0.5, a box drawn brows-to-chin
misses a box drawn forehead-to-chin on a small face. photosort maps the detector's box to the
labeller's by a per-height rule learnt from labels (``sorter.training.detection.learn_box_map``). Here
the mask head (MobileNetV2, as bench/mask_backbone.py chose) learns a box output beside its classes:
the labelled box in units of the crop (``sorter.heads.mask.box_in_crop``), from jittered, flipped and
turned crops (``sorter.training.mask_augment.move_box``).

The face-mask set's train side (``N % 8 != 0``) split as bench/mask_head.py splits it (validation
fifth). Two heads trained on the train split with its no_face examples, with and without the box
output (--box-weight); on the validation photos' face detector candidates (the default detector,
cached as bench/mask_head.py caches them): the labelled faces whose matched candidate reaches IoU 0.5 /
0.75 with the learnt rule and with the head's box, and the system's mAP50 / mAP50-95 as
``sorter.training.detection`` scores it (each candidate a detection of every class, confidence the
class probability x face probability, with the detector's score: ``sorter.boxes.sureness``). Kept:
validation mAP50, then mAP50-95. Each head's system is also scored with one candidate a face
(``sorter.boxes.one_per_face``, as the mask sorter keeps faces). Writes bench/results/mask_box.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mask_head import detector_candidates, faces_of, no_face_examples, train_val  # noqa: E402
from mask_members import imagenet_mobilenet_v2, read_rgb, vote_figures  # noqa: E402

from sorter.boxes import iou, one_per_face, sureness  # noqa: E402
from sorter.heads.mask import MASK_CLASSES, box_from_crop  # noqa: E402
from sorter.training.detection import (  # noqa: E402
    MIN_CONF,
    apply_box_map,
    learn_box_map,
    system_metrics,
)
from sorter.training.mask_fit import write_json  # noqa: E402
from sorter.training.mask_head import predict_torch, train  # noqa: E402
from sorter.training.mask_net import BOX_OUTPUTS, voted  # noqa: E402


def candidate_faces(photos: list[dict], cands: dict) -> list[tuple[int, tuple, int]]:
    """Every candidate of ``photos`` as a face record (photo index, labeller-style box, label 0)."""
    return [(i, tuple(c["box"]), 0) for i, p in enumerate(photos) for c in cands[p["n"]]]


def sure_of(cand: dict, probs: np.ndarray, n_classes: int) -> float:
    """A candidate's best class confidence as a detection (face probability x detector score)."""
    given = probs[:n_classes] / max(probs[:n_classes].sum(), 1e-12)
    return sureness(given.max() * (1.0 - probs[-1]), cand["score"])


def box_figures(photos, boxes_of: list) -> dict:
    """Labelled faces whose best candidate box (``boxes_of[photo index]``, aligned with the candidates)
    reaches IoU 0.5 / 0.75, and their mean IoU."""
    best = []
    for p, bs in zip(photos, boxes_of, strict=True):
        for lb in p["boxes"]:
            best.append(max((iou(b, lb) for b in bs), default=0.0))
    b = np.array(best)
    return {
        "labelled_faces": len(b),
        "iou_ge_0.3": round(float((b >= 0.3).mean()), 4),
        "iou_ge_0.5": round(float((b >= 0.5).mean()), 4),
        "iou_ge_0.75": round(float((b >= 0.75).mean()), 4),
        "mean_iou_of_found": round(float(b[b >= 0.3].mean()), 4),
    }


def system(photos, cands, probs_of: list, boxes_of: list, one_face: bool = False) -> dict:
    """mAP of the candidates as detections, as sorter.training.detection.predictions makes them.
    ``one_face``: first one candidate a face (``sorter.boxes.one_per_face`` on the detector's boxes,
    the surer by its best class's confidence), as the mask sorter keeps them."""
    classes = list(MASK_CLASSES)
    rows = []
    for p, probs, bs in zip(photos, probs_of, boxes_of, strict=True):
        boxes, conf, cls = [], [], []
        cs = cands[p["n"]]
        keep = range(len(cs))
        if one_face and len(cs):
            sure = [sure_of(c, pr, len(classes)) for c, pr in zip(cs, probs, strict=True)]
            keep = one_per_face([c["det_box"] for c in cs], sure)
        for i in keep:
            c, pr, b = cs[i], probs[i], bs[i]
            pf = 1.0 - pr[-1]  # the head's face probability (no_face is its last class)
            given = pr[: len(classes)] / max(pr[: len(classes)].sum(), 1e-12)
            best = int(given.argmax())
            for k in range(len(classes)):
                v = sureness(given[k] * pf, c["score"])
                if k == best or v >= MIN_CONF:
                    boxes.append(b)
                    conf.append(v)
                    cls.append(k)
        truth = [(tuple(b), classes[lab]) for b, lab in zip(p["boxes"], p["labels"], strict=True)]
        rows.append(
            (
                (np.array(boxes, np.float64).reshape(-1, 4), np.array(conf), np.array(cls, np.int64)),
                truth,
            )
        )
    m = system_metrics(rows, classes)
    m.pop("pr_curve", None)
    return m


def head_arguments(ap: argparse.ArgumentParser) -> None:
    """The head's training settings (bench/mask_backbone.py's choice) and the validation split."""
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--margin", type=float, default=1.2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-face-per-epoch", type=int, default=1600)
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)


def train_split_box_map(tr: list[dict], cands: dict) -> list[list[float]]:
    """The labeller's box rule learnt from the train split's candidates matched to its labels (as
    ``train`` learns it)."""
    pairs = []
    for p in tr:
        for lb in p["boxes"]:
            hit = max(cands[p["n"]], key=lambda c: iou(c["box"], lb), default=None)
            if hit is not None and iou(hit["box"], lb) >= 0.3:
                pairs.append((tuple(hit["det_box"]), tuple(lb)))
    box_map = learn_box_map(pairs)
    return box_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_box.json")
    ap.add_argument(
        "--cache", type=Path, default=ROOT / "runs" / "mask_head_no_face" / "candidates_train.json"
    )
    ap.add_argument(
        "--probs-out", type=Path, default=ROOT / "runs" / "mask_box_probs.npz",
        help="each head's probabilities for the validation candidates are kept here (-box/-plain)",
    )  # fmt: skip
    ap.add_argument("--box-weight", type=float, default=1.0)
    head_arguments(ap)
    ap.add_argument("--only", choices=("box", "plain"), default=None, help="train one of the two heads only")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_side, tr, va = train_val(args.data, args.val_frac, args.seed)  # the test side is never read
    cands = detector_candidates(train_side, args.cache)
    img_tr = [read_rgb(p["path"]) for p in tr]
    img_va = [read_rgb(p["path"]) for p in va]
    nf, nf_counts = no_face_examples(tr, img_tr, cands, args.seed)
    f_tr, f_va = faces_of(tr), faces_of(va)
    y = np.array([f[2] for f in f_va])
    box_map = train_split_box_map(tr, cands)
    mapped = [[apply_box_map(c["det_box"], box_map) for c in cands[p["n"]]] for p in va]
    c_va = candidate_faces(va, cands)
    per_photo = [[k for k, f in enumerate(c_va) if f[0] == i] for i in range(len(va))]
    out: dict = {
        "benchmark": "mask head with a box output vs the learnt box rule, validation (bench/mask_box.py)",
        "command": shlex.join([".venv/bin/python", "bench/mask_box.py", *sys.argv[1:]]),
        "split": {"train_photos": len(tr), "val_photos": len(va), "val_faces": len(f_va)},
        "no_face": nf_counts,
        "config": {k: getattr(args, k) for k in ("box_weight", "epochs", "size", "lr", "no_face_per_epoch")},
        "rule_boxes": box_figures(va, mapped),
    }
    for name, weight in (("box", args.box_weight), ("plain", 0.0)):
        if args.only and args.only != name:
            continue
        model, curve, secs = train(
            img_tr, f_tr + nf, "focal", args.epochs, args.size, args.margin, args.seed, args.batch, args.lr,
            no_face_per_epoch=args.no_face_per_epoch, arch="mobilenet_v2", pretrained=imagenet_mobilenet_v2(),
            box_weight=weight,
        )  # fmt: skip
        n_box = BOX_OUTPUTS if weight else 0
        net = voted([model], True, n_box)
        labelled = predict_torch(net, img_va, f_va, args.size, args.margin, n_box=n_box)
        raw: list = []
        probs = predict_torch(net, img_va, c_va, args.size, args.margin, n_box=n_box, boxes=raw)
        res = {"train_seconds": round(secs), "curve": curve, "classes": vote_figures(y, labelled)}
        probs_of = [probs[ks] for ks in per_photo]
        res["system_rule_boxes"] = system(va, cands, probs_of, mapped)
        res["system_rule_boxes_one_a_face"] = system(va, cands, probs_of, mapped, one_face=True)
        np.savez_compressed(args.probs_out.with_name(f"{args.probs_out.stem}-{name}.npz"), probs=probs)
        if n_box:
            head_boxes = [[box_from_crop(c_va[k][1], raw[k], args.margin) for k in ks] for ks in per_photo]
            res["head_boxes"] = box_figures(va, head_boxes)
            res["system_head_boxes"] = system(va, cands, probs_of, head_boxes)
        out[name] = res
        print(name, {k: v for k, v in res.items() if k not in ("curve", "classes")}, flush=True)
    out["wall_seconds"] = round(time.time() - t0, 1)
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
