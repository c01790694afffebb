"""The typed records that flow between pipeline stages.

Coordinates are always pixels of the image *as displayed* (EXIF orientation applied),
in ``xyxy`` order, unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LabelBox:
    """One labelled box: a class name and its corners in image pixels."""

    name: str
    xyxy: tuple[float, float, float, float]


@dataclass
class LabelledImage:
    """A labelled photo: its image file, its label file (None for an unlabelled negative) and boxes."""

    image: Path
    label: Path | None
    width: int
    height: int
    boxes: list[LabelBox]
    sha256: str


@dataclass(frozen=True)
class Problem:
    """Something wrong with one input file. ``str()`` gives the one-line message users see."""

    path: Path
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {self.message}"


@dataclass
class LabelledSet:
    """A labelled folder after reading and validation."""

    root: Path
    classes: list[str]
    images: list[LabelledImage]
    problems: list[Problem] = field(default_factory=list)
    # Worth a look, but no photo is left out for them (a likely typo in a class name, a guessed encoding).
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Photo:
    """A library file found by the scan."""

    path: Path  # absolute
    rel: Path  # relative to the library root; used for predictable output names
    size: int
    mtime_ns: int


@dataclass
class Decoded:
    """A decoded photo, orientation applied, possibly reduced for speed."""

    photo: Photo
    rgb: object  # numpy uint8 HxWx3, RGB, displayed orientation
    scale: float  # displayed-full-size pixels per decoded pixel (>= 1 when reduced)
    full_wh: tuple[int, int]
    # smaller copies made for models that want less (decode.shrink), by long side: made once per photo
    views: dict[int, Decoded] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Face:
    """One detected face, in full-size displayed coordinates.

    ``scores`` maps each person to how sure we are this face is that person (0..1).
    The detector fills it from its class scores; a recogniser may replace it.
    """

    xyxy: tuple[float, float, float, float]
    det_score: float
    scores: dict[str, float] = field(default_factory=dict)
    masked: bool | None = None
    # The detector's own class scores when a recogniser replaced ``scores`` (kept to measure fusion).
    det_scores: dict[str, float] = field(default_factory=dict)
    # The recogniser's face vector (base64 float32), stored in the index so that a retrained recogniser
    # re-scores the photo without decoding it again.
    embedding: str = ""
    # The mask-state head's answer (sorter.heads.mask): with_mask / without_mask / mask_weared_incorrect
    # and its probability; None where no head ran (faces stored by an older photosort).
    mask: str | None = None
    mask_score: float | None = None
    # A face of a video (sorter.video.library): seen from start_s to end_s seconds (equal: in one sampled
    # frame only); None for a photo's face.
    start_s: float | None = None
    end_s: float | None = None
    at_s: float | None = None  # a video's face: the time of the frame its box is from (the review crop)
    # The attribute heads' answer (sorter.heads.attributes): age in years, "female"/"male" and the
    # probability of that gender; None where no head ran (faces stored by an older photosort).
    age: float | None = None
    gender: str | None = None
    gender_score: float | None = None
    # The face's box as a labeller draws it (labelImg: forehead to chin), full-size displayed px: the
    # mask head's box output where the head has one (sorter.heads.mask.MaskHead.predict_boxes); None
    # otherwise (the system-as-detector then maps ``xyxy`` by the box map learnt from labels).
    label_box: tuple[float, float, float, float] | None = None

    @property
    def best(self) -> tuple[str | None, float]:
        if not self.scores:
            return None, 0.0
        name = max(self.scores, key=self.scores.__getitem__)
        return name, self.scores[name]


@dataclass
class Decision:
    """What to do with one photo."""

    photo: Photo
    faces: list[Face]
    people: dict[str, float]  # person -> best score in this photo (after joint assignment)
    accepted: list[str]  # persons whose folder receives a copy
    uncertain: list[str]  # persons whose score fell in the review band
    reason: str  # human-readable why-uncertain / no-person, empty when clear
    error: str | None = None  # set when the photo could not be read
    # person -> index in ``faces`` of the face they were found in (the joint assignment)
    assigned: dict[str, int] = field(default_factory=dict)

    @property
    def folders(self) -> list[str]:
        out = list(self.accepted)
        if self.uncertain:
            out.append("uncertain")
        return out
