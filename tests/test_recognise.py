"""The face recogniser: real pretrained models (MTCNN, dlib) on small real photos. No mocks.

The face-mask sample (real photos, bundled) exercises detection, embedding, mask state and the whole
fit -> save -> load -> recognise -> repick path; the LFW daycare test (needs ../shared) checks that the
recogniser actually tells people apart, masked strangers included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sorter.boxes import from_detector_box, iou, to_detector_box
from sorter.io.decode import decode
from sorter.io.labels import read_labelled
from sorter.models.dlib_face import DlibEmbedder
from sorter.models.mtcnn import MtcnnDetector
from sorter.models.yunet import YuNetDetector
from sorter.records import Decoded, Face, LabelledSet, Photo

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "face-mask-sample"
SHARED = Path(__file__).resolve().parents[2] / "shared"
needs_shared = pytest.mark.skipif(
    not (SHARED / "bench" / "make_library.py").is_file(),
    reason=f"needs ../shared (LFW + bench tools), absent at {SHARED}",
)


def _photo(path: Path) -> Photo:
    st = path.stat()
    return Photo(path=path, rel=Path(path.name), size=st.st_size, mtime_ns=st.st_mtime_ns)


@pytest.fixture(scope="module")
def sample_train() -> LabelledSet:
    return read_labelled(SAMPLE / "train")


@pytest.fixture(scope="module")
def models() -> tuple[MtcnnDetector, DlibEmbedder]:
    return MtcnnDetector(), DlibEmbedder()


def test_box_mapping_round_trips():
    box = (100.0, 50.0, 190.0, 178.0)
    back = from_detector_box(to_detector_box(box))
    assert np.allclose(back, box)
    # measured on the face-mask set's labels (brows to chin): the detector's box starts above theirs
    d = to_detector_box(box)
    assert d[1] < box[1] and d[3] < box[3] and iou(box, d) > 0.6


@pytest.mark.parametrize("detector", [YuNetDetector(), MtcnnDetector()], ids=["yunet+onet", "mtcnn"])
def test_detector_finds_the_labelled_faces(sample_train, detector):
    """The default detector (YuNet + ONet) and the one older recognisers were trained with (MTCNN)."""
    found = total = 0
    for img in sample_train.images[:8]:
        d = decode(_photo(img.image), max_side=640)
        boxes, scores, marks = detector.detect_landmarks(np.asarray(d.rgb))
        assert boxes.shape[1:] == (4,) and len(scores) == len(boxes) and np.all((scores >= 0) & (scores <= 1))
        assert marks.shape == (len(boxes), 5, 2)
        # landmarks belong to their face (boxes cut by the photo's edge aside: their landmarks are not cut)
        h, w = np.asarray(d.rgb).shape[:2]
        whole = (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < w) & (boxes[:, 3] < h)
        centre = marks[whole].mean(1)
        assert ((centre >= boxes[whole, :2]) & (centre <= boxes[whole, 2:])).all()
        full = boxes * d.scale
        for b in img.boxes:
            if b.xyxy[3] - b.xyxy[1] < 24:  # tiny faces: not what the targets are about
                continue
            total += 1
            found += max((iou(f, b.xyxy) for f in full), default=0.0) >= 0.3
    assert total >= 8
    assert found / total >= 0.8, f"{found}/{total}"


def test_embedding_separates_faces_and_sees_masks(sample_train, models):
    """Same face twice (box jitter) stays close; different people are further apart; the colour mask
    score ranks masked faces above unmasked ones on real photos."""
    _, embedder = models
    chips: list = []
    for img in sample_train.images[:30]:
        keep = [b for b in img.boxes if b.xyxy[3] - b.xyxy[1] >= 28 and b.name != "mask_weared_incorrect"]
        if not keep:
            continue
        d = decode(_photo(img.image), max_side=4000)
        rgb = np.asarray(d.rgb)
        boxes = [to_detector_box(tuple(v / d.scale for v in b.xyxy)) for b in keep]
        if not chips:
            first_rgb, first_box = rgb, boxes[0]
        chips += embedder.chips(rgb, boxes)
        if len(chips) >= 16:
            break
    assert len(chips) >= 8 and chips[0].shape == (150, 150, 3)
    e = embedder.embed_chips(chips)
    assert e.shape == (len(chips), 128) and np.all(np.isfinite(e))
    first = first_box
    jitter = [tuple(v + dv for v, dv in zip(first, (2, -1, 1, 2), strict=True))]
    again = embedder.embed(first_rgb, jitter)[0]
    d_same = np.linalg.norm(again - e[0])
    d_other = np.median(np.linalg.norm(e[1:] - e[0], axis=1))
    assert d_same < 0.25 and d_same < d_other / 2, (d_same, d_other)
    canon = embedder.canonical_mask(chips[0])
    assert (canon[120:, 40:110] == 128).all() and (canon[:50] == chips[0][:50]).all()


def test_fit_save_load_recognise_and_repick(sample_train, tmp_path):
    """The whole path on real photos, with mask states standing in for people (the code is the same)."""
    from sorter.heads.calibrate import repick_thresholds
    from sorter.pipeline.recognise import FaceRecogniser
    from sorter.training.fit import fit_recogniser

    images = [im for im in sample_train.images if len(im.boxes) <= 3][:8]
    out = tmp_path / "recogniser.npz"
    metrics = fit_recogniser(sample_train, images, out, target_precision=0.9, log=lambda m: None)
    assert out.is_file() and {"precision", "recall", "per_person"} <= set(metrics)
    with np.load(out, allow_pickle=False) as z:  # a plain array file: loading it runs no code
        meta = json.loads(str(z["meta"]))
        assert z["val_scores"].shape == z["val_truth"].shape == (len(images), len(meta["people"]))
    accept, low = repick_thresholds(out, 0.5)
    strict, _ = repick_thresholds(out, 0.999)
    assert set(accept) == set(meta["people"]) and all(low[p] <= accept[p] <= strict[p] for p in accept)

    rec = FaceRecogniser(out)
    test = sorted((SAMPLE / "test").glob("*.jpg"))[0]
    d = decode(_photo(test), max_side=640)
    assert isinstance(d, Decoded)
    fake_yolo = Face(xyxy=(1.0, 1.0, 30.0, 40.0), det_score=0.2, scores={"with_mask": 0.2})
    dup = Face(xyxy=(2.0, 1.0, 31.0, 41.0), det_score=0.1, scores={"without_mask": 0.1})  # same face
    faces = rec.recognise(d, [dup, fake_yolo])
    assert faces and faces[0] is not None
    for f in faces:
        assert set(f.scores) == set(meta["people"]) and all(0.0 <= s <= 1.0 for s in f.scores.values())
        assert isinstance(f.masked, bool)
        x0, y0, x1, y1 = f.xyxy
        assert 0 <= x0 < x1 <= d.full_wh[0] + 5 and 0 <= y0 < y1 <= d.full_wh[1] + 5
    # the stronger YOLO box is kept once (its duplicate folds into it); the face detector adds the rest
    assert sum(f.xyxy == fake_yolo.xyxy for f in faces) == 1 and not any(f.xyxy == dup.xyxy for f in faces)
    assert len(faces) >= 2


def test_recognition_does_not_depend_on_decode_size_or_backend(sample_train, tmp_path):
    """Issue 4: classify decodes a large JPEG reduced (DCT scaling) and runs ONet on OpenVINO; a naive
    loop decodes it in full and runs ONet on torch. Both must see the same faces with the same scores."""
    from PIL import Image

    from sorter.io.decode import decode_work, read_photo
    from sorter.models.onet import export_onet
    from sorter.pipeline.decide import decide
    from sorter.pipeline.recognise import FaceRecogniser
    from sorter.training.fit import fit_recogniser

    images = [im for im in sample_train.images if len(im.boxes) <= 3][:8]
    out = tmp_path / "recogniser.npz"
    fit_recogniser(sample_train, images, out, target_precision=0.9, log=lambda m: None)
    ir = export_onet(tmp_path / "face_detector")
    checked = 0
    for i, src in enumerate(sorted((SAMPLE / "test").glob("*.jpg"))[:6]):
        with Image.open(src) as im:  # a sample photo as a 12-MP-like phone photo: 8x the pixels each way
            big = tmp_path / f"big{i}.jpg"
            im.convert("RGB").resize((im.width * 8, im.height * 8), Image.BICUBIC).save(big, quality=92)
        photo = _photo(big)
        reduced = decode_work(photo, read_photo(photo)[1])
        full = decode(photo, max_side=1 << 30)
        assert np.asarray(reduced.rgb).shape[1] <= np.asarray(full.rgb).shape[1] // 2
        rec = FaceRecogniser(out, onet_ir=ir)
        a = rec.recognise(reduced, [])
        b = FaceRecogniser(out).recognise(full, [])
        # Every clear face (both stages of the detector sure) is found both ways, in the same place, with
        # the same scores. Doubtful proposals near the detector's thresholds may come and go.
        for x, y in ((a, b), (b, a)):
            for f in (f for f in x if f.det_score >= 0.9):
                twin = max(y, key=lambda g: iou(f.xyxy, g.xyxy))
                assert iou(f.xyxy, twin.xyxy) > 0.9, (big, f.xyxy)
                assert max(abs(f.scores[p] - twin.scores[p]) for p in f.scores) < 0.05, big
                checked += 1
        accept, low = rec.thresholds
        assert decide(photo, a, accept, low).folders == decide(photo, b, accept, low).folders, big
    assert checked >= 8


def test_retrained_recogniser_rescores_stored_faces_without_decoding(sample_train, robust_model, tmp_path):
    """Issue 4: a new recogniser (retrained, same face pipeline) re-sorts from the vectors in the index:
    no photo is decoded again, and the result equals a cold run with the new model."""
    import shutil

    from sorter.io.bundle import Bundle
    from sorter.pipeline.classify import classify_library
    from sorter.pipeline.recognise import FaceRecogniser
    from sorter.training.fit import fit_recogniser

    images = [im for im in sample_train.images if len(im.boxes) <= 3][:8]
    model = tmp_path / "model"
    shutil.copytree(robust_model.run_dir / "weights", model / "weights")
    people = sample_train.classes

    def bundle_with(precision: float) -> Bundle:
        fit_recogniser(sample_train, images, model / "recogniser.npz", target_precision=precision, log=print)
        b = Bundle(path=model, classes=people, imgsz=160, recogniser="recogniser.npz")
        b.per_class_threshold, b.per_class_low = FaceRecogniser(model / "recogniser.npz").thresholds
        b.save()
        return Bundle.load(model)

    library = SAMPLE / "test"
    quiet = dict(progress=False, log=lambda m: None, workers=0)
    first = classify_library(library, tmp_path / "out", bundle_with(0.9), **quiet)
    assert first.photos == 20 and first.stage_seconds["decode"] > 0
    again = classify_library(library, tmp_path / "out", bundle_with(0.5), **quiet)
    assert again.reused == 20 and again.stage_seconds["decode"] == 0, again.summary()
    cold = classify_library(library, tmp_path / "cold", Bundle.load(model), **quiet)
    assert cold.reused == 0
    manifest = lambda out: (out / "manifest.csv").read_text().replace(str(out), "OUT")  # noqa: E731
    assert manifest(tmp_path / "out") == manifest(tmp_path / "cold")
    files = lambda out: sorted(p.relative_to(out) for p in out.rglob("*.jpg"))  # noqa: E731
    assert files(tmp_path / "out") == files(tmp_path / "cold")
    third = classify_library(library, tmp_path / "out", Bundle.load(model), **quiet)
    assert third.reused == 20 and third.stage_seconds["place"] < 5


@pytest.mark.shared
@needs_shared
def test_tells_children_apart_on_a_small_daycare_library(tmp_path):
    from sorter.pipeline.decide import decide
    from sorter.pipeline.recognise import FaceRecogniser
    from sorter.training.fit import fit_recogniser

    lib = tmp_path / "daycare"
    subprocess.run(
        [
            sys.executable,
            str(SHARED / "bench" / "make_library.py"),
            "--lfw",
            str(SHARED / "data" / "lfw"),
            "--out",
            str(lib),
            "--seed",
            "3",
            "--people",
            "3",
            "--labelled",
            "20",
            "--library",
            "8",
            "--jobs",
            "2",
            "--stranger-rate",
            "0.35",
        ],
        check=True,
        capture_output=True,
    )
    labelled = read_labelled(lib / "labelled")
    out = tmp_path / "rec.npz"
    metrics = fit_recogniser(labelled, labelled.images, out, log=lambda m: None)
    assert metrics["strangers"] > 0 and metrics["precision"] >= 0.8
    rec = FaceRecogniser(out)
    accept, low = rec.thresholds
    import csv

    tp = fp = n = 0
    with open(lib / "truth.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        path = lib / "library" / row["path"]
        d = decode(_photo(path), max_side=640)
        faces = rec.recognise(d, [])
        dec = decide(d.photo, faces, accept, low)
        truth = {p for p in row["people"].split(";") if p}
        tp += len(set(dec.accepted) & truth)
        fp += len(set(dec.accepted) - truth)
        n += len(truth)
    assert fp <= 1, f"{fp} wrong photos"
    assert tp >= 0.5 * n, f"only {tp}/{n} appearances sorted"


def test_sface_on_openvino_gives_the_vectors_of_opencvs_dnn(sample_train):
    """Issue 4: the default SFace backend (OpenVINO, a photo's faces in one batch, bf16 where the CPU has
    it) gives the vectors OpenCV's DNN gives (fp32, one face at a time), so it changes speed, not who."""
    from sorter.models.sface import SFaceEmbedder

    opencv, openvino = SFaceEmbedder("opencv"), SFaceEmbedder("openvino", threads=1)
    detector = YuNetDetector()
    cos = []
    for img in sample_train.images[:12]:
        d = decode(_photo(img.image), max_side=640)
        boxes, _, marks = detector.detect_landmarks(np.asarray(d.rgb))
        if not len(boxes):
            continue
        a = opencv.embed(np.asarray(d.rgb), boxes, marks)
        b = openvino.embed(np.asarray(d.rgb), boxes, marks)
        assert a.shape == b.shape == (len(boxes), 128)
        assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
        cos += list((a * b).sum(1))
    assert len(cos) >= 10
    # a different person's vector sits at cosine ~0.3; bf16 rounding moves a vector by ~1e-4
    assert min(cos) > 0.99, min(cos)


