#!/usr/bin/env python3
"""Face-box geometry and YuNet/ONet thresholds re-derived on real photos (issue 12).

Three groups of constants in sorter/ were fitted on make_library.py photos (LFW faces pasted into
scenes), photosort's own synthetic benchmark; this script measures them on the CC0 Kaggle face-mask
set (853 real photos, labelImg VOC boxes: with_mask / without_mask / mask_weared_incorrect):

  1. ``sorter.boxes.LABEL_TO_DETECTOR_BOX``: the detector's (ONet-refined) box corners relative to the
     labelled box, as fractions of the labelled box's width/height from its top-left corner (median).
  2. ``sorter.boxes.LANDMARKS_IN_BOX``: the five ONet landmarks as fractions of the detector's box.
  3. ``sorter.models.yunet.YuNetDetector``: propose_at, verify_at, sure_at, crop_scale, crop_shift.

Protocol (fixed by the issue): photos ``maksssksksssN.png`` with ``N % 8 == 0`` are the TEST side and
choose nothing. The train side (``N % 8 != 0``) is split into a VALIDATION part (``N % 8 in {1, 2}``),
where the grid of detector settings is scored and one setting chosen by the rule below, and a
HELD-OUT part (the other train photos), where the chosen setting and the current one are reported.
Constants 1 and 2 are medians over the whole train side (nothing is chosen for them). The test side
is reported once, labelled, for the chosen and the current setting only.

Near-duplicate photos: the set holds byte-identical pairs and re-crops of the same photo. Photos are
grouped by an 8x8 difference hash (Hamming distance <= 7, which on this set joins only re-crops and
re-encodes of one photo); a train photo grouped with a test photo is left out of everything, and a
group within the train side goes wholly to the part of its lowest-numbered photo. (Different photos
from one shoot remain on both sides; they are not duplicates.)

Matching a detection to a labelled face: per photo, labelled/detected pairs with IoU >= 0.3 between
the labelled box and the RAW detector box, taken greedily by decreasing IoU, one-to-one. A detection
that matches no labelled face is an "extra" box; those overlapping a labelled face (IoU >= 0.1, mostly
a second detection of an already matched face, or a face labelled loosely) are counted apart from
those away from every labelled face. The set has unlabelled faces (blurred, distant, profile), so
"extra" overstates false positives.

Geometry (1, 2) uses matched faces whose labelled height is >= 16 px and whose labelled and detector
boxes are both clear of the image border (a box clipped by the border has no face geometry).

Choosing (3): the highest recall of labelled faces >= 16 px on the validation photos among settings
whose extra boxes per photo are at most the current setting's + 0.1; ties (same number of faces found)
go to fewer extra boxes, then to the current setting's values.

YuNet's proposals are computed once per photo at the lowest propose_at of the grid (greedy NMS makes
the proposals at a higher threshold exactly the subset above it), ONet's first pass and refinement
once per photo and crop setting, and the thresholds are then masks. Validation figures of the current
setting are computed both this way and by ``YuNetDetector.detect_landmarks`` itself, and compared.

    .venv/bin/python bench/face_geometry.py --data ../shared/data/face-mask
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from defusedxml import ElementTree
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sorter.boxes import LABEL_TO_DETECTOR_BOX, LANDMARKS_IN_BOX, iou  # noqa: E402
from sorter.io.decode import reduce_to  # noqa: E402
from sorter.models.yunet import YuNetDetector  # noqa: E402

CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
SHORT = {"with_mask": "with_mask", "without_mask": "without_mask", "mask_weared_incorrect": "incorrect"}
BANDS = (("<16", 0, 16), ("16-32", 16, 32), (">=32", 32, 1e9))
MATCH_IOU = 0.3
NEAR_IOU = 0.1
MIN_H = 16.0
DHASH_MAX = 7
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

CURRENT = {"propose_at": 0.02, "verify_at": 0.1, "sure_at": 0.3, "crop_scale": 0.9, "crop_shift": 0.05}
GRID = {
    "propose_at": (0.02, 0.05),
    "verify_at": (0.05, 0.1, 0.2, 0.4),
    "sure_at": (0.3, 0.5),
    "crop_scale": (0.85, 0.9, 1.0),
    "crop_shift": (0.0, 0.05, 0.1),
}
EXTRA_SLACK = 0.1
RECALL_SLACK = 0.01


@dataclass
class Photo:
    n: int
    path: Path
    boxes: np.ndarray  # [m, 4] labelled xyxy
    classes: list[str]
    size: tuple[int, int]  # (w, h)
    part: str = ""
    group: int = -1
    sha: str = ""
    dhash: np.ndarray = field(default_factory=lambda: np.zeros(64, bool))


# ---------------------------------------------------------------- data


def load_photos(data: Path) -> list[Photo]:
    photos = []
    for xml in sorted((data / "annotations").glob("*.xml")):
        n = int(re.fullmatch(r"maksssksksss(\d+)", xml.stem).group(1))
        root = ElementTree.parse(xml).getroot()
        boxes, classes = [], []
        for obj in root.findall("object"):
            b = obj.find("bndbox")
            boxes.append([float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")])
            classes.append(obj.findtext("name").strip())
        path = data / "images" / f"{xml.stem}.png"
        with Image.open(path) as im:
            size = im.size
            g = np.asarray(im.convert("L").resize((9, 8), Image.BILINEAR), np.int16)
        photos.append(
            Photo(
                n,
                path,
                np.array(boxes, np.float64).reshape(-1, 4),
                classes,
                size,
                sha=hashlib.sha256(path.read_bytes()).hexdigest(),
                dhash=(g[:, 1:] > g[:, :-1]).ravel(),
            )
        )
    return sorted(photos, key=lambda p: p.n)


def split(photos: list[Photo]) -> dict:
    """Assign each photo to test / val / heldout / excluded, grouping near-duplicates (union-find)."""
    parent = list(range(len(photos)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = np.stack([p.dhash for p in photos])
    dist = (hashes[:, None, :] != hashes[None, :, :]).sum(2)
    pairs = []
    for i, j in zip(*np.nonzero(np.triu(dist <= DHASH_MAX, 1)), strict=True):
        pairs.append((photos[i].n, photos[j].n, int(dist[i, j]), photos[i].sha == photos[j].sha))
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(photos)):
        groups.setdefault(find(i), []).append(i)
    excluded = []
    for members in groups.values():
        ns = [photos[i].n for i in members]
        has_test = any(n % 8 == 0 for n in ns)
        first = min(ns)
        for i in members:
            p = photos[i]
            p.group = first
            if p.n % 8 == 0:
                p.part = "test"
            elif has_test:
                p.part = "excluded"
                excluded.append(p.n)
            else:
                p.part = "val" if first % 8 in (1, 2) else "heldout"
    return {
        "near_duplicate_pairs": [
            {"a": a, "b": b, "dhash_distance": d, "byte_identical": same} for a, b, d, same in pairs
        ],
        "excluded_train_photos_duplicating_test": sorted(excluded),
    }


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- matching


def match(labels: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by IoU >= MATCH_IOU: (label -> det index or -1, det -> label or -1,
    det's best IoU with any label)."""
    m, k = len(labels), len(dets)
    lab_to = np.full(m, -1)
    det_to = np.full(k, -1)
    best = np.zeros(k)
    if not m or not k:
        return lab_to, det_to, best
    ious = np.array([[iou(a, b) for b in dets] for a in labels])
    best = ious.max(0)
    for flat in np.argsort(-ious, axis=None):
        i, j = divmod(int(flat), k)
        if ious[i, j] < MATCH_IOU:
            break
        if lab_to[i] < 0 and det_to[j] < 0:
            lab_to[i], det_to[j] = j, i
    return lab_to, det_to, best


