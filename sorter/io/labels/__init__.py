"""Read a labelImg folder (Pascal VOC, YOLO or CreateML) into a validated :class:`LabelledSet`.

Reading never writes under the user's folder (only `photosort prelabel` writes, through :mod:`.write`,
and never over an existing label). Each bad input becomes a
:class:`Problem` naming the file (and line where one is known) and the run goes on. A photo with any
bad box is left out entirely, because a face left unlabelled would teach the detector it is background.
All boxes come out in *displayed* pixels (EXIF orientation applied), clipped to the image. Things
worth a look that leave no photo out (a likely typo in a class name, a guessed encoding, classes with
no box) are ``LabelledSet.warnings``, shown by :func:`summary`.

One module per format (:mod:`.voc`, :mod:`.yolo`, :mod:`.createml`, each a function returning boxes
and problems), :mod:`.classes` for classes.txt, :mod:`.folder` for the walk and matching labels to
photos, :mod:`.reader` putting it together, :mod:`.checks` for the folder-wide class rules.
"""

from __future__ import annotations

from sorter.io.exif import TRANSPOSE_FOR_ORIENTATION, exif_orientation, to_displayed
from sorter.io.formats import IMAGE_SUFFIXES
from sorter.io.labels.reader import read_labelled
from sorter.io.labels.report import format_problems, summary

__all__ = [
    "IMAGE_SUFFIXES",
    "TRANSPOSE_FOR_ORIENTATION",
    "exif_orientation",
    "format_problems",
    "read_labelled",
    "summary",
    "to_displayed",
]
