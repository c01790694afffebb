#!/usr/bin/env python3
"""A second mask style ("bench2") for the benchmarks only: photosort must not learn its benchmark.

make_library.py draws its masks as flat one-colour polygons with three pleat lines, and photosort's
training draws its own synthetic masks (sorter/training/augment.py).  This module draws masks that
neither of them produced, so a benchmark can tell "recognises masked children" from "recognises
that mask renderer".  It is used by bench/ only; nothing in sorter/ may import it.

What a bench2 mask is (per face, everything random from the given generator):
  * one of four shapes, each with its own outline and surface:
      surgical  pleated rectangle; three pleats that fan out in the middle and bunch at the sides,
                a nose wire, bound edges
      kn95      pointed "fish" outline with a vertical fold line (the two halves lit differently),
                a heat-sealed seam down the fold and an embossed, dotted weld along the edge
      cloth     contoured cloth mask with a centre seam, a stitched hem and often a print
                (stripes, polka dots, gingham, camouflage blobs) on a woven fabric texture
      cup       N95 dome (strong radial shading), a foam rim, sometimes an exhalation valve,
                and head straps instead of ear loops
  * a procedural photo-like surface: a height field (curvature around the face, a bulge over the
    nose or chin, pleats, folds, cloth crumple) lit by one light per photo (diffuse + a little
    specular), a weave or non-woven speckle texture, low-frequency mottling, exposure matched to
    the face's own brightness, a soft contact shadow on the face, a slight blur and sensor noise;
  * elastic straps toward the ears (ear loops: mask corner to the top and to the bottom of the ear);
  * varied colours: a palette of common mask colours and random hues; about 10 % worn below the
    nose (the restyle default, as make_library's --incorrect-rate).

Placement uses the face BOX only (no landmark model).  Fractions of the box (x: 0 = left side,
1 = right side; y: 0 = top, 1 = bottom), measured on make_library's faces, whose box runs from the
brow to the chin and from cheek to cheek (see the constants below): eyes at y 0.36, nose tip 0.60,
mouth 0.76, chin 1.0, ears 0.08 box widths outside the sides between y 0.40 and 0.62.  A mask
worn properly starts at y 0.45 (nose bridge, under the eyes) and ends at 1.07 (under the chin); one
worn below the nose starts at 0.65 (under the nostrils).  Each mask then gets a random roll
(sd 4 degrees, at most 8), a random offset (up to 3 % of the box width and 2 % of its height) and a
little jitter of its edges and width.

    apply_style(image_rgb, face_boxes_xyxy, masked_flags, rng) -> image

Command line:

    python bench/mask_styles.py restyle --src LIB --out LIB2 --seed S [--mask-rate 0.7]
    python bench/mask_styles.py sheet --lib LIB2 --out /tmp/bench2_contact.png

restyle takes a make_library.py output built with --mask-rate 0 (all faces bare) and writes the same
layout to LIB2: masks drawn on --mask-rate of the library faces (truth.csv: recurring people and
strangers) and of the labelled faces (the VOC XML or YOLO txt boxes; the label files are copied
unchanged), truth.csv with updated masked/incorrect flags, the mask shape and each rewritten photo's
sha256.  Every photo is re-encoded (masked or not, so that all photos went through the same steps)
with its own JPEG quantisation tables and chroma subsampling; a photo stored sideways keeps its
EXIF block and Orientation tag: truth.csv's boxes are in displayed pixels, so the mask is drawn on
the EXIF-rotated image which is then turned back to the stored orientation.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps, JpegImagePlugin
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sorter.io.exif import TRANSPOSE_FOR_ORIENTATION  # noqa: E402 - the one orientation table

STYLE = "bench2"

# Fractions of the face box (see the module docstring).
EYES_Y = 0.36
NOSE_TIP_Y = 0.60
MOUTH_Y = 0.76
CHIN_Y = 1.0
TOP_Y = 0.45  # top edge of a mask worn properly: the nose bridge, just under the eyes
TOP_Y_BELOW_NOSE = 0.65  # top edge of a mask worn below the nose: under the nostrils
BOTTOM_Y = 1.07  # bottom edge: under the chin
HALF_WIDTH = 0.53  # half the mask's width: just past the cheek line (the box sides)
EAR_X = 0.08  # the ears, this far outside the box sides ...
EAR_Y = (0.40, 0.62)  # ... from this height to this one
PIVOT_Y = 0.75  # the mask rolls about (box centre x, this height)

SHAPES = ("surgical", "kn95", "cloth", "cup")
SHAPE_WEIGHTS = (0.35, 0.2, 0.3, 0.15)
PALETTE = {  # common mask colours; the rest are random hues
    "surgical": [(150, 190, 224), (120, 170, 215), (235, 236, 232), (215, 160, 185), (160, 205, 190)],
    "kn95": [(238, 238, 235), (38, 38, 42), (200, 200, 204), (225, 175, 190), (60, 70, 110)],
    "cloth": [(30, 40, 80), (40, 40, 44), (120, 30, 45), (70, 120, 80), (225, 200, 120), (170, 150, 200)],
    "cup": [(236, 234, 225), (225, 215, 170), (190, 192, 196), (90, 130, 190)],
}
PATTERNS = ("plain", "stripes", "dots", "gingham", "camo")


@dataclass
class MaskSpec:
    shape: str
    below_nose: bool
    colour: tuple[int, int, int]
    pattern: str
    roll_deg: float
    top: float
    bottom: float
    half_width: float
    offset: tuple[float, float]
    valve: bool


# ----------------------------------------------------------------------------------------- textures


def _fbm(shape: tuple[int, int], cell: float, rng: np.random.Generator, octaves: int = 3) -> np.ndarray:
    """Smooth value noise over a grid of this shape (a random lattice every `cell` grid pixels,
    bicubic in between), several octaves; about zero mean.  Isotropic, so it needs no roll."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        lat = rng.standard_normal((max(2, math.ceil(h / cell)) + 1, max(2, math.ceil(w / cell)) + 1))
        out += amp * cv2.resize(lat.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp, cell = amp * 0.5, max(1.0, cell / 2.0)
    return out / total


def _weave(sx: np.ndarray, sy: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Plain weave: warp and weft threads alternating over/under, each thread a little different."""
    a, b = sx / period, sy / period
    ia, ib = np.floor(a).astype(np.int64), np.floor(b).astype(np.int64)
    over = ((ia + ib) & 1).astype(bool)
    prof = np.where(over, np.sin(np.pi * (b - ib)), np.sin(np.pi * (a - ia)))
    va = rng.standard_normal(4096).astype(np.float32)
    vb = rng.standard_normal(4096).astype(np.float32)
    var = np.where(over, va[ia % 4096], vb[ib % 4096])
    return (prof - 0.64) + 0.35 * var


def _pattern(name: str, px: np.ndarray, py: np.ndarray, unit: float, rng: np.random.Generator) -> np.ndarray:
    """Where the print's second colour goes, 0..1 (px, py in box widths on the mask's surface; unit:
    grid pixels per box width)."""
    if name == "stripes":
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(0.07, 0.18)
        v = (px * math.cos(ang) + py * math.sin(ang)) / period
        return ((v % 1.0) < rng.uniform(0.3, 0.55)).astype(np.float32)
    if name == "dots":
        sp = rng.uniform(0.09, 0.17)
        gy = py / sp
        row = np.floor(gy)
        gx = px / sp + 0.5 * (row % 2)
        d = np.hypot(gx - np.floor(gx) - 0.5, gy - row - 0.5)
        return (d < rng.uniform(0.2, 0.32)).astype(np.float32)
    if name == "gingham":
        period = rng.uniform(0.06, 0.12)
        return 0.5 * (((px / period) % 1.0) < 0.5) + 0.5 * (((py / period) % 1.0) < 0.5)
    if name == "camo":
        n = _fbm(px.shape, rng.uniform(0.12, 0.25) * unit, rng, octaves=2)
        return (n > 0.1).astype(np.float32) + 0.6 * (n < -0.25)
    return np.zeros_like(px, dtype=np.float32)


def _random_colour(rng: np.random.Generator, shape: str) -> tuple[int, int, int]:
    if rng.random() < 0.55:
        pal = PALETTE[shape]
        c = np.array(pal[rng.integers(len(pal))], np.float32) * rng.uniform(0.92, 1.06)
    else:
        import colorsys

        h, s, v = rng.random(), rng.uniform(0.15, 0.8), rng.uniform(0.3, 0.95)
        c = np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255
    return tuple(int(v) for v in np.clip(c, 0, 255))


# ------------------------------------------------------------------------------------------- shapes


def _shape(shape: str, u: np.ndarray, t: np.ndarray, below: bool, spec: MaskSpec):
    """Outline (bool), height field (in mask half-widths) and a brightness detail map for one shape.

    u: -1 .. 1 across the mask (its half width), t: 0 at its top edge .. 1 at its bottom edge."""
    au = np.abs(u)
    detail = np.ones_like(u)
    bump_t = 0.62 if below else 0.22  # the chin pushes a mask worn low, the nose one worn properly
    bump = 0.12 * np.exp(-((u / 0.3) ** 2) - ((t - bump_t) / 0.25) ** 2)
    # the lower part turns under the chin, away from a light above
    under_chin = -0.5 * np.clip(t - 0.7, 0, None) ** 2 / 0.3
    if shape == "surgical":
        inside = (t >= 0.07 * u**2) & (t <= 1 - 0.10 * u**2) & (au <= 1 - 0.06 * t)
        z = 0.55 * np.sqrt(np.clip(1 - (0.85 * u) ** 2, 0, 1)) + under_chin + bump
        # three pleats: wide in the middle, bunched towards t ~ 0.5 at the sides
        c = 0.5 + (t - 0.5) / (0.6 + 0.4 * (1 - u**2))
        ph = (c - 0.2) / 0.2
        pleat = (ph >= 0) & (ph < 3)
        f = ph - np.floor(ph)
        # each pleat's face tilts down and out to its fold; the next one overlaps it, with a soft shadow
        z = z + np.where(pleat, 0.06 * np.sqrt(f), 0.0)
        detail *= np.where(pleat, 1 - 0.16 * np.exp(-((f / 0.12) ** 2)) + 0.05 * f, 1.0)
        wire = (t > 0.015) & (t < 0.06) & (au < 0.45)
        z = z + np.where(wire, 0.01, 0.0)
        detail *= np.where(wire, 1.06, 1.0)
    elif shape == "kn95":
        inside = (t >= -0.04 + 0.16 * au) & (t <= 1.02 - 0.3 * au**1.4) & (au <= 1 - 0.1 * t)
        z = (
            0.75 * np.clip(1 - au, 0, None) ** 0.9
            + 0.25 * np.sqrt(np.clip(1 - (1.6 * (t - 0.5)) ** 2, 0, 1))
            + under_chin
            + 0.5 * bump
        )
        detail *= 1 - 0.35 * np.exp(-((u / 0.012) ** 2))  # heat seal along the fold
    elif shape == "cloth":
        inside = (t >= -0.03 + 0.15 * u**2) & (t <= 1 - 0.3 * u**2) & (au <= 0.97)
        z = (
            0.4 * np.sqrt(np.clip(1 - (0.8 * u) ** 2, 0, 1))
            + 0.2 * np.sqrt(np.clip(1 - (1.1 * (t - 0.55)) ** 2, 0, 1))
            + under_chin
            + bump
        )
        seam = np.exp(-((u / 0.012) ** 2))
        detail *= 1 - 0.3 * seam
    else:  # cup
        r2 = (u / 0.8) ** 2 + ((t - 0.5) / 0.5) ** 2 + 0.4 * np.clip(0.25 - t, 0, None)  # flat nose piece
        inside = r2 <= 1
        z = 0.5 * np.sqrt(np.clip(1 - r2, 0, 1)) + 0.5 * under_chin + 0.5 * bump
        if spec.valve:
            vu, vt, vr = 0.36 * (1 if spec.offset[0] >= 0 else -1), 0.6, 0.17
            dv = np.hypot(u - vu, (t - vt) * 1.7)
            valve = dv < vr
            z = z + np.where(valve, 0.06 * np.sqrt(np.clip(1 - (dv / vr) ** 2, 0, 1)), 0.0)
            slits = np.where(valve & (dv > 0.3 * vr), 1 - 0.3 * (np.sin((t - vt) * 120) > 0.6), 1.0)
            detail *= slits
    return inside, z, detail


# ------------------------------------------------------------------------------------------ drawing


def _transform(box, spec: MaskSpec):
    """Maps between box fractions (fx, fy) and image pixels for one mask (offset, then roll)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    px, py = x0 + 0.5 * bw, y0 + PIVOT_Y * bh
    c, s = math.cos(math.radians(spec.roll_deg)), math.sin(math.radians(spec.roll_deg))

    def forward(fx, fy):
        lx = (np.asarray(fx) - 0.5 + spec.offset[0]) * bw
        ly = (np.asarray(fy) - PIVOT_Y + spec.offset[1]) * bh
        return px + c * lx - s * ly, py + s * lx + c * ly

    def inverse(x, y):
        dx, dy = x - px, y - py
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        return lx / bw + 0.5 - spec.offset[0], ly / bh + PIVOT_Y - spec.offset[1]

    return forward, inverse, bw, bh


def random_spec(rng: np.random.Generator, below_nose: bool) -> MaskSpec:
    shape = SHAPES[rng.choice(len(SHAPES), p=SHAPE_WEIGHTS)]
    top = (TOP_Y_BELOW_NOSE if below_nose else TOP_Y) + rng.normal(0, 0.012)
    bottom = BOTTOM_Y + rng.uniform(-0.02, 0.03) + (0.07 if below_nose else 0.0)
    width = HALF_WIDTH * rng.uniform(0.94, 1.06)
    pattern = PATTERNS[rng.choice(5, p=[0.4, 0.2, 0.15, 0.1, 0.15])] if shape == "cloth" else "plain"
    return MaskSpec(
        shape=shape,
        below_nose=below_nose,
        colour=_random_colour(rng, shape),
        pattern=pattern,
        roll_deg=float(np.clip(rng.normal(0, 4), -8, 8)),
        top=float(top),
        bottom=float(bottom),
        half_width=float(width),
        offset=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.02, 0.02))),
        valve=bool(shape == "cup" and rng.random() < 0.5),
    )