def test_onet_on_openvino_matches_torch_at_full_precision(tmp_path):
    """ONet runs in fp32 on OpenVINO even on a bf16 CPU: borderline faces then come and go exactly as
    with torch's ONet (the naive loop's), instead of flipping on rounding."""
    from sorter.models.onet import export_onet, load_onet

    ir = export_onet(tmp_path / "face_detector")
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 48, 48)).astype(np.float32)
    for a, b in zip(load_onet(None, 1)(x), load_onet(ir, 1)(x), strict=True):
        assert np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize(
    ("f_with", "f_alone", "used"), [(0.91, 0.90, True), (0.90, 0.90, False), (0.80, 0.90, False)]
)
def test_detector_runs_in_classify_only_if_it_sorted_better(f_with, f_alone, used):
    from sorter.training.measure import choose_detector

    use = choose_detector({"f1": f_with}, {"f1": f_alone})
    assert use["used"] is used
    assert f"{f_with:.3f}" in use["reason"] and f"{f_alone:.3f}" in use["reason"]


def test_classify_skips_the_detector_the_model_does_not_use(sample_train, robust_model, tmp_path):
    """Issue 4: a model whose YOLO did not sort better on its validation photos runs without it (no
    YOLO loaded, no detect time); ``use_detector=True`` (``--detector on``) brings it back, and faces
    stored without YOLO's are not taken for faces found with it."""
    import shutil

    from sorter.io.bundle import Bundle
    from sorter.pipeline.classify import classify_library
    from sorter.pipeline.recognise import FaceRecogniser
    from sorter.training.fit import fit_recogniser

    model = tmp_path / "model"
    shutil.copytree(robust_model.run_dir / "weights", model / "weights")
    images = [im for im in sample_train.images if len(im.boxes) <= 3][:8]
    fit_recogniser(sample_train, images, model / "recogniser.npz", target_precision=0.9, log=lambda m: None)
    b = Bundle(path=model, classes=sample_train.classes, imgsz=160, recogniser="recogniser.npz")
    b.per_class_threshold, b.per_class_low = FaceRecogniser(model / "recogniser.npz").thresholds
    b.use_detector = False
    b.save()
    bundle = Bundle.load(model)
    assert not bundle.runs_detector
    quiet = dict(progress=False, log=lambda m: None, workers=0)
    off = classify_library(SAMPLE / "test", tmp_path / "out", bundle, **quiet)
    assert off.photos == 20 and off.stage_seconds["recognise"] > 0 and "detect" not in off.stage_seconds
    on = classify_library(SAMPLE / "test", tmp_path / "out", bundle, use_detector=True, **quiet)
    assert on.reused == 0 and on.stage_seconds["detect"] > 0  # stored faces lack YOLO's: analysed anew
    again = classify_library(SAMPLE / "test", tmp_path / "out", bundle, use_detector=True, **quiet)
    assert again.reused == 20 and not again.stage_seconds.get("detect")


