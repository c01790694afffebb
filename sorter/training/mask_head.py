"""The mask-state head's augmentation, loss, batching and training loop: one definition (its network
and the JSON describing it: :mod:`sorter.training.mask_net`).

``bench/mask_head.py`` trains the shipped head (``sorter/assets/mask_head.onnx``, its torch weights
``mask_head.pt`` beside it) from scratch with :func:`train`; :func:`sorter.training.mask_fit.fit_mask_head`
(``photosort train`` on a folder whose classes are mask states) fine-tunes those shipped weights
(:func:`load_torch`). Inference (``sorter.heads.mask``) never imports this; torch loads inside functions.

A face is ``(image index, xyxy box, class index)``; an image is an RGB uint8 array. Training crops are
cut by ``sorter.heads.mask.crop`` from a jittered box (:func:`jitter_box`) and augmented
(:func:`augment`); validation crops from the labelled box, as inference does.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sorter.boxes import iou
from sorter.heads.mask import (
    ASSETS,
    DEFAULT_MEAN,
    DEFAULT_STD,
    HEAD_CLASSES,
    MASK_CLASSES,
    META_PATH,
    NO_FACE,
    box_in_crop,
    box_outputs,
    crop,
    to_input,
)
from sorter.training.mask_augment import augment, jitter_box, move_box
from sorter.training.mask_net import BOX_OUTPUTS, make_model

TORCH_PATH = ASSETS / "mask_head.pt"  # the shipped head's torch state_dict (its sha256 in the JSON)
NO_FACE_LABEL = HEAD_CLASSES.index(NO_FACE)  # 3: the class index of a no_face example
# The no_face rule (one definition for bench/mask_head.py and fit_mask_head): a face detector candidate
# whose labeller-style box has IoU < NO_FACE_MAX_IOU with every labelled face is "not a face", except
# one that looks like an unlabelled real face (the face-mask set leaves some faces unlabelled): ONet
# score >= NO_FACE_SURE and a side within NO_FACE_SIZE of the photo's median labelled face side.
NO_FACE_MAX_IOU = 0.2
NO_FACE_SURE = 0.99
NO_FACE_SIZE = (0.5, 2.0)


def no_face_boxes(candidates: Sequence[tuple[tuple, float]], labelled: Sequence[tuple]) -> tuple[list, int]:
    """The no_face boxes among ``candidates`` ((labeller-style box, ONet score) each) of one photo with
    ``labelled`` faces (xyxy); and how many were dropped as probable unlabelled faces."""
    sides = [max(b[2] - b[0], b[3] - b[1]) for b in labelled if b[2] > b[0] and b[3] > b[1]]
    med = float(np.median(sides)) if sides else None
    out, dropped = [], 0
    for box, score in candidates:
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        if max((iou(box, t) for t in labelled), default=0.0) >= NO_FACE_MAX_IOU:
            continue
        side = max(box[2] - box[0], box[3] - box[1])
        if score >= NO_FACE_SURE and (med is None or NO_FACE_SIZE[0] * med <= side <= NO_FACE_SIZE[1] * med):
            dropped += 1
            continue
        out.append(tuple(box))
    return out, dropped


def background_boxes(shape: tuple, labelled: Sequence[tuple], n: int, rng: np.random.Generator) -> list:
    """Up to ``n`` random square boxes of ``shape`` (H, W, ...) overlapping no labelled face (IoU < 0.05),
    sides drawn like the photo's labelled faces (0.5-2x their median; 5-20% of the short side if none)."""
    H, W = shape[:2]
    sides = [max(b[2] - b[0], b[3] - b[1]) for b in labelled if b[2] > b[0] and b[3] > b[1]]
    med = float(np.median(sides)) if sides else 0.1 * min(H, W)
    out = []
    for _ in range(20 * n):
        if len(out) >= n:
            break
        s = float(np.clip(med * math.exp(rng.uniform(math.log(0.5), math.log(2.0))), 8, 0.9 * min(H, W)))
        x0, y0 = rng.uniform(0, W - s), rng.uniform(0, H - s)
        box = (x0, y0, x0 + s, y0 + s)
        if all(iou(box, t) < 0.05 for t in labelled):
            out.append(box)
    return out


# ------------------------------------------------------------------------------------------- model
def loss_fn(kind: str, counts: np.ndarray):
    """weighted_ce (inverse class frequency), focal (gamma 2) or sampler (plain CE, balanced batches)."""
    import torch
    import torch.nn.functional as F

    if kind == "weighted_ce":
        w = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
        return lambda logits, y: F.cross_entropy(logits, y, weight=w)
    if kind == "focal":

        def focal(logits, y, gamma=2.0):
            logp = F.log_softmax(logits, 1).gather(1, y[:, None])[:, 0]
            return (-((1 - logp.exp()) ** gamma) * logp).mean()

        return focal
    if kind == "sampler":
        return lambda logits, y: F.cross_entropy(logits, y)
    raise ValueError(kind)