def _bezier(p0, p1, p2, n: int = 24):
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)


def _straps(spec: MaskSpec) -> list[np.ndarray]:
    """Strap centre lines in box fractions (fx, fy)."""
    top, bot, hw = spec.top, spec.bottom, spec.half_width
    h = bot - top
    out = []
    for side in (-1, 1):
        ear_x = 0.5 + side * (0.5 + EAR_X)
        if spec.shape == "cup":  # head straps: above and below the ears, round the back of the head
            for t, fy_end in ((0.3, EAR_Y[0] - 0.04), (0.75, EAR_Y[1] + 0.12)):
                a = (0.5 + side * hw * 0.75, top + t * h)
                e = (0.5 + side * 0.52, fy_end)  # where it turns behind the head
                out.append(_bezier(a, ((a[0] + e[0]) / 2, (a[1] + e[1]) / 2 + 0.01), e))
        else:  # ear loops: from the mask's corners to the top and the bottom of the ear
            a = (0.5 + side * hw * 0.97, top + 0.09 * h)
            b = (0.5 + side * hw * 0.9, top + 0.85 * h)
            et, eb = (ear_x, EAR_Y[0]), (ear_x - side * 0.01, EAR_Y[1])
            out.append(_bezier(a, ((a[0] + et[0]) / 2, min(a[1], et[1]) - 0.02), et))
            out.append(_bezier(b, ((b[0] + eb[0]) / 2 + side * 0.02, (b[1] + eb[1]) / 2 + 0.03), eb))
    return out


