"""YOLO ``.txt``: one ``class cx cy w h`` line per box, normalised to the stored pixels; the class
numbers index the nearest ``classes.txt``."""

from __future__ import annotations

from pathlib import Path

from sorter.io.labels.common import BoxError, ImageInfo, Parsed, number, place, read_text
from sorter.records import LabelBox, Problem


def parse_yolo(
    path: Path, info: ImageInfo, names: list[str], source: str, allowed: list[str] | None
) -> Parsed:
    """The boxes of one YOLO file for the photo ``info`` describes.

    ``names`` are the class names by number (``""`` for a blank line of classes.txt: a number with no
    name), ``source`` says where they come from in messages, and ``allowed``, when given, is the only
    class list a box may use.
    """
    text, problems = read_text(path)
    if text is None:
        return [], problems
    boxes: list[LabelBox] = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            problems.append(Problem(path, f"expected 5 fields 'class cx cy w h', found {len(fields)}", n))
            continue
        try:
            index = int(fields[0])
        except ValueError:
            problems.append(Problem(path, f"non-numeric class number '{fields[0]}'", n))
            continue
        try:
            cx, cy, bw, bh = (number(f) for f in fields[1:])
        except BoxError as exc:
            problems.append(Problem(path, str(exc), n))
            continue
        if not 0 <= index < len(names):
            known = ", ".join(name or "(blank)" for name in names) or "none"
            problems.append(
                Problem(path, f"unknown class number {index} ({source} has {len(names)}: {known})", n)
            )
            continue
        name = names[index]
        if not name:
            problems.append(
                Problem(path, f"class number {index} has no name (line {index + 1} of {source} is blank)", n)
            )
            continue
        if allowed is not None and name not in allowed:
            problems.append(Problem(path, f"unknown class '{name}' (known: {', '.join(allowed)})", n))
            continue
        if bw < 0 or bh < 0:
            problems.append(Problem(path, f"inverted box (negative {'width' if bw < 0 else 'height'})", n))
            continue
        # Normalised to the stored pixels (labelImg's Qt image ignores EXIF orientation).
        rw, rh = info.raw_w, info.raw_h
        box = ((cx - bw / 2) * rw, (cy - bh / 2) * rh, (cx + bw / 2) * rw, (cy + bh / 2) * rh)
        placed = place(box, info)
        if isinstance(placed, str):
            problems.append(Problem(path, placed, n))
        else:
            boxes.append(LabelBox(name, placed))
    return boxes, problems
