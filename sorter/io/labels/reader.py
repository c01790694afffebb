"""Reading a whole labelled folder: classes.txt files, each photo with the label that describes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sorter.io.labels.checks import final_classes, rare_class_warnings
from sorter.io.labels.classes import ClassFile, check_order, read_class_file
from sorter.io.labels.common import ImageInfo, Parsed, read_image_info
from sorter.io.labels.createml import parse_createml
from sorter.io.labels.folder import RANK, Broken, Source, Tree, match_labels, walk
from sorter.io.labels.voc import parse_voc
from sorter.io.labels.yolo import parse_yolo
from sorter.records import LabelBox, LabelledImage, LabelledSet, Problem


def read_labelled(root: Path, classes: list[str] | None = None) -> LabelledSet:
    """Read every photo under ``root`` with its labelImg labels; never writes anything under ``root``.

    ``classes`` (evaluate passes the model's) is the only class list allowed, kept as given; without it
    the list is the first classes.txt's order, then other names sorted, leaving out classes with no box.
    """
    if classes is not None:
        if len(set(classes)) != len(classes) or not all(c.strip() for c in classes):
            raise ValueError(f"class names must be unique and non-empty: {classes}")
        classes = list(classes)
    root = Path(root)
    tree, problems = walk(root)
    ctx, class_problems, warnings = _read_class_files(root, tree, classes)
    problems += class_problems
    matches = match_labels(root, tree)
    problems += matches.problems

    images: list[LabelledImage] = []
    skipped_boxes: list[LabelBox] = []  # good boxes in photos left out for a problem
    for rel in tree.images:
        if rel in matches.ambiguous:
            continue
        image, boxes, image_problems = _read_one(ctx, rel, matches.sources.get(rel, []), matches.broken)
        problems += image_problems
        if image is not None:
            images.append(image)
        else:
            skipped_boxes += boxes
    problems += [b.report() for b in matches.broken]

    final, class_warnings = final_classes(root, images, skipped_boxes, ctx.first, classes)
    warnings += class_warnings
    if classes is None:  # with a given list an unknown name is a problem already
        warnings += rare_class_warnings(images, final)
    return LabelledSet(
        root=root,
        classes=final,
        images=images,
        problems=sorted(problems, key=_order),
        warnings=sorted(warnings, key=_order),
    )


def _order(p: Problem) -> tuple[str, int, str]:
    return (str(p.path), p.line or 0, p.message)


@dataclass(frozen=True)
class _Context:
    root: Path
    classes: list[str] | None
    class_files: dict[Path, ClassFile]  # by relative folder
    first: ClassFile | None  # the first good classes.txt: its order is the class list's

    def class_file_for(self, *folders: Path) -> ClassFile | None:
        """The nearest classes.txt in a folder or its parents, up to root."""
        for folder in folders:
            for candidate in [folder, *folder.parents]:
                if candidate in self.class_files:
                    return self.class_files[candidate]
        return None

    def name_checker(self, rel: Path, label_dir: Path) -> Callable[[str], str | None]:
        """For a VOC/CreateML name: the unknown-class message, or None when it is allowed."""
        if self.classes is not None:
            known: list[str] | None = self.classes
        else:
            cf = self.class_file_for(label_dir, rel.parent)
            known = cf.known if cf is not None else None

        def check(name: str) -> str | None:
            if known is None or name in known:
                return None
            return f"unknown class '{name}' (known: {', '.join(known) or 'none'})"

        return check


def _read_class_files(
    root: Path, tree: Tree, classes: list[str] | None
) -> tuple[_Context, list[Problem], list[Problem]]:
    # Root first, then shallower before deeper, so "the first classes.txt" is well defined.
    ordered = sorted(tree.class_files, key=lambda p: (len(p.parts), p.as_posix()))
    files, problems, notes = [], [], []
    for rel in ordered:
        cf, file_problems, file_notes = read_class_file(root / rel)
        files.append(cf)
        problems += file_problems
        notes += file_notes
    files, first, order_problems = check_order(files, classes)
    by_folder = {rel.parent: cf for rel, cf in zip(ordered, files, strict=True)}
    return _Context(root, classes, by_folder, first), problems + order_problems, notes


def _read_one(
    ctx: _Context, rel: Path, srcs: list[Source], broken: list[Broken]
) -> tuple[LabelledImage | None, list[LabelBox], list[Problem]]:
    """(the photo, or None when left out; the boxes read; the problems)."""
    path = ctx.root / rel
    info = read_image_info(path)
    if isinstance(info, str):
        return None, [], [Problem(path, info)]
    if not srcs:
        hit = next((b for b in broken if rel.parent in b.image_dirs), None)
        if hit is not None:  # its labels may be in the broken file: not a safe negative
            hit.skipped += 1
            return None, [], []
        width, height = info.size
        return LabelledImage(path, None, width, height, [], info.sha256), [], []

    srcs = sorted(srcs, key=lambda s: (RANK[s.kind], str(s.path)))
    chosen = srcs[0]
    problems = [
        Problem(other.path, f"ignored for {rel.name}: already labelled by {chosen.path.name}")
        for other in srcs[1:]
    ]
    boxes, label_problems = _parse(ctx, chosen, rel, info)
    if label_problems:
        return None, boxes, problems + label_problems
    width, height = info.size
    return LabelledImage(path, chosen.path, width, height, boxes, info.sha256), boxes, problems


def _parse(ctx: _Context, src: Source, rel: Path, info: ImageInfo) -> Parsed:
    label_dir = src.path.parent.relative_to(ctx.root)
    if src.kind == "voc":
        return parse_voc(src.path, info, ctx.name_checker(rel, label_dir))
    if src.kind == "createml":
        return parse_createml(src.path, src.entry or {}, rel.name, info, ctx.name_checker(rel, label_dir))
    cf = ctx.class_file_for(label_dir, rel.parent)
    if cf is not None and not cf.ok:
        return [], [Problem(src.path, f"skipped: class numbers are ambiguous because {cf.path} is invalid")]
    if cf is None and ctx.classes is None:
        return [], [
            Problem(src.path, "no classes.txt for this YOLO label (looked here and in parent folders)")
        ]
    if cf is not None:
        return parse_yolo(src.path, info, cf.names, "classes.txt", ctx.classes)
    return parse_yolo(src.path, info, ctx.classes or [], "the class list", ctx.classes)
