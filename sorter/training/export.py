"""The detector, exported to OpenVINO for CPU inference, and re-validated before anyone relies on it.

OpenVINO runs YOLO11n about twice as fast as PyTorch on a laptop CPU (41 vs 84 ms per 640-px image,
measured here). The export takes any input size (``dynamic``), so a 4:3 photo runs at 640x480, not
640x640 (102 against 125 ms on one core). An export can silently change what a model finds (an
operator converted differently), so :func:`export_detector` measures box mAP50-95 of the export on
the validation split and uses it only when it is within ``TOLERANCE`` of the PyTorch weights;
otherwise classify keeps PyTorch and the reason is recorded in ``metrics.json``. The export lives in
the model bundle (with checksums like every other model file), so it is made once, at training time.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sorter import offline
from sorter.io.bundle import Bundle
from sorter.models.yolo import load_yolo
from sorter.training.measure import box_metrics

TOLERANCE = 0.01  # largest mAP50-95 difference from PyTorch an export may have and still be used
EXPORT_DIR = "weights/best_openvino_model"  # ultralytics recognises the format by this suffix


@dataclass
class ExportReport:
    format: str
    used: bool
    reason: str
    mAP50_95_pytorch: float | None = None
    mAP50_95_export: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_detector(
    bundle: Bundle,
    data_yaml: Path,
    map_pytorch: float,
    log: Callable[[str], Any] = print,
) -> ExportReport:
    """Export ``bundle``'s detector to OpenVINO, re-validate it, and record it in the bundle if it holds.

    ``map_pytorch`` is the PyTorch weights' mAP50-95 on the same validation split (already measured).
    ``bundle.export`` is set only when the export is used; the caller saves the bundle.
    """
    t0 = time.perf_counter()
    report = ExportReport(format="openvino", used=False, reason="", mAP50_95_pytorch=round(map_pytorch, 4))
    offline.prepare()
    try:
        import openvino  # noqa: F401 - only to tell "not installed" from "export failed"
    except ImportError:
        report.reason = "openvino is not installed; classify uses the PyTorch weights"
        return report
    dest = bundle.path / EXPORT_DIR
    shutil.rmtree(dest, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            # the exporter traces with torch.jit.trace, deprecated in torch 2.14: nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            made = Path(
                load_yolo(bundle.weights_path).export(
                    format="openvino", imgsz=bundle.imgsz, half=False, int8=False, dynamic=True, verbose=False
                )
            )
        shutil.move(str(made), dest)
        exported = load_yolo(dest)
        box = box_metrics(exported, data_yaml, bundle.classes, bundle.imgsz, "cpu", batch=1)
    except Exception as exc:  # noqa: BLE001 - any failure means "keep PyTorch", with the reason
        shutil.rmtree(dest, ignore_errors=True)
        report.reason = f"export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        report.seconds = round(time.perf_counter() - t0, 1)
        log(f"detector: {report.reason}; classify uses the PyTorch weights")
        return report
    report.mAP50_95_export = round(float(box["mAP50-95"]), 4)
    report.seconds = round(time.perf_counter() - t0, 1)
    diff = abs(report.mAP50_95_export - map_pytorch)
    if diff <= TOLERANCE:
        report.used = True
        report.reason = f"mAP50-95 within {diff:.4f} of PyTorch (tolerance {TOLERANCE})"
        bundle.export = EXPORT_DIR  # the caller saves the bundle (checksums of the export with it)
    else:
        shutil.rmtree(dest, ignore_errors=True)
        report.reason = f"mAP50-95 differs from PyTorch by {diff:.4f} (> {TOLERANCE}); not used"
    log(
        f"detector: OpenVINO export {'used' if report.used else 'NOT used'}: mAP50-95 "
        f"{report.mAP50_95_export:.4f} vs PyTorch {map_pytorch:.4f} ({report.seconds:.0f} s)"
    )
    return report
