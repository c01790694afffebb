"""Pascal VOC ``.xml``, as labelImg writes it: one file per photo, boxes in stored pixels."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_et

from sorter.io.exif import Box
from sorter.io.labels.common import BoxError, ImageInfo, Parsed, number, place
from sorter.records import LabelBox, Problem


def parse_voc(path: Path, info: ImageInfo, check_name: Callable[[str], str | None]) -> Parsed:
    """The boxes of one VOC file for the photo ``info`` describes; ``check_name`` gives the problem with
    a class name, or None when the name is allowed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [Problem(path, f"cannot read label: {exc.strerror or exc}")]
    try:
        root = safe_et.fromstring(data)
    except defusedxml.DefusedXmlException as exc:
        # Entities (billion laughs, external files) are refused by defusedxml, never expanded.
        what = "external references" if "External" in type(exc).__name__ else "entity declarations"
        if type(exc).__name__ == "DTDForbidden":
            what = "DTDs"
        return [], [Problem(path, f"unsafe XML: {what} are not allowed")]
    except ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        msg = re.sub(r": line \d+, column \d+$", "", str(exc))
        return [], [Problem(path, f"malformed XML: {msg}", line)]
    if root.tag != "annotation":
        return [], [Problem(path, f"not a Pascal VOC file (root element <{root.tag}>)")]

    # labelImg draws on the stored pixels; if <size> matches only the rotated view, the boxes
    # were drawn on that view already. <size> is otherwise untrusted (often 0).
    size = (_int(root, "size/width"), _int(root, "size/height"))
    raw, shown = (info.raw_w, info.raw_h), info.size
    displayed = raw != shown and size == shown

    boxes: list[LabelBox] = []
    problems: list[Problem] = []
    for k, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        where = f"object {k}" + (f" ('{name}')" if name else "")
        if not name:
            problems.append(Problem(path, f"{where}: no <name>"))
            continue
        unknown = check_name(name)
        if unknown:
            problems.append(Problem(path, f"{where}: {unknown}"))
        try:
            box = _box(obj)
        except BoxError as exc:
            problems.append(Problem(path, f"{where}: {exc}"))
            continue
        placed = place(box, info, displayed)
        if isinstance(placed, str):
            problems.append(Problem(path, f"{where}: {placed}"))
        elif not unknown:
            boxes.append(LabelBox(name, placed))
    return boxes, problems


def _int(root: Element, path: str) -> int | None:
    try:
        return int(float((root.findtext(path) or "").strip()))
    except ValueError:
        return None


def _box(obj: Element) -> Box:
    bnd = obj.find("bndbox")
    if bnd is None:
        raise BoxError("no <bndbox>")
    values: dict[str, float] = {}
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = bnd.findtext(tag)
        if text is None:
            raise BoxError(f"no <{tag}>")
        try:
            values[tag] = number(text.strip())
        except BoxError:
            raise BoxError(f"non-numeric {tag} {text.strip()!r}") from None
    for lo, hi in (("xmin", "xmax"), ("ymin", "ymax")):
        if values[lo] > values[hi]:
            raise BoxError(f"inverted box ({lo} {values[lo]:g} > {hi} {values[hi]:g})")
    return (values["xmin"], values["ymin"], values["xmax"], values["ymax"])
