"""``OUT/manifest.csv``: one row per photo, what was found and where it went (written atomically)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
from pathlib import Path

from sorter.io.place import DiskFullError
from sorter.records import Decision, Problem

HEADER = ["path", "sha256", "status", "people", "accepted", "uncertain", "copies", "faces", "reason"]
# A candidate counts as a face in the manifest at this detector score (ONet's face probability, or YOLO's
# box score), or when someone was recognised in it. The face detector keeps much weaker candidates (down
# to 0.02) because the recogniser scores non-faces as strangers; those are not faces to a reader.
FACE_AT = 0.5


def counted_faces(d: Decision) -> int:
    """The faces of a photo as a person would count them (see :data:`FACE_AT`)."""
    kept = {k for k, f in enumerate(d.faces) if f.det_score >= FACE_AT}
    for person in set(d.accepted) | set(d.uncertain):  # the face each named person was found in
        kept.add(max(range(len(d.faces)), key=lambda k: d.faces[k].scores.get(person, 0.0)))
    return len(kept)


def row(d: Decision, sha: str, copies: list[str]) -> list[str]:
    status = "sorted" if d.accepted else ("uncertain" if d.uncertain else "no_person")
    people = ";".join(f"{p}:{s:.3f}" for p, s in sorted(d.people.items(), key=lambda x: -x[1]))
    return [
        str(d.photo.path),
        sha,
        status,
        people,
        ";".join(d.accepted),
        ";".join(d.uncertain),
        ";".join(copies),
        str(counted_faces(d)),
        d.reason,
    ]


def problem_row(problem: Problem) -> list[str]:
    return [str(problem.path), "", "error", "", "", "", "", "", problem.message]


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
