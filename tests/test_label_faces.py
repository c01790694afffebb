"""Issue 12: the shipped face detector learnt from labelled boxes (sorter.models.label_faces)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sorter.boxes import iou
from sorter.io.labels import read_labelled
from sorter.models.label_faces import FOLDER, LabelFaces, LabelFacesFileError

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "face-mask-sample"


def test_finds_the_labelled_faces_of_held_out_photos_as_the_labeller_boxes_them() -> None:
    """The bundled test-side photos (never trained on): most labelled faces of 16 px and more get a box
    at IoU >= 0.5 with the labeller's, and the detector's boxes are few where faces are few."""
    det = LabelFaces(threads=1)
    found = total = boxes = 0
    for im in read_labelled(SAMPLE / "test").images:
        rgb = np.asarray(Image.open(im.image).convert("RGB"))
        got, scores = det.detect(rgb)
        assert got.shape == (len(scores), 4) and (scores >= det.min_score).all()
        boxes += int((scores >= 0.5).sum())
        for b in im.boxes:
            if b.xyxy[3] - b.xyxy[1] < 16:
                continue
            total += 1
            found += max((iou(g, b.xyxy) for g in got), default=0.0) >= 0.5
    assert total >= 30
    assert found / total >= 0.85, f"{found}/{total} labelled faces boxed at IoU 0.5"
    assert boxes <= 2 * sum(len(im.boxes) for im in read_labelled(SAMPLE / "test").images)


def test_detects_without_torch_and_without_telemetry() -> None:
    code = (
        "import sys, numpy as np\n"
        "from sorter.models.label_faces import LabelFaces\n"
        "boxes, scores = LabelFaces(threads=1).detect(np.zeros((300, 400, 3), np.uint8))\n"
        "assert boxes.shape[1] == 4\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert sys.modules.get('openvino_telemetry') is None, 'telemetry importable'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_altered_or_missing_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "label_faces"
    shutil.copytree(FOLDER, copy)
    LabelFaces(copy, threads=1).load()  # an intact copy loads
    weights = next(copy.glob("*.bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(LabelFacesFileError, match="sha256"):
        LabelFaces(copy, threads=1).load()
    weights.unlink()
    with pytest.raises(LabelFacesFileError, match="missing"):
        LabelFaces(copy, threads=1).load()
