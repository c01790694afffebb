"""The library index: an SQLite file in the output folder that is both cache and resume journal.

One row per library photo: where it was, its size, mtime and content hash, what the models found
(faces with scores) and which copies we made. A re-run skips every unchanged photo, and a new
threshold re-decides from the stored faces without decoding anything again.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sorter.io.place import DiskFullError
from sorter.records import Face

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    rel TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    model TEXT NOT NULL,
    faces TEXT,          -- JSON list of faces; NULL when the photo could not be read
    error TEXT,
    copies TEXT NOT NULL DEFAULT '[]',
    embed_key TEXT,     -- what made the stored face vectors (faces re-scorable by a new recogniser)
    doubted TEXT        -- JSON list of the people whose doubt sent the photo to uncertain/ (issue 13)
);
CREATE INDEX IF NOT EXISTS photos_sha ON photos(sha256);
"""


class Index:
    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, timeout=30)
        try:
            with self._disk("opening"):
                # WAL + NORMAL: a committed row survives a crash of the process, and writes are cheap.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(photos)")}
                for col in ("embed_key", "doubted"):  # an index written by an earlier photosort
                    if col not in cols:
                        self.db.execute(f"ALTER TABLE photos ADD COLUMN {col} TEXT")
                        self.db.commit()
                # Version 2: each stored face may carry "mask" and "mask_score" (the mask head's). Rows of
                # version 1 keep their faces; they read as mask unknown (None) until re-analysed.
                if self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    self.db.commit()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # every row was committed; a failed checkpoint loses nothing
            self.db.close()

    @contextlib.contextmanager
    def _disk(self, doing: str) -> Iterator[None]:
        """SQLite's 'database or disk is full' (or the I/O error a full tmpfs gives) as DiskFullError."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _out_of_space(exc, self.path):
                with contextlib.suppress(sqlite3.Error):
                    self.db.rollback()
                raise DiskFullError(
                    errno.ENOSPC, f"output disk is full while {doing} the index {self.path}"
                ) from None
            raise

    def lookup(self, rel: str, size: int, mtime_ns: int, model: str) -> dict | None:
        with self._disk("reading"):
            return self._lookup(rel, size, mtime_ns, model)

    def _lookup(self, rel: str, size: int, mtime_ns: int, model: str) -> dict | None:
        row = self.db.execute(
            "SELECT sha256, faces, error, copies FROM photos"
            " WHERE rel=? AND size=? AND mtime_ns=? AND model=?",
            (_key(rel), size, mtime_ns, model),
        ).fetchone()
        if row is None:
            return None
        return {"sha256": row[0], "faces": _faces(row[1]), "error": row[2], "copies": json.loads(row[3])}

    def lookup_embedded(self, rel: str, size: int, mtime_ns: int, embed_key: str) -> dict | None:
        """An unchanged photo analysed by another model whose face vectors are still valid."""
        with self._disk("reading"):
            row = self.db.execute(
                "SELECT sha256, faces, copies FROM photos WHERE rel=? AND size=? AND mtime_ns=?"
                " AND embed_key=? AND faces IS NOT NULL",
                (_key(rel), size, mtime_ns, embed_key),
            ).fetchone()
        if row is None:
            return None
        return {"sha256": row[0], "faces": _faces(row[1]), "copies": json.loads(row[2])}

    def by_hash(self, sha256: str, model: str) -> list[Face] | None:
        """Faces found earlier in a byte-identical photo (a renamed or moved file)."""
        with self._disk("reading"):
            row = self.db.execute(
                "SELECT faces FROM photos WHERE sha256=? AND model=? AND faces IS NOT NULL", (sha256, model)
            ).fetchone()
        return _faces(row[0]) if row else None

    def known_hashes(self, model: str) -> frozenset[str]:
        """Content hashes of every readable photo analysed with ``model`` (to spot moved photos)."""
        with self._disk("reading"):
            rows = self.db.execute(
                "SELECT DISTINCT sha256 FROM photos WHERE model=? AND faces IS NOT NULL", (model,)
            ).fetchall()
        return frozenset(r[0] for r in rows if r[0])

    def copies(self, rel: str) -> list[str]:
        with self._disk("reading"):
            row = self.db.execute("SELECT copies FROM photos WHERE rel=?", (_key(rel),)).fetchone()
        return json.loads(row[0]) if row else []

    def store(
        self,
        rel: str,
        size: int,
        mtime_ns: int,
        sha256: str | None,
        model: str,
        faces: list[Face] | None,
        error: str | None,
        copies: list[str],
        embed_key: str | None = None,
        doubted: list[str] | None = None,
    ) -> None:
        with self._disk("updating"):
            self.db.execute(
                "INSERT OR REPLACE INTO photos"
                " (rel, size, mtime_ns, sha256, model, faces, error, copies, embed_key, doubted)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    _key(rel),
                    size,
                    mtime_ns,
                    sha256,
                    model,
                    None if faces is None else json.dumps([asdict(f) for f in faces]),
                    _text(error),
                    json.dumps(copies),
                    embed_key,
                    json.dumps(doubted or []),
                ),
            )
            self.db.commit()

    def rows(self, faces: bool = True) -> Iterator[Stored]:
        """Every readable photo the index knows, as last sorted (for review, learn and file changes).

        ``faces`` False: without them (``Stored.faces`` empty), for what needs only the copy journal:
        a face list with its vectors is ~1.4 kB a face to read and parse, at the start of every classify.
        """
        column = "faces" if faces else "NULL"
        with self._disk("reading"):
            rows = self.db.execute(
                f"SELECT rel, sha256, {column}, copies, doubted FROM photos WHERE faces IS NOT NULL"
            ).fetchall()
        for rel, sha, found, copies, doubted in rows:
            rel = rel.decode("utf-8", "surrogateescape") if isinstance(rel, bytes) else rel
            yield Stored(rel, sha or "", _faces(found) or [], json.loads(copies), json.loads(doubted or "[]"))


@dataclass
class Stored:
    """One photo's row: where it is in the library, its content hash, faces, copies, doubted people."""

    rel: str
    sha256: str
    faces: list[Face]
    copies: list[str]
    doubted: list[str]


