"""sorter.io.labels on real files: tiny Pillow images plus hand-written labelImg labels."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from conftest import make_files as make
from PIL import Image, ImageDraw, ImageOps

from sorter.io.labels import format_problems, read_labelled, summary, to_displayed
from sorter.records import LabelledSet

W, H = 64, 48


def jpeg(w: int = W, h: int = H, color: int = 90, orientation: int | None = None, box=None) -> bytes:
    """A grayscale JPEG (no chroma blur), optionally with a white box and an EXIF orientation."""
    im = Image.new("L", (w, h), color)
    if box is not None:
        ImageDraw.Draw(im).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=255)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(buf, "JPEG", quality=100, exif=exif.tobytes())
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    im = Image.effect_noise((128, 128), 60).convert("L")  # noise: real entropy data to cut into
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def png(w: int = W, h: int = H) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def voc(
    objects: list[tuple],
    size: tuple[int, int] = (0, 0),
    path: str = "/home/teacher/Pictures/class 3/IMG_0001.jpg",
    extra: str = "",
) -> str:
    """Pascal VOC as labelImg writes it; <path>/<filename> deliberately point elsewhere."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"{extra}<annotation><folder>photos</folder><filename>IMG_0001.jpg</filename><path>{path}</path>"
        f"<source><database>Unknown</database></source>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objs}</annotation>"
    )


def createml(entries: list[tuple[str, list[tuple]]]) -> str:
    return json.dumps(
        [
            {
                "image": image,
                "annotations": [
                    {"label": n, "coordinates": {"x": x, "y": y, "width": w, "height": h}}
                    for n, x, y, w, h in anns
                ],
            }
            for image, anns in entries
        ]
    )


def boxes_of(ls: LabelledSet, rel: str) -> list[tuple[str, tuple[float, ...]]]:
    (im,) = [im for im in ls.images if im.image == ls.root / rel]
    return [(b.name, tuple(round(v, 3) for v in b.xyxy)) for b in im.boxes]


def image_rels(ls: LabelledSet) -> list[str]:
    return [im.image.relative_to(ls.root).as_posix() for im in ls.images]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
        for p in sorted(root.rglob("*"))
    }


# ---- happy paths -------------------------------------------------------------------------------

HAPPY = [
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 10, 5, 30, 25), ("ben", 40, 10, 60, 40)])},
        None,
        "a.jpg",
        [("ava", (10, 5, 30, 25)), ("ben", (40, 10, 60, 40))],
        ["ava", "ben"],
        id="voc-bogus-path-size-0",
    ),
    pytest.param(
        {"IMG_1.JPG": jpeg(), "IMG_1.xml": voc([("ava", 1, 2, 3, 4)])},
        None,
        "IMG_1.JPG",
        [("ava", (1, 2, 3, 4))],
        ["ava"],
        id="uppercase-JPG",
    ),
    pytest.param(
        {"p.png": png(), "p.xml": voc([("cat", 0, 0, 64, 48)], size=(64, 48))},
        None,
        "p.png",
        [("cat", (0, 0, 64, 48))],
        ["cat"],
        id="png",
    ),
    pytest.param(
        {"classes.txt": "ava\nben\n", "a.jpg": jpeg(), "a.txt": "1 0.5 0.5 0.25 0.5\n\n"},
        None,
        "a.jpg",
        [("ben", (24, 12, 40, 36))],
        ["ben"],  # ava has no box: left out of the class list (test_classes_without_boxes_left_out)
        id="yolo-classes-txt",
    ),
    pytest.param(
        {"classes.txt": "ava\nben\n", "class3/a.jpg": jpeg(), "class3/a.txt": "0 0.5 0.5 0.25 0.5\n"},
        None,
        "class3/a.jpg",
        [("ava", (24, 12, 40, 36))],
        ["ava"],
        id="yolo-classes-txt-in-parent",
    ),
    pytest.param(
        {
            "a.jpg": jpeg(),
            "b.jpg": jpeg(),
            "set.json": createml([("b.jpg", []), ("a.jpg", [("zoe", 20, 10, 10, 8)])]),
        },
        None,
        "a.jpg",
        [("zoe", (15, 6, 25, 14))],
        ["zoe"],
        id="createml-centre-coords",
    ),
    pytest.param(
        {"images/a.jpg": jpeg(), "annotations/a.xml": voc([("ava", 10, 5, 30, 25)])},
        None,
        "images/a.jpg",
        [("ava", (10, 5, 30, 25))],
        ["ava"],
        id="images-annotations-layout",
    ),
    pytest.param(
        {
            "images/train/a.jpg": jpeg(),
            "labels/classes.txt": "ava\nben\n",
            "labels/train/a.txt": "1 0.5 0.5 0.25 0.5\n",
        },
        None,
        "images/train/a.jpg",
        [("ben", (24, 12, 40, 36))],
        ["ben"],
        id="images-labels-layout",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", -5, -5, 30, 100)])},
        None,
        "a.jpg",
        [("ava", (0, 0, 30, 48))],
        ["ava"],
        id="clipped-to-image",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 10.5, 5.25, 30, 25)])},
        ["ben", "ava"],
        "a.jpg",
        [("ava", (10.5, 5.25, 30, 25))],
        ["ben", "ava"],
        id="classes-argument-kept-in-order",
    ),
]


