"""The mask-state head's training augmentation: boxes jittered as a face detector draws them, crops
flipped, turned, shrunk, blurred, recoloured and JPEG-compressed (:mod:`sorter.training.mask_head`)."""

from __future__ import annotations

import math

import numpy as np


def jitter_box(box: tuple, rng: np.random.Generator) -> tuple:
    """A labelled box as a face detector might give it: shift +-10%, scale 0.85-1.2, aspect +-15%."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    s = rng.uniform(0.85, 1.2)
    a = math.exp(rng.uniform(-0.15, 0.15))
    cx = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * w
    cy = (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * h
    nw, nh = w * s * a, h * s / a
    return (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2)


def augment(c: np.ndarray, rng: np.random.Generator, geometry: list | None = None) -> np.ndarray:
    """Flip, rotate +-10 degrees, tiny-face resampling or blur, colour, JPEG: one training crop.

    ``geometry``: a list that gets (flipped, angle in degrees) appended, for a box target to follow the
    crop (:func:`move_box`); the random draws are the same with or without it."""
    import cv2

    size = c.shape[0]
    flipped = bool(rng.random() < 0.5)
    if flipped:
        c = c[:, ::-1]
    angle = rng.uniform(-10, 10)
    if geometry is not None:
        geometry.append((flipped, float(angle)))
    m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
    c = cv2.warpAffine(
        np.ascontiguousarray(c), m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    r = rng.random()
    if r < 0.3:  # a tiny face: down to 6-32 px and back, as crop() upsamples one
        side = int(rng.integers(6, 33))
        c = cv2.resize(
            cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA),
            (size, size),
            interpolation=cv2.INTER_LINEAR,
        )
    elif r < 0.45:
        c = cv2.GaussianBlur(c, (0, 0), rng.uniform(0.4, 1.3))
    x = c.astype(np.float32)
    if rng.random() < 0.8:  # colour: brightness, contrast, saturation
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        sat = rng.uniform(0.6, 1.4) if rng.random() > 0.05 else 0.0
        x = gray[..., None] + (x - gray[..., None]) * sat
        x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() * rng.uniform(0.7, 1.3)
        x = x + rng.normal(0, 3, size=3).astype(np.float32)
    c = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:  # JPEG, as the photos classify sees
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        if ok:
            c = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return c


def move_box(t: tuple, flipped: bool, angle: float) -> tuple:
    """A box in crop units (``sorter.heads.mask.box_in_crop``) after :func:`augment`'s flip and rotation
    about the crop's centre: mirrored, then its centre turned as OpenCV turns the pixels (a labeller
    would draw the turned face's box about its new centre, the same size)."""
    x0, y0, x1, y1 = t
    if flipped:
        x0, x1 = -x1, -x0
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    # cv2.getRotationMatrix2D(angle): [[cos, sin], [-sin, cos]] on coordinates from the centre
    nx, ny = cos * cx + sin * cy, -sin * cx + cos * cy
    return (nx - hw, ny - hh, nx + hw, ny + hh)
