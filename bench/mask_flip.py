#!/usr/bin/env python3
"""Should the mask head also look at each face's mirror image? Chosen on validation, never the test side.

    .venv/bin/python bench/mask_flip.py --data ../shared/data/face-mask

The face-mask set's train side (``N % 8 != 0``) split as bench/mask_head.py splits it (its validation
fifth, whole duplicate groups, stratified on the rare class); --members networks trained on the train
split exactly as bench/mask_head.py --compare-members trains them (focal loss, 64 px, seeds 0..), and
their soft vote scored on the validation faces with and without the mirrored crop averaged in
(``sorter.training.mask_net.voted(flip=True)``: twice the head's time a face). Kept: the vote's
macro-F1, then its mean class AP (bench/mask_head.py's rule). Writes bench/results/mask_flip.json.
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

from mask_head import faces_of, train_val  # noqa: E402
from mask_members import read_rgb, train_members, vote, vote_figures  # noqa: E402

from sorter.heads.mask import HEAD_CLASSES  # noqa: E402
from sorter.training.mask_fit import write_json  # noqa: E402
from sorter.training.mask_head import predict_torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_flip.json")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--loss", default="focal")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--margin", type=float, default=1.2)
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    _, tr, va = train_val(args.data, args.val_frac, args.seed)  # the test side is never read
    f_tr, f_va = faces_of(tr), faces_of(va)
    seeds = list(range(args.seed, args.seed + args.members))
    trained = train_members(
        [p["path"] for p in tr], f_tr, args.loss, args.epochs, args.size, args.margin, seeds, args.batch,
        args.lr, args.jobs, synthetic=0.0,
    )  # fmt: skip
    img_va = [read_rgb(p["path"]) for p in va]
    y = np.array([f[2] for f in f_va])
    out: dict = {
        "benchmark": "mask head: mirrored crop averaged in or not, on validation (bench/mask_flip.py)",
        "command": shlex.join([".venv/bin/python", "bench/mask_flip.py", *sys.argv[1:]]),
        "split": {"train_photos": len(tr), "val_photos": len(va), "val_faces": len(f_va)},
        "members": args.members,
        "seeds": seeds,
        "epochs": args.epochs,
        "train_seconds": round(sum(t[2] for t in trained), 1),
    }
    key = {False: "flip_false", True: "flip_true"}
    for flip in (False, True):
        model = vote([t[0] for t in trained], len(HEAD_CLASSES), flip=flip)
        out[key[flip]] = vote_figures(y, predict_torch(model, img_va, f_va, args.size, args.margin))
        print(f"flip {flip}: {out[key[flip]]}", flush=True)
    keep = max((False, True), key=lambda f: (out[key[f]]["macro_f1"], out[key[f]]["mean_class_ap"]))
    out["chosen_flip"] = keep
    out["rule"] = (
        "the vote's validation macro-F1, then its mean class AP; a tie keeps one view (half the time)"
    )
    out["wall_seconds"] = round(time.time() - t0, 1)
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("chosen_flip", "train_seconds", "wall_seconds")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
