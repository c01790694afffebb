"""Face crops and photo thumbnails for the review page, made from library photos the index names.

Made on first request and kept in the output folder's index file (table ``crops``).
The photo is decoded as classify decodes it (displayed orientation, at most 1,600 px), so the stored
boxes (full-size displayed pixels) fall where they should. Written through a temporary name.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from PIL import Image, ImageDraw

from sorter.io.decode import DecodeError, decode_work, read_photo
from sorter.io.formats import is_video_name
from sorter.records import Photo

CROP_SIDE = 160
THUMB_SIDE = 480


def _decoded(library: Path, rel: str, at_s: float | None = None) -> tuple[Image.Image, float]:
    path = library / rel
    if is_video_name(rel):  # a video's face: the frame it was seen in, as sampled
        from sorter.video.library import frame_at

        try:
            rgb, scale = frame_at(path, at_s or 0.0)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many kinds; the page says "unreadable"
            raise DecodeError(f"video frame at {at_s or 0.0:.1f} s: {exc}") from None
        return Image.fromarray(rgb), scale
    st = path.stat()
    photo = Photo(path=path, rel=Path(rel), size=st.st_size, mtime_ns=st.st_mtime_ns)
    d = decode_work(photo, read_photo(photo)[1])
    return Image.fromarray(d.rgb), float(d.scale)


def crop_jpeg(library: Path, rel: str, box: tuple[float, ...], at_s: float | None = None) -> bytes:
    """The face with a margin of half its size around it, CROP_SIDE px square."""
    im, scale = _decoded(library, rel, at_s)
    x0, y0, x1, y1 = (v / scale for v in box)
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 1.5
    region = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    face = im.crop(region).resize((CROP_SIDE, CROP_SIDE), Image.Resampling.LANCZOS)
    return _jpeg(face)


def thumb_jpeg(library: Path, rel: str, box: tuple[float, ...], at_s: float | None = None) -> bytes:
    """The whole photo, THUMB_SIDE px on its long side, the face's box drawn on it."""
    im, scale = _decoded(library, rel, at_s)
    k = THUMB_SIDE / max(im.size)
    if k < 1:
        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.Resampling.LANCZOS)
    else:
        k = 1.0
    x0, y0, x1, y1 = (v / scale * k for v in box)
    draw = ImageDraw.Draw(im)
    for w, colour in ((4, (0, 0, 0)), (2, (255, 210, 0))):
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=w)
    return _jpeg(im)


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def cached(index_file: Path, name: str, make) -> bytes:
    """``make()``'s bytes, kept in the index file's ``crops`` table for next time.

    In the index rather than as files: the output folder holds only the teacher's folders (a crop file
    would look like a stray photo to anyone, or any tool, listing it), and a crop is written whole.
    """
    db = sqlite3.connect(index_file, timeout=30)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS crops (name TEXT PRIMARY KEY, data BLOB NOT NULL)")
        row = db.execute("SELECT data FROM crops WHERE name=?", (name,)).fetchone()
        if row is not None:
            return bytes(row[0])
        data = make()
        with db:
            db.execute("INSERT OR REPLACE INTO crops VALUES (?, ?)", (name, data))
        return data
    finally:
        db.close()
