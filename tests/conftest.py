"""Shared fixtures. Real components only: real training, real files, real SQLite, real wandb offline."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE = ROOT / "datasets" / "face-mask-sample"
sys.path.insert(0, str(Path(__file__).parent))  # for `import synth`

# Keep ultralytics/wandb state out of the user's home and off the network, before anything imports them.
os.environ.setdefault("PHOTOSORT_HOME", tempfile.mkdtemp(prefix="photosort-test-home-"))
os.environ.setdefault("WANDB_MODE", "offline")


def pytest_collection_modifyitems(config, items):
    if SHARED.is_dir() and (SHARED / "bench" / "make_library.py").is_file():
        return
    skip = pytest.mark.skip(reason=f"needs ../shared (data and bench tools), not present at {SHARED}")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def synth_model(tmp_path_factory):
    """A detector trained for real on synthetic discs; good enough to place copies in class folders."""
    import synth

    import sorter

    base = tmp_path_factory.mktemp("synth")
    data = synth.make_labelled(base / "labelled", 64)
    result = sorter.train(
        data,
        name="synth",
        runs_dir=base / "runs",
        epochs=40,
        imgsz=192,
        batch=16,
        wandb="offline",
        recogniser=False,  # discs are not faces: this fixture tests the detector path
        # SGD at 0.02 for 40 epochs: mAP50-95 0.86, scores 0.25-0.9 on discs. AdamW at 0.005 for 25
        # epochs reached 0.15 on one CPU and, on an AVX-512/AMX one whose kernels round differently,
        # a model scoring every box 0.005 (mAP50-95 0.08): too close to the edge to test with.
        extra=dict(warmup_epochs=0, optimizer="SGD", lr0=0.02, mosaic=0.0, close_mosaic=0),
    )
    return result


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under root (for 'originals unchanged' checks)."""
    from sorter.io.decode import sha256_file

    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts and rel.parts[0] in skip:
            continue
        if p.is_file() and not p.is_symlink():
            out[rel.as_posix()] = sha256_file(p)
    return out


@pytest.fixture(scope="session")
def robust_model(tmp_path_factory):
    """One small real model for the robustness/crash tests: it detects little, which is fine there."""
    import synth

    import sorter

    base = tmp_path_factory.mktemp("robust")
    data = synth.make_labelled(base / "labelled", 24)
    # recogniser=False: the detector path, whose low review band makes copies happen
    return sorter.train(
        data,
        name="robust",
        runs_dir=base / "runs",
        epochs=2,
        imgsz=160,
        wandb="off",
        batch=8,
        recogniser=False,
    )


def library_state(root: Path) -> dict[str, tuple]:
    """Everything about the files under root that classify must never change: bytes, mode, mtime, links.

    Works on non-UTF-8 names, unreadable files (stat only) and symlinks (their target, not followed).
    """
    import hashlib

    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs + files:
            p = os.path.join(folder, name)
            rel = os.path.relpath(p, os.fsencode(root))
            st = os.lstat(p)
            if os.path.islink(p):
                out[os.fsdecode(rel)] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[os.fsdecode(rel)] = ("dir", st.st_mode)
            else:
                try:
                    with open(p, "rb") as fh:
                        digest = hashlib.sha256(fh.read()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
                out[os.fsdecode(rel)] = ("file", digest, st.st_size, st.st_mode, st.st_mtime_ns)
    return out


def make_files(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``{relative path: text or bytes}`` under root (label tests build folders this way)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root
