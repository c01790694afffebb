"""``photosort prelabel``: labelImg files with the model's guesses, for the teacher to correct (issue 13).

Each new photo (one photosort's label reader finds no label for) is analysed as classify analyses
it, and the faces the model is sure of (score at least the class's accept threshold; for people one
face one person) get a box with the predicted name, in a label file beside the photo. Existing label
files are never overwritten; photos with no face above the threshold get no file, so a later run with
a better model tries them again.

Boxes are written on the photo's *stored* pixels, not the upright view: labelImg shows images without
applying EXIF orientation (Qt does not), and photosort's own readers (:mod:`sorter.io.labels.voc`,
:mod:`sorter.io.labels.yolo`) take label boxes as stored pixels and turn them upright with the
photo's EXIF orientation. So the teacher sees the boxes on the faces, and ``read_labelled`` gives back
the predicted boxes in displayed pixels (to the pixel: the files hold whole pixels).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sorter.boxes import one_per_face, sureness, to_detector_box
from sorter.errors import PhotosortError
from sorter.heads.identity import assign_faces
from sorter.io.bundle import Bundle
from sorter.io.decode import open_image
from sorter.io.exif import displayed_size, exif_orientation
from sorter.io.labels import write as lw
from sorter.io.labels.folder import match_labels, walk
from sorter.io.scan import scan
from sorter.models.yolo import min_box_score
from sorter.pipeline.analyse import Analysed, Analyser
from sorter.pipeline.masks import mask_sorter
from sorter.pipeline.pool import batches
from sorter.records import Face, LabelBox, Photo, Problem
from sorter.training.detection import apply_box_map, default_map

FORMATS = ("voc", "yolo")


class PrelabelError(PhotosortError):
    """prelabel could not start (one-line message for the user)."""


@dataclass
class PrelabelReport:
    photos: int = 0  # photos found
    written: int = 0  # label files written
    skipped_existing: int = 0  # photos that already had a label file (never overwritten)
    problems: list[Problem] = field(default_factory=list)
    boxes: Counter = field(default_factory=Counter)  # boxes written, per class
    seconds: float = 0.0
    no_faces: int = 0  # photos with no face above the threshold: no file written
    fmt: str = "voc"

    def summary(self) -> str:
        kind = "Pascal VOC .xml" if self.fmt == "voc" else "YOLO .txt"
        per = ", ".join(f"{name} {k:,}" for name, k in sorted(self.boxes.items()))
        lines = [
            f"{self.photos:,} photos: {self.written:,} {kind} label files written in {self.seconds:.1f} s",
            f"{sum(self.boxes.values()):,} boxes" + (f": {per}" if per else ""),
        ]
        for n, what in (
            (self.skipped_existing, "photos already had a label file: skipped, never overwritten"),
            (self.no_faces, "photos with no face above the threshold: no file written"),
            (len(self.problems), "problems (each named above)"),
        ):
            if n:
                lines.append(f"{n:,} {what}")
        if self.written:
            lines.append("Next: open the folder in labelImg, correct the boxes and names, save each photo.")
        return "\n".join(lines)


def prelabel_folder(
    photos: Path, bundle: Bundle, fmt: str = "voc", log: Callable[[str], object] = print
) -> PrelabelReport:
    """Write a ``fmt`` (voc or yolo) label file beside every unlabelled photo under ``photos``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    root = Path(photos).absolute()
    if not root.is_dir():
        raise PrelabelError(f"{root}: no such folder")
    t0 = time.perf_counter()
    report = PrelabelReport(fmt=fmt)

    def problem(p: Problem) -> None:
        report.problems.append(p)
        log(str(p))

    tree, _ = walk(root)
    matches = match_labels(root, tree)
    # photos photosort's reader finds a label for (any format; beside the photo, or under labels/
    # beside images/), or whose label is shared with another photo: never labelled again
    labelled = set(matches.sources) | matches.ambiguous
    todo: list[Photo] = []
    for item in scan(root):
        if isinstance(item, Problem):
            problem(item)
            continue
        report.photos += 1
        if item.rel in labelled:
            report.skipped_existing += 1
        elif fmt == "yolo" and item.path.stem.lower() == "classes":
            problem(Problem(item.path, "its YOLO label would be classes.txt (the class list): rename it"))
        else:
            todo.append(item)

    masks = mask_sorter(bundle) if bundle.sorts_by == "mask" else None
    accept, low = bundle.thresholds()
    analyser = Analyser(
        bundle=bundle,
        min_score=min_box_score(bool(bundle.recogniser) or masks is not None, low),
        use_detector=bundle.runs_detector if masks is None else False,
        masks=masks,
    )
    box_map = bundle.box_map or default_map()
    order = lw.class_order(root, tree.class_files, bundle.classes)  # what a new classes.txt lists
    classes: dict[Path, list[str]] = {}  # by folder: its classes.txt's names, once made to list ours
    for batch in batches(todo, 4):
        for a in analyser.run(batch):
            path, got = a.photo.path, _boxes(a, accept, box_map, exclusive=masks is None)
            if isinstance(got, str):
                problem(Problem(path, got))
                continue
            (raw_w, raw_h, depth), chosen = got
            if not chosen:
                report.no_faces += 1
                continue
            try:
                if path.parent not in classes:
                    # YOLO: the folder's own classes.txt (labelImg reads that one). VOC: none is made,
                    # but the nearest one there is must list our names, or photosort's reader refuses them
                    where = path.parent if fmt == "yolo" else lw.nearest_class_dir(root, path.parent)
                    classes[path.parent] = lw.update_classes(where, order) if where else order
                if fmt == "voc":
                    lw.write_voc(path, raw_w, raw_h, depth, chosen)
                else:
                    lw.write_yolo(path, raw_w, raw_h, chosen, classes[path.parent])
            except FileExistsError:
                report.skipped_existing += 1
                continue
            except lw.ClassFileError as exc:
                problem(Problem(path, f"no label written: {exc}"))
                continue
            except OSError as exc:
                problem(Problem(path, f"cannot write label: {exc.strerror or exc}"))
                continue
            report.written += 1
            report.boxes.update(b.name for b in chosen)
    report.seconds = time.perf_counter() - t0
    return report


