#!/usr/bin/env python3
"""Age and gender heads on the shared UTKFace faces: measured, chosen, and (``--ship``) trained.

    .venv/bin/python bench/attributes.py --data ../shared/data/utkface [--ship]

Features: bench/attributes_features.py (cached in runs/attributes/features.npz): for each face, the
default face detector's box, then the SFace vector and the dlib-models age/gender networks' outputs
(Cydral, CC0) of the face as it is, with a training mask (photosort's renderer) and with a
benchmark-only mask (bench/mask_styles.py, never trained on).

Protocol: grouped, stratified 5-fold cross-validation. Groups: faces whose SFace vectors are all
pairwise closer than cosine 0.5 (UTKFace has no identities; the same person's photos stay on one
side); strata: age band x gender. Every figure is on the held-out fold (faces its models never saw), on the
unmasked faces and on the same faces with the benchmark's masks. Candidates:
  networks       the dlib-models networks alone (no training here; CC0)
  networks_mlp   MLPs on the networks' outputs; sface: on the SFace vector; both: on both
  +vote          5 inner-fold models soft-voted (else one model on all the training side)
  +mix           gender from the networks for faces the head puts at 18 or more
The MLPs (trained on unmasked + training-masked copies, every age band x gender stratum weighted the
same) correct the networks' log-age and give p(female). The choice (:func:`choose`) is made from these
out-of-fold figures; the held-back UTKFace part (not here) measures it afterwards.

``--ship``: train the chosen variant on all faces (5 folds, soft voting) and write
sorter/assets/attributes.{npz,json} (sha256, provenance, licence, the figures). Writes
bench/results/attributes.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from attributes_features import extract  # noqa: E402

from sorter.heads.attributes import AttributeHead, features  # noqa: E402

GROUP_COS = 0.5
CHILD, ADULT = 13, 18  # child < 13, adult >= 18 (the definition)
BANDS9 = [0, 3, 6, 10, 13, 18, 30, 45, 60]
MIN_SCALE = 0.05
ALPHA = 1.0
VARIANTS = {"networks": (), "networks_mlp": ("networks",), "sface": ("sface",), "both": ("networks", "sface")}


def groups(v: np.ndarray) -> np.ndarray:
    """Groups of faces all pairwise closer than GROUP_COS (complete linkage: the same person's photos,
    and near-duplicates, together). Not connected components: SFace puts many babies close, and
    chaining joined 1,849 of 4,025 faces into one group."""
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="complete", distance_threshold=1 - GROUP_COS
    ).fit_predict(v)


def strata(age: np.ndarray, gender: np.ndarray) -> np.ndarray:
    return np.digitize(age, BANDS9) * 2 + gender


def fit_mlps(x: np.ndarray, residual: np.ndarray, female: np.ndarray, w: np.ndarray, seed: int) -> tuple:
    """One fold's pair: the age MLP (the correction to the networks' log-age) and the gender MLP.
    alpha 1.0: strong weight decay keeps the correction small where faces are few (adults here),
    so there the networks' own answer stands (measured: adults' MAE 17 -> 11 against alpha 1e-3)."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    kw = dict(hidden_layer_sizes=(128,), alpha=ALPHA, max_iter=300, early_stopping=True, random_state=seed)
    age = MLPRegressor(**kw).fit(x, residual, sample_weight=w)
    gen = MLPClassifier(**kw).fit(x, female, sample_weight=w)
    return age, gen


def base_mu(d: dict, part: str) -> np.ndarray:
    """The networks' own log(1 + expected age): what the age MLP corrects."""
    from sorter.models.agegender import AGES

    return np.log1p(d[f"cyd_age_{part}"].astype(np.float64) @ AGES.astype(np.float64))


