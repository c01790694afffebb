"""Sorting by mask state: the face detector finds faces, the mask head says what each wears.

No model folder is needed: the face detector and the mask head ship with photosort. A model trained on
mask-state labels (``photosort train`` on a folder whose classes are mask states) brings its own head.
A photo goes into every state its faces show, so unlike people a state may be on many faces at once
(:func:`sorter.pipeline.decide.decide` with ``exclusive=False``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sorter.boxes import from_detector_box
from sorter.heads.mask import MASK_CLASSES, MaskHead
from sorter.io.bundle import Bundle
from sorter.io.decode import WORK_SIDE
from sorter.models.onet import cached_onet
from sorter.models.registry import FaceDetector, face_detector
from sorter.pipeline.faces import Detected, find, merge
from sorter.pipeline.features import MASKED_AT, MaskStep
from sorter.records import Decoded, Face

# A face's state goes in the photo's folder when the head gives it at least ACCEPT, and the photo to
# uncertain/ when the best state of a face is below ACCEPT but at least LOW. Not tuned on any benchmark:
# ACCEPT is "more likely than the other two states together"; LOW leaves a band for review.
ACCEPT, LOW = 0.5, 0.3


@dataclass
class MaskSorter:
    """Faces of a photo scored by mask state (``Face.scores`` = state -> probability)."""

    head_path: Path | None = None  # None: the shipped head
    onet_ir: Path | None = None
    detector_settings: dict | None = None  # None: the default face detector
    threads: int | None = None
    _detector: FaceDetector | None = None
    _masks: MaskStep | None = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        return list(MASK_CLASSES)

    def load(self) -> MaskSorter:
        if self._detector is None:
            self._detector = face_detector(self.detector_settings, self.onet_ir)
            self._detector.threads = self.threads
            self._masks = MaskStep(MaskHead(self.head_path, threads=self.threads))
        return self

    def thresholds(self) -> tuple[dict[str, float], dict[str, float]]:
        return dict.fromkeys(MASK_CLASSES, ACCEPT), dict.fromkeys(MASK_CLASSES, LOW)

    def find(self, image: Decoded) -> Detected:
        """The face detector's faces of ``image`` (before any YOLO box is merged in)."""
        self.load()
        assert self._detector is not None
        return find(self._detector, image)

    def recognise(self, image: Decoded, faces: list[Face]) -> list[Face]:
        return self.describe(self.find(image), faces)

    def describe(self, found: Detected, faces: list[Face]) -> list[Face]:
        """The face detector's faces, with ``faces`` (YOLO's) merged in, scored by mask state."""
        self.load()
        assert self._masks is not None
        merged = merge(found, faces)
        if not merged:
            return []
        s = found.scale
        boxes = [tuple(v / s for v in f.dbox) for f in merged]
        head = self._masks.head
        labels, probs = head.predict(found.rgb, [from_detector_box(b) for b in boxes])
        # each state's probability given a face, times the probability that it is a face (1.0 for a
        # 3-class head): a box the head calls no_face scores low for every state
        scores = head.mask_probabilities(probs) * np.asarray(head.face_probability(probs))[:, None]
        out = []
        for f, label, p in zip(merged, labels, scores, strict=True):
            face = f.face
            face.det_scores, face.scores = (
                face.scores,
                {c: float(v) for c, v in zip(MASK_CLASSES, p, strict=True)},
            )
            face.mask = label or "without_mask"
            face.mask_score = face.scores.get(face.mask, 0.0)
            # any mask (on or below the nose), as a face: with_mask + mask_weared_incorrect
            masked = face.scores["with_mask"] + face.scores["mask_weared_incorrect"]
            face.masked = bool(label) and masked >= MASKED_AT
            out.append(face)
        return out

    def rescore(self, faces: list[Face]) -> list[Face] | None:
        return None  # nothing to re-score: a new threshold re-decides from the stored scores

    @property
    def embed_key(self) -> str:
        """What made the stored faces: face detector settings + the head's file + decode size."""
        self.load()
        assert self._detector is not None and self._masks is not None
        head = self._masks.head.load().meta.get("sha256")
        what = [self._detector.settings(), head, WORK_SIDE]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def mask_sorter(bundle: Bundle | None) -> MaskSorter:
    """The mask sorter of a model folder (its own head when trained on mask states), or the shipped one."""
    if bundle is None:
        return MaskSorter(onet_ir=cached_onet())
    head = bundle.path / bundle.mask_head if bundle.mask_head else None
    ir = bundle.path / bundle.face_detector if bundle.face_detector else cached_onet()
    return MaskSorter(head_path=head, onet_ir=ir)
