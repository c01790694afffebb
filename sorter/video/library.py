"""Videos in the library (``classify``): sampled frames -> faces -> tracks -> one Face per appearance.

Sampling (:func:`sample_times`), chosen from what a video is, not fitted on a benchmark:

- the frames looked at are the video's keyframes (the encoder puts one at every scene cut and at a
  fixed interval; found by demuxing, without decoding anything), at most one every ``MIN_GAP_S``
  (1 s: FaceTracks re-embeds a face about once a second, so denser frames would add cost, not votes);
  at most 60 frames per minute of video;
- where keyframes are further apart than ``MAX_GAP_S`` (3 s), frames are added evenly by seeking, so
  no stretch of video longer than that goes unseen (a face on screen for ``2 * MAX_GAP_S`` is always
  in at least two sampled frames). At least 20 frames per minute of video, then.

Each sampled frame goes through the photos' face path (``find`` then ``describe``, of a
FaceRecogniser or, by mask state, the MaskSorter), and :class:`~sorter.video.track.FaceTracks` follows
the faces across sampled frames (a track is confirmed when seen in two sampled frames in a row) and
votes each track's identity. Each appearance becomes one :class:`~sorter.records.Face` of the video:
its box from the frame where the face was largest, scores = the mean of its tracks' answers (the
vote), mask state, the mean face vector (re-scored by a retrained recogniser like a photo's), and
``start_s``/``end_s``. A face seen in one sampled frame only (never on a confirmed track) is kept with
``start_s == end_s``: not on screen long enough to be sure, so it sends the video to uncertain/ at
most (:func:`sorter.pipeline.decide.decide`).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sorter.io.decode import WORK_SIDE, sha256_file
from sorter.io.formats import HEAD_BYTES, describe_head, sniff
from sorter.io.index import pack, unpack
from sorter.pipeline.analyse import Analysed
from sorter.pipeline.faces import merge
from sorter.records import Decoded, Face, Photo
from sorter.video.track import STRANGER, FaceTracks, Track

MIN_GAP_S = 1.0  # sampled frames at least this far apart (at most 60 a minute)
MAX_GAP_S = 3.0  # and at most this far apart (at least 20 a minute; seeking between sparse keyframes)
MAX_DECODE = 600  # frames decoded after one seek at most (a damaged index must not decode the whole file)


class VideoReadError(Exception):
    """A video that cannot be read (its message is the one line the user sees)."""


def sample_times(keyframes: list[float], end: float) -> list[float]:
    """The times to look at (see the module docstring): keyframes ``MIN_GAP_S`` apart or more, and
    evenly spaced fill-ins wherever two samples (or the last one and ``end``) are over ``MAX_GAP_S``."""
    kept: list[float] = []
    for t in sorted(k for k in keyframes if 0 <= k <= end):
        if not kept or t - kept[-1] >= MIN_GAP_S:
            kept.append(t)
    if not kept:
        kept = [0.0]
    out: list[float] = []
    for a, b in zip(kept, [*kept[1:], end], strict=True):
        out.append(a)
        n = math.ceil((b - a) / MAX_GAP_S) - 1
        out.extend(a + (b - a) * k / (n + 1) for k in range(1, n + 1))
    if end - out[-1] > MAX_GAP_S / 2:
        out.append(end)
    return out


def _what(path: Path) -> tuple[str, bool]:
    """What the file is, from its first bytes, and whether that is a video at all."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return "video", True
    if not head:
        return "empty file, not a video", False
    kind = sniff(head)
    if kind.photo:
        return f"{kind.label} named like a video ({path.suffix}); rename it to sort it as a photo", False
    if kind.label.startswith("a video"):
        return "video " + kind.label.split(",")[0].removeprefix("a video ").strip(), True
    if head[4:8] == b"ftyp":
        return "video", True
    return f"not a video (first bytes {describe_head(head)})", False


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__


def read_frames(path: Path):
    """``(t, (rgb, scale))`` of the sampled frames of ``path``, in time order; :class:`VideoReadError`
    if the file is not a video we can read, or breaks off (truncated, damaged)."""
    import av

    what, video = _what(path)
    if not video:
        raise VideoReadError(what)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError) as exc:
        raise VideoReadError(f"{what}, truncated or damaged: cannot be opened ({_reason(exc)})") from None
    try:
        if not container.streams.video:
            raise VideoReadError(f"{what}: has no video track")
        stream = container.streams.video[0]
        tb = float(stream.time_base or 0) or 1 / 90000
        start = float(stream.start_time or 0) * tb
        keys, end, packets = [], 0.0, 0
        try:
            for packet in container.demux(stream):  # packets only: nothing is decoded here
                if packet.pts is None or packet.size == 0:
                    continue
                t = packet.pts * tb - start
                packets += 1
                end = max(end, t)
                if packet.is_keyframe:
                    keys.append(t)
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"{what}, damaged after {end:.1f} s ({_reason(exc)})") from None
        if not packets:
            raise VideoReadError(f"{what}, truncated or damaged: no video frame in it")
        frames = []
        for target in sample_times(keys, end):
            got = _frame_at(container, stream, target, start, tb)
            if got is None:
                raise VideoReadError(f"{what}, damaged: no frame could be decoded at {target:.1f} s")
            frames.append(got)
        return frames
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{what}, truncated or damaged: cannot be decoded ({_reason(exc)})") from None
    finally:
        container.close()


