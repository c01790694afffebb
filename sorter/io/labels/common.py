"""What the format parsers share: reading one photo's size, placing a box on it, numbers, text files.

Nothing here keeps state: every function returns its result and the problems it found.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sorter.io.decode import open_image, unreadable_reason
from sorter.io.exif import Box, displayed_size, exif_orientation, to_displayed
from sorter.records import LabelBox, Problem

# What every parser returns: the boxes it could place and the problems it found. Any problem leaves the
# photo out, because a face left unlabelled would teach the detector it is background.
Parsed = tuple[list[LabelBox], list[Problem]]


class BoxError(Exception):
    """A box-level problem; the message is what the user sees."""


@dataclass(frozen=True)
class ImageInfo:
    raw_w: int
    raw_h: int
    orientation: int
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """Displayed (width, height)."""
        return displayed_size(self.raw_w, self.raw_h, self.orientation)


def read_image_info(path: Path) -> ImageInfo | str:
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
    except Image.UnidentifiedImageError as exc:  # say what the file is instead (a video, a HEIC ...)
        return f"cannot read image: {unreadable_reason(exc, data)}"
    except Exception as exc:  # Pillow raises many types for damaged files
        msg = str(exc)
        return "cannot read image: truncated file" if "truncated" in msg else f"cannot read image: {msg}"
    if raw_w <= 0 or raw_h <= 0:
        return "cannot read image: zero size"
    return ImageInfo(raw_w, raw_h, orientation, hashlib.sha256(data).hexdigest())


def place(box: Box, info: ImageInfo, displayed: bool = False) -> Box | str:
    """A raw-pixel box (``displayed``: already on the upright view) in displayed pixels, clipped to the
    image; a str is the problem."""
    if not displayed:
        box = to_displayed(box, info.orientation, info.raw_w, info.raw_h)
    w, h = info.size
    x1, y1, x2, y2 = box
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        return f"empty box (outside the {w}x{h} image)"
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return "empty box (zero width or height)"
    return (x1, y1, x2, y2)


def number(value: object) -> float:
    """A finite float, or :class:`BoxError` naming the value."""
    if isinstance(value, bool):
        raise BoxError(f"non-numeric coordinate {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BoxError(f"non-numeric coordinate {value!r}") from None
    if not math.isfinite(out):
        raise BoxError(f"non-numeric coordinate {value!r}")
    return out


def read_text(path: Path) -> tuple[str | None, list[Problem]]:
    """A label file's UTF-8 text (a BOM is fine), or None and the problem."""
    try:
        return path.read_bytes().decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return None, [Problem(path, "not UTF-8 text")]
    except OSError as exc:
        return None, [Problem(path, f"cannot read file: {exc.strerror or exc}")]
