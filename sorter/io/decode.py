"""Stage 2: decode a photo at the size the models need, the right way up.

JPEG can decode at 1/2, 1/4 or 1/8 size almost for free (DCT scaling), which is 2-3x faster than a
full decode of a 12-MP phone photo. EXIF orientation is applied after the reduced decode so that boxes
are in the orientation people see.

:func:`decode_work` is what classify uses: the file is read once (the same bytes are hashed for the
index and decoded), and the photo comes out at a *canonical* size, the smallest power-of-two reduction
whose long side is still >= ``WORK_SIDE``. The same photo decoded in full and then reduced by
:func:`canonical` gives nearly the same pixels, so what the models find does not depend on how a photo
was decoded (a naive full-size loop and classify agree). Measured on 12-MP JPEGs, one core: OpenCV's
reduced decode 36 ms at 1/4 and 45 ms at 1/2 (Pillow's ``draft``: 48 and 160 ms), 96 ms in full.

HEIC/HEIF photos (iPhone) decode with pillow-heif, registered with Pillow by :func:`open_image` on its
first call (nothing is imported at ``import sorter``). libheif applies the HEIF rotation and mirroring
(``irot``/``imir``) itself and pillow-heif then sets the EXIF orientation it hands Pillow to 1, so the
orientation is applied exactly once (the HEIF rule: ``irot``/``imir`` decide, EXIF orientation is only
informative). A file no decoder reads gets a reason naming what it is (:func:`unreadable_reason`).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from sorter.io.exif import displayed_size, exif_orientation, upright_array
from sorter.io.formats import HEAD_BYTES, UNKNOWN, Kind, describe_head, sniff
from sorter.records import Decoded, Photo

# A 12-MP phone photo is 12e6 pixels; 50x that is no photo anyone took. Refusing early protects memory
# from decompression bombs (a tiny PNG that claims 100,000 x 100,000 pixels).
MAX_PIXELS = 600_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Faces in the canonical image: a make_library.py face is >= 3.4% of the long side, so >= 55 px at 1600,
# enough for a 112-px aligned crop. A 12-MP photo (4032 px) decodes at 1/2: 2016 px.
WORK_SIDE = 1600
# Files larger than this are hashed as a stream and decoded from the path, not held in memory whole.
READ_WHOLE_MAX = 64 << 20


class DecodeError(Exception):
    """The file is not a photo we can read. The message is a short reason for the user."""


def sha256_file(path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def reduction(long_side: int, side: int) -> int:
    """The largest power-of-two reduction (1..8 for JPEG DCT scaling, any beyond) keeping >= ``side``."""
    k = 1
    while -(-long_side // (k * 2)) >= side:
        k *= 2
    return k


def canonical(rgb: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, int]:
    """``rgb`` reduced by :func:`reduction` with area averaging (what DCT scaling approximates), and k."""
    import cv2

    h, w = rgb.shape[:2]
    k = reduction(max(h, w), side)
    if k == 1:
        return rgb, 1
    size = (-(-w // k), -(-h // k))  # libjpeg rounds scaled sizes up
    return cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA), k


def reduce_to(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its long side reduced to ``max_side`` by area averaging (unchanged if not longer)."""
    import cv2

    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    small = np.ascontiguousarray(rgb)
    # Halve first while it stays >= 2x the target: area averaging by a whole factor is ~15x faster
    # than by a fraction (2016 -> 640 px: 10 ms this way against 20 ms directly).
    while max(small.shape[:2]) >= 2 * max_side:
        hh, ww = small.shape[:2]
        small = cv2.resize(small, (ww // 2, hh // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def shrink(d: Decoded, max_side: int) -> Decoded:
    """``d`` with its long side reduced to ``max_side`` (area averaging), for a model that wants less."""
    rgb = np.asarray(d.rgb)
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return d
    if max_side not in d.views:  # YOLO and the face detector both want 640 px: resize once
        small = reduce_to(rgb, max_side)
        d.views[max_side] = Decoded(
            photo=d.photo, rgb=small, scale=d.full_wh[0] / small.shape[1], full_wh=d.full_wh
        )
    return d.views[max_side]


def read_photo(photo: Photo) -> tuple[str, bytes | None]:
    """Content hash of ``photo`` and its bytes (None when too large to hold: decode reads the path)."""
    if photo.size > READ_WHOLE_MAX:
        return sha256_file(photo.path), None
    with open(photo.path, "rb") as fh:
        data = fh.read()
    return hashlib.sha256(data).hexdigest(), data


def decode_work(photo: Photo, data: bytes | None = None, side: int = WORK_SIDE) -> Decoded:
    """Decode ``photo`` (from ``data`` when given) at the canonical size for ``side`` (module doc)."""
    if photo.size == 0 or data == b"":
        raise DecodeError("empty file (0 bytes)")
    if data is not None:
        fast = _decode_jpeg(photo, data, side)
        if fast is not None:
            return fast
    d = decode(photo, max_side=1 << 30, draft=side, data=data)
    rgb, _ = canonical(np.asarray(d.rgb), side)
    return Decoded(photo=photo, rgb=rgb, scale=d.full_wh[0] / rgb.shape[1], full_wh=d.full_wh)


def _decode_jpeg(photo: Photo, data: bytes, side: int) -> Decoded | None:
    """OpenCV's reduced JPEG decode, for plain colour/grey JPEGs that end properly; None otherwise (the
    general path then decodes, or gives the reason the photo cannot be read)."""
    import cv2

    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):  # truncated: let Pillow name the problem
        return None
    try:
        with open_image(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            w, h = im.size
            if w * h > MAX_PIXELS:
                return None
            orientation = exif_orientation(im)
    except Exception:  # noqa: BLE001 - anything odd: the general path decides
        return None
    k = reduction(max(w, h), side)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}.get(
        k, cv2.IMREAD_REDUCED_COLOR_8
    )
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return None
    # cvtColor, not a [..., ::-1] view made contiguous: 2 ms against ~15 ms for a 3-MP image
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if orientation != 1:
        rgb = np.ascontiguousarray(upright_array(rgb, orientation))
    if k > 8:  # beyond DCT scaling (a photo over 13,000 px): area-reduce the rest of the way
        rgb, _ = canonical(rgb, side)
    full_wh = displayed_size(w, h, orientation)
    return Decoded(photo=photo, rgb=rgb, scale=full_wh[0] / rgb.shape[1], full_wh=full_wh)


def decode(
    photo: Photo, max_side: int = 1280, draft: int | None = None, data: bytes | None = None
) -> Decoded:
    """Decode ``photo`` so that its longer side is about ``max_side`` (never upscaled) with Pillow.

    ``draft``: the size JPEG DCT scaling may reduce to (default ``max_side``); ``data``: the file's bytes.
    """
    if photo.size == 0 or data == b"":
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(photo.path if data is None else io.BytesIO(data)) as im:
                full_wh = displayed_size(*im.size, exif_orientation(im))
                if im.format == "JPEG":
                    # draft picks the largest DCT scale that still gives >= the requested size.
                    want = draft or max_side
                    im.draft("RGB", (want, want))
                if im.format != "HEIF":  # HEIF opens at its primary image, which need not be the first
                    im.seek(0)  # multi-frame GIF/TIFF/WebP: the first frame is the photo
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb = _to_rgb(im)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(unreadable_reason(exc, photo.path if data is None else data)) from None
    except OSError as exc:
        if exc.errno is not None:
            raise  # the file system's error (vanished, permission): not a verdict on the photo, not cached
        raise DecodeError(unreadable_reason(exc, photo.path if data is None else data)) from None
    except (SyntaxError, ValueError, EOFError, TypeError, RuntimeError) as exc:  # RuntimeError: libheif
        raise DecodeError(unreadable_reason(exc, photo.path if data is None else data)) from None
    h, w = rgb.shape[:2]
    long_side = max(w, h)
    if long_side > max_side:
        scale = max_side / long_side
        rgb = np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        h, w = rgb.shape[:2]
    return Decoded(photo=photo, rgb=rgb, scale=full_wh[0] / w, full_wh=full_wh)


def open_image(path) -> Image.Image:
    """Pillow's own ``Image.open``, not the wrapper ultralytics installs on import.

    That wrapper reacts to any unreadable file (random bytes named .jpg) by trying to install and
    import a HEIF plugin: a network attempt and a crash (ModuleNotFoundError) instead of a reason.
    HEIC/HEIF photos open through pillow-heif, registered here on the first call (:func:`register_heif`).
    """
    register_heif()
    opener = Image.open
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and opener is getattr(patches, "image_open", None):
        opener = getattr(patches, "_image_open", opener)
    return opener(path)


_heif_state: list[str | None] = []  # [] untried; [None] registered; [why not]


def register_heif() -> str | None:
    """Register pillow-heif's HEIF opener with Pillow, once per process (~50 ms, the first call only).

    None when HEIC photos decode, else what is missing. Thumbnails, depth maps and auxiliary images are
    left unread: a photo is always decoded from its own pixels, as a JPEG is.
    """
    if not _heif_state:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
            _heif_state.append(None)
        except Exception as exc:  # noqa: BLE001 - not installed, or its libheif does not load
            first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            _heif_state.append(f"pillow-heif, needed to decode it, is not available ({first})")
    return _heif_state[0]


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any mode (CMYK, 16-bit, greyscale, palette with transparency) to 8-bit RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.uint32)
        peak = 65535 if im.mode.startswith("I;16") else max(1, int(arr.max()))
        im = Image.fromarray((arr * 255 // peak).astype(np.uint8), "L")
    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"))


def unreadable_reason(exc: BaseException, src: bytes | str | os.PathLike | None = None) -> str:
    """One line naming why a photo cannot be decoded, from the decoder's exception and what the file's
    first bytes say it is (``src``: its bytes or its path): the format and what is wrong with it, or that
    it is no photo at all, never a bare "corrupt"."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image too large (over {MAX_PIXELS:,} pixels; possible decompression bomb)"
    head = _head(src)
    kind = sniff(head) if head else None
    if isinstance(exc, UnidentifiedImageError):
        if kind is None:
            return "not an image Pillow can read (unknown or corrupt format)"
        return _unidentified(kind, head, src)
    text = str(exc)
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    label = kind.label if kind is not None and kind.photo else None
    if _truncated(text):
        return f"{label}, truncated (incomplete image data)" if label else _TRUNCATED
    if kind is not None and kind.pillow in _BMFF_DECODERS:
        return f"{kind.label}, but {_BMFF_DECODERS[kind.pillow]} cannot decode it: {first}"
    return f"{label}, damaged: {first}" if label else first


def _unidentified(kind: Kind, head: bytes, src) -> str:
    """Why Pillow found no decoder for a file whose first bytes say it is ``kind``."""
    if kind is UNKNOWN:
        return f"not an image (starts with {describe_head(head)})"
    if not kind.photo:
        return kind.label
    if kind.pillow == "HEIF" and register_heif() is not None:
        return f"{kind.label}, but {register_heif()}"
    if kind.pillow == "AVIF" and not features.check("avif"):
        return "an AVIF image; no decoder for it installed (this Pillow was built without AVIF)"
    why = _decoder_says(kind.pillow, src)
    # ISO media: libheif's or libavif's "end of file" is as often a garbled box as a cut file: their words
    if kind.pillow in _BMFF_DECODERS:
        return f"{kind.label}, but {_BMFF_DECODERS[kind.pillow]} cannot decode it: {why}"
    if _truncated(why):
        return f"{kind.label}, truncated (incomplete image data)"
    return f"{kind.label}, damaged (its header cannot be read: {why})"


def _decoder_says(fmt: str | None, src) -> str:
    """The message of the Pillow plugin for ``fmt`` when it opens ``src`` (Image.open drops it)."""
    Image.init()
    factory = Image.OPEN.get(fmt or "", (None,))[0]
    if factory is None or src is None:
        return "no decoder accepted it"
    try:
        with io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb") as fh:
            factory(fh, None).close()
    except Exception as exc:  # noqa: BLE001 - each plugin raises its own types
        text = str(exc).strip()
        return text.splitlines()[0][:160] if text else type(exc).__name__
    return "its header reads, yet Pillow did not accept it"


def _head(src) -> bytes:
    if src is None:
        return b""
    if isinstance(src, bytes):
        return src[:HEAD_BYTES]
    try:
        with open(src, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return b""


_TRUNCATED = "truncated file (incomplete image data)"
_BMFF_DECODERS = {"HEIF": "pillow-heif", "AVIF": "Pillow's AVIF decoder"}
_TRUNCATION_WORDS = ("truncated", "end of file", "insufficient input data", "file size too small")


def _truncated(text: str) -> bool:
    """Whether a decoder's message says the data stops early (Pillow's and libheif's wording)."""
    low = text.lower()
    return any(w in low for w in _TRUNCATION_WORDS)
