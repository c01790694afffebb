"""``classes.txt``: the class names YOLO numbers refer to, one per line, as labelImg writes them.

labelImg gives every line a number, a blank one included, so a blank line is kept as a number with no
name (``""``): the names after it keep their numbers. Blank lines at the end number nothing and are
dropped. The file is read as UTF-8 (a BOM is fine, and a UTF-16 BOM is honoured); labelImg on Windows
often saves it in the Windows code page instead, so cp1252 is the fallback, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sorter.records import Problem

FALLBACK_ENCODING = "cp1252"


@dataclass(frozen=True)
class ClassFile:
    path: Path
    names: list[str]  # by class number; "" for a blank line
    ok: bool = True  # False when unreadable, malformed or contradicting: its YOLO numbers cannot be trusted

    @property
    def known(self) -> list[str]:
        """The names, without the blank ones."""
        return [name for name in self.names if name]


def decode_class_text(data: bytes, path: Path) -> tuple[str | None, list[Problem], list[Problem]]:
    """(text, problems, notes) for the bytes of a classes.txt."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Notepad's "Unicode"
        try:
            return data.decode("utf-16"), [], []
        except UnicodeDecodeError:
            pass
    else:
        try:
            return data.decode("utf-8-sig"), [], []
        except UnicodeDecodeError:
            pass
        try:
            text = data.decode(FALLBACK_ENCODING)
        except UnicodeDecodeError:
            pass
        else:
            accented = [name for line in text.splitlines() if not line.isascii() and (name := line.strip())]
            shown = ", ".join(accented[:5]) + (", ..." if len(accented) > 5 else "")
            note = (
                "not UTF-8, so read as Windows-1252 (labelImg's usual encoding on Windows)"
                + (f": {shown}" if shown else "")
                + "; check these names, or save the file as UTF-8"
            )
            return text, [], [Problem(path, note)]
    fix = "open it in a text editor and save it as UTF-8 (Notepad: File > Save As, Encoding: UTF-8)"
    return None, [Problem(path, f"cannot read class names: the text is not UTF-8 or Windows-1252; {fix}")], []


def read_class_file(path: Path) -> tuple[ClassFile, list[Problem], list[Problem]]:
    """(the class file, problems, notes). A problem makes the file not ``ok``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ClassFile(path, [], ok=False), [Problem(path, f"cannot read file: {exc.strerror or exc}")], []
    text, problems, notes = decode_class_text(data, path)
    if text is None:
        return ClassFile(path, [], ok=False), problems, notes
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    first_line: dict[str, int] = {}
    for n, name in enumerate(names, 1):
        if not name:
            continue
        if name in first_line:
            problems.append(
                Problem(path, f"class '{name}' listed twice (lines {first_line[name]} and {n})", n)
            )
        else:
            first_line[name] = n
    return ClassFile(path, names, ok=not problems), problems, notes


def check_order(
    files: list[ClassFile], given: list[str] | None
) -> tuple[list[ClassFile], ClassFile | None, list[Problem]]:
    """Mark the files whose numbering contradicts an earlier file's (or the given list) as not ok.

    ``files`` come root first, shallower before deeper. Returns the files, the first good one (whose
    order the class list follows) and the problems.
    """
    index_of: dict[str, int] = {}
    origin: dict[str, str] = {}
    for i, name in enumerate(given or []):
        index_of[name], origin[name] = i, "the given class list"
    out: list[ClassFile] = []
    first: ClassFile | None = None
    problems: list[Problem] = []
    for cf in files:
        clash = next(
            (
                (i, name)
                for i, name in enumerate(cf.names)
                if cf.ok and name and name in index_of and index_of[name] != i
            ),
            None,
        )
        if clash is not None:
            i, name = clash
            problems.append(
                Problem(
                    cf.path,
                    f"class order contradicts {origin[name]}: '{name}' is number {i} here "
                    f"but {index_of[name]} there",
                    i + 1,
                )
            )
            cf = replace(cf, ok=False)
        out.append(cf)
        if not cf.ok:
            continue
        if first is None:
            first = cf
        for i, name in enumerate(cf.names):
            if name:
                index_of.setdefault(name, i)
                origin.setdefault(name, str(cf.path))
    return out, first, problems
