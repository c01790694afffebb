"""Issue 5, crash safety: SIGKILL at random moments, Ctrl-C, a second run on the same folder, a full disk.

Each interrupted run is a real process running the real CLI. Importing torch and ultralytics takes ~10 s
on a small machine, so most runs are forked from a "zygote" process that has imported them once: the
child is an ordinary separate process (its own files, its own SQLite connection) and is killed with a
real SIGKILL. The uninterrupted reference run is a plain ``python -m sorter classify``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synth
from conftest import library_state
from PIL import Image

from sorter.pipeline.classify import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, INDEX_FILE, LOCK_FILE

LOW = ["--threshold", "0.01", "--band", "0.005"]
N_PHOTOS = 30
KILL_TRIALS = 12
TEMP_MARKERS = (".photosort-tmp-", ".manifest.csv.tmp")

ZYGOTE = r"""
import json, os, sys
from sorter import offline
offline.prepare()
import torch, torchvision, ultralytics  # the slow part, done once
from ultralytics import YOLO
from sorter.cli import cli
print("ready", flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "run":
        pid = os.fork()
        if pid == 0:
            fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0)
            out = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC); os.dup2(out, 1); os.dup2(out, 2)
            code = 0
            try:
                cli.main(args=cmd["args"], prog_name="photosort")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback; traceback.print_exc(); code = 99
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
    elif cmd["op"] == "wait":
        _, status = os.waitpid(cmd["pid"], 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Zygote:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        assert self.proc.stdout.readline().strip() == "ready"
        self.n = 0

    def _ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, *args) -> tuple[int, Path]:
        self.n += 1
        log = self.tmp / f"run-{self.n}.log"
        return self._ask(op="run", args=[str(a) for a in args], log=str(log))["pid"], log

    def wait(self, pid: int) -> int:
        return self._ask(op="wait", pid=pid)["code"]

    def run(self, *args) -> tuple[int, str]:
        pid, log = self.start(*args)
        return self.wait(pid), log.read_text(errors="replace")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


@pytest.fixture(scope="module")
def reference(robust_model, tmp_path_factory):
    """A library with awkward names, and the output of one uninterrupted run of the real command."""
    base = tmp_path_factory.mktemp("crash")
    lib = base / "lib"
    synth.make_library(lib, N_PHOTOS - 4)
    # same name in two folders (different photos), and the same photo under two names
    shutil.copyfile(lib / "month1" / "IMG_0001.jpg", lib / "month0" / "IMG_0001.jpg")
    Image.open(lib / "month2" / "IMG_0002.jpg").rotate(90).save(lib / "month1" / "IMG_0002.jpg")
    shutil.copyfile(lib / "month0" / "IMG_0000.jpg", lib / "copy-of-0.jpg")
    (lib / "month0" / "IMG_9999.jpg").write_bytes(b"")  # one problem, so the exit code is 3
    out = base / "reference"
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sorter",
            "classify",
            lib,
            "--out",
            out,
            "--model",
            robust_model.run_dir,
            "--batch",
            "1",
            "-q",
            *LOW,
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 3, r.stderr
    result = snapshot(out)
    copies = [f for f in result[0] if not f.endswith("/") and f != "manifest.csv"]
    assert len(copies) >= N_PHOTOS // 2, "the low threshold should place copies (else nothing is compared)"
    return {
        "lib": lib,
        "model": robust_model.run_dir,
        "state": result,
        "seconds": time.perf_counter() - t0,
        "library": library_state(lib),
    }


def snapshot(out: Path) -> tuple[dict[str, str], list[list[str]]]:
    """(relative path -> sha256 of every file and folder but the state folder, manifest rows)."""
    files = {}
    for k, v in library_state(out).items():
        if k.split("/")[0].startswith(".photosort"):  # lock and index at the top
            continue
        files[k + ("/" if v[0] == "dir" else "")] = v[1] if v[0] == "file" else v[0]
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return files, rows


def classify_args(ref: dict, out: Path, *extra) -> list:
    # --workers 0: kills must land while copies are being made, not while worker processes start
    return [
        "classify",
        ref["lib"],
        "--out",
        out,
        "--model",
        ref["model"],
        "--batch",
        "1",
        "--workers",
        "0",
        "-q",
        *LOW,
        *extra,
    ]


