"""Read a labelImg folder (Pascal VOC, YOLO or CreateML) into a validated :class:`LabelledSet`.

Everything here only reads: nothing is ever written under the user's folder. Each bad input becomes a
:class:`Problem` naming the file (and line where one is known) and the run goes on. A photo with any
bad box is left out entirely, because a face left unlabelled would teach the detector it is background.
All boxes come out in *displayed* pixels (EXIF orientation applied), clipped to the image.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_et
from PIL import Image

from sorter.decode import open_image
from sorter.records import LabelBox, LabelledImage, LabelledSet, Problem

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_LABEL_KINDS = {".xml": "voc", ".txt": "yolo", ".json": "createml"}
_RANK = {"voc": 0, "yolo": 1, "createml": 2}  # which label wins when a photo has several
_SPLIT_LABEL_DIRS = frozenset({"annotations", "labels"})
_LOOKED_FOR = ".jpg/.jpeg/.png/..."

# PIL.ImageOps.exif_transpose's table, so our box maths and the written pixels agree.
TRANSPOSE_FOR_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Box = tuple[float, float, float, float]


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) of an open image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(0x0112)
    except Exception:  # a broken EXIF block must not make the photo unreadable
        return 1
    return value if isinstance(value, int) and value in TRANSPOSE_FOR_ORIENTATION else 1


def to_displayed(box: Box, orientation: int, raw_w: float, raw_h: float) -> Box:
    """Map an ``xyxy`` box on the stored pixels to the view ``exif_transpose`` shows."""
    x1, y1, x2, y2 = box
    corners = [(x1, y1), (x2, y2)]
    if orientation == 2:
        pts = [(raw_w - x, y) for x, y in corners]
    elif orientation == 3:
        pts = [(raw_w - x, raw_h - y) for x, y in corners]
    elif orientation == 4:
        pts = [(x, raw_h - y) for x, y in corners]
    elif orientation == 5:
        pts = [(y, x) for x, y in corners]
    elif orientation == 6:
        pts = [(raw_h - y, x) for x, y in corners]
    elif orientation == 7:
        pts = [(raw_h - y, raw_w - x) for x, y in corners]
    elif orientation == 8:
        pts = [(y, raw_w - x) for x, y in corners]
    else:
        return box
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


@dataclass
class _ImageInfo:
    raw_w: int
    raw_h: int
    orientation: int
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """Displayed (width, height)."""
        swap = self.orientation in (5, 6, 7, 8)
        return (self.raw_h, self.raw_w) if swap else (self.raw_w, self.raw_h)


@dataclass
class _ClassFile:
    path: Path  # absolute-ish (root / rel)
    names: list[str]
    ok: bool = True  # False when malformed or contradicting: its YOLO numbers cannot be trusted


@dataclass
class _Source:
    """One label file (or one CreateML entry) that describes one photo."""

    path: Path
    kind: str
    entry: dict | None = None  # the CreateML entry


@dataclass
class _Broken:
    """An unparseable CreateML file: we cannot tell which photos it meant to label."""

    path: Path
    message: str
    line: int | None
    image_dirs: list[Path]
    skipped: int = 0


@dataclass
class _Tree:
    images: list[Path] = field(default_factory=list)  # relative to root
    labels: list[Path] = field(default_factory=list)
    class_files: list[Path] = field(default_factory=list)
    subdirs: dict[Path, list[str]] = field(default_factory=dict)


class _BoxError(Exception):
    """A box-level problem; the message is what the user sees."""


def read_labelled(root: Path, classes: list[str] | None = None) -> LabelledSet:
    """Read every photo under ``root`` with its labelImg labels; never writes anything under ``root``."""
    if classes is not None:
        if len(set(classes)) != len(classes) or not all(c.strip() for c in classes):
            raise ValueError(f"class names must be unique and non-empty: {classes}")
        classes = list(classes)
    return _Reader(Path(root), classes).run()


class _Reader:
    def __init__(self, root: Path, classes: list[str] | None) -> None:
        self.root = root
        self.classes = classes
        self.problems: list[Problem] = []
        self.class_files: dict[Path, _ClassFile] = {}  # by relative folder
        self.first_class_file: _ClassFile | None = None
        self.used_names: set[str] = set()
        self.tree = _Tree()

    def problem(self, path: Path, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(path, message, line))

    # ---- walking -------------------------------------------------------------------------------

    def walk(self) -> None:
        seen: set[tuple[int, int]] = set()  # (device, inode) of visited folders: symlink loops end here
        stack = [Path()]
        while stack:
            rel = stack.pop()
            folder = self.root / rel
            try:
                st = folder.stat()
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                self.problem(folder, f"cannot read folder: {exc.strerror or exc}")
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
                        self.tree.class_files.append(path)
                    elif suffix in IMAGE_SUFFIXES:
                        self.tree.images.append(path)
                    elif suffix in _LABEL_KINDS:
                        self.tree.labels.append(path)
            self.tree.subdirs[rel] = subdirs
            stack.extend(rel / name for name in reversed(subdirs))  # sorted depth-first order

    # ---- classes.txt ---------------------------------------------------------------------------

    def read_class_files(self) -> None:
        # Root first, then shallower before deeper, so "the first classes.txt" is well defined.
        ordered = sorted(self.tree.class_files, key=lambda p: (len(p.parts), p.as_posix()))
        index_of: dict[str, int] = {}
        origin: dict[str, str] = {}
        if self.classes is not None:
            for i, name in enumerate(self.classes):
                index_of[name], origin[name] = i, "the given class list"
        for rel in ordered:
            cf = self.read_class_file(self.root / rel)
            self.class_files[rel.parent] = cf
            if not cf.ok:
                continue
            for i, name in enumerate(cf.names):
                if name in index_of and index_of[name] != i:
                    self.problem(
                        cf.path,
                        f"class order contradicts {origin[name]}: '{name}' is number {i} here "
                        f"but {index_of[name]} there",
                        i + 1,
                    )
                    cf.ok = False
                    break
            if not cf.ok:
                continue
            if self.first_class_file is None:
                self.first_class_file = cf
            for i, name in enumerate(cf.names):
                index_of.setdefault(name, i)
                origin.setdefault(name, str(cf.path))

    def read_class_file(self, path: Path) -> _ClassFile:
        text = self.read_text(path)
        if text is None:
            return _ClassFile(path, [], ok=False)
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        cf = _ClassFile(path, names)
        first_line: dict[str, int] = {}
        for n, name in enumerate(names, 1):
            if not name:
                self.problem(path, "empty class name (class numbers after it would shift)", n)
                cf.ok = False
            elif name in first_line:
                self.problem(path, f"class '{name}' listed twice (lines {first_line[name]} and {n})", n)
                cf.ok = False
            else:
                first_line[name] = n
        cf.names = [name for name in names if name]
        return cf

    def class_file_for(self, *folders: Path) -> _ClassFile | None:
        """The nearest classes.txt in a folder or its parents, up to root."""
        for folder in folders:
            for candidate in [folder, *folder.parents]:
                if candidate in self.class_files:
                    return self.class_files[candidate]
        return None

    def read_text(self, path: Path) -> str | None:
        try:
            return path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            self.problem(path, "not UTF-8 text")
        except OSError as exc:
            self.problem(path, f"cannot read file: {exc.strerror or exc}")
        return None

    # ---- matching labels to photos -------------------------------------------------------------

    def image_dirs_for(self, label_dir: Path) -> list[Path]:
        """Folders where a label's photo may be: its own, and for ``labels/`` or ``annotations/`` the
        mirrored place under a sibling ``images/`` (``labels/train`` -> ``images/train``)."""
        dirs = [label_dir]
        parts = label_dir.parts
        for i in range(len(parts) - 1, -1, -1):
            if parts[i].lower() in _SPLIT_LABEL_DIRS:
                parent = Path(*parts[:i])
                for sibling in self.tree.subdirs.get(parent, []):
                    if sibling.lower() == "images":
                        dirs.append(parent / sibling / Path(*parts[i + 1 :]))
                break
        return dirs

    def run(self) -> LabelledSet:
        self.walk()
        self.read_class_files()

        by_stem: dict[tuple[Path, str], list[Path]] = {}
        by_name: dict[tuple[Path, str], Path] = {}
        for rel in self.tree.images:
            by_stem.setdefault((rel.parent, rel.stem), []).append(rel)
            by_name[(rel.parent, rel.name)] = rel

        sources: dict[Path, list[_Source]] = {}
        ambiguous: set[Path] = set()
        broken: list[_Broken] = []
        for rel in self.tree.labels:
            path = self.root / rel
            kind = _LABEL_KINDS[rel.suffix.lower()]
            dirs = self.image_dirs_for(rel.parent)
            if kind == "createml":
                self.match_createml(path, dirs, by_name, sources, broken)
                continue
            matches = [img for d in dirs for img in by_stem.get((d, rel.stem), [])]
            if not matches:
                where = "" if len(dirs) == 1 else f" here and in {dirs[1].as_posix()}/"
                self.problem(path, f"label has no image (looked for {rel.stem}{_LOOKED_FOR}{where})")
            elif len(matches) > 1:
                names = ", ".join(m.as_posix() for m in matches)
                self.problem(path, f"label matches several photos ({names}); they are skipped")
                ambiguous.update(matches)
            else:
                sources.setdefault(matches[0], []).append(_Source(path, kind))

        images: list[LabelledImage] = []
        for rel in self.tree.images:
            if rel in ambiguous:
                continue
            image = self.read_one(rel, sources.get(rel, []), broken)
            if image is not None:
                images.append(image)

        for b in broken:
            note = f" ({b.skipped} unlabelled photo{'s' if b.skipped != 1 else ''} here skipped)"
            self.problem(b.path, b.message + (note if b.skipped else ""), b.line)

        self.problems.sort(key=lambda p: (str(p.path), p.line or 0, p.message))
        return LabelledSet(
            root=self.root, classes=self.final_classes(), images=images, problems=self.problems
        )

    def match_createml(
        self,
        path: Path,
        dirs: list[Path],
        by_name: dict[tuple[Path, str], Path],
        sources: dict[Path, list[_Source]],
        broken: list[_Broken],
    ) -> None:
        text = self.read_text(path)
        if text is None:
            broken.append(_Broken(path, "unreadable CreateML file", None, dirs))
            return
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            broken.append(_Broken(path, f"malformed JSON: {exc.msg}", exc.lineno, dirs))
            return
        if not isinstance(doc, list):
            # Valid JSON that is not CreateML (e.g. a photo-service sidecar): not a label at all.
            self.problem(path, "not a CreateML label file (expected a list of images); ignored")
            return
        for k, entry in enumerate(doc, 1):
            name = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name.strip():
                broken.append(_Broken(path, f"malformed CreateML: entry {k} has no image name", None, dirs))
                continue
            # Only the bare file name is used: a label resolves next to its photo, never elsewhere.
            base = re.split(r"[\\/]", name.strip())[-1]
            found = next((by_name[(d, base)] for d in dirs if (d, base) in by_name), None)
            if found is None:
                self.problem(path, f"label has no image (looked for {base})")
            else:
                sources.setdefault(found, []).append(_Source(path, "createml", entry))

    # ---- one photo -----------------------------------------------------------------------------

    def read_one(self, rel: Path, srcs: list[_Source], broken: list[_Broken]) -> LabelledImage | None:
        path = self.root / rel
        info = read_image_info(path)
        if isinstance(info, str):
            self.problem(path, info)
            return None
        if not srcs:
            hit = next((b for b in broken if rel.parent in b.image_dirs), None)
            if hit is not None:  # its labels may be in the broken file: not a safe negative
                hit.skipped += 1
                return None
            width, height = info.size
            return LabelledImage(path, None, width, height, [], info.sha256)

        srcs = sorted(srcs, key=lambda s: (_RANK[s.kind], str(s.path)))
        chosen = srcs[0]
        for other in srcs[1:]:
            self.problem(other.path, f"ignored for {rel.name}: already labelled by {chosen.path.name}")
        before = len(self.problems)
        if chosen.kind == "voc":
            boxes = self.parse_voc(chosen.path, rel, info)
        elif chosen.kind == "yolo":
            boxes = self.parse_yolo(chosen.path, rel, info)
        else:
            boxes = self.parse_createml(chosen.path, chosen.entry or {}, rel, info)
        if boxes is None or len(self.problems) > before:
            return None
        width, height = info.size
        return LabelledImage(path, chosen.path, width, height, boxes, info.sha256)

    def check_name(self, name: str, rel: Path, label_dir: Path) -> str | None:
        """The unknown-class message for a VOC/CreateML name, or None when it is allowed."""
        if self.classes is not None:
            known = self.classes
        else:
            cf = self.class_file_for(label_dir, rel.parent)
            if cf is None:
                return None
            known = cf.names
        if name in known:
            return None
        return f"unknown class '{name}' (known: {', '.join(known) or 'none'})"

    def place(self, box: Box, info: _ImageInfo, displayed: bool = False) -> LabelBox | str:
        """Convert a raw-pixel box to displayed pixels and clip it; a str is the problem."""
        if not displayed:
            box = to_displayed(box, info.orientation, info.raw_w, info.raw_h)
        w, h = info.size
        x1, y1, x2, y2 = box
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            return f"empty box (outside the {w}x{h} image)"
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return "empty box (zero width or height)"
        return LabelBox("", (x1, y1, x2, y2))

    def parse_voc(self, path: Path, rel: Path, info: _ImageInfo) -> list[LabelBox] | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.problem(path, f"cannot read label: {exc.strerror or exc}")
            return None
        try:
            root = safe_et.fromstring(data)
        except defusedxml.DefusedXmlException as exc:
            # Entities (billion laughs, external files) are refused by defusedxml, never expanded.
            what = "external references" if "External" in type(exc).__name__ else "entity declarations"
            if type(exc).__name__ == "DTDForbidden":
                what = "DTDs"
            self.problem(path, f"unsafe XML: {what} are not allowed")
            return None
        except ParseError as exc:
            line = exc.position[0] if getattr(exc, "position", None) else None
            msg = re.sub(r": line \d+, column \d+$", "", str(exc))
            self.problem(path, f"malformed XML: {msg}", line)
            return None
        if root.tag != "annotation":
            self.problem(path, f"not a Pascal VOC file (root element <{root.tag}>)")
            return None

        # labelImg draws on the stored pixels; if <size> matches only the rotated view, the boxes
        # were drawn on that view already. <size> is otherwise untrusted (often 0).
        size = (_voc_int(root, "size/width"), _voc_int(root, "size/height"))
        raw, shown = (info.raw_w, info.raw_h), info.size
        displayed = raw != shown and size == shown

        boxes: list[LabelBox] = []
        for k, obj in enumerate(root.findall("object"), 1):
            name = (obj.findtext("name") or "").strip()
            where = f"object {k}" + (f" ('{name}')" if name else "")
            if not name:
                self.problem(path, f"{where}: no <name>")
                continue
            unknown = self.check_name(name, rel, path.parent.relative_to(self.root))
            if unknown:
                self.problem(path, f"{where}: {unknown}")
            try:
                box = _voc_box(obj)
            except _BoxError as exc:
                self.problem(path, f"{where}: {exc}")
                continue
            placed = self.place(box, info, displayed)
            if isinstance(placed, str):
                self.problem(path, f"{where}: {placed}")
            elif not unknown:
                self.used_names.add(name)
                boxes.append(LabelBox(name, placed.xyxy))
        return boxes

    def parse_yolo(self, path: Path, rel: Path, info: _ImageInfo) -> list[LabelBox] | None:
        text = self.read_text(path)
        if text is None:
            return None
        label_dir = path.parent.relative_to(self.root)
        cf = self.class_file_for(label_dir, rel.parent)
        if cf is not None and not cf.ok:
            self.problem(path, f"skipped: class numbers are ambiguous because {cf.path} is invalid")
            return None
        if cf is None and self.classes is None:
            self.problem(path, "no classes.txt for this YOLO label (looked here and in parent folders)")
            return None
        names = cf.names if cf is not None else (self.classes or [])
        source = "classes.txt" if cf is not None else "the class list"

        boxes: list[LabelBox] = []
        for n, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                self.problem(path, f"expected 5 fields 'class cx cy w h', found {len(fields)}", n)
                continue
            try:
                index = int(fields[0])
            except ValueError:
                self.problem(path, f"non-numeric class number '{fields[0]}'", n)
                continue
            try:
                cx, cy, bw, bh = (_number(f) for f in fields[1:])
            except _BoxError as exc:
                self.problem(path, str(exc), n)
                continue
            if not 0 <= index < len(names):
                known = ", ".join(names) or "none"
                self.problem(path, f"unknown class number {index} ({source} has {len(names)}: {known})", n)
                continue
            name = names[index]
            if self.classes is not None and name not in self.classes:
                self.problem(path, f"unknown class '{name}' (known: {', '.join(self.classes)})", n)
                continue
            if bw < 0 or bh < 0:
                self.problem(path, f"inverted box (negative {'width' if bw < 0 else 'height'})", n)
                continue
            # Normalised to the stored pixels (labelImg's Qt image ignores EXIF orientation).
            rw, rh = info.raw_w, info.raw_h
            box = ((cx - bw / 2) * rw, (cy - bh / 2) * rh, (cx + bw / 2) * rw, (cy + bh / 2) * rh)
            placed = self.place(box, info)
            if isinstance(placed, str):
                self.problem(path, placed, n)
            else:
                self.used_names.add(name)
                boxes.append(LabelBox(name, placed.xyxy))
        return boxes

    def parse_createml(self, path: Path, entry: dict, rel: Path, info: _ImageInfo) -> list[LabelBox] | None:
        anns = entry.get("annotations")
        if not isinstance(anns, list):
            self.problem(path, f"malformed CreateML: {rel.name} has no 'annotations' list")
            return None
        boxes: list[LabelBox] = []
        for k, ann in enumerate(anns, 1):
            where = f"{rel.name} box {k}"
            name = ann.get("label") if isinstance(ann, dict) else None
            coords = ann.get("coordinates") if isinstance(ann, dict) else None
            if not isinstance(name, str) or not name.strip() or not isinstance(coords, dict):
                self.problem(path, f"malformed CreateML: {where} needs a 'label' and 'coordinates'")
                continue
            name = name.strip()
            unknown = self.check_name(name, rel, path.parent.relative_to(self.root))
            if unknown:
                self.problem(path, f"{where}: {unknown}")
            try:
                x, y, w, h = (_number(coords.get(key)) for key in ("x", "y", "width", "height"))
            except _BoxError as exc:
                self.problem(path, f"{where}: {exc}")
                continue
            if w < 0 or h < 0:
                self.problem(path, f"{where}: inverted box (negative {'width' if w < 0 else 'height'})")
                continue
            placed = self.place((x - w / 2, y - h / 2, x + w / 2, y + h / 2), info)  # x, y is the centre
            if isinstance(placed, str):
                self.problem(path, f"{where}: {placed}")
            elif not unknown:
                self.used_names.add(name)
                boxes.append(LabelBox(name, placed.xyxy))
        return boxes

    def final_classes(self) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        base = list(self.first_class_file.names) if self.first_class_file else []
        return base + sorted(self.used_names - set(base))


def read_image_info(path: Path) -> _ImageInfo | str:
    """Size, orientation and hash of one photo, or the problem message when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read image: {exc.strerror or exc}"
    if not data:
        return "cannot read image: empty file"
    try:
        with open_image(io.BytesIO(data)) as im:
            raw_w, raw_h = im.size
            # Decoding is the only way to catch truncation; JPEG draft mode keeps it cheap.
            im.draft("RGB", (max(1, raw_w // 8), max(1, raw_h // 8)))
            im.load()
            orientation = exif_orientation(im)
    except Image.DecompressionBombError:
        return "cannot read image: too many pixels"
    except Image.UnidentifiedImageError:
        return "cannot read image: not an image or unsupported format"
    except Exception as exc:  # Pillow raises many types for damaged files
        msg = str(exc)
        return "cannot read image: truncated file" if "truncated" in msg else f"cannot read image: {msg}"
    if raw_w <= 0 or raw_h <= 0:
        return "cannot read image: zero size"
    return _ImageInfo(raw_w, raw_h, orientation, hashlib.sha256(data).hexdigest())


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise _BoxError(f"non-numeric coordinate {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _BoxError(f"non-numeric coordinate {value!r}") from None
    if not math.isfinite(out):
        raise _BoxError(f"non-numeric coordinate {value!r}")
    return out


def _voc_int(root: Element, path: str) -> int | None:
    try:
        return int(float((root.findtext(path) or "").strip()))
    except ValueError:
        return None


def _voc_box(obj: Element) -> Box:
    bnd = obj.find("bndbox")
    if bnd is None:
        raise _BoxError("no <bndbox>")
    values: dict[str, float] = {}
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = bnd.findtext(tag)
        if text is None:
            raise _BoxError(f"no <{tag}>")
        try:
            values[tag] = _number(text.strip())
        except _BoxError:
            raise _BoxError(f"non-numeric {tag} {text.strip()!r}") from None
    for lo, hi in (("xmin", "xmax"), ("ymin", "ymax")):
        if values[lo] > values[hi]:
            raise _BoxError(f"inverted box ({lo} {values[lo]:g} > {hi} {values[hi]:g})")
    return (values["xmin"], values["ymin"], values["xmax"], values["ymax"])


def format_problems(problems: list[Problem]) -> str:
    """One line per problem: ``path[:line]: message``."""
    return "\n".join(str(p) for p in problems)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def summary(ls: LabelledSet) -> str:
    """E.g. ``312 photos (12 without boxes), 1,204 boxes in 9 classes; 3 problems``."""
    negatives = sum(1 for im in ls.images if not im.boxes)
    boxes = sum(len(im.boxes) for im in ls.images)
    return (
        f"{_plural(len(ls.images), 'photo')} ({negatives:,} without boxes), "
        f"{_plural(boxes, 'box', 'boxes')} in {_plural(len(ls.classes), 'class', 'classes')}; "
        f"{_plural(len(ls.problems), 'problem')}"
    )
