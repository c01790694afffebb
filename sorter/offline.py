"""Keep every library we use on this machine.

Photos of children must never leave the computer, and the tool must work with no internet.
ultralytics, wandb and OpenVINO all try to reach the network by default (update checks, font
downloads, telemetry, settings sync). :func:`prepare` switches all of that off. It must run before
``ultralytics`` is imported, so every module imports ultralytics only inside functions, after
calling it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

_done = False
_settings_done = False


def home() -> Path:
    """photosort's own cache folder (``PHOTOSORT_HOME``, else ``~/.cache/photosort``)."""
    base = os.environ.get("PHOTOSORT_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "photosort"
    )
    return Path(base)


def config_dir() -> Path:
    """Where ultralytics keeps its settings: ours, never the user's global one."""
    return home() / "ultralytics"


def prepare(ultralytics: bool = True) -> None:
    """Set the offline switches. Safe to call many times; cheap after the first.

    ``ultralytics=False``: everything but ultralytics' own settings file, which needs ultralytics (and
    so torch, ~0.5 GB) imported; for processes that only run OpenVINO or OpenCV models.
    """
    global _done, _settings_done
    if _done:
        if ultralytics and not _settings_done:
            _settings_done = True
            _settings_off()
        return
    os.environ.setdefault("YOLO_OFFLINE", "true")  # skips the 1.1.1.1 / 8.8.8.8 probes on import
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # never pip-install exporters mid-run
    os.environ.setdefault("YOLO_VERBOSE", "false")
    cfg = config_dir()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg))
    cfg = Path(os.environ["YOLO_CONFIG_DIR"])
    _install_font(cfg / "Ultralytics")
    # wandb: offline unless the user explicitly asked otherwise for one run (see sorter.training.tracking).
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no Sentry reports
    # OpenVINO's model converter sends usage statistics through the openvino_telemetry package when no
    # consent file exists (and writes ~/intel/). It falls back to a built-in no-op stub when that package
    # cannot be imported, so make it unimportable in this process: no telemetry code ever runs.
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    # Hugging Face / torch hub: never fetch.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCH_HOME", str(cfg.parent / "torch"))
    _done = True
    if ultralytics:
        _settings_done = True
        _settings_off()


def _install_font(dest: Path) -> None:
    """ultralytics downloads Arial.ttf from GitHub the first time it plots; give it one.

    Any TrueType font works; matplotlib (an ultralytics dependency) ships DejaVuSans.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = dest / name
        if target.exists():
            continue
        try:
            import matplotlib

            src = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except (ImportError, OSError):
            pass  # plots will be skipped by us anyway (plots=False)


def _settings_off() -> None:
    from ultralytics import settings

    wanted = {
        "sync": False,
        "wandb": False,
        "tensorboard": False,
        "mlflow": False,
        "comet": False,
        "clearml": False,
        "dvc": False,
        "hub": False,
        "neptune": False,
        "raytune": False,
    }
    current = {k: settings.get(k) for k in wanted if k in settings}
    if any(current[k] != wanted[k] for k in current):
        settings.update({k: v for k, v in wanted.items() if k in settings})
