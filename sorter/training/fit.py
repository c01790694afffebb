"""Fitting the identity head on labelled photos, and calibrating its thresholds.

Every labelled face (+ a synthetic-mask copy) and every face the face detector finds in those photos
that the labeller did not box (a stranger) becomes a sample; the head is fitted on all of them, and
per-person thresholds are picked from grouped cross-validation (:mod:`sorter.heads.calibrate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sorter.boxes import from_detector_box, iou, template_landmarks, to_detector_box
from sorter.heads.calibrate import photo_rates, photo_scores, pick_thresholds
from sorter.heads.identity import FORMAT, STRANGER, KernelLR, fit_kernel_lr, read_model, write_model
from sorter.heads.mask import MaskHead
from sorter.io.bundle import Bundle
from sorter.io.decode import decode_work, read_photo
from sorter.models.registry import FaceDetector, face_detector
from sorter.pipeline.features import MASKED_AT, SFACE, AttributeStep, Featuriser, MaskStep
from sorter.pipeline.pool import MIN_PHOTOS_PER_WORKER, WorkersFailed, cores, default_workers, parallel_map
from sorter.pipeline.recognise import MIN_AGED_FACES
from sorter.records import LabelledImage, LabelledSet, Photo
from sorter.training.augment import draw_synthetic_mask

MATCH_IOU = 0.3  # a detector box and a labelled box are the same face at this IoU
# Beside the recogniser: the face vectors it was fitted on, so `learn` refits with corrections added
# without decoding a training photo again.
SAMPLES_FILE = "recogniser-samples.npz"


def _load_rgb(path: Path) -> tuple[np.ndarray, float]:
    """The photo as classify sees it (canonical decode, displayed orientation); (rgb, full px per rgb px)."""
    st = path.stat()
    photo = Photo(path=path, rel=Path(path.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
    d = decode_work(photo, read_photo(photo)[1])
    return np.asarray(d.rgb), float(d.scale)


@dataclass
class _Sample:
    photo: int
    label: str
    x: np.ndarray
    x_aug: np.ndarray
    masked: float
    age: float | None = None  # the attribute head's estimate (years); None for samples of older runs


def _collect_one(
    i: int,
    img: LabelledImage,
    people: list[str],
    seed: int,
    detector: FaceDetector,
    featuriser: Featuriser,
    masks: MaskStep,
    attributes: AttributeStep,
) -> list[_Sample]:
    """Samples from one labelled photo: its boxed faces, and its unboxed faces as strangers."""
    # One generator per photo: the synthetic masks do not depend on how photos are spread over workers.
    rng = np.random.default_rng((seed, i))
    rgb, scale = _load_rgb(img.image)
    det, _, marks = detector.detect_landmarks(rgb)
    boxes = [(b.name, tuple(v / scale for v in b.xyxy)) for b in img.boxes if b.name in people]
    # label, detector-style box, its landmarks, the label-style box
    items: list[tuple[str, tuple[float, ...], np.ndarray, tuple[float, ...]]] = []
    for name, lb in boxes:
        j = max(range(len(det)), key=lambda k: iou(det[k], lb), default=None)
        if j is not None and iou(det[j], lb) >= MATCH_IOU:
            items.append((name, tuple(det[j]), marks[j], lb))
        else:  # MTCNN missed it: the labelled box, with landmarks where they usually are
            use = to_detector_box(lb)
            items.append((name, use, template_landmarks(use), lb))
    for b, lm in zip(det, marks, strict=True):
        if max((iou(b, lb) for _, lb in boxes), default=0.0) < MATCH_IOU:
            # A face the labeller did not box: in a labelled photo that means "not one of ours".
            items.append((STRANGER, tuple(b), lm, from_detector_box(tuple(b))))
    if not items:
        return []
    x = featuriser.features(rgb, [u for _, u, _, _ in items], [lm for _, _, lm, _ in items])
    m = [masked for _, _, masked, _ in masks.states(rgb, [u for _, u, _, _ in items])]
    ages = attributes.describe(
        rgb, [u for _, u, _, _ in items], [lm for _, _, lm, _ in items], x if featuriser.is_sface else None
    )
    out = []
    for k, (name, use, lm, lb) in enumerate(items):
        x_aug = featuriser.masked_copy(draw_synthetic_mask(rgb, lb, rng, landmarks=lm), use, lm, x[k])
        out.append(_Sample(photo=i, label=name, x=x[k], x_aug=x_aug, masked=float(m[k]), age=ages[k].age))
    return out


_MODELS: tuple[FaceDetector, Featuriser, MaskStep, AttributeStep] | None = None


def _init_collect(threads: int, kind: str) -> None:
    global _MODELS
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _MODELS = (
        face_detector(),
        Featuriser(kind, threads=threads),
        MaskStep(MaskHead(threads=threads)),
        AttributeStep(threads=threads),
    )


def _collect_worker(args: tuple[int, LabelledImage, list[str], int]) -> list[_Sample]:
    assert _MODELS is not None
    return _collect_one(*args, *_MODELS)


def _collect(
    images: list[LabelledImage],
    people: list[str],
    seed: int,
    log: Callable[[str], Any],
    workers: int | None = None,
    kind: str = SFACE,
) -> list[_Sample]:
    """Embed the faces of every labelled photo, on one process per core (dlib is single-threaded)."""
    workers = default_workers() if workers is None else workers
    workers = min(workers, len(images) // MIN_PHOTOS_PER_WORKER)
    jobs = [(i, img, people, seed) for i, img in enumerate(images)]
    out: list[_Sample] = []
    t0 = time.perf_counter()
    finished = 0

    def done(samples: list[_Sample]) -> None:
        nonlocal finished
        out.extend(samples)
        finished += 1
        if finished % 50 == 0:
            took = time.perf_counter() - t0
            log(f"recogniser: embedded faces of {finished}/{len(images)} photos ({took:.0f} s)")

    if workers >= 2:
        try:
            for samples in parallel_map(
                _collect_worker, jobs, workers, _init_collect, (cores() // workers, kind)
            ):
                done(samples)
            return out
        except WorkersFailed as exc:
            log(f"recogniser: worker processes failed ({exc}); going on in this process")
            jobs = jobs[finished:]
    models = (face_detector(), Featuriser(kind), MaskStep(MaskHead()), AttributeStep())
    for job in jobs:
        done(_collect_one(*job, *models))
    return out


def _fit_and_validate(
    samples: list[_Sample], people: list[str], n_photos: int, c: float, gamma: float, folds: int, seed: int
) -> tuple[KernelLR, np.ndarray, np.ndarray]:
    """Final model on everything + out-of-fold photo-level scores ``[n_photos, n_people]`` and the
    out-of-fold face probabilities (for masked/unmasked figures).

    Folds are grouped by photo, so a photo's faces (and their synthetic-mask copies) are scored by a
    model that saw none of them.
    """
    from sklearn.model_selection import GroupKFold

    x = np.stack([s.x for s in samples])
    xa = np.stack([s.x_aug for s in samples])
    y = np.array([s.label for s in samples])
    g = np.array([s.photo for s in samples])

    def fit(idx: np.ndarray) -> KernelLR:
        return fit_kernel_lr(
            np.concatenate([x[idx], xa[idx]]), np.concatenate([y[idx], y[idx]]), c, gamma, seed
        )

    oof = np.zeros((len(x), len(people)))
    k = min(folds, len(set(g.tolist())))
    if k >= 2:
        for tr, te in GroupKFold(k).split(x, y, g):
            if len(set(y[tr].tolist()) | {STRANGER}) < 2:
                continue
            m = fit(tr)
            p = m.proba(x[te])
            for j, name in enumerate(people):
                if name in m.classes:
                    oof[te, j] = p[:, m.classes.index(name)]
    model = fit(np.arange(len(x)))
    return model, photo_scores(g, oof, people, n_photos), oof


def fit_recogniser(
    labelled: LabelledSet,
    train_images: list[LabelledImage],
    out_path: Path,
    target_precision: float = 0.98,
    seed: int = 0,
    log: Callable[[str], Any] = print,
    max_uncertain: float = 0.06,
    c: float = 10.0,
    gamma: float = 2.0,
    folds: int = 5,
    workers: int | None = None,
    features: str = SFACE,
) -> dict[str, Any]:
    """Train the per-person face model from labelled photos and save it to ``out_path`` (.npz).

    Embeds every labelled face (+ a synthetic-mask copy) and every unlabelled face MTCNN finds in those
    photos (a stranger), fits a multinomial logistic regression over people + stranger, and picks
    per-person accept/review thresholds by grouped cross-validation so that photo-level precision
    reaches ``target_precision``. Returns metrics: cross-validated photo-level precision/recall per person
    at those thresholds, and recall on masked vs unmasked appearances (mask state as estimated).
    Cost: about 0.3 s per labelled face on one core (three dlib embeddings) + 0.25 s per photo; photos
    are spread over ``workers`` processes (default: one per core).
    """
    t0 = time.perf_counter()
    people = [c_ for c_ in labelled.classes if any(b.name == c_ for im in train_images for b in im.boxes)]
    if not people:
        raise ValueError("no labelled faces to train a recogniser from")
    detector = face_detector()  # its settings are stored with the model
    dim = Featuriser(features).dim  # also refuses an unknown kind before any work
    samples = _collect(train_images, people, seed, log, workers, features)
    n_str = sum(s.label == STRANGER for s in samples)
    log(
        f"recogniser: {len(samples) - n_str} labelled faces, {n_str} strangers from "
        f"{len(train_images)} photos ({time.perf_counter() - t0:.0f} s)"
    )
    if n_str == 0:  # no negatives at all: a stranger class still needs one example to exist
        samples.append(
            _Sample(
                photo=-1,
                label=STRANGER,
                x=np.zeros(dim, np.float32),
                x_aug=np.zeros(dim, np.float32),
                masked=0.0,
            )
        )
    save_samples(Path(out_path).with_name(SAMPLES_FILE), samples)
    settings = FitSettings(target_precision, max_uncertain, c, gamma, folds, seed, features)
    return fit_from_samples(
        samples, people, len(train_images), out_path, detector.settings(), settings, log, t0
    )


@dataclass(frozen=True)
class FitSettings:
    """How the identity head is fitted and calibrated (stored in the recogniser's metadata)."""

    target_precision: float = 0.98
    max_uncertain: float = 0.06
    c: float = 10.0
    gamma: float = 2.0
    folds: int = 5
    seed: int = 0
    features: str = SFACE

    @classmethod
    def of(cls, meta: dict[str, Any]) -> FitSettings:
        """The settings a stored recogniser was fitted with."""
        return cls(**{k: meta[k] for k in cls.__dataclass_fields__ if k in meta})


def fit_from_samples(
    samples: list[_Sample],
    people: list[str],
    n_photos: int,
    out_path: Path,
    detector_settings: dict[str, Any],
    settings: FitSettings,
    log: Callable[[str], Any] = print,
    t0: float | None = None,
    calibrate_on: int | None = None,
) -> dict[str, Any]:
    """Fit the head on face vectors, calibrate its thresholds by grouped cross-validation, save it.

    ``samples``' ``photo`` numbers the photos 0..n_photos-1 (the groups of cross-validation and the
    photo-level calibration); used by training and by ``learn`` (the teacher's corrections added).
    ``calibrate_on``: thresholds from the first this many photos only. ``learn`` passes the labelled
    photos: corrected photos are the ones the model doubted, hard by selection, so counting them would
    calibrate for a library made of doubts (narrower review band, photos lost instead of reviewed).
    """
    t0 = time.perf_counter() if t0 is None else t0
    f = settings
    target_precision, max_uncertain, seed = f.target_precision, f.max_uncertain, f.seed
    n_str = sum(s.label == STRANGER for s in samples)
    model, val_scores, oof = _fit_and_validate(samples, people, n_photos, f.c, f.gamma, f.folds, seed)
    truth = np.zeros((n_photos, len(people)), bool)
    masked = np.zeros((n_photos, len(people)), bool)
    for s in samples:
        if s.label != STRANGER and s.photo >= 0:
            truth[s.photo, people.index(s.label)] = True
            masked[s.photo, people.index(s.label)] = s.masked >= MASKED_AT
    cal = slice(0, n_photos if calibrate_on is None else calibrate_on)
    accept, low = pick_thresholds(val_scores[cal], truth[cal], people, target_precision, max_uncertain)
    metrics = photo_rates(val_scores[cal], truth[cal], masked[cal], people, accept)
    metrics.update(
        target_precision=target_precision,
        faces=len(samples) - n_str,
        strangers=n_str,
        photos=n_photos,
        seconds=round(time.perf_counter() - t0, 1),
    )
    meta = {
        "format": FORMAT,
        "people": people,
        "classes": model.classes,
        "accept": accept,
        "low": low,
        "target_precision": target_precision,
        "max_uncertain": max_uncertain,
        "c": f.c,
        "gamma": f.gamma,
        "seed": seed,
        "features": f.features,
        "metrics": metrics,
        "detector": detector_settings,
    }
    ages = [s.age for s in samples if s.label != STRANGER and s.photo >= 0 and s.age is not None]
    if len(ages) >= MIN_AGED_FACES:
        # the ages the people were labelled at (their faces' estimates): faces far outside are not
        # compared with them (sorter.pipeline.recognise.age_gate)
        lo, hi = np.percentile(ages, [2, 98])
        meta["ages"] = {"lo": round(float(lo), 2), "hi": round(float(hi), 2), "faces": len(ages)}
    out_path = Path(out_path)
    write_model(
        out_path, model, meta, val_scores=val_scores[cal], val_truth=truth[cal], val_masked=masked[cal]
    )
    log(
        f"recogniser: saved {out_path}; CV precision {metrics['precision']:.3f} "
        f"recall {metrics['recall']:.3f} "
        f"(masked {metrics.get('recall_masked', 0):.3f}, unmasked {metrics.get('recall_unmasked', 0):.3f})"
    )
    return metrics


def save_samples(path: Path, samples: list[_Sample]) -> None:
    """The training vectors as plain arrays (``.npz``, read back with ``allow_pickle=False``)."""
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        tmp,
        x=np.stack([s.x for s in samples]).astype(np.float32),
        x_aug=np.stack([s.x_aug for s in samples]).astype(np.float32),
        label=np.array([s.label for s in samples]),
        photo=np.array([s.photo for s in samples], np.int64),
        masked=np.array([s.masked for s in samples], np.float32),
        age=np.array([np.nan if s.age is None else s.age for s in samples], np.float32),
    )
    tmp.replace(path)


def load_samples(path: Path) -> list[_Sample]:
    with np.load(path, allow_pickle=False) as z:
        ages = z["age"] if "age" in z.files else np.full(len(z["photo"]), np.nan)  # older runs: none
        return [
            _Sample(
                photo=int(p), label=str(lb), x=x, x_aug=xa, masked=float(m), age=None if a != a else float(a)
            )
            for p, lb, x, xa, m, a in zip(
                z["photo"], z["label"], z["x"], z["x_aug"], z["masked"], ages, strict=True
            )
        ]


def adopt_thresholds(bundle: Bundle, recogniser: Path) -> None:
    """Give the bundle the per-person accept and review thresholds the recogniser was calibrated to."""
    meta, _ = read_model(recogniser)
    bundle.per_class_threshold, bundle.per_class_low = dict(meta["accept"]), dict(meta["low"])
