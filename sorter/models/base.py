"""One way to hold a network: loaded on first use, once, under a lock (immich's ``InferenceModel``).

Nothing heavy happens at import or construction, so importing :mod:`sorter` stays fast, a missing
optional package only fails the run that needs it, and an unloaded model pickles cheaply into a worker.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

M = TypeVar("M", bound="LazyModel")

_GUARD = threading.Lock()  # only to create each model's own lock once


class LazyModel:
    """Subclasses implement :meth:`_load` (set up the network) and :meth:`_is_loaded`."""

    def _load(self) -> None:
        raise NotImplementedError

    def _is_loaded(self) -> bool:
        raise NotImplementedError

    def load(self: M) -> M:
        if not self._is_loaded():
            with self._model_lock():
                if not self._is_loaded():
                    self._load()
        return self

    def _model_lock(self) -> threading.Lock:
        with _GUARD:
            lock = self.__dict__.get("_lazy_lock")
            if lock is None:
                lock = self.__dict__["_lazy_lock"] = threading.Lock()
        return lock

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lazy_lock", None)  # locks do not pickle; a copy gets its own on first load
        return state
