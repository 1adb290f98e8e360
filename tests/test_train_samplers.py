"""Tests of the class-balanced samplers (medforensics.training.samplers)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from medforensics.errors import ConfigError
from medforensics.training.samplers import (
    BalancedBatchSampler,
    ClassWeightedSampler,
    class_weights,
)

# Very unbalanced: 900 / 90 / 10 items.
LABELS = [0] * 900 + [1] * 90 + [2] * 10


def test_class_weights_give_each_class_equal_mass() -> None:
    p = class_weights(LABELS)
    lab = np.asarray(LABELS)
    assert p.sum() == pytest.approx(1.0)
    for c in range(3):
        assert p[lab == c].sum() == pytest.approx(1 / 3)


def test_weighted_sampler_draws_classes_uniformly() -> None:
    s = ClassWeightedSampler(LABELS, num_samples=30000, seed=1)
    drawn = np.asarray(LABELS)[list(s)]
    counts = np.bincount(drawn, minlength=3)
    # Chi-square goodness of fit against uniform over classes: must not be rejected ...
    assert stats.chisquare(counts).pvalue > 0.001
    # ... while the natural frequencies (90/9/1 %) would be rejected outright.
    assert stats.chisquare(counts, f_exp=np.array([0.9, 0.09, 0.01]) * 30000).pvalue < 1e-10
    # Within the minority class every item is used (oversampling, roughly uniform).
    minority = Counter(i for i in s if LABELS[i] == 2)
    assert len(minority) == 10
    assert stats.chisquare(list(minority.values())).pvalue > 0.001


def test_weighted_sampler_is_epoch_seeded() -> None:
    a = ClassWeightedSampler(LABELS, seed=3)
    b = ClassWeightedSampler(LABELS, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)
    c = ClassWeightedSampler(LABELS, seed=4)
    c.set_epoch(5)
    assert list(a) != list(c)


@pytest.mark.parametrize("world", [2, 3])
def test_weighted_sampler_ranks_share_one_draw(world: int) -> None:
    single = ClassWeightedSampler(LABELS, num_samples=999, seed=7, num_replicas=1, rank=0)
    shards = [
        ClassWeightedSampler(LABELS, num_samples=999, seed=7, num_replicas=world, rank=r,
                             tag_draws=True)
        for r in range(world)
    ]
    for s in [single, *shards]:
        s.set_epoch(2)
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1  # equal share per rank
    tagged = [pair for s in shards for pair in s]
    draws = sorted(d for _, d in tagged)
    assert draws == list(range(len(tagged)))  # disjoint, no gaps
    # Same global draw as single-process (up to the rounding to a multiple of world).
    by_draw = dict((d, i) for i, d in tagged)
    base = list(single)
    assert [by_draw[d] for d in range(len(base))] == base


def test_balanced_batches_have_equal_counts_per_class() -> None:
    s = BalancedBatchSampler(LABELS, batch_size=12, seed=0)
    lab = np.asarray(LABELS)
    batches = list(s)
    assert len(batches) == len(s) == 84  # ceil(1000 / 12)
    for batch in batches:
        assert len(batch) == 12
        assert np.bincount(lab[batch], minlength=3).tolist() == [4, 4, 4]
    # Minority items cycle: each of the 10 is used 84*4/10 = 33 or 34 times.
    minority = Counter(i for b in batches for i in b if LABELS[i] == 2)
    assert set(minority.values()) <= {33, 34}
    # Majority items are not repeated before the class is exhausted.
    majority = [i for b in batches for i in b if LABELS[i] == 0]
    assert len(set(majority)) == len(majority)


def test_balanced_batches_round_down_and_reject_tiny(caplog: pytest.LogCaptureFixture) -> None:
    s = BalancedBatchSampler(LABELS, batch_size=10, seed=0)
    assert s.batch_size == 9
    assert "rounded down" in caplog.text
    with pytest.raises(ConfigError):
        BalancedBatchSampler(LABELS, batch_size=2)


def test_balanced_batches_ranks_disjoint_and_deterministic() -> None:
    single = BalancedBatchSampler(LABELS, batch_size=6, num_batches=20, seed=9)
    shards = [
        BalancedBatchSampler(LABELS, batch_size=6, num_batches=20, seed=9, num_replicas=2,
                             rank=r)
        for r in range(2)
    ]
    for s in [single, *shards]:
        s.set_epoch(1)
    all_batches = list(single)
    assert list(shards[0]) == all_batches[0::2]
    assert list(shards[1]) == all_batches[1::2]
    single.set_epoch(2)
    assert list(single) != all_batches


def test_bad_labels_rejected() -> None:
    with pytest.raises(ConfigError):
        ClassWeightedSampler([])
    with pytest.raises(ConfigError):
        ClassWeightedSampler([0.5, 1.0])
    with pytest.raises(ConfigError):
        ClassWeightedSampler([0, 1], num_replicas=2, rank=2)
