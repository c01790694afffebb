#!/usr/bin/env python3
"""How `photosort train` grows with the labelled set (issue 12): time and peak memory, defaults.

    .venv/bin/python bench/train_scale.py [--sizes 300 750 2000] [--face-mask ../shared/data/face-mask]

For each size, a synthetic daycare labelled set (``make_library.py --labelled N``, seed 7, not a seed
anything was tuned on) is trained with ``photosort train`` and its defaults, in a child process so its
peak resident memory is its own (``resource.getrusage(RUSAGE_CHILDREN)``). With ``--face-mask``, the
face-mask set's train side (``N % 8 != 0``: real photos, mask states as classes) is trained the same
way. Writes bench/results/train_scale.json and prints a table: seconds, peak GB, labelled faces, and
seconds per 1,000 faces (flat or falling = no worse than linear).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run_train(data: Path, runs: Path, name: str) -> dict:
    """`photosort train` in a fresh child: wall seconds and that child's peak RSS."""
    env = dict(os.environ, PHOTOSORT_HOME=str(ROOT / "runs" / ".home"), WANDB_MODE="offline")
    t = time.perf_counter()
    # a grandchild per measurement: RUSAGE_CHILDREN is the max over all waited-for children, so each
    # size runs under its own short-lived python that reports only its child's peak
    probe = (
        "import resource, subprocess, sys; "
        "rc = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", probe, str(ROOT / ".venv" / "bin" / "photosort"), "train", str(data)]
    cmd += ["--name", name, "--runs", str(runs), "--wandb", "off"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"train on {data} failed:\n{out.stderr[-3000:]}")
    peak_kb = int(out.stdout.strip().splitlines()[-1])
    metrics = json.loads((runs / name / "metrics.json").read_text())
    return {
        "seconds": round(seconds, 1),
        "peak_gb": round(peak_kb / 2**20, 2),
        "train_seconds": metrics.get("train_seconds"),
        "log_tail": out.stderr.strip().splitlines()[-12:],
    }


def labelled_faces(folder: Path) -> tuple[int, int]:
    xmls = list(folder.glob("*.xml"))
    return len(xmls), sum(len(re.findall(r"<object>", p.read_text())) for p in xmls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[300, 750, 2000])
    ap.add_argument("--face-mask", type=Path, default=None, help="also the face-mask train side")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_scale.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.face_mask:
        sys.path.insert(0, str(ROOT / "bench"))
        from mask_state import split_folders

        train_dir, _ = split_folders(args.face_mask, args.work / "face-mask")
        photos, faces = labelled_faces(train_dir)
        r = run_train(train_dir, args.work / "runs", "face-mask")
        rows.append({"set": "face-mask train side", "photos": photos, "faces": faces, **r})
        print(rows[-1]["set"], rows[-1]["seconds"], "s", rows[-1]["peak_gb"], "GB", flush=True)
    for n in args.sizes:
        lib = args.work / f"daycare-{n}"
        if not (lib / "labelled").is_dir():
            subprocess.run(
                [
                    sys.executable,
                    str(SHARED / "bench" / "make_library.py"),
                    "--lfw",
                    str(SHARED / "data" / "lfw"),
                ]
                + ["--out", str(lib), "--seed", "7", "--labelled", str(n), "--library", "10", "--jobs", "2"],
                check=True,
                capture_output=True,
            )
        photos, faces = labelled_faces(lib / "labelled")
        r = run_train(lib / "labelled", args.work / "runs", f"daycare-{n}")
        rows.append({"set": f"daycare {n}", "photos": photos, "faces": faces, **r})
        print(rows[-1]["set"], rows[-1]["seconds"], "s", rows[-1]["peak_gb"], "GB", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    args.out.write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    print(f"\n{'set':<24}{'photos':>8}{'faces':>8}{'seconds':>9}{'peak GB':>9}{'s/1k faces':>12}")
    for r in rows:
        per = r["seconds"] / max(1, r["faces"]) * 1000
        print(
            f"{r['set']:<24}{r['photos']:>8}{r['faces']:>8}{r['seconds']:>9.0f}{r['peak_gb']:>9.2f}{per:>12.0f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
