"""Open-set recognition: the feature model, the conformal threshold and the verdict rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medforensics.data.transforms import count_informative_windows
from medforensics.errors import ConfigError
from medforensics.eval.calibration import fit_temperature
from medforensics.source.verdicts import (
    CLAIM_NOT_IN_MODEL,
    CONSISTENT,
    INSUFFICIENT_EVIDENCE,
    MISMATCH,
    NO_HEADER_CLAIM,
    UNKNOWN,
    OpenSetCheck,
    insufficient,
    verdict,
)
from medforensics.source.openset import (
    FeatureOpenSet,
    TooFewImagesError,
    conformal_threshold,
    leave_one_class_out,
    min_images_for,
)
from medforensics.training.engine import source_loss

CLASSES = ["A", "B", "C"]


def _clusters(rng: np.random.Generator, centres: np.ndarray, n: int, d: int = 8
              ) -> tuple[np.ndarray, np.ndarray]:
    z = np.concatenate([c + rng.standard_normal((n, d)) for c in centres])
    y = np.repeat(np.arange(len(centres)), n)
    return z, y


def test_feature_distance_separates_an_unseen_cluster() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 8.0
    z, y = _clusters(rng, centres, 200)
    model = FeatureOpenSet.fit(z, y, CLASSES)
    known = [model.distance(c + rng.standard_normal((16, 8))) for c in centres for _ in range(20)]
    unseen_centre = np.zeros(8)
    unseen_centre[5] = 8.0
    unseen = [model.distance(unseen_centre + rng.standard_normal((16, 8))) for _ in range(20)]
    thr = conformal_threshold(known, 0.05)
    assert np.mean(np.array(known) > thr) <= 0.05
    assert np.all(np.array(unseen) > thr)
    # a typical known patch scores about 1 (distance divided by the width)
    assert 0.5 < float(np.median(known)) < 2.0


def test_nearest_class_and_arrays_round_trip() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(3, 8) * 6.0
    z, y = _clusters(rng, centres, 100)
    model = FeatureOpenSet.fit(z, y, CLASSES)
    again = FeatureOpenSet.from_arrays(model.to_arrays(), CLASSES)
    sample = centres[2] + rng.standard_normal((10, 8))
    assert model.nearest(sample) == 2 == again.nearest(sample)
    assert again.distance(sample) == pytest.approx(model.distance(sample), rel=1e-4)
    with pytest.raises(ConfigError):
        FeatureOpenSet.from_arrays(model.to_arrays(), ["A", "B"])
    bad = model.to_arrays()
    bad["means"][0, 0] = np.nan
    with pytest.raises(ConfigError):
        FeatureOpenSet.from_arrays(bad, CLASSES)


def test_conformal_threshold_refuses_too_few_images() -> None:
    assert min_images_for(0.05) == 19
    assert min_images_for(0.1) == 9
    with pytest.raises(TooFewImagesError, match="19 are needed"):
        conformal_threshold(np.arange(18.0), 0.05)
    # with 19 scores the threshold is the largest: rank ceil(20 * 0.95) = 19
    assert conformal_threshold(np.arange(19.0), 0.05) == 18.0
    assert conformal_threshold(np.arange(100.0), 0.05) == 95.0


def test_leave_one_class_out_flags_each_removed_cluster() -> None:
    rng = np.random.default_rng(2)
    centres = np.eye(3, 8) * 10.0
    z, y = _clusters(rng, centres, 100)
    model = FeatureOpenSet.fit(z, y, CLASSES)
    per_image = [c + rng.standard_normal((8, 8)) for c in centres for _ in range(25)]
    labels = np.repeat(np.arange(3), 25)
    out = leave_one_class_out(model, per_image, labels, 0.05)
    assert out["mean"] == pytest.approx(1.0)
    assert set(out["per_class"]) == set(CLASSES)


def test_temperature_prior_keeps_separable_data_off_the_bound() -> None:
    logits = np.array([[8.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 7.0]] * 8)
    y = np.tile(np.arange(3), 8)
    free = fit_temperature(logits, y, bounds=(0.05, 20.0))
    tied = fit_temperature(logits, y, bounds=(0.05, 20.0), prior_sd=1.0)
    assert free < 0.2  # the plain fit sharpens towards its lower bound
    assert 0.5 < tied <= 1.0


def test_outlier_exposure_loss_is_uniform_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0]])
    y = torch.tensor([0, 3, 3])
    loss = source_loss(logits, y, outlier_weight=1.0)
    ce = torch.nn.functional.cross_entropy(logits[:1], y[:1], reduction="sum")
    uni = -torch.log_softmax(logits[1:], 1).mean(1).sum()
    assert float(loss) == pytest.approx(float((ce + uni) / 3))
    # a uniform output is the best an outlier row can do
    assert float(source_loss(logits[1:2], y[1:2])) < float(source_loss(logits[2:3], y[2:3]))


P_A = np.array([0.98, 0.01, 0.01])


def test_unknown_takes_precedence_over_claim_not_in_model_and_no_claim() -> None:
    far = OpenSetCheck(feature_distance=9.0, feature_threshold=2.0, features_required=True)
    for claim in ("Z-device", None, "A"):
        v = verdict(P_A, CLASSES, claim, 0.5, check=far)
        assert v.verdict == UNKNOWN and v.confident is False and v.named_by is None
        assert "match none of the 3 devices" in v.message
    near = OpenSetCheck(feature_distance=1.0, feature_threshold=2.0, features_required=True)
    assert verdict(P_A, CLASSES, "Z-device", 0.5, check=near).verdict == CLAIM_NOT_IN_MODEL
    assert verdict(P_A, CLASSES, None, 0.5, check=near).verdict == NO_HEADER_CLAIM
    assert verdict(P_A, CLASSES, "A", 0.5, check=near).verdict == CONSISTENT
    assert verdict(P_A, CLASSES, "B", 0.5, check=near).verdict == MISMATCH


def test_no_threshold_means_the_classifier_names_nothing() -> None:
    check = OpenSetCheck(feature_distance=0.5, feature_threshold=None, features_required=True)
    v = verdict(P_A, CLASSES, "B", 0.5, check=check)
    assert v.verdict == UNKNOWN and "no open-set threshold" in v.message


def test_unit_patterns_name_or_block_a_device() -> None:
    # an enrolled unit of B matches: B is named even though the classifier prefers A
    unit = OpenSetCheck(unit_class="B", unit="B #1")
    v = verdict(P_A, CLASSES, "A", 0.5, check=unit)
    assert v.verdict == MISMATCH and v.predicted == "B" and v.named_by == "unit-pattern"
    # the nearest class has enrolled units and none matches: nothing is named
    blocked = OpenSetCheck(unit_required=True, feature_distance=0.5, feature_threshold=2.0)
    v = verdict(P_A, CLASSES, "B", 0.5, check=blocked)
    assert v.verdict == UNKNOWN and "enrolled units" in v.message


def test_simulated_only_models_say_so() -> None:
    check = OpenSetCheck(knowledge="simulated devices")
    for claim in ("A", "B", None):
        v = verdict(P_A, CLASSES, claim, 0.5, check=check)
        assert v.message.endswith("[this model knows only simulated devices]")
        assert v.to_dict()["model_knowledge"] == "simulated devices"


def test_insufficient_evidence_verdicts() -> None:
    check = OpenSetCheck(informative=1, min_informative=4, evidence_reason="flat: 15")
    v = verdict(P_A, CLASSES, "B", 0.5, check=check)
    assert v.verdict == INSUFFICIENT_EVIDENCE and v.confident is False
    w = insufficient("x.dcm", 0, reason="image 8x8 is smaller than one 64x64 window",
                     header_label="A")
    assert w.verdict == INSUFFICIENT_EVIDENCE and w.predicted is None
    assert w.to_dict()["informative_windows"] == 0


def _blank_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 4095, 256).round(), (256, 1))
    return {
        "flat": np.full((256, 256), 1000.0),
        "saturated": np.where(rng.random((256, 256)) < 0.5, 0.0, 4095.0),
        "clipped": np.clip(2000 + 20 * rng.standard_normal((256, 256)), 0, 1990).round(),
        "ramp": ramp,
        "ramp2d": np.add.outer(np.linspace(0, 1000, 256), np.linspace(0, 3000, 256)).round(),
        "tiny": 1000 + rng.integers(0, 50, (40, 40)).astype(float),
    }


@pytest.mark.parametrize("name", list(_blank_images()))
def test_evidence_floor_on_blank_images(name: str) -> None:
    ev = count_informative_windows(_blank_images()[name].astype(np.float32), 64)
    assert ev.informative == 0 and not ev.enough()
    assert ev.reason


def _anatomy(n: int = 256) -> np.ndarray:
    """A smooth exposure falling off from a bright centre: content spanning many noise levels."""
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    return 800.0 + 2400.0 * np.exp(-(yy ** 2 + xx ** 2) / 0.08)


def test_evidence_floor_passes_noisy_images() -> None:
    rng = np.random.default_rng(3)
    img = (_anatomy() + 15 * rng.standard_normal((256, 256))).round().astype(np.float32)
    ev = count_informative_windows(img, 64)
    assert ev.informative == ev.windows == 16 and ev.enough()
    assert ev.content_span > 5


@pytest.mark.parametrize("noise", ["gaussian 15", "gaussian 300", "uniform 12-bit",
                                   "uniform 8-bit", "poisson"])
def test_noise_alone_is_no_evidence(noise: str) -> None:
    """Noise and nothing else carries no device's image, whatever its level or law."""
    rng = np.random.default_rng(4)
    shape = (256, 256)
    img = {"gaussian 15": 2000 + 15 * rng.standard_normal(shape),
           "gaussian 300": 2000 + 300 * rng.standard_normal(shape),
           "uniform 12-bit": rng.integers(0, 4096, shape),
           "uniform 8-bit": rng.integers(0, 256, shape),
           "poisson": rng.poisson(400.0, shape)}[noise]
    ev = count_informative_windows(np.round(img).astype(np.float32), 64)
    assert ev.informative == 0 and not ev.enough()
    assert ev.reason.startswith("noise alone") and ev.content_span < 0.5
    # the same noise on an exposure with content is read
    with_content = count_informative_windows(
        np.round(_anatomy() * 20 + img - img.mean()).astype(np.float32), 64)
    assert with_content.informative > 0 and with_content.content_span > 5


