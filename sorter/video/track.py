"""Faces followed across the frames of a video, and who each followed face is, voted over the track.

:class:`FaceTracks` keeps one ByteTrack tracker (the ``trackers`` package: Kalman-predicted boxes
matched to detections by IoU, low-confidence detections used to keep tracks alive). It is given the
faces of the frames where faces were looked for, with their time in seconds, and says which track
each face belongs to. Frames in between need no call: the tracker is timestamped, so a longer gap
is one longer prediction step.

Identity is voted per track, not decided per frame: a track is embedded on its first few matched
detections, then about once a second, and again whenever its face grew to 1.5x the largest face
embedded so far (a closer, sharper face), never on every frame. Each embedding gives a probability
per person (or per mask state); the track's vote is their mean, and its name is the vote's winner
when the mean reaches that person's accept threshold (``Bundle.thresholds()``, or the mask sorter's),
else ``stranger``. One blurred or turned-away frame therefore cannot flip a name, and the name of a
face that moves stays the same. A track is looked at again as soon as it is matched after going
unseen (``gap_s``); when two answers in a row, after its first few, confidently name someone else
than its vote, the tracker has followed a box onto another face (one child left, another came to
the same place; two crossed; a mask was taken off, by mask state), and the track is split there.

:meth:`FaceTracks.appearances` turns tracks into rows ``person, start_s, end_s, score``: a person is
on at most one face at a time (the surer track keeps the name, the other falls back to its runner-up
or to stranger, as photos are assigned jointly), and two tracks of one person less than
``merge_gap_s`` apart are one appearance. Tracks never embedded are left out, and so are those that
name nobody and that the mask head calls no face (a hand, a sleeve); a named track stays whatever
the mask head says (as in classify, the recogniser's answer stands).

:class:`CutDetector` finds hard cuts (a new scene in one frame): the tracker is restarted there, so
a face in a new shot is never taken for the face that stood in the same place in the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sorter.records import Face

STRANGER = "stranger"
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Appearance:
    """One person (or mask state, or stranger) seen from ``start_s`` to ``end_s`` seconds."""

    person: str
    start_s: float
    end_s: float
    score: float  # the track's mean probability of that person over its embeddings
    track_id: int


@dataclass
class Sample:
    """What one embedding of a track's face said."""

    t: float
    scores: dict[str, float]
    mask: str | None = None
    mask_score: float | None = None
    face_p: float = 1.0  # probability that the box is a face at all (the mask head's 1 - no_face)
    area: float = 0.0
    after: float | None = None  # when the track was matched before this face (None: at its start)


@dataclass
class Track:
    """A face followed over time. Times in seconds from the start of the source."""

    track_id: int
    first_s: float
    last_s: float  # the last detection it was matched to
    first_frame: int
    last_frame: int
    box: Box  # at ``last_s``
    prev_s: float | None = None  # the match before ``last_s``
    velocity: Box = (0.0, 0.0, 0.0, 0.0)  # px per second of each corner
    hits: int = 1
    samples: list[Sample] = field(default_factory=list)
    history: list[tuple[float, str]] = field(default_factory=list)  # (t, running name) at each change
    gap: tuple[float, float] | None = None  # the last stretch it went unseen (from, to), if any
    doubt: int | None = None  # index of the first answer since which the embeddings name someone else

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def mean_scores(self) -> dict[str, float]:
        """Each class's probability averaged over the track's embeddings (0 where one lacked it)."""
        if not self.samples:
            return {}
        names = {n for s in self.samples for n in s.scores}
        return {n: sum(s.scores.get(n, 0.0) for s in self.samples) / len(self.samples) for n in names}

    def face_p(self) -> float:
        return float(np.mean([s.face_p for s in self.samples])) if self.samples else 1.0

    def vote(self, accept: dict[str, float], stranger: str = STRANGER) -> tuple[str | None, float]:
        """(name, its mean probability): the winner when it reaches its threshold, else ``stranger``
        with the winner's mean; (None, 0.0) before the first embedding."""
        mean = self.mean_scores()
        if not mean:
            return None, 0.0
        best = max(sorted(mean), key=mean.__getitem__)
        return (best if mean[best] >= accept.get(best, 1.0) else stranger), mean[best]

    def mask_state(self, last: int = 3) -> tuple[str | None, float]:
        """The mask state of the last ``last`` embeddings (the surest summed), and its mean probability:
        recent, because a mask is put on and taken off while the face stays the same."""
        recent = [s for s in self.samples[-last:] if s.mask]
        if not recent:
            return None, 0.0
        total: dict[str, float] = {}
        for s in recent:
            total[str(s.mask)] = total.get(str(s.mask), 0.0) + float(s.mask_score or 0.0)
        state = max(sorted(total), key=total.__getitem__)
        return state, total[state] / sum(1 for s in recent if s.mask == state)

    def box_at(self, t: float, horizon: float = 0.5) -> Box:
        """The box predicted at time ``t`` from the last matched one and its velocity (at most
        ``horizon`` seconds ahead: a lost face is not flown off the frame)."""
        dt = min(max(t - self.last_s, 0.0), horizon)
        x0, y0, x1, y1 = (b + v * dt for b, v in zip(self.box, self.velocity, strict=True))
        return (x0, y0, x1, y1)


