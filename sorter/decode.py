"""Stage 2: decode a photo at the size the models need, the right way up.

JPEG can decode at 1/2, 1/4 or 1/8 size almost for free (DCT scaling, Pillow's ``draft``), which is
2-3x faster than a full decode of a 12-MP phone photo. EXIF orientation is applied after the reduced
decode so that boxes are in the orientation people see.
"""

from __future__ import annotations

import hashlib
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sorter.records import Decoded, Photo

# A 12-MP phone photo is 12e6 pixels; 50x that is no photo anyone took. Refusing early protects memory
# from decompression bombs (a tiny PNG that claims 100,000 x 100,000 pixels).
MAX_PIXELS = 600_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class DecodeError(Exception):
    """The file is not a photo we can read. The message is a short reason for the user."""


def sha256_file(path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def decode(photo: Photo, max_side: int = 1280) -> Decoded:
    """Decode ``photo`` so that its longer side is about ``max_side`` (never upscaled)."""
    if photo.size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(photo.path) as im:
                full_wh = _displayed_size(im)
                if im.format == "JPEG":
                    # draft picks the largest DCT scale that still gives >= the requested size.
                    im.draft("RGB", (max_side, max_side))
                im.seek(0)  # multi-frame GIF/TIFF/WebP: the first frame is the photo
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb = _to_rgb(im)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(_reason(exc)) from None
    except OSError as exc:
        if exc.errno is not None:
            raise  # the file system's error (vanished, permission): not a verdict on the photo, not cached
        raise DecodeError(_reason(exc)) from None
    except (SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise DecodeError(_reason(exc)) from None
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
    """
    opener = Image.open
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and opener is getattr(patches, "image_open", None):
        opener = getattr(patches, "_image_open", opener)
    return opener(path)


def _displayed_size(im: Image.Image) -> tuple[int, int]:
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


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


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (unknown or corrupt format)"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image too large (over {MAX_PIXELS:,} pixels; possible decompression bomb)"
    if "truncated" in text.lower():
        return "truncated file (incomplete image data)"
    return text.splitlines()[0][:200] if text else type(exc).__name__
