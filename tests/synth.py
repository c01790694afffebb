"""Tiny labelled data made on the fly: coloured 'faces' a detector learns in seconds.

Each class is a solid disc of its own colour with two dark 'eyes', on a noisy background. That is
easy enough for YOLO trained from scratch for a few epochs on a CPU, so tests can exercise the real
train -> classify path (copies really land in class folders) without any external data.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"ava": (220, 40, 40), "ben": (40, 80, 220)}


def voc(filename: str, w: int, h: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f"<annotation><folder>x</folder><filename>{filename}</filename>"
        f"<path>C:\\Users\\teacher\\{filename}</path><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size><segmented>0</segmented>{objs}</annotation>"
    )


def picture(rng: random.Random, who: list[str], size=(256, 192)) -> tuple[Image.Image, list]:
    w, h = size
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(90, 170, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    d = ImageDraw.Draw(img)
    placed: list[tuple[str, tuple[int, int, int, int]]] = []
    for name in who:
        for _ in range(50):
            r = rng.randint(22, 40)
            x, y = rng.randint(0, w - 2 * r), rng.randint(0, h - 2 * r)
            box = (x, y, x + 2 * r, y + 2 * r)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for _, b in placed):
                break
        else:
            continue
        d.ellipse(box, fill=COLOURS[name])
        for ex in (x + r * 0.6, x + r * 1.4):
            d.ellipse(
                (ex - r * 0.15, y + r * 0.7 - r * 0.15, ex + r * 0.15, y + r * 0.7 + r * 0.15),
                fill=(20, 20, 20),
            )
        placed.append((name, box))
    return img, placed


def make_labelled(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        who = rng.choice([["ava"], ["ben"], ["ava", "ben"], []])
        img, placed = picture(rng, who)
        img.save(folder / f"img_{i:03d}.jpg", quality=92)
        (folder / f"img_{i:03d}.xml").write_text(voc(f"img_{i:03d}.jpg", img.width, img.height, placed))
    return folder


def make_library(folder: Path, n: int, seed: int = 1) -> dict[str, set[str]]:
    """Unlabelled photos in nested folders; returns the truth: relative path -> names in it."""
    rng = random.Random(seed)
    truth = {}
    for i in range(n):
        who = rng.choice([["ava"], ["ben"], ["ava", "ben"], []])
        img, placed = picture(rng, who)
        rel = Path(f"month{i % 3}") / f"IMG_{i:04d}.jpg"
        (folder / rel.parent).mkdir(parents=True, exist_ok=True)
        img.save(folder / rel, quality=90)
        truth[rel.as_posix()] = {n for n, _ in placed}
    return truth


def quadrants(w: int = 64, h: int = 48) -> Image.Image:
    """Red, green / blue, white quadrants: every rotation and flip of it is different."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 255)
    return Image.fromarray(a)
