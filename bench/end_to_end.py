#!/usr/bin/env python3
"""End-to-end benchmark: build a daycare library, train, classify, score.

    .venv/bin/python bench/end_to_end.py [--labelled 300 --library 1000 --seed 1 --epochs N]

``make bench``: a new user's whole job with ``train``'s own defaults (on a CPU, YOLO trains for a
time budget; ``--epochs N`` trains N epochs instead). Needs ../shared (make_library.py, eval_sort.py,
LFW). Writes bench/results/end_to_end.json and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "bench"))

from daycare import make_library  # noqa: E402


def sh(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--labelled", type=int, default=300)
    ap.add_argument("--library", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=None, help="YOLO epochs (default: train's own)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-e2e")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "end_to_end.json")
    ap.add_argument("--train-args", default="", help="extra arguments for photosort train")
    args = ap.parse_args()
    if not (SHARED / "bench" / "make_library.py").is_file():
        raise SystemExit(f"needs ../shared beside the project ({SHARED})")
    os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
    photosort = [sys.executable, "-m", "sorter"]
    lib = args.work / f"daycare-s{args.seed}-{args.labelled}-{args.library}"
    make_library(lib, args.seed, args.labelled, args.library, quiet=True)
    runs, sorted_dir = args.work / "runs", args.work / "sorted"
    sh("rm", "-rf", sorted_dir)

    t = time.perf_counter()
    sh(
        *photosort,
        "train",
        lib / "labelled",
        "--name",
        "e2e",
        "--runs",
        runs,
        *(["--epochs", args.epochs] if args.epochs is not None else []),
        "--imgsz",
        args.imgsz,
        "--seed",
        args.seed,
        "--wandb",
        "off",
        *args.train_args.split(),
    )
    train_s = time.perf_counter() - t

    t = time.perf_counter()
    r = subprocess.run(
        [*photosort, "classify", lib / "library", "--out", sorted_dir, "--model", runs / "e2e", "-q"]
    )
    classify_s = time.perf_counter() - t
    if r.returncode not in (0, 3):
        raise SystemExit(f"classify failed ({r.returncode})")
    score = json.loads(
        sh(
            sys.executable,
            SHARED / "bench" / "eval_sort.py",
            "--truth",
            lib / "truth.csv",
            "--library",
            lib / "library",
            "--sorted",
            sorted_dir,
            capture_output=True,
            text=True,
        ).stdout
    )
    metrics = json.loads((runs / "e2e" / "metrics.json").read_text())
    result = {
        "library": {"seed": args.seed, "labelled": args.labelled, "photos": args.library},
        "train": {
            "epochs": args.epochs if args.epochs is not None else "train's default (a time budget on a CPU)",
            "imgsz": args.imgsz,
            "seconds": round(train_s, 1),
            "val_mAP50": metrics["detector"]["mAP50"],
            "val_mAP50-95": metrics["detector"]["mAP50-95"],
            "schedule": metrics.get("detector_training", {}).get("schedule"),
            "system_val_mAP50": metrics.get("system", {}).get("mAP50"),
            "detector_used_by_classify": metrics.get("detector_use", {}).get("used"),
        },
        "classify": {"seconds": round(classify_s, 1), "photos_per_s": round(args.library / classify_s, 2)},
        "precision": score["precision"],
        "recall": score["recall"],
        "f1": score["f1"],
        "uncertain": score["uncertain"],
        "lost": score["lost"],
        "altered": score["altered"],
        "foreign": score["foreign"],
        "per_person": score["per_person"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'metric':<22}{'value':>10}")
    for k, v in [
        ("precision", result["precision"]),
        ("recall", result["recall"]),
        ("f1", result["f1"]),
        ("uncertain photos", result["uncertain"]),
        ("lost appearances", result["lost"]),
        ("altered originals", result["altered"]),
        ("train seconds", result["train"]["seconds"]),
        ("val mAP50", result["train"]["val_mAP50"]),
        ("classify photos/s", result["classify"]["photos_per_s"]),
    ]:
        print(f"{k:<22}{v:>10}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
