"""Issue 14 item 3: HEIC/HEIF photos (iPhone) decode, sort and train like JPEGs, and a file no decoder reads
is named for what it is. Every file is real, written here with pillow-heif; nothing is mocked."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import synth
from conftest import tree_digest
from PIL import Image

import sorter
from sorter.io.decode import DecodeError, decode, decode_work, open_image, read_photo, register_heif
from sorter.io.exif import TRANSPOSE_FOR_ORIENTATION
from sorter.io.formats import sniff
from sorter.io.labels import read_labelled
from sorter.records import Photo
from sorter.training.dataset import build_yolo_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "face-mask-sample" / "test"
# Stored pixels that orientation o shows as the original: the inverse of the transpose that shows them.
INVERSE = {**TRANSPOSE_FOR_ORIENTATION, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
# pillow-heif's lossless HEVC, coded as RGB (matrix_coefficients 0: no YCbCr step, whose +-1 rounding
# was enough to move a face sitting on the review band's edge): decodes to the very same pixels
LOSSLESS = {"quality": -1, "chroma": 444, "matrix_coefficients": 0}


@pytest.fixture(autouse=True, scope="module")
def _heif_saver():
    assert register_heif() is None, "pillow-heif must be installed (requirements.txt)"


def encoded(img: Image.Image, fmt: str, orientation: int = 1, **kw) -> bytes:
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def stored(img: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores so that ``orientation`` shows ``img``."""
    return img if orientation == 1 else img.transpose(INVERSE[orientation])


def smooth(w: int, h: int, seed: int = 0) -> Image.Image:
    """A photo-like image (smooth colour fields and some texture) that codecs keep close."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [128 + 90 * np.sin(x / (37 + 9 * c) + c) * np.cos(y / (29 + 7 * c) - c) for c in range(3)]
    a = np.stack(chans, -1) + rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def put(path: Path, data: bytes) -> Photo:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Photo(path, Path(path.name), len(data), 0)


def pixels(photo: Photo, work: bool) -> tuple[np.ndarray, tuple[int, int], float]:
    d = decode_work(photo, read_photo(photo)[1]) if work else decode(photo, max_side=1 << 30)
    return np.asarray(d.rgb).astype(int), d.full_wh, d.scale


# ---------------------------------------------------------------------------------------------------
# decoding


def test_heic_decodes_to_the_source_pixels(tmp_path):
    src = smooth(640, 480)
    want = np.asarray(src).astype(int)
    for name, kw, mean_tol, max_tol in (("q95", {"quality": 95}, 2.5, 60), ("lossless", LOSSLESS, 0.6, 2)):
        photo = put(tmp_path / f"{name}.heic", encoded(src, "HEIF", **kw))
        with open_image(photo.path) as im:
            assert im.format == "HEIF" and im.size == (640, 480)
        assert sniff(photo.path.read_bytes()[:64]).label == "HEIC photo"
        for work in (False, True):
            got, full_wh, scale = pixels(photo, work)
            assert full_wh == (640, 480) and got.shape == want.shape and scale == 1.0
            diff = np.abs(got - want)
            assert diff.mean() < mean_tol and diff.max() <= max_tol, (name, work, diff.mean(), diff.max())


@pytest.mark.parametrize("o", range(1, 9))
def test_orientation_tags_show_heic_as_jpeg_shows_it(tmp_path, o):
    """The same stored pixels with the same EXIF Orientation, as JPEG and as HEIC: the same upright
    picture. pillow-heif writes the tag as HEIF irot/imir, libheif applies it, and the EXIF tag Pillow
    then sees reads 1, so the turn happens exactly once."""
    raw = stored(synth.quadrants(96, 64), o)
    jpeg = put(tmp_path / f"o{o}.jpg", encoded(raw, "JPEG", o, quality=95))
    heic = put(tmp_path / f"o{o}.heic", encoded(raw, "HEIF", o, quality=95))
    for work in (False, True):
        j, j_wh, j_scale = pixels(jpeg, work)
        h, h_wh, h_scale = pixels(heic, work)
        assert j_wh == h_wh == (96, 64) and j.shape == h.shape == (64, 96, 3) and j_scale == h_scale
        assert np.abs(j - h).mean() < 6, (o, work, np.abs(j - h).mean())
        quads = [h[:32, :48], h[:32, 48:], h[32:, :48], h[32:, 48:]]
        means = [q[6:-6, 6:-6].reshape(-1, 3).mean(0) for q in quads]
        for got, want in zip(means, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], strict=True):
            assert np.abs(got - np.array(want)).max() < 40, (o, work, means)


def test_turned_heic_reduces_like_the_jpeg(tmp_path):
    """A photo long enough to be reduced (3,300 px: half size): the canonical decode of the HEIC has the
    JPEG's size, scale and pixels, turned once."""
    raw = stored(smooth(3300, 240, seed=3), 6)
    jpeg = put(tmp_path / "long.jpg", encoded(raw, "JPEG", 6, quality=95))
    heic = put(tmp_path / "long.heic", encoded(raw, "HEIF", 6, quality=95))
    j, j_wh, j_scale = pixels(jpeg, True)
    h, h_wh, h_scale = pixels(heic, True)
    assert j_wh == h_wh == (3300, 240) and j.shape == h.shape == (120, 1650, 3)
    assert j_scale == h_scale == 2.0
    assert np.abs(j - h).mean() < 3


