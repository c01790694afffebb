"""What the review page shows (issue 13), built from the index alone: no photo is decoded here.

* doubts: each face whose person fell in the review band (the reason its photo is in uncertain/),
  with the best two names; grouped by the suggested person, most likely first;
* questions: photos the teacher put into a folder where it cannot be told which face is that person;
* accepted: each person's accepted faces, to browse and reject wrong ones;
* new faces: faces of no known person that recur, clustered (scikit-learn's HDBSCAN on the face
  vectors: no distance threshold to choose), so a child who joined mid-year is named once.

Faces already settled in the page (named, stranger, not a face, skipped) leave the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sorter.heads.identity import assign_faces
from sorter.io.corrections import Correction, by_photo
from sorter.io.index import Stored, unpack
from sorter.io.manifest import FACE_AT
from sorter.pipeline.verdicts import apply, locate, which_face

MIN_CLUSTER = 3  # a new face must recur this often to be offered as a possible new person


@dataclass
class Item:
    """One face on the page. ``id`` is opaque to the browser: it maps back to a row, never a path."""

    id: str
    sha256: str
    rel: str
    face: int
    box: tuple[float, float, float, float]
    suggest: list[tuple[str, float]]  # the best two names and scores
    group: str  # the suggested person (or the question, or the cluster)
    reason: str = ""
    at_s: float | None = None  # a video's face: the time of its frame

    def public(self) -> dict:
        return {
            "id": self.id,
            "suggest": [[n, round(s, 3)] for n, s in self.suggest],
            "group": self.group,
            "reason": self.reason,
        }


@dataclass
class Queue:
    people: list[str]
    doubts: list[Item] = field(default_factory=list)
    questions: list[Item] = field(default_factory=list)
    accepted: dict[str, list[Item]] = field(default_factory=dict)
    new: list[list[Item]] = field(default_factory=list)
    items: dict[str, Item] = field(default_factory=dict)  # every face above, by id

    def add(self, item: Item) -> Item:
        self.items[item.id] = item
        return item


def face_id(sha: str, k: int) -> str:
    return f"{sha[:20]}-{k}"


def _item(row: Stored, k: int, group: str, reason: str = "") -> Item:
    f = row.faces[k]
    top = sorted(f.scores.items(), key=lambda kv: -kv[1])[:2]
    if f.start_s is not None:
        reason = f"{reason} (video, {f.start_s:.0f}-{f.end_s:.0f} s)".strip()
    return Item(face_id(row.sha256, k), row.sha256, row.rel, k, tuple(f.xyxy), top, group, reason, f.at_s)


def build(
    rows: list[Stored],
    active: list[Correction],
    people: list[str],
    accept: dict[str, float],
    low: dict[str, float],
) -> Queue:
    q = Queue(people=list(people))
    said = by_photo(active)
    loose: list[Item] = []
    for row in rows:
        corr = said.get(row.sha256, [])
        faces, forced = apply(row.faces, corr)
        settled = {k for c in corr if c.face is not None and (k := locate(row.faces, c)) is not None}
        matched = assign_faces(faces)
        named = set()
        for person, (k, s) in matched.items():
            if k in settled or person in forced:
                continue
            if s >= accept.get(person, 1.0):
                q.accepted.setdefault(person, []).append(q.add(_item(row, k, person)))
                named.add(k)
            elif s >= low.get(person, 1.0):
                why = f"{person} {s:.2f}, accepted at {accept.get(person, 1.0):.2f}"
                q.doubts.append(q.add(_item(row, k, person, why)))
                named.add(k)
        for c in corr:
            if _asks(row, c, corr, accept, low, settled):
                for k, f in enumerate(row.faces):
                    if k not in settled and f.det_score >= FACE_AT:
                        why = f"you put this photo into {c.person}/: which face is {c.person}?"
                        q.questions.append(q.add(_item(row, k, c.person or "", why)))
        for k, f in enumerate(faces):
            if k in settled or k in named or not f.embedding or f.det_score < FACE_AT:
                continue
            if all(s < low.get(p, 1.0) for p, s in f.scores.items()):
                loose.append(_item(row, k, ""))
    for items in q.accepted.values():
        items.sort(key=lambda it: it.suggest[0][1] if it.suggest else 0.0)  # the least sure first
    q.doubts.sort(key=lambda it: -(it.suggest[0][1] if it.suggest else 0.0))
    sizes: dict[str, int] = {}
    for it in q.doubts:
        sizes[it.group] = sizes.get(it.group, 0) + 1
    q.doubts.sort(key=lambda it: -sizes[it.group])  # stable: within a group, most likely first
    q.new = [[q.add(it) for it in c] for c in cluster(loose, {r.sha256: r for r in rows})]
    return q


def _asks(row: Stored, c: Correction, corr: list[Correction], accept, low, settled: set[int]) -> bool:
    """Is ``c`` a photo-level "P is in it" that learn cannot place on a face (and no face is named P)?"""
    if c.face is not None or c.verdict != "is" or not c.person or c.learnt:
        return False
    if any(d.face is not None and d.person == c.person for d in corr):
        return False
    return which_face(row.faces, c.person, accept, low, settled) is None


def cluster(items: list[Item], rows: dict[str, Stored]) -> list[list[Item]]:
    """Faces of the same unknown person, by HDBSCAN on unit face vectors; largest clusters first."""
    if len(items) < MIN_CLUSTER:
        return []
    from sklearn.cluster import HDBSCAN

    x = np.stack([unpack(rows[it.sha256].faces[it.face].embedding) for it in items]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    labels = HDBSCAN(min_cluster_size=MIN_CLUSTER, copy=True).fit_predict(x)
    groups: dict[int, list[Item]] = {}
    for it, lab in zip(items, labels, strict=True):
        members = groups.setdefault(int(lab), []) if lab >= 0 else None
        # two faces of one photo are never the same person: a cluster keeps one face a photo
        if members is not None and all(m.sha256 != it.sha256 for m in members):
            members.append(it)
    out = []
    for n, members in enumerate(sorted(groups.values(), key=len, reverse=True)):
        photos = {m.sha256 for m in members}
        if len(photos) < MIN_CLUSTER:  # one person's faces recur across photos, not within one
            continue
        for m in members:
            m.group = f"new-{n + 1}"
            m.reason = f"new face {n + 1}: seen in {len(photos)} photos"
        out.append(members)
    return out