def test_yunet_on_openvino_finds_what_opencvs_facedetectoryn_finds(sample_train):
    """Issue 4: YuNet's network on OpenVINO with FaceDetectorYN's post-processing (padding, decoding,
    NMS) gives OpenCV's faces: same count, same order, same numbers."""
    import cv2

    from sorter.models.packaged import YUNET_FILE, YUNET_SHA256, packaged_model
    from sorter.models.yunet import _YuNetOpenVino

    path = packaged_model(YUNET_FILE, YUNET_SHA256)
    ours = _YuNetOpenVino(path, 0.02, threads=1)
    n = 0
    for img in sample_train.images[:10]:
        bgr = cv2.cvtColor(np.asarray(decode(_photo(img.image), max_side=640).rgb), cv2.COLOR_RGB2BGR)
        theirs = cv2.FaceDetectorYN.create(str(path), "", (bgr.shape[1], bgr.shape[0]), 0.02, 0.3, 5000)
        a, b = theirs.detect(bgr)[1], ours.detect(bgr)[1]
        a, b = (np.zeros((0, 15)) if x is None else x for x in (a, b))
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-3), img.image
        n += len(a)
    assert n >= 10


def test_older_recognisers_keep_the_face_detector_they_were_trained_with():
    from sorter.models.registry import MAX_SIDE, face_detector

    stored = YuNetDetector().settings()
    assert face_detector(stored).refine_passes == 2  # this version's
    assert face_detector().max_side == MAX_SIDE > stored["max_side"] == 640  # new models look closer...
    assert face_detector(stored).max_side == 640  # ...a model trained at 640 keeps it
    assert face_detector().yunet_precision == face_detector(stored).yunet_precision == "fast"
    for key in ("refine_passes", "refine_jitter", "yunet_precision"):  # from before averaged refinement
        stored.pop(key)
    old = face_detector(stored)
    assert (old.refine_passes, old.refine_jitter, old.yunet_precision) == (1, 0.0, "f32")


