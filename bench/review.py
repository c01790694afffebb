#!/usr/bin/env python3
"""One round of review, and what it teaches (issue 13).

    .venv/bin/python bench/review.py [--seed 5] [--labelled 300] [--library 3000]

A daycare library (``make_library.py``) is cut in two halves of the same children, A and B. A model
is trained on the labelled part; B is sorted ("before"); A is sorted and a simulated reviewer
settles every doubt in A by the truth, once through the review page's HTTP API (naming each face
in doubt: its true person, or stranger), once by moving files as a teacher would (each photo in
A's uncertain/ moved into the folder of each doubted person truly in it, or just removed); each
time `photosort learn` refits the model, and B is sorted again ("after", re-scored from B's index).
Also measured in Chromium: the page's time to show 1,000+ faces and to store a decision.

Writes bench/results/review.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from daycare import make_library  # noqa: E402


def make_halves(work: Path, seed: int, labelled: int, library: int) -> Path:
    lib = make_library(work / "daycare", seed, labelled, library)
    with open(lib / "truth.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for half, part in (("A", rows[0::2]), ("B", rows[1::2])):
        folder = work / half
        if (folder / "truth.csv").is_file():
            continue
        for r in part:
            dst = folder / "library" / r["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib / "library" / r["path"], dst)
        with open(folder / "truth.csv", "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(part)
    return lib


def score(half: Path, out: Path) -> dict:
    r = subprocess.run(
        [sys.executable, str(SHARED / "bench" / "eval_sort.py"), "--truth", str(half / "truth.csv")]
        + ["--library", str(half / "library"), "--sorted", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    s = json.loads(r.stdout)
    keep = ("precision", "recall", "f1", "uncertain", "lost", "altered", "foreign")
    return {k: s[k] for k in keep if k in s}


def classify(half: Path, out: Path, model: Path) -> float:
    from sorter.io.bundle import Bundle
    from sorter.pipeline.classify import classify_library

    t = time.perf_counter()
    classify_library(half / "library", out, Bundle.load(model), progress=False, log=lambda m: None)
    return round(time.perf_counter() - t, 1)


def truth_faces(half: Path) -> dict[str, list[tuple[str, list[float]]]]:
    from sorter.io.decode import sha256_file

    out = {}
    with open(half / "truth.csv", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            sha = r["sha256"] or sha256_file(half / "library" / r["path"])
            out[sha] = [(f["label"], f["box"]) for f in json.loads(r["faces"]) if f["label"]]
    return out


def appearances(half: Path, min_height: int = 48) -> int:
    """Appearances eval_sort counts for recall and lost (faces at least 48 px tall)."""
    with open(half / "truth.csv", encoding="utf-8") as fh:
        return sum(
            1
            for r in csv.DictReader(fh)
            for f in json.loads(r["faces"])
            if f["label"] and f["height"] >= min_height
        )


def who_is(box, faces) -> str | None:
    """The true person on a detected face: the labelled face it overlaps most (IoU >= 0.3)."""
    from sorter.boxes import iou

    best = max(faces, key=lambda f: iou(tuple(box), tuple(f[1])), default=None)
    return best[0] if best is not None and iou(tuple(box), tuple(best[1])) >= 0.3 else None


def review_by_page(out: Path, half: Path) -> dict:
    """Settle every doubt by the truth through the page's HTTP API (one request per face)."""
    from sorter.review.server import Review, ReviewServer

    faces = truth_faces(half)
    server = ReviewServer(Review(out)).start()
    n, ms = 0, []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        head = {"Host": f"127.0.0.1:{server.port}", "X-Photosort-Token": server.token}
        conn.request("GET", "/api/state", headers=head)
        state = json.loads(conn.getresponse().read())
        q = server.review.queue()
        for item in state["doubts"]:
            it = q.items[item["id"]]
            true = who_is(it.box, faces.get(it.sha256, []))
            body = (
                {"faces": [it.id], "verdict": "is", "person": true}
                if true
                else {"faces": [it.id], "verdict": "stranger"}
            )
            t = time.perf_counter()
            conn.request(
                "POST",
                "/api/decide",
                body=json.dumps(body),
                headers=head | {"Content-Type": "application/json"},
            )
            r = json.loads(conn.getresponse().read())
            ms.append((time.perf_counter() - t) * 1000)
            assert r.get("ok"), r
            n += 1
        conn.close()
    finally:
        server.stop()
    return {
        "decisions": n,
        "request_ms_mean": round(sum(ms) / max(1, len(ms)), 2),
        "request_ms_max": round(max(ms, default=0), 2),
    }


def review_by_files(out: Path, half: Path) -> dict:
    """Move each photo out of uncertain/ into the folder of each doubted person truly in it."""
    from sorter.io.index import Index
    from sorter.pipeline.classify import INDEX_FILE

    with open(half / "truth.csv", encoding="utf-8") as fh:
        present = {r["sha256"]: set(filter(None, r["people"].split(";"))) for r in csv.DictReader(fh)}
    index = Index(out / INDEX_FILE)
    rows = list(index.rows())
    index.close()
    moved = removed = 0
    for row in rows:
        for copy in row.copies:
            if not copy.startswith("uncertain/"):
                continue
            src = out / copy
            for person in row.doubted:
                if person in present.get(row.sha256, set()):
                    (out / person).mkdir(exist_ok=True)
                    shutil.copy2(src, out / person / src.name)
                    moved += 1
            src.unlink()
            removed += 1
    return {"uncertain_removed": removed, "put_into_folders": moved}


