"""The classify job, in three steps: plan -> analyse -> commit.

* plan (:func:`plan`): from the index alone, what each photo needs: nothing (unchanged, its faces
  stored), a re-score (stored face vectors, a retrained recogniser), or analysis;
* analyse (:mod:`sorter.pipeline.analyse`): decode, detect and recognise the photos that need it, on
  worker processes; nothing else happens there, so it could run on other machines;
* commit (:class:`Commit`): decide, copy, write the index row and the manifest, in the main process,
  in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sorter.errors import Interrupted, PhotosortError
from sorter.heads.attributes import AttributeHead
from sorter.heads.calibrate import repick_thresholds
from sorter.io import manifest
from sorter.io import place as placing
from sorter.io.bundle import Bundle
from sorter.io.corrections import Correction
from sorter.io.decode import sha256_file
from sorter.io.formats import is_video_name
from sorter.io.index import Index
from sorter.io.scan import pair_live, scan
from sorter.models.yolo import min_box_score
from sorter.pipeline.analyse import Analysed, Analyser
from sorter.pipeline.decide import decide
from sorter.pipeline.masks import ACCEPT, LOW, mask_sorter
from sorter.pipeline.ray_backend import backend
from sorter.pipeline.recognise import FaceRecogniser, load_recogniser
from sorter.pipeline.verdicts import apply as apply_verdicts
from sorter.pipeline.verdicts import teacher_verdicts
from sorter.records import Face, Photo, Problem
from sorter.settings import FACE_BY, ClassifySettings

# State lives in hidden files at the top of the output folder (not in a sub-folder, which would
# look like a person's folder to anyone listing it).
LOCK_FILE = ".photosort.lock"
INDEX_FILE = ".photosort-index.sqlite"
UNCERTAIN = "uncertain"
EXIT_OK, EXIT_FAILED, EXIT_PROBLEMS, EXIT_INTERRUPTED = 0, 1, 3, 130


class ClassifyError(PhotosortError):
    """The run could not start or could not go on (one-line message for the user)."""


@dataclass
class ClassifyReport:
    out: Path
    photos: int = 0
    per_person: Counter = field(default_factory=Counter)
    uncertain: int = 0
    no_person: int = 0
    reused: int = 0
    problems: list[Problem] = field(default_factory=list)
    stage_seconds: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    dry_run: bool = False
    detector: bool = True  # did the YOLO detector run beside the recogniser's face detector?
    by: str = "person"

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def summary(self) -> str:
        lines = [
            f"{self.photos} photos sorted into {self.out}"
            + (" (dry run: manifest only)" if self.dry_run else "")
        ]
        for person, n in sorted(self.per_person.items()):
            lines.append(f"  {person:<24} {n:>6}")
        lines.append(f"  {'uncertain (review by hand)':<24} {self.uncertain:>6}")
        lines.append(
            f"  {'no known person' if self.by == 'person' else 'no face found':<24} {self.no_person:>6}"
        )
        if self.problems:
            lines.append(f"  {'unreadable / problems':<24} {len(self.problems):>6}")
            lines.extend(f"    {p}" for p in self.problems[:50])
            if len(self.problems) > 50:
                lines.append(f"    ... and {len(self.problems) - 50} more (see manifest.csv)")
        if not self.detector and self.by == "person":
            lines.append("  (YOLO detector not run: it sorted no better at training; --detector on runs it)")
        rate = self.photos / self.seconds if self.seconds else 0.0
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(self.stage_seconds.items()))
        lines.append(
            f"{self.seconds:.1f}s ({rate:.1f} photos/s; {self.reused} reused from the index)"
            # Stage times add up over the worker processes, so together they can exceed the wall time.
            + (f"; time per stage, all workers: {stages}" if stages else "")
        )
        return "\n".join(lines)


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    # flock is released by the kernel when the process dies, so a killed run never leaves a stale lock.
    with open(out / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClassifyError(
                f"another photosort classify is already writing to {out}; wait for it to finish"
            ) from None
        yield


def model_key(bundle: Bundle, use_detector: bool = True) -> str:
    """Identifies what produced stored faces: same weights + recogniser + image size = reusable."""
    what: tuple = (sorted(bundle.files.items()), bundle.imgsz)
    if bundle.recogniser:  # the faces carry the age/gender head's answers
        what += (AttributeHead(bundle.attribute_head_path).key,)
    if not use_detector:  # YOLO's boxes are not among the faces (keys of runs with YOLO stay as they were)
        what += ("no-detector",)
    return hashlib.sha256(repr(what).encode()).hexdigest()[:16]


def embed_key(bundle: Bundle, recogniser: FaceRecogniser, use_detector: bool = True) -> str:
    """Identifies what made stored face vectors: detector weights + image size + face pipeline."""
    if use_detector:
        what: tuple = (bundle.files.get(bundle.weights), bundle.imgsz, recogniser.embed_key)
    else:
        what = ("no-detector", recogniser.embed_key)  # then the YOLO weights do not matter either
    return hashlib.sha256(repr(what).encode()).hexdigest()[:16]


@dataclass
class Step:
    """What one photo needs, planned from the index. ``faces`` or ``error`` set: no analysis."""

    photo: Photo
    sha: str | None = None
    faces: list[Face] | None = None
    error: str | None = None
    rescored: bool = False  # faces re-scored from stored vectors by another recogniser

    @property
    def needs_analysis(self) -> bool:
        return self.faces is None and self.error is None


def plan(
    photos: list[Photo], index: Index, key: str, ekey: str | None, recogniser: FaceRecogniser | None
) -> list[Step]:
    """What each photo needs, from the index alone (nothing is decoded here)."""
    steps = []
    for photo in photos:
        rel = photo.rel.as_posix()
        hit = index.lookup(rel, photo.size, photo.mtime_ns, key)
        if hit is not None:
            steps.append(Step(photo, hit["sha256"], None if hit["error"] else hit["faces"], hit["error"]))
            continue
        if ekey is not None and recogniser is not None:
            old = index.lookup_embedded(rel, photo.size, photo.mtime_ns, ekey)
            faces = recogniser.rescore(old["faces"] or []) if old else None
            if old is not None and faces is not None:
                steps.append(Step(photo, old["sha256"], faces, rescored=True))
                continue
        steps.append(Step(photo))
    return steps


def classify_library(
    library: Path,
    out: Path,
    bundle: Bundle | None,
    settings: ClassifySettings | None = None,
    log: Callable[[str], object] | None = None,
    video: Callable[..., Analysed] | None = None,
    **options: object,
) -> ClassifyReport:
    """Sort every photo under ``library`` into ``out/<person>/`` and ``out/uncertain/``.

    ``settings`` (or the same fields as keyword ``options``): :class:`~sorter.settings.ClassifySettings`.
    ``bundle`` None: by a face attribute (``by``, default mask state) with the heads that ship.
    ``video``: how a video is analysed (sorter.video.library.analyse_video); None: videos left out.
    """
    s = settings if settings is not None else ClassifySettings(**options)  # type: ignore[arg-type]
    analyse = backend(s)  # local worker processes or a Ray cluster (refused at once if Ray is missing)
    library, out = Path(library).absolute(), Path(out).absolute()
    if not library.is_dir():
        raise ClassifyError(f"{library}: no such folder")
    if library == out or out in library.parents:
        raise ClassifyError(f"{out}: the output folder cannot be the library or contain it")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    by = s.by or ("mask" if bundle is None else bundle.sorts_by)
    if bundle is None and by not in FACE_BY:
        raise ClassifyError("sorting by person needs a model folder (--model RUN from photosort train)")
    masks = mask_sorter(bundle, by) if by in FACE_BY else None
    recogniser = load_recogniser(bundle) if bundle is not None and masks is None else None
    if masks is not None:
        accept, low = masks.thresholds()
        if bundle is not None and bundle.sorts_by == "mask" and by == "mask":
            accept, low = bundle.thresholds()
        if s.threshold is not None or s.band is not None:
            t = ACCEPT if s.threshold is None else s.threshold
            accept = dict.fromkeys(accept, t)
            low = dict.fromkeys(accept, max(0.0, t - (ACCEPT - LOW if s.band is None else s.band)))
    else:
        assert bundle is not None
        accept, low = bundle.thresholds(s.threshold, s.band)
    if s.precision is not None:
        if recogniser is None or bundle is None:
            raise ClassifyError("--precision needs a model trained with a recogniser; use --threshold")
        # Re-calibrate from the cross-validated scores stored at training time: no retraining.
        accept, low = repick_thresholds(bundle.path / bundle.recogniser, s.precision)
    use_detector = s.use_detector
    if masks is not None:
        use_detector = bool(use_detector) and bundle is not None  # YOLO only when asked for
    elif use_detector is None or recogniser is None:
        assert bundle is not None
        use_detector = bundle.runs_detector  # always True without a recogniser: the detector is all there is
    if masks is not None:
        yolo_key = model_key(bundle) if use_detector and bundle is not None else None
        key = hashlib.sha256(repr(("by-mask", masks.embed_key, yolo_key)).encode()).hexdigest()[:16]
    else:
        assert bundle is not None
        key = model_key(bundle, use_detector)
    # Stored face vectors stay valid for a retrained recogniser on the same detector: re-score, no decode.
    ekey = embed_key(bundle, recogniser, use_detector) if recogniser is not None and bundle else None
    report = ClassifyReport(out=out, dry_run=s.dry_run, detector=use_detector, by=by)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        placing.clean_temp(out)
        index: Index | None = None
        try:
            index = Index(Path(":memory:") if s.dry_run else out / INDEX_FILE)
            verdicts = {} if s.dry_run else teacher_verdicts(out, INDEX_FILE, library, bundle, by, index, log)
            commit = Commit(report, index, accept, low, key, ekey, s.dry_run, log, exclusive=masks is None)
            commit.verdicts = verdicts
            items = list(scan(library, skip=[out], videos=True))
            photos, commit.companions = pair_live([p for p in items if isinstance(p, Photo)])
            photos = [p for p in photos if video is not None or not is_video_name(p.path.name)]
            for p in items:
                if isinstance(p, Problem):
                    commit.problem(p)
            bar = _bar(len(photos), s.progress)
            steps = plan(photos, index, key, ekey, recogniser)
            for step in steps:
                if not step.needs_analysis:
                    commit.planned(step)
                    bar.update(1)
            analyser = Analyser(
                bundle=bundle,
                device=s.device,
                batch=s.batch,
                known=index.known_hashes(key),
                min_score=min_box_score(recogniser is not None or masks is not None, low),
                use_detector=use_detector,
                masks=masks,
                video=functools.partial(video, accept=accept, by=by) if video is not None else None,
            )
            todo = [step.photo for step in steps if step.needs_analysis]
            for a in analyse(analyser, todo, workers=s.workers, chunk=s.batch or 2, log=log):
                commit.analysed(a)
                bar.update(1)
            bar.close()
            manifest.write(out / "manifest.csv", commit.rows)
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted; everything sorted so far is complete: run the same command again to resume"
            ) from None
        except placing.DiskFullError as exc:
            raise ClassifyError(
                f"{exc.strerror}; free some space and run the same command again to "
                "resume (finished photos are skipped)"
            ) from None
        finally:
            if index is not None:
                index.close()
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class Commit:
    """The commit step: decide, copy, journal each photo in the index, collect manifest rows."""

    report: ClassifyReport
    index: Index
    accept: dict[str, float]
    low: dict[str, float]
    key: str
    ekey: str | None
    dry_run: bool
    log: Callable[[str], object]
    exclusive: bool = True  # a class on at most one face of a photo (people; not mask states)
    rows: list[list[str]] = field(default_factory=list)
    verdicts: dict[str, list[Correction]] = field(default_factory=dict)  # the teacher's, by photo hash
    companions: dict[str, list[Photo]] = field(default_factory=dict)  # Live Photo MOVs, by still rel

    def problem(self, problem: Problem) -> None:
        self.report.problems.append(problem)
        self.log(f"skipped {problem}")
        self.rows.append(manifest.problem_row(problem))

    def planned(self, step: Step) -> None:
        self.report.reused += 1
        if step.error:
            self.problem(Problem(step.photo.path, step.error))
        elif step.rescored:
            self.finish(step.photo, step.sha or "", step.faces or [], cached=True, rescored=True)
        else:
            self.finish(step.photo, step.sha or "", step.faces or [], cached=True)

    def analysed(self, a: Analysed) -> None:
        for stage, sec in a.seconds.items():
            self.report.stage_seconds[stage] += sec
        photo = a.photo
        if a.read_error:
            self.problem(Problem(photo.path, a.read_error))
        elif a.error:
            self.problem(Problem(photo.path, a.error))
            if not self.dry_run:
                rel = photo.rel.as_posix()
                self.index.store(rel, photo.size, photo.mtime_ns, a.sha, self.key, None, a.error, [])
        else:
            faces = self.index.by_hash(a.sha, self.key) if a.known else a.faces
            self.finish(photo, a.sha, faces or [])

    def finish(
        self, photo: Photo, sha: str, faces: list[Face], cached: bool = False, rescored: bool = False
    ) -> None:
        report, out = self.report, self.report.out
        said = self.verdicts.get(sha)
        seen, forced = apply_verdicts(faces, said) if said else (faces, None)
        decision = decide(photo, seen, self.accept, self.low, exclusive=self.exclusive, forced=forced)
        old = [Path(p) for p in self.index.copies(photo.rel.as_posix())]
        copies: list[Path] = []
        ts = time.perf_counter()
        if not self.dry_run:
            # a Live Photo's MOV goes wherever its still goes (and is journalled with the still's copies)
            srcs = {photo.path: (photo, sha)} | {
                c.path: (c, "") for c in self.companions.get(photo.rel.as_posix(), [])
            }
            try:
                for folder in decision.folders:
                    for src, (what, digest) in srcs.items():
                        # An unchanged photo (index hit: same size and mtime) whose copy the journal says
                        # we completed, still there at the right size, is trusted: no bytes are read.
                        done = (
                            placing.reuse([out / p for p in old], out / folder, src, what.size)
                            if cached
                            else None
                        )
                        if done is None:
                            digest = digest or sha256_file(src)
                            srcs[src] = (what, digest)
                            done = placing.copy_into(src, out / folder, digest)
                        copies.append(done)
            except placing.ChangedError:
                self.problem(Problem(photo.path, "changed while being sorted; run again to sort it"))
                return
            except FileNotFoundError:
                self.problem(Problem(photo.path, "vanished during the run"))
                return
            rel_copies = [str(c.relative_to(out)) for c in copies]
            placing.remove_stale([out / p for p in old if str(p) not in rel_copies], out)
            if rescored or not (cached and rel_copies == [str(p) for p in old]):
                self.index.store(
                    photo.rel.as_posix(),
                    photo.size,
                    photo.mtime_ns,
                    sha,
                    self.key,
                    faces,
                    None,
                    rel_copies,
                    self.ekey,
                    decision.uncertain,
                )
        report.stage_seconds["place"] += time.perf_counter() - ts
        report.photos += 1
        for p in decision.accepted:
            report.per_person[p] += 1
        if decision.uncertain:
            report.uncertain += 1
        if not decision.accepted and not decision.uncertain:
            report.no_person += 1
        copied = [str(c.relative_to(out)) for c in copies]
        self.rows.append(manifest.row(decision, sha, copied, people=self.exclusive))


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="photo", disable=not enabled, dynamic_ncols=True, smoothing=0.1, file=sys.stderr
    )
