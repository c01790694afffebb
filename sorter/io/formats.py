"""The file names photosort treats as photos: one list for the library scan and the label reader."""

from __future__ import annotations

import os

# .heic/.heif are listed so the scan reports them (a later issue decodes them); where Pillow cannot open
# one, the caller reports it as a problem like any other unreadable photo.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)


def is_image_name(name: str) -> bool:
    """Whether a file name (or path) ends in one of :data:`IMAGE_SUFFIXES`, in any case."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