def predict_mlps(models: list[tuple], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft voting: the folds' log-age corrections and p(female) averaged."""
    mu = np.mean([a.predict(x) for a, _ in models], 0)
    pf = np.mean([g.predict_proba(x)[:, 1] for _, g in models], 0)
    return mu, pf


def head_answer(d: dict, models: list[tuple], x: np.ndarray, rows: np.ndarray, part: str, mix: bool):
    """(age years, p(female)) as sorter.heads.attributes computes them: the networks' log-age plus the
    MLPs' correction, clipped to 0-100 years; gender from the MLPs, or, with ``mix``, from the networks
    for faces the head puts at ADULT years or more."""
    res, pf = predict_mlps(models, x)
    mu = np.clip(base_mu(d, part)[rows] + res, 0.0, np.log1p(100.0))
    age = np.expm1(mu)
    if mix:
        pf = np.where(age >= ADULT, d[f"cyd_female_{part}"][rows], pf)
    return age, pf


def inputs_of(d: dict, variant: str, part: str) -> np.ndarray:
    return features(d[f"cyd_age_{part}"], d[f"cyd_female_{part}"], d[f"sface_{part}"], VARIANTS[variant])


def train_variant(d: dict, idx: np.ndarray, variant: str, vote: bool, seed: int) -> tuple:
    """Models (and the scaler) for ``variant`` trained on faces ``idx``, unmasked + training-masked."""
    from sklearn.model_selection import StratifiedKFold

    x = np.concatenate([inputs_of(d, variant, "plain")[idx], inputs_of(d, variant, "train_mask")[idx]])
    y_age = np.log1p(np.concatenate([d["age"][idx]] * 2).astype(np.float64))
    y_age -= np.concatenate([base_mu(d, "plain")[idx], base_mu(d, "train_mask")[idx]])
    y_f = np.concatenate([d["gender"][idx]] * 2)
    # class imbalance: every age band x gender stratum weighs the same in total
    st2 = np.concatenate([strata(d["age"][idx], d["gender"][idx])] * 2)
    count = np.bincount(st2).astype(np.float64)
    w = 1.0 / count[st2]
    w *= len(w) / w.sum()
    # the floor: an age class the networks almost never give has a std near 0, and would blow up
    mean, scale = x.mean(0), np.maximum(x.std(0), MIN_SCALE)
    xs = (x - mean) / scale
    if not vote:
        return (mean, scale), [fit_mlps(xs, y_age, y_f, w, seed)]
    models = []
    st = strata(d["age"][idx], d["gender"][idx])
    both = np.concatenate([np.arange(len(idx))] * 2)
    for k, (tr, _) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(idx, st)):
        use = np.isin(both, tr)  # a face and its masked copy on the same side
        models.append(fit_mlps(xs[use], y_age[use], y_f[use], w[use], seed + k))
    return (mean, scale), models


def metrics(age: np.ndarray, female: np.ndarray, pred_age: np.ndarray, pf: np.ndarray) -> dict:
    kid, adult = age < 18, age >= 18
    child, grown = age < CHILD, age >= ADULT
    both = child | grown
    pred_child = pred_age < (CHILD + ADULT) / 2  # the middle of the gap between the two definitions
    right_g = (pf >= 0.5) == (female == 1)
    return {
        "age_mae_0_17": round(float(np.abs(pred_age - age)[kid].mean()), 3),
        "age_mae_adults": round(float(np.abs(pred_age - age)[adult].mean()), 3),
        "child_adult_accuracy": round(float((pred_child[both] == child[both]).mean()), 4),
        "gender_accuracy_children": round(float(right_g[kid].mean()), 4),
        "gender_accuracy_adults": round(float(right_g[adult].mean()), 4),
        "faces": int(len(age)),
    }


def seed18_macro_f1(d: dict, masks: dict, preds: dict) -> dict:
    """The seeds' 18 classes (mask state x gender x <30 / 30-59 / 60+), macro F1 over the classes
    present: the faces as they are (truth: without_mask) and with the benchmark's masks (truth: with_mask,
    or mask_weared_incorrect where worn below the nose), mask state from the shipped mask head."""
    from sklearn.metrics import f1_score

    idx = np.flatnonzero(d["found"].astype(bool))
    classes = [str(c) for c in masks["classes"]]
    truth_mask = {
        "plain": np.full(len(idx), classes.index("without_mask")),
        "bench_mask": np.where(
            masks["below"][idx], classes.index("mask_weared_incorrect"), classes.index("with_mask")
        ),
    }
    out = {}
    for p, (pa, pf) in preds.items():
        t = (truth_mask[p] * 2 + d["gender"][idx]) * 3 + np.digitize(d["age"][idx], [30, 60])
        y = (masks[f"mask_{p}"][idx] * 2 + (pf >= 0.5)) * 3 + np.digitize(pa, [30, 60])
        out[p] = round(float(f1_score(t, y, labels=np.unique(t), average="macro")), 4)
    both = np.concatenate
    t_all = both(
        [(truth_mask[p] * 2 + d["gender"][idx]) * 3 + np.digitize(d["age"][idx], [30, 60]) for p in preds]
    )
    y_all = both(
        [
            (masks[f"mask_{p}"][idx] * 2 + (pf >= 0.5)) * 3 + np.digitize(pa, [30, 60])
            for p, (pa, pf) in preds.items()
        ]
    )
    out["both"] = round(float(f1_score(t_all, y_all, labels=np.unique(t_all), average="macro")), 4)
    out["mask_accuracy"] = {
        p: round(float((masks[f"mask_{p}"][idx] == truth_mask[p]).mean()), 4) for p in preds
    }
    return out


