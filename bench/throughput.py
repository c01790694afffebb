#!/usr/bin/env python3
"""Throughput benchmark (issue 4): how fast a 12-MP library is sorted, cold, unchanged and topped up.

    .venv/bin/python bench/throughput.py --source runs/bench-throughput/lib12mp-600 \
        --model runs/bench-recognition/runs/s1 --sizes 500 --add 100

``--source`` is a library made by ../shared/bench/make_library.py with ``--size 4032x3024`` and at
least max(sizes) + add photos (photo i depends only on the seed and i, so its first N photos are
"a library of N"). For each size N, on one trained model, in one run, each stage a separate process
(so peak RSS is that of the stage's whole process tree, workers included):

1. floor: decode-only scan (read + hash + reduced JPEG decode + EXIF) on the same worker processes as
   classify, twice: at classify's own decode size (the canonical size: 2016 px for a 12-MP photo, what
   classify would cost if the models were free) and at 640 px (the least any detector needs),
2. naive: ultralytics ``model.predict(path)`` per file with the PyTorch weights + the recogniser (its face
   detector's ONet on torch) on the full-size photo, one process, same decision rule (smallest size
   only; ``--naive-limit``),
3. ``photosort classify`` cold, 4. again on the unchanged library, 5. after adding ``--add`` photos.

Writes bench/results/throughput.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))


# ------------------------------------------------------------------------------------------ the stages


def stage_floor(lib: Path, side: int) -> dict:
    import functools

    import throughput  # workers need the function by an importable name, not as __main__'s

    from sorter.io.scan import scan
    from sorter.pipeline.pool import default_workers, parallel_map
    from sorter.records import Photo

    photos = [p for p in scan(lib) if isinstance(p, Photo)]
    t = time.perf_counter()
    one = functools.partial(throughput.decode_one, side=side)
    n = sum(parallel_map(one, photos, default_workers(), models=False))
    return {"photos": n, "seconds": time.perf_counter() - t, "side": side}


def decode_one(photo, side: int) -> int:
    from sorter.io.decode import decode_work, read_photo

    decode_work(photo, read_photo(photo)[1], side=side)
    return 1


def stage_classify(lib: Path, out: Path, model: Path) -> dict:
    import sorter

    t = time.perf_counter()
    r = sorter.classify(lib, out, model, progress=False, log=lambda m: None)
    return {
        "photos": r.photos,
        "reused": r.reused,
        "seconds": time.perf_counter() - t,
        "stage_cpu_seconds": {k: round(v, 1) for k, v in r.stage_seconds.items()},
        "problems": len(r.problems),
    }


def stage_naive(lib: Path, model: Path, out_json: Path, limit: int) -> dict:
    """What a first attempt looks like: ultralytics reads each file itself, full size, one at a time."""
    import numpy as np
    from PIL import Image, ImageOps

    from sorter import offline
    from sorter.io.bundle import Bundle
    from sorter.io.scan import scan
    from sorter.models.yolo import load_yolo
    from sorter.pipeline.decide import decide
    from sorter.pipeline.recognise import FaceRecogniser
    from sorter.records import Decoded, Face, Photo

    offline.prepare()
    bundle = Bundle.load(model)
    yolo = load_yolo(bundle.weights_path)  # PyTorch
    rec = FaceRecogniser(bundle.path / bundle.recogniser) if bundle.recogniser else None  # ONet on torch
    accept, low = bundle.thresholds()
    photos = [p for p in scan(lib) if isinstance(p, Photo)][:limit]
    decisions = {}
    t = time.perf_counter()
    for photo in photos:
        res = yolo.predict(str(photo.path), imgsz=bundle.imgsz, conf=0.25, verbose=False, device="cpu")[0]
        faces = [
            Face(
                xyxy=tuple(float(v) for v in b), det_score=float(c), scores={bundle.classes[int(k)]: float(c)}
            )
            for b, c, k in zip(
                res.boxes.xyxy.numpy(), res.boxes.conf.numpy(), res.boxes.cls.numpy(), strict=True
            )
        ]
        with Image.open(photo.path) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        d = Decoded(photo=photo, rgb=rgb, scale=1.0, full_wh=(rgb.shape[1], rgb.shape[0]))
        if rec is not None:
            faces = rec.recognise(d, faces)
        dec = decide(photo, faces, accept, low)
        decisions[str(photo.path)] = {
            "accepted": dec.accepted,
            "uncertain": dec.uncertain,
            "people": ";".join(f"{p}:{s:.3f}" for p, s in sorted(dec.people.items(), key=lambda x: -x[1])),
            "faces": len(faces),
        }
    secs = time.perf_counter() - t
    out_json.write_text(json.dumps(decisions))
    return {"photos": len(photos), "seconds": secs}


# --------------------------------------------------------------------------------------------- harness


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run_stage(*args: str) -> dict:
    """Run one stage in a fresh process; its result plus the peak RSS of its process tree."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "_stage", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            stop.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"stage {args[0]} failed ({proc.returncode})")
    res = json.loads(out.strip().splitlines()[-1])
    res["process_seconds"] = round(wall, 1)  # including interpreter and model start-up
    res["peak_rss_mb"] = round(peak / 2**20)
    res["photos_per_s"] = round(res["photos"] / res["seconds"], 2) if res["seconds"] else None
    res["seconds"] = round(res["seconds"], 1)
    return res


