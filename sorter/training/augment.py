"""Training-time augmentation: synthetic masks drawn on labelled faces."""

from __future__ import annotations

import numpy as np

from sorter.boxes import Box

# The synthetic mask: the polygon make_library.py-style masks cover, expressed in a labeller face box
# (x0, y0 at the box corner, 1.0 = box width/height). From the LFW deep-funneled geometry: face box
# (80, 68)-(170, 196), mask from just below the eyes to under the chin.
_MASK_POLY = [
    (84, 130),
    (104, 122),
    (125, 119),
    (146, 122),
    (166, 130),
    (168, 172),
    (158, 192),
    (140, 203),
    (125, 205),
    (110, 203),
    (92, 192),
    (82, 172),
]
MASK_COLOURS = [
    (235, 238, 242),
    (170, 200, 230),
    (40, 40, 45),
    (230, 190, 200),
    (120, 150, 190),
    (60, 90, 140),
    (250, 250, 250),
    (90, 90, 95),
]


def draw_synthetic_mask(rgb: np.ndarray, label_box: Box, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``rgb`` with a face mask drawn over the nose and mouth of the face in ``label_box``.

    Used to augment labelled faces: most children in the photos to sort wear masks, and a masked face's
    embedding moves a long way from the same face unmasked, so the per-person model must see both.
    """
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = label_box
    w, h = x1 - x0, y1 - y0
    dy = float(rng.uniform(-6, 10))
    pts = [(x0 + (x - 80) / 90 * w, y0 + (y + dy - 68) / 128 * h) for x, y in _MASK_POLY]
    colour = MASK_COLOURS[int(rng.integers(len(MASK_COLOURS)))]
    im = Image.fromarray(np.ascontiguousarray(rgb))
    ImageDraw.Draw(im).polygon(pts, fill=colour)
    return np.asarray(im)
