"""Synthetic face masks: shapes in a face frame, texture and shading (see :mod:`.augment`).

Designed from what worn masks look like in photos, not from any benchmark's masks:

- surgical: a pleated rectangle; the top edge runs across the nose bridge and dips to under the eyes
  at the cheeks, the sides run straight down the cheeks, the bottom is pulled under the chin and up
  towards the ears; horizontal pleats (a lit band, a shadow line at each fold), bound side edges,
  a nose wire, ear loops.
- n95: a moulded cup (FFP2): an egg-shaped dome, narrower at the nose, lit like a dome, a rim seam,
  head straps above and below the ears; some with a ribbed exhalation valve on one side.
- kn95: a folded flat mask: pointed at the nose, a vertical centre fold, each half lit differently
  (two planes), an embossed border seam, ear loops.
- cloth: a contoured fabric mask: stripes, checks, dots or plain with a weave, sometimes a centre seam.

Geometry lives in a *face frame*: origin between the eyes, x along the eye line, y down the face, in
image pixels. ``t`` runs across the mask (-1 its left side, 1 its right), ``v`` down it (0 top edge,
1 bottom edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

# The texture is computed at most this many pixels across half the mask, then scaled up: a photo's
# masks are never sharper than that, and it keeps a large face as fast as a small one.
_TEXTURE_HALF = 48


class MaskKind(NamedTuple):
    family: str  # "surgical", "n95", "kn95" or "cloth"
    worn: str  # "nose" (over the nose) or "below_nose"


@dataclass(frozen=True)
class MaskSpec:
    kind: MaskKind
    colour: np.ndarray  # RGB 0..1
    colour2: np.ndarray  # pattern, valve or loops
    loops: np.ndarray  # loops / straps
    p: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FaceFrame:
    """A face in its own frame: ``origin`` between the eyes, x along the eye line, y down the face."""

    origin: tuple[float, float]
    cos: float
    sin: float
    nose: float  # y of the nose tip
    mouth: float  # y of the mouth corners' midpoint
    chin: float  # y of the chin
    cx: float  # x of the mask's centre line
    left: float  # the mask's half-widths left and right of cx (the far cheek foreshortened)
    right: float

    def to_image(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ox, oy = self.origin
        return np.stack([ox + x * self.cos - y * self.sin, oy + x * self.sin + y * self.cos], -1)


def mask_span(fr: FaceFrame, spec: MaskSpec) -> tuple[float, float]:
    """The mask's top and bottom on its centre line (frame y)."""
    p = spec.p
    top = fr.nose * p["top"] if spec.kind.worn == "nose" else fr.nose + p["top"] * (fr.mouth - fr.nose)
    return top, fr.chin + p["under"] * (fr.chin - fr.mouth)


def edges(spec: MaskSpec, t: np.ndarray, yt: float, yb: float) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom outline (frame y) at ``t``."""
    p, h, a = spec.p, yb - yt, np.abs(t)
    a2 = a * a
    fam = spec.kind.family
    if fam == "n95":  # an egg: elliptic top half, fuller bottom half
        yc, r = yt + 0.5 * h, 0.5 * h
        e = np.sqrt(np.maximum(1 - a2, 0))
        full = np.cbrt(np.maximum(1 - a2 * a, 0))
        return yc - r * e, yc + r * (p["full"] * full + (1 - p["full"]) * e)
    if fam == "kn95":  # pointed at the nose, less so at the chin
        return yt + p["dip"] * h * a, yb - p["rise"] * h * a * np.sqrt(a)
    if fam == "surgical":
        return yt + p["dip"] * h * a * np.sqrt(a), yb - p["rise"] * h * a2
    return yt + p["dip"] * h * a2, yb - p["rise"] * h * a2 * np.sqrt(a)


def plan(fr: FaceFrame, spec: MaskSpec) -> tuple[np.ndarray, list[np.ndarray], float]:
    """The outline polygon and the loops or straps (image pixels), and the loops' width."""
    yt, yb = mask_span(fr, spec)
    h = yb - yt
    t = np.linspace(-1, 1, 33)
    top, bot = edges(spec, t, yt, yb)
    x = fr.cx + np.where(t < 0, t * fr.left, t * fr.right)
    poly = fr.to_image(np.r_[x, x[::-1]], np.r_[top, bot[::-1]])
    width = fr.left + fr.right
    s = np.linspace(0, 1, 9)[:, None]
    straps = []
    turn = (fr.left - fr.right) / width  # > 0: the nose turned right, the right cheek the far one
    for side, k in ((-1, 0), (1, -1)):
        if side * turn > 0.1:
            continue  # the far side's loops are hidden behind the cheek
        out = x[k] + side * 0.1 * width
        if spec.kind.family == "n95":  # head straps from the rim: above and below the ear
            k = 3 if side < 0 else -4
            pairs = [((x[k], top[k]), (out, top[k] - 0.15 * h)), ((x[k], bot[k]), (out, bot[k] + 0.05 * h))]
        else:  # ear loops from the corners to the ear (about eye to nose-tip height)
            pairs = [
                ((x[k], top[k]), (out, 0.3 * fr.nose)),
                ((x[k], bot[k] - 0.05 * h), (out, 1.05 * fr.nose)),
            ]
        for a, b in pairs:
            m = (0.5 * (a[0] + b[0]) + side * 0.02 * width, 0.5 * (a[1] + b[1]))  # a slight bow
            q = (1 - s) ** 2 * np.array(a) + 2 * s * (1 - s) * np.array(m) + s**2 * np.array(b)
            straps.append(fr.to_image(q[:, 0], q[:, 1]))
    return poly, straps, max(1.0, 0.012 * width)


