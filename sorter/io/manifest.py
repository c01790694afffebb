"""``OUT/manifest.csv``: one row per photo, what was found and where it went (written atomically)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
from pathlib import Path

from sorter.io.place import DiskFullError
from sorter.records import Decision, Problem

HEADER = [
    "path",
    "sha256",
    "status",
    "people",
    "accepted",
    "uncertain",
    "copies",
    "faces",
    "reason",
    "faces_detail",
]
# A candidate counts as a face in the manifest at this detector score (ONet's face probability, or YOLO's
# box score), or when someone was recognised in it. The face detector keeps much weaker candidates (down
# to 0.02) because the recogniser scores non-faces as strangers; those are not faces to a reader.
FACE_AT = 0.5


def kept_faces(d: Decision) -> list[int]:
    """Indices of the faces of a photo as a person would count them (see :data:`FACE_AT`)."""
    kept = {k for k, f in enumerate(d.faces) if f.det_score >= FACE_AT}
    named = set(d.accepted) | set(d.uncertain)
    kept |= {k for p, k in d.assigned.items() if p in named}  # the face each named person was found in
    for person in named - set(d.assigned):  # decisions made without an assignment record (or by hand)
        k = max(range(len(d.faces)), key=lambda k: d.faces[k].scores.get(person, 0.0), default=None)
        if k is not None:
            kept.add(k)
    return sorted(kept)


def counted_faces(d: Decision) -> int:
    return len(kept_faces(d))


def faces_detail(d: Decision, people: bool = True) -> list[dict[str, object]]:
    """One object per kept face: its box (full-size displayed px), who (or None) with what score, and
    its mask state, age (years), gender and gender score (and, for a video, ``start_s``/``end_s``).
    ``person`` is set where the face is
    someone's in this photo (sorted or uncertain);
    ``people`` False (sorting by mask state): no one is named, ``score`` is the mask state's."""
    named = set(d.accepted) | set(d.uncertain)
    who = {k: p for p, k in d.assigned.items() if p in named} if people else {}
    out = []
    for k in kept_faces(d):
        f = d.faces[k]
        person = who.get(k)
        score = f.scores.get(person, 0.0) if person else f.best[1]
        detail: dict[str, object] = {
            "box": [round(float(v), 1) for v in f.xyxy],
            "person": person,
            "score": round(float(score), 4),
            "mask": f.mask,
            "mask_score": None if f.mask_score is None else round(float(f.mask_score), 4),
        }
        if f.age is not None:  # the attribute heads' (absent for faces stored by an older photosort)
            detail["age"] = round(float(f.age), 1)
            detail["gender"] = f.gender
            detail["gender_score"] = None if f.gender_score is None else round(float(f.gender_score), 4)
        if f.start_s is not None:  # a video's face: when it is on screen (seconds)
            detail["start_s"], detail["end_s"] = round(f.start_s, 2), round(f.end_s or f.start_s, 2)
        out.append(detail)
    return out


def row(d: Decision, sha: str, copies: list[str], people: bool = True) -> list[str]:
    """``people`` False: the classes are mask states, and ``faces_detail`` names no one."""
    status = "sorted" if d.accepted else ("uncertain" if d.uncertain else "no_person")
    scores = ";".join(f"{p}:{s:.3f}" for p, s in sorted(d.people.items(), key=lambda x: -x[1]))
    return [
        str(d.photo.path),
        sha,
        status,
        scores,
        ";".join(d.accepted),
        ";".join(d.uncertain),
        ";".join(copies),
        str(counted_faces(d)),
        d.reason,
        json.dumps(faces_detail(d, people), separators=(",", ":")),
    ]


def problem_row(problem: Problem) -> list[str]:
    return [str(problem.path), "", "error", "", "", "", "", "", problem.message, "[]"]


def write(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(sorted(rows, key=lambda r: r[0]))
    tmp = path.with_name(f".{path.name}.tmp")
    # surrogateescape: non-UTF-8 file names (bytes from another OS) must not crash the manifest.
    try:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"output disk is full while writing {path}") from None
        raise