class FaceTracks:
    """Tracks of faces over a video and each track's voted identity (see the module docstring).

    ``accept``: class -> accept threshold for the vote's mean. Face detector scores (``Face.det_score``)
    at ``activate_at`` or more start tracks and are matched first; lower ones only continue tracks.
    ``exclusive``: a class is on one face at a time (people); False: on any number (mask states), and
    tracks are never merged into one appearance.
    """

    def __init__(
        self,
        accept: dict[str, float],
        *,
        stranger: str = STRANGER,
        fps: float = 30.0,
        lost_s: float = 1.0,
        activate_at: float = 0.5,
        first_samples: int = 3,
        sample_every_s: float = 1.0,
        grow: float = 1.5,
        min_face_p: float = 0.5,
        merge_gap_s: float = 1.0,
        exclusive: bool = True,
        gap_s: float = 0.3,
    ) -> None:
        self.accept = dict(accept)
        self.stranger = stranger
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.lost_s = lost_s
        self.activate_at = activate_at
        self.first_samples = first_samples
        self.sample_every_s = sample_every_s
        self.grow = grow
        self.min_face_p = min_face_p
        self.merge_gap_s = merge_gap_s
        self.exclusive = exclusive
        self.gap_s = gap_s
        self.tracks: dict[int, Track] = {}
        self._keys: dict[tuple[int, int], int] = {}  # (tracker epoch, ByteTrack id) -> track id
        self._epoch = 0  # the tracker restarts after a cut
        self._prev: tuple[int, float] | None = None  # (frame, t) of the previous update
        self._tracker = self._new_tracker()

    def _new_tracker(self):
        from trackers import ByteTrackTracker

        return ByteTrackTracker(
            lost_track_buffer=max(1, round(self.lost_s * 30)),  # in 30-fps frames, as ByteTrack counts
            frame_rate=self.fps,
            track_activation_threshold=self.activate_at,
            high_conf_det_threshold=self.activate_at,
            minimum_consecutive_frames=2,
            minimum_iou_threshold=0.1,
        )

    def cut(self) -> None:
        """A new shot: every track ends here, and faces after it start new ones."""
        self._epoch += 1
        self._tracker = self._new_tracker()
        self._prev = None

    def update(self, frame_index: int, t_seconds: float, faces: Sequence[Face]) -> list[int | None]:
        """The faces found in one frame: the track id of each (None: not on a confirmed track yet).

        A face with ``scores`` (already embedded and scored) is also a vote for its track. A track is
        confirmed on its second detection in a row, and starts at the first.
        """
        import supervision as sv

        if self._prev is not None and t_seconds <= self._prev[1]:
            t_seconds = self._prev[1] + 1e-6  # ByteTrack skips an update whose time does not advance
        if faces:
            det = sv.Detections(
                xyxy=np.array([f.xyxy for f in faces], np.float32).reshape(-1, 4),
                confidence=np.array([f.det_score for f in faces], np.float32),
                data={"face": np.arange(len(faces))},
            )
        else:
            det = sv.Detections.empty()
        out = self._tracker.update(det, timestamp=t_seconds)
        ids: list[int | None] = [None] * len(faces)
        prev = self._prev or (frame_index, t_seconds)
        if len(out) and "face" in out.data:
            for k, tid in zip(out.data["face"], out.tracker_id, strict=True):
                if tid < 0:
                    continue
                face = faces[int(k)]
                key = self._matched((self._epoch, int(tid)), frame_index, t_seconds, face, prev)
                if face.scores:
                    key = self.add_sample(key, face.scores, face.mask, face.mask_score, t=t_seconds)
                ids[int(k)] = key
        self._prev = (frame_index, t_seconds)
        return ids

    def _matched(
        self, raw: tuple[int, int], frame: int, t: float, face: Face, prev: tuple[int, float]
    ) -> int:
        box = tuple(float(v) for v in face.xyxy)
        key = self._keys.get(raw)
        if key is None:
            key = self._keys[raw] = len(self.tracks)
            self.tracks[key] = Track(key, prev[1], t, prev[0], frame, box)  # type: ignore[arg-type]
            return key
        track = self.tracks[key]
        dt = t - track.last_s
        if dt >= self.gap_s:
            track.gap = (track.last_s, t)  # unseen for a while: maybe someone else now; look again
        if dt > 0:
            v = [(b - a) / dt for a, b in zip(track.box, box, strict=True)]
            # smoothed: a detector's box jitters by a pixel or two between frames
            track.velocity = tuple(0.5 * p + 0.5 * q for p, q in zip(track.velocity, v, strict=True))
        track.prev_s = track.last_s
        track.box, track.last_s, track.last_frame = box, t, frame  # type: ignore[assignment]
        track.hits += 1
        return key

    def add_sample(
        self,
        track_id: int,
        scores: dict[str, float],
        mask: str | None = None,
        mask_score: float | None = None,
        face_p: float = 1.0,
        t: float | None = None,
    ) -> int:
        """One embedding's answer for a track's current face: a vote. Returns the track's id, which
        is a new one when this answer and the one before it both confidently named someone else than
        the track's vote: the tracker followed a box onto another face, and the track is split there."""
        track = self.tracks[track_id]
        t = track.last_s if t is None else t
        after = track.prev_s if abs(t - track.last_s) < 1e-9 else track.last_s
        sample = Sample(t, dict(scores), mask, mask_score, face_p, track.area, after)
        best = max(sorted(scores), key=scores.__getitem__) if scores else None
        settled = Track(0, 0, 0, 0, 0, track.box, samples=track.samples[: track.doubt])
        name, _ = settled.vote(self.accept, self.stranger)
        sure = best is not None and scores[best] >= self.accept.get(best, 1.0)
        track.samples.append(sample)
        # the settled answers must be several (the first few answers of a face vote together)
        if name is not None and sure and best != name and len(settled.samples) >= self.first_samples:
            if track.doubt is not None:
                track_id = self._split(track)
                track = self.tracks[track_id]
            else:
                track.doubt = len(track.samples) - 1
        else:
            track.doubt = None
        name, _ = track.vote(self.accept, self.stranger)
        if name is not None and (not track.history or track.history[-1][1] != name):
            track.history.append((t, name))
        return track_id

    def _split(self, old: Track) -> int:
        """``old`` from its first doubted answer on becomes a new track."""
        assert old.doubt is not None
        moved, old.samples = old.samples[old.doubt :], old.samples[: old.doubt]
        start = moved[0].t
        end = moved[0].after if moved[0].after is not None else start  # its last match before
        key = len(self.tracks)
        new = Track(key, start, old.last_s, round(start * self.fps), old.last_frame, old.box, old.velocity)
        new.samples, new.hits = moved, 1
        old.last_s, old.last_frame, old.doubt, old.gap = end, round(end * self.fps), None, None
        self.tracks[key] = new
        for raw, k in self._keys.items():
            if k == old.track_id:
                self._keys[raw] = key
        return key

    def wanted(self, t_seconds: float, ids: Sequence[int | None], budget: int | None = None) -> list[int]:
        """Which of ``ids`` (tracks matched at ``t_seconds``) to embed now, most needed first, at most
        ``budget``: tracks with fewer than ``first_samples`` embeddings, seen again after a gap, or in
        doubt (their last answer named someone else); then those not embedded for ``sample_every_s``,
        or whose face grew ``grow``-fold since its largest embedded one."""
        scored = []
        for tid in ids:
            if tid is None or tid not in self.tracks:
                continue
            tr = self.tracks[tid]
            n = len(tr.samples)
            since = t_seconds - tr.samples[-1].t if n else float("inf")
            biggest = max((s.area for s in tr.samples), default=0.0)
            back = tr.gap is not None and tr.gap[1] == tr.last_s and since > 0
            if n < self.first_samples or tr.doubt is not None or back:
                scored.append((0, n, -since, tid))
            elif since >= self.sample_every_s or tr.area >= self.grow * biggest:
                scored.append((1, n, -since, tid))
        scored.sort()
        return [s[-1] for s in scored[: budget if budget is not None else len(scored)]]

    def shown(self, t_seconds: float, grace_s: float = 0.3) -> list[Track]:
        """Confirmed tracks matched within ``grace_s`` of ``t_seconds``: the faces on screen now."""
        return [tr for tr in self.tracks.values() if 0 <= t_seconds - tr.last_s <= grace_s + 1e-9]

    def is_face(self, track: Track) -> bool:
        """Embedded, and either named (someone's vote reached its threshold) or a face by the mask
        head (a stranger's face; not a hand or a sleeve). A named track is kept whatever the mask head
        says: as in classify, the recogniser's answer stands."""
        if not track.samples:
            return False
        return track.vote(self.accept)[0] != STRANGER or track.face_p() >= self.min_face_p

    def label(self, track: Track) -> tuple[str | None, float]:
        return track.vote(self.accept, self.stranger)

    def appearances(self) -> list[Appearance]:
        """Every face track as a row (see the module docstring), by start time."""
        kept = [tr for tr in self.tracks.values() if self.is_face(tr)]
        named: list[tuple[Track, str, float]] = []
        taken: dict[str, list[tuple[float, float]]] = {}
        for tr in sorted(kept, key=lambda tr: (-tr.vote(self.accept)[1], tr.track_id)):
            mean = tr.mean_scores()
            name, score = self.stranger, max(mean.values())
            for cand in sorted(mean, key=lambda c: (-mean[c], c)):
                if mean[cand] < self.accept.get(cand, 1.0):
                    break
                busy = self.exclusive and any(
                    s <= tr.last_s and tr.first_s <= e for s, e in taken.get(cand, [])
                )
                if not busy:
                    name, score = cand, mean[cand]
                    taken.setdefault(cand, []).append((tr.first_s, tr.last_s))
                    break
            named.append((tr, name, score))
        rows: list[Appearance] = []
        weight: list[int] = []  # embeddings behind each row's score
        last: dict[str, int] = {}  # person -> index in rows of their latest appearance
        for tr, name, score in sorted(named, key=lambda x: (x[0].first_s, x[0].track_id)):
            k = last.get(name)
            n = len(tr.samples)
            near = k is not None and tr.first_s - rows[k].end_s <= self.merge_gap_s
            if self.exclusive and name != self.stranger and near:
                assert k is not None
                r, w = rows[k], weight[k]
                merged = (r.score * w + score * n) / (w + n)
                rows[k] = Appearance(name, r.start_s, max(r.end_s, tr.last_s), merged, r.track_id)
                weight[k] = w + n
                continue
            last[name] = len(rows)
            rows.append(Appearance(name, tr.first_s, tr.last_s, score, tr.track_id))
            weight.append(n)
        return rows


class CutDetector:
    """Hard cuts between shots: the mean absolute difference of two successive frames at 32x24 px
    grey, above ``at`` (0-255). A pan, a zoom or a person walking changes a thumbnail little; a new
    shot changes most of it (bench/live.py's video: at most 2.1 within a shot, 22 to 90 at a cut)."""

    def __init__(self, at: float = 15.0) -> None:
        self.at = at
        self._last: np.ndarray | None = None

    def __call__(self, bgr: np.ndarray) -> bool:
        import cv2

        small = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (32, 24), interpolation=cv2.INTER_AREA)
        small = small.astype(np.int16)
        cut = self._last is not None and float(np.abs(small - self._last).mean()) > self.at
        self._last = small
        return cut
