"""Walking a labelled folder and matching each label file to the photo it describes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sorter.io.formats import IMAGE_SUFFIXES
from sorter.io.labels.createml import load_createml
from sorter.records import Problem

LABEL_KINDS = {".xml": "voc", ".txt": "yolo", ".json": "createml"}
RANK = {"voc": 0, "yolo": 1, "createml": 2}  # which label wins when a photo has several
_SPLIT_LABEL_DIRS = frozenset({"annotations", "labels"})
_LOOKED_FOR = ".jpg/.jpeg/.png/..."


@dataclass
class Tree:
    """Everything found under the root, as paths relative to it, in sorted depth-first order."""

    images: list[Path] = field(default_factory=list)
    labels: list[Path] = field(default_factory=list)
    class_files: list[Path] = field(default_factory=list)
    subdirs: dict[Path, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """One label file (or one CreateML entry) that describes one photo."""

    path: Path
    kind: str
    entry: dict | None = None  # the CreateML entry


@dataclass
class Broken:
    """An unparseable CreateML file: we cannot tell which photos it meant to label."""

    problem: Problem
    image_dirs: list[Path]
    skipped: int = 0  # unlabelled photos near it left out

    def report(self) -> Problem:
        p, n = self.problem, self.skipped
        note = f" ({n} unlabelled photo{'s' if n != 1 else ''} here skipped)" if n else ""
        return Problem(p.path, p.message + note, p.line)


@dataclass
class Matches:
    sources: dict[Path, list[Source]] = field(default_factory=dict)  # by photo (relative)
    ambiguous: set[Path] = field(default_factory=set)  # photos a label matches along with another
    broken: list[Broken] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def walk(root: Path) -> tuple[Tree, list[Problem]]:
    """Find photos, label files and classes.txt under ``root``; hidden entries are skipped and symlink
    loops end at a folder already seen."""
    tree, problems = Tree(), []
    seen: set[tuple[int, int]] = set()  # (device, inode) of visited folders
    stack = [Path()]
    while stack:
        rel = stack.pop()
        folder = root / rel
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(Problem(folder, f"cannot read folder: {exc.strerror or exc}"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        subdirs: list[str] = []
        for entry in entries:
            if entry.name.startswith("."):  # hidden dirs, ._ AppleDouble files, editor droppings
                continue
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir:
                subdirs.append(entry.name)
            elif is_file:
                path = rel / entry.name
                suffix = path.suffix.lower()
                if entry.name.lower() == "classes.txt":
                    tree.class_files.append(path)
                elif suffix in IMAGE_SUFFIXES:
                    tree.images.append(path)
                elif suffix in LABEL_KINDS:
                    tree.labels.append(path)
        tree.subdirs[rel] = subdirs
        stack.extend(rel / name for name in reversed(subdirs))  # sorted depth-first order
    return tree, problems


def image_dirs_for(tree: Tree, label_dir: Path) -> list[Path]:
    """Folders where a label's photo may be: its own, and for ``labels/`` or ``annotations/`` the
    mirrored place under a sibling ``images/`` (``labels/train`` -> ``images/train``)."""
    dirs = [label_dir]
    parts = label_dir.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].lower() in _SPLIT_LABEL_DIRS:
            parent = Path(*parts[:i])
            for sibling in tree.subdirs.get(parent, []):
                if sibling.lower() == "images":
                    dirs.append(parent / sibling / Path(*parts[i + 1 :]))
            break
    return dirs


def match_labels(root: Path, tree: Tree) -> Matches:
    """Which label files describe which photo: VOC and YOLO by file stem, CreateML by image name."""
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    by_name: dict[tuple[Path, str], Path] = {}
    for rel in tree.images:
        by_stem.setdefault((rel.parent, rel.stem), []).append(rel)
        by_name[(rel.parent, rel.name)] = rel

    out = Matches()
    for rel in tree.labels:
        path = root / rel
        kind = LABEL_KINDS[rel.suffix.lower()]
        dirs = image_dirs_for(tree, rel.parent)
        if kind == "createml":
            loaded = load_createml(path)
            out.problems += loaded.problems
            out.broken += [Broken(p, dirs) for p in loaded.breaks]
            for base, entry in loaded.entries:
                found = next((by_name[(d, base)] for d in dirs if (d, base) in by_name), None)
                if found is None:
                    out.problems.append(Problem(path, f"label has no image (looked for {base})"))
                else:
                    out.sources.setdefault(found, []).append(Source(path, "createml", entry))
            continue
        matches = [img for d in dirs for img in by_stem.get((d, rel.stem), [])]
        if not matches:
            where = "" if len(dirs) == 1 else f" here and in {dirs[1].as_posix()}/"
            out.problems.append(
                Problem(path, f"label has no image (looked for {rel.stem}{_LOOKED_FOR}{where})")
            )
        elif len(matches) > 1:
            names = ", ".join(m.as_posix() for m in matches)
            out.problems.append(Problem(path, f"label matches several photos ({names}); they are skipped"))
            out.ambiguous.update(matches)
        else:
            out.sources.setdefault(matches[0], []).append(Source(path, kind))
    return out
