"""The first mask-state estimate: a colour rule on a dlib face chip (kept for old recognisers)."""

from __future__ import annotations

import numpy as np

# Mask state from colour: a mask makes the lower face a different colour from the forehead, and flat.
# Logistic regression on three numbers; fitted on 1,225 faces of a make_library.py library (98.5% right
# on held-out photos, masked 98.1%, unmasked 99.4%). Drawn-on masks are flatter than real ones, so on
# real photos treat it as a hint (it only feeds Face.masked and the masked/unmasked figures).
_MASK_COEF = (0.327, -3.716, 3.173)
_MASK_INTERCEPT = -1.618


def mask_score(chip: np.ndarray) -> float:
    """Probability-like score (0..1) that the face in an aligned 150-px chip wears a mask."""
    import cv2
    from PIL import Image

    # Same resampling as when the coefficients were fitted (48-px thumbnail, back to 150).
    small = np.asarray(Image.fromarray(np.ascontiguousarray(chip)).resize((48, 48), Image.BILINEAR))
    c = cv2.resize(small, (150, 150))
    lab = cv2.cvtColor(c, cv2.COLOR_RGB2LAB).astype(np.float64)
    up = lab[22:40, 50:100].reshape(-1, 3)
    lo = lab[95:130, 45:105].reshape(-1, 3)
    mu, ml = np.median(up, 0), np.median(lo, 0)
    f = (np.linalg.norm(mu - ml) / 10, lo.std(0).mean() / 10, np.linalg.norm(mu[1:] - ml[1:]) / 10)
    z = _MASK_INTERCEPT + sum(a * b for a, b in zip(_MASK_COEF, f, strict=True))
    return float(1.0 / (1.0 + np.exp(-z)))