def seed_macro_f1(age, female, pred_age, pf) -> float:
    """Macro F1 of the seeds' gender x age-band part (<30 / 30-59 / 60+; the mask part of their 18
    classes is measured by bench/mask_state.py: UTKFace has no real masks)."""
    from sklearn.metrics import f1_score

    def cls(a, f):
        return np.digitize(a, [30, 60]) * 2 + f

    return round(
        float(f1_score(cls(age, female), cls(pred_age, (pf >= 0.5).astype(int)), average="macro")), 4
    )


def parse(name: str) -> tuple[str, bool, bool]:
    """A candidate's name -> (inputs variant, soft-voted folds?, gender from the networks for adults?)."""
    parts = name.split("+")
    return parts[0], "vote" in parts, "mix" in parts


CANDIDATES = ("networks", "networks_mlp+vote", "sface+vote", "both", "both+vote", "both+vote+mix")


def _folds(d: dict, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    from sklearn.model_selection import StratifiedGroupKFold

    idx_all = np.flatnonzero(d["found"].astype(bool))
    g = groups(d["sface_plain"][idx_all])
    st = strata(d["age"][idx_all], d["gender"][idx_all])
    return idx_all, g, list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(idx_all, st, g))


def out_of_fold(d: dict, name: str, seed: int, parts=("plain", "bench_mask")) -> dict[str, tuple]:
    """Every found face's (age, p(female)) from models that never saw it, per version of the faces."""
    variant, vote, mix = parse(name)
    idx_all, _, folds = _folds(d, seed)
    preds = {p: (np.zeros(len(idx_all)), np.zeros(len(idx_all))) for p in parts}
    for tr, te in folds:
        rows = idx_all[te]
        if variant == "networks":
            head = AttributeHead(use_head=False)
            for p in parts:
                got = head.predict(d[f"cyd_age_{p}"][rows], d[f"cyd_female_{p}"][rows])
                preds[p][0][te], preds[p][1][te] = [x.age for x in got], [x.p_female for x in got]
            continue
        (mean, scale), models = train_variant(d, idx_all[tr], variant, vote, seed)
        for p in parts:
            x = (inputs_of(d, variant, p)[rows] - mean) / scale
            preds[p][0][te], preds[p][1][te] = head_answer(d, models, x, rows, p, mix)
    return preds


def cross_validate(d: dict, seed: int, log=print) -> dict:
    idx_all, g, _ = _folds(d, seed)
    out: dict = {
        "faces": int(len(idx_all)),
        "not_found": int(len(d["found"]) - len(idx_all)),
        "groups": int(g.max() + 1),
        "largest_group": int(np.bincount(g).max()),
    }
    age, fem = d["age"][idx_all], d["gender"][idx_all]
    for name in CANDIDATES:
        t0 = time.perf_counter()
        res: dict = {}
        for p, (pa, pf) in out_of_fold(d, name, seed).items():
            res[p] = metrics(age, fem, pa, pf) | {"seed_gender_age_macro_f1": seed_macro_f1(age, fem, pa, pf)}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = res
        log(f"  {name:18s} " + "  ".join(f"{p}: " + json.dumps(res[p]) for p in ("plain", "bench_mask")))
    return out