@dataclass
class Tally:
    """Recall by band and class, extra boxes; per face found/not for paired comparisons."""

    faces: dict = field(default_factory=dict)  # (photo n, label index) -> found
    photos: int = 0
    extra: int = 0
    extra_away: int = 0
    extra_on_face: int = 0

    def add(self, photo: Photo, dets: np.ndarray) -> None:
        lab_to, det_to, best = match(photo.boxes, dets)
        self.photos += 1
        for i in range(len(photo.boxes)):
            self.faces[(photo.n, i)] = bool(lab_to[i] >= 0)
        unmatched = det_to < 0
        self.extra += int(unmatched.sum())
        self.extra_away += int((unmatched & (best < NEAR_IOU)).sum())
        self.extra_on_face += int((unmatched & (best >= MATCH_IOU)).sum())

    def summary(self, photos: dict[int, Photo]) -> dict:
        def rate(keys: list) -> dict:
            found = sum(self.faces[k] for k in keys)
            return {"recall": round(found / len(keys), 4) if keys else None, "found": found, "n": len(keys)}

        def height(k: tuple[int, int]) -> float:
            b = photos[k[0]].boxes[k[1]]
            return b[3] - b[1]

        keys = list(self.faces)
        out = {
            "photos": self.photos,
            "all": rate(keys),
            ">=16": rate([k for k in keys if height(k) >= MIN_H]),
            "by_height": {name: rate([k for k in keys if lo <= height(k) < hi]) for name, lo, hi in BANDS},
            "by_class_>=16": {
                SHORT[c]: rate([k for k in keys if photos[k[0]].classes[k[1]] == c and height(k) >= MIN_H])
                for c in CLASSES
            },
            "extra_per_photo": round(self.extra / max(self.photos, 1), 3),
            "extra_away_per_photo": round(self.extra_away / max(self.photos, 1), 3),
            "extra_on_labelled_face_per_photo": round(self.extra_on_face / max(self.photos, 1), 3),
        }
        return out


