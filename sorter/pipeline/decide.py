"""Stage 5: turn per-face scores into folders for one photo.

A person goes into their folder when their score reaches their accept threshold, into uncertain/
when it falls in the review band just below, and nowhere when it is lower. A person appears at most
once in a photo, so faces are assigned to people jointly (:func:`assign`) before deciding.
"""

from __future__ import annotations

from sorter.heads.identity import assign_faces, best_faces
from sorter.records import Decision, Face, Photo


def decide(
    photo: Photo,
    faces: list[Face],
    accept: dict[str, float],
    low: dict[str, float],
    exclusive: bool = True,
    forced: dict[str, bool] | None = None,
) -> Decision:
    """``exclusive``: each class is on at most one face (people); False: on any number (mask states).
    ``forced``: people the teacher put into (True) or out of (False) this photo (:mod:`.verdicts`)."""
    matched = assign_faces(faces) if exclusive else best_faces(faces)
    people = {p: s for p, (_, s) in matched.items() if s > 0}
    forced = forced or {}
    for p, there in forced.items():
        people[p] = 1.0 if there else 0.0
    # A face of a video seen in one sampled frame only (start_s == end_s) is not on screen long enough
    # to be sure of: at most uncertain.
    brief = {
        p
        for p, (k, _) in matched.items()
        if faces[k].start_s is not None and faces[k].end_s == faces[k].start_s
    }
    accepted = sorted(
        p
        for p, s in people.items()
        if s >= accept.get(p, 1.0) and forced.get(p) is not False and (p not in brief or p in forced)
    )
    unsure = sorted(
        p for p, s in people.items() if p not in accepted and s >= low.get(p, 1.0) and p not in forced
    )
    reason = ""
    if unsure:
        parts = []
        for p in unsure:
            # runner-up: the next most likely name for the same face (what a reviewer would doubt)
            face = max(faces, key=lambda f: f.scores.get(p, -1.0))
            runner = max(((q, s) for q, s in face.scores.items() if q != p), key=lambda x: x[1], default=None)
            extra = f", runner-up {runner[0]} {runner[1]:.3f}" if runner else ""
            if p in brief and people[p] >= accept.get(p, 1.0):
                parts.append(f"{p} {people[p]:.3f}, seen in one sampled frame only{extra}")
            else:
                parts.append(f"{p} {people[p]:.3f} < {accept.get(p, 1.0):.3f}{extra}")
        reason = "; ".join(parts)
    elif not accepted:
        reason = "no face found" if not faces else "no known person"
    return Decision(
        photo=photo,
        faces=faces,
        people=people,
        accepted=accepted,
        uncertain=unsure,
        reason=reason,
        assigned={p: k for p, (k, _) in matched.items()},
    )
