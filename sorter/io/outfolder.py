"""Corrections made with the file manager (issue 13): the output folder compared with its journal.

The index records every copy photosort made (``copies``) and whom a photo in ``uncertain/`` was in
doubt about (``doubted``). What the teacher did since shows as a difference:

* a copy of a library photo in ``OUT/<name>/`` that photosort did not put there (moved or copied
  from ``uncertain/``, or from anywhere): <name> is in that photo; a new folder is a new person;
* a copy gone from ``OUT/uncertain/`` and not put into a doubted person's folder: not that person;
* a copy gone from ``OUT/<name>/`` (and not merely renamed there): <name> is not in that photo.

Files are matched to photos by content hash, so a renamed copy is still its photo; only files the
journal does not know are hashed. Files that are no library photo are left alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from sorter.io.corrections import FILES, BadCorrection, Corrections, check_name
from sorter.io.decode import sha256_file
from sorter.io.index import Stored

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class FileChange:
    sha256: str
    verdict: str  # "is" or "not"
    person: str
    why: str  # what the teacher did, for the report: "put IMG_1.jpg into alice/"


def file_changes(out: Path, rows: list[Stored]) -> list[FileChange]:
    """What the teacher changed in ``out`` since photosort last wrote it, as corrections (``rows``
    need only their copies and doubted people: ``Index.rows(faces=False)``)."""
    tracked = {c: r.sha256 for r in rows for c in r.copies}
    by_sha = {r.sha256: r for r in rows}
    placed: dict[str, set[str]] = {}  # folder -> photos (content hashes) in it now
    present: set[str] = set()
    names: dict[tuple[str, str], str] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(folder.rglob("*")):
            if f.name.startswith(".") or not f.is_file():
                continue
            rel = f.relative_to(out).as_posix()
            sha = tracked.get(rel)
            if sha is not None:
                present.add(rel)
            else:
                with contextlib.suppress(OSError):  # a file that vanished or cannot be read: not ours
                    sha = sha256_file(f)
            if sha is None or sha not in by_sha:
                continue
            placed.setdefault(folder.name, set()).add(sha)
            names.setdefault((folder.name, sha), f.name)
    changes = []
    for folder, shas in sorted(placed.items()):
        if folder == UNCERTAIN:
            continue
        for sha in sorted(shas):
            if folder not in {Path(c).parts[0] for c in by_sha[sha].copies}:
                changes.append(FileChange(sha, "is", folder, f"put {names[folder, sha]} into {folder}/"))
    for rel, sha in sorted(tracked.items()):
        folder = Path(rel).parts[0]
        if rel in present or sha in placed.get(folder, ()):  # still there, perhaps renamed
            continue
        name = Path(rel).name
        if folder == UNCERTAIN:
            for person in by_sha[sha].doubted:
                if sha not in placed.get(person, ()):
                    changes.append(FileChange(sha, "not", person, f"removed {name} from uncertain/"))
        else:
            changes.append(FileChange(sha, "not", folder, f"removed {name} from {folder}/"))
    return changes


def record_file_changes(out: Path, rows: list[Stored], corrections: Corrections) -> list[FileChange]:
    """Store the file changes not stored yet (the latest word per photo and person counts); the new ones."""
    new = []
    for ch in file_changes(out, rows):
        try:
            person = check_name(ch.person)
        except BadCorrection:  # a folder whose name cannot be a person ("__x", ".hidden"): not a person
            continue
        if corrections.latest(ch.sha256, person, FILES) != ch.verdict:
            corrections.add([(ch.sha256, None, None)], ch.verdict, person, FILES)
            new.append(ch)
    return new
