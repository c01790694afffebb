"""The synthetic masks drawn on labelled faces for training (sorter/training/augment.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sorter.training.augment as augment
from sorter.training.augment import FAMILIES, box_landmarks, choose_mask, draw_synthetic_mask

BOX = (100.0, 80.0, 200.0, 210.0)  # labeller-style: forehead to chin
GREEN = (0, 255, 0)  # no mask is pure green, and the contact shadow cannot change its red or blue


def _photo(h: int = 320, w: int = 300) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = GREEN
    return rgb


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(2)


def _region(change: np.ndarray, centre: np.ndarray, r: float) -> float:
    x, y = (int(round(v)) for v in centre)
    r = int(round(r))
    return float(change[y - r : y + r + 1, x - r : x + r + 1].mean())


def test_same_seed_same_mask_and_other_seeds_differ():
    rgb = _photo()
    a = draw_synthetic_mask(rgb, BOX, np.random.default_rng(7))
    b = draw_synthetic_mask(rgb, BOX, np.random.default_rng(7))
    c = draw_synthetic_mask(rgb, BOX, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == rgb.shape and a.dtype == np.uint8


def test_input_is_not_modified():
    rgb = np.random.default_rng(0).integers(0, 256, (320, 300, 3), dtype=np.uint8)
    before = rgb.copy()
    lm = box_landmarks(BOX)
    lm_before = lm.copy()
    for seed in range(10):
        out = draw_synthetic_mask(rgb, BOX, np.random.default_rng(seed), lm)
        assert out is not rgb
    assert np.array_equal(rgb, before)
    assert np.array_equal(lm, lm_before)


def test_no_landmarks_means_the_box_template():
    rgb = _photo()
    a = draw_synthetic_mask(rgb, BOX, np.random.default_rng(3))
    b = draw_synthetic_mask(rgb, BOX, np.random.default_rng(3), box_landmarks(BOX))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("with_landmarks", [False, True])
def test_mask_covers_nose_and_mouth_not_eyes(with_landmarks):
    rgb = _photo()
    x0, y0, x1, y1 = BOX
    bw, bh = x1 - x0, y1 - y0
    lm = box_landmarks(BOX)
    if with_landmarks:  # a real-looking face a little off the template: eyes higher, nose a bit left
        lm = lm + np.array([[0, -4], [0, -4], [-3, 0], [0, 2], [0, 2]], np.float32)
    for seed in range(40):
        out = draw_synthetic_mask(rgb, BOX, np.random.default_rng(seed), lm if with_landmarks else None)
        ch = _change(out, rgb)
        ys, xs = np.nonzero(ch)
        # only near the face box: ear loops reach a little past the cheeks, the mask under the chin
        assert xs.min() >= x0 - 0.25 * bw and xs.max() <= x1 + 0.25 * bw
        assert ys.min() >= y0 + 0.2 * bh and ys.max() <= y1 + 0.2 * bh
        # and mostly in the lower half of the face
        assert ch[int(y0 + 0.5 * bh) :].sum() >= 0.75 * ch.sum()
        eyes = max(_region(ch, lm[0], 0.07 * bw), _region(ch, lm[1], 0.07 * bw))
        mouth = _region(ch, 0.5 * (lm[3] + lm[4]), 0.08 * bw)
        assert eyes < 15, (seed, eyes)
        assert mouth > 100, (seed, mouth)


def test_families_and_below_nose_share():
    kinds = [choose_mask(np.random.default_rng(seed)).kind for seed in range(200)]
    assert {k.family for k in kinds} == set(FAMILIES)
    below = sum(k.worn == "below_nose" for k in kinds) / len(kinds)
    assert 0.08 <= below <= 0.3
    # and draw_synthetic_mask reports the same kind it drew
    rgb = _photo()
    for seed in range(20):
        _, kind = draw_synthetic_mask(rgb, BOX, np.random.default_rng(seed), return_kind=True)
        assert kind == choose_mask(np.random.default_rng(seed)).kind


def test_top_edge_over_the_nose_or_below_it():
    """Over the nose, the mask's top edge (on the face's centre line) is above the nose tip; worn
    below the nose, it is between the nose tip and the mouth."""
    rgb = _photo()
    lm = box_landmarks(BOX)
    nose_y, mouth_y = lm[2, 1], lm[3, 1]
    cx = int(lm[2, 0])
    seen = set()
    for seed in range(120):
        out, kind = draw_synthetic_mask(rgb, BOX, np.random.default_rng(seed), lm, return_kind=True)
        ch = _change(out, rgb)[:, cx - 3 : cx + 4]
        top = np.nonzero((ch > 60).all(1))[0].min()  # the first row the mask covers across the strip
        if kind.worn == "nose":
            assert lm[0, 1] < top < nose_y, (seed, kind)
        else:
            assert nose_y < top < mouth_y, (seed, kind)
        seen.add(kind.worn)
    assert seen == {"nose", "below_nose"}


def test_mask_turns_with_the_head():
    """Landmarks of a head rolled 25 degrees: the mask goes where the rolled mouth is."""
    rgb = _photo(400, 400)
    box = (150.0, 130.0, 250.0, 260.0)
    lm = box_landmarks(box)
    a = math.radians(25)
    centre = lm[:2].mean(0)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    rolled = (lm - centre) @ rot.T + centre
    for seed in range(10):
        ch = _change(draw_synthetic_mask(rgb, box, np.random.default_rng(seed), rolled), rgb)
        ys, xs = np.nonzero(ch > 60)
        mass = np.array([xs.mean(), ys.mean()])
        mouth_rolled, mouth_upright = 0.5 * (rolled[3] + rolled[4]), 0.5 * (lm[3] + lm[4])
        assert np.hypot(*(mass - mouth_rolled)) < np.hypot(*(mass - mouth_upright))
        assert mass[0] < mouth_upright[0]  # rolled clockwise: the lower face swings to the image left


def test_work_area_is_the_face_crop(monkeypatch):
    """A face in a huge photo: only a crop around the face is processed, the rest just copied."""
    seen = []
    real = augment.render

    def spy(crop, off, fr, spec, rng):
        seen.append(crop.shape)
        return real(crop, off, fr, spec, rng)

    monkeypatch.setattr(augment, "render", spy)
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    box = (1900.0, 1400.0, 2100.0, 1650.0)
    for seed in range(5):
        out = draw_synthetic_mask(rgb, box, np.random.default_rng(seed))
        assert out.shape == rgb.shape
    assert len(seen) == 5
    for h, w, _ in seen:
        assert h <= 1.5 * 250 and w <= 1.5 * 200


@pytest.mark.parametrize(
    "box",
    [
        (-30.0, -40.0, 60.0, 70.0),
        (260.0, 280.0, 340.0, 380.0),
        (100.0, 100.0, 106.0, 108.0),
        (0, 0, 300, 320),
    ],
)
def test_faces_at_the_edge_tiny_or_filling_the_photo(box):
    rgb = _photo()
    for seed in range(8):
        out = draw_synthetic_mask(rgb, box, np.random.default_rng(seed))
        assert out.shape == rgb.shape and out.dtype == np.uint8


@pytest.mark.parametrize("bad", ["one point", "nan"])
def test_strange_landmarks_fall_back_to_the_box(bad):
    rgb = _photo()
    lm = np.full((5, 2), 150.0, np.float32)  # all in one point: a detector's failure
    if bad == "nan":
        lm = box_landmarks(BOX)
        lm[2] = np.nan
    out = draw_synthetic_mask(rgb, BOX, np.random.default_rng(0), lm)
    assert np.array_equal(out, draw_synthetic_mask(rgb, BOX, np.random.default_rng(0)))
