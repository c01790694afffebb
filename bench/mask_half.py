#!/usr/bin/env python3
"""Store the shipped mask head's weights at half precision (half the bytes), and measure what it changes.

    .venv/bin/python bench/mask_half.py --data ../shared/data/face-mask

Loads the shipped head (``sorter/assets/mask_head.pt`` and its JSON), writes it again with
``sorter.training.mask_net.export(half=True)`` (weights rounded to fp16 and stored so; inference stays
fp32), keeps the JSON's description, provenance and figures and records the new files' checksums, then
scores both on the face-mask test side (``N % 8 == 0``, labelled faces, as bench/mask_head.py does) at
the head's own precision: accuracy, the best state of how many faces changed, the largest probability
change. Writes bench/results/mask_half.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mask_head import faces_of, load_set  # noqa: E402
from mask_members import read_rgb  # noqa: E402

from sorter.heads.mask import META_PATH, MODEL_PATH, MaskHead  # noqa: E402
from sorter.training.mask_fit import write_json  # noqa: E402
from sorter.training.mask_head import TORCH_PATH, load_torch, mask_pred  # noqa: E402
from sorter.training.mask_net import export  # noqa: E402


def test_probs(onnx_path: Path, test: list[dict], images: list) -> np.ndarray:
    head = MaskHead(onnx_path, threads=1).load()
    faces = faces_of(test)
    probs = np.zeros((len(faces), len(head.classes)), np.float32)
    for i in range(len(test)):  # all faces of a photo in one call, as the pipeline does
        ks = [k for k, f in enumerate(faces) if f[0] == i]
        if ks:
            probs[ks] = head.predict(images[i], [faces[k][1] for k in ks])[1]
    return probs


def describe_like(meta: dict, files: dict) -> dict:
    """``meta`` with ``files``' entries in the order ``sorter.training.mask_net.describe`` writes them."""
    out: dict = {}
    for key, value in meta.items():
        if key not in files:
            out[key] = value
        if key == "normalisation":
            out.update(files)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "face-mask")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mask_half.json")
    args = ap.parse_args()
    meta = json.loads(META_PATH.read_text(encoding="utf-8"))
    test = [p for p in load_set(args.data) if p["n"] % 8 == 0]
    images = [read_rgb(p["path"]) for p in test]
    y = np.array([f[2] for f in faces_of(test)])
    before = test_probs(MODEL_PATH, test, images)
    bytes_before = {"onnx": MODEL_PATH.stat().st_size, "pt": TORCH_PATH.stat().st_size}
    with tempfile.TemporaryDirectory() as tmp:
        files = export(load_torch(), Path(tmp), int(meta["input"]["size"]), half=True)
        for name in ("mask_head.onnx", "mask_head.pt"):
            shutil.copyfile(Path(tmp) / name, MODEL_PATH.parent / name)
    # the new files' entries where describe() puts them, as a fine-tuned head has them
    meta = describe_like(meta, files)
    write_json(META_PATH, meta)
    after = test_probs(MODEL_PATH, test, images)
    out = {
        "benchmark": "the shipped mask head's weights stored at fp16 (bench/mask_half.py)",
        "bytes_before": bytes_before,
        "bytes_after": {"onnx": MODEL_PATH.stat().st_size, "pt": TORCH_PATH.stat().st_size},
        "precision": meta.get("inference_precision", "f32"),
        "test_faces": len(y),
        "accuracy_before": round(float((mask_pred(before) == y).mean()), 4),
        "accuracy_after": round(float((mask_pred(after) == y).mean()), 4),
        "best_state_changed": int((mask_pred(before) != mask_pred(after)).sum()),
        "max_abs_prob_diff": round(float(np.abs(before - after).max()), 5),
    }
    write_json(args.out, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
