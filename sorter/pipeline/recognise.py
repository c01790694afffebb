"""Who each face is: find faces, turn each into a vector, score it with the identity head.

1. The face detector (YuNet proposals checked by ONet, :class:`~sorter.models.yunet.YuNetDetector`)
   finds faces and five landmarks each in a 640-px copy of the photo; YOLO's faces are merged in
   (:mod:`sorter.pipeline.faces`). Faces are embedded from the canonical decode (2016 px for a 12-MP
   photo).
2. Each face becomes a vector (:class:`~sorter.pipeline.features.Featuriser`).
3. The identity head (:mod:`sorter.heads.identity`) turns the vector into a probability per person;
   per-person thresholds come from its calibration (:mod:`sorter.heads.calibrate`).

Without a trained recogniser, the YOLO detector's class scores stand.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sorter.heads.attributes import AttributeHead
from sorter.heads.identity import KernelLR, load_model, person_scores
from sorter.heads.mask import MaskHead
from sorter.io.bundle import Bundle
from sorter.io.decode import WORK_SIDE
from sorter.io.index import pack, unpack
from sorter.models.registry import FaceDetector, face_detector
from sorter.pipeline.faces import Detected, Found, find, full_size, merge
from sorter.pipeline.features import DLIB, MASKED_AT, AttributeStep, Featuriser, MaskStep, set_attributes
from sorter.records import Decoded, Face

# The age gate: a face whose age estimate is this many of the head's own spreads (its out-of-fold
# error, in log years) outside the ages the people were labelled at is not compared with them at all
# (a teacher or parent is never one of nine children). 3: the usual "far outside", not fitted.
AGE_GATE_Z = 3.0
MIN_AGED_FACES = 10  # fewer labelled faces with an age: no gate (too little to know the people's ages)


def age_gate(faces: list[Face], ages: dict[str, float] | None, head: AttributeHead) -> int:
    """Zero the person scores of ``faces`` whose age is far outside ``ages`` (the model's "lo"/"hi"
    years); how many were gated."""
    if not ages:
        return 0
    lo, hi = math.log1p(float(ages["lo"])), math.log1p(float(ages["hi"]))
    gated = 0
    for f in faces:
        if f.age is None:
            continue
        mu = math.log1p(max(0.0, float(f.age)))
        sigma = float(head.sigma(np.array([mu]))[0])
        if mu > hi + AGE_GATE_Z * sigma or mu < lo - AGE_GATE_Z * sigma:
            f.scores = dict.fromkeys(f.scores, 0.0)
            gated += 1
    return gated


def load_recogniser(bundle: Bundle, threads: int | None = None) -> FaceRecogniser | None:
    """The bundle's recogniser (loaded lazily on first use), or None when the bundle has none."""
    if not bundle.recogniser:
        return None
    ir = bundle.path / bundle.face_detector if bundle.face_detector else None
    head = bundle.path / bundle.mask_head if bundle.mask_head else None
    return FaceRecogniser(
        bundle.path / bundle.recogniser,
        onet_ir=ir,
        threads=threads,
        mask_head=head,
        attribute_head=bundle.attribute_head_path,
    )


