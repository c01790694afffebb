"""The library index: an SQLite file in the output folder that is both cache and resume journal.

One row per library photo: where it was, its size, mtime and content hash, what the models found
(faces with scores) and which copies we made. A re-run skips every unchanged photo, and a new
threshold re-decides from the stored faces without decoding anything again.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from sorter.records import Face

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    rel TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    model TEXT NOT NULL,
    faces TEXT,          -- JSON list of faces; NULL when the photo could not be read
    error TEXT,
    copies TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS photos_sha ON photos(sha256);
"""


class Index:
    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, timeout=30)
        # WAL + NORMAL: a committed row survives a crash of the process, and writes are cheap.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def lookup(self, rel: str, size: int, mtime_ns: int, model: str) -> dict | None:
        row = self.db.execute(
            "SELECT sha256, faces, error, copies FROM photos WHERE rel=? AND size=? AND mtime_ns=? AND model=?",
            (rel, size, mtime_ns, model),
        ).fetchone()
        if row is None:
            return None
        return {"sha256": row[0], "faces": _faces(row[1]), "error": row[2], "copies": json.loads(row[3])}

    def by_hash(self, sha256: str, model: str) -> list[Face] | None:
        """Faces found earlier in a byte-identical photo (a renamed or moved file)."""
        row = self.db.execute("SELECT faces FROM photos WHERE sha256=? AND model=? AND faces IS NOT NULL",
                              (sha256, model)).fetchone()
        return _faces(row[0]) if row else None

    def copies(self, rel: str) -> list[str]:
        row = self.db.execute("SELECT copies FROM photos WHERE rel=?", (rel,)).fetchone()
        return json.loads(row[0]) if row else []

    def store(self, rel: str, size: int, mtime_ns: int, sha256: str | None, model: str,
              faces: list[Face] | None, error: str | None, copies: list[str]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO photos VALUES (?,?,?,?,?,?,?,?)",
            (rel, size, mtime_ns, sha256, model,
             None if faces is None else json.dumps([asdict(f) for f in faces]), error, json.dumps(copies)),
        )
        self.db.commit()


def _faces(text: str | None) -> list[Face] | None:
    if text is None:
        return None
    return [Face(xyxy=tuple(f["xyxy"]), det_score=f["det_score"], scores=f["scores"], masked=f.get("masked"))
            for f in json.loads(text)]
