"""The teacher's word is final (issue 13): a photo's faces and people as its corrections say.

Applied before :func:`sorter.pipeline.decide.decide`, to the faces as stored (the index keeps the
models' own scores, so a retrained model still learns from, and is measured on, what it saw).
Corrections are applied oldest first, so a later one about the same face or person wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sorter.boxes import iou
from sorter.io.bundle import Bundle
from sorter.io.corrections import Correction, Corrections, by_photo
from sorter.io.index import Index
from sorter.io.manifest import FACE_AT
from sorter.io.outfolder import record_file_changes
from sorter.records import Face

SAME_FACE_IOU = 0.5  # a stored box and a re-analysed one are the same face at this overlap


def locate(faces: list[Face], c: Correction) -> int | None:
    """Which of ``faces`` a correction is about (None: the photo as a whole, or the face is gone)."""
    if c.face is None:
        return None
    if c.box is None:
        return c.face if 0 <= c.face < len(faces) else None
    box = tuple(c.box)
    if 0 <= c.face < len(faces) and iou(faces[c.face].xyxy, box) >= SAME_FACE_IOU:
        return c.face
    best = max(range(len(faces)), key=lambda k: iou(faces[k].xyxy, box), default=None)
    return best if best is not None and iou(faces[best].xyxy, box) >= SAME_FACE_IOU else None


def apply(faces: list[Face], corrections: list[Correction]) -> tuple[list[Face], dict[str, bool]]:
    """(faces with corrected scores, people the teacher put in (True) or out of (False) the photo).

    A face named P scores 1 for P and 0 for everyone else, and no other face of the photo can be P;
    a stranger or a non-face scores 0 for everyone; "not P" zeroes P on that face. A correction about
    the whole photo (from the file manager) forces the person in or out.
    """
    faces = [replace(f, scores=dict(f.scores)) for f in faces]
    forced: dict[str, bool] = {}
    for c in corrections:
        if c.verdict == "skip":
            continue
        k = locate(faces, c)
        if k is None:
            if c.verdict in ("is", "not") and c.person:
                forced[c.person] = c.verdict == "is"
            continue
        face = faces[k]
        if c.verdict == "is" and c.person:
            for other in faces:
                if c.person in other.scores:
                    other.scores[c.person] = 0.0
            face.scores = dict.fromkeys(face.scores, 0.0) | {c.person: 1.0}
            forced.pop(c.person, None)
        elif c.verdict == "not" and c.person:
            face.scores[c.person] = 0.0
            if forced.get(c.person) is False:
                continue
        else:  # stranger, not a face
            face.scores = dict.fromkeys(face.scores, 0.0)
    return faces, forced


def teacher_verdicts(
    out: Path,
    index_file: str,
    library: Path,
    bundle: Bundle | None,
    by: str,
    index: Index,
    log: Callable[[str], object],
) -> dict[str, list[Correction]]:
    """The teacher's corrections, by photo: the review page's, and the file manager's since the last run
    (noted now, before the run rewrites the folders). Also notes which library and model sort ``out``
    (for ``review`` and ``learn``)."""
    corrections = Corrections(out / index_file)
    try:
        model = str(bundle.path.absolute()) if bundle is not None else ""
        corrections.set_meta(library=str(library), model=model, by=by)
        new = record_file_changes(out, list(index.rows(faces=False)), corrections)
        if new:
            log(
                f"{len(new)} correction(s) made in the file manager noted (e.g. {new[0].why}); they "
                "stand, and 'photosort learn' learns from them"
            )
        return by_photo(corrections.active())
    finally:
        corrections.close()


def which_face(
    faces: list[Face], person: str, accept: dict[str, float], low: dict[str, float], taken: set[int]
) -> int | None:
    """The face a photo-level "``person`` is in it" is about, or None when it cannot be told.

    The face the model scored highest for ``person`` among those not already someone else (named by
    the teacher, in ``taken``, or recognised as another person at that person's accept threshold),
    when it is the only one to reach ``person``'s review threshold; for a new person (no score yet),
    only if a single face is left. Otherwise the review page asks.
    """
    free = [
        k
        for k, f in enumerate(faces)
        if k not in taken
        and f.embedding
        and not any(s >= accept.get(q, 1.0) for q, s in f.scores.items() if q != person)
    ]
    # the detector keeps weak candidates (down to 0.02) for the recogniser to score; a reader's faces
    # are the sure ones, unless the person is only on a weak one
    sure = [
        k
        for k in free
        if faces[k].det_score >= FACE_AT or faces[k].scores.get(person, 0.0) >= low.get(person, 1.0)
    ]
    free = sure or free
    if person not in low or not any(person in faces[k].scores for k in free):
        return free[0] if len(free) == 1 else None
    likely = [k for k in free if faces[k].scores.get(person, 0.0) >= low[person]]
    if len(likely) == 1:
        return likely[0]
    return free[0] if len(free) == 1 else None
