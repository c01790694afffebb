"""From a kind stored in a model file to the class that runs it; an unknown kind is an error.

Stored kinds outlive the code that wrote them: a model folder trained today must still load after an
upgrade, and one made by a *newer* photosort must be refused clearly rather than silently run with
the wrong network (immich's model factory, ``raise ValueError`` on an unknown name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sorter.errors import UnknownKind
from sorter.models.mtcnn import MtcnnDetector
from sorter.models.yunet import YuNetDetector

FaceDetector = MtcnnDetector | YuNetDetector

FACE_DETECTORS = ("yunet+onet", "mtcnn")
# The default face detector enlarges photos smaller than this (long side) before looking for faces:
# YuNet's usual 640-px input, not a value fitted on any photos.
MIN_SIDE = 640
# ... and reduces larger ones to this (long side) rather than to that 640: at 640 a face 3% of a
# 12-MP photo's long side is ~19 px, where YuNet loses masked faces. Chosen by bench/face_scale.py (a
# make_library.py library of a seed no benchmark reports; share of masked faces >= 48 px missed, and
# time a photo on one core with YuNet at bf16 / fp32): 640 4.5% (24 / 26 ms), 800 2.2%, 960 1.4%
# (40 / 46 ms), 1280 0.5% (62 / 78 ms); the rule, the smallest side missing at most 0.5% of them (half
# the 1% of appearances issues 12 and 13 allow to be lost). Recognisers trained before keep theirs.
MAX_SIDE = 1280


def face_detector(settings: dict[str, Any] | None = None, onet_ir: Path | None = None) -> FaceDetector:
    """The face detector a recogniser was trained with (its stored settings), or the default one."""
    if settings is None:
        return YuNetDetector(onet_ir=onet_ir, min_side=MIN_SIDE, max_side=MAX_SIDE)
    settings = dict(settings)
    # Recognisers from before YuNet stored MTCNN's settings without a kind: a known old format.
    kind = settings.pop("kind", "mtcnn")
    if kind == "yunet+onet":
        # recognisers from before the averaged refinement took one crop, once
        settings.setdefault("refine_passes", 1)
        settings.setdefault("refine_jitter", 0.0)
        settings.setdefault("yunet_precision", "f32")  # ... and from before YuNet at the CPU's precision
        return YuNetDetector(**settings, onet_ir=onet_ir)
    if kind == "mtcnn":
        return MtcnnDetector(
            thresholds=tuple(settings.get("thresholds", (0.3, 0.4, 0.2))),
            min_face_size=int(settings.get("min_face_size", 12)),
            max_side=int(settings.get("max_side", 640)),
        )
    raise UnknownKind("face detector", kind, list(FACE_DETECTORS))