def link_library(source: Path, dest: Path, rows: list[dict]) -> None:
    for row in rows:
        src, dst = source / "library" / row["path"], dest / row["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.link(src, dst)  # same bytes, same mtime: no copying, and the originals stay untouched


def agreement(naive_json: Path, out: Path) -> dict:
    naive = json.loads(naive_json.read_text())
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}

    def folders(accepted: list[str], uncertain: list[str]) -> tuple[list[str], list[str]]:
        return sorted(filter(None, accepted)), sorted(filter(None, uncertain))

    differ = []
    for p, d in naive.items():
        r = rows.get(p)
        ours = folders(r["accepted"].split(";"), r["uncertain"].split(";")) if r else None
        if ours != folders(d["accepted"], d["uncertain"]):
            differ.append(
                {
                    "path": Path(p).name,
                    "naive": {"folders": folders(d["accepted"], d["uncertain"]), "scores": d.get("people")},
                    "classify": {"folders": ours, "scores": r["people"] if r else None},
                }
            )
    same = len(naive) - len(differ)
    return {
        "photos": len(naive),
        "same_decisions": same,
        "share": round(same / max(1, len(naive)), 4),
        "differing": differ,  # (accepted, uncertain) folders and assigned scores, both ways
    }


def cpu_info() -> dict:
    """What the figures were measured on: OpenVINO runs bf16 where the CPU has it, so this matters."""
    info: dict = {"cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and "model" not in info:
            info["model"] = line.split(":", 1)[1].strip()
        if line.startswith("flags") and "flags" not in info:
            have = set(line.split(":", 1)[1].split())
            info["flags"] = sorted(have & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})
    return info


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_stage":
        name, *rest = sys.argv[2:]
        os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
        if name == "floor":
            res = stage_floor(Path(rest[0]), int(rest[1]))
        elif name == "classify":
            res = stage_classify(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        else:
            res = stage_naive(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]))
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="a make_library.py output (12-MP photos)")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 4000])
    ap.add_argument("--add", type=int, default=100)
    ap.add_argument("--naive-limit", type=int, default=500, help="photos the naive loop runs on")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-throughput")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "throughput.json")
    args = ap.parse_args()
    os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
    with open(args.source / "truth.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = max(args.sizes) + args.add
    if len(rows) < need:
        raise SystemExit(f"{args.source} has {len(rows)} photos; need {need}")
    results = []
    for n in sorted(args.sizes):
        lib = args.work / f"lib-{n}"
        out = args.work / f"sorted-{n}"
        shutil.rmtree(lib, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        link_library(args.source, lib, rows[:n])
        row: dict = {"photos": n}
        from sorter.io.decode import WORK_SIDE

        row["floor"] = run_stage("floor", str(lib), str(WORK_SIDE))
        print(f"{n}: floor {row['floor']}", flush=True)
        row["floor_640"] = run_stage("floor", str(lib), "640")
        print(f"{n}: floor at 640 px {row['floor_640']}", flush=True)
        if n == min(args.sizes) and args.naive_limit > 0:
            naive_json = args.work / f"naive-{n}.json"
            row["naive"] = run_stage(
                "naive", str(lib), str(args.model), str(naive_json), str(args.naive_limit)
            )
            print(f"{n}: naive {row['naive']}", flush=True)
        row["cold"] = run_stage("classify", str(lib), str(out), str(args.model))
        print(f"{n}: cold {row['cold']}", flush=True)
        if "naive" in row:
            row["agreement_with_naive"] = agreement(naive_json, out)
        row["rerun"] = run_stage("classify", str(lib), str(out), str(args.model))
        print(f"{n}: rerun {row['rerun']}", flush=True)
        link_library(args.source, lib, rows[n : n + args.add])
        row["added"] = run_stage("classify", str(lib), str(out), str(args.model))
        row["added"]["new_photos_processed"] = row["added"]["photos"] - row["added"]["reused"]
        print(f"{n}: +{args.add} {row['added']}", flush=True)
        cold, floor = row["cold"]["seconds"], row["floor"]["seconds"]
        row["ratios"] = {
            "cold_over_floor": round(cold / floor, 2),
            "cold_over_floor_640": round(cold / row["floor_640"]["seconds"], 2),
            "cold_over_rerun": round(cold / max(row["rerun"]["seconds"], 1e-3), 1),
        }
        if "naive" in row:
            naive_per_photo = row["naive"]["seconds"] / row["naive"]["photos"]
            row["ratios"]["naive_over_cold"] = round(naive_per_photo / (cold / n), 2)
        results.append(row)
    if len(results) > 1:
        a, b = results[0]["cold"]["photos_per_s"], results[-1]["cold"]["photos_per_s"]
        scaling = {"photos_per_s_small": a, "photos_per_s_large": b, "change": round(b / a - 1, 3)}
    else:
        scaling = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    doc = {"settings": settings, "cpu": cpu_info(), "runs": results, "scaling": scaling}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\n{'photos':>7} {'stage':<8} {'photos/s':>9} {'seconds':>9} {'peak RSS MB':>12}")
    for r in results:
        for stage in ("floor", "floor_640", "naive", "cold", "rerun", "added"):
            if stage in r:
                s = r[stage]
                rate, secs, rss = s["photos_per_s"], s["seconds"], s["peak_rss_mb"]
                print(f"{r['photos']:>7} {stage:<8} {rate!s:>9} {secs:>9} {rss:>12}")
        print(
            f"{'':>7} ratios {r['ratios']}"
            + (
                f"; same decisions as naive {r['agreement_with_naive']['same_decisions']}"
                f"/{r['agreement_with_naive']['photos']}"
                if "naive" in r
                else ""
            )
        )
    if scaling:
        print(f"scaling: {scaling}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
