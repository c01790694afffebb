"""Stage 1: find the photos in a library folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sorter.records import Photo, Problem

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
                            ".heic", ".heif"})


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def scan(library: Path, skip: list[Path] | None = None) -> Iterator[Photo | Problem]:
    """Yield every image file under ``library`` in a stable order, and a Problem for each one we can't use.

    ``skip`` lists folders never to enter (the output folder when it sits inside the library, so a
    re-run never sorts its own copies). Symlinked folders are not followed (loops); a symlinked file is
    read through the link, a broken link is reported.
    """
    library = Path(library).absolute()
    skipped = {os.path.realpath(p) for p in (skip or [])}
    stack = [library]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Problem(folder, f"cannot list folder: {exc.strerror or exc}")
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files: .DS_Store, our own temp files, .Trash
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if os.path.realpath(path) not in skipped:
                        subdirs.append(path)
                    continue
                if not is_image_name(entry.name):
                    continue
                if entry.is_symlink() and not path.exists():
                    yield Problem(path, "broken symbolic link")
                    continue
                if entry.is_dir():  # a symlink to a folder named like a photo
                    yield Problem(path, "is a folder, not a photo")
                    continue
                st = path.stat()
            except OSError as exc:
                yield Problem(path, f"cannot read: {exc.strerror or exc}")
                continue
            yield Photo(path=path, rel=path.relative_to(library), size=st.st_size, mtime_ns=st.st_mtime_ns)
        stack.extend(reversed(subdirs))  # depth-first, alphabetical
