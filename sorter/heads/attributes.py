"""Age and gender of a face: years, and "female"/"male" with a probability.

Two parts. The networks: dlib-models' age predictor and gender classifier (Cydral Technology, CC0 1.0;
``sorter.models.agegender``), run on every face. On top, the shipped head (``sorter/assets/
attributes.npz`` + ``attributes.json``, trained by ``bench/attributes.py``): small MLPs, one per fold
of a 5-fold split, their answers averaged (soft voting), reading the networks' outputs and (when its
JSON says so) the face's SFace vector; chosen among candidates by out-of-fold figures. The head was
trained on UTKFace (children and adults, with synthetic masks drawn on): **UTKFace is licensed for
non-commercial research only, and so are these weights**; the JSON says so.
``AttributeHead(use_head=False)`` gives the networks' own answers (CC0 throughout).

Age: the networks' log(1 + expected years) plus the MLPs' correction (strong weight decay keeps it
small where UTKFace has few faces: adults), with the spread of the head's own out-of-fold errors kept
beside it (``sigma``, by age), so each face carries a distribution: the probability of an age band,
or of being far from the ages a model's people were labelled at, comes from it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "assets"
HEAD_PATH = ASSETS / "attributes.npz"
# Age bands of the shared UTKFace labels (labels.csv age_band): the folders of ``--by age-band``.
AGE_BANDS = ((0, 2), (3, 5), (6, 9), (10, 12), (13, 17), (18, 29), (30, 44), (45, 59), (60, None))
# The seeds' three bands (mask x gender x age, 18 classes).
SEED_BANDS = ((0, 29), (30, 59), (60, None))
GENDERS = ("female", "male")


def band_name(band: tuple[int, int | None]) -> str:
    lo, hi = band
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def _phi(z: float) -> float:
    """The standard normal's cumulative distribution (z may be +-inf)."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass
class Attributes:
    """One face's age (years; ``mu``/``sigma``: the normal in log(1 + years) it comes from) and gender."""

    age: float
    mu: float
    sigma: float
    p_female: float

    @property
    def gender(self) -> str:
        return "female" if self.p_female >= 0.5 else "male"

    @property
    def gender_score(self) -> float:
        return self.p_female if self.p_female >= 0.5 else 1.0 - self.p_female

    def p_between(self, lo: float | None, hi: float | None) -> float:
        """Probability that the face's age in whole years is in [lo, hi] (None: open)."""
        a = -math.inf if not lo else (math.log1p(lo) - self.mu) / self.sigma
        b = math.inf if hi is None else (math.log1p(hi + 1) - self.mu) / self.sigma
        return _phi(b) - _phi(a)

    def bands(self, bands: Sequence[tuple[int, int | None]] = AGE_BANDS) -> dict[str, float]:
        return {band_name(b): self.p_between(*b) for b in bands}


class AttributeFileError(RuntimeError):
    """The shipped head or its JSON is missing, unreadable, or does not match its checksum."""


def _mlp(params: dict[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    """A ReLU MLP's output (scikit-learn's layout: W0, b0, W1, b1, ...)."""
    k = 0
    while f"{prefix}W{k}" in params:
        x = x @ params[f"{prefix}W{k}"] + params[f"{prefix}b{k}"]
        if f"{prefix}W{k + 1}" in params:
            x = np.maximum(x, 0.0)
        k += 1
    return x


def features(
    ages: np.ndarray, p_female: np.ndarray, vectors: np.ndarray | None, inputs: Sequence[str]
) -> np.ndarray:
    """The head's input for faces: the networks' outputs (sqrt of the age distribution, p(female))
    and, when the head reads it, the SFace vector."""
    blocks = []
    if "networks" in inputs:
        blocks += [np.sqrt(np.clip(ages, 0.0, 1.0)), np.asarray(p_female, np.float32)[:, None]]
    if "sface" in inputs:
        assert vectors is not None
        blocks.append(np.asarray(vectors, np.float32))
    return np.concatenate(blocks, 1).astype(np.float32)


class AttributeHead:
    """The shipped head (or one at ``path``), loaded on first use; checked by its sha256."""

    def __init__(self, path: Path | None = None, use_head: bool = True) -> None:
        self.path = Path(path) if path is not None else HEAD_PATH
        self.use_head = use_head
        self.meta: dict[str, Any] = {}
        self._params: dict[str, np.ndarray] | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        self.load()
        return tuple(self.meta.get("inputs", ("networks",))) if self.use_head else ("networks",)

    def load(self) -> AttributeHead:
        if self._params is not None or not self.use_head:
            return self
        meta_path = self.path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = self.path.read_bytes()
        except (OSError, ValueError) as e:
            raise AttributeFileError(f"attribute head missing or unreadable: {self.path} ({e})") from e
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise AttributeFileError(f"attribute head {self.path} does not match its checksum in {meta_path}")
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            self._params = {k: z[k] for k in z.files}
        self.meta = meta
        return self

    @property
    def key(self) -> str:
        """What made the answers (for the index's cache key)."""
        self.load()
        return str(self.meta.get("sha256", "networks")) if self.use_head else "networks"

    def sigma(self, mu: np.ndarray) -> np.ndarray:
        """The spread (log years) of the head's out-of-fold errors at predicted log-age ``mu``."""
        if not self.use_head:
            return np.full_like(mu, 0.35)  # the networks alone: a wide, uninformed spread
        self.load()
        grid = np.asarray(self.meta["sigma"]["mu"], np.float64)
        return np.interp(mu, grid, np.asarray(self.meta["sigma"]["value"], np.float64))

    def predict(
        self, ages: np.ndarray, p_female: np.ndarray, vectors: np.ndarray | None = None
    ) -> list[Attributes]:
        """Per face, from the networks' age distributions ``[n, 81]``, p(female) ``[n]`` and (if the
        head reads them) SFace vectors ``[n, 128]``."""
        from sorter.models.agegender import AGES

        n = len(ages)
        if not n:
            return []
        # the networks' own answer: log(1 + the expected age of their distribution)
        mu = np.log1p(np.asarray(ages, np.float64) @ AGES.astype(np.float64))
        pf = np.asarray(p_female, np.float64)
        if self.use_head:
            self.load()
            assert self._params is not None
            x = features(ages, p_female, vectors, self.inputs)
            x = (x - self._params["mean"]) / self._params["scale"]
            folds = int(self.meta["folds"])
            # soft voting: the folds' log-age corrections and gender probabilities averaged
            mu = mu + np.mean([_mlp(self._params, f"age{k}_", x)[:, 0] for k in range(folds)], 0)
            head_pf = np.mean(
                [1.0 / (1.0 + np.exp(-_mlp(self._params, f"gender{k}_", x)[:, 0])) for k in range(folds)], 0
            )
            adult_at = self.meta.get("gender_from_networks_at")
            if adult_at is None:
                pf = head_pf
            else:  # grown-ups' gender: the networks' (they were trained on adults)
                pf = np.where(np.expm1(np.clip(mu, 0.0, None)) >= adult_at, pf, head_pf)
        mu = np.clip(mu, 0.0, math.log1p(100.0))
        sig = self.sigma(mu)
        return [
            Attributes(
                age=float(np.expm1(mu[k])), mu=float(mu[k]), sigma=float(sig[k]), p_female=float(pf[k])
            )
            for k in range(n)
        ]
