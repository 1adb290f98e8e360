"""Tests for medforensics.eval.metrics (hand-computed values, sklearn cross-checks, NaN rules)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score, roc_curve

from medforensics.errors import ConfigError
from medforensics.eval.metrics import best_threshold, binary_auc, binary_metrics, bootstrap_interval, roc_points
from medforensics.eval.classification import MISSING_GROUP, aggregate_by_group, classification_report, confusion_matrix, grouped_accuracy, normalise_rows
from medforensics.common.jsonio import to_jsonable

CLASSES = ["GE", "Philips", "Siemens"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])


def _probs_with_argmax(pred: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Random probability rows whose arg-max is ``pred`` (strictly)."""
    rng = np.random.default_rng(seed)
    out = np.empty((pred.size, n_classes))
    for i, k in enumerate(pred):
        row = rng.dirichlet(np.ones(n_classes))
        j = int(np.argmax(row))
        row[[j, k]] = row[[k, j]]
        row[k] += 1e-6  # no ties
        out[i] = row / row.sum()
    assert np.array_equal(out.argmax(axis=1), pred)
    return out


def test_confusion_matrix_counts_and_rows() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    rn = normalise_rows(cm)
    np.testing.assert_allclose(rn[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(rn.sum(axis=1), 1.0)


def test_per_class_metrics_hand_computed() -> None:
    probs = _probs_with_argmax(Y_PRED, 3)
    rep = classification_report(Y_TRUE, probs, CLASSES)
    # By hand from the confusion matrix [[3,1,0],[0,2,1],[1,0,2]] with N = 10:
    # GE:      TP=3 FN=1 FP=1 (a Siemens image) TN=5
    # Philips: TP=2 FN=1 FP=1 TN=6 ; Siemens: TP=2 FN=1 FP=1 TN=6
    expected = {
        "GE": dict(n=4, tp=3, fn=1, fp=1, tn=5, tpr=3 / 4, tnr=5 / 6, ppv=3 / 4, npv=5 / 6),
        "Philips": dict(n=3, tp=2, fn=1, fp=1, tn=6, tpr=2 / 3, tnr=6 / 7, ppv=2 / 3, npv=6 / 7),
        "Siemens": dict(n=3, tp=2, fn=1, fp=1, tn=6, tpr=2 / 3, tnr=6 / 7, ppv=2 / 3, npv=6 / 7),
    }
    for m in rep.per_class:
        exp = expected[m.label]
        for key, value in exp.items():
            assert getattr(m, key) == pytest.approx(value), (m.label, key)
        assert m.acc == pytest.approx(0.8)  # (TP + TN) / N = 8/10 for every class here
    assert rep.n == 10
    assert rep.accuracy == pytest.approx(0.7)
    assert rep.balanced_accuracy == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert rep.balanced_accuracy == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert rep.macro["tpr"] == pytest.approx(rep.balanced_accuracy)
    assert rep.macro["npv"] == pytest.approx((5 / 6 + 6 / 7 + 6 / 7) / 3)
    assert rep.confusion == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert rep.notes == []


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding creates ties
    assert binary_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_points(y, s)
    fpr_sk, tpr_sk, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr_sk)
    np.testing.assert_allclose(tpr, tpr_sk)
    assert np.isinf(thr[0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(binary_auc(y, s))


def test_multiclass_auc_matches_sklearn_ovr() -> None:
    rng = np.random.default_rng(4)
    n, c = 300, 4
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rep = classification_report(y, probs, ["a", "b", "c", "d"])
    for m in rep.per_class:
        assert m.auc == pytest.approx(roc_auc_score(y == m.index, probs[:, m.index]))
    assert rep.macro_auc == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert rep.accuracy == pytest.approx(np.mean(probs.argmax(1) == y))


def test_absent_class_is_nan_with_note_and_json_null() -> None:
    y_true = np.array([0, 0, 1, 1, 0])
    y_pred = np.array([0, 2, 1, 1, 0])  # class 2 predicted once, never true
    probs = _probs_with_argmax(y_pred, 3, seed=1)
    rep = classification_report(y_true, probs, ["a", "b", "c"])
    c = rep.per_class[2]
    assert c.n == 0 and c.fp == 1
    assert math.isnan(c.tpr) and math.isnan(c.auc) and math.isnan(c.npv) is False
    assert c.ppv == 0.0  # predicted once, wrongly: 0/1, defined
    assert rep.macro_auc_classes == ["a", "b"]
    assert rep.balanced_accuracy == pytest.approx((2 / 3 + 1.0) / 2)
    # macro averages skip the absent class (its TNR 4/5 and ACC 4/5 would be averaged in)
    assert rep.macro["tnr"] == pytest.approx(1.0)
    assert rep.macro["acc"] == pytest.approx((4 / 5 + 1.0) / 2)
    assert any("'c'" in note and "no samples" in note for note in rep.notes)
    assert math.isnan(rep.confusion_normalised[2][0])
    text = json.dumps(rep.to_jsonable(), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["per_class"][2]["tpr"] is None
    assert loaded["per_class"][2]["ppv"] == 0.0


def test_never_predicted_class_has_nan_ppv() -> None:
    y_true = np.array([0, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1])
    rep = classification_report(y_true, _probs_with_argmax(y_pred, 3, seed=2), ["a", "b", "c"])
    assert math.isnan(rep.per_class[2].ppv)
    assert rep.per_class[2].tpr == 0.0
    assert any("never predicted" in note for note in rep.notes)


def test_single_class_in_y_true_does_not_crash() -> None:
    y_true = np.zeros(4, dtype=int)
    probs = _probs_with_argmax(np.array([0, 0, 1, 0]), 2, seed=5)
    rep = classification_report(y_true, probs, ["a", "b"])
    assert math.isnan(rep.macro_auc)
    assert rep.accuracy == pytest.approx(0.75)
    assert any("macro AUC undefined" in note for note in rep.notes)


@pytest.mark.parametrize(
    "y,probs,msg",
    [
        ([0, 1], [[0.5, 0.5]], "rows"),
        ([0, 3], [[0.5, 0.5], [0.5, 0.5]], "outside"),
        ([0, 1], [[2.0, -1.0], [0.3, 0.3]], "softmax"),
        ([], np.zeros((0, 2)), "empty"),
    ],
)
def test_bad_input_raises_config_error(y, probs, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        classification_report(np.asarray(y, dtype=int), probs, ["a", "b"])


def test_grouped_accuracy_with_missing_group() -> None:
    y_true = [0, 1, 1, 0, 2, 2]
    y_pred = [0, 1, 0, 0, 2, 1]
    groups = ["HAND", "HAND", "CHEST", None, "CHEST", ""]
    res = grouped_accuracy(y_true, y_pred, groups)
    by = {g.group: g for g in res.groups}
    assert set(by) == {"CHEST", "HAND", MISSING_GROUP}
    assert (by["HAND"].n, by["HAND"].correct) == (2, 2)
    assert by["CHEST"].accuracy == pytest.approx(0.5)
    assert (by[MISSING_GROUP].n, by[MISSING_GROUP].correct) == (2, 1)
    assert res.total.n == 6 and res.total.accuracy == pytest.approx(4 / 6)
    assert sum(g.n for g in res.groups) == res.total.n
    assert res.as_dict()["Total"] == pytest.approx(4 / 6)


def test_aggregate_by_group_mean_and_majority() -> None:
    probs = np.array(
        [
            [0.6, 0.4],  # patient A: votes 0, 0, 1 ; mean favours 1
            [0.55, 0.45],
            [0.0, 1.0],
            [0.3, 0.7],  # patient B: votes 1, 0 (tie) ; mean 0.45/0.55 -> 1
            [0.6, 0.4],
        ]
    )
    groups = ["A", "A", "A", "B", "B"]
    mean = aggregate_by_group(probs, groups, "mean", y_true=[0, 0, 0, 1, 1])
    assert mean.groups == ["A", "B"]
    np.testing.assert_allclose(mean.probs[0], [1.15 / 3, 1.85 / 3])
    assert mean.y_pred.tolist() == [1, 1]
    assert mean.counts.tolist() == [3, 2]
    assert mean.y_true.tolist() == [0, 1]

    maj = aggregate_by_group(probs, groups, "majority")
    np.testing.assert_allclose(maj.probs, [[2 / 3, 1 / 3], [0.5, 0.5]])
    assert maj.y_pred.tolist() == [0, 1]  # B's tie broken by the mean probability
    assert maj.y_true is None
    rep = classification_report(mean.y_true, maj.probs, ["x", "y"], y_pred=maj.y_pred)
    assert rep.accuracy == 1.0
    json.dumps(to_jsonable(maj), allow_nan=False)


def test_aggregate_by_group_rejects_mixed_labels() -> None:
    with pytest.raises(ConfigError, match="several true classes"):
        aggregate_by_group([[0.5, 0.5], [0.5, 0.5]], ["p", "p"], y_true=[0, 1])
    with pytest.raises(ConfigError, match="method"):
        aggregate_by_group([[0.5, 0.5]], ["p"], method="median")  # type: ignore[arg-type]


def test_binary_metrics_and_nan() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])
    m = binary_metrics(labels, scores, threshold=0.5)
    # called positive: 0.9, 0.8, 0.6, 0.7 -> TP=3 FP=1 ; FN=1 (0.3) ; TN=3
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 1, 3)
    assert m.accuracy == pytest.approx(6 / 8)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 4)
    assert m.specificity == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(f1_score(labels, scores >= 0.5))
    assert m.auc == pytest.approx(roc_auc_score(labels, scores))
    none_called = binary_metrics(labels, scores, threshold=2.0)
    assert math.isnan(none_called.precision) and none_called.recall == 0.0
    all_neg = binary_metrics(np.zeros(3, int), [0.1, 0.2, 0.9])
    assert math.isnan(all_neg.auc) and math.isnan(all_neg.recall)
    assert json.loads(json.dumps(all_neg.to_jsonable(), allow_nan=False))["auc"] is None


def test_best_threshold_criteria() -> None:
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])
    t = best_threshold(labels, scores, "youden")
    # candidates: 0.6 -> TPR 3/4 FPR 0 (J=.75); 0.35 -> TPR 1, FPR 1/4 (J=.75): tie -> higher
    assert t == pytest.approx(0.6)
    assert binary_metrics(labels, scores, t).specificity == 1.0
    t_acc = best_threshold(labels, scores, "accuracy")
    assert binary_metrics(labels, scores, t_acc).accuracy == pytest.approx(7 / 8)
    t_f1 = best_threshold(labels, scores, "f1")
    best_f1 = max(f1_score(labels, scores >= c) for c in scores)
    assert binary_metrics(labels, scores, t_f1).f1 == pytest.approx(best_f1)
    with pytest.raises(ConfigError):
        best_threshold(np.ones(3, int), [0.1, 0.2, 0.3], "youden")
    with pytest.raises(ConfigError, match="0/1"):
        binary_metrics([0, 2], [0.1, 0.2])


