"""Tests for medforensics.source.verdicts (verdict logic, header normalisation, JSON, table)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medforensics.errors import ConfigError, DecodeError, NotDicomError
from medforensics.eval.calibration import apply_temperature, fit_unknown_threshold
from medforensics.source.verdicts import (
    CLAIM_NOT_IN_MODEL,
    CONSISTENT,
    MISMATCH,
    NO_HEADER_CLAIM,
    UNKNOWN,
    UNREADABLE,
    format_table,
    header_claim,
    match_claim,
    summarise,
    unreadable,
    verdict,
)
from medforensics.io.meta import ImageMeta

CLASSES = ["GE Senographe Essential", "Hologic Selenia Dimensions", "Siemens Mammomat Inspiration"]
CONFIDENT_GE = np.array([0.97, 0.02, 0.01])
UNSURE = np.array([0.45, 0.35, 0.20])
THR = 0.8


def _meta(**kw) -> ImageMeta:
    base = dict(path="a.dcm", format="dicom", rows=64, cols=64,
                manufacturer="GE MEDICAL SYSTEMS",
                model="Senographe Essential VERSION ADS_54.10", serial="1234")
    base.update(kw)
    return ImageMeta(**base)


def test_header_claim_uses_manifest_normalisation() -> None:
    meta = _meta()
    assert header_claim(meta, "manufacturer") == "GE"
    assert header_claim(meta, "model") == "GE Senographe Essential"
    assert header_claim(meta, "unit") == "GE Senographe Essential #1234"
    row = {"Manufacturer": "HOLOGIC, Inc.", "ManufacturerModelName": "Selenia Dimensions",
           "model": ""}
    assert header_claim(row, "model") == "Hologic Selenia Dimensions"
    assert header_claim({"model": "  Hologic  Selenia Dimensions "}, "model") == (
        "Hologic Selenia Dimensions"
    )
    assert header_claim(_meta(manufacturer="", model=""), "model") is None
    with pytest.raises(ConfigError):
        header_claim(meta, "vendor")  # type: ignore[arg-type]


def test_match_claim_exact_then_case_insensitive() -> None:
    assert match_claim("GE Senographe Essential", CLASSES) == "GE Senographe Essential"
    assert match_claim("ge  senographe ESSENTIAL", CLASSES) == "GE Senographe Essential"
    assert match_claim("GE Senographe DS", CLASSES) is None
    assert match_claim("", CLASSES) is None


def test_consistent() -> None:
    claim = header_claim(_meta())
    v = verdict(CONFIDENT_GE, CLASSES, claim, THR, path="a.dcm")
    assert v.verdict == CONSISTENT
    assert v.predicted == "GE Senographe Essential" and v.probability == pytest.approx(0.97)
    assert v.confident is True and v.claim_in_classes is True
    assert [lab for lab, _ in v.top] == CLASSES  # 0.97, 0.02, 0.01
    assert v.message == (
        'consistent: header claims model "GE Senographe Essential"; pixels agree (p=0.97)'
    )


def test_header_edited_to_lie_is_mismatch() -> None:
    edited = _meta(manufacturer="SIEMENS", model="Mammomat Inspiration", serial="999")
    v = verdict(CONFIDENT_GE, CLASSES, header_claim(edited), THR)
    assert v.verdict == MISMATCH
    assert v.claim_class == "Siemens Mammomat Inspiration"
    assert v.claim_probability == pytest.approx(0.01)
    assert v.message.endswith('p("Siemens Mammomat Inspiration")=0.01')
    assert v.message.startswith(
        'MISMATCH: header claims model "Siemens Mammomat Inspiration", '
        'pixels say "GE Senographe Essential" (p=0.97)'
    )


def test_low_confidence_is_unknown_not_mismatch() -> None:
    v = verdict(UNSURE, CLASSES, "Siemens Mammomat Inspiration", THR)
    assert v.verdict == UNKNOWN
    assert v.confident is False
    assert "MISMATCH" not in v.message
    assert "neither confirmed nor refuted" in v.message
    assert "0.45 < threshold 0.80" in v.message
    # with rejection disabled the same probabilities give a (weak) mismatch
    assert verdict(UNSURE, CLASSES, "Siemens Mammomat Inspiration", None).verdict == MISMATCH
    # another open-set score (e.g. a PCE) with its own threshold overrides max-probability
    by_score = verdict(CONFIDENT_GE, CLASSES, CLASSES[0], 60.0, score=12.0)
    assert by_score.verdict == UNKNOWN and by_score.score == 12.0
    assert "score 12 < threshold 60" in by_score.message
    assert verdict(UNSURE, CLASSES, CLASSES[0], 60.0, score=75.0).verdict == CONSISTENT
    # threshold fitted on known scores: at the threshold itself the image is accepted
    thr = fit_unknown_threshold([0.6, 0.7, 0.8, 0.9, 0.95], 0.2)
    assert thr == 0.7
    assert verdict([0.7, 0.2, 0.1], CLASSES, CLASSES[0], thr).verdict == CONSISTENT


def test_claim_outside_classes_is_not_called_mismatch() -> None:
    v = verdict(CONFIDENT_GE, CLASSES, "Fujifilm Amulet Innovality", THR)
    assert v.verdict == CLAIM_NOT_IN_MODEL
    assert v.claim_in_classes is False and v.claim_class is None
    assert "not among the 3 devices this model was trained on" in v.message
    assert "MISMATCH" not in v.message
    # pixels that fit no known device: UNKNOWN takes precedence over claim-not-in-model
    low = verdict(UNSURE, CLASSES, "Fujifilm Amulet Innovality", THR)
    assert low.verdict == UNKNOWN and low.confident is False
    assert "not one of this model's devices either" in low.message


def test_no_header_claim() -> None:
    v = verdict(CONFIDENT_GE, CLASSES, None, THR)
    assert v.verdict == NO_HEADER_CLAIM
    assert v.claim_in_classes is None
    assert 'pixels say "GE Senographe Essential" (p=0.97)' in v.message
    blank_claim = verdict(UNSURE, CLASSES, "  ", THR)
    assert blank_claim.verdict == UNKNOWN and "the header names no device" in blank_claim.message


def test_unreadable_from_read_error() -> None:
    v = unreadable(DecodeError("JPEG 2000 stream ends early", path="x.dcm"))
    assert v.verdict == UNREADABLE and v.reason == "decode-failed"
    assert v.path == "x.dcm"
    assert "JPEG 2000 stream ends early" in v.message
    assert unreadable(NotDicomError("not DICOM"), path="y.txt").reason == "not-an-image-file"
    assert unreadable(ValueError("boom"), path="z").reason == "unreadable"


def test_bad_probabilities_raise() -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        verdict(np.array([2.0, -1.0, 0.5]), CLASSES, None, THR)  # logits, not probabilities
    with pytest.raises(ConfigError):
        verdict(CONFIDENT_GE[:2], CLASSES, None, THR)
    with pytest.raises(ConfigError):
        verdict(CONFIDENT_GE, CLASSES, None, 1.5)


def test_json_and_table() -> None:
    logits = np.log(np.array([0.2, 0.7, 0.1]))
    probs = apply_temperature(logits, 0.5)  # sharpened: ~0.89 for Hologic
    vs = [
        verdict(CONFIDENT_GE, CLASSES, CLASSES[0], THR, path="a.dcm"),
        verdict(probs, CLASSES, CLASSES[0], THR, path="b.dcm"),
        verdict(UNSURE, CLASSES, CLASSES[2], THR, path="c.dcm"),
        verdict(CONFIDENT_GE, CLASSES, "Fujifilm Amulet", THR, path="d.dcm"),
        unreadable(DecodeError("bad stream"), path="e.dcm"),
    ]
    assert [v.verdict for v in vs] == [CONSISTENT, MISMATCH, UNKNOWN, CLAIM_NOT_IN_MODEL,
                                      UNREADABLE]
    for v in vs:
        d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
        assert d["verdict"] == v.verdict and d["message"] == v.message
    d1 = vs[1].to_dict()
    assert d1["top"][0]["label"] == "Hologic Selenia Dimensions"
    assert d1["claim_in_classes"] is True
    assert summarise(vs)[MISMATCH] == 1 and sum(summarise(vs).values()) == 5
    text = format_table(vs, details=True)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#", "File", "Verdict"]
    assert any(line.split()[1:3] == ["b.dcm", "MISMATCH"] for line in lines)
    assert "decode-failed" in text and "matches no known device" in text
    assert "5 image(s): consistent: 1, MISMATCH: 1, UNKNOWN: 1" in text
    assert "2. MISMATCH: header claims model" in text
    assert format_table(vs, fmt="markdown").startswith("| # | File |")
