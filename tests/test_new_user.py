"""What a new user trips on (issue 11): bad values refused, empty evaluations refused, clear errors
for models made by a newer photosort, faces counted as a person would count them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from sorter.cli import cli
from sorter.errors import UnknownKind
from sorter.io.manifest import counted_faces
from sorter.models.registry import face_detector
from sorter.models.yolo import YoloDetector
from sorter.pipeline.features import Featuriser
from sorter.records import Decision, Face, Photo
from sorter.settings import ClassifySettings, SettingsError, TrainSettings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "2"], "Invalid value for '--threshold': 2.0 is not in the range 0.0<=x<=1.0."),
        (["--band", "-0.1"], "Invalid value for '--band': -0.1 is not in the range 0.0<=x<=1.0."),
    ],
)
def test_classify_refuses_values_outside_0_1(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "lib").mkdir()
    res = CliRunner().invoke(cli, ["classify", str(tmp_path / "lib"), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert message in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClassifySettings(threshold=2.0), "--threshold must be between 0 and 1 (got 2)"),
        (lambda: ClassifySettings(band=1.5), "--band must be between 0 and 1 (got 1.5)"),
        (lambda: ClassifySettings(precision=0.2), "--precision must be between 0.5 and 1 (got 0.2)"),
        (lambda: ClassifySettings(workers=-1), "--workers must be 0 or more (got -1)"),
        (lambda: TrainSettings(threshold=-1.0), "--threshold must be between 0 and 1 (got -1)"),
        (lambda: TrainSettings(epochs=0), "--epochs must be at least 1 (got 0)"),
    ],
)
def test_settings_refuse_values_out_of_range(make, message: str) -> None:
    with pytest.raises(SettingsError) as exc:
        make()
    assert str(exc.value) == message


def test_api_classify_refuses_a_threshold_of_2(tmp_path: Path, robust_model) -> None:
    import sorter

    (tmp_path / "lib").mkdir()
    with pytest.raises(SettingsError, match="--threshold must be between 0 and 1"):
        sorter.classify(tmp_path / "lib", tmp_path / "out", robust_model, threshold=2.0)


def test_evaluate_without_labels_says_so_and_fails(tmp_path: Path, robust_model) -> None:
    data = tmp_path / "unlabelled"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 48), (i * 90, 80, 120)).save(data / f"p{i}.jpg")
    res = CliRunner().invoke(
        cli, ["evaluate", str(data), "--model", str(robust_model.run_dir), "--wandb", "off"]
    )
    assert res.exit_code == 1
    assert f"Error: {data}: no labels found" in res.output


@pytest.mark.parametrize(
    "make",
    [
        lambda: face_detector({"kind": "retinaface", "max_side": 640}),
        lambda: Featuriser("arcface512"),
        lambda: YoloDetector(weights=Path("w"), classes=["a"], device="cpu", backend="tensorrt").load(),
    ],
    ids=["face detector", "features", "detector backend"],
)
def test_unknown_stored_kinds_are_refused_clearly(make) -> None:
    with pytest.raises(UnknownKind, match="made by a newer photosort"):
        make()


def test_old_face_detector_settings_still_load() -> None:
    """Recognisers from before YuNet stored MTCNN's settings without a kind: still MTCNN."""
    det = face_detector({"thresholds": [0.3, 0.4, 0.2], "min_face_size": 12, "max_side": 640})
    assert type(det).__name__ == "MtcnnDetector"


def test_manifest_counts_faces_not_candidates() -> None:
    """A photo with 3 faces and 25 weak candidates (the face detector keeps proposals down to 0.02,
    which the recogniser then scores as strangers) counts 3 faces."""
    faces = [Face(xyxy=(0, 0, 1, 1), det_score=0.95, scores={"ava": 0.1}) for _ in range(2)]
    faces.append(Face(xyxy=(0, 0, 1, 1), det_score=0.3, scores={"ava": 0.9}))  # weak, but Ava
    faces += [Face(xyxy=(0, 0, 1, 1), det_score=0.05, scores={"ava": 0.01}) for _ in range(25)]
    photo = Photo(path=Path("x.jpg"), rel=Path("x.jpg"), size=1, mtime_ns=1)
    d = Decision(photo=photo, faces=faces, people={"ava": 0.9}, accepted=["ava"], uncertain=[], reason="")
    assert counted_faces(d) == 3
