"""Training-time augmentation: synthetic masks drawn on labelled faces.

Children are often labelled unmasked but photographed masked, so training embeds each labelled face
twice: as it is, and with a synthetic mask drawn on. The masks are designed from what real masks look
like (surgical, N95 cup, KN95, cloth; some worn below the nose; drawn by :mod:`.masks`) and placed by
the face's five landmarks, so they follow the nose, the chin and the head's roll.
"""

from __future__ import annotations

import colorsys
import math
from typing import Literal, overload

import numpy as np

from sorter.boxes import Box
from sorter.training.masks import FaceFrame, MaskKind, MaskSpec, plan, render

FAMILIES = ("surgical", "n95", "kn95", "cloth")
FAMILY_P = (0.4, 0.15, 0.2, 0.25)
BELOW_NOSE_P = 0.18  # worn under the nose (the "mask_weared_incorrect" look), else over it
PATTERNS = ("stripes", "checks", "dots", "plain")

# Colour ranges (weight, hue degrees, saturation, value), from the colours these masks are sold in.
Palette = list[tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]]
_SURGICAL: Palette = [
    (0.45, (185, 212), (0.25, 0.55), (0.72, 0.95)),  # the usual light blue
    (0.15, (0, 360), (0.0, 0.04), (0.88, 0.98)),  # white
    (0.10, (0, 360), (0.0, 0.08), (0.10, 0.22)),  # black
    (0.08, (0, 360), (0.0, 0.06), (0.45, 0.70)),  # grey
    (0.10, (330, 355), (0.15, 0.35), (0.82, 0.95)),  # pink
    (0.07, (150, 175), (0.20, 0.40), (0.65, 0.85)),  # green
    (0.05, (260, 285), (0.15, 0.35), (0.70, 0.88)),  # lavender
]
_N95: Palette = [
    (0.80, (30, 55), (0.0, 0.10), (0.82, 0.96)),  # white, off-white
    (0.10, (0, 360), (0.0, 0.05), (0.55, 0.75)),  # grey
    (0.10, (38, 52), (0.10, 0.25), (0.80, 0.92)),  # cream
]
_KN95: Palette = [
    (0.45, (0, 360), (0.0, 0.04), (0.86, 0.97)),
    (0.25, (0, 360), (0.0, 0.08), (0.08, 0.20)),
    (0.10, (0, 360), (0.0, 0.06), (0.45, 0.70)),
    (0.20, (0, 360), (0.15, 0.35), (0.78, 0.93)),  # pastel
]
_VALVE: Palette = [
    (0.4, (0, 360), (0.0, 0.05), (0.80, 0.95)),
    (0.4, (0, 360), (0.0, 0.10), (0.20, 0.50)),
    (0.2, (0, 360), (0.25, 0.50), (0.40, 0.80)),
]
_FABRIC: Palette = [
    (0.7, (0, 360), (0.15, 0.65), (0.25, 0.85)),  # dyed cotton
    (0.15, (0, 360), (0.0, 0.08), (0.08, 0.85)),  # black, greys, white
    (0.15, (200, 230), (0.3, 0.6), (0.2, 0.5)),  # denim, navy
]
_ELASTIC: Palette = [(0.7, (0, 360), (0.0, 0.04), (0.85, 0.97)), (0.3, (0, 360), (0.0, 0.1), (0.1, 0.3))]


