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


def test_an_index_written_by_an_earlier_photosort_still_opens(tmp_path: Path) -> None:
    """Version 0 (no embed_key column, faces without mask state): its rows stay, the schema moves on,
    and its faces read with the mask state unknown rather than "unmasked"."""
    import json
    import sqlite3

    from sorter.io.index import SCHEMA_VERSION, Index

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE photos (rel TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
        " sha256 TEXT, model TEXT NOT NULL, faces TEXT, error TEXT, copies TEXT NOT NULL DEFAULT '[]')"
    )
    face = {"xyxy": [1, 2, 30, 40], "det_score": 0.9, "scores": {"ava": 0.8}, "masked": True}
    db.execute(
        "INSERT INTO photos VALUES (?,?,?,?,?,?,?,?)",
        ("a.jpg", 10, 20, "ab" * 32, "m1", json.dumps([face]), None, '["ava/a.jpg"]'),
    )
    db.commit()
    db.close()
    index = Index(path)
    hit = index.lookup("a.jpg", 10, 20, "m1")
    index.close()
    assert hit is not None and hit["copies"] == ["ava/a.jpg"]
    (f,) = hit["faces"]
    assert f.scores == {"ava": 0.8} and f.masked is True and f.mask is None and f.mask_score is None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "embed_key" in {r[1] for r in db.execute("PRAGMA table_info(photos)")}