# ---------------------------------------------------------------- geometry (1, 2)


def collect_geometry(photo: Photo, boxes: np.ndarray, points: np.ndarray, rows: list) -> None:
    w, h = photo.size
    lab_to, _, _ = match(photo.boxes, boxes)
    for i, j in enumerate(lab_to):
        if j < 0:
            continue
        lb, db = photo.boxes[i], boxes[j].astype(np.float64)
        lw, lh = lb[2] - lb[0], lb[3] - lb[1]
        if lh < MIN_H or lw <= 0:
            continue
        if min(lb[0], lb[1], db[0], db[1]) <= 1 or lb[2] >= w - 1 or db[2] >= w - 1:
            continue
        if lb[3] >= h - 1 or db[3] >= h - 1:
            continue
        corners = [(db[0] - lb[0]) / lw, (db[1] - lb[1]) / lh, (db[2] - lb[0]) / lw, (db[3] - lb[1]) / lh]
        dw, dh = db[2] - db[0], db[3] - db[1]
        pts = points[j].astype(np.float64)
        rel = np.stack([(pts[:, 0] - db[0]) / dw, (pts[:, 1] - db[1]) / dh], 1)
        rows.append(
            {
                "n": photo.n,
                "class": SHORT[photo.classes[i]],
                "h": lh,
                "label": lb.tolist(),
                "det": db.tolist(),
                "points": pts.tolist(),
                "corners": corners,
                "rel": rel.tolist(),
            }
        )


def spread(values: np.ndarray) -> dict:
    q25, q50, q75 = np.percentile(values, [25, 50, 75], axis=0)
    return {
        "median": np.round(q50, 3).tolist(),
        "mean": np.round(values.mean(0), 3).tolist(),
        "q25": np.round(q25, 3).tolist(),
        "q75": np.round(q75, 3).tolist(),
        "n": len(values),
    }


def geometry_summary(rows: list) -> dict:
    def part(sel: list) -> dict:
        if not sel:
            return {"n": 0}
        return {
            "label_to_detector_box": spread(np.array([r["corners"] for r in sel])),
            "landmarks_in_box": spread(np.array([r["rel"] for r in sel])),
        }

    out = {"all_>=16": part(rows)}
    out["by_class"] = {SHORT[c]: part([r for r in rows if r["class"] == SHORT[c]]) for c in CLASSES}
    out["by_height"] = {
        "16-32": part([r for r in rows if r["h"] < 32]),
        ">=32": part([r for r in rows if r["h"] >= 32]),
    }
    return out


