"""Issue 16: classify's analyse step on Ray (``--backend ray``), on a real local Ray of two CPUs.

A small daycare library (real LFW faces, a trained recogniser, an unreadable file and a video) is sorted
once by the local backend; the Ray backend must produce the same copies and the same manifest, also when
one of its actors is killed mid-run, and when the driver itself is killed and the command run again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_crash import indexed, snapshot
from test_video_library import write_video

import sorter

QUIET = {"progress": False, "log": lambda m: None}


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                kids = [int(k) for k in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
                out += kids
                todo += kids
    return out


def _map_workers(pid: int) -> list[int]:
    """Ray Data's actors (``ray::MapWorker(...)``) among ``pid``'s descendants."""
    found = []
    for k in _descendants(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{k}/cmdline").read_bytes().startswith(b"ray::MapWorker"):
                found.append(k)
    return found


@pytest.fixture(scope="module")
def daycare(shared, tmp_path_factory):
    """A daycare library with an unreadable file and a video, a model trained on it, and the output
    of the local backend (the reference every Ray run must equal)."""
    base = tmp_path_factory.mktemp("ray")
    subprocess.run(
        [sys.executable, shared / "bench" / "make_library.py", "--lfw", shared / "data" / "lfw"]
        + ["--out", base / "daycare", "--seed", "4", "--labelled", "40", "--library", "48"]
        + ["--people", "3", "--size", "1024x768", "--jobs", "2"],
        check=True,
        capture_output=True,
    )
    lib = base / "daycare" / "library"
    stills = sorted(lib.rglob("*.jpg"))
    write_video(lib / "clip.mp4", [(stills[0], 2), (stills[1], 2)])
    (lib / "broken.jpg").write_bytes(b"not a jpeg")
    model = sorter.train(
        base / "daycare" / "labelled", name="m", runs_dir=base / "runs", epochs=1, imgsz=320, wandb="off"
    ).run_dir
    lines: list[str] = []
    report = sorter.classify(lib, base / "local", model, progress=False, workers=2, log=lines.append)
    state = snapshot(base / "local")
    assert report.photos == 49 and len(report.problems) == 1, report.summary()
    assert report.per_person and sum(1 for f in state[0] if f.endswith(".jpg")) > 20, report.summary()
    assert any(row[0].endswith("clip.mp4") for row in state[1]), "the video was not sorted"
    return {"lib": lib, "model": model, "state": state, "lines": lines, "base": base}


@pytest.fixture(scope="module")
def local_ray():
    """A real Ray of two CPUs in this process; classify joins it (and leaves it running)."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.shared
def test_ray_sorts_exactly_like_the_local_backend(daycare, local_ray, tmp_path):
    lines: list[str] = []
    out = tmp_path / "ray"
    report = sorter.classify(
        daycare["lib"], out, daycare["model"], backend="ray", progress=False, log=lines.append
    )
    assert report.photos == 49 and report.reused == 0
    assert snapshot(out) == daycare["state"]  # byte-identical copies in the same folders, same manifest
    assert lines == daycare["lines"] and len([m for m in lines if m.startswith("skipped ")]) == 1
    assert {"decode", "recognise"} <= set(report.stage_seconds), "the actors' timings did not come back"


@pytest.mark.shared
def test_a_killed_actor_loses_no_photo(daycare, local_ray, tmp_path):
    """SIGKILL one of Ray Data's actors once the first photos are committed: Ray replaces it, its
    unfinished batch is analysed again, and the result is exactly the undisturbed one."""
    out = tmp_path / "ray"
    killed: dict[str, int] = {}

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = _map_workers(os.getpid())
            if len(workers) == 2 and indexed(out) >= 4:
                killed["at"] = indexed(out)
                os.kill(workers[0], signal.SIGKILL)
                killed["pid"] = workers[0]
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    try:
        report = sorter.classify(daycare["lib"], out, daycare["model"], backend="ray", **QUIET)
    finally:
        killer.join()
    assert "pid" in killed, "no actor was killed"
    assert killed["at"] < 40, f"the kill came too late to test anything ({killed['at']} photos done)"
    assert report.photos == 49
    assert snapshot(out) == daycare["state"]


@pytest.mark.shared
def test_resume_after_the_driver_is_killed(daycare, tmp_path):
    """The real command (its own local Ray), SIGKILLed mid-run; the same command again resumes: the
    photos already committed are reused from the index, not analysed again, and the output equals a
    clean run's. The killed run's actors die with it."""
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    args = [sys.executable, "-m", "sorter", "classify", daycare["lib"], "--out", out]
    args += ["--model", daycare["model"], "--backend", "ray", "-q"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while indexed(out) < 8 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    actors = _map_workers(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    done = indexed(out)
    assert actors and 8 <= done < 45, f"killed with {done} photos done, actors {actors}"
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{a}").exists() for a in actors) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [a for a in actors if Path(f"/proc/{a}").exists()], "actors outlived the killed run"
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 3, again.stderr  # 3: done, with the one unreadable file listed
    reused = int(re.search(r"(\d+) reused from the index", again.stdout).group(1))
    assert reused >= done, again.stdout
    assert snapshot(out) == daycare["state"]


def test_backend_ray_without_ray_says_how_to_install(tmp_path):
    """The real CLI in a Python where ``import ray`` fails: one line, the install command, nothing made."""
    block = tmp_path / "no-ray"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # import ray fails\n")
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(block), os.environ.get("PYTHONPATH")]))
    }
    lib = tmp_path / "lib"
    lib.mkdir()
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "sorter", "classify", lib, "--out", out, "--by", "mask", "--backend", "ray"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: --backend ray needs Ray, which is not installed here: pip install 'photosort[ray]'"
    ]
    assert not out.exists()
