"""Writing labelImg label files: Pascal VOC ``.xml``, YOLO ``.txt`` and ``classes.txt``.

The only module of :mod:`sorter.io.labels` that writes. It never overwrites a label file: each is
written under a hidden temporary name in the photo's folder, then given its final name with
``os.link`` (which fails when the name exists) and :class:`FileExistsError` is raised when it does.
``classes.txt`` is the exception: its existing lines are kept in their order (YOLO files refer to
their numbers) and missing names are appended, atomically (``os.replace``).

Boxes are in the pixels of the image *as stored* (EXIF orientation not applied), which is what
labelImg shows and what :mod:`.voc` and :mod:`.yolo` read (see :func:`to_stored`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, indent, tostring

from sorter.io.exif import Box, displayed_size, to_displayed
from sorter.io.labels.classes import FALLBACK_ENCODING, read_class_file
from sorter.records import LabelBox

CLASSES_FILE = "classes.txt"
PixelBox = tuple[int, int, int, int]
_INVERSE = {6: 8, 8: 6}  # every other orientation undoes itself
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class ClassFileError(ValueError):
    """An existing classes.txt that cannot be extended safely (the message names the file)."""


def to_stored(box: Box, orientation: int, raw_w: float, raw_h: float) -> Box:
    """A box on the displayed (upright) view as a box on the stored pixels: the inverse of
    :func:`sorter.io.exif.to_displayed` for a ``raw_w`` x ``raw_h`` stored image."""
    shown_w, shown_h = displayed_size(int(raw_w), int(raw_h), orientation)
    return to_displayed(box, _INVERSE.get(orientation, orientation), shown_w, shown_h)


def pixel_box(box: Box, width: int, height: int) -> PixelBox | None:
    """``box`` in whole pixels, clipped to a ``width`` x ``height`` image; None when nothing is left."""
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def image_depth(mode: str) -> int:
    """labelImg's ``<depth>``: 1 for a greyscale image, else 3."""
    return 1 if mode in _GREY_MODES else 3


def voc_path(image_path: Path) -> Path:
    return Path(image_path).with_suffix(".xml")


def yolo_path(image_path: Path) -> Path:
    return Path(image_path).with_suffix(".txt")