@pytest.mark.parametrize(("files", "classes", "image", "expected", "expected_classes"), HAPPY)
def test_reads_labels(tmp_path, files, classes, image, expected, expected_classes):
    ls = read_labelled(make(tmp_path, files), classes)
    assert ls.problems == []
    assert boxes_of(ls, image) == expected
    assert ls.classes == expected_classes
    (im,) = [im for im in ls.images if im.image == tmp_path / image]
    assert (im.width, im.height) == (W, H)
    assert im.label is not None and im.label.parent.is_relative_to(tmp_path)
    assert im.sha256 == hashlib.sha256((tmp_path / image).read_bytes()).hexdigest()


def test_negatives_kept(tmp_path):
    ls = read_labelled(
        make(
            tmp_path,
            {
                "none.jpg": jpeg(),
                "empty_voc.jpg": jpeg(color=1),
                "empty_voc.xml": voc([]),
                "empty_yolo.jpg": jpeg(color=2),
                "empty_yolo.txt": "",
                "classes.txt": "ava\n",
            },
        )
    )
    assert ls.problems == []
    by_name = {im.image.name: im for im in ls.images}
    assert set(by_name) == {"none.jpg", "empty_voc.jpg", "empty_yolo.jpg"}
    assert all(im.boxes == [] for im in by_name.values())
    assert by_name["none.jpg"].label is None
    assert by_name["empty_voc.jpg"].label == tmp_path / "empty_voc.xml"


# ---- problems ----------------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<annotation><object><name>&lol3;</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
    "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
)


