"""dlib's ResNet face descriptor (the first recogniser's vectors) and its aligned face chips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sorter.models.base import LazyModel


@dataclass
class DlibEmbedder(LazyModel):
    """dlib 5-point landmarks -> aligned 150x150 chip -> 128-d ResNet descriptor.

    Descriptors are compared by Euclidean distance (dlib's rule of thumb: same person below ~0.6).

    ~90 ms per face on one CPU core; batching does not help with dlib, so :meth:`embed` loops.
    Boxes should be detector-style (see :func:`to_detector_box` for labelled boxes).
    """

    chip_size: int = 150
    padding: float = 0.25
    _sp: Any = field(default=None, repr=False)
    _net: Any = field(default=None, repr=False)
    _want_net: bool = field(default=False, repr=False)

    def _is_loaded(self) -> bool:
        return self._sp is not None and (self._net is not None or not self._want_net)

    def _load(self) -> None:
        import dlib
        import face_recognition_models as frm

        if self._sp is None:
            self._sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        if self._want_net and self._net is None:
            self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def load(self, net: bool = True) -> DlibEmbedder:
        """Load the landmark model, and the descriptor network too when ``net`` (chips alone need only
        the landmarks: with SFace vectors, dlib only cuts the chip for the mask estimate)."""
        self._want_net = self._want_net or net
        return super().load()

    def chips(self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """Aligned face chips (``chip_size`` square, RGB uint8), one per box."""
        self.load(net=False)
        import dlib

        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = []
        for b in boxes_xyxy:
            x0, y0, x1, y1 = (int(round(float(v))) for v in b[:4])
            shape = self._sp(img, dlib.rectangle(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
            out.append(np.asarray(dlib.get_face_chip(img, shape, size=self.chip_size, padding=self.padding)))
        return out

    @staticmethod
    def canonical_mask(chip: np.ndarray) -> np.ndarray:
        """The chip with nose, mouth and chin painted over in one flat grey (a copy).

        Every face then "wears" the same mask, whatever it really wears: the descriptor of this chip
        depends on the eyes and brow only. Masked strangers otherwise sit close to masked children
        (the descriptor partly encodes the mask's colour and shape), which is what capped recall.
        """
        from PIL import Image, ImageDraw

        s = chip.shape[0] / 150.0
        im = Image.fromarray(np.ascontiguousarray(chip))
        ImageDraw.Draw(im).polygon([(x * s, y * s) for x, y in _CANON_POLY], fill=(128, 128, 128))
        return np.asarray(im)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """128-d descriptors ``[n, 128]`` float32 of aligned chips from :meth:`chips`."""
        self.load()
        if not chips:
            return np.zeros((0, 128), np.float32)
        return np.stack(
            [
                np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(c)), np.float32)
                for c in chips
            ]
        )

    def embed(self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]]) -> np.ndarray:
        """128-d descriptors ``[n, 128]`` float32, one per box (boxes in ``rgb`` pixel coordinates)."""
        return self.embed_chips(self.chips(rgb, boxes_xyxy))


# The canonical mask in a 150-px dlib chip (padding 0.25): from just under the eyes to the chip's bottom.
_CANON_POLY = [(14, 70), (40, 66), (75, 64), (110, 66), (136, 70), (138, 150), (12, 150)]
