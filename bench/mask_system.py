#!/usr/bin/env python3
"""The system as a mask-state detector, two choices around the head, made on validation (issue 12).

    .venv/bin/python bench/mask_system.py --data ../shared/data/face-mask [--min-sides 640 960 1280]

1. How large a small photo is made before the face detector looks at it (``YuNetDetector.min_side``;
   the default detector's ``sorter.models.registry.MIN_SIDE``): YuNet finds faces down to ~10 px of its
   input, and a quarter of the face-mask set's labelled faces are under 16 px.
2. One box a face (``sorter.boxes.one_per_face``): the face detector sometimes gives a face a second
   box shifted to a cheek, which counts as a false detection (and may be read as another state).

Everything on the face-mask set's train side (``N % 8 != 0``; the test side is never read), split as
bench/mask_head.py splits it (validation fifth). One head as the shipped one is trained (bench/
mask_backbone.py's choice: MobileNetV2 from ImageNet, 128 px, mirror view, focal loss, no_face
examples from the train split's detector candidates at the shipped detector settings), on the train
split only, and kept in ``--head-cache`` so a rerun does not train again. For each ``min_side``: the
validation photos' detector candidates (cached as bench/mask_head.py caches them), the head's
probabilities for them, the labeller's box from the train split's learnt rule, and the system's mAP50
/ mAP50-95 (bench/mask_box.py's scoring, as ``sorter.training.detection`` scores it) with every
candidate and with one a face, also counting only faces >= 16 px. Kept: validation mAP50.
Writes bench/results/mask_system.json and prints a table.
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

from mask_box import box_figures, candidate_faces, head_arguments, system, train_split_box_map  # noqa: E402
from mask_head import detector_candidates, faces_of, no_face_examples, train_val  # noqa: E402
from mask_members import imagenet_mobilenet_v2, read_rgb  # noqa: E402

from sorter.training.detection import apply_box_map  # noqa: E402
from sorter.training.mask_fit import write_json  # noqa: E402
from sorter.training.mask_head import predict_torch, train  # noqa: E402
from sorter.training.mask_net import make_model, voted  # noqa: E402

ARCH = "mobilenet_v2"


def validation_head(args, img_tr, tr, cands):
    """The head trained on the train split (or read back from ``args.head_cache``), as a voted net."""
    import torch

    if args.head_cache.is_file():
        model = make_model(arch=ARCH)
        model.load_state_dict(torch.load(args.head_cache, map_location="cpu"))
        secs = None
    else:
        nf, _ = no_face_examples(tr, img_tr, cands, args.seed)
        model, _, secs = train(
            img_tr, faces_of(tr) + nf, "focal", args.epochs, args.size, args.margin, args.seed, args.batch,
            args.lr, no_face_per_epoch=args.no_face_per_epoch, arch=ARCH, pretrained=imagenet_mobilenet_v2(),
        )  # fmt: skip
        args.head_cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.head_cache)
    model.eval()
    return voted([model], True), secs


def without_small(photos: list[dict], cands: dict, probs_of: list, boxes_of: list, min_px: float):
    """The same photos with labelled faces and candidates under ``min_px`` tall left out."""
    ps, cs, pr, bs = [], {}, [], []
    for p, probs, boxes in zip(photos, probs_of, boxes_of, strict=True):
        keep_l = [k for k, b in enumerate(p["boxes"]) if b[3] - b[1] >= min_px]
        keep_c = [k for k, b in enumerate(boxes) if b[3] - b[1] >= min_px]
        ps.append({**p, "boxes": [p["boxes"][k] for k in keep_l], "labels": [p["labels"][k] for k in keep_l]})
        cs[p["n"]] = [cands[p["n"]][k] for k in keep_c]
        pr.append(probs[keep_c])
        bs.append([boxes[k] for k in keep_c])
    return ps, cs, pr, bs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_system.json")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "mask_head_no_face")
    ap.add_argument("--head-cache", type=Path, default=ROOT / "runs" / "mask_system_head.pt")
    ap.add_argument("--min-sides", type=int, nargs="+", default=[640, 960, 1280])
    head_arguments(ap)
    args = ap.parse_args()
    import torch

    from sorter.models.registry import MIN_SIDE

    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_side, tr, va = train_val(args.data, args.val_frac, args.seed)  # the test side is never read
    cands = detector_candidates(train_side, args.cache_dir / "candidates_train.json")
    img_tr = [read_rgb(p["path"]) for p in tr]
    img_va = [read_rgb(p["path"]) for p in va]
    net, secs = validation_head(args, img_tr, tr, cands)
    box_map = train_split_box_map(tr, cands)
    out: dict = {
        "benchmark": "the system's min_side and one box a face, validation (bench/mask_system.py)",
        "command": shlex.join([".venv/bin/python", "bench/mask_system.py", *sys.argv[1:]]),
        "split": {"train_photos": len(tr), "val_photos": len(va), "val_faces": len(faces_of(va))},
        "shipped_min_side": MIN_SIDE,
        "head_train_seconds": secs,
        "by_min_side": {},
    }
    for ms in args.min_sides:
        t = time.time()
        c_ms = detector_candidates(va, args.cache_dir / f"candidates_val_min{ms}.json", min_side=ms)
        detect_s = time.time() - t
        c_va = candidate_faces(va, c_ms)
        per_photo = [[k for k, f in enumerate(c_va) if f[0] == i] for i in range(len(va))]
        probs = predict_torch(net, img_va, c_va, args.size, args.margin) if c_va else np.zeros((0, 4))
        probs_of = [probs[ks] for ks in per_photo]
        mapped = [[apply_box_map(c["det_box"], box_map) for c in c_ms[p["n"]]] for p in va]
        small = without_small(va, c_ms, probs_of, mapped, 16.0)
        res = {
            "candidates_per_photo": round(len(c_va) / len(va), 2),
            "boxes": box_figures(va, mapped),
            "every_candidate": system(va, c_ms, probs_of, mapped),
            "one_a_face": system(va, c_ms, probs_of, mapped, one_face=True),
            "every_candidate_16px": system(*small),
            "one_a_face_16px": system(*small, one_face=True),
        }
        if detect_s > 5:  # not read from the cache
            res["detect_seconds_per_photo"] = round(detect_s / len(va), 3)
        out["by_min_side"][str(ms)] = res
        print(ms, {k: v.get("mAP50", "") if isinstance(v, dict) else v for k, v in res.items()}, flush=True)
    best = max(
        ((ms, way) for ms in out["by_min_side"] for way in ("every_candidate", "one_a_face")),
        key=lambda t: out["by_min_side"][t[0]][t[1]]["mAP50"],
    )
    out["kept"] = {"min_side": int(best[0]), "one_a_face": best[1] == "one_a_face"}
    out["wall_seconds"] = round(time.time() - t0, 1)
    write_json(args.out, out)
    print(table(out))
    print(f"wrote {args.out}")


def table(out: dict) -> str:
    rows = ["min_side  way              mAP50  mAP50-95  >=16px mAP50  IoU>=0.5  cand/photo"]
    for ms, r in out["by_min_side"].items():
        for way in ("every_candidate", "one_a_face"):
            rows.append(
                f"{ms:>8}  {way:<15}  {r[way]['mAP50']:.3f}  {r[way]['mAP50-95']:.3f}     "
                f"{r[way + '_16px']['mAP50']:.3f}         {r['boxes']['iou_ge_0.5']:.3f}     "
                f"{r['candidates_per_photo']:.1f}"
            )
    rows.append(f"kept: {out['kept']}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
