"""Checks on the whole folder once every photo is read: the final class list and what to warn about.

Rules (warnings: no photo is left out for them):

* A class with no box in any photo read (labelImg's built-in ``dog``, ``person``, ... left in
  classes.txt) is left out of the class list, in one line naming them all. YOLO numbers were already
  turned into names with the full classes.txt, so leaving classes out here shifts nothing.
* A class with fewer than :data:`RARE_BOXES` boxes while another class has at least
  :data:`RARE_RATIO` times as many is probably a typo (``withmask`` among ``with_mask``) or too rare to
  learn: one warning each, suggesting the closest other class name (``difflib``, case ignored). Folders
  where every class is that small (a quick try-out) get no warning.

With a given class list (evaluate passes the model's) neither applies: that list is kept as it is, and
a name outside it is a problem already.
"""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path

from sorter.io.labels.classes import ClassFile
from sorter.records import LabelBox, LabelledImage, Problem

RARE_BOXES = 3
RARE_RATIO = 5


def final_classes(
    root: Path,
    images: list[LabelledImage],
    skipped_boxes: list[LabelBox],
    first: ClassFile | None,
    classes: list[str] | None,
) -> tuple[list[str], list[Problem]]:
    """The class list (the first classes.txt's order, then other names sorted; classes without a box left
    out) and the one warning naming those left out. ``classes`` when given is returned unchanged.

    ``skipped_boxes`` are the good boxes of photos left out for a problem: a name seen only there is
    left out too, and the warning says why it has no box.
    """
    if classes is not None:
        return list(classes), []
    counts = Counter(b.name for im in images for b in im.boxes)
    in_skipped = {b.name for b in skipped_boxes}
    base = first.known if first is not None else []
    listed = base + sorted((set(counts) | in_skipped) - set(base))
    empty = [name for name in listed if not counts[name]]
    warnings: list[Problem] = []
    if empty:
        n = len(empty)
        message = f"{n} {'class has' if n == 1 else 'classes have'} no boxes, left out: {', '.join(empty)}"
        only_skipped = [name for name in empty if name in in_skipped]
        if only_skipped:
            message += f" ({', '.join(only_skipped)}: boxes only in photos skipped for problems)"
        warnings.append(Problem(first.path if first is not None else root, message))
    return [name for name in listed if counts[name]], warnings


def rare_class_warnings(images: list[LabelledImage], classes: list[str]) -> list[Problem]:
    """One warning per class with very few boxes (module doc), at the first label file using it."""
    counts = Counter(b.name for im in images for b in im.boxes)
    if not counts:
        return []
    most_name, most = counts.most_common(1)[0]
    rare = [c for c in classes if 0 < counts[c] < RARE_BOXES and most >= RARE_RATIO * counts[c]]
    common = [c for c in classes if c not in rare]
    warnings = []
    for name in rare:
        files = list(
            dict.fromkeys(im.label for im in images if im.label and any(b.name == name for b in im.boxes))
        )
        n = counts[name]
        message = f"class '{name}' has only {n} box{'es' if n != 1 else ''} ('{most_name}' has {most})"
        if len(files) > 1:
            message += f", also in {', '.join(_rel(f, files[0]) for f in files[1:])}"
        guess = _closest(name, common)
        if guess is not None:
            message += f"; did you mean '{guess}'? (a misspelt name becomes an extra class)"
        else:
            message += "; too few to learn: label more photos of it, or check the name"
        warnings.append(Problem(files[0], message))
    return warnings


def _closest(name: str, others: list[str]) -> str | None:
    by_lower: dict[str, str] = {}
    for other in others:  # the first spelling wins when two differ only in case
        by_lower.setdefault(other.lower(), other)
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return by_lower[found[0]] if found else None


def _rel(path: Path, near: Path) -> str:
    """``path`` as short as it can be said next to ``near``."""
    try:
        return path.relative_to(near.parent).as_posix()
    except ValueError:
        return path.as_posix()
