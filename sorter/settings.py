"""The typed settings of a run: one object built by the CLI (or the API) and passed down.

Each field says what it trades; values are checked here once, so a bad value is refused with a
message before any work starts instead of quietly sorting nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sorter.errors import PhotosortError


class SettingsError(PhotosortError):
    """A setting out of its range (one-line message naming it)."""


def _unit(name: str, value: float | None, low: float = 0.0, high: float = 1.0) -> None:
    if value is not None and not (low <= value <= high):
        raise SettingsError(f"{name} must be between {low:g} and {high:g} (got {value:g})")


# What classify sorts by: people (needs a model), or a face attribute (no model needed): mask state, age
# band, gender, or the seeds' mask x gender x age band.
FACE_BY = ("mask", "age-band", "gender", "mask-gender-age")
BY = ("person", *FACE_BY)
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ClassifySettings:
    """How ``classify`` runs. None means "as the model says"."""

    # Accept a person at or above this score (0..1); None: the model's calibrated per-person values.
    threshold: float | None = None
    # Scores this far below the threshold go to uncertain/ (0..1); None: the model's.
    band: float | None = None
    # Re-pick per-person thresholds for this photo-level precision from the scores stored at training.
    precision: float | None = None
    dry_run: bool = False  # write only manifest.csv; copy nothing
    device: str | None = None  # None: a GPU when there is one, else the CPU
    batch: int | None = None  # photos per detector batch (None: 1 on a CPU, 8 on a GPU)
    workers: int | None = None  # analyse processes (None: one per core, at most 4; 0: in this process)
    progress: bool = True
    # Run the YOLO detector beside the recogniser's face detector (None: as training measured).
    use_detector: bool | None = None
    # "person": a folder per person (needs a model); "mask": a folder per mask state (no model needed),
    # and likewise "age-band", "gender", "mask-gender-age"; None: "mask" for a model trained on
    # mask-state labels, else "person".
    by: str | None = None
    # Where the analyse step runs: "local" (worker processes of this machine) or "ray" (a Ray cluster's
    # actors; plan and commit stay here). ``ray_address`` None: a Ray of this machine's cores only.
    backend: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        _unit("--threshold", self.threshold)
        _unit("--band", self.band)
        _unit("--precision", self.precision, 0.5, 1.0)
        if self.backend not in BACKENDS:
            raise SettingsError(f"--backend must be one of {', '.join(BACKENDS)} (got {self.backend!r})")
        if self.ray_address is not None and self.backend != "ray":
            raise SettingsError("--ray-address needs --backend ray")
        if self.backend == "ray" and self.workers == 0:
            raise SettingsError("--workers 0 (no worker processes) cannot run on Ray; leave it out")
        if self.batch is not None and self.batch < 1:
            raise SettingsError(f"--batch must be at least 1 (got {self.batch})")
        if self.by not in (None, *BY):
            raise SettingsError(f"--by must be one of {', '.join(BY)} (got {self.by!r})")
        if self.workers is not None and self.workers < 0:
            raise SettingsError(f"--workers must be 0 or more (got {self.workers})")


GPU_EPOCHS = 50


@dataclass
class TrainSettings:
    """Everything that shapes a training run; stored verbatim in the bundle."""

    # None: on a CPU as many epochs as fit in ``detector_minutes``, on a GPU GPU_EPOCHS; given: exactly that.
    epochs: int | None = None
    # The detector's training-time budget on a CPU. A YOLO trained from scratch on a CPU learns little in
    # any time a laptop can spare (80 min for 240 photos at 50 epochs, mAP50 near 0), and training then
    # measures whether it sorts better at all; this bounds what it costs.
    detector_minutes: float = 5.0
    # Mask-state labels: the time budget for fine-tuning the mask head on them (it stops earlier when
    # validation stops improving).
    mask_head_minutes: float = 3.0
    imgsz: int = 640
    model: str = "yolo11n.yaml"  # a YAML builds from scratch (offline); a .pt starts from those weights
    device: str | None = None
    seed: int = 0
    # images per detector batch; None: 4 on a CPU (peak memory on the face-mask train side 3.65 GB at
    # 8, most of it YOLO's activations), 8 on a GPU
    batch: int | None = None
    val_fraction: float = 0.2
    patience: int = 50
    threshold: float = 0.5
    band: float = 0.25
    wandb: str = "offline"
    wandb_images: bool = False
    recogniser: bool = True  # pretrained face embeddings + per-person model; the detector alone is weak
    precision: float = 0.98  # target photo-level precision the per-person thresholds are calibrated for
    embedder: str = "sface"  # face vectors for the recogniser: "sface" (default) or "dlib"
    export: bool = True  # OpenVINO export for CPU inference, used only if it re-validates
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _unit("--threshold", self.threshold)
        _unit("--band", self.band)
        _unit("--precision", self.precision, 0.5, 1.0)
        _unit("--val-fraction", self.val_fraction, 0.0, 0.9)
        if self.epochs is not None and self.epochs < 1:
            raise SettingsError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.detector_minutes <= 0:
            raise SettingsError(f"--detector-minutes must be more than 0 (got {self.detector_minutes:g})")

    def detector_schedule(self, device: str) -> tuple[int, float | None, str]:
        """(epochs, hours for ultralytics' ``time`` or None, a line saying which) on ``device``."""
        if self.epochs is not None:
            return self.epochs, None, f"detector: training {self.epochs} epochs (--epochs)"
        if device == "cpu":
            return (
                GPU_EPOCHS,
                self.detector_minutes / 60,
                f"detector: training for {self.detector_minutes:g} minutes on the CPU (a time budget; "
                "--epochs N trains N epochs instead, --detector-minutes M for longer)",
            )
        return GPU_EPOCHS, None, f"detector: training {GPU_EPOCHS} epochs on {device}"
