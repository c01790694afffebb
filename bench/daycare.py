"""The benchmarks' one way to build a make_library.py daycare library (``../shared``), once per folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def make_library(
    out: Path,
    seed: int,
    labelled: int,
    library: int,
    *extra: str,
    lfw: Path | None = None,
    quiet: bool = False,
) -> Path:
    """``out``, built by make_library.py (``--jobs 2``, ``extra`` arguments after) unless its truth.csv
    is already there (a re-run reuses it: every photo follows from the seed)."""
    if not (out / "truth.csv").is_file():
        subprocess.run(
            [sys.executable, str(SHARED / "bench" / "make_library.py")]
            + ["--lfw", str(lfw or SHARED / "data" / "lfw"), "--out", str(out), "--seed", str(seed)]
            + ["--labelled", str(labelled), "--library", str(library), *extra, "--jobs", "2"],
            check=True,
            stdout=subprocess.DEVNULL if quiet else None,
        )
    return out
