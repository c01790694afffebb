"""sorter.training.dataset on real files: grouped split and the ultralytics dataset it writes."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml
from conftest import make_files as make
from PIL import Image

from sorter.io.labels import exif_orientation, read_labelled
from sorter.records import LabelledSet
from sorter.training.dataset import build_yolo_dataset, split

W, H = 64, 48


def jpeg(color: int, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.new("L", (W, H), color).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def voc(*objects: tuple) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for n, a, b, c, d in objects
    )
    return f"<annotation><size><width>0</width><height>0</height></size>{objs}</annotation>"


def library(root: Path) -> LabelledSet:
    """14 photos: ava and ben on 5 each, two negatives, a byte-identical duplicate and a rotated one."""
    files: dict[str, str | bytes] = {}
    for i in range(10):
        name = "ava" if i % 2 else "ben"
        files[f"kids/p{i:02d}.jpg"] = jpeg(10 + i * 20)
        files[f"kids/p{i:02d}.xml"] = voc((name, 16, 12, 48, 36))
    files["neg/n1.jpg"] = jpeg(3)
    files["neg/n2.jpg"] = jpeg(5)
    files["copies/p03 copy.jpg"] = files["kids/p03.jpg"]
    files["copies/p03 copy.xml"] = files["kids/p03.xml"]
    files["rot/r.jpg"] = jpeg(222, orientation=6)
    files["rot/r.xml"] = voc(("ben", 0, 0, 16, 8))
    ls = read_labelled(make(root, files))
    assert ls.problems == []
    return ls


def tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_split_keeps_identical_photos_together(tmp_path):
    ls = library(tmp_path / "data")
    dup = [tmp_path / "data/kids/p03.jpg", tmp_path / "data/copies/p03 copy.jpg"]
    for seed in range(20):
        sides = split(ls, 0.3, seed)
        assert set(sides) == {im.image for im in ls.images}
        assert sides[dup[0]] == sides[dup[1]]


def test_split_is_deterministic_and_covers_classes(tmp_path):
    ls = library(tmp_path / "data")
    sides = split(ls, 0.2, seed=7)
    assert sides == split(ls, 0.2, seed=7)
    val_classes = {b.name for im in ls.images if sides[im.image] == "val" for b in im.boxes}
    assert val_classes == {"ava", "ben"}
    train_classes = {b.name for im in ls.images if sides[im.image] == "train" for b in im.boxes}
    assert train_classes == {"ava", "ben"}


def test_split_val_gets_one_of_two_photos(tmp_path):
    root = make(tmp_path / "data", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    sides = split(read_labelled(root), val_fraction=0.0)
    assert sorted(sides.values()) == ["train", "val"]


def test_val_fraction_one_puts_everything_in_val(tmp_path):
    ls = library(tmp_path / "data")
    assert set(split(ls, 1.0).values()) == {"val"}
    out = tmp_path / "eval" / "dataset"
    build_yolo_dataset(ls, out, val_fraction=1.0)
    assert not any((out / "images" / "train").iterdir())
    assert len(list((out / "images" / "val").iterdir())) == 14


def test_split_never_moves_a_class_only_photo_to_val(tmp_path):
    files = {"a.jpg": jpeg(1), "a.xml": voc(("ava", 1, 1, 9, 9)), "b.jpg": jpeg(2), "c.jpg": jpeg(3)}
    ls = read_labelled(make(tmp_path / "data", files))
    for seed in range(10):
        assert split(ls, 0.5, seed)[tmp_path / "data/a.jpg"] == "train"


def test_build_is_deterministic(tmp_path):
    ls = library(tmp_path / "data")
    out = tmp_path / "run" / "dataset"
    build_yolo_dataset(ls, out, seed=3)
    first = tree(out)
    (out / "stale.txt").write_text("left over from an older run")
    build_yolo_dataset(ls, out, seed=3)
    assert tree(out) == first
    assert len([k for k in first if k.startswith("images/")]) == len(ls.images) == 14
    assert len([k for k in first if k.startswith("labels/")]) == 14


def test_yaml_labels_and_split_json(tmp_path):
    ls = library(tmp_path / "data")
    out = tmp_path / "run" / "dataset"
    data_yaml = build_yolo_dataset(ls, out)
    assert data_yaml == out.resolve() / "data.yaml"
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc == {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "ava", 1: "ben"},
    }

    manifest = json.loads((out / "split.json").read_text())
    rows = {r["source"]: r for r in manifest["images"]}
    assert len(rows) == 14 and manifest["classes"] == ["ava", "ben"]

    # p01 has ava (class 0) at (16, 12, 48, 36) on 64x48: centred, half the width and height.
    p01 = rows["kids/p01.jpg"]
    assert p01["file"] == f"images/{p01['split']}/00002_p01.jpg"
    assert p01["sha256"] == hashlib.sha256((tmp_path / "data/kids/p01.jpg").read_bytes()).hexdigest()
    label = out / "labels" / p01["split"] / "00002_p01.txt"
    assert label.read_text() == "0 0.500000 0.500000 0.500000 0.500000\n"
    assert (out / p01["file"]).read_bytes() == (tmp_path / "data/kids/p01.jpg").read_bytes()

    # Negatives get an empty label file.
    n1 = rows["neg/n1.jpg"]
    assert (out / "labels" / n1["split"] / Path(n1["file"]).with_suffix(".txt").name).read_text() == ""

    # Names with spaces survive and stay unique.
    assert rows["copies/p03 copy.jpg"]["file"].endswith("/00000_p03 copy.jpg")


def test_rotated_photo_written_upright_as_png(tmp_path):
    ls = library(tmp_path / "data")
    out = tmp_path / "run" / "dataset"
    build_yolo_dataset(ls, out)
    row = next(
        r for r in json.loads((out / "split.json").read_text())["images"] if r["source"] == "rot/r.jpg"
    )
    assert row["file"].endswith("00013_r.png")
    with Image.open(out / row["file"]) as im:
        assert im.size == (H, W) and im.format == "PNG"
        assert exif_orientation(im) == 1  # ultralytics must not rotate it again
    # Stored box (0, 0, 16, 8) becomes (40, 0, 48, 16) on the upright 48x64 photo.
    label = out / "labels" / row["split"] / "00013_r.txt"
    assert label.read_text() == "1 0.916667 0.125000 0.166667 0.250000\n"


@pytest.mark.parametrize("where", ["inside", "same", "parent"])
def test_refuses_to_write_into_the_photo_folder(tmp_path, where):
    ls = library(tmp_path / "data")
    out = {"inside": tmp_path / "data" / "run", "same": tmp_path / "data", "parent": tmp_path}[where]
    before = sorted(p.as_posix() for p in (tmp_path / "data").rglob("*"))
    with pytest.raises(ValueError, match="overlaps the photo folder"):
        build_yolo_dataset(ls, out)
    assert sorted(p.as_posix() for p in (tmp_path / "data").rglob("*")) == before
