#!/usr/bin/env python3
"""Scaling benchmark (issue 16): classify with the local backend and on Ray, and what a night sorts.

    PYTHONPATH=. .venv/bin/python bench/scale.py [--library 600] [--repeat 2]

A daycare library (../shared/bench/make_library.py, seed 1, 1600x1200 photos) and a model trained on
its labelled part (1 detector epoch: classify then runs the face recogniser alone, as training decides
for these photos). Each configuration is one cold run of the real command in a fresh process (its own
Ray when it uses one), timed from outside:

* local: ``--backend local`` with its default workers (one per core, at most 4),
* ray-1, ray-2: ``--backend ray --workers 1`` / ``--workers 2`` (a local Ray of this machine's cores),

and, for each, the steady rate: photos committed between 10% and 90% of the run (read from the index
while it runs) over that time, without start-up (imports, Ray, model loading). Checks that every run
makes the same copies and manifest as the local one. From the measured per-photo cost of one actor (one
core) and the 1 -> 2 worker scaling, estimates how many nodes sort 10 million photos in a 10-hour night,
and the driver's own ceiling (it decides, copies and journals every photo, serially).

Writes bench/results/scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

NIGHT_HOURS = 10
PHOTOS = 10_000_000
NODE_CORES = (8, 16, 32)
CONFIGS = {"local": ["--backend", "local"], "ray-1": ["--backend", "ray", "--workers", "1"]}
CONFIGS["ray-2"] = ["--backend", "ray", "--workers", "2"]


def child(lib: Path, out: Path, model: Path, args: list[str]) -> None:
    """One classify run in this process, its report as JSON on stdout."""
    import sorter

    backend = args[args.index("--backend") + 1]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else None
    r = sorter.classify(lib, out, model, backend=backend, workers=workers, progress=False, log=lambda m: None)
    print(
        json.dumps(
            {"photos": r.photos, "classify_seconds": r.seconds, "stage_seconds": dict(r.stage_seconds)}
        )
    )


def indexed(out: Path) -> int:
    db = out / ".photosort-index.sqlite"
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)) as con:
        try:
            return con.execute("SELECT count(*) FROM photos").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def run(name: str, lib: Path, out: Path, model: Path, total: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", str(lib), str(out), str(model), *CONFIGS[name]]
    seen: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    while proc.poll() is None:
        with contextlib.suppress(sqlite3.Error):
            seen.append((time.perf_counter() - t0, indexed(out)))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"{name} failed"
    report = json.loads(proc.stdout.read().strip().splitlines()[-1])
    lo, hi = total // 10, total - total // 10
    t_lo = next(t for t, n in seen if n >= lo)
    t_hi = next((t for t, n in seen if n >= hi), wall)
    stages = report["stage_seconds"]
    analyse = sum(stages.get(k, 0.0) for k in ("decode", "detect", "recognise"))
    return {
        "photos": report["photos"],
        "wall_seconds": round(wall, 2),
        "photos_per_s": round(report["photos"] / wall, 2),
        "classify_seconds": round(report["classify_seconds"], 2),
        "first_photo_seconds": round(next(t for t, n in seen if n >= 1), 2),
        "steady_photos_per_s": round((hi - lo) / (t_hi - t_lo), 2),
        "analyse_seconds_per_photo": round(analyse / report["photos"], 4),  # in a worker, all stages
        "place_seconds_per_photo": round(stages.get("place", 0.0) / report["photos"], 4),  # the driver
    }


def same_output(a: Path, b: Path) -> bool:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_crash import snapshot

    return snapshot(a) == snapshot(b)


def estimate(cost: float, efficiency: float, place: float) -> dict:
    """Nodes for PHOTOS in NIGHT_HOURS from one core's per-photo cost and the measured efficiency."""
    core_seconds = PHOTOS * cost / efficiency
    night = NIGHT_HOURS * 3600
    return {
        "assumptions": {
            "photos": PHOTOS,
            "night_hours": NIGHT_HOURS,
            "seconds_per_photo_per_core": round(cost, 4),
            "scaling_efficiency": round(efficiency, 3),
            "one actor per core, the efficiency measured 1 -> 2 workers holding across nodes": True,
        },
        "cores_needed": math.ceil(core_seconds / night),
        "nodes_needed": {f"{c} cores": math.ceil(core_seconds / night / c) for c in NODE_CORES},
        # The driver decides, copies and journals every photo alone: its rate caps a single run.
        "driver_ceiling_photos_per_s": round(1 / place, 1) if place else None,
        "driver_hours_for_all": round(PHOTOS * place / 3600, 1) if place else None,
        "runs_in_parallel_needed_for_the_driver": math.ceil(PHOTOS * place / night) if place else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each configuration (the fastest kept)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if sys.argv[1:2] == ["--child"]:  # one timed run (started by run() below)
        lib, out, model, *rest = sys.argv[2:]
        child(Path(lib), Path(out), Path(model), rest)
        return
    args = ap.parse_args()
    work = args.work
    data = work / "daycare"
    truth = data / "truth.csv"
    if not truth.is_file() or len(truth.read_text(encoding="utf-8").splitlines()) - 1 != args.library:
        shutil.rmtree(data, ignore_errors=True)  # photo i depends on the seed and i only: same first photos
        subprocess.run(
            [sys.executable, str(SHARED / "bench" / "make_library.py"), "--lfw", str(SHARED / "data" / "lfw")]
            + ["--out", str(data), "--seed", "1", "--labelled", "60", "--library", str(args.library)]
            + ["--people", "4", "--jobs", "2"],
            check=True,
        )
    model = work / "runs" / "m"
    if not (model / "bundle.json").is_file():
        import sorter

        sorter.train(data / "labelled", name="m", runs_dir=work / "runs", epochs=1, imgsz=320, wandb="off")
    total = sum(1 for p in (data / "library").rglob("*") if p.is_file())
    result: dict = {
        "settings": {"library_photos": total, "photo_size": "1600x1200", "repeat": args.repeat},
        "machine": {"cores": len(os.sched_getaffinity(0)), "load_at_start": os.getloadavg()},
        "runs": {},
    }
    for k in range(args.repeat):
        for name in CONFIGS:
            r = run(name, data / "library", work / f"out-{name}", model, total)
            print(name, json.dumps(r), flush=True)
            best = result["runs"].get(name)
            if best is None or r["wall_seconds"] < best["wall_seconds"]:
                result["runs"][name] = r | {"repeat": k}
            if name != "local":
                assert same_output(work / "out-local", work / f"out-{name}"), f"{name} sorted differently"
    result["machine"]["load_at_end"] = os.getloadavg()
    runs = result["runs"]
    result["same_output_as_local"] = True  # asserted above, for every run
    result["ray_wall_over_local"] = round(runs["ray-2"]["wall_seconds"] / runs["local"]["wall_seconds"], 3)
    result["scaling_1_to_2"] = round(runs["ray-2"]["photos_per_s"] / runs["ray-1"]["photos_per_s"], 3)
    result["steady_scaling_1_to_2"] = round(
        runs["ray-2"]["steady_photos_per_s"] / runs["ray-1"]["steady_photos_per_s"], 3
    )
    cost = 1 / runs["ray-1"]["steady_photos_per_s"]  # one actor on one core, start-up left out
    result["estimate"] = estimate(
        cost, min(1.0, result["steady_scaling_1_to_2"] / 2), runs["local"]["place_seconds_per_photo"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'run':<8}{'wall s':>8}{'photos/s':>10}{'steady/s':>10}{'first s':>9}")
    for name, r in runs.items():
        w, p, s, f = r["wall_seconds"], r["photos_per_s"], r["steady_photos_per_s"], r["first_photo_seconds"]
        print(f"{name:<8}{w:>8.1f}{p:>10.2f}{s:>10.2f}{f:>9.1f}")
    print(
        f"Ray (2 workers) wall / local wall: {result['ray_wall_over_local']:.2f}; 2 workers / 1: "
        f"{result['scaling_1_to_2']:.2f} (steady {result['steady_scaling_1_to_2']:.2f})"
    )
    e = result["estimate"]
    print(f"10 M photos in {NIGHT_HOURS} h: {e['cores_needed']} cores, nodes {e['nodes_needed']};")
    print(f"one driver commits at most {e['driver_ceiling_photos_per_s']} photos/s")


if __name__ == "__main__":
    main()