def write_voc(image_path: Path, width: int, height: int, depth: int, boxes: list[LabelBox]) -> Path:
    """Write ``<photo>.xml`` beside ``image_path`` as labelImg writes it; returns its path.

    ``width`` x ``height`` is the stored size, ``boxes`` are on the stored pixels (rounded to whole
    pixels). Raises :class:`FileExistsError` when the file exists, :class:`ValueError` for a box with
    nothing inside the image.
    """
    image_path = Path(image_path)
    top = Element("annotation")
    SubElement(top, "folder").text = image_path.absolute().parent.name
    SubElement(top, "filename").text = image_path.name
    SubElement(top, "path").text = str(image_path.absolute())
    SubElement(SubElement(top, "source"), "database").text = "Unknown"
    size = SubElement(top, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        SubElement(size, tag).text = str(value)
    SubElement(top, "segmented").text = "0"
    for box in boxes:
        x1, y1, x2, y2 = _pixels(box, width, height)
        obj = SubElement(top, "object")
        SubElement(obj, "name").text = box.name
        SubElement(obj, "pose").text = "Unspecified"
        # labelImg's rule: a box touching the image's edge is truncated
        edge = x1 <= 1 or y1 <= 1 or x2 >= width or y2 >= height
        SubElement(obj, "truncated").text = "1" if edge else "0"
        SubElement(obj, "difficult").text = "0"
        bnd = SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            SubElement(bnd, tag).text = str(value)
    indent(top, "\t")
    return _create(voc_path(image_path), tostring(top, encoding="utf-8") + b"\n")


def write_yolo(image_path: Path, width: int, height: int, boxes: list[LabelBox], classes: list[str]) -> Path:
    """Write ``<photo>.txt`` beside ``image_path``: one ``class cx cy w h`` line per box, normalised to
    the stored ``width`` x ``height``; ``classes`` are the names by number (the folder's classes.txt,
    :func:`update_classes`). Raises :class:`FileExistsError` when the file exists, :class:`ValueError`
    for a name not in ``classes`` or a box with nothing inside the image."""
    lines = []
    for box in boxes:
        if not box.name or box.name not in classes:
            raise ValueError(f"class '{box.name}' is not in the class list ({', '.join(classes)})")
        x1, y1, x2, y2 = _pixels(box, width, height)
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{classes.index(box.name)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
    return _create(yolo_path(image_path), "".join(lines).encode("utf-8"))


def find_class_file(folder: Path) -> Path | None:
    """The folder's classes.txt (any letter case, as :mod:`.folder` finds it), or None."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return None
    found = next((n for n in names if n.lower() == CLASSES_FILE), None)
    return Path(folder) / found if found is not None and (Path(folder) / found).is_file() else None


def read_class_names(path: Path) -> list[str]:
    """The names of a classes.txt by number (``""`` for a blank line); :class:`ClassFileError` when the
    file cannot be read or lists a name twice (its numbers cannot be trusted, so it is not extended)."""
    cf, problems, _ = read_class_file(path)
    if problems:
        raise ClassFileError("; ".join(str(p) for p in problems))
    return cf.names


def nearest_class_dir(root: Path, folder: Path) -> Path | None:
    """The folder of the classes.txt nearest ``folder`` (it, or a parent up to ``root``): the file
    photosort's reader checks the names of that folder's VOC labels against."""
    for d in [Path(folder), *Path(folder).parents]:
        if d != root and root not in d.parents:
            break
        if find_class_file(d) is not None:
            return d
    return None


def class_order(root: Path, class_files: list[Path], names: Iterable[str]) -> list[str]:
    """The names, by number, a new classes.txt under ``root`` lists: the first readable one's of
    ``class_files`` (relative to ``root``; root first, shallower before deeper, as photosort's reader
    picks the file its class list follows), then the missing ``names``. Files that agree with it
    keep agreeing, as the reader requires, when :func:`update_classes` appends in this order."""
    for rel in sorted(class_files, key=lambda p: (len(p.parts), p.as_posix())):
        try:
            have = read_class_names(root / rel)
        except ClassFileError:
            continue
        return have + [n for n in dict.fromkeys(names) if n and n not in have]
    return [n for n in dict.fromkeys(names) if n]


def update_classes(folder: Path, names: list[str]) -> list[str]:
    """Make ``folder``'s classes.txt list every one of ``names``; returns its names by number.

    A new file lists ``names`` in their order (``""`` for a number with no name, as in
    :func:`class_order`). An existing file keeps its lines and order, and the names it lacks are
    appended at the end in the order of ``names`` (in the encoding it was read in, when they fit).
    """
    folder = Path(folder)
    for _ in range(3):  # a classes.txt made by someone else meanwhile is read and extended instead
        path = find_class_file(folder)
        if path is not None:
            data = path.read_bytes()
            have = read_class_names(path)
            missing = [n for n in dict.fromkeys(names) if n and n not in have]
            if not missing:
                return have
            full = have + missing
        else:
            path, data, full = folder / CLASSES_FILE, None, list(names)
        encoding = _encoding(data) if data is not None else "utf-8"
        text = "".join(f"{name}\n" for name in full)
        try:
            payload = text.encode(encoding)
        except UnicodeEncodeError:
            payload = text.encode("utf-8")
        if data is not None:
            _replace(path, payload)
            return full
        try:
            _create(path, payload)
        except FileExistsError:
            continue
        return full
    raise ClassFileError(f"{folder / CLASSES_FILE}: keeps changing while being written; try again")


def _encoding(data: bytes) -> str:
    """The encoding :func:`sorter.io.labels.classes.decode_class_text` reads ``data`` in."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return FALLBACK_ENCODING
    return "utf-8"


def _pixels(box: LabelBox, width: int, height: int) -> PixelBox:
    pixels = pixel_box(box.xyxy, width, height)
    if pixels is None:
        raise ValueError(f"box {box.xyxy} of '{box.name}' is empty inside the {width}x{height} image")
    return pixels


def _temp(path: Path, data: bytes) -> Path:
    """``data`` written and flushed to disk under a hidden name in ``path``'s folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def _create(path: Path, data: bytes) -> Path:
    """Write ``path`` whole or not at all; never over an existing file (:class:`FileExistsError`)."""
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "label file exists", str(path))
    tmp = _temp(path, data)
    try:
        try:
            os.link(tmp, path)  # atomic, and fails when the name exists
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network drives): check, then rename
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "label file exists", str(path)) from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _replace(path: Path, data: bytes) -> None:
    tmp = _temp(path, data)
    try:
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