@dataclass
class FaceRecogniser:
    """Scores every face in a photo for every person; adds faces the YOLO detector missed.

    Loads the model file on first use. ``recognise`` returns faces in full-size displayed coordinates,
    each with ``scores`` = person -> probability (comparable to the stored per-person thresholds) and
    ``masked`` set.
    """

    path: Path
    detector: FaceDetector | None = None  # default: the one the model was trained with
    onet_ir: Path | None = None  # the detector's ONet as OpenVINO IR (runs without torch), if any
    threads: int | None = None
    mask_head: Path | None = None  # a mask head trained into the model folder; None: the shipped one
    attribute_head: Path | None = None  # the model folder's own age/gender head; None: the shipped one
    _featuriser: Featuriser | None = None
    _masks: MaskStep | None = None
    _attributes: AttributeStep | None = None
    _model: KernelLR | None = None
    _meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> FaceRecogniser:
        if self._model is None:
            self._model, self._meta = load_model(self.path)
            self._featuriser = Featuriser(self._meta.get("features", DLIB), threads=self.threads)
            if self.detector is None:
                self.detector = face_detector(self._meta.get("detector"), self.onet_ir)
                self.detector.threads = self.threads
            self._masks = MaskStep(MaskHead(self.mask_head, threads=self.threads))
            self._attributes = AttributeStep(AttributeHead(self.attribute_head), threads=self.threads)
        return self

    @property
    def masks(self) -> MaskStep:
        self.load()
        assert self._masks is not None
        return self._masks

    @property
    def people(self) -> list[str]:
        return list(self.load()._meta["people"])

    @property
    def thresholds(self) -> tuple[dict[str, float], dict[str, float]]:
        self.load()
        return dict(self._meta["accept"]), dict(self._meta["low"])

    def find(self, image: Decoded) -> Detected:
        """The face detector's faces of ``image`` (before any YOLO box is merged in)."""
        self.load()
        assert self.detector is not None
        return find(self.detector, image)

    def describe(
        self, found: Detected, faces: list[Found], known: dict[int, tuple] | None = None
    ) -> list[Face]:
        """The merged faces of a photo, embedded, scored per person, and their mask state.

        ``known``: what was already computed (vector, mask state, attributes) for faces the face
        detector found, by their index in ``found``; reused instead of computed again, and the new ones added.
        """
        self.load()
        assert self._featuriser is not None and self._model is not None
        if not faces:
            return []
        known = {} if known is None else known
        todo = [k for k, f in enumerate(faces) if f.detected is None or f.detected not in known]
        computed: dict[int, tuple] = {}
        if todo:
            s = found.scale
            boxes = [tuple(v / s for v in faces[k].dbox) for k in todo]
            marks = [faces[k].landmarks / s for k in todo]
            x = self._featuriser.features(found.rgb, boxes, marks)
            masks = self.masks.states(found.rgb, boxes)
            assert self._attributes is not None
            sface = x if self._featuriser.is_sface else None  # the same vectors the head may read
            attrs = self._attributes.describe(found.rgb, boxes, marks, sface)
            computed = dict(zip(todo, zip(x, masks, attrs, strict=True), strict=True))
        rows = [computed[k] if k in computed else known[f.detected] for k, f in enumerate(faces)]
        for k, f in enumerate(faces):
            if f.detected is not None and k in computed:
                known[f.detected] = computed[k]
        x = np.stack([r[0] for r in rows])
        scores = person_scores(self._model, self._meta["people"], x)
        out = []
        for k, f in enumerate(faces):
            face = f.face
            face.det_scores, face.scores = face.scores, scores[k]
            face.mask, face.mask_score, masked, drawn = rows[k][1]
            face.masked = masked >= MASKED_AT
            face.label_box = full_size(drawn, found.scale)
            set_attributes(face, rows[k][2])
            face.embedding = pack(x[k])
            out.append(face)
        age_gate(out, self._meta.get("ages"), self._attributes.head)
        return out

    def recognise(self, image: Decoded, faces: list[Face]) -> list[Face]:
        """Faces of ``image`` scored per person. ``faces``: the YOLO detector's, merged in by IoU."""
        found = self.find(image)
        return self.describe(found, merge(found, faces))

    @property
    def embed_key(self) -> str:
        """Identifies how face vectors were made (face detector settings + embedding), not the model
        on top: a recogniser retrained on more labels keeps this key and re-scores stored vectors."""
        self.load()
        assert self._attributes is not None
        what = [self._meta["detector"], self._meta["features"], WORK_SIDE, self._attributes.head.key]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def rescore(self, faces: list[Face]) -> list[Face] | None:
        """The same faces scored by this recogniser from their stored vectors; None if one has none."""
        self.load()
        assert self._model is not None
        if any(not f.embedding for f in faces):
            return None
        if not faces:
            return []
        scores = person_scores(
            self._model, self._meta["people"], np.stack([unpack(f.embedding) for f in faces])
        )
        out = [replace(f, scores=scores[k]) for k, f in enumerate(faces)]
        assert self._attributes is not None
        age_gate(out, self._meta.get("ages"), self._attributes.head)
        return out
