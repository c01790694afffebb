"""The Python API: the same three verbs as the command line.

import sorter
result = sorter.train("labelled/", name="daycare", epochs=30)
report = sorter.classify("Photos/", out="sorted/", model="runs/daycare")
metrics = sorter.evaluate("labelled-test/", model="runs/daycare")
learnt = sorter.learn("sorted/")          # after reviewing sorted/ (photosort review, or the file manager)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sorter.io.bundle import Bundle
from sorter.pipeline.classify import ClassifyReport, classify_library
from sorter.review.learn import LearnReport
from sorter.review.learn import learn as learn_from
from sorter.settings import ClassifySettings, TrainSettings
from sorter.training.evaluate import evaluate_model
from sorter.training.prelabel import PrelabelReport, prelabel_folder
from sorter.training.train import TrainResult, train_model


def train(
    data: str | Path, name: str = "photosort", runs_dir: str | Path = "runs", **settings: Any
) -> TrainResult:
    """Train on a labelImg folder; ``settings`` are :class:`sorter.settings.TrainSettings` fields."""
    return train_model(Path(data), name=name, runs_dir=Path(runs_dir), settings=TrainSettings(**settings))


def _bundle(model: str | Path | Bundle | TrainResult | None) -> Bundle | None:
    if model is None:
        return None
    if isinstance(model, TrainResult):
        return model.bundle
    return model if isinstance(model, Bundle) else Bundle.load(model)


def classify(
    library: str | Path,
    out: str | Path,
    model: str | Path | Bundle | TrainResult | None = None,
    **options: Any,
) -> ClassifyReport:
    """Copy each photo into ``out/<person>/`` for everyone recognised, unsure ones into ``out/uncertain/``.

    ``options``: :class:`sorter.settings.ClassifySettings` fields, and ``log`` (a function of one line).
    ``model`` None: by mask state (``by="mask"``) with the face detector and mask head that ship.
    """
    from sorter.video.library import analyse_video

    log = options.pop("log", None)
    settings = ClassifySettings(**options)
    return classify_library(Path(library), Path(out), _bundle(model), settings, log=log, video=analyse_video)


def evaluate(data: str | Path, model: str | Path | Bundle | TrainResult, **options: Any) -> dict[str, Any]:
    """Box and photo-level metrics of ``model`` on a labelled folder."""
    bundle = _bundle(model)
    assert bundle is not None, "evaluate needs a model"
    return evaluate_model(Path(data), bundle, **options)


def learn(out: str | Path, model: str | Path | None = None, undo: bool = False) -> LearnReport:
    """Refit the model ``out`` was sorted with from the teacher's corrections, then re-sort ``out``."""
    return learn_from(Path(out), None if model is None else Path(model), undo=undo)


def prelabel(
    photos: str | Path, model: str | Path | Bundle | TrainResult, fmt: str = "voc", log=print
) -> PrelabelReport:
    """Write labelImg files beside ``photos`` with ``model``'s predictions (never over existing labels)."""
    bundle = _bundle(model)
    assert bundle is not None, "prelabel needs a model"
    return prelabel_folder(Path(photos), bundle, fmt, log=log)
