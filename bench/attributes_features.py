"""Per-face features of the shared UTKFace chips for bench/attributes.py, cached in one .npz.

For every chip: the default face detector's face (the one nearest the chip's centre), then for three
versions of the chip -- as it is, with a training mask (sorter.training.augment.draw_synthetic_mask,
the renderer photosort trains with) and with a benchmark-only mask (bench/mask_styles.py, never used
for training) -- the SFace vector classify computes and the dlib-models age/gender networks' outputs
(sorter.models.agegender). Masks are worn below the nose on a quarter of the masked copies. The box
and landmarks found on the unmasked chip are kept for its masked copies (the chip is the same face).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = ("plain", "train_mask", "bench_mask")


def chip_face(det, rgb: np.ndarray) -> tuple[tuple[float, ...], np.ndarray | None, float]:
    """The detector's face nearest the chip's centre: (box, landmarks, score); not found: the chip's
    own framing (UTKFace chips are aligned faces) with no landmarks, for the record only."""
    boxes, scores, marks = det.detect_landmarks(rgb)
    h, w = rgb.shape[:2]
    if not len(boxes):
        return (0.15 * w, 0.2 * h, 0.85 * w, 0.95 * h), None, 0.0
    centre = np.array([w / 2, h / 2])
    k = int(np.argmin(np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)))
    return tuple(float(x) for x in boxes[k]), marks[k], float(scores[k])


def extract(data: Path, cache: Path, limit: int | None = None, log=print) -> dict[str, np.ndarray]:
    """Features of every labelled chip under ``data`` (UTKFace: images/ and labels.csv), cached."""
    if cache.is_file():
        got = dict(np.load(cache, allow_pickle=False))
        if limit is None or len(got["name"]) >= limit:
            return got
    import mask_styles
    from PIL import Image

    from sorter.boxes import from_detector_box
    from sorter.models.agegender import CydralAgeGender
    from sorter.models.registry import face_detector
    from sorter.models.sface import SFaceEmbedder
    from sorter.training.augment import draw_synthetic_mask

    rows = list(csv.DictReader((data / "labels.csv").open()))[:limit]
    det, sface, ag = face_detector(), SFaceEmbedder(backend="openvino"), CydralAgeGender()
    out: dict[str, list] = {k: [] for k in ("name", "age", "gender", "race", "found", "det_score", "side")}
    for v in VARIANTS:
        out[f"sface_{v}"], out[f"cyd_age_{v}"], out[f"cyd_female_{v}"] = [], [], []
    t0 = time.perf_counter()
    for i, r in enumerate(rows):
        rgb = np.asarray(Image.open(data / "images" / r["file"]).convert("RGB"))
        box, lm, score = chip_face(det, rgb)
        lb = from_detector_box(box)
        rng = np.random.default_rng((7, i))
        below = bool(rng.random() < 0.25)
        images = {
            "plain": rgb,
            "train_mask": draw_synthetic_mask(rgb, lb, rng, landmarks=lm),
            "bench_mask": mask_styles.apply_style(rgb, [lb], [True], rng, below_nose=[below]),
        }
        for v, img in images.items():
            if lm is not None:
                out[f"sface_{v}"].append(sface.embed(img, [box], [lm])[0])
            else:
                out[f"sface_{v}"].append(np.zeros(128, np.float32))
            a, f = ag.predict(img, [box])
            out[f"cyd_age_{v}"].append(a[0])
            out[f"cyd_female_{v}"].append(f[0])
        out["name"].append(r["file"])
        out["age"].append(int(r["age"]))
        out["gender"].append(int(r["gender"]))  # UTKFace: 0 male, 1 female
        out["race"].append(int(r["race"]))
        out["found"].append(lm is not None)
        out["det_score"].append(score)
        out["side"].append(max(box[2] - box[0], box[3] - box[1]))
        if (i + 1) % 250 == 0:
            log(f"  {i + 1}/{len(rows)} chips, {(time.perf_counter() - t0) / (i + 1) * 1000:.0f} ms each")
    got = {k: np.asarray(v) for k, v in out.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **got)
    return got


if __name__ == "__main__":
    d = extract(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
    print({k: v.shape for k, v in d.items()})


def extract_masks(data: Path, cache: Path, feats: dict, log=print) -> dict[str, np.ndarray]:
    """The mask head's state for each chip as it is and with the benchmark's mask (the same masks as
    :func:`extract`: the same generator replayed), and whether that mask is worn below the nose:
    the mask part of the seeds' 18 classes."""
    if cache.is_file():
        return dict(np.load(cache, allow_pickle=False))
    import mask_styles
    from PIL import Image

    from sorter.boxes import from_detector_box
    from sorter.heads.mask import MASK_CLASSES, MaskHead
    from sorter.models.registry import face_detector
    from sorter.training.augment import draw_synthetic_mask

    det, head = face_detector(), MaskHead()
    out: dict[str, list] = {"below": [], "mask_plain": [], "mask_bench_mask": []}
    for i, name in enumerate(feats["name"]):
        rgb = np.asarray(Image.open(data / "images" / str(name)).convert("RGB"))
        box, lm, _ = chip_face(det, rgb)
        lb = from_detector_box(box)
        rng = np.random.default_rng((7, i))  # replayed exactly as extract() drew them
        below = bool(rng.random() < 0.25)
        draw_synthetic_mask(rgb, lb, rng, landmarks=lm)
        masked = mask_styles.apply_style(rgb, [lb], [True], rng, below_nose=[below])
        for part, img in (("plain", rgb), ("bench_mask", masked)):
            _, probs = head.predict(img, [lb])
            p = head.mask_probabilities(probs)[0]
            out[f"mask_{part}"].append(int(np.argmax(p)))
        out["below"].append(below)
        if (i + 1) % 500 == 0:
            log(f"  masks: {i + 1}/{len(feats['name'])}")
    got = {k: np.asarray(v) for k, v in out.items()} | {"classes": np.array(MASK_CLASSES)}
    np.savez_compressed(cache, **got)
    return got
