"""Fine-tuning the mask head on a user's mask-state labels (``photosort train``).

The head's files are written by ``sorter.training.mask_net.export`` and ``describe``, the format
``sorter.heads.mask.MaskHead`` loads (the shipped head, ``bench/mask_head.py``, and a fine-tuned one
alike). :func:`fit_mask_head` starts from the shipped weights (``mask_head.pt``) and fine-tunes on the
labelled faces, choosing the epoch on photos held out by sha256 group.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sorter.heads.mask import MASK_CLASSES, META_PATH, NO_FACE, MaskHead, box_outputs, crop
from sorter.io.decode import decode_work, read_photo
from sorter.records import LabelledImage, Photo
from sorter.training.mask_head import (
    NO_FACE_LABEL,
    count,
    grouped_split,
    load_torch,
    loss_fn,
    mask_pred,
    metrics,
    no_face_boxes,
    predict_torch,
    run_epoch,
)
from sorter.training.mask_net import BOX_WEIGHT, describe, export

# Fine-tuning. Not tuned on a benchmark: a tenth of the from-scratch peak rate (3e-3) decayed by a
# cosine, early stop after FT_PATIENCE epochs without a better validation score.
FT_LR, FT_BATCH, FT_MAX_EPOCHS, FT_PATIENCE, FT_VAL_FRAC = 3e-4, 64, 60, 8, 0.2
PATCH_CONTEXT, PATCH_MAX = 2.0, 256  # per-face patch kept in memory: 2 x box side, at most 256 px
RULE = "highest validation macro-F1, then accuracy"


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ fine-tuning
def _patches(
    images: list[LabelledImage], no_face: bool = False
) -> tuple[list[np.ndarray], list[tuple], list[int]]:
    """Each labelled face as a patch around it (decoded as classify decodes), its face, its photo.

    ``no_face``: also the face detector's candidates on those photos that are not a labelled face
    (:func:`sorter.training.mask_head.no_face_boxes`, the rule the shipped head was trained with), as
    faces of class no_face (:data:`NO_FACE_LABEL`)."""
    import cv2

    from sorter.boxes import from_detector_box

    detector = None
    if no_face:
        from sorter.models.registry import face_detector

        detector = face_detector()
    patches, faces, photo_of = [], [], []
    for n, im in enumerate(images):
        boxes = [b for b in im.boxes if b.xyxy[2] > b.xyxy[0] and b.xyxy[3] > b.xyxy[1]]
        if not boxes:
            continue
        st = im.image.stat()
        photo = Photo(path=im.image, rel=Path(im.image.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
        d = decode_work(photo, read_photo(photo)[1])
        rgb, k = np.asarray(d.rgb), float(d.scale)  # displayed px per decoded px
        todo = [(tuple(v / k for v in b.xyxy), MASK_CLASSES.index(b.name)) for b in boxes]
        if detector is not None:
            det_boxes, det_scores, _ = detector.detect_landmarks(rgb)
            cands = [
                (from_detector_box(tuple(b)), float(s))
                for b, s in zip(det_boxes.tolist(), det_scores, strict=True)
            ]
            todo += [(b, NO_FACE_LABEL) for b in no_face_boxes(cands, [t for t, _ in todo])[0]]
        for (x0, y0, x1, y1), lab in todo:
            half = PATCH_CONTEXT * max(x1 - x0, y1 - y0) / 2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            left, top = math.floor(cx - half), math.floor(cy - half)
            patch = _cut(rgb, left, top, math.ceil(cx + half), math.ceil(cy + half))
            f = min(1.0, PATCH_MAX / max(patch.shape[:2]))  # integer offset: crop() sees the same pixels
            if f < 1.0:
                patch = cv2.resize(patch, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            patches.append(patch)
            box = ((x0 - left) * f, (y0 - top) * f, (x1 - left) * f, (y1 - top) * f)
            faces.append((len(patches) - 1, box, lab))
            photo_of.append(n)
    return patches, faces, photo_of


def _cut(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``rgb[y0:y1, x0:x1]``, black where that runs off the image."""
    out = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, rgb.shape[1]), min(y1, rgb.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out


def _summary(m: dict) -> dict:
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "recall": {c: v["recall"] for c, v in m["per_class"].items() if v["support"]},
        "faces": m["faces"],
    }