def assert_only_complete_files(out: Path, ref: dict) -> None:
    """After a crash: any file under a final name is a whole copy of an original; temp names are hidden."""
    originals = {v[1] for v in ref["library"].values() if v[0] == "file"}
    for rel, v in library_state(out).items():
        name = rel.rsplit("/", 1)[-1]
        if v[0] != "file" or rel.startswith(".photosort") or name.startswith(TEMP_MARKERS):
            continue
        if rel == "manifest.csv":
            with open(out / rel, newline="") as fh:
                rows = list(csv.reader(fh))
            assert rows and rows[0][0] == "path" and all(len(r) == len(rows[0]) for r in rows), (
                "torn manifest"
            )
        else:
            assert v[1] in originals, f"{rel} is not a complete copy of any original"


def indexed(out: Path) -> int:
    db = out / INDEX_FILE
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            return con.execute("SELECT count(*) FROM photos").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(reference, zygote, tmp_path):
    ref = reference
    # When an uninterrupted forked run sorts its photos (first to last one indexed), so that kills
    # spread over that window: start-up alone varies more than a fast run's sorting takes.
    t0 = time.perf_counter()
    pid, log = zygote.start(*classify_args(ref, tmp_path / "timing"))
    first = last = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = indexed(tmp_path / "timing")
        if done and first is None:
            first = time.perf_counter() - t0
        if done >= N_PHOTOS:
            last = time.perf_counter() - t0
            break
        time.sleep(0.005)
    code = zygote.wait(pid)
    assert code == 3, log.read_text()
    assert first is not None and last is not None, log.read_text()
    assert snapshot(tmp_path / "timing") == ref["state"], "a forked run differs from the real command"
    span = last

    rng = random.Random(5)
    survived, mid_run = 0, 0
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"trial{trial}"
        kills = 2 if trial % 4 == 3 else 1  # some trials are killed twice before they finish
        for _ in range(kills):
            pid, log = zygote.start(*classify_args(ref, out))
            if trial % 3 == 0:  # a random moment of the whole run: start-up, sorting or the end
                time.sleep(rng.uniform(0.8 * first, last))
            else:
                # while photos are being sorted: once a random number of them is indexed (sorting
                # takes well under a second here, less than start-up varies, so a clock rarely hits it)
                target, deadline = rng.randint(1, N_PHOTOS - 1), time.monotonic() + 60
                while indexed(out) < target and time.monotonic() < deadline:
                    time.sleep(0.002)
            os.kill(pid, signal.SIGKILL)
            code = zygote.wait(pid)
            assert code in (-signal.SIGKILL, 3), (code, log.read_text())
            if out.exists():
                assert_only_complete_files(out, ref)
        done = indexed(out)
        mid_run += 0 < done < N_PHOTOS
        code, text = zygote.run(*classify_args(ref, out))
        assert code == 3, text
        assert "Traceback" not in text, text
        assert snapshot(out) == ref["state"], (
            f"trial {trial}: resumed output differs from an uninterrupted run"
        )
        assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_MARKERS)], "temp files remain"
        survived += 1
    assert library_state(ref["lib"]) == ref["library"], "originals altered"
    print(f"\nkill trials: {survived}/{KILL_TRIALS} survived, {mid_run} killed mid-run (span {span:.1f}s)")
    assert mid_run >= KILL_TRIALS // 4, f"only {mid_run} kills landed while photos were being sorted"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(reference, zygote, tmp_path):
    ref, out = reference, tmp_path / "out"
    pid, log = zygote.start(*classify_args(ref, out))
    deadline = time.monotonic() + 60
    while indexed(out) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGINT)
    code = zygote.wait(pid)
    text = log.read_text()
    assert code == EXIT_INTERRUPTED, text
    assert "run the same command again to resume" in text and "Traceback" not in text, text
    assert_only_complete_files(out, ref)
    code, text = zygote.run(*classify_args(ref, out))
    assert code == 3 and snapshot(out) == ref["state"], text
    assert library_state(ref["lib"]) == ref["library"]