# ------------------------------------------------------------------------------ bootstrap
def test_bootstrap_interval_of_a_mean_has_the_textbook_width() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 2.0, size=400)
    lo, hi = bootstrap_interval(lambda ix: float(x[ix].mean()), x.size, n_boot=2000, seed=1)
    assert lo < x.mean() < hi
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)  # normal-theory half width
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)
    # deterministic for a seed, different for another
    assert bootstrap_interval(lambda ix: float(x[ix].mean()), x.size, n_boot=2000,
                              seed=1) == (lo, hi)
    assert bootstrap_interval(lambda ix: float(x[ix].mean()), x.size, n_boot=2000,
                              seed=2) != (lo, hi)


def test_bootstrap_interval_resamples_clusters_not_rows() -> None:
    rng = np.random.default_rng(4)
    unique = rng.normal(size=20)
    rows = np.repeat(unique, 5)  # every value five times: one cluster each
    clusters = np.repeat(np.arange(20), 5).tolist()
    by_cluster = bootstrap_interval(lambda ix: float(rows[ix].mean()), rows.size,
                                    clusters=clusters, seed=0)
    by_value = bootstrap_interval(lambda ix: float(unique[ix].mean()), unique.size, seed=0)
    naive = bootstrap_interval(lambda ix: float(rows[ix].mean()), rows.size, seed=0)
    # five copies of a row carry the information of one: the clustered interval is that of
    # the 20 distinct values (same draws), the naive one about sqrt(5) times too narrow
    assert by_cluster == pytest.approx(by_value, abs=1e-12)
    ratio = (by_cluster[1] - by_cluster[0]) / (naive[1] - naive[0])
    assert 1.7 < ratio < 2.8