def external_entity(secret: Path) -> str:
    return (
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        "<annotation><object><name>&xxe;</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )


# (files, classes, file named by the problem, substring, line, image that must be left out)
PROBLEMS = [
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 1, 1, 9, 9), ("bob", 1, 1, 9, 9)])},
        ["ava", "ben"],
        "a.xml",
        "unknown class 'bob' (known: ava, ben)",
        None,
        "a.jpg",
        id="voc-unknown-class-argument",
    ),
    pytest.param(
        {"classes.txt": "ava\nben\n", "a.jpg": jpeg(), "a.xml": voc([("bob", 1, 1, 9, 9)])},
        None,
        "a.xml",
        "unknown class 'bob'",
        None,
        "a.jpg",
        id="voc-unknown-class-classes-txt",
    ),
    pytest.param(
        {"classes.txt": "ava\n", "a.jpg": jpeg(), "a.txt": "0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n"},
        None,
        "a.txt",
        "unknown class number 3",
        2,
        "a.jpg",
        id="yolo-index-out-of-range",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "s.json": createml([("a.jpg", [("bob", 5, 5, 4, 4)])])},
        ["ava"],
        "s.json",
        "unknown class 'bob'",
        None,
        "a.jpg",
        id="createml-unknown-class",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 1, 1, 9, 9), ("ava", 5, 5, 5, 20)])},
        None,
        "a.xml",
        "empty box",
        None,
        "a.jpg",
        id="zero-area-box",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 100, 100, 120, 120)])},
        None,
        "a.xml",
        "empty box (outside the 64x48 image)",
        None,
        "a.jpg",
        id="box-outside-image",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 200, 5, 100, 15)])},
        None,
        "a.xml",
        "inverted box (xmin 200 > xmax 100)",
        None,
        "a.jpg",
        id="inverted-x",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", 1, 30, 10, 20)])},
        None,
        "a.xml",
        "inverted box (ymin 30 > ymax 20)",
        None,
        "a.jpg",
        id="inverted-y",
    ),
    pytest.param(
        {"classes.txt": "ava\n", "a.jpg": jpeg(), "a.txt": "0 0.5 0.5 -0.1 0.1\n"},
        None,
        "a.txt",
        "inverted box (negative width)",
        1,
        "a.jpg",
        id="yolo-inverted",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("ava", "abc", 1, 10, 10)])},
        None,
        "a.xml",
        "non-numeric xmin 'abc'",
        None,
        "a.jpg",
        id="voc-non-numeric",
    ),
    pytest.param(
        {"classes.txt": "ava\n", "a.jpg": jpeg(), "a.txt": "0 0.5 0.5 0.1 0.1\n0 abc 0.5 0.1 0.1\n"},
        None,
        "a.txt",
        "non-numeric coordinate 'abc'",
        2,
        "a.jpg",
        id="yolo-non-numeric",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "s.json": createml([("a.jpg", [("ava", "x", 5, 4, 4)])])},
        None,
        "s.json",
        "non-numeric coordinate 'x'",
        None,
        "a.jpg",
        id="createml-non-numeric",
    ),
    pytest.param(
        {"classes.txt": "ava\n", "a.jpg": jpeg(), "a.txt": "0 0.5 0.5 0.1\n"},
        None,
        "a.txt",
        "expected 5 fields",
        1,
        "a.jpg",
        id="yolo-field-count",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": "<annotation>\n<object>\n<name>ava</name>\n</annotation>"},
        None,
        "a.xml",
        "malformed XML",
        4,
        "a.jpg",
        id="malformed-xml",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.json": '[{"image": "a.jpg",\n "annotations": [}]'},
        None,
        "a.json",
        "malformed JSON",
        2,
        "a.jpg",  # its labels may be in the broken file: not a safe negative
        id="malformed-json",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": voc([("", 1, 1, 9, 9)])},
        None,
        "a.xml",
        "object 1: no <name>",
        None,
        "a.jpg",
        id="voc-object-without-name",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.txt": "0 0.5 0.5 0.1 0.1\n"},
        None,
        "a.txt",
        "no classes.txt",
        None,
        "a.jpg",
        id="yolo-without-classes-txt",
    ),
    pytest.param(
        {"label_0001.xml": voc([("ava", 1, 1, 9, 9)])},
        None,
        "label_0001.xml",
        "label has no image (looked for label_0001.jpg/.jpeg/.png/...)",
        None,
        None,
        id="label-without-image",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "s.json": createml([("gone.jpg", [])])},
        None,
        "s.json",
        "label has no image (looked for gone.jpg)",
        None,
        None,
        id="createml-entry-without-image",
    ),
    pytest.param(
        {"a.jpg": b"", "a.xml": voc([("ava", 1, 1, 9, 9)])},
        None,
        "a.jpg",
        "cannot read image: empty file",
        None,
        "a.jpg",
        id="zero-byte-image",
    ),
    pytest.param(
        {"a.jpg": b"this is not a photo at all"},
        None,
        "a.jpg",
        "cannot read image: not an image",
        None,
        "a.jpg",
        id="corrupt-image",
    ),
    pytest.param(
        {"a.jpg": truncated_jpeg()},
        None,
        "a.jpg",
        "cannot read image: truncated file",
        None,
        "a.jpg",
        id="truncated-image",
    ),
    pytest.param(
        {
            "classes.txt": "ava\nben\n",
            "sub/classes.txt": "ben\nava\n",
            "sub/a.jpg": jpeg(),
            "sub/a.txt": "0 0.5 0.5 0.1 0.1\n",
        },
        None,
        "sub/classes.txt",
        "class order contradicts",
        1,
        "sub/a.jpg",
        id="classes-txt-contradicts-another",
    ),
    pytest.param(
        {"classes.txt": "ben\nava\n", "a.jpg": jpeg()},
        ["ava", "ben"],
        "classes.txt",
        "class order contradicts the given class list",
        1,
        None,
        id="classes-txt-contradicts-argument",
    ),
    pytest.param(
        {"classes.txt": "ava\nben\nava\n"},
        None,
        "classes.txt",
        "class 'ava' listed twice",
        3,
        None,
        id="classes-txt-duplicate",
    ),
    pytest.param(
        {"a.jpg": jpeg(), "a.xml": BILLION_LAUGHS},
        None,
        "a.xml",
        "unsafe XML",
        None,
        "a.jpg",
        id="billion-laughs",
    ),
]