def _out_of_space(exc: sqlite3.OperationalError, path: Path) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return True
    if not (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR or "disk I/O error" in str(exc)):
        return False
    # A full tmpfs makes growing the WAL's shared-memory file fail with a plain I/O error.
    try:
        st = os.statvfs(Path(path).parent)
    except (OSError, ValueError):
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def _key(rel: str) -> str | bytes:
    """The primary key of a library path.

    File names that are not valid UTF-8 (bytes from another OS; Python keeps them as lone surrogates)
    cannot be SQLite text, so those rows are keyed by the raw bytes instead. A name is always stored
    the same way, so lookups find it again; JSON (copies) escapes surrogates by itself.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return rel.encode("utf-8", "surrogateescape")
    return rel


def _text(value: str | None) -> str | None:
    """Free text (an error message that may quote a non-UTF-8 file name) made storable."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _faces(text: str | None) -> list[Face] | None:
    if text is None:
        return None
    return [
        Face(
            xyxy=tuple(f["xyxy"]),
            det_score=f["det_score"],
            scores=f["scores"],
            masked=f.get("masked"),
            det_scores=f.get("det_scores", {}),
            embedding=f.get("embedding", ""),
            # rows written before the mask head have no mask state: unknown, not "unmasked"
            mask=f.get("mask"),
            mask_score=f.get("mask_score"),
            start_s=f.get("start_s"),  # a video's face (absent for photos and older rows)
            end_s=f.get("end_s"),
            at_s=f.get("at_s"),
            age=f.get("age"),  # rows written before the attribute heads: unknown
            gender=f.get("gender"),
            gender_score=f.get("gender_score"),
            label_box=tuple(f["label_box"]) if f.get("label_box") else None,  # mask heads with a box
        )
        for f in json.loads(text)
    ]


def pack(x: np.ndarray) -> str:
    """A face vector as text for the index (base64 of little-endian float32: exact, 1.4 kB a face)."""
    return base64.b64encode(np.asarray(x, "<f4").tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4")