def _to_det(box: np.ndarray, c: tuple) -> np.ndarray:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return np.array([x0 + c[0] * w, y0 + c[1] * h, x0 + c[2] * w, y0 + c[3] * h])


def constants_check(rows: list, new_box: tuple, new_points: np.ndarray) -> dict:
    """How well each constant predicts the detector on ``rows``: IoU of the mapped labelled box with
    ONet's box, and template landmarks' distance to ONet's (fraction of the detector box's width)."""
    out = {}
    for name, box_c, pts_c in (
        ("current", LABEL_TO_DETECTOR_BOX, np.array(LANDMARKS_IN_BOX)),
        ("rederived", new_box, new_points),
    ):
        ious = [iou(_to_det(np.array(r["label"]), box_c), r["det"]) for r in rows]
        errs = []
        for r in rows:
            d = np.array(r["det"])
            tpl = np.stack([d[0] + pts_c[:, 0] * (d[2] - d[0]), d[1] + pts_c[:, 1] * (d[3] - d[1])], 1)
            errs.append(np.linalg.norm(tpl - np.array(r["points"]), axis=1).mean() / (d[2] - d[0]))
        out[name] = {
            "box_iou_median": round(float(np.median(ious)), 4),
            "box_iou_mean": round(float(np.mean(ious)), 4),
            "landmark_err_median": round(float(np.median(errs)), 4),
            "landmark_err_mean": round(float(np.mean(errs)), 4),
            "n": len(rows),
        }
    return out