def _colour(rng: np.random.Generator, pal: Palette) -> np.ndarray:
    w = np.array([e[0] for e in pal])
    _, hr, sr, vr = pal[int(rng.choice(len(pal), p=w / w.sum()))]
    h, s, v = rng.uniform(*hr) / 360 % 1.0, rng.uniform(*sr), rng.uniform(*vr)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def choose_mask(rng: np.random.Generator) -> MaskSpec:
    """Draw a mask: its family, how it is worn, its colours and shape."""
    family = FAMILIES[int(rng.choice(len(FAMILIES), p=FAMILY_P))]
    worn = "below_nose" if rng.random() < BELOW_NOSE_P else "nose"
    u = rng.uniform
    # top edge: a fraction of the way from the eye line to the nose tip (over the nose: the nose
    # bridge), or from the nose tip to the mouth (below it); bottom: under the chin by a fraction of
    # the mouth-chin distance; width: of the face at the cheeks
    p = {
        "top": u(0.35, 0.6) if worn == "nose" else u(0.1, 0.45),
        "under": u(0.0, 0.15),
        "width": u(0.92, 1.02),
    }
    p |= {"curve": u(0.1, 0.3), "light": u(-0.15, 0.15), "vgrad": u(-0.2, 0.1), "shadow": u(0.1, 0.3)}
    p["grain"] = u(0.005, 0.015)
    colour2 = loops = _colour(rng, _ELASTIC)
    if family == "surgical":
        colour = _colour(rng, _SURGICAL)
        p |= {"dip": u(0.12, 0.24), "rise": u(0.15, 0.3), "pleats": float(rng.integers(2, 5))}
        if rng.random() < 0.6:
            loops = np.clip(colour * 1.05, 0, 1)
    elif family == "n95":
        colour = _colour(rng, _N95)
        p |= {"width": u(0.82, 0.95), "top": p["top"] * 0.8, "under": u(0.05, 0.2), "full": u(0.0, 1.0)}
        p |= {"valve": float(rng.random() < 0.35), "side": float(rng.choice([-1, 1])), "vr": u(0.26, 0.34)}
        colour2 = _colour(rng, _VALVE)
    elif family == "kn95":
        colour = _colour(rng, _KN95)
        p |= {"dip": u(0.16, 0.3), "rise": u(0.25, 0.4), "halves": u(-0.12, 0.12)}
        if rng.random() < 0.6:
            loops = colour * 0.95
    else:
        colour = _colour(rng, _FABRIC)
        p |= {
            "dip": u(0.08, 0.2),
            "rise": u(0.2, 0.35),
            "pattern": float(rng.choice(4, p=(0.3, 0.15, 0.25, 0.3))),
        }
        p |= {"period": u(0.06, 0.16), "angle": float(rng.choice([0, 0, 90, 45, -45])), "duty": u(0.25, 0.6)}
        p |= {"seam": float(rng.random() < 0.5), "weave": u(0.02, 0.06)}
        colour2 = _colour(rng, _FABRIC) if rng.random() < 0.6 else np.array([0.95, 0.95, 0.93], np.float32)
        if rng.random() < 0.5:
            loops = colour
    return MaskSpec(MaskKind(family, worn), colour, colour2, loops, p)


# Where the five landmarks sit in a labeller-style box (forehead to chin, x0 y0 = 0, x1 y1 = 1) when
# the detector gave none. From the classical facial proportions, not fitted to any photos: the face is
# about five eye-widths across, the pupils in the middle of the second and fourth (0.30, 0.70); down
# the face, hairline-brow, brow-nose base and nose base-chin are about a third each, the eyes a little
# under the brow (0.40), the nose tip a little above the nose base (0.62), the mouth a third of the way
# from the nose base to the chin (0.78), its corners under the inner edges of the irises (0.35, 0.65).
FACE_TEMPLATE = ((0.30, 0.40), (0.70, 0.40), (0.50, 0.62), (0.35, 0.78), (0.65, 0.78))
# Face width at the cheeks in interocular distances (adult ~2.2, small children a little more).
_FACE_PER_EYES = 2.2
_MAX_ROLL = math.radians(45)


def box_landmarks(label_box: Box) -> np.ndarray:
    """Five landmarks ``[5, 2]`` where faces usually have them in a labeller-style box."""
    x0, y0, x1, y1 = label_box
    rel = np.array(FACE_TEMPLATE, np.float32)
    return np.stack([x0 + rel[:, 0] * (x1 - x0), y0 + rel[:, 1] * (y1 - y0)], 1)