def _frame_at(container, stream, target: float, start: float, tb: float):
    """The first frame at or after ``target`` seconds (seek to the keyframe before it, decode on)."""
    container.seek(int((target + start) / tb), stream=stream, backward=True, any_frame=False)
    rate = float(stream.average_rate or 30)
    for n, frame in enumerate(container.decode(stream)):
        t = (frame.time if frame.time is not None else target + start) - start
        if t >= target - 0.5 / rate or n >= MAX_DECODE:
            return max(t, 0.0), _rgb(frame)
    return None


def _rgb(frame) -> tuple[np.ndarray, float]:
    w, h = frame.width, frame.height
    side = max(w, h)
    if side > WORK_SIDE:  # as photos are decoded: no larger than the canonical size
        k = WORK_SIDE / side
        return frame.to_ndarray(format="rgb24", width=round(w * k), height=round(h * k)), side / WORK_SIDE
    return frame.to_ndarray(format="rgb24"), 1.0


def analyse_video(
    recogniser, photo: Photo, known: frozenset[str], *, accept: dict[str, float], by: str
) -> Analysed:
    """One library video analysed (the hook :class:`~sorter.pipeline.analyse.Analyser` calls)."""
    a = Analysed(photo=photo)
    ts = time.perf_counter()
    try:
        a.sha = sha256_file(photo.path)
    except OSError as exc:
        a.read_error = f"cannot read: {exc.strerror or exc}"
        return a
    if a.sha in known:
        a.known = True
        return a
    if recogniser is None:
        a.error = "video: sorting videos needs a face recogniser (this model was trained without one)"
        return a
    try:
        frames = read_frames(photo.path)
    except VideoReadError as exc:
        a.error = str(exc)
        return a
    a.seconds["decode"] = time.perf_counter() - ts
    ts = time.perf_counter()
    a.faces = faces_of(recogniser, photo, frames, accept, by)
    a.seconds["recognise"] = time.perf_counter() - ts
    return a


def faces_of(recogniser, photo: Photo, frames, accept: dict[str, float], by: str) -> list[Face]:
    """The appearances in ``frames`` (``(t, (rgb, scale))``) as Faces of the video."""
    person = by == "person"
    tracks = FaceTracks(
        accept,
        stranger=STRANGER if person else "unsure",
        fps=1.0 / MIN_GAP_S,
        lost_s=2 * MAX_GAP_S,  # a face is kept across one sampled frame it was missed on
        merge_gap_s=MAX_GAP_S,
        sample_every_s=0.0,  # every sampled frame is a vote: frames are already sparse
        exclusive=person,
    )
    seen: dict[int, list[tuple[float, Face]]] = {}
    lone: list[tuple[int, float, Face]] = []  # faces on no confirmed track: (frame, t, face)
    for k, (t, (rgb, scale)) in enumerate(frames):
        h, w = rgb.shape[:2]
        d = Decoded(photo, rgb, scale, (round(w * scale), round(h * scale)))
        found = recogniser.find(d)
        faces = recogniser.describe(found, []) if not person else recogniser.describe(found, merge(found, []))
        ids = tracks.update(k, t, faces)
        for face, tid in zip(faces, ids, strict=True):
            if tid is None:
                lone.append((k, t, face))
            else:
                seen.setdefault(tid, []).append((t, face))
    out = []
    rows = tracks.appearances()
    for app in rows:
        mine = _tracks_of(tracks, app, person)
        got = [x for tr in mine for x in seen.get(tr.track_id, [])]
        if got:
            out.append(_face(app.start_s, app.end_s, [s.scores for tr in mine for s in tr.samples], got))
    loose = []
    for k, t, face in lone:  # not the first sight of a track's face (ByteTrack confirms on the second)
        name, score = face.best
        same = (name if score >= accept.get(name or "", 1.0) else tracks.stranger) if name else None
        if not any(r.start_s - 1e-6 <= t <= r.end_s + 1e-6 and r.person == same for r in rows):
            loose.append((k, t, face))
    out += _chains(loose, accept)
    # a class seen for long enough elsewhere needs none of its one-frame sightings
    sure = {f.best[0] for f in out if f.end_s != f.start_s and f.best[1] >= accept.get(f.best[0] or "", 1.0)}
    out = [f for f in out if f.end_s != f.start_s or f.best[0] not in sure]
    return sorted(out, key=lambda f: (f.start_s or 0.0, f.xyxy))


