"""EXIF orientation, in one place: reading the tag, and applying it to boxes, Pillow images and arrays.

Every table here is the one ``PIL.ImageOps.exif_transpose`` uses, so that the boxes, the pixels we write
(``sorter.training.dataset``) and the pixels we decode (``sorter.io.decode``) agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112

# EXIF orientation -> the Pillow transpose that shows the photo upright (1, upright, is absent).
TRANSPOSE_FOR_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# The same for a numpy HxW(xC) array: a view, which the caller makes contiguous when it needs to.
UPRIGHT_ARRAY: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}

SWAPS_SIDES = frozenset({5, 6, 7, 8})  # orientations whose upright view is the stored one turned 90 degrees

Box = tuple[float, float, float, float]


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) of an open image; 1 when absent, unknown or unreadable.

    A value counts when ``exif_transpose`` would act on it (the same dictionary look-up), so that what
    we compute and what Pillow shows never disagree.
    """
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
        return int(value) if value in TRANSPOSE_FOR_ORIENTATION else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the photo unreadable
        return 1


def displayed_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of the upright view of a ``width`` x ``height`` stored image."""
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def upright_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """``a`` (stored pixels, HxWxC) as a view that shows the photo upright; ``a`` itself for 1."""
    turn = UPRIGHT_ARRAY.get(orientation)
    return a if turn is None else turn(a)


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