def fit_mask_head(
    images: list[LabelledImage],
    out_dir: Path,
    seed: int = 0,
    epochs: int | None = None,
    minutes: float = 3.0,
    log: Callable[[str], Any] = print,
) -> dict:
    """Fine-tune the shipped mask head on the labelled faces of ``images`` (classes: MASK_CLASSES).

    Validation: a fifth of the photos, grouped by sha256; the epoch kept is the best on it (:data:`RULE`).
    ``epochs`` None: train until ``minutes`` (from the call, decoding included) or early stop. Writes
    ``out_dir/mask_head.{onnx,json,pt}`` (the shipped format) and returns the figures, with ``improved``
    False when no epoch beats the shipped head on the validation photos (keep the shipped head then).
    """
    import torch

    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    t0 = time.time()
    deadline = None if epochs is not None else t0 + 60.0 * minutes
    unknown = sorted({b.name for im in images for b in im.boxes} - set(MASK_CLASSES))
    if unknown:
        raise ValueError(f"not mask states: {unknown} (the classes must be among {list(MASK_CLASSES)})")
    base = json.loads(META_PATH.read_text(encoding="utf-8"))
    size, margin = int(base["input"]["size"]), float(base["crop"]["margin"])
    classes = tuple(base["classes"])  # a 4-class head keeps no_face: examples from these photos
    with_no_face = NO_FACE in classes
    patches, faces, photo_of = _patches(images, no_face=with_no_face)
    used = sorted(set(photo_of))
    if len({images[n].sha256 for n in used}) < 2:
        raise ValueError("fine-tuning the mask head needs labelled faces on at least 2 different photos")
    labs = [set() for _ in images]
    for (_, _, lab), n in zip(faces, photo_of, strict=True):
        if lab != NO_FACE_LABEL:
            labs[n].add(lab)
    n_per = np.bincount([f[2] for f in faces if f[2] != NO_FACE_LABEL], minlength=len(MASK_CLASSES))
    priority = [int(c) for c in np.argsort(n_per, kind="stable") if n_per[c]]  # rarest class first
    val = {
        used[i]
        for i in grouped_split(
            [images[n].sha256 for n in used], [labs[n] for n in used], FT_VAL_FRAC, seed, priority
        )
    }
    if not val or len(val) == len(used):  # a tiny set: the first photo's group changes side
        first = {n for n in used if images[n].sha256 == images[used[0]].sha256}
        val = first if not val else val - first
    f_tr = [f for f, n in zip(faces, photo_of, strict=True) if n not in val]
    # validation: the labelled faces of the held-out photos (their no_face examples are not used)
    f_va = [f for f, n in zip(faces, photo_of, strict=True) if n in val and f[2] != NO_FACE_LABEL]
    y_va = np.array([f[2] for f in f_va])
    n_nf = sum(f[2] == NO_FACE_LABEL for f in f_tr)
    log(
        f"mask head: {len(used) - len(val)} photos ({len(f_tr) - n_nf} faces, {n_nf} no_face) to "
        "fine-tune on, "
        f"{len(val)} ({len(f_va)} faces) to validate"
    )

    torch.manual_seed(seed)
    model = load_torch()
    # a head that draws the face's box goes on learning it from these labels (the labeller's own style)
    n_box = box_outputs(base)
    before = metrics(y_va, mask_pred(predict_torch(model, patches, f_va, size, margin, n_box=n_box)))
    model = model.to(memory_format=torch.channels_last)

    def score(m: dict) -> tuple:
        return (m["macro_f1"] or 0.0, m["accuracy"] or 0.0)

    crit = loss_fn("focal", n_per.astype(np.float64))
    # one network read with its mirror too: fine-tune the network on single crops (each is mirrored at
    # random anyway), as it was trained, in half the time of both views
    members = getattr(model, "members", None)
    trainee = members[0] if members is not None and len(members) == 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=FT_LR, weight_decay=5e-4)
    planned, curve, best = epochs or FT_MAX_EPOCHS, [], None
    t_train = time.time()
    for ep in range(planned):
        for g in opt.param_groups:
            g["lr"] = FT_LR * 0.5 * (1 + math.cos(math.pi * ep / planned))
        rng = np.random.default_rng([seed, ep, 1])
        loss = run_epoch(
            trainee,
            opt,
            None,
            crit,
            patches,
            f_tr,
            rng.permutation(len(f_tr)),
            size,
            margin,
            rng,
            FT_BATCH,
            deadline,
            # the synthetic masks the shipped head was trained with, if any: the same mix of examples
            synthetic=float(base.get("synthetic_masks") or 0.0),
            box_weight=BOX_WEIGHT if n_box else 0.0,
        )
        m = metrics(y_va, mask_pred(predict_torch(model, patches, f_va, size, margin, n_box=n_box)))
        curve.append(
            {
                "epoch": ep + 1,
                "loss": loss,
                "val_macro_f1": m["macro_f1"],
                "val_accuracy": m["accuracy"],
                "seconds": round(time.time() - t0, 1),
            }
        )
        log(f"  mask head epoch {ep + 1}: loss {loss} val macro-F1 {m['macro_f1']} accuracy {m['accuracy']}")
        if best is None or score(m) > score(best[1]):
            best = (ep + 1, m, copy.deepcopy(model.state_dict()))
        if deadline is None:
            continue
        per_epoch = (time.time() - t_train) / (ep + 1)
        if ep == 0:
            planned = int(min(FT_MAX_EPOCHS, max(1, (deadline - t_train) // max(per_epoch, 1e-3))))
        if time.time() + per_epoch > deadline or ep + 1 - best[0] >= FT_PATIENCE or ep + 1 >= planned:
            break
    assert best is not None
    model.load_state_dict(best[2])
    model = model.to(memory_format=torch.contiguous_format).eval()
    improved = score(best[1]) > score(before)
    files = export(model, Path(out_dir), size)
    n_photos = len(used) - len(val)
    provenance = {
        "data": f"{n_photos} labelled photos given to photosort train",
        "training_photos": n_photos,
        "training_faces": count((f[2] for f in f_tr), classes),
        "no_face": (
            f"{n_nf} face detector candidates of the training photos that are no labelled face "
            "(sorter.training.mask_head.no_face_boxes)"
            if with_no_face
            else None
        ),
        "weights": f"fine-tuned from the shipped head (sorter/assets/mask_head.pt, its ONNX sha256 "
        f"{base['sha256']}) on {n_photos} photos",
        "base_provenance": base.get("provenance"),
        "loss": "focal",
        "seed": seed,
        "epochs": best[0],
        "torch": torch.__version__,
    }
    meta = describe(
        size,
        margin,
        files,
        provenance,
        "sorter.training.mask_fit.fit_mask_head",
        classes,
        arch=str(base.get("arch", "small")),  # describe writes it: load_torch builds that network
    )
    # as load_torch builds it, and the training mix it was fine-tuned with
    meta.update(
        members=int(base.get("members", 1)),
        flip=bool(base.get("flip")),
        synthetic_masks=float(base.get("synthetic_masks") or 0.0),
        inference_precision=str(base.get("inference_precision", "f32")),
    )
    if n_box:
        meta["box"] = base["box"]
    val_fig = {
        "split": f"{len(val)} photos, {len(f_va)} faces",
        "macro_f1": best[1]["macro_f1"],
        "accuracy": best[1]["accuracy"],
        "per_class": best[1]["per_class"],
        "trained_on": "the other photos",
        "chose_the_epoch": True,
    }
    meta["figures"] = {
        "validation": val_fig,
        "shipped_head_on_validation": _summary(before),
        "test": None,
        "ms_per_face_openvino_1_thread": None,
        "results": None,
    }
    onnx_path = Path(out_dir) / "mask_head.onnx"
    write_json(onnx_path.with_suffix(".json"), meta)
    # the written file, checksum verified, as classify loads it; at f32, to compare with torch's f32
    head = MaskHead(onnx_path, threads=1, precision="f32").load()
    x = [crop(patches[i], b, size, margin) for i, b, _ in f_va[:64]]
    torch_probs = predict_torch(model, patches, f_va[:64], size, margin, n_box=n_box)
    diff = float(np.abs(head.predict_crops(np.stack(x)) - torch_probs).max())
    seconds = round(time.time() - t0, 1)
    log(
        f"mask head: validation macro-F1 {before['macro_f1']} -> {best[1]['macro_f1']}, accuracy "
        f"{before['accuracy']} -> {best[1]['accuracy']} (epoch {best[0]} of {len(curve)}, {seconds} s)"
        + ("" if improved else "; not better than the shipped head")
    )
    return {
        "improved": improved,
        "before": _summary(before),
        "after": _summary(best[1]),
        "epochs": best[0],
        "epochs_run": len(curve),
        "seconds": seconds,
        "photos": {"train": n_photos, "val": len(val)},
        "faces": {"train": count((f[2] for f in f_tr), classes), "val": count(y_va)},
        "rule": RULE + " (the same validation photos chose the epoch: 'after' is optimistic)",
        "onnx_vs_torch_max_abs_prob_diff": diff,
        "model": str(onnx_path),
        "curve": curve,
    }
