"""What the user reads about a :class:`LabelledSet`: its problems and a summary."""

from __future__ import annotations

from sorter.records import LabelledSet, Problem


def format_problems(problems: list[Problem]) -> str:
    """One line per problem: ``path[:line]: message``."""
    return "\n".join(str(p) for p in problems)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def summary(ls: LabelledSet) -> str:
    """E.g. ``312 photos (12 without boxes), 1,204 boxes in 9 classes; 3 problems``.

    With warnings (:mod:`sorter.io.labels.checks`) the line ends in their count and each follows on a
    line of its own: ``warning: path: message``.
    """
    negatives = sum(1 for im in ls.images if not im.boxes)
    boxes = sum(len(im.boxes) for im in ls.images)
    line = (
        f"{_plural(len(ls.images), 'photo')} ({negatives:,} without boxes), "
        f"{_plural(boxes, 'box', 'boxes')} in {_plural(len(ls.classes), 'class', 'classes')}; "
        f"{_plural(len(ls.problems), 'problem')}"
    )
    if not ls.warnings:
        return line
    return "\n".join(
        [f"{line}, {_plural(len(ls.warnings), 'warning')}", *(f"warning: {w}" for w in ls.warnings)]
    )
