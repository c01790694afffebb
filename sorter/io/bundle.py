"""The model bundle: everything ``classify`` needs, in one folder ``runs/NAME/``.

    bundle.json     classes, decision thresholds, the exact training settings, file checksums
    weights/        detector weights (best.pt) and their OpenVINO export (weights/best_openvino_model/)
    metrics.json    validation figures
    recogniser.npz  (when trained) the per-person face model
    face_detector/  (when trained) the face detector's ONet stage as OpenVINO IR, so classify runs
                    without torch

Checksums are verified on load, so a tampered or half-copied bundle is refused with a clear message
instead of being unpickled (model weights are pickles: loading an untrusted one runs code).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sorter.errors import PhotosortError
from sorter.io.decode import sha256_file

BUNDLE_FILE = "bundle.json"
FORMAT = 1


class BundleError(PhotosortError):
    """The model folder is missing, incomplete or altered."""


@dataclass
class Bundle:
    path: Path
    classes: list[str]
    weights: str = "weights/best.pt"
    imgsz: int = 640
    threshold: float = 0.5  # accept a person in a photo at or above this score
    band: float = 0.25  # scores in [threshold - band, threshold) go to uncertain/
    per_class_threshold: dict[str, float] = field(default_factory=dict)
    per_class_low: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    recogniser: str | None = None  # relative path of the recogniser file, when there is one
    export: str | None = None  # folder of the re-validated OpenVINO export (CPU inference), if any
    face_detector: str | None = None  # the recogniser's face detector stage as OpenVINO IR (.xml), if any
    # a mask-state head trained on this model's labels (.onnx, its .json beside it); None: the shipped one
    mask_head: str | None = None
    # an age/gender head of this model's own (.npz, its .json beside it); None: the shipped one
    attribute_head: str | None = None
    # Whether classify runs the YOLO detector beside the recogniser's own face detector. Chosen at training
    # time on the validation photos (sorter.training.measure): a detector trained from scratch on a
    # CPU finds no face the face detector misses, and skipping it saves ~100 ms a photo. Without a
    # recogniser the detector is all there is and always runs.
    use_detector: bool = True
    # Labelled boxes as fractions of the face detector's (x0, y0, x1, y1), learnt from the training
    # labels (sorter.training.detection.learn_box_map): how this labeller draws a face, as rows [height,
    # x0, y0, x1, y1] by face height (models from before: the four fractions alone). None: default.
    box_map: list[list[float]] | list[float] | None = None
    # What classify sorts by with this model: "person" (a recogniser, or YOLO's classes), or "mask" (the
    # labels were mask states: the face detector and the mask head do the sorting)
    sorts_by: str = "person"

    @property
    def attribute_head_path(self) -> Path | None:
        """The model's own age/gender head, or None for the shipped one."""
        return self.path / self.attribute_head if self.attribute_head else None

    @property
    def weights_path(self) -> Path:
        return self.path / self.weights

    def detector(self, device: str) -> tuple[Path, str]:
        """The detector to run on ``device`` and its backend: the OpenVINO export on a CPU when there is
        one (it re-validated at training time), else the PyTorch weights through ultralytics."""
        if self.export and device == "cpu":
            return self.path / self.export, "openvino"
        return self.weights_path, "ultralytics"

    @property
    def runs_detector(self) -> bool:
        """Does classify run the YOLO detector with this bundle (see ``use_detector``)?"""
        return self.use_detector or not self.recogniser

    def thresholds(self, threshold: float | None = None, band: float | None = None) -> tuple[dict, dict]:
        """Per-person accept and review thresholds; explicit arguments override the stored ones."""
        explicit = threshold is not None or band is not None
        band = self.band if band is None else band
        accept, low = {}, {}
        for c in self.classes:
            t = threshold if threshold is not None else self.per_class_threshold.get(c, self.threshold)
            accept[c] = t
            # Calibrated review thresholds stand unless the user set --threshold or --band.
            low[c] = self.per_class_low[c] if not explicit and c in self.per_class_low else max(0.0, t - band)
        return accept, low

    def save(self) -> None:
        """Write bundle.json with fresh checksums of every file the bundle names."""
        tracked = [self.weights] + ([self.recogniser] if self.recogniser else [])
        if self.face_detector:
            tracked += [self.face_detector, str(Path(self.face_detector).with_suffix(".bin"))]
        if self.mask_head:
            tracked += [self.mask_head, str(Path(self.mask_head).with_suffix(".json"))]
        if self.attribute_head:
            tracked += [self.attribute_head, str(Path(self.attribute_head).with_suffix(".json"))]
        if self.export:
            tracked += sorted(
                p.relative_to(self.path).as_posix()
                for p in (self.path / self.export).rglob("*")
                if p.is_file()
            )
        self.files = {rel: sha256_file(self.path / rel) for rel in tracked}
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        data["format"] = FORMAT
        write_json_atomic(self.path / BUNDLE_FILE, data)

    @classmethod
    def load(cls, path: Path | str, verify: bool = True) -> Bundle:
        path = Path(path)
        meta = path / BUNDLE_FILE
        if not meta.is_file():
            raise BundleError(
                f"{path}: not a photosort model (no {BUNDLE_FILE}); run 'photosort train' first"
            )
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{meta}: unreadable ({exc})") from None
        if data.pop("format", None) != FORMAT:
            raise BundleError(f"{meta}: made by another version of photosort; retrain")
        known = set(cls.__dataclass_fields__)
        bundle = cls(path=path, **{k: v for k, v in data.items() if k in known})
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        for rel, digest in self.files.items():
            f = self.path / rel
            if not f.is_file():
                raise BundleError(f"{f}: missing from the model folder")
            if sha256_file(f) != digest:
                raise BundleError(
                    f"{f}: checksum does not match bundle.json; the model was altered or "
                    "damaged; refusing to load it (retrain, or restore the folder)"
                )


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
