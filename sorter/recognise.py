"""Stage 4: who is each face. Without a trained recogniser, the detector's class scores stand."""

from __future__ import annotations

from typing import Protocol

from sorter.bundle import Bundle
from sorter.records import Decoded, Face


class Recogniser(Protocol):
    def recognise(self, image: Decoded, faces: list[Face]) -> list[Face]: ...


def load_recogniser(bundle: Bundle) -> Recogniser | None:
    if not bundle.recogniser:
        return None
    raise NotImplementedError("recogniser bundles are not supported yet")
