"""The named errors of photosort. The CLI turns each into one ``Error: ...`` line and an exit status.

Only these are caught on purpose; anything else is a bug and shows its traceback.
"""

from __future__ import annotations


class PhotosortError(Exception):
    """A run could not start or go on; ``str()`` is the one-line message for the user."""

    exit_code = 1


class Interrupted(PhotosortError):
    """Stopped by the user (Ctrl-C) or a signal; finished work is kept and a re-run resumes."""

    exit_code = 130


class UnknownKind(PhotosortError):
    """A stored kind (of model, face detector, feature) this version does not know."""

    def __init__(self, what: str, kind: object, known: list[str]) -> None:
        super().__init__(
            f"unknown {what} {kind!r} (this photosort knows {', '.join(sorted(known))}); "
            "the model was probably made by a newer photosort: upgrade, or retrain with this one"
        )
        self.kind = kind
