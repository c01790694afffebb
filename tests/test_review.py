"""The review loop (issue 13): the page's store and server, corrections by file manager, learn.

Real components: a recogniser trained on real LFW faces (through ../shared's make_library), real
classify output folders, real SQLite, a real HTTP server on 127.0.0.1 (and a real Chromium in
test_review_page.py).
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED, tree_digest

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def daycare(tmp_path_factory):
    """A small daycare library (3 children, 30 labelled photos), a model trained on it, and a sorting."""
    import sorter

    base = tmp_path_factory.mktemp("review")
    lib = base / "daycare"
    subprocess.run(
        [sys.executable, str(SHARED / "bench" / "make_library.py"), "--lfw", str(SHARED / "data" / "lfw")]
        + ["--out", str(lib), "--seed", "11", "--people", "3", "--labelled", "30", "--library", "40"]
        + ["--jobs", "2"],
        check=True,
        capture_output=True,
    )
    result = sorter.train(
        lib / "labelled", name="m", runs_dir=base / "runs", epochs=1, imgsz=160, batch=8, wandb="off"
    )
    return lib, result.bundle.path


def sorted_copy(daycare, tmp_path: Path) -> Path:
    """A fresh sorting of the library by a fresh copy of the model (tests change both)."""
    import sorter

    lib, model = daycare
    run = tmp_path / "model"
    shutil.copytree(model, run)
    out = tmp_path / "sorted"
    sorter.classify(lib / "library", out, model=run, progress=False, log=lambda m: None)
    return out


def truth(lib: Path) -> dict[str, set[str]]:
    from sorter.io.decode import sha256_file

    with open(lib / "truth.csv", encoding="utf-8") as fh:
        return {
            sha256_file(lib / "library" / r["path"]): {p for p in r["people"].split(";") if p}
            for r in csv.DictReader(fh)
        }


def test_file_manager_corrections_stand_and_learn_refits(daycare, tmp_path):
    import sorter
    from sorter.io.bundle import Bundle
    from sorter.io.corrections import Corrections
    from sorter.io.decode import sha256_file
    from sorter.pipeline.classify import INDEX_FILE
    from sorter.review.learn import learn

    lib, _ = daycare
    out = sorted_copy(daycare, tmp_path)
    run = tmp_path / "model"
    who = truth(lib)
    people = Bundle.load(run).classes
    # 1. delete a copy of a photo from a person's folder where that person really is not, or any copy
    person_dir = next(out / p for p in people if (out / p).is_dir() and any((out / p).iterdir()))
    victim = sorted(person_dir.iterdir())[0]
    victim_sha = sha256_file(victim)
    victim.unlink()
    # 2. put a photo of no known person (a stranger) into a new folder: a new person
    with open(out / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    nobody = next(r for r in rows if r["status"] == "no_person" and int(r["faces"] or 0) == 1)
    newkid = out / "Zed"
    newkid.mkdir()
    shutil.copy2(lib / "library" / nobody["path"], newkid / "zed1.jpg")
    before_model = tree_digest(run)

    # classify again before learn: the teacher's changes stand (the deleted copy is not put back)
    sorter.classify(lib / "library", out, model=run, progress=False, log=lambda m: None)
    assert not victim.exists()
    assert (newkid / "zed1.jpg").exists()
    c = Corrections(out / INDEX_FILE)
    said = {(x.sha256, x.verdict, x.person) for x in c.active()}
    c.close()
    assert (victim_sha, "not", person_dir.name) in said
    assert (nobody["sha256"], "is", "Zed") in said

    report = learn(out, log=lambda m: None)
    assert report.used >= 2, report.summary()
    assert "Zed" in report.new_people and report.faces_added["Zed"] == 1
    assert report.resort is not None and not report.resort.problems
    assert "Zed" in Bundle.load(run).classes
    assert not victim.exists(), "learn's re-sort put back a copy the teacher deleted"
    assert any(sha256_file(p) == nobody["sha256"] for p in newkid.iterdir())
    assert (run / "versions" / "1" / "recogniser.npz").is_file()
    # the whole sorting is still right where the truth is known (the teacher's word changed 2 photos)
    with open(out / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    wrong = [r for r in rows if set(filter(None, r["accepted"].split(";"))) - who[r["sha256"]] - {"Zed"}]
    assert len(wrong) <= 2, wrong

    # nothing new: learn says so and changes nothing
    again = learn(out, log=lambda m: None)
    assert again.used == 0 and "nothing new" in again.summary()

    # --undo puts the model back byte for byte and re-sorts
    undone = learn(out, undo=True, log=lambda m: None)
    assert undone.undone and undone.round == 1
    assert tree_digest(run, skip=("versions",)) == {k: v for k, v in before_model.items()}
    with pytest.raises(Exception, match="no earlier version"):
        learn(out, undo=True, log=lambda m: None)


def _request(server, method: str, path: str, body=None, headers=None, host: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    h = {"Host": host or f"127.0.0.1:{server.port}"}
    h.update(headers or {})
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, payload


def test_review_server_refuses_what_is_not_its_own(daycare, tmp_path):
    from sorter.pipeline.classify import INDEX_FILE
    from sorter.review.server import Review, ReviewServer

    out = sorted_copy(daycare, tmp_path)
    server = ReviewServer(Review(out)).start()
    try:
        t = server.token
        assert server.httpd.server_address[0] == "127.0.0.1"
        ok, page = _request(server, "GET", f"/?t={t}")
        assert ok == 200 and b"photosort review" in page and b"http" not in page.split(b"<body")[0].lower()
        assert _request(server, "GET", "/")[0] == 403  # no token
        assert _request(server, "GET", "/?t=" + "x" * len(t))[0] == 403  # a wrong one
        assert _request(server, "GET", f"/?t={t}", host="evil.example:80")[0] == 403  # DNS rebinding
        assert _request(server, "GET", f"/api/state?t={t}", host=f"attacker:{server.port}")[0] == 403
        for path in ("/../bundle.json", "/crop/../../etc/passwd.jpg", "/etc/passwd", "/" + INDEX_FILE):
            assert _request(server, "GET", f"{path}?t={t}")[0] == 404, path
        status, state = _request(server, "GET", f"/api/state?t={t}")
        state = json.loads(state)
        assert status == 200 and state["people"]
        faces = state["doubts"] or [f for c in state["new"] for f in c]
        some = faces[0]["id"] if faces else None
        body = {"faces": [some or "x"], "verdict": "skip"}
        # the API takes its token from a header only (a form on another site cannot set one)
        assert _request(server, "POST", f"/api/decide?t={t}", body)[0] == 403
        hdr = {"X-Photosort-Token": t}
        evil = {**hdr, "Origin": "http://evil.example"}
        assert _request(server, "POST", "/api/decide", body, evil)[0] == 403
        assert _request(server, "POST", "/api/decide", body, {**hdr, "Content-Type": "text/plain"})[0] == 415
        bad = {"faces": ["nope-0"], "verdict": "skip"}
        assert _request(server, "POST", "/api/decide", bad, hdr)[0] == 404
        if some:
            weird = {"faces": [some], "verdict": "is", "person": "../../etc"}
            assert _request(server, "POST", "/api/decide", weird, hdr)[0] == 400
            status, got = _request(server, "POST", "/api/decide", body, hdr)
            assert status == 200 and json.loads(got)["ok"]
            status, img = _request(server, "GET", f"/crop/{some}.jpg?t={t}")
            assert status == 200 and img[:2] == b"\xff\xd8"
        assert _request(server, "DELETE", f"/api/state?t={t}")[0] == 405
    finally:
        server.stop()


def test_page_decisions_are_stored_at_once_and_learnt(daycare, tmp_path):
    from sorter.io.corrections import Corrections
    from sorter.pipeline.classify import INDEX_FILE
    from sorter.review.learn import learn
    from sorter.review.server import Review

    lib, _ = daycare
    out = sorted_copy(daycare, tmp_path)
    who = truth(lib)
    review = Review(out)
    q = review.queue(fresh=True)
    items = q.doubts + [it for c in q.new for it in c] + [it for v in q.accepted.values() for it in v]
    assert items, "nothing on the page at all"
    # settle every doubt by the truth, one request each (what the page does)
    settled = 0
    for it in q.doubts:
        name = it.suggest[0][0]
        verdict = "is" if name in who.get(it.sha256, set()) else "stranger"
        review.decide({"faces": [it.id], "verdict": verdict, "person": name})
        settled += 1
    # two faces of one photo are never the same person
    by_photo: dict[str, list[str]] = {}
    for it in q.items.values():
        by_photo.setdefault(it.sha256, []).append(it.id)
    same = next(ids[:2] for ids in by_photo.values() if len(ids) >= 2)
    with pytest.raises(ValueError, match="never the same person"):
        review.decide({"faces": same, "verdict": "is", "person": "X"})
    # a decision survives the server: another connection sees it at once
    c = Corrections(out / INDEX_FILE)
    assert len(c.pending()) == settled
    c.close()
    # undo takes back the last batch only
    if settled:
        assert len(review.undo()["faces"]) == 1
        c = Corrections(out / INDEX_FILE)
        assert len(c.pending()) == settled - 1
        c.close()
    review.corrections.close()
    report = learn(out, log=lambda m: None)
    assert report.used == max(0, settled - 1)
    if report.used:
        assert report.round == 1 and report.resort is not None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts"
# As root in a container Chromium needs --no-sandbox; the rest keep it off this machine's closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def test_review_page_in_a_real_browser(daycare, tmp_path):
    if not CHROMIUM:
        if os.environ.get("CI"):  # CI must run it: .ci/run installs Debian's chromium
            pytest.fail("no Chromium on the CI machine (.ci/run should have installed Debian's chromium)")
        pytest.skip("no Chromium here (Debian's chromium package; .ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    from sorter.io.corrections import Corrections
    from sorter.pipeline.classify import INDEX_FILE
    from sorter.review.server import Review, ReviewServer

    out = sorted_copy(daycare, tmp_path)
    server = ReviewServer(Review(out)).start()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    own = f"http://127.0.0.1:{server.port}/"
    outside: list[str] = []
    errors: list[str] = []

    def stored() -> list:
        c = Corrections(out / INDEX_FILE)
        try:
            return c.active()
        finally:
            c.close()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(own) else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            page.wait_for_selector("body[data-ready=doubts]")
            state = server.review.state()
            assert int(page.get_attribute("body", "data-cards")) == len(state["doubts"])
            page.wait_for_load_state("networkidle")  # the crops in view have loaded
            page.screenshot(path=str(ARTEFACTS / "review-doubts.png"), full_page=True)
            if state["doubts"]:  # key 1 names the focused face with its first suggestion
                first = page.locator(".card").first.get_attribute("data-id")
                page.keyboard.press("1")
                page.wait_for_selector(f'.card[data-id="{first}"]', state="detached")
                assert stored()[-1].verdict == "is"
            # a child's accepted faces: reject one, undo it by key, then name two at once as strangers
            page.click('.tab[data-tab="person"]')
            page.wait_for_selector("body[data-ready=person] .card")
            page.wait_for_load_state("networkidle")  # the crops in view have loaded
            page.screenshot(path=str(ARTEFACTS / "review-child.png"), full_page=True)
            cards = page.locator(".card")
            child = page.input_value("#person-pick")
            first = cards.first.get_attribute("data-id")
            cards.first.locator("button.not").click()
            page.wait_for_selector(f'.card[data-id="{first}"]', state="detached")
            last = stored()[-1]
            assert (last.verdict, last.person) == ("not", child)
            assert float(page.get_attribute("body", "data-last-save")) < 1000
            before = len(stored())
            page.keyboard.press("u")
            expect(page.locator("#status")).to_have_text(re.compile("^undone"))
            assert len(stored()) == before - 1
            page.wait_for_selector("body[data-ready=person] .card")
            n = page.locator(".card").count()
            if n >= 2:
                for k in range(2):
                    page.locator(".card").nth(k).locator("input[type=checkbox]").check()
                assert page.is_visible("#bulk")
                page.click("#bulk-stranger")
                expect(page.locator(".card")).to_have_count(n - 2)
                got = stored()
                assert [c.verdict for c in got[-2:]] == ["stranger", "stranger"]
                assert got[-1].batch == got[-2].batch  # one click, one batch (undone together)
            page.click('.tab[data-tab="new"]')
            page.wait_for_selector("body[data-ready=new]")
            page.wait_for_load_state("networkidle")  # the crops in view have loaded
            page.screenshot(path=str(ARTEFACTS / "review-new-faces.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert not outside, f"the page asked for something outside: {outside[:3]}"
    assert not errors, errors


def test_a_videos_faces_are_on_the_page_cropped_from_their_frame(daycare, tmp_path):
    import cv2
    import numpy as np

    import sorter
    from sorter.review.server import Review

    lib, model = daycare
    photos = sorted((lib / "library").rglob("*.jpg"))[:2]
    folder = tmp_path / "lib"
    folder.mkdir()
    size = (640, 480)
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for p in photos:  # each photo shown for 3 s
        frame = cv2.resize(cv2.imread(str(p)), size)
        for _ in range(30):
            writer.write(frame)
    writer.release()
    out = tmp_path / "sorted"
    sorter.classify(folder, out, model=model, progress=False, log=lambda m: None)
    review = Review(out)
    items = [it for it in review.queue(fresh=True).items.values() if it.rel == "clip.mp4"]
    assert items and all(it.at_s is not None for it in items)
    for it in items[:2]:
        crop, thumb = review.image("crop", it.id), review.image("thumb", it.id)
        assert crop[:2] == b"\xff\xd8" and thumb[:2] == b"\xff\xd8"
        im = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR)
        assert im.shape[:2] == (160, 160) and im.std() > 10  # a picture, not a blank
    review.corrections.close()


def test_learn_narrows_the_review_band_only_on_enough_confirmed_faces(daycare, tmp_path):
    """The band starts where the lowest face the teacher confirmed in it sat; fewer than three such
    faces, or one the band missed (below it), leave it as calibrated. The change is kept in bundle.json."""
    from sorter.io.bundle import Bundle
    from sorter.review.learn import MIN_CONFIRMED, narrow_band

    _, model = daycare
    run = tmp_path / "model"
    shutil.copytree(model, run)
    bundle = Bundle.load(run)
    accept, low = dict(bundle.per_class_threshold), dict(bundle.per_class_low)
    assert accept and all(accept[p] > low[p] for p in accept)
    assert MIN_CONFIRMED == 3 and narrow_band(bundle, [0.5, 0.6]) is None and bundle.per_class_low == low
    assert narrow_band(bundle, [0.7, -0.2, 0.9]) == 0.0 and bundle.per_class_low == low
    assert narrow_band(bundle, [0.8, 0.5, 0.6]) == 0.5
    bundle.save()
    _, now = Bundle.load(run).thresholds()
    for p in accept:
        assert now[p] == pytest.approx(low[p] + 0.5 * (accept[p] - low[p]), abs=1e-4)
