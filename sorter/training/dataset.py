"""Turn a :class:`LabelledSet` into an ultralytics detection dataset inside the run folder.

The user's folder is only ever read: images are hard-linked or copied out of it, never written.
HEIC/HEIF photos are written as JPEG copies: ultralytics reads images with OpenCV, which has no HEIF
decoder, and its fallback wants the ``pi-heif`` package (a pip install mid-run, or, offline, the photo
dropped from training as "corrupt").
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import yaml
from PIL import Image

from sorter.io.decode import decode, open_image
from sorter.io.exif import TRANSPOSE_FOR_ORIENTATION, exif_orientation
from sorter.records import LabelledImage, LabelledSet, Photo

_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
HEIF_JPEG_QUALITY = 95  # the copy ultralytics trains on; the boxes are on the same (displayed) pixels


def split(ls: LabelledSet, val_fraction: float = 0.2, seed: int = 0) -> dict[Path, str]:
    """Map each image path to ``'train'`` or ``'val'``.

    Byte-identical photos (same sha256) always land on the same side, so a duplicate cannot leak
    from train into val. Val gets at least one photo when there are two distinct ones; classes are
    then given a val photo where that leaves the class at least one training photo.
    ``val_fraction=1.0`` puts everything in val (for evaluation).
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    if val_fraction == 1.0:  # evaluation: every photo is scored, nothing trains
        return {im.image: "val" for im in ls.images}
    groups: dict[str, list[LabelledImage]] = {}
    for im in ls.images:
        groups.setdefault(im.sha256, []).append(im)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)

    val: set[str] = set()
    if len(keys) >= 2:
        names = {k: {b.name for im in groups[k] for b in im.boxes} for k in keys}
        in_train = Counter(n for k in keys for n in names[k])  # photos per class still in train

        def movable(k: str) -> bool:
            # Moving k to val must leave every one of its classes with a training photo.
            return k not in val and all(in_train[n] >= 2 for n in names[k])

        def move(k: str) -> None:
            val.add(k)
            in_train.subtract(names[k])

        target = min(len(keys) - 1, max(1, round(len(keys) * val_fraction)))
        cap = max(target, len(keys) // 2)  # coverage may exceed the fraction, never half the photos
        order = {name: i for i, name in enumerate(ls.classes)}
        covered: set[str] = set()
        # Rarest classes first: they have the fewest photos to choose from.
        for cls in sorted(in_train, key=lambda c: (in_train[c], order.get(c, len(order)), c)):
            if cls in covered or len(val) >= cap:
                continue
            pick = next((k for k in keys if cls in names[k] and movable(k)), None)
            if pick is not None:
                move(pick)
                covered |= names[pick]
        for k in keys:
            if len(val) >= target:
                break
            if movable(k):
                move(k)
        if not val:  # every photo is some class's only one; val still needs something
            move(keys[0])
    return {im.image: ("val" if im.sha256 in val else "train") for im in ls.images}


def build_yolo_dataset(
    ls: LabelledSet,
    out: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    sides: dict[Path, str] | None = None,
) -> Path:
    """Write ``out/images/{train,val}``, ``out/labels/{train,val}``, ``out/data.yaml`` and
    ``out/split.json``; returns the yaml path. ``out`` is emptied first so the result is deterministic.
    ``sides``: a split already made (:func:`split`), so a caller that needs it too splits once."""
    out = Path(out).resolve()
    root = Path(ls.root).resolve()
    if out == root or out.is_relative_to(root) or root.is_relative_to(out):
        raise ValueError(f"dataset folder {out} overlaps the photo folder {root}; refusing to write there")
    if not ls.images:
        raise ValueError("no usable labelled photos")
    if not ls.classes:
        raise ValueError("no classes: label at least one face")
    index = {name: i for i, name in enumerate(ls.classes)}

    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    for kind in ("images", "labels"):
        for side in ("train", "val"):
            (out / kind / side).mkdir(parents=True)

    sides = split(ls, val_fraction, seed) if sides is None else sides
    ordered = sorted(ls.images, key=lambda im: _rel(im.image, ls.root).as_posix())
    records = []
    for i, im in enumerate(ordered):
        side = sides[im.image]
        with open_image(im.image) as probe:
            orientation = exif_orientation(probe)
            heif = probe.format == "HEIF"
        suffix = ".jpg" if heif else im.image.suffix.lower() if orientation == 1 else ".png"
        name = f"{i:05d}_{im.image.stem}{suffix}"
        dst = out / "images" / side / name
        if heif:
            _heif_to_jpeg(im.image, dst)
        else:
            _place_image(im.image, dst, orientation)
        lines = []
        for box in im.boxes:
            if box.name not in index:
                raise ValueError(f"{im.image}: class '{box.name}' is not in the class list")
            x1, y1, x2, y2 = box.xyxy
            cx, cy = (x1 + x2) / 2 / im.width, (y1 + y2) / 2 / im.height
            w, h = (x2 - x1) / im.width, (y2 - y1) / im.height
            lines.append(f"{index[box.name]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        (out / "labels" / side / Path(name).with_suffix(".txt")).write_text("".join(lines), encoding="utf-8")
        records.append(
            {
                "file": f"images/{side}/{name}",
                "source": _rel(im.image, ls.root).as_posix(),
                "sha256": im.sha256,
                "split": side,
                "boxes": len(im.boxes),
            }
        )

    data = {
        "path": str(out),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(ls.classes)),
    }
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    manifest = {"seed": seed, "val_fraction": val_fraction, "classes": list(ls.classes), "images": records}
    (out / "split.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return yaml_path


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(path.name)


def _place_image(src: Path, dst: Path, orientation: int) -> None:
    if orientation != 1:
        # Boxes are in displayed coordinates, so the pixels must be too; PNG keeps them lossless.
        with open_image(src) as im:
            flipped = im.transpose(TRANSPOSE_FOR_ORIENTATION[orientation])
        if flipped.mode not in _PNG_MODES:
            flipped = flipped.convert("RGB")
        flipped.save(dst, "PNG")
        return
    if src.suffix.lower() in (".jpg", ".jpeg") and not _jpeg_ends_cleanly(src):
        # ultralytics "repairs" such JPEGs by rewriting them; a copy keeps that away from the original.
        shutil.copyfile(src, dst)
        return
    try:
        os.link(src, dst)  # fast and uses no space; ultralytics only reads images
    except OSError:  # other filesystem, no permission for links, ...
        shutil.copyfile(src, dst)


def _heif_to_jpeg(src: Path, dst: Path) -> None:
    """A JPEG copy of a HEIC photo, decoded as classify decodes it (upright, the rotation applied once)."""
    photo = Photo(src, Path(src.name), src.stat().st_size, 0)
    rgb = decode(photo, max_side=1 << 30).rgb  # DecodeError names the problem; the label reader read it
    Image.fromarray(rgb).save(dst, "JPEG", quality=HEIF_JPEG_QUALITY)


def _jpeg_ends_cleanly(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 2:
            return False
        f.seek(-2, os.SEEK_END)
        return f.read() == b"\xff\xd9"
