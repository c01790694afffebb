"""photosort: sort a photo library into one folder per person, on your own machine.

The pipeline runs one way: scan -> decode -> detect -> recognise -> decide -> place.
Each stage is a module; small dataclasses in :mod:`sorter.records` carry data between them.

    import sorter
    run = sorter.train("labelled/", name="daycare")
    report = sorter.classify("Photos/", out="sorted/", model=run)
"""

from __future__ import annotations

__version__ = "0.1.0"

# The API functions share their names with the modules that implement them (sorter.training.train is both).
# Importing them here, after those modules, makes the package attribute the function for good.
# This stays light: torch, ultralytics and dlib are only imported inside functions, when first used.
from sorter.api import classify, evaluate, learn, train  # noqa: E402

__all__ = ["classify", "evaluate", "learn", "train", "__version__"]
