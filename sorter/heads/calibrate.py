"""Calibration of the identity head: per-person thresholds for a target photo-level precision.

Thresholds are chosen on out-of-fold photo scores (grouped cross-validation on the labelled photos),
and those scores are stored with the model so thresholds can be re-picked for another precision
without retraining (:func:`repick_thresholds`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sorter.heads.identity import assign, read_model
from sorter.records import Face

# A person's own accept threshold needs this many validation photos of them: to tell 98% precision
# from 96% takes about 50 accepted photos (one mistake in 50 is 2%).
MIN_OWN_PHOTOS = 50


def photo_scores(photo_of: np.ndarray, proba: np.ndarray, people: list[str], n_photos: int) -> np.ndarray:
    """``[n_photos, n_people]`` best score per person per photo after the decide stage's 1:1 assignment."""
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


def lowest_threshold(scores: np.ndarray, truth: np.ndarray, target: float, floor: float = 0.05) -> float:
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


def pick_thresholds(
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
    pooled = lowest_threshold(scores.ravel(), truth.ravel(), target)
    accept = {}
    for j, p in enumerate(people):
        own = (
            lowest_threshold(scores[:, j], truth[:, j], target) if truth[:, j].sum() >= MIN_OWN_PHOTOS else 0
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


def photo_rates(
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


def repick_thresholds(
    path: Path, target_precision: float, max_uncertain: float | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-person (accept, low) thresholds for another target precision, from the stored CV scores.

    ``max_uncertain`` (share of photos allowed in the review band) defaults to the one used in training.
    """
    meta, arrays = read_model(path)
    mu = meta["max_uncertain"] if max_uncertain is None else max_uncertain
    return pick_thresholds(
        arrays["val_scores"], arrays["val_truth"].astype(bool), meta["people"], target_precision, mu
    )
