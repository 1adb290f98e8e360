"""Pixel-level localization metrics (forgery.metrics) on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medforensics.errors import InvalidArrayError
from medforensics.forgery.metrics import best_f1, boundary_band, pixel_scores, summarize


def _square(n: int = 20, a: int = 5, b: int = 15) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[a:b, a:b] = True
    return m


def test_boundary_band_counts() -> None:
    m = _square()
    # dilate by 1 (cross): 10x10 + 4 sides of 10 = 140; erode by 1: 8x8 = 64
    assert boundary_band(m, 1).sum() == 140 - 64
    band2 = boundary_band(m, 2)
    assert not band2[10, 10] and band2[5, 5] and band2[4, 10] and band2[3, 10] and not band2[2, 10]
    assert boundary_band(m, 0).sum() == 0
    assert boundary_band(np.zeros((5, 5), bool), 3).sum() == 0
    # image borders do not erode a mask touching them
    edge = np.zeros((10, 10), bool)
    edge[:, :5] = True
    assert not boundary_band(edge, 1)[5, 0]


def test_perfect_and_shifted_predictions_with_band() -> None:
    m = _square()
    perfect = pixel_scores(m.astype(float), m, band=0)
    assert perfect.f1_best == 1.0 and perfect.f1_fixed == 1.0 and perfect.iou_fixed == 1.0
    assert perfect.auc == 1.0 and perfect.fp_rate_fixed == 0.0
    # prediction shifted by 1 px: errors only at the edges, which a 1-px band removes...
    shifted = np.roll(m, 1, axis=1).astype(float)
    raw = pixel_scores(shifted, m, band=0)
    tp, fp, fn = 90, 10, 10
    assert raw.f1_fixed == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert raw.iou_fixed == pytest.approx(tp / (tp + fp + fn))
    assert raw.precision_fixed == pytest.approx(0.9) and raw.recall_fixed == pytest.approx(0.9)
    banded = pixel_scores(shifted, m, band=1)
    assert banded.f1_fixed == 1.0 and banded.iou_fixed == 1.0
    assert banded.n_pixels == 400 - boundary_band(m, 1).sum()
    assert banded.n_positive == 64


def test_best_threshold_and_fixed_threshold() -> None:
    m = _square()
    s = np.where(m, 0.4, 0.1)  # right ranking, below the fixed threshold
    sc = pixel_scores(s, m, band=0)
    assert sc.f1_best == 1.0 and sc.threshold_best == pytest.approx(0.4)
    assert sc.f1_fixed == 0.0 and sc.iou_fixed == 0.0 and sc.recall_fixed == 0.0
    assert sc.auc == 1.0
    f1, thr = best_f1(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0], bool))
    # t=0.9: P=1/1 R=1/2 F1=2/3; t=0.7: TP=2 called=3 -> 4/5
    assert f1 == pytest.approx(0.8) and thr == pytest.approx(0.7)


def test_original_image_and_summary() -> None:
    empty = np.zeros((10, 10), bool)
    s = np.zeros((10, 10))
    s[0, :5] = 0.9
    sc = pixel_scores(s, empty)
    assert math.isnan(sc.f1_best) and math.isnan(sc.auc) and sc.n_positive == 0
    assert sc.fp_rate_fixed == pytest.approx(0.05)
    m = _square()
    good = pixel_scores(m.astype(float), m, band=0)
    summ = summarize([good, sc])
    assert summ["n_images"] == 2 and summ["f1_best"] == 1.0
    assert summ["fp_rate_fixed"] == pytest.approx(0.025)
    with pytest.raises(InvalidArrayError):
        pixel_scores(np.zeros((3, 3)), np.zeros((4, 4), bool))
    with pytest.raises(InvalidArrayError):
        pixel_scores(np.full((3, 3), np.nan), np.zeros((3, 3), bool))
    # uint8 0/255 masks are accepted
    assert pixel_scores(m.astype(float), (m * 255).astype(np.uint8), band=0).f1_fixed == 1.0


def test_confidence_intervals_on_hand_made_records() -> None:
    from medforensics.forgery.evaluate import confidence_intervals

    recs = []
    # 6 source images, 2 pairs each; copy-moves always ranked above every original, splices
    # mixed in with them
    for src in range(6):
        for k, kind in enumerate(("copy-move", "splice-device")):
            t_score = 0.9 if kind == "copy-move" else (0.6 if src % 2 else 0.1)
            recs.append({"label": 1, "score": t_score, "kind": kind, "cluster": f"s{src}",
                         "pixel_f1_best": 0.8 if kind == "copy-move" else 0.4})
            recs.append({"label": 0, "score": 0.2 + 0.05 * src, "kind": kind,
                         "cluster": f"s{src}"})
    ci = confidence_intervals(recs, threshold=0.5, n_boot=400, seed=0)
    assert ci["n_clusters"] == 6 and ci["level"] == 0.95
    cm, sp = ci["by_kind"]["copy-move"], ci["by_kind"]["splice-device"]
    assert cm["image_auc"] == [1.0, 1.0] and cm["recall"] == [1.0, 1.0]
    assert cm["pixel_f1_best"] == pytest.approx([0.8, 0.8])
    # splices: AUC 0.5 on the full set, and an interval that is really uncertain
    assert sp["image_auc"][0] < 0.5 < sp["image_auc"][1]
    assert sp["image_auc"][1] - sp["image_auc"][0] > 0.3
    assert 0.0 <= sp["recall"][0] < 0.5 < sp["recall"][1] <= 1.0
    # every source image has one 0.8 and one 0.4 edit: the mean is 0.6 in every resample
    assert ci["pixel_f1_best"] == pytest.approx([0.6, 0.6])
    assert ci["accuracy"][0] < ci["accuracy"][1]
    # no threshold: no recall / accuracy intervals
    assert "accuracy" not in confidence_intervals(recs, n_boot=50)
