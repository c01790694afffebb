"""Stage 6: copy photos into their folders, safely.

Originals are only ever read. A copy is written under a hidden temporary name in the destination
folder, flushed, given the original's timestamps, and then linked to its final name, which fails
rather than overwrite; so a crash never leaves a partial file under a real name, and two different
photos called IMG_0001.jpg both survive (the second gets a suffix from its content hash).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

from sorter.io.decode import sha256_file

TMP_PREFIX = ".photosort-tmp-"


class ChangedError(Exception):
    """The original changed between reading and copying (someone is editing the library)."""


class DiskFullError(OSError):
    """The output disk is full. What was placed so far is complete; a re-run resumes."""


def copy_into(src: Path, folder: Path, sha256: str) -> Path:
    """Copy ``src`` into ``folder`` byte for byte; return the final path. Idempotent for the same photo."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"output disk is full while creating {folder}") from None
        raise
    name = src.name
    dest = folder / name
    if dest.exists():
        if _same(dest, src, sha256):
            return dest
        dest = folder / suffixed(name, sha256)
        if dest.exists() and _same(dest, src, sha256):
            return dest
    tmp = folder / f"{TMP_PREFIX}{os.getpid()}-{sha256[:16]}"
    try:
        digest = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if digest.hexdigest() != sha256:
            raise ChangedError(f"{src} changed while it was being sorted; it will be retried on the next run")
        shutil.copystat(src, tmp)  # keep the original's modification time
        try:
            os.link(tmp, dest)  # atomic, and never replaces an existing file
        except FileExistsError:
            if not _same(dest, src, sha256):
                raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if dest.exists():  # file systems without hard links (FAT, some network shares)
                raise FileExistsError(dest) from None
            os.replace(tmp, dest)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"output disk is full while writing {dest}") from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def suffixed(name: str, sha256: str, limit: int = 255) -> str:
    """``stem~<hash>.ext`` for a second photo of the same name, shortened to fit a file name (255 bytes)."""
    stem, suffix = os.path.splitext(name)
    tail = f"~{sha256[:10]}{suffix}"
    while stem and len(os.fsencode(stem + tail)) > limit:
        stem = stem[:-1]
    return stem + tail


def _same(dest: Path, src: Path, sha256: str) -> bool:
    try:
        return dest.stat().st_size == src.stat().st_size and sha256_file(dest) == sha256
    except OSError:
        return False


def reuse(old: list[Path], folder: Path, src: Path, size: int) -> Path | None:
    """The copy of ``src`` the journal ``old`` says was made in ``folder`` (under its name or the
    suffixed one), still there at ``size`` bytes; None when there is none to trust."""
    stem, suffix = os.path.splitext(src.name)
    for p in old:
        if p.parent == folder and (
            p.name == src.name or (p.name.startswith(stem + "~") and p.name.endswith(suffix))
        ):
            with contextlib.suppress(OSError):
                if p.is_file() and p.stat().st_size == size:
                    return p
    return None


def remove_stale(paths: list[Path], root: Path) -> None:
    """Remove copies we made earlier that the current decision no longer wants (never an original)."""
    root = root.resolve()
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            if root in p.resolve().parents:
                p.unlink()


def clean_temp(root: Path) -> int:
    """Delete temporary files a killed run left behind."""
    n = 0
    if root.is_dir():
        for p in root.rglob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n
