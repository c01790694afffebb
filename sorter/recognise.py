"""Stage 4: who is each face. Without a trained recogniser, the detector's class scores stand.

The YOLO detector trained from a few hundred labelled photos finds faces poorly and tells people apart
even worse, so the trained recogniser does both jobs with pretrained face models (:mod:`sorter.faces`):

1. The face detector (YuNet proposals checked by ONet, :class:`~sorter.faces.YuNetDetector`) finds
   faces and five landmarks each in a 640-px copy of the photo; YOLO's faces are merged in (IoU), faces
   YOLO missed are added. Faces are embedded from the canonical decode (2016 px for a 12-MP photo).
2. Each face becomes a vector (:class:`Featuriser`). Default: SFace's 128-d vector of the face aligned
   by its landmarks. Measured on make_library.py libraries with the same faces and the same model on
   top, it reaches recall 0.97 at photo precision 0.98 where dlib's reaches 0.85 (masked faces 0.96
   against 0.81), at a tenth of the cost. The first recogniser's dlib features stay available
   (``--embedder dlib``): dlib's vector of the face as it is and of the same face with its lower half
   painted a fixed grey, so that a stranger in the same mask colour as a child looks less like them.
3. A kernel logistic regression (the vector + RBF similarity to every training face) over
   [children + "stranger"] turns them into a probability per child. Strangers are free negatives:
   faces found in the labelled photos that the labeller did not box. Labelled faces (and strangers)
   are also seen with a synthetic mask drawn on, so the model learns the masked look of children
   labelled unmasked.
4. Per-person accept thresholds are chosen by grouped cross-validation on the labelled photos so that
   photo-level precision reaches the target; the out-of-fold photo scores are stored so thresholds can
   be re-picked for another precision without retraining (:func:`repick_thresholds`).

The model file is a plain ``.npz`` (arrays + a JSON string), read with ``allow_pickle=False``: loading a
recogniser cannot run code, and classify needs neither sklearn nor pickle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sorter.bundle import Bundle
from sorter.decode import WORK_SIDE
from sorter.faces import (
    FaceDetector,
    FaceEmbedder,
    SFaceEmbedder,
    YuNetDetector,
    draw_synthetic_mask,
    face_detector,
    from_detector_box,
    iou,
    mask_score,
    template_landmarks,
    to_detector_box,
)
from sorter.records import Decoded, Face, LabelledImage, LabelledSet

STRANGER = "__stranger__"
FORMAT = "photosort-recogniser/1"
MATCH_IOU = 0.3  # a detector box and a labelled/YOLO box are the same face at this IoU
MERGE_IOU = 0.4
MASKED_AT = 0.5  # mask_score at or above this = masked
# A person's own accept threshold needs this many validation photos of them: to tell 98% precision
# from 96% takes about 50 accepted photos (one mistake in 50 is 2%).
MIN_OWN_PHOTOS = 50


class Recogniser(Protocol):
    def recognise(self, image: Decoded, faces: list[Face]) -> list[Face]: ...

    def rescore(self, faces: list[Face]) -> list[Face] | None: ...

    @property
    def embed_key(self) -> str: ...


def load_recogniser(bundle: Bundle, threads: int | None = None) -> Recogniser | None:
    """The bundle's recogniser (loaded lazily on first use), or None when the bundle has none."""
    if not bundle.recogniser:
        return None
    ir = bundle.path / bundle.face_detector if bundle.face_detector else None
    return FaceRecogniser(bundle.path / bundle.recogniser, onet_ir=ir, threads=threads)


# ----------------------------------------------------------------------------------------------- features


SFACE = "sface128-openvino"  # SFace on the OpenVINO runtime (the default since it measured ~4x faster)
SFACE_OPENCV = "sface128"  # SFace on OpenCV's DNN: recognisers trained before keep it
DLIB = "dlib128+canonical-mask-dlib128"
FEATURES = (SFACE, SFACE_OPENCV, DLIB)


