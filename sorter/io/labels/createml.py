"""CreateML ``.json``: one file lists many photos, each with boxes given by centre and size."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sorter.io.labels.common import BoxError, ImageInfo, Parsed, number, place, read_text
from sorter.records import LabelBox, Problem


@dataclass
class CreateMLFile:
    """What one CreateML file holds: its entries by bare image name, and what was wrong with it.

    ``breaks`` are problems that hide which photos the file meant to label (unreadable, malformed JSON,
    an entry without an image name): unlabelled photos near it are then not safe negatives.
    """

    entries: list[tuple[str, dict]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    breaks: list[Problem] = field(default_factory=list)


def load_createml(path: Path) -> CreateMLFile:
    out = CreateMLFile()
    text, out.problems = read_text(path)
    if text is None:
        out.breaks.append(Problem(path, "unreadable CreateML file"))
        return out
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        out.breaks.append(Problem(path, f"malformed JSON: {exc.msg}", exc.lineno))
        return out
    if not isinstance(doc, list):
        # Valid JSON that is not CreateML (e.g. a photo-service sidecar): not a label at all.
        out.problems.append(Problem(path, "not a CreateML label file (expected a list of images); ignored"))
        return out
    for k, entry in enumerate(doc, 1):
        name = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            out.breaks.append(Problem(path, f"malformed CreateML: entry {k} has no image name"))
            continue
        # Only the bare file name is used: a label resolves next to its photo, never elsewhere.
        out.entries.append((re.split(r"[\\/]", name.strip())[-1], entry))
    return out


def parse_createml(
    path: Path, entry: dict, image_name: str, info: ImageInfo, check_name: Callable[[str], str | None]
) -> Parsed:
    """The boxes of one CreateML entry for the photo ``info`` describes (see :func:`parse_voc`)."""
    anns = entry.get("annotations")
    if not isinstance(anns, list):
        return [], [Problem(path, f"malformed CreateML: {image_name} has no 'annotations' list")]
    boxes: list[LabelBox] = []
    problems: list[Problem] = []
    for k, ann in enumerate(anns, 1):
        where = f"{image_name} box {k}"
        name = ann.get("label") if isinstance(ann, dict) else None
        coords = ann.get("coordinates") if isinstance(ann, dict) else None
        if not isinstance(name, str) or not name.strip() or not isinstance(coords, dict):
            problems.append(Problem(path, f"malformed CreateML: {where} needs a 'label' and 'coordinates'"))
            continue
        name = name.strip()
        unknown = check_name(name)
        if unknown:
            problems.append(Problem(path, f"{where}: {unknown}"))
        try:
            x, y, w, h = (number(coords.get(key)) for key in ("x", "y", "width", "height"))
        except BoxError as exc:
            problems.append(Problem(path, f"{where}: {exc}"))
            continue
        if w < 0 or h < 0:
            problems.append(
                Problem(path, f"{where}: inverted box (negative {'width' if w < 0 else 'height'})")
            )
            continue
        placed = place((x - w / 2, y - h / 2, x + w / 2, y + h / 2), info)  # x, y is the centre
        if isinstance(placed, str):
            problems.append(Problem(path, f"{where}: {placed}"))
        elif not unknown:
            boxes.append(LabelBox(name, placed))
    return boxes, problems
