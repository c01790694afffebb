"""Issue 5, privacy: train, classify and evaluate work with the network cut off, and never try to use it.

Three layers, each used when the machine allows it:
  * an audit hook in every Python process (sitecustomize) records and refuses any internet socket use;
  * ``unshare --net`` runs the commands in an empty network namespace (root);
  * ``strace`` records every connect/sendto of every process, including wandb's Go service.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import synth

SITECUSTOMIZE = r"""
import os, socket, sys

_LOG = os.environ["PHOTOSORT_NET_LOG"]


def _record(what):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()} {what}\n")


def _hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, addr = args[0], args[-1]
        if getattr(sock, "family", None) == socket.AF_UNIX:
            return
        _record(f"{event} {addr!r}")
        raise OSError(101, "network blocked by the photosort privacy test")
    if event.startswith(("socket.getaddrinfo", "socket.gethostby")):
        _record(f"{event} {args[0]!r}")
        raise OSError(-3, "name resolution blocked by the photosort privacy test")


sys.addaudithook(_hook)
"""


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


UNSHARE = shutil.which("unshare") is not None and _works(["unshare", "--net", "true"])
STRACE = shutil.which("strace") is not None and _works(
    ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o", os.devnull, "true"]
)
INET = re.compile(r"\b(connect|sendto|sendmsg)\(.*(AF_INET6?|sin6?_addr)")


def blocked_env(tmp: Path) -> dict[str, str]:
    """A fresh user: own home, own photosort home, none of our offline switches pre-set."""
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WANDB_", "YOLO_", "OPENVINO_", "HF_", "PHOTOSORT_")) and k != "TORCH_HOME"
    }
    env |= {
        "PYTHONPATH": str(site),
        "PHOTOSORT_NET_LOG": str(tmp / "python-net.log"),
        "PHOTOSORT_HOME": str(tmp / "photosort-home"),
        "HOME": str(tmp / "home"),
    }
    (tmp / "home").mkdir()
    return env


def offline_run(args: list, tmp: Path, env: dict, tag: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(args if args[0] == "-c" else ["-m", "sorter", *map(str, args)])]
    if STRACE:
        cmd = [
            "strace",
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg",
            "-o",
            str(tmp / f"strace-{tag}.log"),
            *cmd,
        ]
    if UNSHARE:
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp)


@pytest.mark.slow
def test_train_classify_evaluate_with_the_network_blocked(tmp_path):
    data = synth.make_labelled(tmp_path / "labelled", 16)
    lib = tmp_path / "library"
    synth.make_library(lib, 6)
    runs, out = tmp_path / "runs", tmp_path / "sorted"
    env = blocked_env(tmp_path)

    steps = {
        "train": [
            "train",
            data,
            "--name",
            "private",
            "--runs",
            runs,
            "--epochs",
            "1",
            "--imgsz",
            "96",
            "--batch",
            "8",
        ],
        "classify": [
            "classify",
            lib,
            "--out",
            out,
            "--model",
            runs / "private",
            "-q",
            "--threshold",
            "0.01",
            "--band",
            "0.005",
        ],
        "evaluate": ["evaluate", data, "--model", runs / "private"],
        # no model at all: the face detector (ONet exported into photosort's cache) and the mask head
        "classify-by-mask": ["classify", lib, "--out", tmp_path / "by-mask", "--by", "mask", "-q"],
    }
    for tag, args in steps.items():
        r = offline_run(args, tmp_path, env, tag)
        assert r.returncode == 0, f"{tag} failed offline:\n{r.stdout}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr[-3000:]

    # the detectors themselves work: a deliberate connection is seen by every layer, and fails
    probe = (
        "import socket\ntry:\n socket.create_connection(('example.com', 80), timeout=3)\n"
        "except OSError:\n pass"
    )
    offline_run(["-c", probe], tmp_path, env, "probe")
    assert "getaddrinfo 'example.com'" in (tmp_path / "python-net.log").read_text()
    (tmp_path / "python-net.log").unlink()
    if STRACE:
        # the hook refused the lookup, so the raw probe goes below Python: glibc's resolver
        raw = "import ctypes; ctypes.CDLL(None).gethostbyname(b'example.com')"
        offline_run(["-c", raw], tmp_path, env, "probe")
        assert any(INET.search(x) for x in (tmp_path / "strace-probe.log").read_text().splitlines())

    python_attempts = (
        (tmp_path / "python-net.log").read_text() if (tmp_path / "python-net.log").exists() else ""
    )
    assert python_attempts == "", f"Python code tried the network:\n{python_attempts}"
    if STRACE:
        attempts = [
            line
            for tag in steps
            for line in (tmp_path / f"strace-{tag}.log").read_text().splitlines()
            if INET.search(line)
        ]
        assert attempts == [], "a process tried the network:\n" + "\n".join(attempts[:20])

    # wandb: offline by default, in the run folder, and no images without --wandb-images
    wandb_dir = runs / "private" / "wandb"
    assert list(wandb_dir.glob("offline-run-*")) and not list(wandb_dir.glob("run-*")), "wandb went online"
    assert list((runs / "private" / "evaluations").rglob("offline-run-*")), "evaluate logs offline too"
    media = [p for p in (runs / "private").rglob("*") if "wandb" in p.parts and p.suffix in (".png", ".jpg")]
    assert media == [], f"images logged without --wandb-images: {media}"
    # ultralytics' own settings in our home: no sync (its telemetry), no hub, no other loggers
    settings = json.loads(
        (tmp_path / "photosort-home" / "ultralytics" / "Ultralytics" / "settings.json").read_text()
    )
    assert settings["sync"] is False and settings["wandb"] is False
    assert len((out / "manifest.csv").read_text().splitlines()) == 1 + 6, "every photo classified"
    print(f"\nnetwork layers: audit hook, unshare={UNSHARE}, strace={STRACE}; connections attempted: 0")


def test_telemetry_switches_are_off_in_process():
    """After offline.prepare(): ultralytics events off, OpenVINO telemetry unimportable, wandb offline."""
    from sorter import offline

    offline.prepare()
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.events import events

    assert SETTINGS["sync"] is False and not events.enabled
    assert os.environ["YOLO_OFFLINE"] == "true" and os.environ["YOLO_AUTOINSTALL"] == "false"
    assert os.environ["WANDB_MODE"] == "offline"
    # OpenVINO's converter falls back to its no-op telemetry stub: the real package cannot be imported.
    import importlib

    with pytest.raises(ImportError):
        importlib.import_module("openvino_telemetry")
    from openvino.tools.ovc import telemetry_utils

    assert telemetry_utils.tm.__name__.endswith("telemetry_stub")
    assert os.environ["WANDB_ERROR_REPORTING"] == "false" and os.environ["HF_HUB_OFFLINE"] == "1"
