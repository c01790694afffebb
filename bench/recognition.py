#!/usr/bin/env python3
"""Recognition benchmark: detector only (the seed project's approach) vs detector + recogniser.

    .venv/bin/python bench/recognition.py [--seeds 1 2 3 --labelled 300 --library 1500 --epochs 10]

For each seed: build a daycare library with ../shared/bench/make_library.py, train once (YOLO +
recogniser), classify the library twice (without and with the recogniser), score both with
../shared/bench/eval_sort.py, and split recall into masked and unmasked appearances using truth.csv.
Writes bench/results/recognition.json and prints a table.

--mask-style picks whose masks the faces wear (training photos and library alike):
  drawn   make_library.py's own drawn masks (the library this benchmark always used)
  bench2  make_library.py --mask-rate 0, then masks drawn by bench/mask_styles.py (a style neither
          make_library.py nor photosort's training renderer produces: the product cannot have learnt it)
  both    (default) each of them, trained and scored separately, reported side by side
Every row of the JSON carries "mask_style"; the table has a "masks" column.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def masked_recall(lib: Path, sorted_dir: Path, min_height: int = 48) -> dict[str, float]:
    """Recall of appearances (face >= min_height) split by whether that face wore a mask."""
    from sorter.io.decode import sha256_file

    placed: dict[str, set[str]] = {}
    for f in sorted_dir.rglob("*"):
        rel = f.relative_to(sorted_dir)
        if f.is_file() and len(rel.parts) >= 2:
            placed.setdefault(sha256_file(f), set()).add(rel.parts[0])
    hits = {True: [0, 0], False: [0, 0]}
    with open(lib / "truth.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            folders = placed.get(row["sha256"], set())
            for face in json.loads(row["faces"]):
                if face["label"] and face["height"] >= min_height:
                    h = hits[bool(face["masked"])]
                    h[1] += 1
                    h[0] += face["label"] in folders
    return {
        "recall_masked": round(hits[True][0] / max(1, hits[True][1]), 4),
        "recall_unmasked": round(hits[False][0] / max(1, hits[False][1]), 4),
    }


def fusion(lib: Path, out: Path, target: float = 0.98) -> dict:
    """Does mixing the detector's class scores into the recogniser's help? Measured, not assumed.

    From the faces stored in the index (each keeps the recogniser's scores and, when YOLO found it too,
    YOLO's class scores), photo-level scores per person are recomputed as (1 - w) * recogniser + w * YOLO
    for several w, and the recall reachable at ``target`` precision with one global threshold chosen
    on the library itself (an optimistic bound, the same for every w) is reported per w.
    """
    import sqlite3

    import numpy as np

    from sorter.heads.identity import assign
    from sorter.io.index import _faces
    from sorter.pipeline.classify import INDEX_FILE

    truth: dict[str, set[str]] = {}
    with open(lib / "truth.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            truth[row["path"]] = {p for p in row["people"].split(";") if p}
    db = sqlite3.connect(out / INDEX_FILE)
    stored = {rel: _faces(faces) or [] for rel, faces in db.execute("SELECT rel, faces FROM photos")}
    db.close()
    n_truth = sum(len(v) for v in truth.values())
    with_yolo = sum(bool(f.det_scores) for faces in stored.values() for f in faces)
    out_rows = {}
    for w in (0.0, 0.1, 0.2, 0.3, 0.5):
        scores, hits = [], []
        for rel, faces in stored.items():
            mixed = [
                type(f)(
                    xyxy=f.xyxy,
                    det_score=f.det_score,
                    scores={p: (1 - w) * s + w * f.det_scores.get(p, 0.0) for p, s in f.scores.items()},
                )
                for f in faces
            ]
            for person, s in assign(mixed).items():
                scores.append(s)
                hits.append(person in truth.get(rel, set()))
        order = np.argsort(-np.array(scores), kind="stable")
        tp = np.cumsum(np.array(hits)[order])
        prec = tp / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(prec >= target)
        out_rows[f"w{w}"] = round(float(tp[ok[-1]]) / max(1, n_truth), 4) if len(ok) else 0.0
    return {"recall_at_target_by_weight": out_rows, "faces_with_yolo_scores": with_yolo, "target": target}


def classify(lib: Path, out: Path, bundle, **kw) -> tuple[float, dict]:
    from sorter.pipeline.classify import classify_library

    t = time.perf_counter()
    report = classify_library(lib / "library", out, bundle, progress=False, log=lambda m: None, **kw)
    return time.perf_counter() - t, {k: round(v, 1) for k, v in report.stage_seconds.items()}


def score(lib: Path, out: Path) -> dict:
    r = subprocess.run(
        [
            sys.executable,
            str(SHARED / "bench" / "eval_sort.py"),
            "--truth",
            str(lib / "truth.csv"),
            "--library",
            str(lib / "library"),
            "--sorted",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    s = json.loads(r.stdout)
    s.pop("per_person", None)
    return s | masked_recall(lib, out)


def refit_recogniser(labelled_dir: Path, run_dir: Path, settings) -> tuple[dict, dict]:
    """Fit a new recogniser into an existing model folder (same labels, same split as its training),
    then measure it on the validation side as train does, choosing whether classify runs the detector.
    Returns the recogniser's CV figures and the validation metrics."""
    from sorter.io.bundle import Bundle, write_json_atomic
    from sorter.io.labels import read_labelled
    from sorter.training.dataset import split
    from sorter.training.measure import measure
    from sorter.training.train import add_recogniser

    labelled = read_labelled(labelled_dir)
    sides = split(labelled, val_fraction=settings.val_fraction, seed=settings.seed)
    train_images = [img for img in labelled.images if sides.get(img.image) != "val"]
    val_images = [img for img in labelled.images if sides.get(img.image) == "val"]
    bundle = Bundle.load(run_dir, verify=False)
    cv = add_recogniser(bundle, labelled, train_images, settings, lambda m: None)
    metrics = measure(bundle, run_dir / "dataset" / "data.yaml", val_images, None, choose=True)
    bundle.save()
    old = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    write_json_atomic(run_dir / "metrics.json", old | metrics | {"recogniser_cv": cv})
    return cv, metrics


MASK_STYLES = ("drawn", "bench2")


def style_tag(style: str) -> str:
    """Prefix of the folder names of one mask style; the drawn style keeps the names it always had."""
    return "" if style == "drawn" else f"{style}-"


def library_dir(style: str, seed: int, args, kind: str | None = None) -> Path:
    return args.work / f"daycare-{style_tag(kind or style)}s{seed}-{args.labelled}-{args.library}"


def build_library(style: str, seed: int, args) -> Path:
    """The library of one seed in one mask style, built unless its truth.csv is there already."""
    lib = library_dir(style, seed, args)
    if (lib / "truth.csv").is_file():
        return lib
    ml_args = [
        "--lfw",
        str(SHARED / "data" / "lfw"),
        "--seed",
        str(seed),
        "--labelled",
        str(args.labelled),
        "--library",
        str(args.library),
        "--people",
        str(args.people),
    ]
    make = [sys.executable, str(SHARED / "bench" / "make_library.py")]
    if style == "drawn":
        subprocess.run(
            [*make, *ml_args, "--out", str(lib), "--jobs", "2"], check=True, stdout=subprocess.DEVNULL
        )
        return lib
    # bench2: every face bare, then this benchmark's own masks on the same share of faces
    bare = library_dir(style, seed, args, kind="bare")
    ml_args += ["--mask-rate", "0"]
    if not (bare / "truth.csv").is_file():
        subprocess.run(
            [*make, *ml_args, "--out", str(bare), "--jobs", "2"], check=True, stdout=subprocess.DEVNULL
        )
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "mask_styles.py"),
            "restyle",
            "--src",
            str(bare),
            "--out",
            str(lib),
            "--seed",
            str(seed),
            "--jobs",
            "2",
            "--force",
            "--make-library-args",
            shlex.join(ml_args),
            "--make-library",
            str(SHARED / "bench" / "make_library.py"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--labelled", type=int, default=300)
    ap.add_argument("--library", type=int, default=1500)
    ap.add_argument("--people", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--embedder", choices=["sface", "dlib"], default="sface")
    ap.add_argument(
        "--reuse-detector",
        action="store_true",
        help="keep the YOLO weights of an earlier run of the same seed; refit only the recogniser",
    )
    ap.add_argument(
        "--redecide",
        action="store_true",
        help="no training or model runs: re-pick the thresholds of the models in --work and re-sort "
        "their earlier outputs from the index",
    )
    ap.add_argument(
        "--mask-style",
        choices=[*MASK_STYLES, "both"],
        default="both",
        help="drawn: make_library.py's masks; bench2: bench/mask_styles.py's; both: each, side by side",
    )
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-recognition")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recognition.json")
    args = ap.parse_args()
    if not (SHARED / "bench" / "make_library.py").is_file():
        raise SystemExit(f"needs ../shared beside the project ({SHARED})")
    os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
    import shutil

    from sorter.io.bundle import Bundle
    from sorter.settings import TrainSettings
    from sorter.training.train import train_model

    styles = MASK_STYLES if args.mask_style == "both" else (args.mask_style,)
    results = []
    for seed, style in ((seed, style) for seed in args.seeds for style in styles):
        tag = style_tag(style)
        lib = library_dir(style, seed, args)
        if args.redecide:
            # Same models, same stored faces: only the thresholds are picked again (from the CV scores in
            # the recogniser) by this version's rule, and every photo re-decided from the index.
            out = args.work / f"sorted-{tag}s{seed}-detector_recogniser"
            secs, stages = classify(
                lib, out, Bundle.load(args.work / "runs" / f"{tag}s{seed}"), precision=0.98
            )
            row = {"seed": seed, "mask_style": style, "redecided": True}
            row["detector_recogniser"] = score(lib, out) | {"classify_seconds": round(secs, 1)}
            results.append(row)
            print(json.dumps(row), flush=True)
            continue
        lib = build_library(style, seed, args)
        t = time.perf_counter()
        run_dir = args.work / "runs" / f"{tag}s{seed}"
        settings = TrainSettings(
            epochs=args.epochs, imgsz=args.imgsz, seed=seed, wandb="off", embedder=args.embedder
        )
        if args.reuse_detector and (run_dir / "bundle.json").is_file():
            cv, val = refit_recogniser(lib / "labelled", run_dir, settings)
            train_s = time.perf_counter() - t
            row_extra = {
                "detector": f"reused from an earlier run in {run_dir}",
                "recogniser_fit_and_measure_seconds": round(train_s, 1),
                "detector_use": val.get("detector_use"),
            }
        else:
            res = train_model(
                lib / "labelled",
                name=f"{tag}s{seed}",
                runs_dir=args.work / "runs",
                settings=settings,
                log=lambda m: None,
            )
            cv = res.metrics.get("recogniser_cv", {})
            train_s = time.perf_counter() - t
            row_extra = {
                "detector": f"trained here, {args.epochs} epochs",
                "detector_use": res.metrics.get("detector_use"),
            }
        full = Bundle.load(run_dir)
        det_only = Bundle.load(run_dir)
        det_only.recogniser, det_only.per_class_threshold, det_only.per_class_low = None, {}, {}
        row = {
            "seed": seed,
            "mask_style": style,
            "embedder": args.embedder,
            "train_seconds": round(train_s, 1),
            "recogniser_cv": {
                k: cv.get(k) for k in ("precision", "recall", "recall_masked", "recall_unmasked")
            },
        } | row_extra
        for name, bundle in (("detector_only", det_only), ("detector_recogniser", full)):
            out = args.work / f"sorted-{tag}s{seed}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            secs, stages = classify(lib, out, bundle)
            row[name] = score(lib, out) | {"classify_seconds": round(secs, 1), "stage_cpu_seconds": stages}
            if name == "detector_recogniser":
                row["fusion"] = fusion(lib, out)
        results.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"settings": vars(args) | {"work": str(args.work), "out": str(args.out)}, "runs": results},
            indent=1,
        )
        + "\n"
    )
    cols = [
        "precision",
        "recall",
        "f1",
        "uncertain",
        "lost",
        "recall_masked",
        "recall_unmasked",
        "classify_seconds",
    ]
    print(
        f"\n{'seed':<5}{'masks':<8}{'approach':<22}" + "".join(f"{c:>16}" for c in cols) + f"{'train s':>10}"
    )
    for r in results:
        for name in ("detector_only", "detector_recogniser"):
            if name not in r:
                continue
            print(
                f"{r['seed']:<5}{r.get('mask_style', 'drawn'):<8}{name:<22}"
                + "".join(f"{r[name][c]:>16}" for c in cols)
                + f"{r.get('train_seconds', '-')!s:>10}"
            )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