def make_batch(
    images, faces, idx, size, margin, rng, train: bool, synthetic: float = 0.0, targets: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Model input and labels of ``faces[idx]``; ``train``: jittered boxes and augmented crops.

    ``synthetic``: the chance that a bare face (without_mask) is given a mask drawn by photosort's own
    renderer (:func:`sorter.training.augment.draw_synthetic_mask`, placed by where a labelled box has
    its landmarks), labelled with_mask when worn over the nose and mask_weared_incorrect when below it:
    more examples of the rare class than the few labelled ones, in masks of every family and colour.

    ``targets``: a list that gets each face's labelled box in units of its (jittered, flipped, turned)
    crop appended (``sorter.heads.mask.box_in_crop``; None for a no_face example), the box target."""
    crops, ys = [], []
    worn = ("without_mask", "with_mask", "mask_weared_incorrect")
    bare, over, below = (MASK_CLASSES.index(c) for c in worn)
    for k in idx:
        i, box, lab = faces[k]
        img = images[i]
        if train and synthetic and lab == bare and rng.random() < synthetic:
            from sorter.training.augment import draw_synthetic_mask

            img, kind = draw_synthetic_mask(img, box, rng, return_kind=True)
            lab = below if kind.worn == "below_nose" else over
        cut = jitter_box(box, rng) if train else box
        geometry: list = []
        c = augment(crop(img, cut, size, margin), rng, geometry) if train else crop(img, cut, size, margin)
        if targets is not None:
            t = box_in_crop(cut, box, margin)
            targets.append(None if lab == NO_FACE_LABEL else move_box(t, *geometry[0]) if geometry else t)
        crops.append(c)
        ys.append(lab)
    return to_input(np.stack(crops), DEFAULT_MEAN, DEFAULT_STD), np.array(ys, np.int64)


def predict_torch(model, images, faces, size, margin, batch=256, n_box: int = 0, boxes: list | None = None):
    """Class probabilities [n, classes] of ``faces`` (labelled boxes, no augmentation); with ``n_box``, the
    network's box outputs (crop units) are appended to ``boxes``, one row a face."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(faces), batch):
            x, _ = make_batch(images, faces, range(s, min(s + batch, len(faces))), size, margin, None, False)
            o = model(torch.from_numpy(x))
            if n_box:
                if boxes is not None:
                    boxes.extend(o[:, -n_box:].numpy())
                o = o[:, :-n_box]
            out.append(torch.softmax(o, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(HEAD_CLASSES)), np.float32)


def mask_pred(probs: np.ndarray) -> np.ndarray:
    """The best mask state (index into MASK_CLASSES) of each row, no_face ignored (as ``mask_state``)."""
    return np.asarray(probs)[:, : len(MASK_CLASSES)].argmax(1)


def run_epoch(
    model,
    opt,
    sched,
    crit,
    images,
    faces,
    order,
    size,
    margin,
    rng,
    batch,
    deadline=None,
    synthetic=0.0,
    box_weight: float = 0.0,
):
    """One pass over ``faces[order]``; mean loss. Stops between batches once ``deadline`` (time.time()).

    ``box_weight`` > 0: the model's last :data:`BOX_OUTPUTS` outputs are the labelled box in crop units,
    learnt with an L1 loss of that weight beside the class loss (faces only, not no_face examples)."""
    import torch
    import torch.nn.functional as F

    model.train()
    tot, nb = 0.0, 0
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        if len(idx) < 2:
            continue
        if deadline is not None and nb and time.time() > deadline:
            break
        targets: list | None = [] if box_weight else None
        x, y = make_batch(images, faces, idx, size, margin, rng, True, synthetic, targets)
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        out = model(xt)
        if targets is None:
            loss = crit(out, torch.from_numpy(y))
        else:
            loss = crit(out[:, :-BOX_OUTPUTS], torch.from_numpy(y))
            has = [k for k, t in enumerate(targets) if t is not None]
            if has:
                t = torch.tensor([targets[k] for k in has], dtype=out.dtype)
                loss = loss + box_weight * F.l1_loss(out[has, -BOX_OUTPUTS:], t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        tot += loss.item()
        nb += 1
    return round(tot / max(nb, 1), 4)


def train(
    images,
    faces,
    kind: str,
    epochs: int,
    size: int,
    margin: float,
    seed: int,
    batch: int,
    lr: float,
    val=None,
    log=print,
    no_face_per_epoch: int | None = None,
    synthetic: float = 0.0,
    arch: str = "small",
    pretrained: Path | None = None,
    box_weight: float = 0.0,
):
    """Train one model (AdamW, one-cycle) from scratch, or for ``arch="mobilenet_v2"`` from ``pretrained``
    ImageNet weights (``mask_net.make_model``); ``val`` = (images, faces) scored every epoch.

    ``faces`` may hold no_face examples (label :data:`NO_FACE_LABEL`); ``no_face_per_epoch``: each epoch
    sees all the faces and a fresh random draw of that many no_face examples (None: all of them).
    ``box_weight`` > 0: the network also learns each face's labelled box (:func:`run_epoch`)."""
    import torch

    torch.manual_seed(seed)
    n_box = BOX_OUTPUTS if box_weight else 0
    # channels_last: 1.4-2x faster on a CPU (measured)
    model = make_model(arch=arch, pretrained=pretrained, n_box=n_box).to(memory_format=torch.channels_last)
    labels = np.array([f[2] for f in faces])
    counts = np.bincount(labels, minlength=len(HEAD_CLASSES)).astype(np.float64)
    crit = loss_fn(kind, np.maximum(counts, 1.0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    nf = np.flatnonzero(labels == NO_FACE_LABEL)
    rest = np.flatnonzero(labels != NO_FACE_LABEL)
    draw = len(nf) if no_face_per_epoch is None else min(len(nf), int(no_face_per_epoch))
    steps = epochs * math.ceil((len(rest) + draw) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    sample_p = (1.0 / np.maximum(counts, 1.0))[labels]
    sample_p /= sample_p.sum()
    curve = []
    t0 = time.time()
    for ep in range(epochs):
        rng = np.random.default_rng([seed, ep, 1])
        if kind == "sampler":
            order = rng.choice(len(faces), size=len(rest) + draw, replace=True, p=sample_p)
        else:
            pick = rng.choice(nf, size=draw, replace=False) if draw < len(nf) else nf
            order = rng.permutation(np.concatenate([rest, pick]))
        loss = run_epoch(
            model, opt, sched, crit, images, faces, order, size, margin, rng, batch, synthetic=synthetic,
            box_weight=box_weight,
        )  # fmt: skip
        entry = {"epoch": ep + 1, "loss": loss, "seconds": round(time.time() - t0, 1)}
        if val is not None:
            probs = predict_torch(model, *val, size, margin, n_box=n_box)
            m = metrics(np.array([f[2] for f in val[1]]), mask_pred(probs))
            entry["val_macro_f1"] = m["macro_f1"]
            entry["val_incorrect_recall"] = m["per_class"]["mask_weared_incorrect"]["recall"]
        curve.append(entry)
        log(
            f"  [{kind}] epoch {ep + 1}/{epochs} "
            + " ".join(f"{k}={v}" for k, v in entry.items() if k != "epoch")
        )
    model.eval()
    return model.to(memory_format=torch.contiguous_format), curve, time.time() - t0


# ----------------------------------------------------------------------------------------- metrics
def metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy, macro-F1 (over the classes present), per-class P/R/F1/support, confusion matrix; over
    the three mask states (labelled faces, predictions by :func:`mask_pred`)."""
    k = len(MASK_CLASSES)
    cm = np.zeros((k, k), np.int64)
    for a, b in zip(y, pred, strict=True):
        cm[a, b] += 1
    per = {}
    for c, name in enumerate(MASK_CLASSES):
        tp = cm[c, c]
        p = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        r = tp / cm[c].sum() if cm[c].sum() else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[name] = {
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
            "support": int(cm[c].sum()),
        }
    present = [n for n in MASK_CLASSES if per[n]["support"]]
    return {
        "faces": int(len(y)),
        "accuracy": round(float((y == pred).mean()), 4) if len(y) else None,
        "macro_f1": round(float(np.mean([per[n]["f1"] for n in present])), 4) if present else None,
        "per_class": per,
        "confusion": {"rows_true_cols_pred": list(MASK_CLASSES), "matrix": cm.tolist()},
    }


def count(labels: Sequence[int], classes: Sequence[str] = MASK_CLASSES) -> dict[str, int]:
    """Faces per class name."""
    return dict(zip(classes, np.bincount(list(labels), minlength=len(classes)).tolist(), strict=True))


def grouped_split(
    shas: Sequence[str], labels: Sequence[set[int]], frac: float, seed: int, priority: Sequence[int]
) -> set[int]:
    """Indices of the validation photos: whole sha256 groups, ``frac`` of each bucket (a group's bucket:
    the first class of ``priority`` it has, else the last), so rare classes reach validation."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(shas):
        groups.setdefault(s, []).append(i)
    rng = np.random.default_rng([seed, 7])
    buckets: list[list[list[int]]] = [[] for _ in range(len(priority) + 1)]
    for g in groups.values():
        labs = set().union(*(labels[i] for i in g))
        buckets[next((j for j, c in enumerate(priority) if c in labs), len(priority))].append(g)
    val: set[int] = set()
    for bucket in buckets:
        for j in rng.permutation(len(bucket))[: int(round(frac * len(bucket)))]:
            val.update(bucket[j])
    return val


def load_torch(pt_path: Path = TORCH_PATH, meta_path: Path = META_PATH):
    """The head as a torch model (eval mode) from its state_dict, once its sha256 matches the JSON's."""
    import torch

    meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    data = Path(pt_path).read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("torch_sha256"):
        raise ValueError(f"{pt_path} does not match torch_sha256 in {meta_path}: altered or replaced")
    model = make_model(
        n_classes=len(meta["classes"]),
        members=int(meta.get("members", 1)),
        flip=bool(meta.get("flip")),
        arch=str(meta.get("arch", "small")),  # heads from before the choice of network: the small CNN
        n_box=box_outputs(meta),
    )
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return model.eval()