def test_bootstrap_interval_nan_statistic_and_bad_arguments() -> None:
    # AUC of resamples that can miss a class: NaN resamples are skipped
    y = np.array([1, 0] + [0] * 8)
    s = np.linspace(1, 0, 10)
    lo, hi = bootstrap_interval(lambda ix: binary_auc(y[ix], s[ix]), 10, n_boot=500)
    assert lo == hi == 1.0  # the one positive always ranks first when drawn
    assert all(math.isnan(v) for v in bootstrap_interval(lambda ix: float("nan"), 5))
    with pytest.raises(ConfigError):
        bootstrap_interval(lambda ix: 0.0, 5, level=1.0)
    with pytest.raises(ConfigError):
        bootstrap_interval(lambda ix: 0.0, 5, clusters=[0, 1])
    with pytest.raises(ConfigError):
        bootstrap_interval(lambda ix: 0.0, 0)


def test_headline_intervals_cluster_by_patient() -> None:
    from medforensics.source.evaluate import headline_intervals

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    probs = np.full((60, 3), 0.1)
    probs[np.arange(60), y] = 0.8
    wrong = rng.choice(60, size=9, replace=False)  # 9 images predicted as the next class
    probs[wrong] = 0.1
    probs[wrong, (y[wrong] + 1) % 3] = 0.8
    patients = [f"p{i // 2}" for i in range(60)]  # two images per patient
    iv = headline_intervals(y, probs, patients, n_boot=500)
    assert iv["n_clusters"] == 30 and set(iv["tpr"]) == {0, 1, 2}
    acc = float(np.mean(probs.argmax(1) == y))  # 51 / 60
    lo, hi = iv["accuracy"]
    assert lo < acc < hi and hi - lo > 0.1
    assert iv["balanced_accuracy"][0] < acc < iv["balanced_accuracy"][1]
    assert 0.5 < iv["macro_auc"][0] <= iv["macro_auc"][1] <= 1.0
    # perfect predictions: degenerate interval at 1
    perfect = headline_intervals(y, np.eye(3)[y] * 0.9 + 0.1 / 3, patients, n_boot=100)
    assert perfect["accuracy"] == [1.0, 1.0] and perfect["tpr"][2] == [1.0, 1.0]
