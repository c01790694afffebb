"""What the teacher said (issue 13): every review decision and file-manager correction, in the index.

The corrections live in the output folder's index file (its own tables beside ``photos``), each
committed as it is made: a closed browser or a killed server loses nothing. A correction is about a
photo by content hash (so a renamed or moved photo keeps it) and, when the teacher pointed at one,
a face: its index among the photo's stored faces and its box (to find it again should the photo be
analysed anew). Corrections are never deleted: undo marks one undone, ``learn`` marks the round that
used it (``learn --undo`` unmarks it), so the whole history stays readable.

Verdicts: ``is`` (the face, or someone in the photo, is ``person``), ``not`` (is not ``person``),
``stranger`` (a face of no one we sort), ``not_face`` (the detector's mistake), ``skip`` (seen, no
answer: leaves the queue, teaches nothing).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VERDICTS = ("is", "not", "stranger", "not_face", "skip")
PAGE, FILES = "page", "files"

SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,     -- one click (many faces named at once) is one batch: undone together
    sha256 TEXT NOT NULL,
    face INTEGER,               -- index in the photo's stored faces; NULL: the photo as a whole
    box TEXT,                   -- that face's box (JSON), to find it again after a re-analysis
    verdict TEXT NOT NULL,
    person TEXT,
    source TEXT NOT NULL,       -- 'page' or 'files'
    at REAL NOT NULL,
    learnt INTEGER NOT NULL DEFAULT 0,   -- the learn round that used it; 0: not learnt yet
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS corrections_sha ON corrections(sha256);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Correction:
    id: int
    batch: int
    sha256: str
    face: int | None
    box: tuple[float, float, float, float] | None
    verdict: str
    person: str | None
    source: str
    at: float
    learnt: int
    undone: bool


class BadCorrection(ValueError):
    """A verdict or name that cannot be stored (from the page: answered with 400, never stored)."""


def check_name(name: str) -> str:
    """A person's name becomes a folder name: refuse what cannot be one (or would hide or escape)."""
    name = name.strip()
    if not name or len(name) > 100 or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise BadCorrection(f"not a usable name for a person: {name!r}")
    if name in ("uncertain", "manifest.csv") or name.startswith("__"):
        raise BadCorrection(f"{name!r} is reserved")
    return name


class Corrections:
    """The corrections tables of one output folder's index file (its own connection)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def add(
        self,
        items: Iterable[tuple[str, int | None, tuple | None]],
        verdict: str,
        person: str | None = None,
        source: str = PAGE,
    ) -> int:
        """Store one decision about every (sha256, face, box) of ``items`` as one batch; its number."""
        if verdict not in VERDICTS:
            raise BadCorrection(f"unknown verdict {verdict!r} (one of {', '.join(VERDICTS)})")
        person = check_name(person or "") if verdict in ("is", "not") else None
        now = time.time()
        with self.db:  # one transaction: a batch is stored whole or not at all
            batch = self.db.execute("SELECT COALESCE(MAX(batch), 0) + 1 FROM corrections").fetchone()[0]
            self.db.executemany(
                "INSERT INTO corrections (batch, sha256, face, box, verdict, person, source, at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [(batch, sha, face, _box(box), verdict, person, source, now) for sha, face, box in items],
            )
        return int(batch)

    def undo(self, source: str = PAGE) -> list[Correction]:
        """Mark the latest batch from ``source`` that no learn has used undone; what it held."""
        with self.db:
            row = self.db.execute(
                "SELECT MAX(batch) FROM corrections WHERE source=? AND undone=0 AND learnt=0", (source,)
            ).fetchone()
            if row[0] is None:
                return []
            got = self._select("WHERE batch=?", (row[0],))
            self.db.execute("UPDATE corrections SET undone=1 WHERE batch=?", (row[0],))
        return got

    def active(self) -> list[Correction]:
        """Every correction not undone, oldest first (a later one about the same face wins)."""
        return self._select("WHERE undone=0 ORDER BY id", ())

    def pending(self) -> list[Correction]:
        """Corrections no learn has used yet."""
        return self._select("WHERE undone=0 AND learnt=0 ORDER BY id", ())

    def latest(self, sha: str, person: str, source: str) -> str | None:
        """The verdict of the latest photo-level correction from ``source`` about ``person`` in a photo."""
        row = self.db.execute(
            "SELECT verdict FROM corrections WHERE sha256=? AND person=? AND source=? AND undone=0"
            " AND face IS NULL ORDER BY id DESC LIMIT 1",
            (sha, person, source),
        ).fetchone()
        return row[0] if row else None

    def mark_learnt(self, ids: list[int], round_: int) -> None:
        with self.db:
            self.db.executemany("UPDATE corrections SET learnt=? WHERE id=?", [(round_, i) for i in ids])

    def unlearn(self, round_: int) -> int:
        with self.db:
            return self.db.execute("UPDATE corrections SET learnt=0 WHERE learnt=?", (round_,)).rowcount

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, **values: str) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(values.items()))

    def _select(self, where: str, args: tuple) -> list[Correction]:
        rows = self.db.execute(
            "SELECT id, batch, sha256, face, box, verdict, person, source, at, learnt, undone"
            f" FROM corrections {where}",
            args,
        ).fetchall()
        return [
            Correction(
                id=r[0],
                batch=r[1],
                sha256=r[2],
                face=r[3],
                box=None if r[4] is None else tuple(json.loads(r[4])),
                verdict=r[5],
                person=r[6],
                source=r[7],
                at=r[8],
                learnt=r[9],
                undone=bool(r[10]),
            )
            for r in rows
        ]


def _box(box: tuple | None) -> str | None:
    return None if box is None else json.dumps([round(float(v), 1) for v in box])


def by_photo(corrections: Iterable[Correction]) -> dict[str, list[Correction]]:
    out: dict[str, list[Correction]] = {}
    for c in corrections:
        out.setdefault(c.sha256, []).append(c)
    return out
