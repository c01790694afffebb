"""Stage 5: turn per-face scores into folders for one photo.

A person goes into their folder when their score reaches their accept threshold, into uncertain/
when it falls in the review band just below, and nowhere when it is lower. A person appears at most
once in a photo, so faces are assigned to people jointly (:func:`assign`) before deciding.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from sorter.records import Decision, Face, Photo


def assign(faces: list[Face]) -> dict[str, float]:
    """Best score per person when each face is one person and each person at most one face.

    Maximises the summed score over a one-to-one matching (Hungarian method), so two faces that both
    look a bit like Ava cannot both count as Ava; the second then counts as its runner-up.
    """
    names = sorted({n for f in faces for n in f.scores})
    if not faces or not names:
        return {}
    score = np.array([[f.scores.get(n, 0.0) for n in names] for f in faces])
    best: dict[str, float] = {}
    try:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-score)
        pairs = list(zip(rows, cols, strict=True))
    except ImportError:  # scipy comes with scikit-learn; this is only a tiny fallback
        pairs = _brute_force(score)
    for r, c in pairs:
        if score[r, c] > 0:
            best[names[c]] = float(score[r, c])
    return best


def _brute_force(score: np.ndarray) -> list[tuple[int, int]]:
    n_f, n_p = score.shape
    best, best_pairs = -1.0, []
    for perm in permutations(range(n_p), min(n_f, n_p)):
        total = sum(score[i, p] for i, p in enumerate(perm))
        if total > best:
            best, best_pairs = total, list(enumerate(perm))
    return best_pairs


def decide(photo: Photo, faces: list[Face], accept: dict[str, float], low: dict[str, float]) -> Decision:
    people = assign(faces)
    accepted = sorted(p for p, s in people.items() if s >= accept.get(p, 1.0))
    unsure = sorted(p for p, s in people.items() if p not in accepted and s >= low.get(p, 1.0))
    reason = ""
    if unsure:
        parts = []
        for p in unsure:
            # runner-up: the next most likely name for the same face (what a reviewer would doubt)
            face = max(faces, key=lambda f: f.scores.get(p, -1.0))
            runner = max(((q, s) for q, s in face.scores.items() if q != p), key=lambda x: x[1], default=None)
            extra = f", runner-up {runner[0]} {runner[1]:.3f}" if runner else ""
            parts.append(f"{p} {people[p]:.3f} < {accept.get(p, 1.0):.3f}{extra}")
        reason = "; ".join(parts)
    elif not accepted:
        reason = "no face found" if not faces else "no known person"
    return Decision(
        photo=photo, faces=faces, people=people, accepted=accepted, uncertain=unsure, reason=reason
    )