def _locked(lock: Path) -> bool:
    """Is there a flock on this file (read from /proc/locks, without touching the lock)?"""
    if not lock.exists():
        return False
    st = lock.stat()
    needle = f":{st.st_ino} "
    return any("FLOCK" in line and needle in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_second_classify_on_the_same_folder_refuses_while_the_first_runs(reference, zygote, tmp_path):
    ref, out = reference, tmp_path / "out"
    first, log = zygote.start(*classify_args(ref, out))
    deadline = time.monotonic() + 60
    while not _locked(out / LOCK_FILE) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(first, signal.SIGSTOP)  # hold it mid-run, lock taken
    try:
        assert _locked(out / LOCK_FILE)
        second = subprocess.run(
            [sys.executable, "-m", "sorter", *map(str, classify_args(ref, out))],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == EXIT_FAILED, second.stderr
        assert "another photosort classify is already writing" in second.stderr
    finally:
        os.kill(first, signal.SIGCONT)
    assert zygote.wait(first) == 3, log.read_text()
    assert snapshot(out) == ref["state"], "the refused run disturbed the first one"


@pytest.fixture(params=["32k", "160k", "500k"])
def small_disk(request, tmp_path):
    """A tiny tmpfs: full when the index is created, after a few copies, or later (the index, often).

    Needs root (mount); skipped otherwise.
    """
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({r.stderr.strip()}); needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_gives_a_clear_error_and_a_resumable_state(reference, zygote, small_disk):
    ref, out = reference, small_disk / "sorted"
    code, text = zygote.run(*classify_args(ref, out))
    assert code == EXIT_FAILED, text
    assert "disk is full" in text and "run the same command again" in text, text
    assert "Traceback" not in text, text
    assert_only_complete_files(out, ref)
    assert indexed(out) < N_PHOTOS, "the disk should fill before the end"
    if "writing" in text:  # a copy failed: some photos were finished before
        assert indexed(out) > 0
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    code, text = zygote.run(*classify_args(ref, out))
    assert code == 3, text
    assert snapshot(out) == ref["state"], "resumed output differs from an uninterrupted run"
    assert library_state(ref["lib"]) == ref["library"]


def test_exit_code_zero_when_all_is_well(reference, zygote, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(reference["lib"] / "month2", lib)
    code, text = zygote.run(
        "classify", lib, "--out", tmp_path / "out", "--model", reference["model"], "-q", *LOW
    )
    assert code == EXIT_OK, text


def _workers_of(pid: int) -> list[int]:
    """Worker processes (multiprocessing spawn children) of ``pid`` that are still alive."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    out = []
    for k in kids:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(int(k))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _start_with_workers(ref: dict, out: Path) -> tuple[subprocess.Popen, list[str]]:
    """The real command with two worker processes, returned once both work and a photo is done."""
    args = [
        str(a)
        for a in ("classify", ref["lib"], "--out", out, "--model", ref["model"], "--workers", "2", "-q", *LOW)
    ]
    proc = subprocess.Popen([sys.executable, "-m", "sorter", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (len(_workers_of(proc.pid)) < 2 or indexed(out) < 1) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.01)
    return proc, args


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_worker_processes_stop_with_the_run(reference, tmp_path, sig):
    """With worker processes: Ctrl-C exits cleanly and resumably; a killed run takes its workers with it."""
    ref, out = reference, tmp_path / "out"
    proc, args = _start_with_workers(ref, out)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2 and indexed(out) >= 1, "the run never got going with two workers"
    os.kill(proc.pid, sig)
    code = proc.wait(timeout=60)
    text = proc.stderr.read() if proc.stderr else ""
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "worker processes outlived the run"
    if sig == signal.SIGINT:
        assert code == EXIT_INTERRUPTED and "run the same command again to resume" in text, text
        assert "Traceback" not in text, text
    else:
        assert code == -signal.SIGKILL
    assert_only_complete_files(out, ref)
    r = subprocess.run([sys.executable, "-m", "sorter", *args], capture_output=True, text=True)
    assert r.returncode == 3 and snapshot(out) == ref["state"], r.stderr
    assert library_state(ref["lib"]) == ref["library"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
def test_a_killed_worker_does_not_stop_the_run(reference, tmp_path):
    """A worker process dying (the OOM killer, say) costs time, not photos: the run goes on in-process
    and the result is exactly that of an undisturbed run."""
    ref, out = reference, tmp_path / "out"
    proc, args = _start_with_workers(ref, out)
    # Hold the main process while a worker is killed: on an idle machine the last 29 small photos take
    # well under a second, so without the pause the run may finish before the kill lands.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        assert indexed(out) < N_PHOTOS - 4, "the run finished before a worker could be killed"
        os.kill(_workers_of(proc.pid)[0], signal.SIGKILL)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    code = proc.wait(timeout=300)
    text = proc.stderr.read() if proc.stderr else ""
    assert code == 3 and "worker processes failed" in text and "Traceback" not in text, text
    assert snapshot(out) == ref["state"]
    assert library_state(ref["lib"]) == ref["library"]