def _draw_one(img: np.ndarray, box, spec: MaskSpec, light: np.ndarray, rng: np.random.Generator) -> None:
    """Draw one mask into img (float32 HxWx3, 0..255) in place."""
    forward, inverse, bw, bh = _transform(box, spec)
    if bw < 4 or bh < 4:
        return
    H, W = img.shape[:2]
    cx, cy = forward(np.array([-0.3, 1.3, -0.3, 1.3]), np.array([0.28, 0.28, 1.35, 1.35]))
    rx0, ry0 = max(0, int(math.floor(cx.min()))), max(0, int(math.floor(cy.min())))
    rx1, ry1 = min(W, int(math.ceil(cx.max()))), min(H, int(math.ceil(cy.max())))
    if rx1 - rx0 < 2 or ry1 - ry0 < 2:
        return
    ss = int(np.clip(math.ceil(160 / bw), 2, 4))  # supersampling: edges and fine texture antialiased
    gw, gh = (rx1 - rx0) * ss, (ry1 - ry0) * ss
    xs = rx0 + (np.arange(gw, dtype=np.float32) + 0.5) / ss
    ys = ry0 + (np.arange(gh, dtype=np.float32) + 0.5) / ss
    X, Y = np.meshgrid(xs, ys)
    fx, fy = inverse(X, Y)
    u = (fx - 0.5) / spec.half_width
    t = (fy - spec.top) / (spec.bottom - spec.top)
    inside, z, detail = _shape(spec.shape, u, t, spec.below_nose, spec)
    sx, sy = fx * bw, fy * bh  # the mask's own surface, in pixels: textures follow its roll

    # surface: crumple, texture, print
    crumple = 0.04 if spec.shape == "cloth" else 0.015
    z = z + crumple * _fbm(X.shape, bw / 6 * ss, rng, octaves=2)
    if spec.shape == "cloth":
        tex = rng.uniform(0.10, 0.2) * _weave(sx, sy, max(1.3, bw / rng.uniform(35, 70)), rng)
    else:  # non-woven: fine speckle
        tex = rng.uniform(0.04, 0.08) * _fbm(X.shape, max(0.8, bw / 90) * ss, rng, octaves=2)
    tex = tex + 0.05 * _fbm(X.shape, bw / 3 * ss, rng, octaves=2)
    base = np.empty(X.shape + (3,), np.float32)
    base[:] = np.array(spec.colour, np.float32)
    if spec.pattern != "plain":
        second = np.array([235, 235, 230] if rng.random() < 0.4 else _random_colour(rng, "cloth"), np.float32)
        p = _pattern(spec.pattern, sx / bw, sy / bw, bw * ss, rng)[..., None]
        base = base * (1 - np.clip(p, 0, 1)) + second * np.clip(p, 0, 1)

    # edges: binding / weld / rim, from the distance to the outline
    dist = ndimage.distance_transform_edt(inside) / ss / bw  # in box widths
    if spec.shape == "surgical":
        detail *= np.where(dist < 0.035, 0.92, 1.0)
    elif spec.shape == "kn95":
        dots = (np.sin(sx / max(1.0, bw / 60)) * np.sin(sy / max(1.0, bw / 60)) > 0.3) & (dist < 0.05)
        detail *= np.where(dist < 0.05, 0.93, 1.0) * np.where(dots, 0.88, 1.0)
    elif spec.shape == "cloth":
        stitch = (np.abs(dist - 0.04) < 0.006) & (np.sin((sx + sy) / max(1.0, bw / 30)) > 0)
        detail *= np.where(dist < 0.03, 0.9, 1.0) * np.where(stitch, 0.8, 1.0)
        seam_stitch = (np.abs(u) < 0.03) & (np.sin(sy / max(1.0, bw / 30)) > 0.2)
        detail *= np.where(seam_stitch, 0.85, 1.0)
    else:
        detail *= np.where(dist < 0.045, 0.86, 1.0)

    # lighting: normals from the height field (in pixels), one light for the photo
    zp = z.astype(np.float32) * spec.half_width * bw
    gy_, gx_ = np.gradient(zp)
    gx_, gy_ = gx_ * ss, gy_ * ss
    norm = np.sqrt(gx_**2 + gy_**2 + 1)
    nx, ny, nz = -gx_ / norm, -gy_ / norm, 1 / norm
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    hv = light + np.array([0, 0, 1.0])
    hv = hv / np.linalg.norm(hv)
    spec_pow, spec_k = (30, 0.03) if spec.shape == "cloth" else (14, rng.uniform(0.05, 0.12))
    specular = spec_k * np.clip(nx * hv[0] + ny * hv[1] + nz * hv[2], 0, 1) ** spec_pow
    ambient = rng.uniform(0.45, 0.6)
    shade = ambient + (1 - ambient) * diffuse

    # exposure: as bright as the face (forehead and eyes) is, relative to a typical face
    fx0, fy0 = forward(0.2, 0.08)
    fx1, fy1 = forward(0.8, 0.4)
    fr = img[
        max(0, int(min(fy0, fy1))) : max(1, int(max(fy0, fy1))),
        max(0, int(min(fx0, fx1))) : max(1, int(max(fx0, fx1))),
    ]
    lum = float(fr.mean()) if fr.size else 128.0
    exposure = float(np.clip(lum / 135.0, 0.6, 1.3)) ** 0.6

    rgb = base * ((1 + tex) * detail * shade * exposure)[..., None] + 255 * specular[..., None]
    alpha = inside.astype(np.float32)

    # straps, under the mask
    strap_a = Image.new("L", (gw, gh), 0)
    strap_hi = Image.new("L", (gw, gh), 0)
    da, dh = ImageDraw.Draw(strap_a), ImageDraw.Draw(strap_hi)
    width = max(1.0, (0.024 if spec.shape == "cup" else 0.02) * bw) * ss
    for line in _straps(spec):
        lx, ly = forward(line[:, 0], line[:, 1])
        pts = list(zip(((lx - rx0) * ss).tolist(), ((ly - ry0) * ss).tolist(), strict=True))
        da.line(pts, fill=255, width=max(1, round(width)), joint="curve")
        off = -light[:2] * width * 0.2
        dh.line([(x + off[0], y + off[1]) for x, y in pts], fill=255, width=max(1, round(width * 0.35)))
    sa = np.asarray(strap_a, np.float32) / 255
    sh = np.asarray(strap_hi, np.float32) / 255
    if spec.shape == "cup" or rng.random() < 0.5:
        strap_col = np.array(spec.colour, np.float32)
    else:
        strap_col = np.array([232, 232, 228] if rng.random() < 0.6 else [40, 40, 44], np.float32)
    strap_rgb = strap_col * ((0.8 + 0.3 * sh) * exposure)[..., None]
    rgb = rgb * alpha[..., None] + strap_rgb * (sa * (1 - alpha))[..., None]
    alpha = alpha + sa * (1 - alpha)

    # down to image pixels, soften a little like the resized face, blend, contact shadow, noise
    def down(a):
        return a.reshape(gh // ss, ss, gw // ss, ss, *a.shape[2:]).mean(axis=(1, 3))

    a = down(alpha)
    prem = down(rgb * alpha[..., None])
    # as soft as the face: photos' faces are softer the larger they are (upscaled sources)
    sigma = max(0.35, bh / 128 * rng.uniform(0.45, 0.8))
    a = ndimage.gaussian_filter(a, sigma)
    prem = ndimage.gaussian_filter(prem, (sigma, sigma, 0))
    col = prem / np.maximum(a, 1e-4)[..., None]
    roi = img[ry0:ry1, rx0:rx1]
    reach = 0.03 * bw  # the shadow falls away from the light
    shadow = ndimage.shift(
        ndimage.gaussian_filter(a, max(0.8, reach)), (-light[1] * reach, -light[0] * reach), order=1
    )
    roi *= (1 - 0.35 * np.clip(shadow, 0, 1) * (1 - a))[..., None]
    noise = rng.normal(0, rng.uniform(1.0, 3.0), col.shape).astype(np.float32)
    roi[:] = roi * (1 - a[..., None]) + np.clip(col + noise, 0, 255) * a[..., None]


def apply_style_with_specs(image_rgb, face_boxes_xyxy, masked_flags, rng, below_nose=None):
    """apply_style, also returning the MaskSpec of every face (None where no mask was drawn)."""
    as_pil = isinstance(image_rgb, Image.Image)
    img = np.asarray(image_rgb.convert("RGB") if as_pil else image_rgb, np.float32).copy()
    below_nose = below_nose if below_nose is not None else [False] * len(face_boxes_xyxy)
    lz = rng.uniform(0.6, 0.85)  # one light for the whole photo, from above and a side
    light = np.array([rng.uniform(-0.6, 0.6), -rng.uniform(0.2, 0.6), lz], np.float32)
    light /= np.linalg.norm(light)
    specs: list[MaskSpec | None] = []
    for box, masked, below in zip(face_boxes_xyxy, masked_flags, below_nose, strict=True):
        if not masked:
            specs.append(None)
            continue
        spec = random_spec(rng, bool(below))
        _draw_one(img, box, spec, light, rng)
        specs.append(spec)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return (Image.fromarray(out) if as_pil else out), specs


def apply_style(image_rgb, face_boxes_xyxy, masked_flags, rng, below_nose=None):
    """Draw a bench2 mask on each face whose flag is set.

    image_rgb: PIL image or HxWx3 uint8 array (returned as the same kind, a new object);
    face_boxes_xyxy: face boxes (x0, y0, x1, y1) in the image's pixels, brow to chin, cheek to cheek;
    masked_flags: draw a mask on that face?  below_nose: optional flags, worn below the nose;
    rng: numpy Generator (np.random.default_rng(seed)) -- everything random comes from it."""
    return apply_style_with_specs(image_rgb, face_boxes_xyxy, masked_flags, rng, below_nose)[0]


# ------------------------------------------------------------------------------------------ restyle

# How a photo's stored pixels become its displayed ones (as ImageOps.exif_transpose), and back.
_TO_DISPLAY = TRANSPOSE_FOR_ORIENTATION
_TO_STORED = _TO_DISPLAY | {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _photo_rng(seed: int, part: str, rel: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{STYLE}|{seed}|{part}|{rel}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def restyle_photo(src: Path, dst: Path, boxes, masked, below, rng) -> tuple[str, list, tuple]:
    """Draw masks on one photo (boxes in displayed pixels), write it with the same EXIF orientation,
    quantisation tables and subsampling.  Returns (sha256, specs, displayed size)."""
    with Image.open(src) as im:
        im.load()
        orientation = im.getexif().get(0x0112, 1)
        save_kw = {"format": "JPEG"}
        if im.format == "JPEG":
            save_kw |= {"qtables": im.quantization, "subsampling": JpegImagePlugin.get_sampling(im)}
        else:
            save_kw["quality"] = 90
        for key in ("exif", "icc_profile", "dpi"):
            if im.info.get(key):
                save_kw[key] = im.info[key]
        shown = im.convert("RGB")
    if orientation in _TO_DISPLAY:
        shown = shown.transpose(_TO_DISPLAY[orientation])
    styled, specs = apply_style_with_specs(shown, boxes, masked, rng, below)
    stored = styled.transpose(_TO_STORED[orientation]) if orientation in _TO_STORED else styled
    buf = io.BytesIO()
    stored.save(buf, **save_kw)
    data = buf.getvalue()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), specs, shown.size


def _decide(rng: np.random.Generator, n: int, rate: float, incorrect: float) -> tuple[list, list]:
    masked = [bool(rng.random() < rate) for _ in range(n)]
    below = [m and bool(rng.random() < incorrect) for m in masked]
    return masked, below


def _spec_fields(spec: MaskSpec | None) -> dict:
    return {"mask_style": STYLE, "mask_shape": spec.shape} if spec else {}


def _library_job(job) -> list:
    src, out, row, seed, rate, incorrect = job
    faces = json.loads(row["faces"])
    rng = _photo_rng(seed, "library", row["path"])
    masked, below = _decide(rng, len(faces), rate, incorrect)
    boxes = [f["box"] for f in faces]
    digest, specs, _ = restyle_photo(
        src / "library" / row["path"], out / "library" / row["path"], boxes, masked, below, rng
    )
    for f, m, b, s in zip(faces, masked, below, specs, strict=True):
        f["masked"], f["incorrect"] = m, b
        f.update(_spec_fields(s))
    return [row["path"], row["people"], json.dumps(faces, ensure_ascii=False), digest]


def _label_boxes(photo: Path) -> list[list[float]] | None:
    """Boxes of a labelled photo from its VOC XML or YOLO txt (None when it has no label file)."""
    xml, txt = photo.with_suffix(".xml"), photo.with_suffix(".txt")
    if xml.is_file():
        root = ET.parse(xml).getroot()
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        return boxes
    if txt.is_file():
        with Image.open(photo) as im:
            w, h = ImageOps.exif_transpose(im).size
        boxes = []
        for line in txt.read_text().split("\n"):
            p = line.split()
            if len(p) == 5:
                cx, cy, bw, bh = (float(v) for v in p[1:])
                boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        return boxes
    return None


def _labelled_job(job) -> dict:
    src, out, rel, seed, rate, incorrect, strangers = job
    boxes = _label_boxes(src / "labelled" / rel) or []
    n_labelled = len(boxes)
    boxes = boxes + (strangers or [])
    rng = _photo_rng(seed, "labelled", rel)
    masked, below = _decide(rng, len(boxes), rate, incorrect)
    restyle_photo(src / "labelled" / rel, out / "labelled" / rel, boxes, masked, below, rng)
    return {
        "photo": rel,
        "faces": n_labelled,
        "masked": sum(masked[:n_labelled]),
        "below_nose": sum(below),
        "strangers": len(boxes) - n_labelled,
        "strangers_masked": sum(masked[n_labelled:]),
    }


class _StopReplay(Exception):
    pass


def replay_labelled_strangers(src: Path, make_library: Path, ml_args: list[str], log=print) -> dict:
    """The strangers' boxes in src's labelled photos, which its label files do not hold.

    make_library.py is run again in this process with the arguments src was built with (ml_args,
    e.g. ["--lfw", LFW, "--seed", "1", "--labelled", "300", "--library", "1500", "--mask-rate", "0"]),
    into a scratch folder, with its process pool replaced by a serial one that stops before the
    library and its compose() wrapped to keep every placed face.  A photo's replay is used only if
    the photo and label file it writes are byte for byte the ones in src.
    Returns {photo name: [stranger box]}."""
    import importlib.util
    import tempfile
    from unittest import mock

    spec = importlib.util.spec_from_file_location("_make_library_replay", make_library)
    ml = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ml)
    placed: list[list[dict]] = []
    compose = ml.compose

    def keep(*a, **k):
        res = compose(*a, **k)
        placed.append(res[1])
        return res

    found: dict[str, list] = {}
    mismatch = 0

    class SerialPool:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, jobs, chunksize=1):
            nonlocal mismatch
            if fn is not ml.make_labelled:
                raise _StopReplay
            for job in jobs:
                placed.clear()
                fn(job)
                ctx, i = job
                for name in (f"label_{i:04d}.jpg", f"label_{i:04d}.png"):
                    if (ctx["out"] / "labelled" / name).is_file():
                        break
                written = sorted((ctx["out"] / "labelled").glob(f"label_{i:04d}.*"))
                ok = bool(placed and written) and all(
                    (src / "labelled" / f.name).is_file()
                    and (src / "labelled" / f.name).read_bytes() == f.read_bytes()
                    for f in written  # the photo itself and its label file, byte for byte
                )
                if ok:
                    found[name] = [p["box"] for p in placed[-1] if not p["label"]]
                else:
                    mismatch += 1
                for f in written:
                    f.unlink()
            return []

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["make_library.py", *ml_args, "--out", str(Path(tmp) / "replay"), "--jobs", "1"]
        with (
            mock.patch.object(sys, "argv", argv),
            mock.patch.object(ml, "ProcessPoolExecutor", SerialPool),
            mock.patch.object(ml, "compose", keep),
            contextlib.suppress(_StopReplay),
        ):
            ml.main()
    if mismatch:
        log(
            f"replay: {mismatch} labelled photos did not match {src} (wrong --make-library-args?): "
            "their strangers stay bare"
        )
    return found


