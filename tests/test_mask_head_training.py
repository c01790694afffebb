"""Fine-tuning the mask-state head on mask-state labels (issue 12), from the shipped weights.

Real components only: the shipped state dict and ONNX file, real photos and VOC labels of the bundled
face-mask sample, a real (short) fine-tuning run with torch, the result loaded by ``MaskHead``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sorter.heads.mask import MASK_CLASSES, META_PATH, NO_FACE, MaskHead, crop, to_input
from sorter.io.labels import read_labelled
from sorter.records import LabelBox
from sorter.training.mask_head import TORCH_PATH, load_torch

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "face-mask-sample"


@pytest.fixture(scope="module")
def torch1():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, torch1):
    from sorter.training.mask_fit import fit_mask_head

    ls = read_labelled(SAMPLE / "train")
    assert not ls.problems and set(ls.classes) <= set(MASK_CLASSES)
    out = tmp_path_factory.mktemp("mask-head")
    lines: list[str] = []
    t = time.perf_counter()
    result = fit_mask_head(ls.images, out, seed=0, epochs=2, log=lines.append)
    return out, result, time.perf_counter() - t, lines, ls


def test_fine_tunes_on_the_sample_and_the_result_loads_with_its_checksum(fitted):
    out, result, seconds, lines, ls = fitted
    assert seconds < 60, f"fine-tuning 2 epochs on the sample took {seconds:.0f} s"
    assert {p.name for p in out.iterdir()} >= {"mask_head.onnx", "mask_head.json", "mask_head.pt"}
    head = MaskHead(out / "mask_head.onnx", threads=1).load()  # verifies the sha256 in mask_head.json
    meta = json.loads((out / "mask_head.json").read_text(encoding="utf-8"))
    shipped = json.loads(META_PATH.read_text(encoding="utf-8"))
    assert list(meta) == list(shipped)  # the shipped format, key for key
    for key in ("classes", "input", "crop", "normalisation", "opset"):
        assert meta[key] == shipped[key]
    # the 4-class head stays 4-class: no_face examples from the same photos (the detector's non-faces)
    assert meta["classes"][-1] == NO_FACE and head.classes == tuple(meta["classes"])
    assert result["faces"]["train"][NO_FACE] > 0 and "no_face" in meta["provenance"]["no_face"]
    assert set(result["faces"]["val"]) == set(MASK_CLASSES)
    assert meta["sha256"] == hashlib.sha256((out / "mask_head.onnx").read_bytes()).hexdigest()
    assert meta["torch_sha256"] == hashlib.sha256((out / "mask_head.pt").read_bytes()).hexdigest()
    n = result["photos"]["train"]
    assert n + result["photos"]["val"] == len(ls.images) and result["photos"]["val"] >= 1
    assert meta["provenance"]["training_photos"] == n
    assert "fine-tuned from the shipped head" in meta["provenance"]["weights"]
    assert f"on {n} photos" in meta["provenance"]["weights"]
    # the figures: before (shipped) and after, the epochs, the time, the verdict
    assert isinstance(result["improved"], bool)
    for side in ("before", "after"):
        fig = result[side]
        assert 0.0 <= fig["accuracy"] <= 1.0
        assert set(fig["recall"]) <= set(MASK_CLASSES) and fig["recall"]
    assert result["before"]["accuracy"] > 0.7  # the shipped head on validation photos of its own kind
    assert result["epochs"] in (1, 2) and result["epochs_run"] == 2 and result["seconds"] > 0
    assert result["onnx_vs_torch_max_abs_prob_diff"] < 1e-4
    assert any("epoch 2" in line for line in lines)
    # the fine-tuned head classifies real test photos
    with Image.open(SAMPLE / "test" / "maksssksksss0.jpg") as im:
        rgb = np.asarray(im.convert("RGB"))
    labels, probs = head.predict(rgb, [(10, 10, 60, 70)])
    assert labels[0] in MASK_CLASSES and probs[0].sum() == pytest.approx(1.0, rel=1e-5)
    assert probs.shape == (1, 4) and 0.0 <= head.face_probability(probs[0]) <= 1.0
    # and its state dict is where a further fine-tune would start
    load_torch(out / "mask_head.pt", out / "mask_head.json")


def test_refuses_classes_that_are_not_mask_states(tmp_path):
    from sorter.training.mask_fit import fit_mask_head

    im = read_labelled(SAMPLE / "train").images[0]
    alice = dataclasses.replace(im, boxes=[LabelBox("alice", im.boxes[0].xyxy)])
    with pytest.raises(ValueError, match="alice"):
        fit_mask_head([alice, im], tmp_path)
    assert not any(tmp_path.iterdir())


def test_importing_mask_head_training_imports_no_torch():
    code = (
        "import sys, sorter.training.mask_head, sorter.training.mask_fit\n"
        "heavy = [m for m in ('torch', 'cv2', 'openvino') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_shipped_state_dict_matches_the_shipped_onnx(torch1):
    meta = json.loads(META_PATH.read_text(encoding="utf-8"))
    assert meta["torch_sha256"] == hashlib.sha256(TORCH_PATH.read_bytes()).hexdigest()
    model = load_torch()
    head = MaskHead(threads=1, precision="f32").load()  # torch's precision (classify may run bf16)
    crops = []
    for labelled in sorted(read_labelled(SAMPLE / "test").images, key=lambda i: i.image.name)[:4]:
        with Image.open(labelled.image) as im:
            rgb = np.asarray(im.convert("RGB"))
        crops += [crop(rgb, b.xyxy, head.size, head.margin) for b in labelled.boxes[:3]]
    crops = np.stack(crops)
    with torch1.no_grad():
        p_torch = torch1.softmax(model(torch1.from_numpy(to_input(crops, head.mean, head.std))), 1).numpy()
    p_onnx = head.predict_crops(crops)
    assert len(crops) >= 6
    np.testing.assert_allclose(p_torch, p_onnx, atol=1e-4)
    assert (p_torch.argmax(1) == p_onnx.argmax(1)).all()


def test_a_tampered_state_dict_is_refused(tmp_path, torch1):
    pt = tmp_path / "mask_head.pt"
    data = bytearray(TORCH_PATH.read_bytes())
    data[len(data) // 2] ^= 0x01
    pt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="torch_sha256"):
        load_torch(pt, META_PATH)


def test_a_three_class_head_still_loads_and_is_always_a_face(tmp_path, torch1):
    """Heads from before no_face (3 logits, 3 classes in their JSON) keep working: face probability 1."""
    from sorter.training.mask_fit import write_json
    from sorter.training.mask_net import describe, export, make_model

    torch1.manual_seed(0)
    files = export(make_model(n_classes=3).eval(), tmp_path, 64)
    write_json(tmp_path / "mask_head.json", describe(64, 1.2, files, {}, "test", classes=MASK_CLASSES))
    head = MaskHead(tmp_path / "mask_head.onnx", threads=1).load()
    assert head.classes == MASK_CLASSES
    labels, probs = head.predict(np.full((80, 80, 3), 128, np.uint8), [(10, 10, 50, 60)])
    assert probs.shape == (1, 3) and labels[0] in MASK_CLASSES
    assert head.face_probability(probs[0]) == 1.0
    np.testing.assert_allclose(head.mask_probabilities(probs), probs, rtol=1e-6)
    assert load_torch(tmp_path / "mask_head.pt", tmp_path / "mask_head.json")[-1].out_features == 3
