#!/usr/bin/env python3
"""Videos in a library, sorted end to end by ``photosort classify`` with a trained model (issue 14).

    .venv/bin/python bench/video_library.py [--seed 7] [--videos 20] [--shots 3] [--seconds 4]
    .venv/bin/python bench/video_library.py \
        --library runs/bench-review/daycare --model runs/bench-review/runs/m0

A daycare library (``../shared/bench/make_library.py``: real LFW faces, most masked, strangers among
them) and a model trained on its labelled part (``--library`` / ``--model`` reuse existing ones, as
bench/live.py does). ``--videos`` videos are made from its library photos, ``--shots`` photos each,
``--seconds`` seconds a photo (a hard cut between them), fitted to 640x480 with a slow zoom
(1.0 -> 1.2), 30 frames/s, cv2.VideoWriter (mp4v); beside them ``--photos`` library photos.

Measured: per video, its folders against the union of its photos' children (truth.csv ``people``):
children found (in their folder), sent to uncertain/ only, missed; folders of children not in it; and
the seconds classify took per second of video (a run on the videos alone, default workers, 2 cores,
the load recorded). Writes bench/results/video_library.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

W, H, FPS = 640, 480, 30


def make_video(lib: Path, rows: list[dict], seconds: float, path: Path) -> None:
    import cv2
    from PIL import Image, ImageOps

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    per = round(seconds * FPS)
    for row in rows:
        img = cv2.cvtColor(
            np.asarray(ImageOps.exif_transpose(Image.open(lib / "library" / row["path"])).convert("RGB")),
            cv2.COLOR_RGB2BGR,
        )
        h, w = img.shape[:2]
        s0 = min(W / w, H / h)
        for i in range(per):
            s = s0 * (1.0 + 0.2 * i / max(1, per - 1))
            m = np.array([[s, 0, W / 2 - s * w / 2], [0, s, H / 2 - s * h / 2]])
            writer.write(cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_AREA, borderValue=(0, 0, 0)))
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--library", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-video-library")
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--photos", type=int, default=30)
    args = ap.parse_args()
    import sorter

    if args.library is None or args.model is None:
        from live import build

        lib, model = build(args.work, args.seed, 300, 600)
    else:
        lib, model = args.library, args.model
    with open(lib / "truth.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))
    videos_dir, mixed = args.work / "videos", args.work / "mixed"
    for d in (videos_dir, mixed, args.work / "sorted-videos", args.work / "sorted-mixed"):
        shutil.rmtree(d, ignore_errors=True)
    videos_dir.mkdir(parents=True)
    truth: dict[str, set[str]] = {}
    for v in range(args.videos):
        shots = [rows[k] for k in order[v * args.shots : (v + 1) * args.shots]]
        name = f"VID_{v:04d}.mp4"
        make_video(lib, shots, args.seconds, videos_dir / name)
        truth[name] = {p for r in shots for p in r["people"].split(";") if p}
    shutil.copytree(videos_dir, mixed)
    for k in order[args.videos * args.shots : args.videos * args.shots + args.photos]:
        src = lib / "library" / rows[k]["path"]
        shutil.copy(src, mixed / f"photo_{k:05d}{src.suffix}")
    duration = args.videos * args.shots * args.seconds

    t0 = time.perf_counter()
    load0 = os.getloadavg()
    report = sorter.classify(videos_dir, args.work / "sorted-videos", model, progress=False)
    seconds = time.perf_counter() - t0
    mixed_report = sorter.classify(mixed, args.work / "sorted-mixed", model, progress=False)

    out = args.work / "sorted-mixed"
    found = uncertain_only = missed = wrong = exact = 0
    per_video = {}
    for name, people in sorted(truth.items()):
        folders = {p.parent.name for p in out.rglob(name) if p.is_file()}
        got = folders - {"uncertain"}
        f, w = got & people, got - people
        u = (people - got) if "uncertain" in folders else set()
        m = people - got - u
        found, wrong, uncertain_only, missed = (
            found + len(f),
            wrong + len(w),
            uncertain_only + len(u),
            missed + len(m),
        )
        exact += got == people and "uncertain" not in folders
        per_video[name] = {"truth": sorted(people), "folders": sorted(folders)}
    total = sum(len(p) for p in truth.values())
    result = {
        "library": str(lib),
        "model": str(model),
        "videos": args.videos,
        "video_seconds": duration,
        "photos_beside": args.photos,
        "children_in_videos": total,
        "found": found,
        "uncertain_only": uncertain_only,
        "missed": missed,
        "wrong_folders": wrong,
        "videos_exactly_right": exact,
        "precision": round(found / max(1, found + wrong), 4),
        "recall": round(found / max(1, total), 4),
        "classify_seconds_videos_only": round(seconds, 2),
        "seconds_per_video_second": round(seconds / duration, 4),
        "stage_seconds": {k: round(v, 2) for k, v in report.stage_seconds.items()},
        "mixed_run_seconds": round(mixed_report.seconds, 2),
        "mixed_problems": [str(p) for p in mixed_report.problems],
        "loadavg_before": load0,
        "cores": os.cpu_count(),
        "per_video": per_video,
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "video_library.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_video"}, indent=1))


if __name__ == "__main__":
    main()
