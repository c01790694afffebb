#!/usr/bin/env python3
"""The age gate measured: recognition on a library whose strangers include people of another age.

    .venv/bin/python bench/age_gate.py [--seed 1 --labelled 300 --library 800 --utk 1200]

No identity-labelled set of children is here (UTKFace has no identities), so the known people are
make_library.py's LFW people (adults) and the strangers are LFW's other people (adults) plus UTKFace
faces (children and adults), each remapped into LFW's face geometry so make_library pastes them like
any stranger. The gate's rule is symmetric (faces far outside the labelled people's ages are not
compared with them), so children among the strangers of a model of adults exercise it exactly as
adults among the strangers of a model of children would.

The UTKFace faces used as strangers are kept out of the attribute head used here: the bench trains
its own head (bench/attributes.py's recipe) on the other UTKFace faces and puts it into the model
folder (``bundle.attribute_head``), so no stranger's age comes from a head that saw it.

Steps: build the library; train (defaults, 1 YOLO epoch: the recogniser sorts); classify with the
gate and, from a copy of the model with the people's ages removed, without; score both with
../shared/bench/eval_sort.py and count the UTKFace strangers put into a person's folder.
Writes bench/results/age_gate.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from daycare import make_library  # noqa: E402

LFW_FACE_BOX = (80, 68, 170, 196)  # make_library.py's labeller box in a 250-px LFW image (bench only)


def remap(chip: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    """A UTKFace chip warped so its labeller-style face ``box`` lands on LFW's face box (250 px)."""
    import cv2

    x0, y0, x1, y1 = box
    X0, Y0, X1, Y1 = LFW_FACE_BOX
    s = (Y1 - Y0) / max(1.0, y1 - y0)
    m = np.array([[s, 0, (X0 + X1) / 2 - s * (x0 + x1) / 2], [0, s, (Y0 + Y1) / 2 - s * (y0 + y1) / 2]])
    return cv2.warpAffine(chip, m, (250, 250), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def mixed_lfw(work: Path, feats: dict, use: np.ndarray, log=print) -> Path:
    """LFW's people (linked) plus each UTKFace face in ``use`` as a one-photo person."""
    from PIL import Image

    from sorter.boxes import from_detector_box
    from sorter.models.registry import face_detector

    root = work / "lfw" / "images_deepfunneled"
    if (work / "lfw" / ".done").is_file():
        return root.parent
    shutil.rmtree(root.parent, ignore_errors=True)
    root.mkdir(parents=True)
    for d in sorted((SHARED / "data" / "lfw" / "images_deepfunneled").iterdir()):
        if d.is_dir():
            (root / d.name).symlink_to(d.resolve())
    det = face_detector()
    for i in use:
        name = str(feats["name"][i])
        rgb = np.asarray(Image.open(SHARED / "data" / "utkface" / "images" / name).convert("RGB"))
        boxes, _, _ = det.detect_landmarks(rgb)
        if not len(boxes):
            continue
        person = f"UTK_{i:05d}"
        (root / person).mkdir()
        img = remap(rgb, from_detector_box(tuple(float(v) for v in boxes[0])))
        Image.fromarray(img).save(root / person / f"{person}_0001.jpg", quality=95)
    (work / "lfw" / ".done").write_text("")
    log(f"mixed LFW: {len(use)} UTKFace strangers added")
    return root.parent


def utk_in_folders(lib: Path, out: Path) -> dict:
    """UTKFace strangers' appearances and how many of their photos went to a person's folder."""
    from sorter.io.decode import sha256_file

    placed: dict[str, set[str]] = {}
    for f in out.rglob("*"):
        rel = f.relative_to(out)
        if f.is_file() and len(rel.parts) >= 2 and rel.parts[0] != "uncertain":
            placed.setdefault(sha256_file(f), set()).add(rel.parts[0])
    photos = wrong = 0
    with open(lib / "truth.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            faces = json.loads(row["faces"])
            if any("UTK_" in str(f.get("source", "")) for f in faces):
                photos += 1
                people = {f["label"] for f in faces if f["label"]}
                wrong += bool(placed.get(row["sha256"], set()) - people)
    return {"photos_with_utk_strangers": photos, "of_them_in_a_wrong_person_folder": wrong}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--labelled", type=int, default=300)
    ap.add_argument("--library", type=int, default=800)
    ap.add_argument("--utk", type=int, default=1200, help="UTKFace faces added as strangers")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-age-gate")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "age_gate.json")
    args = ap.parse_args()

    import attributes as attr_bench
    from recognition import classify, score

    import sorter
    from sorter.heads.identity import load_model, read_model, write_model
    from sorter.io.bundle import Bundle

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    feats = attr_bench.extract(SHARED / "data" / "utkface", ROOT / "runs" / "attributes" / "features.npz")
    found = np.flatnonzero(feats["found"].astype(bool))
    rng = np.random.default_rng(args.seed)
    use = np.sort(rng.choice(found, size=min(args.utk, len(found)), replace=False))
    rest = np.setdiff1d(found, use)
    result: dict = {"settings": {k: str(v) for k, v in vars(args).items()}}
    result["utk_strangers_by_age"] = {
        "0-12": int((feats["age"][use] < 13).sum()),
        "13-17": int(((feats["age"][use] >= 13) & (feats["age"][use] < 18)).sum()),
        "18+": int((feats["age"][use] >= 18).sum()),
    }
    # the attribute head of this bench: the shipped recipe on the UTKFace faces not used as strangers
    head_dir = work / "head"
    head_dir.mkdir(exist_ok=True)
    cv = json.loads((ROOT / "bench" / "results" / "attributes.json").read_text())
    sub = {k: v for k, v in feats.items()}
    sub["found"] = np.isin(np.arange(len(feats["found"])), rest)
    attr_bench.ship(sub, cv["chosen"], cv, args.seed, head_dir)

    lfw = mixed_lfw(work, feats, use)
    lib = work / f"daycare-s{args.seed}"
    make_library(lib, args.seed, args.labelled, args.library, lfw=lfw, quiet=True)
    run = work / "runs" / "gate"
    if not (run / "bundle.json").is_file():
        t = time.perf_counter()
        sorter.train(lib / "labelled", name="gate", runs_dir=work / "runs", epochs=1, imgsz=320, wandb="off")
        result["train_seconds"] = round(time.perf_counter() - t, 1)
    bundle = Bundle.load(run, verify=False)
    for f in ("attributes.npz", "attributes.json"):
        shutil.copy(head_dir / f, run / f)
    bundle.attribute_head = "attributes.npz"
    bundle.save()
    meta, _ = read_model(run / bundle.recogniser)
    result["people_ages"] = meta.get("ages")
    # the same model without the people's ages: no gate
    nogate = work / "runs" / "nogate"
    shutil.rmtree(nogate, ignore_errors=True)
    shutil.copytree(run, nogate)
    model, meta2 = load_model(nogate / bundle.recogniser)
    _, arrays = read_model(nogate / bundle.recogniser)
    meta2.pop("ages", None)
    arrays = {k: v for k, v in arrays.items() if k not in ("coef", "intercept", "prototypes")}
    write_model(nogate / bundle.recogniser, model, meta2, **arrays)
    b2 = Bundle.load(nogate, verify=False)
    b2.save()
    for name, b in (("without_gate", b2), ("with_gate", Bundle.load(run))):
        out = work / f"sorted-{name}"
        shutil.rmtree(out, ignore_errors=True)
        secs, _ = classify(lib, out, b)
        result[name] = score(lib, out) | utk_in_folders(lib, out) | {"classify_seconds": round(secs, 1)}
        print(name, json.dumps(result[name]), flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
