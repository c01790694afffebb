"""Videos in the library (issue 14): sampled, tracked, sorted like photos; Live Photo MOVs follow
their still. Real files: videos written with cv2.VideoWriter from the face-mask sample's real photos
(CC0), sorted by mask state (no model needed)."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import cv2
import pytest

import sorter
from sorter.pipeline.decide import decide
from sorter.records import Face, Photo
from sorter.video import library as vlib

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "face-mask-sample" / "test"
MASKED, BARE = SAMPLE / "maksssksksss120.jpg", SAMPLE / "maksssksksss128.jpg"  # one face each
QUIET = {"progress": False, "workers": 0, "by": "mask"}


def write_video(path: Path, shots: list[tuple[Path, float]], fps: int = 10, fourcc: str = "mp4v") -> Path:
    """Each photo shown for its seconds (a frame counter drawn on, so frames differ)."""
    size = (300, 400)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert out.isOpened()
    for image, seconds in shots:
        still = cv2.resize(cv2.imread(str(image)), size)
        for k in range(int(seconds * fps)):
            frame = still.copy()
            cv2.putText(frame, str(k), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            out.write(frame)
    out.release()
    return path


def manifest(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return {Path(r["path"]).name: r for r in csv.DictReader(fh)}


def folders_of(out: Path, name: str) -> set[str]:
    return {p.parent.name for p in out.rglob(name) if p.is_file()}


def test_sample_times_follow_keyframes_within_bounds() -> None:
    # keyframes 0.2 s apart are thinned to one a second; a 10 s gap is filled by seeking
    keys = [0.0, 0.2, 0.4, 1.0, 1.2, 2.0, 12.0]
    times = vlib.sample_times(keys, 14.0)
    assert times[:3] == [0.0, 1.0, 2.0]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= vlib.MIN_GAP_S - 1e-9
    assert max(gaps) <= vlib.MAX_GAP_S + 1e-9
    assert times[-1] == 14.0 and 12.0 in times


def test_a_face_seen_in_one_sampled_frame_is_at_most_uncertain() -> None:
    photo = Photo(Path("v.mp4"), Path("v.mp4"), 1, 1)
    once = Face((0, 0, 10, 10), 0.9, {"ann": 0.99}, start_s=3.0, end_s=3.0)
    long = Face((0, 0, 10, 10), 0.9, {"ann": 0.99}, start_s=3.0, end_s=6.0)
    d = decide(photo, [once], {"ann": 0.9}, {"ann": 0.5})
    assert d.accepted == [] and d.uncertain == ["ann"] and "one sampled frame" in d.reason
    assert decide(photo, [long], {"ann": 0.9}, {"ann": 0.5}).accepted == ["ann"]


def test_videos_land_in_the_folders_their_faces_show(tmp_path: Path) -> None:
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    write_video(lib / "both.mp4", [(MASKED, 4), (BARE, 4)])
    write_video(lib / "masked.avi", [(MASKED, 4)], fourcc="MJPG")
    write_video(lib / "bare.mov", [(BARE, 5)])  # no still of this name: sorted as a video
    shutil.copy(MASKED, lib / "still.jpg")
    report = sorter.classify(lib, out, **QUIET)
    assert not report.problems and report.photos == 4
    assert folders_of(out, "both.mp4") == {"with_mask", "without_mask"}
    assert folders_of(out, "masked.avi") == {"with_mask"}
    assert folders_of(out, "bare.mov") == {"without_mask"}
    rows = manifest(out)
    assert (out / "with_mask" / "both.mp4").read_bytes() == (lib / "both.mp4").read_bytes()
    detail = json.loads(rows["both.mp4"]["faces_detail"])
    by_state = {d["mask"]: d for d in detail}
    assert by_state["with_mask"]["start_s"] < 4.0 <= by_state["without_mask"]["end_s"]
    assert by_state["with_mask"]["end_s"] <= by_state["without_mask"]["start_s"]
    assert all(d["end_s"] > d["start_s"] for d in detail)
    assert by_state["with_mask"]["score"] >= 0.5
    assert "start_s" not in json.loads(rows["still.jpg"]["faces_detail"])[0]  # photos: no times
    with sqlite3.connect(out / ".photosort-index.sqlite") as db:
        faces = json.loads(db.execute("SELECT faces FROM photos WHERE rel='both.mp4'").fetchone()[0])
    assert {f["mask"] for f in faces} >= {"with_mask", "without_mask"} and faces[0]["end_s"] is not None


def test_broken_videos_are_one_line_problems_and_the_run_goes_on(tmp_path: Path) -> None:
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    good = write_video(tmp_path / "good.mp4", [(MASKED, 3)])
    (lib / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated
    (lib / "garbage.mp4").write_bytes(bytes(range(256)) * 40)
    (lib / "empty.mov").write_bytes(b"")
    shutil.copy(good, lib / "good.mp4")
    shutil.copy(BARE, lib / "photo.jpg")
    lines: list[str] = []
    report = sorter.classify(lib, out, log=lines.append, **QUIET)
    bad = {p.path.name: str(p) for p in report.problems}
    assert set(bad) == {"cut.mp4", "garbage.mp4", "empty.mov"}
    for name, text in bad.items():
        assert "\n" not in text and name in text
    assert "truncated or damaged" in bad["cut.mp4"] and "video (MP4)" in bad["cut.mp4"]
    assert "not a video" in bad["garbage.mp4"]
    assert report.photos == 2 and folders_of(out, "good.mp4") == {"with_mask"}
    assert folders_of(out, "photo.jpg") == {"without_mask"}
    assert "unreadable / problems" in report.summary()
    assert sum("skipped" in line for line in lines) == 3
    assert report.exit_code == 3


def test_a_live_photo_mov_follows_its_still_and_is_not_analysed(tmp_path: Path, monkeypatch) -> None:
    lib, out = tmp_path / "lib", tmp_path / "out"
    (lib / "trip").mkdir(parents=True)
    shutil.copy(MASKED, lib / "trip" / "IMG_0001.JPG")
    # its motion shows a bare face: if the MOV were analysed it would go to without_mask/
    write_video(lib / "trip" / "img_0001.mov", [(BARE, 3)])
    write_video(lib / "trip" / "clip.mov", [(BARE, 4)])  # no still of that name: a video of its own
    analysed: list[str] = []
    real = vlib.read_frames
    monkeypatch.setattr(vlib, "read_frames", lambda p: analysed.append(p.name) or real(p))
    report = sorter.classify(lib, out, **QUIET)
    assert not report.problems and report.photos == 2
    assert analysed == ["clip.mov"]
    assert folders_of(out, "img_0001.mov") == folders_of(out, "IMG_0001.JPG") == {"with_mask"}
    assert (out / "with_mask" / "img_0001.mov").read_bytes() == (lib / "trip" / "img_0001.mov").read_bytes()
    rows = manifest(out)
    assert "img_0001.mov" not in rows
    assert "with_mask/img_0001.mov" in rows["IMG_0001.JPG"]["copies"].split(";")
    with sqlite3.connect(out / ".photosort-index.sqlite") as db:
        rels = {r[0] for r in db.execute("SELECT rel FROM photos")}
        copies = json.loads(
            db.execute("SELECT copies FROM photos WHERE rel='trip/IMG_0001.JPG'").fetchone()[0]
        )
    assert rels == {"trip/IMG_0001.JPG", "trip/clip.mov"}
    assert sorted(copies) == ["with_mask/IMG_0001.JPG", "with_mask/img_0001.mov"]

    # a re-run reuses the index: nothing is analysed again, the copies stay
    analysed.clear()
    again = sorter.classify(lib, out, **QUIET)
    assert analysed == [] and again.reused == 2 and not again.problems
    assert folders_of(out, "img_0001.mov") == {"with_mask"}
    assert folders_of(out, "clip.mov") == {"without_mask"}

    # the still changes its folder (a stricter threshold sends it to uncertain): its MOV moves with it
    strict = sorter.classify(lib, out, threshold=0.999, band=0.9, **QUIET)
    assert analysed == [] and not strict.problems
    assert folders_of(out, "img_0001.mov") == folders_of(out, "IMG_0001.JPG") == {"uncertain"}


@pytest.mark.parametrize("workers", [2])
def test_videos_sort_on_worker_processes(tmp_path: Path, workers: int) -> None:
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    for k in range(12):  # enough items for the pool (MIN_PHOTOS_PER_WORKER)
        shutil.copy(MASKED if k % 2 else BARE, lib / f"p{k}.jpg")
    write_video(lib / "both.mp4", [(MASKED, 4), (BARE, 4)])
    write_video(lib / "more.mp4", [(BARE, 4)])
    report = sorter.classify(lib, out, progress=False, workers=workers, by="mask")
    assert not report.problems and report.photos == 14
    assert folders_of(out, "both.mp4") == {"with_mask", "without_mask"}
    assert folders_of(out, "more.mp4") == {"without_mask"}
