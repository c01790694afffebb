"""``photosort learn OUT --model RUN``: the recogniser learns from the teacher's corrections (issue 13).

1. Note the file manager's corrections since the last run (:mod:`sorter.io.outfolder`).
2. Work out which face each correction is about: the page says; for a photo dragged into a folder,
   the face the model scored highest for that name (:func:`~sorter.pipeline.verdicts.which_face`);
   when it cannot tell, the review page asks and the correction waits.
3. Refit the identity head on its training vectors plus the corrected faces' stored vectors (no photo
   is decoded), recalibrate its thresholds by the same grouped cross-validation as ``train``; with
   enough faces confirmed in the review band, the band then starts where the lowest of them sat
   (:func:`narrow_band`).
4. Keep the previous version in ``RUN/versions/<n>/`` (``learn --undo`` puts it back).
5. Re-sort OUT from the index (stored vectors re-scored), the teacher's corrections standing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sorter.errors import PhotosortError
from sorter.heads.identity import STRANGER, read_model
from sorter.io.bundle import BUNDLE_FILE, Bundle
from sorter.io.corrections import Correction, Corrections, by_photo
from sorter.io.index import Index, Stored, unpack
from sorter.io.outfolder import record_file_changes
from sorter.pipeline.classify import INDEX_FILE, ClassifyReport, classify_library
from sorter.pipeline.verdicts import locate, which_face
from sorter.training.fit import (
    SAMPLES_FILE,
    FitSettings,
    _Sample,
    adopt_thresholds,
    fit_from_samples,
    load_samples,
    save_samples,
)

VERSIONS = "versions"
# The review band is narrowed from below only on this much evidence: with k faces confirmed in it, a
# new true face falls below the lowest of them about 1 time in k + 1 (order statistics), so at least 3
# keep that under a quarter of the true faces the band would have caught.
MIN_CONFIRMED = 3


class LearnError(PhotosortError):
    """learn cannot run on this folder or model (one line for the user)."""


@dataclass
class LearnReport:
    round: int = 0
    faces_added: Counter = field(default_factory=Counter)  # person -> corrected faces learnt
    strangers_added: int = 0
    new_people: list[str] = field(default_factory=list)
    waiting: int = 0  # corrections whose face the page must ask about
    used: int = 0
    undone: bool = False
    cv: dict = field(default_factory=dict)
    seconds: float = 0.0
    fit_seconds: float = 0.0
    resort: ClassifyReport | None = None
    confirmed_in_band: int = 0  # faces the teacher named that were in the review band
    band_from: float | None = None  # where the band now starts, 0-1 of the way up; None: as calibrated

    def summary(self) -> str:
        if self.undone:
            lines = [f"restored the model as it was before learn round {self.round}"]
        elif not self.used:
            lines = ["nothing new to learn: no corrections since the last learn"]
        else:
            lines = [f"learn round {self.round}: {self.used} corrections used"]
            for person, n in sorted(self.faces_added.items()):
                new = " (new person)" if person in self.new_people else ""
                lines.append(f"  {person:<24} +{n} faces{new}")
            lines.append(f"  {'strangers / not faces':<24} +{self.strangers_added}")
            if self.cv:
                lines.append(
                    f"  recogniser (cross-validated): precision {self.cv.get('precision', 0):.3f}, "
                    f"recall {self.cv.get('recall', 0):.3f}; fitted in {self.fit_seconds:.1f}s"
                )
        if self.used and self.band_from:
            lines.append(
                f"  review band: starts {self.band_from:.0%} of the way up to the accept threshold, where "
                f"the lowest of the {self.confirmed_in_band} faces you confirmed in it sat"
            )
        elif self.used:
            lines.append(
                f"  review band: as calibrated ({self.confirmed_in_band} faces confirmed in it, the "
                f"lowest at its bottom, or fewer than {MIN_CONFIRMED})"
            )
        if self.waiting:
            lines.append(
                f"  {self.waiting} correction(s) wait for you to say which face: photosort review OUT"
            )
        if self.resort is not None:
            lines.append("re-sorted from the index:")
            lines.append(self.resort.summary())
        lines.append(f"{self.seconds:.1f}s")
        return "\n".join(lines)


def learn(
    out: Path, model: Path | None = None, undo: bool = False, log: Callable[[str], object] | None = None
) -> LearnReport:
    out = Path(out).absolute()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    if not (out / INDEX_FILE).is_file():
        raise LearnError(f"{out}: not a photosort output folder (no {INDEX_FILE}); run photosort classify")
    corrections = Corrections(out / INDEX_FILE)
    try:
        library = Path(corrections.get_meta("library") or "")
        model = Path(model or corrections.get_meta("model") or "")
        if not (model / BUNDLE_FILE).is_file():
            raise LearnError(f"{model}: not a photosort model folder; pass --model RUN")
        bundle = Bundle.load(model)
        if not bundle.recogniser:
            raise LearnError(f"{model}: has no recogniser to teach (trained on mask states or without one)")
        report = LearnReport()
        if undo:
            report.round = _restore(bundle.path)
            report.undone = True
            corrections.unlearn(report.round)
        else:
            _learn(out, bundle, corrections, report, log)
    finally:
        corrections.close()
    if (report.used or report.undone) and library.is_dir():
        from sorter.video.library import analyse_video

        report.resort = classify_library(
            library, out, Bundle.load(model), progress=False, log=log, video=analyse_video
        )
    report.seconds = time.perf_counter() - t0
    return report


def _learn(out: Path, bundle: Bundle, corrections: Corrections, report: LearnReport, log) -> None:
    index = Index(out / INDEX_FILE)
    try:
        rows = list(index.rows())
    finally:
        index.close()
    record_file_changes(out, rows, corrections)
    pending = corrections.pending()
    if not pending:
        return
    rec_path = bundle.path / bundle.recogniser
    samples_path = rec_path.with_name(SAMPLES_FILE)
    if not samples_path.is_file():
        raise LearnError(
            f"{bundle.path}: trained by a photosort that kept no training vectors; train it again once"
        )
    meta, _ = read_model(rec_path)
    samples = load_samples(samples_path)
    accept, low = bundle.thresholds()
    active = corrections.active()
    new, used, report.waiting, positions = _corrected_samples(rows, pending, active, accept, low)
    if not new:
        report.used = 0
        return
    people = list(meta["people"])
    for s in new:
        if s.label != STRANGER and s.label not in people:
            people.append(s.label)
            report.new_people.append(s.label)
    first = 1 + max((s.photo for s in samples), default=-1)
    groups: dict[int, int] = {}
    for s in new:  # corrected photos continue the training photos' numbering (the CV groups)
        s.photo = first + groups.setdefault(s.photo, len(groups))
        if s.label == STRANGER:
            report.strangers_added += 1
        else:
            report.faces_added[s.label] += 1
    report.round = _save_version(bundle.path, [rec_path, samples_path])
    t = time.perf_counter()
    report.cv = fit_from_samples(
        samples + new,
        people,
        first + len(groups),
        rec_path,
        meta["detector"],
        FitSettings.of(meta),
        log,
        calibrate_on=first,
    )
    report.fit_seconds = time.perf_counter() - t
    save_samples(samples_path, samples + new)
    bundle.classes += [p for p in people if p not in bundle.classes]
    adopt_thresholds(bundle, rec_path)
    report.confirmed_in_band = len(positions)
    report.band_from = narrow_band(bundle, positions)
    bundle.save()
    corrections.mark_learnt(used, report.round)
    report.used = len(used)


def _corrected_samples(
    rows: list[Stored],
    pending: list[Correction],
    active: list[Correction],
    accept: dict[str, float],
    low: dict[str, float],
) -> tuple[list[_Sample], list[int], int, list[float]]:
    """(samples from the pending corrections, ids of the corrections used, how many must wait, where
    each face the teacher confirmed and the model had not accepted sat in the review band, see
    :func:`_review_position`).

    ``_Sample.photo`` is the row's number here (renumbered by the caller). A "not P" teaches the head
    only where the face is no one else we know (then it is a stranger); otherwise it just stands.
    """
    by_sha = {r.sha256: (i, r) for i, r in enumerate(rows)}
    said = by_photo(active)
    out: list[_Sample] = []
    used: list[int] = []
    positions: list[float] = []
    waiting = 0
    for c in pending:
        if c.sha256 not in by_sha:
            continue  # a photo no longer in the library
        i, row = by_sha[c.sha256]
        faces = row.faces
        k = locate(faces, c)
        if c.verdict == "skip":
            used.append(c.id)
            continue
        if k is None and c.verdict == "is" and c.person:
            taken = {j for d in said[c.sha256] if d.verdict != "skip" and (j := locate(faces, d)) is not None}
            k = which_face(faces, c.person, accept, low, taken)
            if k is None:
                # a face the teacher named later in the page settles it; until then it waits
                if not any(d.face is not None and d.person == c.person for d in said[c.sha256]):
                    waiting += 1
                    continue
                used.append(c.id)
                continue
        elif k is None and c.verdict == "not" and c.person:
            k = _face_of(faces, c.person, low)
        used.append(c.id)
        if k is None or not faces[k].embedding:
            continue
        x = unpack(faces[k].embedding).astype(np.float32)
        if c.verdict == "is" and c.person:
            label = c.person
            if faces[k].scores.get(label, 0.0) < accept.get(label, 1.0) and (
                (at := _review_position(faces[k].scores, accept, low)) is not None
            ):
                positions.append(at)
        elif (
            c.verdict in ("stranger", "not_face")
            or c.verdict == "not"
            and all(s < low.get(q, 1.0) for q, s in faces[k].scores.items() if q != c.person)
        ):
            label = STRANGER
        else:
            continue
        # No masked copy: that needs the photo decoded, and a corrected face is a real example already.
        out.append(_Sample(photo=i, label=label, x=x, x_aug=x, masked=float(bool(faces[k].masked))))
    return out, used, waiting, positions


def _review_position(
    scores: dict[str, float], accept: dict[str, float], low: dict[str, float]
) -> float | None:
    """How far up a face sat in the review band, 0 at its bottom: (score - low) / (accept - low) for the
    person whose band held it highest (a face is reviewed when anyone's band holds it, so that is what
    keeps it reviewed when the band starts higher); None when no band held it."""
    at = [
        (s - low[q]) / (accept[q] - low[q])
        for q, s in scores.items()
        if q in accept and q in low and accept[q] > low[q] and low[q] <= s < accept[q]
    ]
    return max(at) if at else None


def narrow_band(bundle: Bundle, positions: list[float]) -> float | None:
    """Start each person's review band where the lowest face the teacher confirmed in it sat (its
    ``positions``, see :func:`_corrected_samples`), in the band just recalibrated; how far up (0-1),
    or None when fewer than MIN_CONFIRMED faces say so.

    Why: the band is calibrated on the labelled photos, where nearly every true face scores above the
    accept threshold, so its width is a quota (a share of photos), not a measure of where true faces
    fall. The teacher's review of the band is that measure, on the library itself: on a daycare
    benchmark most doubts were strangers, the true faces among them in the band's upper part. Every
    doubt the teacher settled is a face the band held (not a sample chosen by score), so the lowest
    confirmed one is an honest edge.
    """
    if len(positions) < MIN_CONFIRMED:
        return None
    up = min(positions)
    if up <= 0:  # a confirmed face at the band's bottom: it stays as calibrated
        return 0.0
    for person, acc in bundle.per_class_threshold.items():
        lo = bundle.per_class_low.get(person)
        if lo is not None and acc > lo:
            bundle.per_class_low[person] = round(lo + up * (acc - lo), 4)
    return up


def _face_of(faces, person: str, low: dict[str, float]) -> int | None:
    """The face that made ``person`` count in the photo (their best, if it reached the review band)."""
    k = max(range(len(faces)), key=lambda j: faces[j].scores.get(person, 0.0), default=None)
    return k if k is not None and faces[k].scores.get(person, 0.0) >= low.get(person, 1.0) else None


def _save_version(run: Path, files: list[Path]) -> int:
    """Copy the recogniser, its vectors and bundle.json into ``run/versions/<n>/``; n."""
    root = run / VERSIONS
    root.mkdir(exist_ok=True)
    n = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
    tmp = root / f".{n}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in [*files, run / BUNDLE_FILE]:
        shutil.copy2(f, tmp / f.name)
    (tmp / "version.json").write_text(json.dumps({"round": n, "saved": time.time()}) + "\n")
    tmp.rename(root / str(n))  # whole or not at all: a crash leaves only a hidden .tmp folder
    return n


def _restore(run: Path) -> int:
    """Put back the newest saved version (and drop it from versions/); its round number."""
    root = run / VERSIONS
    versions = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    if not versions:
        raise LearnError(f"{run}: no earlier version to go back to (learn has not changed this model)")
    n = versions[-1]
    saved = root / str(n)
    for f in saved.iterdir():
        if f.name != "version.json":
            tmp = run / f".{f.name}.restore"
            shutil.copy2(f, tmp)
            tmp.replace(run / f.name)
    shutil.rmtree(saved)
    return n
