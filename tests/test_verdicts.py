"""The teacher's word (issue 13) without any model: corrections in real SQLite, file changes on real
folders, how verdicts change a photo's decision, and when the page must ask which face."""

from __future__ import annotations

import shutil

import pytest

from sorter.io.corrections import FILES, PAGE, BadCorrection, Corrections
from sorter.io.index import Index, pack
from sorter.io.outfolder import file_changes, record_file_changes
from sorter.pipeline.decide import decide
from sorter.pipeline.verdicts import apply, which_face
from sorter.records import Face, Photo
from sorter.review.queue import build

ACCEPT = {"ava": 0.6, "ben": 0.6}
LOW = {"ava": 0.3, "ben": 0.3}


def face(x: float, ava: float, ben: float, det: float = 0.9) -> Face:
    import numpy as np

    vec = np.random.default_rng(int(x)).normal(size=8).astype("float32")
    return Face((x, 0, x + 50, 50), det, {"ava": ava, "ben": ben}, embedding=pack(vec))


def photo(tmp_path) -> Photo:
    return Photo(path=tmp_path / "p.jpg", rel=tmp_path / "p.jpg", size=1, mtime_ns=0)


def test_corrections_are_stored_at_once_undone_by_batch_and_checked(tmp_path):
    db = tmp_path / "index.sqlite"
    c = Corrections(db)
    b1 = c.add([("s1", 0, (0, 0, 5, 5)), ("s2", 1, None)], "is", "ava")
    b2 = c.add([("s3", 0, None)], "stranger")
    other = Corrections(db)  # another connection (a restarted server) sees both at once
    assert [x.batch for x in other.pending()] == [b1, b1, b2]
    assert [x.verdict for x in c.undo(PAGE)] == ["stranger"]
    assert len(other.active()) == 2 and all(x.batch == b1 for x in other.active())
    for bad in ("", "../x", ".hidden", "a/b", "uncertain", "__stranger__"):
        with pytest.raises(BadCorrection):
            c.add([("s1", 0, None)], "is", bad)
    with pytest.raises(BadCorrection):
        c.add([("s1", 0, None)], "maybe")
    c.mark_learnt([x.id for x in c.pending()], 1)
    assert c.pending() == [] and c.undo(PAGE) == []  # learnt corrections are not undone by the page
    assert c.unlearn(1) == 2 and len(c.pending()) == 2


def test_verdicts_override_the_models_decision(tmp_path):
    c = Corrections(tmp_path / "i.sqlite")
    faces = [face(0, ava=0.45, ben=0.1), face(100, ava=0.2, ben=0.9)]
    d = decide(photo(tmp_path), faces, ACCEPT, LOW)
    assert d.accepted == ["ben"] and d.uncertain == ["ava"]
    c.add([("s", 0, faces[0].xyxy)], "is", "ava")
    seen, forced = apply(faces, c.active())
    d = decide(photo(tmp_path), seen, ACCEPT, LOW, forced=forced)
    assert d.accepted == ["ava", "ben"] and not d.uncertain
    c.add([("s", 1, faces[1].xyxy)], "stranger")
    c.add([("s", None, None)], "not", "ava", FILES)  # later: the teacher removed it from ava/
    seen, forced = apply(faces, c.active())
    d = decide(photo(tmp_path), seen, ACCEPT, LOW, forced=forced)
    assert d.accepted == [] and d.uncertain == []
    assert faces[1].scores["ben"] == 0.9, "the stored faces are never changed"


def test_which_face_asks_when_it_cannot_tell():
    two = [face(0, ava=0.4, ben=0.0), face(100, ava=0.35, ben=0.0)]
    assert which_face(two, "ava", ACCEPT, LOW, set()) is None  # both in ava's review band
    one = [face(0, ava=0.4, ben=0.0), face(100, ava=0.05, ben=0.0)]
    assert which_face(one, "ava", ACCEPT, LOW, set()) == 0
    assert which_face(one, "ava", ACCEPT, LOW, {0}) == 1  # face 0 already named by the teacher
    kid = [face(0, ava=0.9, ben=0.0), face(100, ava=0.1, ben=0.1)]
    assert which_face(kid, "zoe", ACCEPT, LOW, set()) == 1  # a new child: the one face not ava
    assert which_face(two, "zoe", ACCEPT, LOW, set()) is None