def test_yunet_at_the_cpus_fastest_precision_finds_the_faces_of_fp32(sample_train):
    """YuNet at OpenVINO's own precision (bf16 on a CPU that has it) finds the faces it finds at fp32,
    in the same places (on a CPU without bf16 the two are the same network)."""
    fast, f32 = YuNetDetector(threads=1), YuNetDetector(threads=1, yunet_precision="f32")
    n_fast = n_f32 = close = 0
    for img in sample_train.images:
        rgb = np.asarray(decode(_photo(img.image), max_side=640).rgb)
        a, b = fast.detect(rgb)[0], f32.detect(rgb)[0]
        n_fast, n_f32 = n_fast + len(a), n_f32 + len(b)
        close += sum(max((iou(x, y) for y in b), default=0.0) >= 0.7 for x in a)
    # a few borderline boxes of tiny faces may come and go; the faces are the same
    assert n_f32 >= 50 and abs(n_fast - n_f32) <= 0.03 * n_f32 and close >= 0.95 * n_fast


def test_onet_crops_beyond_the_photo_are_black():
    """A face at the photo's edge: ONet's crop is cut from a window around it, black beyond the edge,
    as from the photo padded with black (what the detector once did for every photo)."""
    from sorter.models.yunet import _cut48

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    pad = 100
    padded = np.zeros((120 + 2 * pad, 160 + 2 * pad, 3), np.uint8)
    padded[pad:-pad, pad:-pad] = img
    squares = np.array([[-30.5, 70.25, 96.0], [-28.0, 72.0, 96.0], [140.0, -20.0, 96.0]])
    for sq in squares:
        ours = _cut48(img, sq[None]).pop().astype(int)
        ref = _cut48(padded, (sq + [pad, pad, 0])[None]).pop().astype(int)
        assert np.abs(ours - ref).mean() < 1.0  # the same crop (to OpenCV's 1/32-px warp grid)
        assert ours[:, :8].max() == 0 if sq[0] < -20 else ours[:8].max() == 0  # black beyond the edge
    shared = _cut48(img, squares[:2])  # two squares of one face: one blurred window, the same crops
    for sq, crop in zip(squares[:2], shared, strict=True):
        assert np.abs(crop.astype(int) - _cut48(img, sq[None]).pop().astype(int)).mean() < 1.0