# ---------------------------------------------------------------------------------------------------
# files no decoder reads: one line that names what the file is


def bad_files(good_heic: bytes) -> dict[str, tuple[bytes, str]]:
    """{name: (bytes, the start of the reason)}"""
    mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x00\x08free" * 40
    mov = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + b"\x00\x00\x00\x08wide" * 40
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00\x00\x01\x00meta" * 30
    cannot = "HEIC photo, but pillow-heif cannot decode it: "
    return {
        "garbled.heic": (good_heic[:40] + random.Random(1).randbytes(len(good_heic) - 40), cannot),
        "fake.heic": (b"\x00\x00\x00\x18ftypheic not really", cannot),
        "cut.heic": (good_heic[: len(good_heic) // 2], "HEIC photo, truncated"),
        "avif-like.jpg": (avif, "AVIF image, but Pillow's AVIF decoder cannot decode it: "),
        "clip.jpg": (mp4, "a video (MP4), not a photo"),
        "live.jpg": (mov, "a video (QuickTime MOV), not a photo"),
        "random.jpg": (random.Random(0).randbytes(4000), "not an image (starts with "),
        "cut.jpg": (encoded(smooth(320, 240), "JPEG", quality=90)[:1500], "JPEG photo, truncated"),
    }


def test_unreadable_files_say_what_they_are(tmp_path):
    import ultralytics.utils.patches  # noqa: F401  - it wraps Image.open; photosort must not use that

    good = encoded(smooth(400, 300), "HEIF", **LOSSLESS)
    for name, (data, reason) in bad_files(good).items():
        photo = put(tmp_path / name, data)
        for work in (False, True):
            with pytest.raises(DecodeError) as exc:
                decode_work(photo, read_photo(photo)[1]) if work else decode(photo)
            msg = str(exc.value)
            assert msg.startswith(reason), (name, msg)
            assert "\n" not in msg and len(msg) < 240 and "corrupt" not in msg, (name, msg)


# ---------------------------------------------------------------------------------------------------
# classify: a HEIC sorts exactly like the same photo saved as JPEG; bad files are counted, the run goes on


def build_library(lib: Path, pairs_wanted: int) -> tuple[list[tuple[str, str]], dict]:
    """Sample photos as their original JPEG bytes and as lossless HEIC, one photo turned (EXIF 6 / irot) in
    both formats, and the bad files; returns the (jpeg, heic) pairs and the bad files."""
    names = sorted(p.stem for p in SAMPLE.glob("*.jpg"))[:pairs_wanted]
    pairs = []
    for name in names:
        jpg = (SAMPLE / f"{name}.jpg").read_bytes()
        with Image.open(io.BytesIO(jpg)) as im:
            rgb = im.convert("RGB")
        put(lib / "jpeg" / f"{name}.jpg", jpg)
        put(lib / "heic" / f"{name}.heic", encoded(rgb, "HEIF", **LOSSLESS))
        pairs.append((f"jpeg/{name}.jpg", f"heic/{name}.heic"))
    with Image.open(SAMPLE / f"{names[0]}.jpg") as im:
        turned = encoded(stored(im.convert("RGB"), 6), "JPEG", 6, quality=95)
    with Image.open(io.BytesIO(turned)) as im:  # its stored pixels (Pillow does not turn them on open)
        raw = im.convert("RGB")
    put(lib / "turned" / "a.jpg", turned)
    put(lib / "turned" / "a.heic", encoded(raw, "HEIF", 6, **LOSSLESS))
    pairs.append(("turned/a.jpg", "turned/a.heic"))
    bad = bad_files(encoded(smooth(400, 300), "HEIF", **LOSSLESS))
    for name, (data, _) in bad.items():
        put(lib / "bad" / name, data)
    return pairs, bad


def run_classify(base: Path, pairs_wanted: int, model=None, **options):
    lib, out = base / "lib", base / "sorted"
    pairs, bad = build_library(lib, pairs_wanted)
    before = tree_digest(lib)
    lines: list[str] = []
    report = sorter.classify(lib, out, model, log=lines.append, **options)
    assert tree_digest(lib) == before, "the library is only read"
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = {Path(r["path"]).relative_to(lib).as_posix(): r for r in csv.DictReader(fh)}
    assert not [line for line in lines if "worker processes failed" in line], lines
    return report, rows, pairs, bad


@pytest.fixture(scope="module")
def by_mask(tmp_path_factory):
    """Real face photos sorted by mask state, no model (in this process: see by_model for the workers)."""
    return run_classify(tmp_path_factory.mktemp("heic-mask"), 6, by="mask", workers=0)


@pytest.fixture(scope="module")
def by_model(tmp_path_factory, robust_model):
    """The same with a trained model on two worker processes (each registers pillow-heif itself)."""
    return run_classify(
        tmp_path_factory.mktemp("heic-model"), 8, robust_model, workers=2, batch=2, threshold=0.01, band=0.005
    )


def folders(row: dict) -> list[str]:
    return sorted(c.split("/")[0] for c in row["copies"].split(";") if c)


@pytest.mark.parametrize("run", ["by_mask", "by_model"])
def test_heic_photos_sort_exactly_like_the_same_jpeg(request, run):
    import json

    _, rows, pairs, _ = request.getfixturevalue(run)
    placed = 0
    for jpg, heic in pairs:
        a, b = rows[jpg], rows[heic]
        assert a["status"] == b["status"] and a["status"] != "error", (jpg, a, b)
        assert folders(a) == folders(b), (jpg, folders(a), folders(b))
        fa, fb = json.loads(a["faces_detail"] or "[]"), json.loads(b["faces_detail"] or "[]")
        assert len(fa) == len(fb), (jpg, fa, fb)
        for x, y in zip(fa, fb, strict=True):  # the same faces, in the same (displayed) place
            assert x.get("mask") == y.get("mask") and x.get("person") == y.get("person"), (jpg, x, y)
            assert np.abs(np.array(x["box"]) - np.array(y["box"])).max() < 3, (jpg, x["box"], y["box"])
        placed += bool(folders(a))
    if run == "by_mask":
        assert placed >= len(pairs) // 2, "too few photos placed for the comparison to mean anything"


@pytest.mark.parametrize("run", ["by_mask", "by_model"])
def test_bad_files_get_one_clear_line_and_the_run_goes_on(request, run):
    report, rows, pairs, bad = request.getfixturevalue(run)
    assert report.photos == 2 * len(pairs), "every good photo is sorted, whatever the bad files around it"
    problems = {p.path.name: p.message for p in report.problems}
    assert set(problems) == set(bad), problems
    for name, (_, reason) in bad.items():
        assert problems[name].startswith(reason) and "\n" not in problems[name], (name, problems[name])
        assert rows[f"bad/{name}"]["status"] == "error" and rows[f"bad/{name}"]["reason"] == problems[name]
    assert f"{'unreadable / problems':<24} {len(bad):>6}" in report.summary()


# ---------------------------------------------------------------------------------------------------
# training: the label reader reads HEIC, and the dataset ultralytics trains on holds a JPEG copy


def voc(box: tuple[int, int, int, int], name: str = "ava") -> str:
    a, b, c, d = box
    return (
        "<annotation><folder>photos</folder><filename>x</filename><size><width>0</width><height>0</height>"
        f"<depth>3</depth></size><object><name>{name}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object></annotation>"
    )


def test_labelled_heic_trains_from_a_jpeg_copy(tmp_path):
    """A turned iPhone photo (irot) in a labelled folder: read at its upright size, and written into the
    dataset as an upright JPEG that OpenCV (ultralytics' reader) decodes; the same photo saved as an
    upright JPEG gives the same label line and nearly the same pixels."""
    upright = smooth(320, 240, seed=5)
    root = tmp_path / "labelled"
    put(root / "IMG_0001.heic", encoded(stored(upright, 6), "HEIF", 6, quality=95))
    put(root / "IMG_0002.jpg", encoded(upright, "JPEG", quality=95))
    for stem in ("IMG_0001", "IMG_0002"):
        (root / f"{stem}.xml").write_text(voc((40, 30, 120, 150)), encoding="utf-8")
    (root / "IMG_0003.heic").write_bytes(b"\x00\x00\x00\x18ftypheic not really")
    before = tree_digest(root)

    ls = read_labelled(root)
    assert [(im.image.name, im.width, im.height) for im in ls.images] == [
        ("IMG_0001.heic", 320, 240),
        ("IMG_0002.jpg", 320, 240),
    ]
    assert [p.path.name for p in ls.problems] == ["IMG_0003.heic"]
    assert ls.problems[0].message.startswith("cannot read image")

    sides = {im.image: "train" for im in ls.images}
    build_yolo_dataset(ls, tmp_path / "dataset", sides=sides)
    assert tree_digest(root) == before, "the labelled folder is only read"
    images = sorted((tmp_path / "dataset" / "images" / "train").iterdir())
    assert [p.name for p in images] == ["00000_IMG_0001.jpg", "00001_IMG_0002.jpg"]
    copy, jpeg = (cv2.imread(str(p)) for p in images)
    assert copy is not None and copy.shape == jpeg.shape == (240, 320, 3)
    assert np.abs(copy.astype(int) - jpeg.astype(int)).mean() < 4
    labels = sorted((tmp_path / "dataset" / "labels" / "train").iterdir())
    assert labels[0].read_text() == labels[1].read_text() != ""