def page_timing(out: Path, model: Path, work: Path) -> dict:
    """Chromium: time to show N >= 1,000 faces (state fetched, every card in the DOM) and to store one
    decision. A copy of the model whose thresholds put every recognised face in doubt makes the queue."""
    from playwright.sync_api import sync_playwright

    from sorter.io.bundle import Bundle
    from sorter.review.server import Review, ReviewServer

    wide = work / "model-all-doubts"
    shutil.rmtree(wide, ignore_errors=True)
    shutil.copytree(model, wide)
    b = Bundle.load(wide)
    b.per_class_threshold = dict.fromkeys(b.classes, 1.01)
    b.per_class_low = dict.fromkeys(b.classes, 0.05)
    b.save()
    copy = work / "A-page-timing"  # the timing's decisions (skips) stay out of the measured folders
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy)
    server = ReviewServer(Review(copy, wide)).start()
    chromium = shutil.which("chromium")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    args += ["--disable-sync", "--no-first-run"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=args)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            loads = []
            for _ in range(3):
                t = time.perf_counter()
                page.goto(server.url)
                page.wait_for_selector("body[data-ready=doubts]", timeout=60000)
                loads.append(time.perf_counter() - t)
            n = int(page.get_attribute("body", "data-cards"))
            saves = []
            for _ in range(20):
                page.keyboard.press(" ")  # skip the focused face: one decision stored
                before = page.get_attribute("body", "data-batch")
                # the page's CSP forbids eval, so Playwright's wait_for_function cannot run: poll
                for _ in range(500):
                    if page.get_attribute("body", "data-batch") != before:
                        break
                    time.sleep(0.005)
                saves.append(float(page.get_attribute("body", "data-last-save")))
            browser.close()
    finally:
        server.stop()
    return {
        "faces_shown": n,
        "load_s": [round(x, 3) for x in loads],
        "load_s_best": round(min(loads), 3),
        "decision_ms_mean": round(sum(saves) / len(saves), 1),
        "decision_ms_max": round(max(saves), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--labelled", type=int, default=300)
    ap.add_argument("--library", type=int, default=3000)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-review")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "review.json")
    args = ap.parse_args()
    os.environ.setdefault("PHOTOSORT_HOME", str(ROOT / "runs" / ".home"))
    import sorter
    from sorter.review.learn import learn

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    lib = make_halves(work, args.seed, args.labelled, args.library)
    model0 = work / "runs" / "m0"
    if not (model0 / "bundle.json").is_file():
        # the detector is not what review teaches (classify skips it when it sorts no better): 1 epoch
        sorter.train(lib / "labelled", name="m0", runs_dir=work / "runs", epochs=1, imgsz=320, wandb="off")
    result: dict = {"settings": vars(args) | {"work": str(work), "out": str(args.out)}}
    result["machine_load_at_start"] = [round(v, 2) for v in os.getloadavg()]
    b_before = work / "B-before"
    # always run: classify's index makes it a no-op for an unchanged model, and re-sorts with a new
    # one (a kept manifest from an earlier model would be scored as this one's)
    result["classify_B_seconds"] = classify(work / "B", b_before, model0)
    result["B_before"] = score(work / "B", b_before)
    print("B before", result["B_before"], flush=True)
    a_out = work / "A-sorted"
    result["classify_A_seconds"] = classify(work / "A", a_out, model0)
    result["A_before"] = score(work / "A", a_out)
    for way in ("page", "files"):
        model = work / "runs" / f"m-{way}"
        out_a, out_b = work / f"A-{way}", work / f"B-{way}"
        for src, dst in ((model0, model), (a_out, out_a), (b_before, out_b)):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        settled = review_by_page(out_a, work / "A") if way == "page" else review_by_files(out_a, work / "A")
        t = time.perf_counter()
        rep = learn(out_a, model, log=lambda m: None)
        learn_s = time.perf_counter() - t
        t = time.perf_counter()
        classify(work / "B", out_b, model)
        after = score(work / "B", out_b)
        result[way] = {
            "review": settled,
            "learn_seconds": round(learn_s, 1),
            "learn_fit_seconds": round(rep.fit_seconds, 1),
            "learn_resort_seconds": round(rep.resort.seconds, 1) if rep.resort else None,
            "learnt": {"used": rep.used, "faces": dict(rep.faces_added), "strangers": rep.strangers_added},
            "A_after": score(work / "A", out_a),
            "B_after": after,
            "B_resort_seconds": round(time.perf_counter() - t, 1),
            "appearances_B_48px": appearances(work / "B"),
        }
        print(way, json.dumps(result[way]), flush=True)
    if shutil.which("chromium"):
        result["page_timing"] = page_timing(a_out, model0, work)
        print("page timing", result["page_timing"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'half B':<22}{'precision':>10}{'recall':>8}{'uncertain':>10}{'lost':>6}")
    for name, m in [("before review", result["B_before"])] + [
        (f"after, by {way}", result[way]["B_after"]) for way in ("page", "files")
    ]:
        print(f"{name:<22}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['uncertain']:>10}{m['lost']:>6}")
    n_a = len(truth_faces(work / "A"))
    for way in ("page", "files"):
        print(f"learn ({way}): {result[way]['learn_seconds']} s on a {n_a}-photo output")
    if "page_timing" in result:
        pg = result["page_timing"]
        print(
            f"page: {pg['faces_shown']} faces in {pg['load_s_best']} s; "
            f"a decision in {pg['decision_ms_mean']} ms"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