@pytest.mark.parametrize(("files", "classes", "where", "substring", "line", "excluded"), PROBLEMS)
def test_problems(tmp_path, files, classes, where, substring, line, excluded):
    files = {**files, "other/ok.jpg": jpeg(color=200)}  # the run goes on for everything else
    ls = read_labelled(make(tmp_path, files), classes)
    matching = [p for p in ls.problems if substring in p.message]
    assert matching, format_problems(ls.problems)
    problem = matching[0]
    assert problem.path == tmp_path / where
    assert problem.line == line
    assert str(problem).startswith(f"{tmp_path / where}{f':{line}' if line else ''}: ")
    assert "\n" not in str(problem)
    kept = image_rels(ls)
    assert "other/ok.jpg" in kept
    if excluded:
        assert excluded not in kept


def test_external_entity_is_refused_not_read(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET")
    root = make(tmp_path / "data", {"a.jpg": jpeg(), "a.xml": external_entity(secret)})
    ls = read_labelled(root)
    assert [p.message for p in ls.problems] == ["unsafe XML: entity declarations are not allowed"]
    assert ls.images == []
    assert "TOP-SECRET" not in format_problems(ls.problems) + repr(ls.classes)


def test_all_problems_collected_and_sorted(tmp_path):
    ls = read_labelled(
        make(
            tmp_path,
            {
                "b.jpg": jpeg(),
                "b.xml": voc([("ava", 30, 1, 10, 9), ("ava", 1, 1, 9, 9), ("ava", 100, 100, 200, 200)]),
                "a.jpg": b"",
                "c.xml": "<oops",
            },
        )
    )
    paths = [p.path.name for p in ls.problems]
    assert paths == sorted(paths) == ["a.jpg", "b.xml", "b.xml", "c.xml"]
    assert ls.images == []


def test_second_label_for_same_photo_is_reported(tmp_path):
    files = {"classes.txt": "ava\n", "a.jpg": jpeg(), "a.xml": voc([("ava", 1, 1, 9, 9)])}
    ls = read_labelled(make(tmp_path, {**files, "a.txt": "0 0.5 0.5 0.1 0.1\n"}))
    assert boxes_of(ls, "a.jpg") == [("ava", (1, 1, 9, 9))]
    assert [(p.path.name, p.message) for p in ls.problems] == [
        ("a.txt", "ignored for a.jpg: already labelled by a.xml")
    ]


def test_label_matching_two_photos_is_ambiguous(tmp_path):
    ls = read_labelled(make(tmp_path, {"a.jpg": jpeg(), "a.png": png(), "a.xml": voc([("ava", 1, 1, 9, 9)])}))
    assert "matches several photos" in ls.problems[0].message
    assert ls.images == []


# ---- EXIF orientation --------------------------------------------------------------------------

RAW_BOX = (16, 8, 40, 24)  # on the stored 64x48 pixels; multiples of 8 keep JPEG edges crisp


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_boxes_follow_the_displayed_pixels(tmp_path, orientation):
    data = jpeg(box=RAW_BOX, color=0, orientation=orientation)
    ls = read_labelled(make(tmp_path, {"r.jpg": data, "r.xml": voc([("ava", *RAW_BOX)])}))
    (im,) = ls.images
    with Image.open(tmp_path / "r.jpg") as raw:
        shown = ImageOps.exif_transpose(raw)
    assert (im.width, im.height) == shown.size
    white = shown.point(lambda v: 255 if v > 128 else 0).getbbox()
    assert im.boxes[0].xyxy == pytest.approx(white)


def test_exif_yolo_and_createml_use_stored_pixels(tmp_path):
    data = jpeg(box=RAW_BOX, color=0, orientation=6)
    ls = read_labelled(
        make(
            tmp_path,
            {
                "classes.txt": "ava\n",
                "y.jpg": data,
                "y.txt": "0 0.4375 0.333333 0.375 0.333333\n",
                "c.jpg": data,
                "c.json": createml([("c.jpg", [("ava", 28, 16, 24, 16)])]),
            },
        )
    )
    expected = [("ava", (24.0, 16.0, 40.0, 40.0))]  # (16,8,40,24) turned 90 degrees clockwise in 48x64
    assert boxes_of(ls, "y.jpg") == expected
    assert boxes_of(ls, "c.jpg") == expected


def test_voc_drawn_on_rotated_view_is_kept(tmp_path):
    # <size> equals the displayed 48x64 and not the stored 64x48: the labeller saw the rotated photo.
    data = jpeg(orientation=6)
    ls = read_labelled(make(tmp_path, {"r.jpg": data, "r.xml": voc([("ava", 5, 6, 20, 30)], size=(48, 64))}))
    assert boxes_of(ls, "r.jpg") == [("ava", (5, 6, 20, 30))]
    assert (ls.images[0].width, ls.images[0].height) == (48, 64)


def test_to_displayed_matches_pillow_for_every_orientation():
    assert to_displayed((1, 2, 3, 4), 1, 10, 20) == (1, 2, 3, 4)
    assert to_displayed((1, 2, 3, 4), 6, 10, 20) == (16, 1, 18, 3)
    assert to_displayed((1, 2, 3, 4), 8, 10, 20) == (2, 7, 4, 9)


# ---- walking, class lists, safety --------------------------------------------------------------


def test_walk_skips_hidden_and_survives_symlink_loops(tmp_path):
    root = make(tmp_path, {"a.jpg": jpeg(), ".thumbs/t.jpg": jpeg(), "sub/b.jpg": jpeg(color=3)})
    os.symlink("..", root / "sub" / "loop")
    ls = read_labelled(root)
    assert image_rels(ls) == ["a.jpg", "sub/b.jpg"]


def test_class_list_first_classes_txt_then_sorted_extra_names(tmp_path):
    files = {
        "a/classes.txt": "ben\nava\n",
        "a/x.jpg": jpeg(),
        "a/x.txt": "0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1 0.1\n",
        "b/y.jpg": jpeg(color=5),
        "b/y.xml": voc([("zed", 1, 1, 9, 9), ("cat", 1, 1, 9, 9)]),
    }
    ls = read_labelled(make(tmp_path, files))
    assert ls.problems == []
    assert ls.classes == ["ben", "ava", "cat", "zed"]


def test_class_list_without_classes_txt_is_sorted(tmp_path):
    files = {
        "b.jpg": jpeg(),
        "b.xml": voc([("zed", 1, 1, 9, 9)]),
        "a.jpg": jpeg(color=1),
        "a.xml": voc([("amy", 1, 1, 9, 9)]),
    }
    assert read_labelled(make(tmp_path, files)).classes == ["amy", "zed"]


def test_nothing_written_under_root(tmp_path):
    files = {
        "classes.txt": "ava\nben\n",
        "v.jpg": jpeg(),
        "v.xml": voc([("ava", 1, 1, 9, 9)]),
        "y.jpg": jpeg(color=1, orientation=6),
        "y.txt": "1 0.5 0.5 0.1 0.1\n",
        "c.png": png(),
        "c.json": createml([("c.png", [("ben", 5, 5, 4, 4)])]),
        "bad.jpg": b"broken",
        "bad.xml": BILLION_LAUGHS,
        "images/i.jpg": jpeg(color=2),
        "labels/i.txt": "0 0.5 0.5 0.1 0.1\n",
    }
    root = make(tmp_path / "data", files)
    before = snapshot(root)
    ls = read_labelled(root)
    assert len(ls.images) == 4  # bad.jpg is unreadable
    assert snapshot(root) == before


def test_summary_and_format(tmp_path):
    files = {
        "a.jpg": jpeg(),
        "a.xml": voc([("ava", 1, 1, 9, 9), ("ben", 1, 1, 9, 9)]),
        "n.jpg": jpeg(color=1),
        "x.jpg": b"",
    }
    ls = read_labelled(make(tmp_path, files))
    assert summary(ls) == "2 photos (1 without boxes), 2 boxes in 2 classes; 1 problem"
    assert format_problems(ls.problems) == f"{tmp_path / 'x.jpg'}: cannot read image: empty file"


# ---- issue 11: what a new user trips on --------------------------------------------------------


def masks(n: int, typo: str | None = None) -> dict[str, str | bytes]:
    """``n`` photos with one 'with_mask' box each; ``typo`` names the box of one more photo."""
    files: dict[str, str | bytes] = {}
    for i in range(n):
        files[f"m{i:02d}.jpg"] = jpeg(color=10 + i)
        files[f"m{i:02d}.xml"] = voc([("with_mask", 1, 1, 9, 9)])
    if typo is not None:
        files["odd.jpg"] = jpeg(color=250)
        files["odd.xml"] = voc([(typo, 1, 1, 9, 9)])
    return files


def test_rare_class_is_a_warning_with_the_nearest_name(tmp_path):
    ls = read_labelled(make(tmp_path, masks(6, typo="withmask")))
    assert ls.problems == []
    assert "odd.jpg" in image_rels(ls)  # a warning: the photo is kept
    assert ls.classes == ["with_mask", "withmask"]
    (w,) = ls.warnings
    assert w.path == tmp_path / "odd.xml"
    assert w.message.startswith(
        "class 'withmask' has only 1 box ('with_mask' has 6); did you mean 'with_mask'?"
    )
    lines = summary(ls).splitlines()
    assert lines[0] == "7 photos (0 without boxes), 7 boxes in 2 classes; 0 problems, 1 warning"
    assert lines[1:] == [f"warning: {w}"]


def test_rare_class_rule(tmp_path):
    # Fewer than 3 boxes while another class has at least 5 times as many; case is ignored in the guess.
    ls = read_labelled(make(tmp_path / "case", masks(10, typo="With_Mask")))
    assert [w.message.split("; ")[1] for w in ls.warnings] == [
        "did you mean 'with_mask'? (a misspelt name becomes an extra class)"
    ]
    ls = read_labelled(make(tmp_path / "lone", masks(5, typo="zoe")))  # no close name: still too rare
    assert "too few to learn" in ls.warnings[0].message
    # A quick try-out where every class is small warns about nothing, nor does 4 against 15.
    assert read_labelled(make(tmp_path / "small", masks(4, typo="withmask"))).warnings == []
    three = masks(15) | {f"t{i}.jpg": jpeg(color=200 + i) for i in range(3)}
    three |= {f"t{i}.xml": voc([("withmask", 1, 1, 9, 9)]) for i in range(3)}
    assert read_labelled(make(tmp_path / "three", three)).warnings == []
    # Evaluate passes the model's classes: a name outside them is a problem already, not a warning.
    ls = read_labelled(make(tmp_path / "given", masks(6, typo="withmask")), ["with_mask", "withmask"])
    assert ls.warnings == [] and ls.problems == []


def test_rare_class_in_two_files_names_both(tmp_path):
    files = masks(10) | {"sub/a.jpg": jpeg(color=1), "sub/a.xml": voc([("withmask", 1, 1, 9, 9)])}
    files |= {"sub/deeper/b.jpg": jpeg(color=2), "sub/deeper/b.xml": voc([("withmask", 2, 2, 9, 9)])}
    (w,) = read_labelled(make(tmp_path, files)).warnings
    assert w.path == tmp_path / "sub" / "a.xml"
    assert "has only 2 boxes ('with_mask' has 10), also in deeper/b.xml; did you mean" in w.message


def test_blank_line_in_classes_txt_is_a_class_number(tmp_path):
    files = {
        "classes.txt": "ava\n\nben\n\n\n",  # labelImg numbers the blank line: ben is 2
        "a.jpg": jpeg(),
        "a.txt": "0 0.5 0.5 0.25 0.5\n2 0.5 0.5 0.25 0.5\n",
        "b.jpg": jpeg(color=1),
        "b.txt": "2 0.5 0.5 0.25 0.5\n1 0.5 0.5 0.25 0.5\n",
        "v.jpg": jpeg(color=2),
        "v.xml": voc([("ben", 1, 1, 9, 9)]),
        "sub/classes.txt": "ava\n\nben\n",  # the same numbering: no contradiction
        "sub/c.jpg": jpeg(color=3),
        "sub/c.txt": "2 0.5 0.5 0.25 0.5\n",
    }
    ls = read_labelled(make(tmp_path, files))
    assert boxes_of(ls, "a.jpg") == [("ava", (24, 12, 40, 36)), ("ben", (24, 12, 40, 36))]
    assert boxes_of(ls, "sub/c.jpg") == [("ben", (24, 12, 40, 36))]
    assert boxes_of(ls, "v.jpg") == [("ben", (1, 1, 9, 9))]
    assert ls.classes == ["ava", "ben"]
    assert [(p.path.name, p.line, p.message) for p in ls.problems] == [
        ("b.txt", 2, "class number 1 has no name (line 2 of classes.txt is blank)")
    ]
    assert "b.jpg" not in image_rels(ls)


@pytest.mark.parametrize(
    ("data", "note"),
    [
        pytest.param("Zoë\nJosé\n".encode(), False, id="utf-8"),
        pytest.param("\ufeffZoë\nJosé\n".encode(), False, id="utf-8-bom"),
        pytest.param("Zoë\r\nJosé\r\n".encode("utf-16"), False, id="utf-16-bom"),
        pytest.param("Zoë\r\nJosé\r\n".encode("cp1252"), True, id="cp1252"),
    ],
)
def test_classes_txt_encodings(tmp_path, data, note):
    files = {"classes.txt": data, "a.jpg": jpeg(), "a.txt": "0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.1 0.1\n"}
    files |= {"v.jpg": jpeg(color=1), "v.xml": voc([("José", 1, 1, 9, 9)])}
    ls = read_labelled(make(tmp_path, files))
    assert ls.problems == []
    assert [b[0] for b in boxes_of(ls, "a.jpg")] == ["Zoë", "José"]
    assert ls.classes == ["Zoë", "José"]
    if note:
        (w,) = ls.warnings
        assert w.path == tmp_path / "classes.txt" and w.line is None
        assert w.message == (
            "not UTF-8, so read as Windows-1252 (labelImg's usual encoding on Windows): Zoë, José; "
            "check these names, or save the file as UTF-8"
        )
    else:
        assert ls.warnings == []


def test_classes_txt_in_no_known_encoding_is_one_problem(tmp_path):
    files = {
        "classes.txt": b"Zo\x81\xe9\n",
        "a.jpg": jpeg(),
        "a.txt": "0 0.5 0.5 0.1 0.1\n",
        "n.jpg": jpeg(3),
    }
    ls = read_labelled(make(tmp_path, files))
    assert [(p.path.name, p.message) for p in ls.problems] == [
        (
            "a.txt",
            f"skipped: class numbers are ambiguous because {tmp_path / 'classes.txt'} is invalid",
        ),
        (
            "classes.txt",
            "cannot read class names: the text is not UTF-8 or Windows-1252; open it in a text editor "
            "and save it as UTF-8 (Notepad: File > Save As, Encoding: UTF-8)",
        ),
    ]
    assert image_rels(ls) == ["n.jpg"]


LABELIMG_DEFAULTS = [
    "dog", "person", "cat", "tv", "car", "meatballs", "marinara sauce", "tomato soup",
    "chicken noodle soup", "french onion soup", "chicken breast", "ribs", "pulled pork", "hamburger",
    "cavity",
]  # fmt: skip


def test_classes_without_boxes_left_out(tmp_path):
    files = {
        "classes.txt": "\n".join([*LABELIMG_DEFAULTS, "ava", "ben", "cleo"]) + "\n",
        "a.jpg": jpeg(),
        "a.txt": "15 0.5 0.5 0.25 0.5\n16 0.1 0.1 0.1 0.1\n",  # ava and ben: numbered after the defaults
        "b.jpg": jpeg(color=1),
        "b.txt": "17 0.5 0.5 0.25 0.5\nbroken\n",  # cleo's only box is in a photo left out
    }
    root = make(tmp_path, files)
    ls = read_labelled(root)
    assert [b[0] for b in boxes_of(ls, "a.jpg")] == ["ava", "ben"]
    assert ls.classes == ["ava", "ben"]
    assert [p.path.name for p in ls.problems] == ["b.txt"]
    (w,) = ls.warnings
    assert w.path == root / "classes.txt"
    assert w.message == (
        f"16 classes have no boxes, left out: {', '.join(LABELIMG_DEFAULTS)}, cleo "
        "(cleo: boxes only in photos skipped for problems)"
    )
    assert "\n" not in str(w)
    # Without classes.txt: a name whose boxes are all in photos left out is left out too, and said so.
    bad = {"v.jpg": jpeg(), "v.xml": voc([("ava", 1, 1, 9, 9), ("ava", 5, 5, 5, 20)])}
    ls = read_labelled(make(tmp_path / "voc", bad))
    assert ls.classes == [] and [(w.path, w.message[:40]) for w in ls.warnings] == [
        (tmp_path / "voc", "1 class has no boxes, left out: ava (ava")
    ]
    # Evaluate's list (the model's classes) is kept as given, boxes or not.
    given = ["zed", "ava", "ben", "cleo", "nobody"]
    ls = read_labelled(make(tmp_path / "eval", {"v.jpg": jpeg(), "v.xml": voc([("ava", 1, 1, 9, 9)])}), given)
    assert ls.classes == given and ls.warnings == []


def test_one_image_list_and_one_exif_helper():
    import sorter.io.decode as decode
    import sorter.io.labels as labels
    import sorter.io.scan as scan
    import sorter.training.dataset as dataset
    from sorter.io.formats import IMAGE_SUFFIXES

    assert labels.IMAGE_SUFFIXES is IMAGE_SUFFIXES and {".jpg", ".png", ".heic", ".heif"} <= IMAGE_SUFFIXES
    assert scan.is_image_name("IMG_1.HEIC") and scan.is_image_name("a.JPE")
    assert decode.exif_orientation is labels.exif_orientation is dataset.exif_orientation
    assert dataset.TRANSPOSE_FOR_ORIENTATION is labels.TRANSPOSE_FOR_ORIENTATION


def test_photo_pillow_cannot_open_is_a_problem(tmp_path):
    files = {"a.heic": b"\x00\x00\x00\x18ftypheic not really", "a.xml": voc([("ava", 1, 1, 9, 9)])}
    files |= {"b.gif": b"", "ok.jpg": jpeg()}
    ls = read_labelled(make(tmp_path, files))
    assert [(p.path.name, p.message.split(":")[0]) for p in ls.problems] == [
        ("a.heic", "cannot read image"),
        ("b.gif", "cannot read image"),
    ]
    assert image_rels(ls) == ["ok.jpg"]


def test_parsers_are_plain_functions(tmp_path):
    from sorter.io.labels.common import read_image_info
    from sorter.io.labels.voc import parse_voc

    root = make(tmp_path, {"a.jpg": jpeg(), "a.xml": voc([("ava", 1, 2, 3, 4), ("ava", 9, 9, 5, 20)])})
    info = read_image_info(root / "a.jpg")
    boxes, problems = parse_voc(root / "a.xml", info, lambda name: None)
    assert [(b.name, b.xyxy) for b in boxes] == [("ava", (1, 2, 3, 4))]
    assert [p.message for p in problems] == ["object 2 ('ava'): inverted box (xmin 9 > xmax 5)"]
    assert parse_voc(root / "a.xml", info, lambda name: None) == (boxes, problems)  # nothing kept between


# The helpers are part of the test's contract: keep them honest.
def test_helpers_make_what_they_claim():
    with Image.open(io.BytesIO(jpeg(orientation=6))) as im:
        assert im.size == (W, H) and im.getexif()[0x0112] == 6