def test_content_span_contract() -> None:
    from medforensics.data.transforms import content_span
    from medforensics.errors import ConfigError, InvalidArrayError

    rng = np.random.default_rng(6)
    noise = rng.normal(0, 50, (256, 256))
    assert content_span(noise) < 0.3 < 5 < content_span(_anatomy() + noise)
    assert content_span(np.full((64, 64), 7.0)) == float("inf")  # no noise to measure against
    with pytest.raises(InvalidArrayError):
        content_span(noise[:20, :20])
    with pytest.raises(ConfigError):
        content_span(noise, window=4)


def test_a_flat_field_is_not_noise_alone() -> None:
    """A flat exposure's gentle heel effect is content: its unit pattern stays readable."""
    rng = np.random.default_rng(5)
    heel = 2000.0 * (1 + 0.01 * np.linspace(-1, 1, 256))[None, :]
    ev = count_informative_windows(
        np.round(heel + 20 * rng.standard_normal((256, 256))).astype(np.float32), 64)
    assert ev.informative == ev.windows and ev.content_span > 1


def test_blocks_take_the_larger_distance_and_survive_the_round_trip() -> None:
    rng = np.random.default_rng(2)
    centres = np.hstack([np.eye(3, 8) * 8.0, np.eye(3, 4) * 8.0])  # features | noise shape
    z, y = _clusters(rng, centres, 150, d=12)
    model = FeatureOpenSet.fit(z, y, CLASSES, blocks=(8, 4))
    assert model.blocks == (8, 4) and model.precision[:8, 8:].any() == 0
    known = centres[1] + rng.standard_normal((16, 12))
    # network features of class B, noise shape of nothing known: far in the second block
    odd = known.copy()
    odd[:, 8:] = np.array([0.0, 0.0, 0.0, 8.0]) + rng.standard_normal((16, 4))
    assert model.distance(known) < 2.0
    assert model.distance(odd) > 5.0
    features_part, shape_part = model.block_distances(odd)
    assert features_part < 2.0 < 5.0 < shape_part
    # one block alone would not have seen it
    only_features = FeatureOpenSet.fit(z[:, :8], y, CLASSES)
    assert only_features.distance(odd[:, :8]) < 2.0
    # a noise shape that could not be measured adds nothing (the features decide)
    unmeasured = odd.copy()
    unmeasured[:, 8:] = np.nan
    assert model.distance(unmeasured) == pytest.approx(only_features.distance(odd[:, :8]),
                                                       rel=0.2)
    again = FeatureOpenSet.from_arrays(model.to_arrays(), CLASSES)
    assert again.blocks == (8, 4)
    assert again.distance(odd) == pytest.approx(model.distance(odd), rel=1e-4)
    bad = model.to_arrays()
    bad["blocks"] = np.array([8, 3])
    with pytest.raises(ConfigError, match="sum to 12"):
        FeatureOpenSet.from_arrays(bad, CLASSES)


def test_blocks_fit_leaves_unmeasured_rows_out_of_that_block() -> None:
    rng = np.random.default_rng(3)
    centres = np.hstack([np.eye(3, 6) * 6.0, np.eye(3, 3) * 6.0])
    z, y = _clusters(rng, centres, 60, d=9)
    z[::5, 6:] = np.nan  # every fifth image without a noise shape
    model = FeatureOpenSet.fit(z, y, CLASSES, blocks=(6, 3))
    assert np.all(np.isfinite(model.means)) and np.all(np.isfinite(model.precision))
    z[:, :1] = np.nan  # the network's block must be complete
    with pytest.raises(ConfigError, match="NaN"):
        FeatureOpenSet.fit(z, y, CLASSES, blocks=(6, 3))