PHOTO_EXT = {".jpg", ".jpeg", ".png"}
DEFAULT_MAKE_LIBRARY = Path(__file__).resolve().parents[2] / "shared" / "bench" / "make_library.py"


def restyle(
    src: Path,
    out: Path,
    seed: int,
    mask_rate: float = 0.7,
    incorrect_rate: float = 0.1,
    jobs: int = 1,
    force: bool = False,
    allow_masked: bool = False,
    make_library_args=None,
    make_library: Path = DEFAULT_MAKE_LIBRARY,
    log=print,
) -> dict:
    """Write a copy of the make_library output src to out with bench2 masks (see the module docstring).

    make_library_args: the make_library.py arguments src was built with; then the strangers of the
    labelled photos (not in the label files) are found by replaying it and get masks too."""
    src, out = src.resolve(), out.resolve()
    if not (src / "truth.csv").is_file() or not (src / "library").is_dir():
        raise SystemExit(f"{src} is no make_library.py output (no truth.csv / library/)")
    if out == src or src in out.parents:
        raise SystemExit("--out must be a new folder outside --src")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    with open(src / "truth.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    already = sum(f["masked"] for r in rows for f in json.loads(r["faces"]))
    if already and not allow_masked:
        raise SystemExit(
            f"{src} has {already} masked faces already: build it with make_library.py --mask-rate 0 "
            "(or pass --allow-masked to draw over them anyway)"
        )
    out.mkdir(parents=True, exist_ok=True)
    # the tree: every folder, and every file that is not a photo we redraw (XML, txt, people.txt)
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if p.is_dir():
            (out / rel).mkdir(parents=True, exist_ok=True)
        elif rel.parts[0] == "labelled":
            if p.suffix.lower() not in PHOTO_EXT:
                shutil.copy2(p, out / rel)
        elif rel.parts[0] != "library" and rel.name != "truth.csv":
            shutil.copy2(p, out / rel)
    labelled = (
        sorted(
            str(p.relative_to(src / "labelled"))
            for p in (src / "labelled").rglob("*")
            if p.suffix.lower() in PHOTO_EXT
        )
        if (src / "labelled").is_dir()
        else []
    )
    strangers = (
        replay_labelled_strangers(src, make_library, list(make_library_args), log)
        if make_library_args is not None
        else None
    )
    lab_jobs = [
        (src, out, rel, seed, mask_rate, incorrect_rate, (strangers or {}).get(rel)) for rel in labelled
    ]
    lib_jobs = [(src, out, row, seed, mask_rate, incorrect_rate) for row in rows]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            lab = list(pool.map(_labelled_job, lab_jobs, chunksize=4))
            new_rows = list(pool.map(_library_job, lib_jobs, chunksize=4))
    else:
        lab = [_labelled_job(j) for j in lab_jobs]
        new_rows = [_library_job(j) for j in lib_jobs]
    tmp = out / "truth.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh)
        wr.writerow(["path", "people", "faces", "sha256"])
        wr.writerows(new_rows)
    lib_faces = [f for r in new_rows for f in json.loads(r[2])]
    summary = {
        "style": STYLE,
        "src": str(src),
        "seed": seed,
        "mask_rate": mask_rate,
        "incorrect_rate": incorrect_rate,
        "library_photos": len(new_rows),
        "library_faces": len(lib_faces),
        "library_masked": sum(f["masked"] for f in lib_faces),
        "library_below_nose": sum(f["incorrect"] for f in lib_faces),
        "labelled_photos": len(lab),
        "labelled_faces": sum(r["faces"] for r in lab),
        "labelled_masked": sum(r["masked"] for r in lab),
        "labelled_strangers": sum(r["strangers"] for r in lab),
        "labelled_strangers_masked": sum(r["strangers_masked"] for r in lab),
        "labelled_strangers_found_for": (
            f"{len(strangers)} of {len(lab)} photos, replaying make_library.py"
            if strangers is not None
            else "none: without --make-library-args the strangers of labelled photos stay bare"
        ),
        "shapes": {s: sum(f.get("mask_shape") == s for f in lib_faces) for s in SHAPES},
    }
    (out / "mask_style.json").write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(out / "truth.csv")  # last: a folder with truth.csv is complete
    log(
        f"restyled {len(new_rows)} library photos ({summary['library_masked']}/{len(lib_faces)} faces "
        f"masked) and {len(lab)} labelled photos ({summary['labelled_masked']}/{summary['labelled_faces']} "
        f"labelled faces, {summary['labelled_strangers_masked']}/{summary['labelled_strangers']} "
        f"strangers) to {out}"
    )
    return summary


# -------------------------------------------------------------------------------------------- sheet


def contact_sheet(lib: Path, out: Path, n: int = 16, min_height: int = 60, tile: int = 192) -> int:
    """Crops of the first n masked faces (face >= min_height) of a library, 4 to a row, to out."""
    tiles = []
    with open(lib / "truth.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            faces = [f for f in json.loads(row["faces"]) if f["masked"] and f["height"] >= min_height]
            if not faces:
                continue
            with Image.open(lib / "library" / row["path"]) as im:
                shown = ImageOps.exif_transpose(im).convert("RGB")
            for f in faces:
                x0, y0, x1, y1 = f["box"]
                w, h = x1 - x0, y1 - y0
                side = 1.5 * max(w, h)
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.05 * h
                half = side / 2
                crop = shown.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
                crop = crop.resize((tile, tile), Image.Resampling.LANCZOS)
                d = ImageDraw.Draw(crop)
                label = f"{f.get('mask_shape', 'drawn')}{' low' if f['incorrect'] else ''} h{f['height']}"
                d.rectangle([0, 0, tile, 12], fill=(0, 0, 0))
                d.text((2, 0), label, fill=(255, 255, 255))
                tiles.append(crop)
                if len(tiles) >= n:
                    break
            if len(tiles) >= n:
                break
    cols = 4
    sheet = Image.new("RGB", (cols * tile, max(1, math.ceil(len(tiles) / cols)) * tile), (20, 20, 20))
    for i, c in enumerate(tiles):
        sheet.paste(c, ((i % cols) * tile, (i // cols) * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(tiles)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("restyle", help="copy a make_library --mask-rate 0 output, drawing bench2 masks")
    r.add_argument("--src", type=Path, required=True, help="make_library.py output built with --mask-rate 0")
    r.add_argument("--out", type=Path, required=True, help="new library folder (same layout)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--mask-rate", type=float, default=0.7, help="share of faces given a mask")
    r.add_argument("--incorrect-rate", type=float, default=0.1, help="of masks, worn below the nose")
    r.add_argument("--jobs", type=int, default=1, help="worker processes")
    r.add_argument("--force", action="store_true", help="replace --out if it exists")
    r.add_argument("--allow-masked", action="store_true", help="accept a source that has masks already")
    r.add_argument(
        "--make-library-args",
        help='the make_library.py arguments --src was built with, as one string (e.g. "--lfw L --seed 1 '
        '--labelled 300 --library 1500 --mask-rate 0"): replays it to find the strangers of the labelled '
        "photos, whose boxes are in no label file, so that they get masks too",
    )
    r.add_argument("--make-library", type=Path, default=DEFAULT_MAKE_LIBRARY)
    s = sub.add_parser("sheet", help="contact sheet of masked faces of a library")
    s.add_argument("--lib", type=Path, required=True)
    s.add_argument("--out", type=Path, default=Path("/tmp/bench2_contact.png"))
    s.add_argument("-n", type=int, default=16)
    s.add_argument("--min-height", type=int, default=60)
    args = ap.parse_args(argv)
    if args.cmd == "restyle":
        ml_args = shlex.split(args.make_library_args) if args.make_library_args is not None else None
        restyle(
            args.src,
            args.out,
            args.seed,
            args.mask_rate,
            args.incorrect_rate,
            args.jobs,
            args.force,
            args.allow_masked,
            ml_args,
            args.make_library,
        )
    else:
        k = contact_sheet(args.lib, args.out, args.n, args.min_height)
        print(f"wrote {k} faces to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
