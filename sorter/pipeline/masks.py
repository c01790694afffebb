"""Sorting by what faces show: mask state, age band, gender, or the seeds' mask x gender x age classes.

The face detector finds faces; the mask head says what each wears, the attribute heads how old each
is and which gender (``--by mask|age-band|gender|mask-gender-age``). No model folder is needed: the
face detector and the heads ship with photosort. A model trained on
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

from sorter.boxes import from_detector_box, one_per_face, sureness, template_landmarks, to_detector_box
from sorter.heads.attributes import AGE_BANDS, GENDERS, SEED_BANDS, AttributeHead, Attributes, band_name
from sorter.heads.mask import MASK_CLASSES, MaskHead
from sorter.io.bundle import Bundle
from sorter.io.decode import WORK_SIDE
from sorter.models.label_faces import LabelFaces
from sorter.models.onet import cached_onet
from sorter.models.registry import FaceDetector, face_detector
from sorter.pipeline.faces import Detected, Found, find, full_size, merge
from sorter.pipeline.features import MASKED_AT, AttributeStep, MaskStep, set_attributes
from sorter.records import Decoded, Face

# A face's state goes in the photo's folder when the head gives it at least ACCEPT, and the photo to
# uncertain/ when the best state of a face is below ACCEPT but at least LOW. Not tuned on any benchmark:
# ACCEPT is "more likely than the other two states together"; LOW leaves a band for review.
ACCEPT, LOW = 0.5, 0.3


def classes_of(by: str) -> list[str]:
    """The folders of sorting ``by`` a face attribute."""
    if by == "mask":
        return list(MASK_CLASSES)
    if by == "age-band":
        return [band_name(b) for b in AGE_BANDS]
    if by == "gender":
        return list(GENDERS)
    if by == "mask-gender-age":  # the seeds' 18 classes, e.g. with_mask_female_0-29
        return [f"{m}_{g}_{band_name(b)}" for m in MASK_CLASSES for g in GENDERS for b in SEED_BANDS]
    raise ValueError(f"not a face attribute to sort by: {by!r}")


def class_scores(by: str, masks: dict[str, float], a: Attributes) -> dict[str, float]:
    """A face's probability of each class of ``by``. The heads are independent, so the seeds' joint
    classes are products: a face sure of its mask but unsure of its age band is unsure of the class."""
    if by == "mask":
        return dict(masks)
    genders = {"female": a.p_female, "male": 1.0 - a.p_female}
    if by == "gender":
        return genders
    if by == "age-band":
        return a.bands(AGE_BANDS)
    bands = a.bands(SEED_BANDS)
    return {
        f"{m}_{g}_{b}": masks[m] * pg * pb
        for m in MASK_CLASSES
        for g, pg in genders.items()
        for b, pb in bands.items()
    }


@dataclass
class MaskSorter:
    """Faces of a photo scored by a face attribute (``Face.scores`` = class -> probability): mask state
    by default, or ``by`` age band, gender, or mask x gender x age band."""

    head_path: Path | None = None  # None: the shipped head
    onet_ir: Path | None = None
    detector_settings: dict | None = None  # None: the default face detector
    threads: int | None = None
    by: str = "mask"
    attribute_head: Path | None = None  # None: the shipped age/gender head
    # the learnt face detector's boxes join the face detector's (sorter.models.label_faces);
    # None: the face detector's alone
    label_faces: LabelFaces | None = field(default_factory=LabelFaces)
    _detector: FaceDetector | None = None
    _masks: MaskStep | None = field(default=None, repr=False)
    _attributes: AttributeStep | None = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        return classes_of(self.by)

    def load(self) -> MaskSorter:
        if self._detector is None:
            self._detector = face_detector(self.detector_settings, self.onet_ir)
            self._detector.threads = self.threads
            self._masks = MaskStep(MaskHead(self.head_path, threads=self.threads))
            self._attributes = AttributeStep(AttributeHead(self.attribute_head), threads=self.threads)
            if self.label_faces is not None:
                self.label_faces.threads = self.threads
        return self

    def thresholds(self) -> tuple[dict[str, float], dict[str, float]]:
        return dict.fromkeys(self.classes, ACCEPT), dict.fromkeys(self.classes, LOW)

    def find(self, image: Decoded) -> Detected:
        """The face detector's faces of ``image`` (before any YOLO box is merged in)."""
        self.load()
        assert self._detector is not None
        return find(self._detector, image)

    def recognise(self, image: Decoded, faces: list[Face]) -> list[Face]:
        return self.describe(self.find(image), faces)

    def describe(self, found: Detected, faces: list[Face]) -> list[Face]:
        """The face detector's faces, with ``faces`` (YOLO's) merged in and the learnt face detector's
        added, scored by mask state; one box a face."""
        self.load()
        assert self._masks is not None and self._attributes is not None
        merged = merge(found, faces) + self._learnt(found)
        if not merged:
            return []
        s = found.scale
        boxes = [tuple(v / s for v in f.dbox) for f in merged]
        head = self._masks.head
        labels, probs, drawn = head.predict_boxes(found.rgb, [from_detector_box(b) for b in boxes])
        given = head.mask_probabilities(probs)  # each state's probability given that it is a face
        is_face = np.asarray(head.face_probability(probs), np.float64)  # 1.0 for a 3-class head
        attrs = self._attributes.describe(found.rgb, boxes, [f.landmarks / s for f in merged])
        out = []
        for f, label, p, face_p, a, box in zip(merged, labels, given, is_face, attrs, drawn, strict=True):
            face, pf = f.face, float(face_p)
            face.label_box = full_size(box, s) or face.label_box
            masks = {c: float(v) for c, v in zip(MASK_CLASSES, p, strict=True)}
            face.mask = label or "without_mask"
            face.mask_score = masks[face.mask] * pf
            # any mask (on or below the nose), as a face: with_mask + mask_weared_incorrect
            face.masked = (
                bool(label) and (masks["with_mask"] + masks["mask_weared_incorrect"]) * pf >= MASKED_AT
            )
            set_attributes(face, a)
            # times the probability that it is a face: a box the head calls no_face scores low for
            # every class, whatever the photos are sorted by
            face.det_scores = face.scores
            face.scores = {c: v * pf for c, v in class_scores(self.by, masks, a).items()}
            out.append(face)
        # One face, one box: the face detector sometimes gives a face a second box shifted to a cheek
        # (mostly inside the first; YuNet suppresses only boxes of IoU >= 0.3), which the head may read
        # as another state; the surer box stays (bench/mask_system.py: system mAP50 on validation).
        sure = [sureness(max(f.scores.values(), default=0.0), f.det_score) for f in out]
        return [out[k] for k in one_per_face([f.xyxy for f in out], sure)]

    def _learnt(self, found: Detected) -> list[Found]:
        """The learnt detector's faces of the photo (labeller-style boxes: their own ``label_box``).
        Those the face detector also found are left to :func:`one_per_face` after the head has read
        both: the surer box of a face stays."""
        if self.label_faces is None:
            return []
        s = found.scale
        boxes, scores = self.label_faces.detect(found.rgb)
        out = []
        for b, sc in zip(boxes, scores, strict=True):
            box = full_size(b, s)
            assert box is not None
            dbox = to_detector_box(box)
            face = Face(xyxy=box, det_score=float(sc), label_box=box)
            out.append(Found(face, dbox, template_landmarks(dbox)))
        return out

    def rescore(self, faces: list[Face]) -> list[Face] | None:
        return None  # nothing to re-score: a new threshold re-decides from the stored scores

    @property
    def embed_key(self) -> str:
        """What made the stored faces: face detector settings + the head's file + decode size."""
        self.load()
        assert self._detector is not None and self._masks is not None
        assert self._attributes is not None
        head = self._masks.head.load().meta.get("sha256")
        # "one-per-face": faces stored before duplicates were dropped are analysed again
        what = [self._detector.settings(), head, WORK_SIDE, self._attributes.head.key, "one-per-face"]
        if self.label_faces is not None:
            what.append(self.label_faces.key)
        if self.by != "mask":
            what.append(self.by)
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def mask_sorter(bundle: Bundle | None, by: str = "mask") -> MaskSorter:
    """The sorter by face attribute ``by`` of a model folder (its own mask head when trained on mask
    states), or of the shipped heads."""
    if bundle is None:
        return MaskSorter(onet_ir=cached_onet(), by=by)
    head = bundle.path / bundle.mask_head if bundle.mask_head else None
    ir = bundle.path / bundle.face_detector if bundle.face_detector else cached_onet()
    return MaskSorter(head_path=head, onet_ir=ir, by=by, attribute_head=bundle.attribute_head_path)
