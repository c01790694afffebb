"""Issue 5: bad files in the library, originals never touched, output never read back, model tampering.

Everything is real: files written to disk, the real CLI in a subprocess (exit codes), real SQLite. The
small ``robust_model`` detects little; these tests check integrity, not accuracy.
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import library_state
from PIL import Image

from sorter.io.bundle import Bundle, BundleError
from sorter.io.decode import DecodeError, decode
from sorter.pipeline.classify import ClassifyError
from sorter.records import Photo

LOW = ["--threshold", "0.01", "--band", "0.005"]  # the tiny model is unsure of everything: copies happen
ERROR = "error"

# Root reads every file whatever its mode. Run the CLI without the two capabilities that allow it, so an
# unreadable file is unreadable (setpriv is util-linux; without it the case is left out, and says so).
AS_ROOT = os.geteuid() == 0
DROP_ROOT_READ = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if AS_ROOT else []
CAN_LOCK = not AS_ROOT or shutil.which("setpriv") is not None


def photosort(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [*(DROP_ROOT_READ if CAN_LOCK else []), sys.executable, "-m", "sorter", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=os.environ.copy())


def manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def output_state(out: Path) -> dict[str, str]:
    """Every file under the output folder but its state folder: relative path -> sha256 (dirs too)."""
    return {
        k: v[1] if v[0] == "file" else v[0]
        for k, v in library_state(out).items()
        if not k.split("/")[0].startswith(".photosort")
    }


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# the corpus


def png_bomb(w: int = 100_000, h: int = 100_000) -> bytes:
    """A valid 100-byte PNG that declares 10^10 pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def noise(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# exif_transpose applies these to show orientation o; storing the inverse makes o display the original
SHOW = {
    2: Image.FLIP_LEFT_RIGHT,
    3: Image.ROTATE_180,
    4: Image.FLIP_TOP_BOTTOM,
    5: Image.TRANSPOSE,
    6: Image.ROTATE_270,
    7: Image.TRANSVERSE,
    8: Image.ROTATE_90,
}
INVERSE = {**SHOW, 6: Image.ROTATE_90, 8: Image.ROTATE_270}


def oriented_jpeg(o: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = o
    img = synth.quadrants() if o == 1 else synth.quadrants().transpose(INVERSE[o])
    return encoded(img, "JPEG", quality=95, exif=exif.tobytes())


FRAME_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
NON_UTF8_GOOD = os.fsdecode(b"weird/caf\xe9-\xff.jpg")
NON_UTF8_BAD = os.fsdecode(b"bad/\xff\xfe-junk.jpg")
LONG = "L" * 250 + ".jpg"


def build_corpus(lib: Path) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Write the library; return good {rel: kind} and bad {rel: (kind, expected words in the reason)}."""
    good: dict[str, str] = {}
    bad: dict[str, tuple[str, str]] = {}

    def put(rel: str, data: bytes) -> Path:
        p = Path(os.fsencode(lib / rel).decode("utf-8", "surrogateescape"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    frames = [Image.new("RGB", (96, 72), c) for c in FRAME_COLOURS]
    grey16 = Image.fromarray(
        (np.arange(72 * 96, dtype=np.uint32) * 65535 // (72 * 96 - 1)).astype(np.uint16).reshape(72, 96)
    )
    palette = noise(4).convert("P", palette=Image.ADAPTIVE, colors=16)
    goods = {
        "plain/a.jpg": (encoded(noise(1), "JPEG"), "baseline JPEG"),
        "dup/a.jpg": (encoded(noise(5), "JPEG"), "same name, other folder, other photo"),
        "cmyk.jpg": (encoded(noise(2).convert("CMYK"), "JPEG"), "CMYK JPEG"),
        "png16.png": (encoded(grey16, "PNG"), "16-bit PNG"),
        "grey.png": (encoded(noise(3).convert("L"), "PNG"), "greyscale PNG"),
        "palette.png": (encoded(palette, "PNG", transparency=0), "palette PNG with transparency"),
        "anim.gif": (
            encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
            "animated GIF",
        ),
        "anim.webp": (
            encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
            "animated WebP",
        ),
        "pages.tiff": (
            encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
            "multi-page TIFF",
        ),
        "case/Same.jpg": (encoded(noise(40), "JPEG"), "names equal except case"),
        "case/same.jpg": (encoded(noise(41), "JPEG"), "names equal except case"),
        f"long/{LONG}": (encoded(noise(42), "JPEG"), "very long file name"),
        f"long2/{LONG}": (encoded(noise(45), "JPEG"), "very long file name, twice"),
        NON_UTF8_GOOD: (encoded(noise(43), "JPEG"), "non-UTF-8 file name"),
        "x.jpg/inside.jpg": (encoded(noise(44), "JPEG"), "photo in a folder named x.jpg"),
    }
    for o in range(1, 9):
        goods[f"exif/orient{o}.jpg"] = (oriented_jpeg(o), f"EXIF orientation {o}")
    for rel, (data, kind) in goods.items():
        put(rel, data)
        good[rel] = kind
    os.symlink("plain/a.jpg", lib / "alias.jpg")
    good["alias.jpg"] = "symbolic link to a photo"

    bads = {
        "bad/empty.jpg": (b"", "zero-byte file", "empty file"),
        "bad/truncated.jpg": (encoded(noise(50, (320, 240)), "JPEG")[:1500], "truncated JPEG", "truncated"),
        "bad/random.jpg": (random.Random(0).randbytes(4000), "random bytes named .jpg", "not an image"),
        "bad/text.png": (b"hello, I am not a picture\n" * 20, "text file named .png", "not an image"),
        "bad/bomb.png": (png_bomb(), "decompression bomb PNG", "too large"),
        NON_UTF8_BAD: (b"junk" * 10, "junk with a non-UTF-8 name", "not an image"),
    }
    for rel, (data, kind, words) in bads.items():
        put(rel, data)
        bad[rel] = (kind, words)
    os.symlink("nowhere.jpg", lib / "bad/broken.jpg")
    bad["bad/broken.jpg"] = ("broken symbolic link", "broken symbolic link")
    os.symlink("loop2.jpg", lib / "bad/loop1.jpg")
    os.symlink("loop1.jpg", lib / "bad/loop2.jpg")
    bad["bad/loop1.jpg"] = bad["bad/loop2.jpg"] = ("symbolic link loop", "loop")
    os.symlink("..", lib / "bad/up")  # a folder loop: never followed
    os.symlink("../x.jpg", lib / "bad/linked-folder.jpg")
    bad["bad/linked-folder.jpg"] = ("symbolic link to a folder named .jpg", "is a folder")
    if CAN_LOCK:
        put("bad/locked.jpg", encoded(noise(51), "JPEG")).chmod(0)
        bad["bad/locked.jpg"] = ("unreadable (permission)", "Permission denied")
    return good, bad


# ---------------------------------------------------------------------------------------------------
# decode, in process: each odd format comes out as the picture people see


@pytest.mark.parametrize("o", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, o):
    p = tmp_path / f"o{o}.jpg"
    p.write_bytes(oriented_jpeg(o))
    d = decode(Photo(p, Path(p.name), p.stat().st_size, 0), max_side=640)
    assert d.full_wh == (64, 48) and d.rgb.shape == (48, 64, 3) and d.rgb.dtype == np.uint8
    quads = [d.rgb[:24, :32], d.rgb[:24, 32:], d.rgb[24:, :32], d.rgb[24:, 32:]]
    means = [q[4:-4, 4:-4].reshape(-1, 3).mean(0) for q in quads]
    for got, want in zip(means, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], strict=True):
        assert np.abs(got - np.array(want)).max() < 40, (o, means)


def test_odd_formats_decode_to_8bit_rgb(tmp_path):
    lib = tmp_path / "lib"
    good, _ = build_corpus(lib)
    for rel in good:
        p = lib / rel
        d = decode(Photo(p, Path(rel), p.stat().st_size, 0), max_side=640)
        assert d.rgb.dtype == np.uint8 and d.rgb.ndim == 3 and d.rgb.shape[2] == 3, rel
        assert d.rgb.shape[:2] in ((72, 96), (48, 64)), rel
    # 16-bit: the full range survives as 0..255, not clipped to black or white
    d = decode(Photo(lib / "png16.png", Path("png16.png"), 1, 0))
    assert d.rgb.min() == 0 and d.rgb.max() == 255 and len(np.unique(d.rgb)) > 100
    # palette index 0 is transparent: those pixels come out white, the rest keep their colours
    pal = Image.open(lib / "palette.png")
    see_through = np.asarray(pal) == 0
    d = decode(Photo(lib / "palette.png", Path("palette.png"), 1, 0))
    assert see_through.any() and (d.rgb[see_through] == 255).all()
    assert (d.rgb[~see_through] != 255).any()
    # animated / multi-page: the first frame
    for rel in ("anim.gif", "anim.webp", "pages.tiff"):
        d = decode(Photo(lib / rel, Path(rel), 1, 0))
        assert np.abs(d.rgb.reshape(-1, 3).mean(0) - FRAME_COLOURS[0]).max() < 12, rel


def test_bad_bytes_give_reasons_not_crashes(tmp_path):
    import ultralytics.utils.patches  # noqa: F401  - it wraps Image.open; the wrapper must not be used

    lib = tmp_path / "lib"
    _, bad = build_corpus(lib)
    for rel in ("bad/empty.jpg", "bad/truncated.jpg", "bad/random.jpg", "bad/text.png", "bad/bomb.png"):
        p = lib / rel
        t0 = time.perf_counter()
        with pytest.raises(DecodeError) as exc:
            decode(Photo(p, Path(rel), p.stat().st_size, 0))
        assert bad[rel][1] in str(exc.value), (rel, str(exc.value))
        assert time.perf_counter() - t0 < 2, "a bomb is refused from its header, never allocated"


# ---------------------------------------------------------------------------------------------------
# the whole CLI on the corpus


def test_bad_files_are_reported_and_every_good_photo_is_sorted(robust_model, tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "sorted"
    good, bad = build_corpus(lib)
    before = library_state(lib)

    r = photosort("classify", lib, "--out", out, "--model", robust_model.run_dir, "--batch", "2", "-q", *LOW)
    stderr, stdout = r.stderr.decode("utf-8", "surrogateescape"), r.stdout.decode("utf-8", "surrogateescape")
    assert r.returncode == 3, f"'done with problems' is 3\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert library_state(lib) == before, "originals altered"

    rows = manifest(out)
    assert set(rows) == {str(lib / rel) for rel in [*good, *bad]}, "every photo-named file has one row"
    copies = 0
    for rel, kind in good.items():
        row = rows[str(lib / rel)]
        assert row["status"] in ("sorted", "uncertain", "no_person"), (kind, row)
        assert row["sha256"] == sha(lib / rel), kind
        for c in filter(None, row["copies"].split(";")):
            assert sha(out / c) == row["sha256"], f"{kind}: copy {c} is not the original byte for byte"
            copies += 1
    assert copies >= len(good) // 2, "the low threshold should place copies (else nothing was checked)"
    for rel, (kind, words) in bad.items():
        row = rows[str(lib / rel)]
        assert row["status"] == ERROR and words in row["reason"], (kind, row)
        shown = str(lib / rel).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        assert f"{lib / rel}: " in stdout or f"{shown}: " in stderr, f"{kind} is not reported to the user"
    assert "x.jpg" not in {r["reason"] for r in rows.values()}, "a folder named x.jpg is a folder, entered"
    # two different photos named IMG_0001.jpg (here a.jpg, and a 250-byte name) both survive
    for first, second in (("plain/a.jpg", "dup/a.jpg"), (f"long/{LONG}", f"long2/{LONG}")):
        a, b = rows[str(lib / first)]["copies"], rows[str(lib / second)]["copies"]
        if a and b:
            assert a != b and sha(out / a) != sha(out / b)
    assert not [p for p in out.rglob(".photosort-tmp-*")], "temp files left behind"

    # run again: nothing new is decoded, the same result, and the same verdicts
    first_state, first_manifest = output_state(out), (out / "manifest.csv").read_bytes()
    r2 = photosort("classify", lib, "--out", out, "--model", robust_model.run_dir, "-q", *LOW)
    assert r2.returncode == 3, r2.stderr.decode("utf-8", "replace")
    assert output_state(out) == first_state and (out / "manifest.csv").read_bytes() == first_manifest
    assert library_state(lib) == before


def test_files_that_change_or_vanish_during_the_run(robust_model, tmp_path, monkeypatch):
    """A real run in process; at chosen moments the test edits or deletes real library files."""
    pipeline = importlib.import_module(
        "sorter.pipeline.classify"
    )  # the module; sorter.pipeline.classify is the API function
    stages = importlib.import_module("sorter.pipeline.analyse")  # where photos are decoded

    lib, out = tmp_path / "lib", tmp_path / "sorted"
    lib.mkdir()
    rng = random.Random(3)
    for i in range(6):
        img, _ = synth.picture(rng, ["ava"])
        img.save(lib / f"p{i}.jpg", quality=90)
    before = library_state(lib)
    real_decode = stages.decode_work

    def meddling_decode(photo, *args, **kw):
        decoded = real_decode(photo, *args, **kw)
        if photo.path.name == "p1.jpg":
            (lib / "p4.jpg").unlink()  # p4 vanishes after the scan found it, before it is read
        elif photo.path.name == "p2.jpg":
            photo.path.unlink()  # p2 vanishes between reading and copying
        elif photo.path.name == "p3.jpg":
            with open(photo.path, "ab") as fh:  # p3 is edited between reading and copying
                fh.write(b"edited")
        return decoded

    monkeypatch.setattr(stages, "decode_work", meddling_decode)
    bundle = Bundle.load(robust_model.run_dir)
    report = pipeline.classify_library(
        lib, out, bundle, threshold=0.01, band=0.005, batch=1, workers=0, progress=False, log=lambda m: None
    )
    problems = {p.path.name: p.message for p in report.problems}
    assert set(problems) == {"p2.jpg", "p3.jpg", "p4.jpg"}, problems
    assert "No such file" in problems["p4.jpg"] and "vanished" in problems["p2.jpg"]
    assert "changed while being sorted" in problems["p3.jpg"]
    assert report.exit_code == 3 and report.photos == 3
    for name in ("p0.jpg", "p1.jpg", "p5.jpg"):
        assert library_state(lib)[name] == before[name], "originals altered"
    assert not list(out.rglob("p2*")) and not list(out.rglob("p3*")) and not list(out.rglob("p4*"))
    assert not list(out.rglob(".photosort-tmp-*"))

    monkeypatch.setattr(stages, "decode_work", real_decode)
    report = pipeline.classify_library(
        lib, out, bundle, threshold=0.01, band=0.005, batch=1, progress=False, log=lambda m: None
    )
    assert report.problems == [] and report.exit_code == 0 and report.photos == 4
    rows = manifest(out)
    assert set(rows) == {str(lib / f"p{i}.jpg") for i in (0, 1, 3, 5)}
    assert rows[str(lib / "p3.jpg")]["sha256"] == sha(lib / "p3.jpg"), (
        "the edited photo is sorted as it is now"
    )
    for row in rows.values():
        for c in filter(None, row["copies"].split(";")):
            assert sha(out / c) == row["sha256"]


def test_output_inside_the_library_is_never_read_back(robust_model, tmp_path):
    lib = tmp_path / "lib"
    synth.make_library(lib, 5)
    out, old_out = lib / "sorted", lib / "sorted-last-year"
    bundle = Bundle.load(robust_model.run_dir)
    from sorter.pipeline.classify import classify_library

    def originals():
        return {k: v for k, v in library_state(lib).items() if not k.startswith("sorted")}

    before = originals()
    classify_library(lib, old_out, bundle, threshold=0.01, band=0.005, progress=False, log=lambda m: None)
    reports = [
        classify_library(lib, out, bundle, threshold=0.01, band=0.005, progress=False, log=lambda m: None)
        for _ in range(2)
    ]
    assert sum(reports[0].per_person.values()) + reports[0].uncertain > 0, "nothing was copied: check nothing"
    assert reports[0].photos == reports[1].photos == 5 and reports[1].reused == 5
    rows = manifest(out)
    assert len(rows) == 5 and not [p for p in rows if "/sorted" in p], "copies were read back as photos"
    assert not list(out.rglob("sorted*")) and not [p for p in out.rglob("*~*")], "copies of copies"
    assert originals() == before, "originals altered"
    for bad_out in (lib, tmp_path):
        with pytest.raises(ClassifyError, match="cannot be the library or contain it"):
            classify_library(lib, bad_out, bundle, progress=False)


# ---------------------------------------------------------------------------------------------------
# the model bundle refuses tampering, before unpickling anything


class _Boom:
    """Unpickling this creates a marker file: proof that untrusted weights were loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_model_is_refused(robust_model, tmp_path):
    lib = tmp_path / "lib"
    synth.make_library(lib, 2)
    good = tmp_path / "good"
    shutil.copytree(robust_model.run_dir, good)
    Bundle.load(good)  # the intact copy verifies

    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    w = flipped / "weights" / "best.pt"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum does not match"):
        Bundle.load(flipped)

    evil = tmp_path / "evil"
    shutil.copytree(good, evil)
    marker = tmp_path / "pwned"
    (evil / "weights" / "best.pt").write_bytes(pickle.dumps(_Boom(str(marker))))

    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "weights" / "best.pt").unlink()

    for model, words in (
        (flipped, "checksum does not match"),
        (evil, "checksum does not match"),
        (missing, "missing from the model folder"),
    ):
        out = tmp_path / f"out-{model.name}"
        r = photosort("classify", lib, "--out", out, "--model", model, "-q")
        err = r.stderr.decode()
        assert r.returncode == 1, "'failed' is 1, distinct from 'done with problems' (3)"
        assert words in err and "Error:" in err and "Traceback" not in err, err
        assert not out.exists(), "nothing is written with a refused model"
    r = photosort("evaluate", lib, "--model", evil, "--wandb", "off")
    assert r.returncode == 1 and "checksum does not match" in r.stderr.decode()
    assert not marker.exists(), "tampered weights were unpickled"