def _chains(loose: list[tuple[int, float, Face]], accept: dict[str, float]) -> list[Face]:
    """Faces the tracker could not link (a face that moved further between two sampled frames than
    its own width) linked by who they are instead: a class named (at its accept threshold) on a face
    in consecutive sampled frames is one appearance; any other face stays a one-frame sighting."""
    named: dict[str, dict[int, tuple[float, Face]]] = {}
    out = []
    for k, t, face in loose:
        name, score = face.best
        if name is not None and score >= accept.get(name, 1.0):
            mine = named.setdefault(name, {})
            if k not in mine or score > mine[k][1].best[1]:
                mine[k] = (t, face)
                continue
        out.append(replace(face, start_s=t, end_s=t, at_s=t))
    for by_frame in named.values():
        run: list[tuple[float, Face]] = []
        for k in sorted(by_frame):
            if run and k - 1 not in by_frame:
                out.append(_run(run))
                run = []
            run.append(by_frame[k])
        if run:
            out.append(_run(run))
    return out


def _run(run: list[tuple[float, Face]]) -> Face:
    if len(run) == 1:
        return replace(run[0][1], start_s=run[0][0], end_s=run[0][0], at_s=run[0][0])
    return _face(run[0][0], run[-1][0], [f.scores for _, f in run], run)


def _tracks_of(tracks: FaceTracks, app, person: bool) -> list[Track]:
    main = tracks.tracks[app.track_id]
    if not person or app.person == tracks.stranger:
        return [main]
    return [
        tr
        for tr in tracks.tracks.values()
        if tr.track_id == app.track_id
        or (
            tracks.is_face(tr)
            and tracks.label(tr)[0] == app.person
            and app.start_s - 1e-6 <= tr.first_s
            and tr.last_s <= app.end_s + 1e-6
        )
    ]


def _face(start: float, end: float, votes: list[dict[str, float]], got: list[tuple[float, Face]]) -> Face:
    """One appearance as a Face: ``votes`` (each answer's scores) averaged, the faces ``got`` (t, face)
    give the box (the largest), mask state (summed probability), detector score, mean vector, age and
    gender."""
    votes = votes or [f.scores for _, f in got]
    names = {n for v in votes for n in v}
    scores = {n: float(np.mean([v.get(n, 0.0) for v in votes])) for n in sorted(names)}
    faces = [f for _, f in got]
    area = [max(0.0, f.xyxy[2] - f.xyxy[0]) * max(0.0, f.xyxy[3] - f.xyxy[1]) for f in faces]
    rep_at = int(np.argmax(area))
    rep = faces[rep_at]
    states: dict[str, float] = {}
    for f in faces:
        if f.mask:
            states[f.mask] = states.get(f.mask, 0.0) + float(f.mask_score or 0.0)
    mask = max(sorted(states), key=states.__getitem__) if states else rep.mask
    n_mask = sum(1 for f in faces if f.mask == mask)
    vectors = [unpack(f.embedding) for f in faces if f.embedding]
    embedding = ""
    if vectors:
        mean = np.mean(vectors, axis=0)
        norm = float(np.linalg.norm(mean))
        target = float(np.mean([np.linalg.norm(v) for v in vectors]))
        embedding = pack(mean * (target / norm) if norm > 0 else mean)  # the vectors' own scale
    masked = [f.masked for f in faces if f.masked is not None]
    # age: the median over the track; gender: the mean probability of female over it
    ages = [f.age for f in faces if f.age is not None]
    pf = [f.gender_score if f.gender == "female" else 1.0 - f.gender_score for f in faces if f.gender_score]
    female = float(np.mean(pf)) if pf else None
    return Face(
        xyxy=rep.xyxy,
        det_score=max(f.det_score for f in faces),
        scores=scores,
        masked=(sum(masked) * 2 > len(masked)) if masked else None,
        embedding=embedding,
        mask=mask,
        mask_score=(states[mask] / n_mask) if states and n_mask else rep.mask_score,
        start_s=round(start, 3),
        end_s=round(end, 3),
        at_s=round(got[rep_at][0], 3),
        age=float(np.median(ages)) if ages else None,
        gender=None if female is None else ("female" if female >= 0.5 else "male"),
        gender_score=None if female is None else max(female, 1.0 - female),
    )


def frame_at(path: Path, t: float) -> tuple[np.ndarray, float]:
    """The frame of ``path`` at ``t`` seconds as (rgb, full-size pixels per rgb pixel), as sampled
    (the review page's crop of a video's face)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base or 0) or 1 / 90000
        start = float(stream.start_time or 0) * tb
        got = _frame_at(container, stream, t, start, tb)
    if got is None:
        raise VideoReadError(f"no frame at {t:.1f} s")
    return got[1]