@dataclass
class Featuriser:
    """Turns faces (detector-style boxes + five landmarks) into the vectors the per-person model uses.

    ``sface128`` (default): the SFace vector of the landmark-aligned face. ``dlib128+canonical-mask-dlib128``
    (the first recogniser): dlib's vector of the face as it is and of the same face with its lower half
    painted grey. Either way dlib's 5-point landmarks give a 150-px chip for the mask-state estimate.
    """

    kind: str = SFACE
    threads: int | None = None
    dlib: FaceEmbedder = field(default_factory=FaceEmbedder)
    sface: SFaceEmbedder | None = None

    def __post_init__(self) -> None:
        if self.kind not in FEATURES:
            raise ValueError(f"unknown face features {self.kind!r} (known: {', '.join(FEATURES)})")
        if self.sface is None:
            backend = "openvino" if self.kind == SFACE else "opencv"
            self.sface = SFaceEmbedder(backend=backend, threads=self.threads)

    @property
    def is_sface(self) -> bool:
        return self.kind in (SFACE, SFACE_OPENCV)

    @property
    def dim(self) -> int:
        return 128 if self.is_sface else 256

    def features(
        self, rgb: np.ndarray, boxes: Sequence[Sequence[float]], landmarks: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``[n, dim]`` features and ``[n]`` mask scores for detector-style boxes in ``rgb`` pixels."""
        chips = self.dlib.chips(rgb, boxes)
        if not chips:
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        masked = np.array([mask_score(c) for c in chips], np.float32)
        if self.is_sface:
            return self.sface.embed(rgb, boxes, landmarks), masked
        raw = self.dlib.embed_chips(chips)
        canon = self.dlib.embed_chips([self.dlib.canonical_mask(c) for c in chips])
        return np.concatenate([raw, canon], 1), masked

    def masked_copy(
        self, rgb_masked: np.ndarray, box: Sequence[float], lm: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """Features of the same face with a synthetic mask drawn on (``x``: its features unmasked)."""
        if self.is_sface:
            return self.sface.embed(rgb_masked, [box], [lm])[0]
        # the canonical-mask half is the same masked or not: the grey covers the mask
        return np.concatenate([self.dlib.embed(rgb_masked, [box])[0], x[128:]])


def _load_rgb(path: Path) -> tuple[np.ndarray, float]:
    """The photo as classify sees it (canonical decode, displayed orientation); (rgb, full px per rgb px)."""
    from sorter.decode import decode_work, read_photo
    from sorter.records import Photo

    st = path.stat()
    photo = Photo(path=path, rel=Path(path.name), size=st.st_size, mtime_ns=st.st_mtime_ns)
    d = decode_work(photo, read_photo(photo)[1])
    return np.asarray(d.rgb), float(d.scale)


# ------------------------------------------------------------------------------------------------- model


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class _KernelLR:
    """Multinomial logistic regression on [x, RBF similarities of x to the training faces], in numpy.

    The similarities make it a kernel model: a child is recognised by closeness to *their* masked and
    unmasked examples, not by one linear direction per child (which masked strangers straddle). Measured
    on the daycare bench: +6 points of recall at 0.98 precision over plain logistic regression.
    """

    coef: np.ndarray  # [classes, dim + n_prototypes]
    intercept: np.ndarray  # [classes]
    prototypes: np.ndarray  # [n_prototypes, dim]
    gamma: float
    classes: list[str]

    def expand(self, x: np.ndarray) -> np.ndarray:
        return _expand(x, self.prototypes, self.gamma)

    def proba(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float64)
        return _softmax(self.expand(x) @ self.coef.T + self.intercept)


def _expand(x: np.ndarray, prototypes: np.ndarray, gamma: float) -> np.ndarray:
    x = x.astype(np.float64)
    p = prototypes.astype(np.float64)
    d2 = (x * x).sum(1)[:, None] + (p * p).sum(1)[None] - 2.0 * x @ p.T
    return np.concatenate([x, np.exp(-gamma * np.maximum(d2, 0.0))], 1)


def _fit_model(x: np.ndarray, y: np.ndarray, c: float, gamma: float, seed: int) -> _KernelLR:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed)
    m.fit(_expand(x, x, gamma), y)
    coef, intercept = m.coef_, m.intercept_
    if len(m.classes_) == 2:  # sklearn stores one row for two classes; make it a 2-way softmax
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return _KernelLR(
        coef=coef.astype(np.float64),
        intercept=intercept.astype(np.float64),
        prototypes=x.astype(np.float32),
        gamma=gamma,
        classes=[str(c_) for c_ in m.classes_],
    )


# -------------------------------------------------------------------------------------- photo-level maths


def _photo_scores(photo_of: np.ndarray, proba: np.ndarray, people: list[str], n_photos: int) -> np.ndarray:
    """``[n_photos, n_people]`` best score per person per photo after the decide stage's 1:1 assignment."""
    from sorter.decide import assign

    out = np.zeros((n_photos, len(people)))
    for i in range(n_photos):
        idx = np.flatnonzero(photo_of == i)
        if len(idx) == 0:
            continue
        faces = [
            Face(
                xyxy=(0, 0, 1, 1), det_score=1.0, scores={p: float(proba[k, j]) for j, p in enumerate(people)}
            )
            for k in idx
        ]
        for p, s in assign(faces).items():
            out[i, people.index(p)] = s
    return out


def _lowest_threshold(scores: np.ndarray, truth: np.ndarray, target: float, floor: float = 0.05) -> float:
    """The lowest score t such that the photos scoring >= t are right at least ``target`` of the time.

    Precision is taken over every prefix ending at t (not just at t), so the set of accepted photos
    meets the target wherever the threshold lands between ties. 1.0 (accept nothing) when no t works.
    """
    keep = scores > 0
    s, y = scores[keep], truth[keep]
    if len(s) == 0:
        return 1.0
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    prec = np.cumsum(y) / np.arange(1, len(y) + 1)
    best = None
    for k in range(len(s)):
        if prec[k] >= target and (k + 1 == len(s) or s[k + 1] < s[k]):
            best = k
    return 1.0 if best is None else max(floor, float(s[best]))


def _pick(
    scores: np.ndarray, truth: np.ndarray, people: list[str], target: float, max_uncertain: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-person accept and review thresholds from cross-validated photo scores.

    Accept: the lowest threshold meeting ``target`` over everybody's validation photos, raised to the
    person's own where they have at least ``MIN_OWN_PHOTOS`` (a hard-to-tell child gets a stricter
    threshold). With fewer, a person's own curve says little: among 30 photos a single mistake is
    already 3%, so their own threshold jumps above every stranger seen and recall collapses (measured
    on a 1,500-photo daycare library: recall 0.92 at precision 0.998 that way, 0.97 at 0.982 pooled).
    Review: ``accept - band``, one band for everybody, the widest that sends at most ``max_uncertain``
    of the validation photos to uncertain/.
    """
    pooled = _lowest_threshold(scores.ravel(), truth.ravel(), target)
    accept = {}
    for j, p in enumerate(people):
        own = (
            _lowest_threshold(scores[:, j], truth[:, j], target) if truth[:, j].sum() >= MIN_OWN_PHOTOS else 0
        )
        accept[p] = round(max(pooled, own), 4)
    acc = np.array([accept[p] for p in people])
    band = 0.0
    for b in np.linspace(0.0, 0.9, 91):
        lo = np.maximum(acc - b, 0.02)
        unsure = ((scores >= lo) & (scores < acc)).any(1).mean() if len(scores) else 0.0
        if unsure > max_uncertain:
            break
        band = float(b)
    low = {p: round(max(accept[p] - band, 0.02), 4) for p in people}
    return accept, low


def _rates(
    scores: np.ndarray,
    truth: np.ndarray,
    masked: np.ndarray | None,
    people: list[str],
    accept: dict[str, float],
) -> dict[str, Any]:
    thr = np.array([accept[p] for p in people])
    got = scores >= thr
    out: dict[str, Any] = {"per_person": {}}
    for j, p in enumerate(people):
        tp = int((got[:, j] & truth[:, j]).sum())
        out["per_person"][p] = {
            "precision": round(tp / max(1, int(got[:, j].sum())), 4),
            "recall": round(tp / max(1, int(truth[:, j].sum())), 4),
            "photos": int(truth[:, j].sum()),
            "accept": accept[p],
        }
        if masked is not None:
            for name, sel in (
                ("masked", masked[:, j] & truth[:, j]),
                ("unmasked", ~masked[:, j] & truth[:, j]),
            ):
                out["per_person"][p][f"recall_{name}"] = round(
                    int((got[:, j] & sel).sum()) / max(1, int(sel.sum())), 4
                )
                out["per_person"][p][f"photos_{name}"] = int(sel.sum())
    tp = int((got & truth).sum())
    out["precision"] = round(tp / max(1, int(got.sum())), 4)
    out["recall"] = round(tp / max(1, int(truth.sum())), 4)
    if masked is not None:
        for name, sel in (("masked", masked & truth), ("unmasked", ~masked & truth)):
            out[f"recall_{name}"] = round(int((got & sel).sum()) / max(1, int(sel.sum())), 4)
            out[f"appearances_{name}"] = int(sel.sum())
    return out


# --------------------------------------------------------------------------------------------------- fit


@dataclass
class _Sample:
    photo: int
    label: str
    x: np.ndarray
    x_aug: np.ndarray
    masked: float


def _collect_one(
    i: int,
    img: LabelledImage,
    people: list[str],
    seed: int,
    detector: FaceDetector | YuNetDetector,
    featuriser: Featuriser,
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
    x, m = featuriser.features(rgb, [u for _, u, _, _ in items], [lm for _, _, lm, _ in items])
    out = []
    for k, (name, use, lm, lb) in enumerate(items):
        x_aug = featuriser.masked_copy(draw_synthetic_mask(rgb, lb, rng), use, lm, x[k])
        out.append(_Sample(photo=i, label=name, x=x[k], x_aug=x_aug, masked=float(m[k])))
    return out


_MODELS: tuple[FaceDetector | YuNetDetector, Featuriser] | None = None


def _init_collect(threads: int, kind: str) -> None:
    global _MODELS
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _MODELS = (face_detector(), Featuriser(kind, threads=threads))


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
    from sorter.analyse import MIN_PHOTOS_PER_WORKER, WorkersFailed, cores, default_workers, parallel_map

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
    detector, featuriser = face_detector(), Featuriser(kind)
    for job in jobs:
        done(_collect_one(*job, detector, featuriser))
    return out


def _fit_and_validate(
    samples: list[_Sample], people: list[str], n_photos: int, c: float, gamma: float, folds: int, seed: int
) -> tuple[_KernelLR, np.ndarray, np.ndarray]:
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

    def fit(idx: np.ndarray) -> _KernelLR:
        return _fit_model(np.concatenate([x[idx], xa[idx]]), np.concatenate([y[idx], y[idx]]), c, gamma, seed)

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
    return model, _photo_scores(g, oof, people, n_photos), oof


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
    n_photos = len(train_images)
    model, val_scores, oof = _fit_and_validate(samples, people, n_photos, c, gamma, folds, seed)
    truth = np.zeros((n_photos, len(people)), bool)
    masked = np.zeros((n_photos, len(people)), bool)
    for s in samples:
        if s.label != STRANGER and s.photo >= 0:
            truth[s.photo, people.index(s.label)] = True
            masked[s.photo, people.index(s.label)] = s.masked >= MASKED_AT
    accept, low = _pick(val_scores, truth, people, target_precision, max_uncertain)
    metrics = _rates(val_scores, truth, masked, people, accept)
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
        "c": c,
        "gamma": gamma,
        "seed": seed,
        "features": features,
        "metrics": metrics,
        "detector": detector.settings(),
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp.npz")
    np.savez(
        tmp,
        coef=model.coef,
        intercept=model.intercept,
        prototypes=model.prototypes,
        val_scores=val_scores,
        val_truth=truth,
        val_masked=masked,
        meta=np.array(json.dumps(meta)),
    )
    tmp.replace(out_path)
    log(
        f"recogniser: saved {out_path}; CV precision {metrics['precision']:.3f} "
        f"recall {metrics['recall']:.3f} "
        f"(masked {metrics.get('recall_masked', 0):.3f}, unmasked {metrics.get('recall_unmasked', 0):.3f})"
    )
    return metrics


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a photosort recogniser of this version ({meta.get('format')!r})")
    return meta, arrays


def repick_thresholds(
    path: Path, target_precision: float, max_uncertain: float | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-person (accept, low) thresholds for another target precision, from the stored CV scores.

    ``max_uncertain`` (share of photos allowed in the review band) defaults to the one used in training.
    """
    meta, arrays = _read(path)
    mu = meta["max_uncertain"] if max_uncertain is None else max_uncertain
    return _pick(arrays["val_scores"], arrays["val_truth"].astype(bool), meta["people"], target_precision, mu)


# ---------------------------------------------------------------------------------------------- classify


@dataclass
class FaceRecogniser:
    """Scores every face in a photo for every person; adds faces the YOLO detector missed.

    Loads the model file on first use. ``recognise`` returns faces in full-size displayed coordinates,
    each with ``scores`` = person -> probability (comparable to the stored per-person thresholds) and
    ``masked`` set.
    """

    path: Path
    detector: FaceDetector | YuNetDetector | None = None  # default: the one the model was trained with
    onet_ir: Path | None = None  # the detector's ONet as OpenVINO IR (runs without torch), if any
    threads: int | None = None
    _featuriser: Featuriser | None = None
    _model: _KernelLR | None = None
    _meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> FaceRecogniser:
        if self._model is None:
            meta, arrays = _read(self.path)
            self._meta = meta
            self._model = _KernelLR(
                coef=arrays["coef"],
                intercept=arrays["intercept"],
                prototypes=arrays["prototypes"],
                gamma=float(meta["gamma"]),
                classes=meta["classes"],
            )
            self._featuriser = Featuriser(meta.get("features", DLIB), threads=self.threads)
            if self.detector is None:
                self.detector = face_detector(meta.get("detector"), self.onet_ir)
                self.detector.threads = self.threads
        return self

    @property
    def people(self) -> list[str]:
        return list(self.load()._meta["people"])

    @property
    def thresholds(self) -> tuple[dict[str, float], dict[str, float]]:
        self.load()
        return dict(self._meta["accept"]), dict(self._meta["low"])

    def recognise(self, image: Decoded, faces: list[Face]) -> list[Face]:
        """Faces of ``image`` scored per person. ``faces``: the YOLO detector's, merged in by IoU.

        A photo larger than the canonical decode (:func:`sorter.decode.canonical`) is reduced to it
        first, so the answer for a photo is the same however large it was decoded.
        """
        from sorter.decode import canonical, shrink

        self.load()
        assert self.detector is not None
        given = np.asarray(image.rgb)
        rgb, k = canonical(given)
        scale = float(image.scale) * given.shape[1] / rgb.shape[1]  # full-size px per px of rgb
        if k == 1:  # the face detector's input: the same reduced copy YOLO was given, when there is one
            view = shrink(image, self.detector.max_side)
        else:
            view = shrink(replace(image, rgb=rgb, scale=scale, views={}), self.detector.max_side)
        det, det_p, marks = self.detector.detect_landmarks(np.asarray(view.rgb))
        det, marks = det * (view.scale / scale), marks * (view.scale / scale)  # to px of rgb
        # Merge: YOLO boxes are labeller-style, MTCNN's are tighter; compare like with like. YOLO may
        # report one face twice (one box per class): duplicates fold into the stronger one.
        merged: list[tuple[Face, tuple[float, ...]]] = []  # (face, detector-style box in full-size px)
        lms: list[np.ndarray] = []  # five landmarks per merged face, full-size px
        used: set[int] = set()
        for f in sorted(faces, key=lambda f: -f.det_score):
            dbox = to_detector_box(f.xyxy)
            dup = next((k for k, (_, d) in enumerate(merged) if iou(d, dbox) >= MERGE_IOU), None)
            if dup is not None:
                kept = merged[dup][0]
                for name, sc in f.scores.items():
                    kept.scores[name] = max(sc, kept.scores.get(name, 0.0))
                continue
            j = max(
                (k for k in range(len(det)) if k not in used),
                key=lambda k: iou(det[k] * scale, dbox),
                default=None,
            )
            face = Face(xyxy=f.xyxy, det_score=f.det_score, scores=dict(f.scores), masked=f.masked)
            lm = template_landmarks(dbox)  # a YOLO box MTCNN did not confirm: landmarks where usual
            if j is not None and iou(det[j] * scale, dbox) >= MERGE_IOU:
                used.add(j)
                dbox = tuple(float(v) * scale for v in det[j])
                face.det_score = max(f.det_score, float(det_p[j]))
                lm = marks[j] * scale
            merged.append((face, dbox))
            lms.append(lm)
        for j in range(len(det)):
            if j in used:
                continue
            dbox = tuple(float(v) * scale for v in det[j])
            if any(iou(dbox, d) >= MERGE_IOU for _, d in merged):
                continue
            merged.append((Face(xyxy=from_detector_box(dbox), det_score=float(det_p[j])), dbox))
            lms.append(marks[j] * scale)
        if not merged:
            return []
        x, m = self._featuriser.features(
            rgb, [tuple(v / scale for v in d) for _, d in merged], [lm / scale for lm in lms]
        )
        proba = self._model.proba(x)
        people = self._meta["people"]
        cols = [self._model.classes.index(p) for p in people]
        out = []
        for k, (f, _) in enumerate(merged):
            f.det_scores, f.scores = (
                f.scores,
                {p: float(proba[k, c]) for p, c in zip(people, cols, strict=True)},
            )
            f.masked = bool(m[k] >= MASKED_AT)
            f.embedding = pack(x[k])
            out.append(f)
        return out

    @property
    def embed_key(self) -> str:
        """Identifies how face vectors were made (face detector settings + embedding), not the model
        on top: a recogniser retrained on more labels keeps this key and re-scores stored vectors."""
        self.load()
        what = [self._meta["detector"], self._meta["features"], WORK_SIDE]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def rescore(self, faces: list[Face]) -> list[Face] | None:
        """The same faces scored by this recogniser from their stored vectors; None if one has none."""
        self.load()
        if any(not f.embedding for f in faces):
            return None
        if not faces:
            return []
        proba = self._model.proba(np.stack([unpack(f.embedding) for f in faces]))
        people = self._meta["people"]
        cols = [self._model.classes.index(p) for p in people]
        return [
            replace(f, scores={p: float(proba[k, c]) for p, c in zip(people, cols, strict=True)})
            for k, f in enumerate(faces)
        ]


def pack(x: np.ndarray) -> str:
    """A face vector as text for the index (base64 of little-endian float32: exact, 1.4 kB a face)."""
    return base64.b64encode(np.asarray(x, "<f4").tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4")