def test_queue_asks_which_face_and_groups_doubts(tmp_path):
    db = tmp_path / "i.sqlite"
    index = Index(db)
    index.store(
        "a.jpg", 1, 0, "sha-a", "m", [face(0, 0.4, 0.0), face(100, 0.35, 0.0)], None, ["uncertain/a.jpg"]
    )
    index.store("b.jpg", 1, 0, "sha-b", "m", [face(0, 0.9, 0.1)], None, ["ava/b.jpg"])
    rows = list(index.rows())
    index.close()
    c = Corrections(db)
    q = build(rows, c.active(), ["ava", "ben"], ACCEPT, LOW)
    assert [it.group for it in q.doubts] == ["ava"] and [it.sha256 for it in q.accepted["ava"]] == ["sha-b"]
    c.add([("sha-a", None, None)], "is", "ava", FILES)  # dragged into ava/: which face?
    q = build(rows, c.active(), ["ava", "ben"], ACCEPT, LOW)
    assert {(it.sha256, it.face) for it in q.questions} == {("sha-a", 0), ("sha-a", 1)}
    assert not q.doubts  # the photo is ava's now; the question replaces the doubt
    c.add([("sha-a", 1, rows[0].faces[1].xyxy)], "is", "ava")
    q = build(rows, c.active(), ["ava", "ben"], ACCEPT, LOW)
    assert not q.questions


def test_file_manager_changes_read_as_corrections(tmp_path):
    out = tmp_path / "out"
    for rel in ("uncertain/u.jpg", "ava/a.jpg", "ava/k.jpg"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(rel.encode())
    from sorter.io.decode import sha256_file

    sha = {rel: sha256_file(out / rel) for rel in ("uncertain/u.jpg", "ava/a.jpg", "ava/k.jpg")}
    index = Index(tmp_path / "i.sqlite")
    index.store(
        "u.jpg", 1, 0, sha["uncertain/u.jpg"], "m", [], None, ["uncertain/u.jpg"], doubted=["ben", "ava"]
    )
    index.store("a.jpg", 1, 0, sha["ava/a.jpg"], "m", [], None, ["ava/a.jpg"])
    index.store("k.jpg", 1, 0, sha["ava/k.jpg"], "m", [], None, ["ava/k.jpg"])
    rows = list(index.rows())
    index.close()
    assert file_changes(out, rows) == []
    (out / "ben").mkdir()
    shutil.move(out / "uncertain/u.jpg", out / "ben/renamed.jpg")  # moved into ben/, renamed
    (out / "ava/a.jpg").unlink()  # not ava
    (out / "ava/k.jpg").rename(out / "ava/kept.jpg")  # only renamed: no correction
    (out / "Zoe").mkdir()
    shutil.copy(out / "ava/kept.jpg", out / "Zoe/k.jpg")  # a new child
    (out / "ava/.DS_Store").write_bytes(b"x")  # hidden files and foreign files are no corrections
    (out / "ava/notes.txt").write_text("hello")
    got = {(ch.sha256, ch.verdict, ch.person) for ch in file_changes(out, rows)}
    assert got == {
        (sha["uncertain/u.jpg"], "is", "ben"),
        (sha["uncertain/u.jpg"], "not", "ava"),  # left uncertain/ without going into ava/
        (sha["ava/a.jpg"], "not", "ava"),
        (sha["ava/k.jpg"], "is", "Zoe"),
    }
    c = Corrections(tmp_path / "i.sqlite")
    assert len(record_file_changes(out, rows, c)) == 4
    assert record_file_changes(out, rows, c) == []  # noted once
    shutil.copy(out / "ben/renamed.jpg", out / "ava/back.jpg")  # the teacher changed their mind
    assert [(ch.verdict, ch.person) for ch in record_file_changes(out, rows, c)] == [("is", "ava")]
