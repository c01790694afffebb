"""photosort: sort a photo library into one folder per person, on your own machine.

The pipeline runs one way: scan -> decode -> detect -> recognise -> decide -> place.
Each stage is a module; small dataclasses in :mod:`sorter.records` carry data between them.

    import sorter
    run = sorter.train("labelled/", name="daycare")
    report = sorter.classify("Photos/", out="sorted/", model=run)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["classify", "evaluate", "train", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must stay instant and must not import torch/ultralytics.
    if name in ("classify", "evaluate", "train"):
        from sorter import api

        return getattr(api, name)
    raise AttributeError(name)