def face_frame(label_box: Box, landmarks: np.ndarray, width: float = 1.0) -> FaceFrame:
    """The face's frame (eye line, nose, mouth, chin, mask sides) from its box and landmarks."""
    x0, y0, x1, y1 = (float(v) for v in label_box)
    bw = max(x1 - x0, 2.0)
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eye_l, eye_r = lm[0], lm[1]
    d = float(np.hypot(*(eye_r - eye_l)))
    if not (np.isfinite(lm).all() and 0.15 * bw < d < 1.2 * bw):  # implausible: use the template
        lm = box_landmarks(label_box).astype(np.float64)
        eye_l, eye_r = lm[0], lm[1]
        d = float(np.hypot(*(eye_r - eye_l)))
    roll = float(np.clip(math.atan2(*(eye_r - eye_l)[::-1]), -_MAX_ROLL, _MAX_ROLL))
    c, s = math.cos(roll), math.sin(roll)
    o = 0.5 * (eye_l + eye_r)

    def to_frame(q: np.ndarray) -> tuple[float, float]:
        dx, dy = q - o
        return c * dx + s * dy, -s * dx + c * dy

    nx, ny = to_frame(lm[2])
    mx, my = to_frame(0.5 * (lm[3] + lm[4]))
    ny = max(ny, 0.3 * d)
    my = max(my, ny + 0.2 * d)
    # the chin: where the face's axis below the mouth meets the box's bottom (labeller boxes end at
    # the chin), kept within what faces allow (mouth-chin about 0.3-0.9 of eyes-mouth)
    chin = (y1 - o[1] - mx * s) / c
    chin = float(np.clip(chin, 1.3 * my, 1.9 * my))
    wf = float(np.clip(_FACE_PER_EYES * d, 0.6 * bw, 1.0 * bw)) * width
    # a turned face: the nose (and the mask's ridge) moves towards the far cheek, which foreshortens
    turn = float(np.clip(nx / (0.5 * d), -1, 1))
    cx = 0.7 * nx + 0.3 * mx
    return FaceFrame(
        (float(o[0]), float(o[1])),
        c,
        s,
        ny,
        my,
        chin,
        cx,
        0.5 * wf * (1 + 0.35 * turn),
        0.5 * wf * (1 - 0.35 * turn),
    )


@overload
def draw_synthetic_mask(
    rgb: np.ndarray,
    label_box: Box,
    rng: np.random.Generator,
    landmarks: np.ndarray | None = ...,
    *,
    return_kind: Literal[False] = ...,
) -> np.ndarray: ...
@overload
def draw_synthetic_mask(
    rgb: np.ndarray,
    label_box: Box,
    rng: np.random.Generator,
    landmarks: np.ndarray | None = ...,
    *,
    return_kind: Literal[True],
) -> tuple[np.ndarray, MaskKind]: ...
def draw_synthetic_mask(
    rgb: np.ndarray,
    label_box: Box,
    rng: np.random.Generator,
    landmarks: np.ndarray | None = None,
    *,
    return_kind: bool = False,
) -> np.ndarray | tuple[np.ndarray, MaskKind]:
    """A copy of ``rgb`` with a face mask drawn over the nose and mouth of the face in ``label_box``.

    Used to augment labelled faces: most children in the photos to sort wear masks, and a masked face's
    embedding moves a long way from the same face unmasked, so the per-person model must see both.
    ``landmarks``: the face's five points ``[5, 2]`` in ``rgb``'s pixels (image-left eye, image-right
    eye, nose tip, mouth corners, as MTCNN/ONet give them); None for a labelled face the detector
    missed, placed by where landmarks usually are in a box (:data:`FACE_TEMPLATE`). Only the pixels
    around the mask are worked on. ``return_kind``: also return the mask's family and how it is worn.
    """
    spec = choose_mask(rng)
    lm = box_landmarks(label_box) if landmarks is None else landmarks
    fr = face_frame(label_box, lm, spec.p["width"])
    poly, straps, _ = plan(fr, spec)
    pts = np.concatenate([poly, *straps])
    h, w = rgb.shape[:2]
    pad = 3 + 0.06 * (fr.left + fr.right)  # the feathering and the contact shadow round the mask
    xa, ya = (int(max(0, math.floor(v - pad))) for v in pts.min(0))
    xb, yb = int(min(w, math.ceil(pts[:, 0].max() + pad))), int(min(h, math.ceil(pts[:, 1].max() + pad)))
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb, :3] = render(out[ya:yb, xa:xb, :3], (xa, ya), fr, spec, rng)
    return (out, spec.kind) if return_kind else out
