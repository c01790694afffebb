"""Stage 2, decoding: one read for hash and pixels, reduced JPEG decoding, EXIF orientation, and the
canonical size that makes what the models see independent of how a photo was decoded (issue 4)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sorter.io.decode import (
    WORK_SIDE,
    DecodeError,
    canonical,
    decode,
    decode_work,
    read_photo,
    reduction,
    shrink,
)
from sorter.records import Photo


def _photo(path: Path) -> Photo:
    st = path.stat()
    return Photo(path=path, rel=Path(path.name), size=st.st_size, mtime_ns=st.st_mtime_ns)


def _smooth(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like image: smooth colour fields (noise would make JPEG and resampling disagree more)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def test_reduction_keeps_the_long_side_at_least_work_side():
    assert reduction(4032, WORK_SIDE) == 2 and reduction(1600, WORK_SIDE) == 1
    assert reduction(800, WORK_SIDE) == 1 and reduction(6400, WORK_SIDE) == 4
    assert reduction(40000, WORK_SIDE) == 16  # beyond JPEG's 1/8: the rest by area averaging


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decode_matches_pillow_in_every_exif_orientation(tmp_path, orientation):
    im = Image.fromarray(_smooth(3200, 2400))
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    im.save(path, quality=95, exif=exif)
    photo = _photo(path)
    sha, data = read_photo(photo)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    fast = decode_work(photo, data)  # OpenCV's reduced decode, orientation applied by us
    slow = decode_work(photo, None)  # Pillow, exif_transpose, then the canonical reduction
    a, b = np.asarray(fast.rgb).astype(int), np.asarray(slow.rgb).astype(int)
    assert a.shape == b.shape == ((1600, 1200, 3) if orientation >= 5 else (1200, 1600, 3))
    assert fast.full_wh == slow.full_wh and fast.scale == slow.scale == 2.0
    assert np.abs(a - b).mean() < 1.5, "a different picture, not just rounding"


def test_canonical_of_a_full_decode_is_the_reduced_decode(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(_smooth(4032, 3024, seed=1)).save(path, quality=92)
    photo = _photo(path)
    reduced = np.asarray(decode_work(photo, read_photo(photo)[1]).rgb).astype(int)
    full = np.asarray(decode(photo, max_side=1 << 30).rgb)
    canon, k = canonical(full)
    assert k == 2 and canon.shape == reduced.shape == (1512, 2016, 3)
    assert np.abs(canon.astype(int) - reduced).mean() < 1.5
    small = shrink(decode_work(photo, read_photo(photo)[1]), 640)
    assert np.asarray(small.rgb).shape == (480, 640, 3) and small.scale == pytest.approx(4032 / 640)


def test_broken_jpegs_are_reported_not_decoded_half(tmp_path):
    path = tmp_path / "full.jpg"
    Image.fromarray(_smooth(800, 600)).save(path, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:-4000])  # OpenCV would return a half-grey picture for this
    with pytest.raises(DecodeError, match="truncated"):
        decode_work(_photo(cut), read_photo(_photo(cut))[1])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        decode_work(_photo(empty), b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    with pytest.raises(DecodeError):
        decode_work(_photo(junk), junk.read_bytes())