def _boxes(
    a: Analysed, accept: dict[str, float], box_map, exclusive: bool
) -> tuple[tuple[int, int, int], list[LabelBox]] | str:
    """((stored width, height, depth), the boxes to write on the stored pixels) of one analysed photo,
    or the problem when it cannot be read."""
    if a.faces is None:
        return a.error or a.read_error or "cannot read image"
    try:
        with open_image(a.photo.path) as im:
            raw_w, raw_h = im.size
            orientation, depth = exif_orientation(im), lw.image_depth(im.mode)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
        return f"cannot read image: {exc}"
    shown_w, shown_h = displayed_size(raw_w, raw_h, orientation)
    out = []
    for face, name in _chosen(a.faces, accept, exclusive):
        # the face's box as this labeller draws one (sorter.training.detection.predictions), upright
        x1, y1, x2, y2 = apply_box_map(to_detector_box(face.xyxy), box_map)
        upright = (max(x1, 0.0), max(y1, 0.0), min(x2, float(shown_w)), min(y2, float(shown_h)))
        pixels = lw.pixel_box(lw.to_stored(upright, orientation, raw_w, raw_h), raw_w, raw_h)
        if pixels is not None:
            out.append(LabelBox(name, tuple(float(v) for v in pixels)))  # type: ignore[arg-type]
    out.sort(key=lambda b: (b.xyxy[0], b.xyxy[1], b.name))
    return (raw_w, raw_h, depth), out


def _chosen(faces: list[Face], accept: dict[str, float], exclusive: bool) -> list[tuple[Face, str]]:
    """The faces that get a label, with its name: for people one face one person (the joint
    assignment classify uses), for mask states each face's most likely state; at least ``accept``."""
    if exclusive:
        picked = [(k, p, s) for p, (k, s) in assign_faces(faces).items()]
    else:
        picked = []
        for k, f in enumerate(faces):
            known = {c: s for c, s in f.scores.items() if c in accept}
            if known:
                name = max(known, key=known.__getitem__)
                # a pre-label is a detection: sure as the system ranks detections (the class score with
                # the box's detector score), so a weak box of the learnt face detector
                # (sorter.models.label_faces) on a blur the head took for a face is not written
                picked.append((k, name, sureness(known[name], f.det_score)))
    # one box a face (sorter.boxes.one_per_face): a second, weaker detection mostly inside a kept one
    # (the face detector's box shifted to a cheek) is the same face; labelImg would show it twice. The
    # surer box wins, sure as the system's detections are ranked: the class score with the face
    # detector's (detection.predictions)
    picked = [(k, name, s) for k, name, s in picked if name in accept and s >= accept[name]]
    sure = [sureness(s, faces[k].det_score) if exclusive else s for k, _, s in picked]  # mask states: sure
    kept = [picked[i] for i in one_per_face([faces[k].xyxy for k, _, _ in picked], sure)]
    return [(faces[k], name) for k, name, _ in sorted(kept)]
