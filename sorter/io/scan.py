"""Stage 1: find the photos in a library folder."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from sorter.io.formats import LIVE_SUFFIXES, is_image_name, is_video_name
from sorter.records import Photo, Problem

OUTPUT_MARKER = (
    ".photosort.lock"  # sorter.pipeline.classify.LOCK_FILE: its folder is a photosort output folder
)


def is_output_folder(path: Path) -> bool:
    """A folder some photosort classify wrote (it keeps its state in OUTPUT_MARKER): copies, not originals."""
    return os.path.exists(os.path.join(path, OUTPUT_MARKER))


def scan(library: Path, skip: list[Path] | None = None, videos: bool = False) -> Iterator[Photo | Problem]:
    """Yield every image (and video) file under ``library`` in a stable order, and a Problem for each
    one we can't use (``videos``: video files too, :data:`~sorter.io.formats.VIDEO_SUFFIXES`).

    ``skip`` lists folders never to enter (the output folder when it sits inside the library, so a
    re-run never sorts its own copies); the output folders of earlier runs (they hold a ``.photosort``
    state folder) are never entered either. Symlinked folders are not followed (loops); a symlinked file is
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
                    if os.path.realpath(path) not in skipped and not is_output_folder(path):
                        subdirs.append(path)
                    continue
                if not (is_image_name(entry.name) or (videos and is_video_name(entry.name))):
                    continue
                if entry.is_symlink():
                    problem = _bad_link(path)
                    if problem is not None:
                        yield problem
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


def _bad_link(path: Path) -> Problem | None:
    """Why a symbolic link cannot be followed, or None when it leads to something."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Problem(path, "symbolic link loop (the link leads back to itself)")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return Problem(path, f"broken symbolic link (its target {os.readlink(path)!r} does not exist)")
        return Problem(path, f"cannot follow symbolic link: {exc.strerror or exc}")
    return None


def pair_live(photos: list[Photo]) -> tuple[list[Photo], dict[str, list[Photo]]]:
    """Live Photos: a MOV beside a still of the same name (stem, in any case, in the same folder)
    follows the still instead of being sorted on its own. Returns the photos to sort, and the MOVs
    by their still's ``rel`` (posix)."""
    stills: dict[tuple[str, str], Photo] = {}
    for p in photos:
        if is_image_name(p.path.name):
            stills.setdefault((p.rel.parent.as_posix(), p.rel.stem.lower()), p)
    follow: dict[str, list[Photo]] = {}
    keep = []
    for p in photos:
        still = stills.get((p.rel.parent.as_posix(), p.rel.stem.lower()))
        if p.path.suffix.lower() in LIVE_SUFFIXES and still is not None:
            follow.setdefault(still.rel.as_posix(), []).append(p)
        else:
            keep.append(p)
    return keep, follow