def _soft(x: np.ndarray) -> np.ndarray:
    """Anti-aliased step of a signed distance (in texture pixels)."""
    return np.clip(x + 0.5, 0.0, 1.0)


def _texture(spec: MaskSpec, fx, fy, t, v, colh, half, aa) -> tuple[np.ndarray, np.ndarray]:
    """Per-family colour (h, w, 3) and shading (h, w); ``colh``: the mask's height per column (px);
    ``aa``: image pixels per texture pixel."""
    p, fam = spec.p, spec.kind.family
    col = np.broadcast_to(spec.colour, (*fx.shape, 3))
    at = np.abs(t)
    if fam == "surgical":
        n = p["pleats"]
        f = (np.clip((v - 0.15) * (1 / 0.73), 0, 1) * n) % 1.0
        band = (v > 0.15) & (v < 0.88)
        px = np.maximum(colh * (0.73 / n), 2.0) / (1.2 * aa)  # one pleat, in shadow-line widths
        # each pleat a gently lit band (lighter at its top), a shadow line at each fold
        shade = 1 + band * (0.06 * np.sin(6.283 * f) - 0.2 * np.exp(-((np.minimum(f, 1 - f) * px) ** 2)))
        shade -= 0.07 * _soft((at - 0.94) * half / aa)  # the bound side edges
        shade += 0.05 * (v < 0.07)  # the nose wire
    elif fam == "n95":
        r2 = t * t + (2 * v - 1) ** 2
        shade = 1.06 - 0.16 * r2 + 0.06 * np.exp(-((t + 0.25) ** 2 + (v - 0.45) ** 2) * 10)
        shade -= 0.12 * np.exp(-(((r2 - 0.8) * 20) ** 2))  # the rim seam
        if p["valve"]:  # a rounded-square valve on one side at mouth height, ribbed
            r = p["vr"] * half
            dx, dy = (t - p["side"] * 0.42) * half / r, (v - 0.58) * colh / r
            dv = np.sqrt(np.sqrt(dx**4 + dy**4))
            vm = _soft((1 - dv) * r / aa)
            ribs = (np.sin(dy * 28) > 0.2) * (dv < 0.7)
            vshade = 1.05 - 0.25 * dv * dv - 0.15 * ribs - 0.3 * np.exp(-(((dv - 0.9) * r / aa) ** 2))
            col = col + vm[..., None] * (spec.colour2 - spec.colour)
            shade += vm * (vshade - shade)
    elif fam == "kn95":
        shade = 1 + np.sign(t) * p["halves"] - 0.1 * (at - 0.5) ** 2
        shade -= 0.25 * np.exp(-((t * half / aa) ** 2))  # the centre fold
        edge = np.minimum((1 - at) * half, np.minimum(v, 1 - v) * colh)  # px from the outline
        shade -= 0.1 * np.exp(-(((edge - 0.05 * half) / aa) ** 2))  # the embossed border seam
    else:
        xw = half * t * (1 + 0.35 * t * t) / 1.35  # the pattern wraps round the cheeks
        period = max(p["period"] * 2 * half, 4.0 * aa)
        c, s = math.cos(math.radians(p["angle"])), math.sin(math.radians(p["angle"]))
        pat, duty = int(p["pattern"]), p["duty"]
        if pat in (0, 1):  # stripes / checks
            ph = (xw * c + fy * s) / period
            m = _soft((np.abs(ph % 1.0 - 0.5) - (0.5 - duty / 2)) * period / aa)
            if pat == 1:
                ph = (-xw * s + fy * c) / period
                m = 0.5 * (m + _soft((np.abs(ph % 1.0 - 0.5) - (0.5 - duty / 2)) * period / aa))
        elif pat == 2:  # dots, alternate rows offset
            row = np.floor(fy / period)
            dx = (xw / period + 0.5 * (row % 2)) % 1.0 - 0.5
            dy = (fy / period) % 1.0 - 0.5
            m = _soft((duty * 0.6 - np.sqrt(dx * dx + dy * dy)) * period / aa)
        else:
            m = np.zeros_like(fx)
        col = col + m[..., None] * (spec.colour2 - spec.colour)
        w = 6.283 / max(0.025 * half, 2 * aa)  # a weave: about 1/80 of the mask's width
        shade = 1 + p["weave"] * np.sin(fx * w) * np.sin(fy * w)
        if p["seam"]:
            shade -= 0.2 * np.exp(-(((t + 0.03 * np.sin(v * 3)) * half / aa) ** 2))
    return col, shade