def choose(cv: dict) -> str:
    """The candidate to ship, from out-of-fold figures only: the best mean over unmasked and masked
    faces of (children's age MAE in years / 3.5 - child/adult accuracy - children's and adults' gender
    accuracy), i.e. each target's measure on its own scale; ties go to fewer inputs."""
    names = [k for k in cv if isinstance(cv[k], dict) and "plain" in cv[k]]

    def loss(k: str) -> float:
        return float(
            np.mean(
                [
                    cv[k][p]["age_mae_0_17"] / 3.5
                    - cv[k][p]["child_adult_accuracy"]
                    - cv[k][p]["gender_accuracy_children"]
                    - cv[k][p]["gender_accuracy_adults"]
                    for p in ("plain", "bench_mask")
                ]
            )
        )

    return min(names, key=lambda k: (round(loss(k), 3), len(VARIANTS[parse(k)[0]])))


def ship(d: dict, name: str, cv: dict, seed: int, out_dir: Path) -> dict:
    """Train candidate ``name`` on every found face; write attributes.{npz,json} into ``out_dir``."""
    variant, vote, mix = parse(name)
    if variant == "networks":
        raise SystemExit("the networks alone need no head file: ship AttributeHead(use_head=False)")
    idx = np.flatnonzero(d["found"].astype(bool))
    (mean, scale), models = train_variant(d, idx, variant, vote, seed)
    params = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}
    for k, (a, g) in enumerate(models):
        for task, m in (("age", a), ("gender", g)):
            for j, (w, b) in enumerate(zip(m.coefs_, m.intercepts_, strict=True)):
                params[f"{task}{k}_W{j}"], params[f"{task}{k}_b{j}"] = (
                    w.astype(np.float32),
                    b.astype(np.float32),
                )
    buf = io.BytesIO()
    np.savez(buf, **params)
    data = buf.getvalue()
    meta = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": list(VARIANTS[variant]),
        "folds": len(models),
        "age": "the networks' log(1 + expected age) + the folds' mean correction",
        "gender_from_networks_at": ADULT if mix else None,
        "sigma": cv["sigma"],
        "candidate": name,
        "trained_on": f"UTKFace crop_part1, the children-heavy subset shared here ({len(idx)} faces found "
        "of 4,025; a further fifth is held back by the data's owner), unmasked + photosort's training masks",
        "licence": "weights derived from UTKFace: non-commercial research use only (UTKFace licence); "
        "the dlib-models networks they read are CC0-1.0 (Cydral Technology)",
        "made_by": "bench/attributes.py --ship",
        "figures_out_of_fold": {k: cv[name][k] for k in ("plain", "bench_mask")},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "attributes.npz").write_bytes(data)
    (out_dir / "attributes.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def sigma_table(d: dict, name: str, seed: int) -> dict:
    """The spread (log years) of out-of-fold log-age errors, by predicted log-age, on unmasked and
    training-masked faces: the band probabilities' and the age gate's uncertainty. Written into the
    head's JSON by ``--ship``; ``--sigma-only`` recomputes just this for a shipped head."""
    idx_all = np.flatnonzero(d["found"].astype(bool))
    preds = out_of_fold(d, name, seed, parts=("plain", "train_mask"))
    mu = np.concatenate([np.log1p(preds[p][0]) for p in preds])
    truth = np.log1p(np.concatenate([d["age"][idx_all]] * 2).astype(np.float64))
    grid = np.linspace(0, np.log1p(80), 9)
    vals = []
    err = np.abs(mu - truth)
    for c in grid:
        # a robust spread (1.4826 x the median absolute error near c): the normal that describes most
        # faces; the few wild misses (a hat, a profile) would otherwise widen every face's bands
        near = np.abs(mu - c) <= 0.3
        vals.append(1.4826 * float(np.median(err[near])) if near.sum() >= 20 else float("nan"))
    known = np.isfinite(vals)
    vals = [float(v) for v in np.interp(grid, grid[known], np.asarray(vals)[known])]
    return {"mu": [round(float(v), 4) for v in grid], "value": [round(max(v, 0.05), 4) for v in vals]}


def seed18(d: dict, args, name: str) -> dict:
    from attributes_features import extract_masks

    masks = extract_masks(args.data, args.cache.with_name("masks.npz"), d)
    return seed18_macro_f1(d, masks, out_of_fold(d, name, args.seed))


def time_per_face(data: Path, n: int = 200) -> dict:
    """Milliseconds a face on one thread: the dlib alignment + the two networks, and the head on top
    (SFace's vector comes free with a recogniser; without one it costs its own, timed here too)."""
    import csv

    from PIL import Image

    from sorter.models.agegender import CydralAgeGender
    from sorter.models.registry import face_detector
    from sorter.models.sface import SFaceEmbedder

    rows = list(csv.DictReader((data / "labels.csv").open()))[:n]
    det, nets, sface, head = (
        face_detector(),
        CydralAgeGender(threads=1),
        SFaceEmbedder(threads=1),
        AttributeHead(),
    )
    faces = []
    for r in rows:
        rgb = np.asarray(Image.open(data / "images" / r["file"]).convert("RGB"))
        b, _, m = det.detect_landmarks(rgb)
        if len(b):
            faces.append((rgb, b[:1], m[:1]))
    nets.predict(*faces[0][:2]), sface.embed(*faces[0]), head.load()  # warm up
    t = {"networks": 0.0, "sface": 0.0, "head": 0.0}
    for rgb, b, m in faces:
        t0 = time.perf_counter()
        ages, female = nets.predict(rgb, b)
        t1 = time.perf_counter()
        v = sface.embed(rgb, b, m)
        t2 = time.perf_counter()
        head.predict(ages, female, v)
        t3 = time.perf_counter()
        t["networks"] += t1 - t0
        t["sface"] += t2 - t1
        t["head"] += t3 - t2
    out = {k: round(v / len(faces) * 1000, 3) for k, v in t.items()} | {"faces": len(faces), "threads": 1}
    out["total_with_recogniser_ms"] = round(out["networks"] + out["head"], 3)
    out["total_without_ms"] = round(out["networks"] + out["sface"] + out["head"], 3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "attributes" / "features.npz")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "attributes.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", action="store_true")
    ap.add_argument("--sigma-only", action="store_true", help="recompute the shipped head's sigma only")
    ap.add_argument("--timing-only", action="store_true", help="time the shipped head only")
    ap.add_argument(
        "--seed18-only", action="store_true", help="the seeds' 18-class F1 of the chosen head only"
    )
    args = ap.parse_args(argv)
    if args.timing_only:
        cv = json.loads(args.results.read_text())
        cv["ms_per_face"] = time_per_face(args.data)
        args.results.write_text(json.dumps(cv, indent=1) + "\n")
        print(cv["ms_per_face"])
        return
    d = extract(args.data, args.cache)
    if args.seed18_only:
        cv = json.loads(args.results.read_text())
        cv["seed_18_classes_macro_f1"] = seed18(d, args, cv["chosen"])
        args.results.write_text(json.dumps(cv, indent=1) + "\n")
        print(cv["seed_18_classes_macro_f1"])
        return
    if args.sigma_only:
        cv = json.loads(args.results.read_text())
        cv["sigma"] = sigma_table(d, cv["chosen"], args.seed)
        head = ROOT / "sorter" / "assets" / "attributes.json"
        meta = json.loads(head.read_text())
        meta["sigma"] = cv["sigma"]
        head.write_text(json.dumps(meta, indent=1) + "\n")
        args.results.write_text(json.dumps(cv, indent=1) + "\n")
        print(cv["sigma"])
        return
    print(f"{len(d['name'])} faces; cross-validating")
    cv = cross_validate(d, args.seed)
    chosen = choose(cv)
    cv["chosen"] = chosen
    cv["sigma"] = sigma_table(d, chosen, args.seed)
    print(f"chosen: {chosen}")
    if args.ship:
        meta = ship(d, chosen, cv, args.seed, ROOT / "sorter" / "assets")
        cv["shipped_sha256"] = meta["sha256"]
        cv["ms_per_face"] = time_per_face(args.data)
    cv["seed_18_classes_macro_f1"] = seed18(d, args, chosen)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(cv, indent=1) + "\n")
    print(table(cv))


def table(cv: dict) -> str:
    keys = [
        "age_mae_0_17",
        "age_mae_adults",
        "child_adult_accuracy",
        "gender_accuracy_children",
        "gender_accuracy_adults",
        "seed_gender_age_macro_f1",
    ]
    lines = ["| candidate | faces | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for k, v in cv.items():
        if isinstance(v, dict) and "plain" in v:
            for p in ("plain", "bench_mask"):
                lines.append(f"| {k} | {p} | " + " | ".join(str(v[p][m]) for m in keys) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
