"""The classify pipeline: scan -> decode -> detect -> recognise -> decide -> place.

:func:`classify_library` is the whole job; the CLI is a thin layer over it.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import functools
import hashlib
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sorter import place as placing
from sorter.analyse import Analyser, analyse_all
from sorter.bundle import Bundle
from sorter.decide import decide
from sorter.detect import min_box_score
from sorter.index import Index
from sorter.records import Decision, Face, Photo, Problem
from sorter.scan import scan

# State lives in hidden files at the top of the output folder (not in a sub-folder, which would
# look like a person's folder to anyone listing it).
LOCK_FILE = ".photosort.lock"
INDEX_FILE = ".photosort-index.sqlite"
UNCERTAIN = "uncertain"
EXIT_OK, EXIT_FAILED, EXIT_PROBLEMS, EXIT_INTERRUPTED = 0, 1, 3, 130


class ClassifyError(Exception):
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
        lines.append(f"  {'no known person':<24} {self.no_person:>6}")
        if self.problems:
            lines.append(f"  {'unreadable / problems':<24} {len(self.problems):>6}")
            lines.extend(f"    {p}" for p in self.problems[:50])
            if len(self.problems) > 50:
                lines.append(f"    ... and {len(self.problems) - 50} more (see manifest.csv)")
        if not self.detector:
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
    if not use_detector:  # YOLO's boxes are not among the faces (keys of runs with YOLO stay as they were)
        what += ("no-detector",)
    return hashlib.sha256(repr(what).encode()).hexdigest()[:16]


def embed_key(bundle: Bundle, recogniser, use_detector: bool = True) -> str:
    """Identifies what made stored face vectors: detector weights + image size + face pipeline."""
    if use_detector:
        what: tuple = (bundle.files.get(bundle.weights), bundle.imgsz, recogniser.embed_key)
    else:
        what = ("no-detector", recogniser.embed_key)  # then the YOLO weights do not matter either
    return hashlib.sha256(repr(what).encode()).hexdigest()[:16]


def classify_library(
    library: Path,
    out: Path,
    bundle: Bundle,
    threshold: float | None = None,
    band: float | None = None,
    dry_run: bool = False,
    device: str | None = None,
    batch: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    log=None,
    precision: float | None = None,
    use_detector: bool | None = None,
) -> ClassifyReport:
    """Sort every photo under ``library`` into ``out/<person>/`` and ``out/uncertain/``.

    ``use_detector``: run the YOLO detector beside the recogniser's face detector (None: as the model
    chose at training time, :attr:`Bundle.use_detector`; a model without a recogniser always runs it).
    """
    library, out = Path(library).absolute(), Path(out).absolute()
    if not library.is_dir():
        raise ClassifyError(f"{library}: no such folder")
    if library == out or out in library.parents:
        raise ClassifyError(f"{out}: the output folder cannot be the library or contain it")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    from sorter.recognise import load_recogniser, repick_thresholds

    recogniser = load_recogniser(bundle)
    accept, low = bundle.thresholds(threshold, band)
    if precision is not None:
        if recogniser is None:
            raise ClassifyError("--precision needs a model trained with a recogniser; use --threshold")
        # Re-calibrate from the cross-validated scores stored at training time: no retraining.
        accept, low = repick_thresholds(bundle.path / bundle.recogniser, precision)
    if use_detector is None or recogniser is None:
        use_detector = bundle.runs_detector  # always True without a recogniser: the detector is all there is
    key = model_key(bundle, use_detector)
    # Stored face vectors stay valid for a retrained recogniser on the same detector: re-score, no decode.
    ekey = embed_key(bundle, recogniser, use_detector) if recogniser is not None else None
    report = ClassifyReport(out=out, dry_run=dry_run, detector=use_detector)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        placing.clean_temp(out)
        index: Index | None = None
        rows: list[list[str]] = []
        try:
            index = Index(Path(":memory:") if dry_run else out / INDEX_FILE)
            items = list(scan(library, skip=[out]))
            photos = [p for p in items if isinstance(p, Photo)]
            for p in items:
                if isinstance(p, Problem):
                    _problem(report, rows, p, log)
            bar = _bar(len(photos), progress)
            finish = functools.partial(
                _finish, report, rows, index, accept=accept, low=low, key=key, dry_run=dry_run, log=log
            )
            todo: list[Photo] = []
            for photo in photos:
                rel = photo.rel.as_posix()
                hit = index.lookup(rel, photo.size, photo.mtime_ns, key)
                if hit is None and ekey is not None and recogniser is not None:
                    old = index.lookup_embedded(rel, photo.size, photo.mtime_ns, ekey)
                    faces = recogniser.rescore(old["faces"] or []) if old else None
                    if old is not None and faces is not None:
                        report.reused += 1
                        finish(photo, old["sha256"], faces, cached=True, rescored=True, embed_key=ekey)
                        bar.update(1)
                        continue
                if hit is None:
                    todo.append(photo)
                    continue
                report.reused += 1
                if hit["error"]:
                    _problem(report, rows, Problem(photo.path, hit["error"]), log)
                else:
                    finish(photo, hit["sha256"], hit["faces"], cached=True)
                bar.update(1)
            analyser = Analyser(
                bundle=bundle,
                device=device,
                batch=batch,
                known=index.known_hashes(key),
                min_score=min_box_score(recogniser is not None, low),
                use_detector=use_detector,
            )
            for a in analyse_all(analyser, todo, workers=workers, chunk=batch or 2, log=log):
                for stage, sec in a.seconds.items():
                    report.stage_seconds[stage] += sec
                photo, rel = a.photo, a.photo.rel.as_posix()
                if a.read_error:
                    _problem(report, rows, Problem(photo.path, a.read_error), log)
                elif a.error:
                    _problem(report, rows, Problem(photo.path, a.error), log)
                    if not dry_run:
                        index.store(rel, photo.size, photo.mtime_ns, a.sha, key, None, a.error, [])
                else:
                    faces = index.by_hash(a.sha, key) if a.known else a.faces
                    finish(photo, a.sha, faces or [], embed_key=ekey)
                bar.update(1)
            bar.close()
            _write_manifest(out / "manifest.csv", rows)
        except KeyboardInterrupt:
            raise ClassifyError(
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


def _finish(
    report: ClassifyReport,
    rows: list,
    index: Index,
    photo: Photo,
    sha: str,
    faces: list[Face],
    *,
    accept: dict,
    low: dict,
    key: str,
    dry_run: bool,
    log,
    cached: bool = False,
    rescored: bool = False,
    embed_key: str | None = None,
) -> None:
    decision = decide(photo, faces, accept, low)
    old = [Path(p) for p in index.copies(photo.rel.as_posix())]
    copies: list[Path] = []
    ts = time.perf_counter()
    if not dry_run:
        try:
            for folder in decision.folders:
                # An unchanged photo (index hit: same size and mtime) whose copy the journal says we
                # completed, still there at the right size, is trusted: a re-run reads no photo bytes.
                done = [report.out / p for p in old if p.parts[0] == folder]
                if cached and done and done[0].is_file() and done[0].stat().st_size == photo.size:
                    copies.append(done[0])
                else:
                    copies.append(placing.copy_into(photo.path, report.out / folder, sha))
        except placing.ChangedError:
            _problem(
                report, rows, Problem(photo.path, "changed while being sorted; run again to sort it"), log
            )
            return
        except FileNotFoundError:
            _problem(report, rows, Problem(photo.path, "vanished during the run"), log)
            return
        rel_copies = [str(c.relative_to(report.out)) for c in copies]
        placing.remove_stale([report.out / p for p in old if str(p) not in rel_copies], report.out)
        if rescored or not (cached and rel_copies == [str(p) for p in old]):
            index.store(
                photo.rel.as_posix(), photo.size, photo.mtime_ns, sha, key, faces, None, rel_copies, embed_key
            )
    report.stage_seconds["place"] += time.perf_counter() - ts
    report.photos += 1
    for p in decision.accepted:
        report.per_person[p] += 1
    if decision.uncertain:
        report.uncertain += 1
    if not decision.accepted and not decision.uncertain:
        report.no_person += 1
    rows.append(_row(decision, sha, [str(c.relative_to(report.out)) for c in copies]))


def _row(d: Decision, sha: str, copies: list[str]) -> list[str]:
    status = "sorted" if d.accepted else ("uncertain" if d.uncertain else "no_person")
    people = ";".join(f"{p}:{s:.3f}" for p, s in sorted(d.people.items(), key=lambda x: -x[1]))
    return [
        str(d.photo.path),
        sha,
        status,
        people,
        ";".join(d.accepted),
        ";".join(d.uncertain),
        ";".join(copies),
        str(len(d.faces)),
        d.reason,
    ]


def _problem(report: ClassifyReport, rows: list, problem: Problem, log) -> None:
    report.problems.append(problem)
    log(f"skipped {problem}")
    rows.append([str(problem.path), "", "error", "", "", "", "", "", problem.message])


MANIFEST_HEADER = ["path", "sha256", "status", "people", "accepted", "uncertain", "copies", "faces", "reason"]


def _write_manifest(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_HEADER)
    w.writerows(sorted(rows, key=lambda r: r[0]))
    tmp = path.with_name(f".{path.name}.tmp")
    # surrogateescape: non-UTF-8 file names (bytes from another OS) must not crash the manifest.
    try:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise placing.DiskFullError(exc.errno, f"output disk is full while writing {path}") from None
        raise


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="photo", disable=not enabled, dynamic_ncols=True, smoothing=0.1, file=sys.stderr
    )
