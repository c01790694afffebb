"""Stage 5: turn per-face scores into folders for one photo.

A person goes into their folder when their score reaches their accept threshold, into uncertain/
when it falls in the review band just below, and nowhere when it is lower. A person appears at most
once in a photo, so faces are assigned to people jointly (:func:`assign`) before deciding.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment  # scipy comes with scikit-learn

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
    rows, cols = linear_sum_assignment(-score)
    for r, c in zip(rows, cols, strict=True):
        if score[r, c] > 0:
            best[names[c]] = float(score[r, c])
    return best


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
