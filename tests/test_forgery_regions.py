"""Tests for forgery.regions.describe_regions."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.errors import InvalidArrayError
from medforensics.forgery.regions import describe_regions


def test_regions_boxes_areas_and_cue() -> None:
    p = np.zeros((100, 200), np.float32)
    p[10:30, 20:60] = 0.9  # 800 px, copy-move area
    p[50:60, 100:110] = 0.6  # 100 px, noise area
    p[90:92, 190:192] = 1.0  # 4 px speck: below min_area
    cm = np.zeros_like(p)
    cm[10:30, 20:60] = 0.9
    nz = np.zeros_like(p)
    nz[50:60, 100:110] = 0.6
    nz[10:30, 20:60] = 0.2
    copies = [{"bbox_a": (120, 5, 160, 25), "bbox_b": (20, 10, 60, 30), "shift": (5, -100),
               "transform": "identity", "target_side": "b"}]
    regs = describe_regions(p, {"copymove": cm, "noise": nz}, copies=copies)
    assert len(regs) == 2
    a, b = regs
    assert a["bbox"] == [20, 10, 60, 30] and a["area_px"] == 800
    assert a["area_percent"] == pytest.approx(100 * 800 / 20000)
    assert a["cue"] == "copymove" and a["mean_prob"] == pytest.approx(0.9)
    assert a["copy_of"]["partner_bbox"] == [120, 5, 160, 25]
    assert a["copy_of"]["role"] == "pasted copy"
    assert b["bbox"] == [100, 50, 110, 60] and b["cue"] == "noise" and "copy_of" not in b
    # the speck is listed when min_area allows it
    assert len(describe_regions(p, min_area=1)) == 3
    assert describe_regions(np.zeros((5, 5))) == []


def test_regions_bad_shapes() -> None:
    with pytest.raises(InvalidArrayError):
        describe_regions(np.zeros(5))
    with pytest.raises(InvalidArrayError):
        describe_regions(np.zeros((5, 5)), {"noise": np.zeros((4, 5))})
