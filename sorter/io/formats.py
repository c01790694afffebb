"""The file names photosort treats as photos (one list for the library scan and the label reader), and
what a file is from its first bytes, to say why one cannot be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# .heic/.heif decode with pillow-heif (registered by sorter.io.decode on first use).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)
# Videos classify samples frames of (sorter.video.library); a MOV beside a still of the same name is the
# still's Live Photo and follows it instead (sorter.io.scan.pair_live).
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi"})
LIVE_SUFFIXES = frozenset({".mov"})
HEAD_BYTES = 64  # what :func:`sniff` needs: a file type box with a few compatible brands

# ISO base media (ftyp) brands. HEIF: HEVC-coded still images and sequences (iPhone photos are 'heic').
HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})  # generic: the codec is in the other brands
AVIF_BRANDS = frozenset({b"avif", b"avis"})
MOV_BRANDS = frozenset({b"qt  "})
# Box types a QuickTime movie without ftyp (older cameras) starts with.
MOV_BOXES = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


@dataclass(frozen=True)
class Kind:
    """What a file is. ``label``: what the user reads: the format of a photo ("JPEG photo"), or the whole
    reason for a file that is no photo ("a video (MP4), not a photo"); ``pillow``: Pillow's format name
    (its plugin decodes it); ``photo``: whether it is a still image at all."""

    label: str
    pillow: str | None = None
    photo: bool = True


UNKNOWN = Kind("not an image", photo=False)


def is_image_name(name: str) -> bool:
    """Whether a file name (or path) ends in one of :data:`IMAGE_SUFFIXES`, in any case."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_video_name(name: str) -> bool:
    """Whether a file name (or path) ends in one of :data:`VIDEO_SUFFIXES`, in any case."""
    return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def sniff(head: bytes) -> Kind:
    """What a file is from its first :data:`HEAD_BYTES` bytes (the contents, never the name)."""
    if head.startswith(b"\xff\xd8\xff"):
        return Kind("JPEG photo", "JPEG")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind("PNG image", "PNG")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Kind("GIF image", "GIF")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Kind("TIFF image", "TIFF")
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 64, 108, 124):
        return Kind("BMP image", "BMP")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Kind("WebP image", "WEBP")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return Kind("a video (AVI), not a photo", photo=False)
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    if head[4:8] in MOV_BOXES:
        return Kind("a video (QuickTime MOV), not a photo", photo=False)
    if head.startswith(b"\x1aE\xdf\xa3"):
        return Kind("a video (MKV/WebM), not a photo", photo=False)
    if head.startswith(b"%PDF"):
        return Kind("a PDF document, not a photo", photo=False)
    if head.startswith(b"PK\x03\x04"):
        return Kind("a ZIP archive, not a photo", photo=False)
    return UNKNOWN


def _iso_media(head: bytes) -> Kind:
    """An ISO base media file (HEIF, AVIF, MP4, MOV, 3GP, ...), told apart by its ftyp brands."""
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, min(max(size, 16), len(head)) - 3, 4)}
    if major in HEIC_BRANDS:
        return Kind("HEIC photo", "HEIF")
    if major in AVIF_BRANDS:
        return Kind("AVIF image", "AVIF")
    if major in HEIF_BRANDS:
        if compatible & AVIF_BRANDS:
            return Kind("AVIF image", "AVIF")
        if compatible & HEIC_BRANDS:
            return Kind("HEIC photo", "HEIF")
        return Kind("HEIF image", "HEIF")
    if major in MOV_BRANDS:
        return Kind("a video (QuickTime MOV), not a photo", photo=False)
    if major.startswith((b"3gp", b"3g2")):
        return Kind("a video (3GP), not a photo", photo=False)
    if major.startswith(b"M4A") or major == b"M4B ":
        return Kind("an audio file (M4A), not a photo", photo=False)
    if major.startswith((b"crx", b"CR3")):
        return Kind("a Canon CR3 raw photo; no decoder for raw photos installed", photo=False)
    if major.startswith((b"mp4", b"iso", b"avc", b"M4V", b"mmp4", b"MSNV", b"dash", b"XAVC", b"f4v")):
        return Kind("a video (MP4), not a photo", photo=False)
    brand = major.decode("ascii", "replace").strip()
    return Kind(f"an ISO media file (brand {brand!r}), not a photo format photosort reads", photo=False)


def describe_head(head: bytes) -> str:
    """The first bytes as hex and, when they are mostly text, as text (one line, printable only)."""
    first = head[:8]
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in head[:16])
    hexed = " ".join(f"{b:02x}" for b in first)
    printable = sum(32 <= b < 127 for b in head[:16])
    return f"{hexed} {text!r}" if head and printable >= 0.75 * min(16, len(head)) else hexed or "nothing"