def mirror_check(det: YuNetDetector, photos: list[Photo], rows: list) -> dict:
    """The same medians on the validation photos mirrored left-right (labels mirrored with them).

    A left-right offset that comes from the photos (labelling, head poses) changes sign in the mirror;
    one that comes from the detector keeps it. Box x0/x1 of the mirror are given in the ORIGINAL's
    orientation (1 - x1, 1 - x0) and landmark x likewise (1 - x, with the two eyes and mouth corners
    swapped), so equal numbers mean the offset is the photos', not the detector's.
    """
    mirrored: list = []
    for p in photos:
        rgb = load_rgb(p.path)[:, ::-1].copy()
        w = rgb.shape[1]
        b = p.boxes
        labels = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        flipped = Photo(p.n, p.path, labels, p.classes, p.size)
        boxes, _, points = det.detect_landmarks(rgb)
        collect_geometry(flipped, boxes, points, mirrored)

    def back(c: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.stack([1 - c[:, 2], c[:, 1], 1 - c[:, 0], c[:, 3]], 1)
        rel = rel[:, [1, 0, 2, 4, 3]].copy()
        rel[:, :, 0] = 1 - rel[:, :, 0]
        return c, rel

    def med(c: np.ndarray, rel: np.ndarray) -> dict:
        return {
            "label_to_detector_box": np.round(np.median(c, 0), 3).tolist(),
            "landmarks_in_box": np.round(np.median(rel, 0), 3).tolist(),
            "landmark_midline_x": round(float(np.median(rel[:, :, 0].mean(1))), 3),
            "n": len(c),
        }

    orig = med(np.array([r["corners"] for r in rows]), np.array([r["rel"] for r in rows]))
    mc, mr = back(np.array([r["corners"] for r in mirrored]), np.array([r["rel"] for r in mirrored]))
    return {
        "note": MIRROR_NOTE,
        "validation_photos": orig,
        "mirrored_in_original_orientation": med(mc, mr),
    }


MIRROR_NOTE = (
    "validation photos, and the same mirrored left-right with their labels, the mirror's fractions "
    "mapped back to the original orientation: where the two agree, the left-right offset is the photos'; "
    "where they differ by 2d, the detector adds d in image coordinates"
)


# ---------------------------------------------------------------- the detector's pieces (3)


def _finish(det: YuNetDetector, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """detect_landmarks' refinement of ONet's first boxes (the box it reports, before un-scaling)."""
    if det.refine and len(boxes):
        passes = max(1, det.refine_passes)
        for _ in range(passes - 1):  # the last pass only moves the landmarks, not the reported box
            side = (boxes[:, 2:] - boxes[:, :2]).max(1)
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            boxes, _ = det._averaged_pass(img, np.stack([*(centre - side[:, None] / 2).T, side], 1))
    return boxes


def cached_candidates(det: YuNetDetector, rgb: np.ndarray, crops: list[tuple[float, float]]) -> dict:
    """Per crop setting: every proposal's YuNet score, ONet probability and the box detect_landmarks
    would report were it kept (NaN where no threshold of the grid could keep it)."""
    import cv2

    det.load()
    h, w = rgb.shape[:2]
    img = np.ascontiguousarray(reduce_to(rgb, det.max_side))
    s = img.shape[1] / w
    det._yunet.setInputSize((img.shape[1], img.shape[0]))
    _, found = det._yunet.detect(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = {}
    if found is None or not len(found):
        for c in crops:
            out[c] = (np.zeros(0), np.zeros(0), np.zeros((0, 4)))
        return out
    x, y, bw, bh = (found[:, k] for k in range(4))
    score = found[:, 14].astype(np.float64)
    for scale, shift in crops:
        side = np.maximum(bw, bh) * scale
        squares = np.stack([x + bw / 2 - side / 2, y + bh / 2 + shift * bh - side / 2, side], 1)
        boxes, _, prob = det._onet_pass(img, squares)
        cand = (prob >= min(GRID["verify_at"])) | (score >= min(GRID["sure_at"]))
        final = np.full((len(boxes), 4), np.nan)
        if cand.any():
            b = _finish(det, img, boxes[cand]) / s
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
            final[cand] = b
        out[(scale, shift)] = (score, prob.astype(np.float64), final)
    return out


def grid_settings() -> list[dict]:
    keys = list(GRID)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*(GRID[k] for k in keys))]


def kept(cache: tuple, st: dict) -> np.ndarray:
    score, prob, final = cache
    keep = (score >= st["propose_at"]) & ((prob >= st["verify_at"]) | (score >= st["sure_at"]))
    return final[keep]


# ---------------------------------------------------------------- main


def fmt_rate(r: dict) -> str:
    return f"{100 * r['recall']:5.1f}% ({r['found']}/{r['n']})" if r["n"] else "   -"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/face-mask"))
    default_out = Path(__file__).resolve().parent / "results" / "face_geometry.json"
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (a quick try)")
    args = ap.parse_args()
    t_start = time.time()

    from sorter.models.onet import export_onet

    photos = load_photos(args.data)
    if args.limit:
        photos = photos[: args.limit]
    dup_info = split(photos)
    by_n = {p.n: p for p in photos}
    parts = {k: [p for p in photos if p.part == k] for k in ("val", "heldout", "test", "excluded")}
    print(
        f"{len(photos)} photos: val {len(parts['val'])}, held-out {len(parts['heldout'])}, "
        f"test {len(parts['test'])}, excluded {len(parts['excluded'])} (near-duplicates of test photos)"
    )

    tmp = tempfile.TemporaryDirectory(prefix="onet-ir-")
    onet_ir = export_onet(Path(tmp.name))  # OpenVINO ONet, ~7x torch's speed; the same weights
    timing = {}

    def detector(st: dict) -> YuNetDetector:
        return YuNetDetector(**st, threads=args.threads, onet_ir=onet_ir)

    # --- the current detector on every train photo: geometry (1, 2) and the current row
    t = time.time()
    cur = detector(CURRENT)
    geo_rows: list = []
    tallies = {"val": Tally(), "heldout": Tally()}
    real_val_boxes = {}
    for p in parts["val"] + parts["heldout"]:
        boxes, _, points = cur.detect_landmarks(load_rgb(p.path))
        collect_geometry(p, boxes, points, geo_rows)
        tallies[p.part].add(p, boxes)
        if p.part == "val":
            real_val_boxes[p.n] = boxes
    timing["current_on_train_s"] = round(time.time() - t, 1)
    geometry = geometry_summary(geo_rows)
    med_box = tuple(geometry["all_>=16"]["label_to_detector_box"]["median"])
    med_pts = np.array(geometry["all_>=16"]["landmarks_in_box"]["median"])
    t = time.time()
    mirror = mirror_check(cur, parts["val"], [r for r in geo_rows if by_n[r["n"]].part == "val"])
    timing["mirror_check_s"] = round(time.time() - t, 1)

    # --- grid on the validation photos
    t = time.time()
    settings = grid_settings()
    crops = sorted({(s["crop_scale"], s["crop_shift"]) for s in settings})
    grid_tallies = [Tally() for _ in settings]
    max_diff, count_mismatch = 0.0, 0
    for p in parts["val"]:
        cache = cached_candidates(cur, load_rgb(p.path), crops)
        for st, tally in zip(settings, grid_tallies, strict=True):
            tally.add(p, kept(cache[(st["crop_scale"], st["crop_shift"])], st))
        mine = kept(cache[(CURRENT["crop_scale"], CURRENT["crop_shift"])], CURRENT)
        real = real_val_boxes[p.n]
        if len(mine) != len(real):
            count_mismatch += 1
        elif len(real):
            max_diff = max(max_diff, float(np.abs(mine - real).max()))
    timing["grid_on_val_s"] = round(time.time() - t, 1)
    grid = [{**st, **tally.summary(by_n)} for st, tally in zip(settings, grid_tallies, strict=True)]
    cur_row = next(r for r in grid if all(r[k] == v for k, v in CURRENT.items()))

    def shared(r: dict) -> int:
        return sum(r[k] == v for k, v in CURRENT.items())

    # rule A (the issue's): most faces >= 16 px found, extra boxes at most the current's + slack
    allowed = [r for r in grid if r["extra_per_photo"] <= cur_row["extra_per_photo"] + EXTRA_SLACK + 1e-9]
    best_a = min(allowed, key=lambda r: (-r[">=16"]["found"], r["extra_per_photo"], -shared(r)))
    # rule B (trade-off): fewest extra boxes, recall >= 16 px at most RECALL_SLACK below the current's
    floor = cur_row[">=16"]["recall"] - RECALL_SLACK - 1e-9
    near = [r for r in grid if r[">=16"]["recall"] >= floor]
    best_b = min(near, key=lambda r: (r["extra_per_photo"], -r[">=16"]["found"], -shared(r)))
    # rule C (added after the first full run, read off the validation grid's trade-off front): fewest
    # extra boxes among settings finding at least as many faces >= 16 px as the current setting
    dominating = [r for r in grid if r[">=16"]["found"] >= cur_row[">=16"]["found"]]
    best_c = min(dominating, key=lambda r: (r["extra_per_photo"], -r[">=16"]["found"], -shared(r)))
    front, most = [], -1
    for r in sorted(grid, key=lambda r: (r["extra_per_photo"], -r[">=16"]["found"])):
        if r[">=16"]["found"] > most:
            most = r[">=16"]["found"]
            st = {k: r[k] for k in CURRENT}
            front.append({**st, "found_>=16": most, "extra_per_photo": r["extra_per_photo"]})
    picks = {"current": CURRENT}
    for name, row in (("chosen", best_a), ("tradeoff", best_b), ("dominating", best_c)):
        st = {k: row[k] for k in CURRENT}
        if st not in picks.values():
            picks[name] = st
    chosen = {k: best_a[k] for k in CURRENT}
    tradeoff = {k: best_b[k] for k in CURRENT}
    dominant = {k: best_c[k] for k in CURRENT}

    # --- the picks on the held-out train photos, then (once, labelled) on the test side
    t = time.time()
    report: dict = {"heldout": {"current": tallies["heldout"]}, "test": {}}
    test_rows: list = []
    for name, st in picks.items():
        det = cur if name == "current" else detector(st)
        sides = ("test",) if name == "current" else ("heldout", "test")
        for side in sides:
            report[side][name] = Tally()
            for p in parts[side]:
                boxes, _, points = det.detect_landmarks(load_rgb(p.path))
                report[side][name].add(p, boxes)
                if name == "current" and side == "test":
                    collect_geometry(p, boxes, points, test_rows)
    timing["heldout_and_test_s"] = round(time.time() - t, 1)

    def paired(side: str, name: str) -> dict:
        a, b = report[side]["current"].faces, report[side][name].faces
        big = [k for k in a if by_n[k[0]].boxes[k[1]][3] - by_n[k[0]].boxes[k[1]][1] >= MIN_H]
        return {
            f"faces_>=16_found_only_by_{name}": sum(b[k] and not a[k] for k in big),
            "faces_>=16_found_only_by_current": sum(a[k] and not b[k] for k in big),
        }

    summaries = {
        side: {name: tally.summary(by_n) for name, tally in report[side].items()}
        for side in ("heldout", "test")
    }
    for side, summary in summaries.items():
        summary["paired_with_current"] = {name: paired(side, name) for name in picks if name != "current"}
    timing["total_s"] = round(time.time() - t_start, 1)

    result = {
        "data": str(args.data),
        "protocol": {
            "test": "N % 8 == 0 (chooses nothing; reported once, labelled)",
            "validation": "N % 8 in {1, 2} (the grid is scored and the setting chosen here)",
            "heldout": "other train photos (N % 8 in {3..7}); the chosen and current settings reported",
            "near_duplicates": f"8x8 dHash distance <= {DHASH_MAX} grouped; train members of a group with a "
            "test photo excluded, a train group goes to the part of its lowest-numbered photo",
            "photos": {k: len(v) for k, v in parts.items()},
            **dup_info,
        },
        "matching": f"greedy one-to-one by IoU >= {MATCH_IOU} between the labelled box and the raw detector "
        f"box; an unmatched detection is 'extra' ('away' if its IoU with every labelled box < {NEAR_IOU}). "
        "The set has unlabelled faces, so 'extra' overstates false positives.",
        "geometry": {
            "faces": "train side (val + held-out), current detector, matched, labelled height >= 16 px, "
            "labelled and detector boxes clear of the image border",
            "label_to_detector_box_current": list(LABEL_TO_DETECTOR_BOX),
            "landmarks_in_box_current": [list(p) for p in LANDMARKS_IN_BOX],
            "landmark_order": list(LANDMARK_NAMES),
            **geometry,
            "mirror_check": mirror,
            "test_side_check": {
                "note": "TEST side, once: how well the current and the re-derived constants (medians "
                "over all train faces >= 16 px) predict ONet's box (IoU) and landmarks (mean distance "
                "/ box width)",
                **constants_check(test_rows, med_box, med_pts),
            },
        },
        "detector": {
            "current": CURRENT,
            "grid": GRID,
            "rule": "chosen (rule A, the issue's): most labelled faces >= 16 px found on the validation "
            f"photos among settings with extra boxes per photo <= the current setting's + {EXTRA_SLACK}; "
            "ties: fewer extra boxes, then the most values shared with the current setting",
            "rule_tradeoff": "tradeoff (rule B): fewest extra boxes per photo on the validation photos "
            f"among settings whose recall of faces >= 16 px is at most {100 * RECALL_SLACK:g} point below "
            "the current setting's; ties: more faces found, then the most values shared with the current",
            "cache_check_val": {
                "photos_with_different_box_count": count_mismatch,
                "max_abs_box_difference_px": round(max_diff, 5),
            },
            "validation_grid": grid,
            "chosen": chosen,
            "chosen_is_current": chosen == CURRENT,
            "tradeoff": tradeoff,
            "tradeoff_is_current": tradeoff == CURRENT,
            "rule_dominating": "dominating (rule C, added after the first full run had shown rules A and B "
            "on the held-out photos; read off the validation grid's front): fewest extra boxes per photo on "
            "the validation photos among settings finding at least as many faces >= 16 px as the current",
            "dominating": dominant,
            "validation_front": front,
            "heldout": summaries["heldout"],
            "test_side_once": summaries["test"],
        },
        "timing": timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_tables(result)
    print(f"wrote {args.out} in {timing['total_s']:.0f} s ({timing})")
    tmp.cleanup()


def print_tables(res: dict) -> None:
    g = res["geometry"]
    print("\nLABEL_TO_DETECTOR_BOX (x0, y0, x1, y1), median [IQR], train faces >= 16 px")
    print(f"  current            {tuple(g['label_to_detector_box_current'])}")
    for name, part in [("all", g["all_>=16"]), *g["by_class"].items(), *g["by_height"].items()]:
        if not part.get("label_to_detector_box"):
            continue
        s = part["label_to_detector_box"]
        trios = zip(s["median"], s["q25"], s["q75"], strict=True)
        cells = "  ".join(f"{m:+.3f} [{a:+.3f},{b:+.3f}]" for m, a, b in trios)
        print(f"  {name:<18} {cells}  n={s['n']}")
    print("\nLANDMARKS_IN_BOX (x, y) median, train faces >= 16 px")
    print(f"  current            {g['landmarks_in_box_current']}")
    for name, part in [("all", g["all_>=16"]), *g["by_class"].items()]:
        if not part.get("landmarks_in_box"):
            continue
        s = part["landmarks_in_box"]
        cells = " ".join(f"({x:.3f},{y:.3f})" for x, y in s["median"])
        print(f"  {name:<18} {cells}  n={s['n']}")
    c = g["test_side_check"]
    print("\n  TEST side check (once):", {k: c[k] for k in ("current", "rederived")})

    d = res["detector"]
    n = len(d["validation_grid"])
    print(f"\nDetector grid on validation photos ({n} settings); top 12 by recall >= 16 px:")
    print(
        "  prop  ver  sure scale shift | rec>=16 rec all |  <16 16-32  >=32 |  mask nomask incor | extra away"
    )

    def line(r: dict) -> str:
        b, k = r["by_height"], r["by_class_>=16"]
        pct = [100 * x["recall"] if x["n"] else float("nan") for x in (*b.values(), *k.values())]
        return (
            f"  {r['propose_at']:.2f} {r['verify_at']:.2f} {r['sure_at']:.1f}  {r['crop_scale']:.2f}  "
            f"{r['crop_shift']:.2f} | {100 * r['>=16']['recall']:5.1f}   {100 * r['all']['recall']:5.1f}  | "
            + " ".join(f"{x:5.1f}" for x in pct[:3])
            + " | "
            + " ".join(f"{x:5.1f}" for x in pct[3:])
            + f" | {r['extra_per_photo']:5.2f} {r['extra_away_per_photo']:5.2f}"
        )

    rows = sorted(d["validation_grid"], key=lambda r: (-r[">=16"]["found"], r["extra_per_photo"]))
    for r in rows[:12]:
        print(line(r))

    def row_of(st: dict) -> dict:
        return next(r for r in d["validation_grid"] if all(r[k] == v for k, v in st.items()))

    for name in ("current", "chosen", "tradeoff", "dominating"):
        print(f"  {name}:\n" + line(row_of(d[name])))
    for key in ("rule", "rule_tradeoff", "rule_dominating"):
        print(f"  {d[key]}")
    for key in ("chosen", "tradeoff", "dominating"):
        print(f"  {key}: {d[key]}")
    sides = (("heldout", "held-out train photos"), ("test_side_once", "TEST side (once, not used)"))
    for side, label in sides:
        print(f"\n  {label}:")
        for name, s in d[side].items():
            if name == "paired_with_current":
                for other, counts in s.items():
                    print(f"    {other} vs current: {counts}")
                continue
            print(
                f"    {name:<8} >=16 {fmt_rate(s['>=16'])}  all {fmt_rate(s['all'])}  "
                + "  ".join(f"{k} {fmt_rate(v)}" for k, v in s["by_class_>=16"].items())
                + f"  <16 {fmt_rate(s['by_height']['<16'])}"
                + f"  extra/photo {s['extra_per_photo']:.2f} (away {s['extra_away_per_photo']:.2f}, "
                + f"on a labelled face {s['extra_on_labelled_face_per_photo']:.2f})"
            )


if __name__ == "__main__":
    main()