def render(crop: np.ndarray, off: tuple[int, int], fr: FaceFrame, spec: MaskSpec, rng) -> np.ndarray:
    """``crop`` (uint8 RGB at image offset ``off``) with the mask drawn on; a new array."""
    import cv2  # here, not at import: importing sorter stays light

    p = spec.p
    hh, ww = crop.shape[:2]
    poly, straps, lw = plan(fr, spec)
    yt, yb = mask_span(fr, spec)
    half = 0.5 * (fr.left + fr.right)
    # the outline, anti-aliased at 1/8 pixel, feathered a little; the loops
    a8 = np.zeros((hh, ww), np.uint8)
    cv2.fillPoly(a8, [np.round((poly - off) * 8).astype(np.int32)], 255, cv2.LINE_AA, 3)
    s8 = np.zeros((hh, ww), np.uint8)
    for q in straps:
        qp = np.round((q - off) * 8).astype(np.int32)
        cv2.polylines(s8, [qp], False, 255, max(1, round(lw)), cv2.LINE_AA, 3)
    alpha = cv2.GaussianBlur(a8, (0, 0), 0.4 + 0.004 * half).astype(np.float32) * (1 / 255)
    # the texture over the outline's bounding box, at most _TEXTURE_HALF pixels a half-width
    (x0, y0), (x1, y1) = np.floor(poly.min(0) - off) - 1, np.ceil(poly.max(0) - off) + 2
    x0, y0, x1, y1 = int(max(x0, 0)), int(max(y0, 0)), int(min(x1, ww)), int(min(y1, hh))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return crop.copy()
    f = min(1.0, _TEXTURE_HALF / max(half, 1.0))
    tw, th = max(2, math.ceil((x1 - x0) * f)), max(2, math.ceil((y1 - y0) * f))
    xs = (np.arange(tw, dtype=np.float32) + 0.5) * ((x1 - x0) / tw) + (x0 + off[0] - 0.5 - fr.origin[0])
    ys = (np.arange(th, dtype=np.float32) + 0.5) * ((y1 - y0) / th) + (y0 + off[1] - 0.5 - fr.origin[1])
    fx = fr.cos * xs[None, :] + fr.sin * ys[:, None]
    fy = fr.cos * ys[:, None] - fr.sin * xs[None, :]
    d = fx - fr.cx
    t = np.clip(d * np.where(d < 0, 1 / fr.left, 1 / fr.right).astype(np.float32), -1, 1)
    top, bot = edges(spec, t, yt, yb)
    colh = np.maximum(bot - top, 1.0)
    v = (fy - top) / colh
    aa = (x1 - x0) / tw
    col, shade = _texture(spec, fx, fy, t, v, colh, half, aa)
    # shading common to all: darker where it wraps round the cheeks, light from one side, a vertical
    # gradient, a soft shadow under the top edge (it stands off the face), creases
    shade *= (1 - p["curve"] * t * t) * (1 + p["light"] * t) * (1 + p["vgrad"] * (v - 0.5))
    shade *= 1 - p["shadow"] * np.exp(-np.maximum(fy - top, 0) / max(1.5, 0.05 * (yb - yt)))
    crease = cv2.resize(
        rng.standard_normal((5, 5)).astype(np.float32), (tw, th), interpolation=cv2.INTER_CUBIC
    )
    shade *= 1 + (0.06 if spec.kind.family == "cloth" else 0.035) * crease
    # the scene's light: a smooth gradient from the face's brightness (relative; 2 x 2 cells, so no
    # feature of the face shows through) and a mild exposure
    small = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (2, 2), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32) * (1 / 255)
    light = cv2.resize(small / max(float(small.mean()), 1e-3), (tw, th), interpolation=cv2.INTER_LINEAR)
    expo = float(np.clip(small.max() / 0.7, 0.6, 1.0)) ** 0.35
    shade *= np.clip(light, 0.7, 1.3) ** 0.5 * (255 * expo)
    tex = col * shade[..., None]
    if f < 1:
        tex = cv2.resize(tex, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    else:
        tex = cv2.GaussianBlur(tex, (0, 0), 0.6)
    tex += ((255 * p["grain"]) * rng.standard_normal((y1 - y0, x1 - x0), dtype=np.float32))[..., None]
    np.clip(tex, 0, 255, out=tex)
    # composite: a contact shadow on the skin round the mask, the loops, the mask (each a convex
    # combination, so the result stays within 0..255)
    out = crop.astype(np.float32)
    k = 1 - 0.35 * np.maximum(cv2.GaussianBlur(alpha, (0, 0), 0.03 * half + 0.5) - alpha, 0)
    if straps:
        sa = s8.astype(np.float32) * (0.85 / 255)
        k *= 1 - sa
    out *= k[..., None]
    if straps:
        out += sa[..., None] * np.clip(spec.loops * (255 * expo * 0.9), 0, 255)
    region, a = out[y0:y1, x0:x1], alpha[y0:y1, x0:x1, None]
    region += a * (tex - region)
    out += 0.5
    return out.astype(np.uint8)
