"""Hard-edged paste seams (dsp/seams.py) and the seam cue (forgery/seam.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medforensics.dsp.seams import Seam, boundary_excess, seam_boxes, straight_seams
from medforensics.errors import InvalidArrayError
from medforensics.forgery.localize import default_cues, localize
from medforensics.forgery.cues.seam import SeamSkipped, seam_cue


def _scene(seed: int, shape: tuple[int, int] = (320, 384), noise: float = 12.0) -> np.ndarray:
    """Smooth anatomy-like content (blurred random field) plus white noise, float32."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=shape), 12) * 9000 + 2000
    return (base + rng.normal(0, noise, shape)).astype(np.float32)


def _paste(host: np.ndarray, donor: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Hard-edged paste of donor[20:20+h, 30:30+w] at (y, x), mean-matched to the host."""
    out = host.copy()
    block = donor[20:20 + h, 30:30 + w].astype(np.float64)
    block += host[y:y + h, x:x + w].mean() - block.mean()
    out[y:y + h, x:x + w] = block
    return out


@pytest.mark.parametrize("seed,y,x,h,w", [(1, 60, 80, 96, 120), (2, 150, 200, 80, 80),
                                          (3, 30, 40, 140, 100)])
def test_pasted_block_is_recovered_as_one_box(seed: int, y: int, x: int, h: int, w: int) -> None:
    img = _paste(_scene(seed), _scene(seed + 100), y, x, h, w)
    res = seam_cue(img)
    assert res.boxes, "no box found"
    b = res.boxes[0]
    assert b.corners >= 3
    # edges at seen corners are exact: (x0, y0, x1, y1) of the pasted block
    assert b.box == (x, y, x + w, y + h)
    assert res.map[y + h // 2, x + w // 2] >= 0.95
    assert res.map[0, 0] == 0.0
    # the box is the only flagged area
    assert np.count_nonzero(res.map) == h * w


def test_untouched_images_have_no_box() -> None:
    for seed in range(4):
        res = seam_cue(_scene(seed))
        assert res.boxes == []
        assert not res.map.any()


def test_clipped_specks_along_the_border_do_not_hide_a_paste() -> None:
    """A paste whose border passes scattered clipped pixels (a dark pedestal, a saturated
    speck every few rows) is still outlined: the pairs touching those pixels are left out of
    the means instead of blanking the whole window around them."""
    y, x, h, w = 60, 80, 96, 120
    img = _paste(_scene(11), _scene(111), y, x, h, w)
    rng = np.random.default_rng(4)
    hi = float(img.max()) + 500.0
    for r in range(y - 10, y + h + 10, 6):  # specks along both vertical seams
        for c in (x - 2, x + w + 1):
            img[r + int(rng.integers(0, 3)), c] = hi
    for c in range(x - 10, x + w + 10, 6):  # and along both horizontal seams
        for r in (y - 2, y + h + 1):
            img[r, c + int(rng.integers(0, 3))] = hi
    res = seam_cue(img)
    assert res.boxes, "no box found"
    assert res.boxes[0].corners >= 3
    assert res.boxes[0].box == (x, y, x + w, y + h)
    # the old rule (any clipped pixel within window / 2 rows and 3 columns blanks the
    # boundary) leaves nothing to measure along these borders
    e = boundary_excess(img, clip_margin=1)
    assert e[y + 10:y + h - 10, x - 1].mean() > 1.0


def test_detector_seams_and_graphics_are_not_pastes() -> None:
    img = _scene(5)
    img[:, 200:] += 300.0  # a full-height gain step (detector / stitching seam)
    img[40:120, 40:160] = img.min()  # a flat, clipped annotation box
    img[200:260, 250:330] = 1234.0  # a flat grey label (not at the image's extremes)
    res = seam_cue(img)
    assert res.boxes == []


def test_lossy_inputs_and_small_images_are_skipped() -> None:
    img = _paste(_scene(6), _scene(7), 60, 80, 96, 120)
    with pytest.raises(SeamSkipped, match="8 x 8"):
        seam_cue(img, lossy=True)
    with pytest.raises(InvalidArrayError):
        seam_cue(img[:40, :40])


def test_boundary_excess_peaks_only_at_the_seam_column() -> None:
    img = _paste(_scene(8), _scene(9), 60, 80, 96, 120)
    e = boundary_excess(img)
    assert e.shape == (img.shape[0], img.shape[1] - 1)
    col = e[80:140].mean(axis=0)  # rows inside the block
    assert int(np.argmax(col)) in (79, 199)  # boundaries x0 - 1 and x1 - 1
    assert col[79] > 1.0 and col[199] > 1.0
    inner = np.r_[col[85:195], col[205:]]
    assert inner.max() < 0.3


def test_straight_seams_length_limits_and_corners() -> None:
    e = np.zeros((200, 100), np.float32)
    e[50:90, 10] = 1.0  # 40 long: kept
    e[100:110, 20] = 1.0  # 10 long: too short
    e[:, 30] = 1.0  # full height: a detector seam, not kept
    seams = straight_seams(e, axis="v", min_len=24, max_frac=0.6)
    assert seams == [Seam("v", 10, 50, 90)]
    # a horizontal seam starting at the vertical one's top end: one corner, box below-right
    boxes = seam_boxes(seams, [Seam("h", 49, 11, 60)], trim=0)
    assert len(boxes) == 1 and boxes[0].corners == 1
    assert boxes[0].box == (11, 50, 60, 90)
    assert boxes[0].side == 40


def test_seam_cue_in_the_default_cue_list_and_localize() -> None:
    assert "seam" in default_cues()
    assert "seam" not in default_cues(seam=False)
    img = _paste(_scene(10), _scene(11), 100, 120, 90, 110)
    res = localize(img, cues=["seam"])
    assert res.cue_scores["seam"] > 0.9
    assert res.details["seam"]["boxes"][0]["bbox"] == [120, 100, 230, 190]
    lossy = localize(img, cues=["seam"], lossy=True)
    assert "seam" not in lossy.cues
    assert any("seam cue skipped" in n for n in lossy.notes)


def test_seam_box_names_the_pasted_side_of_a_copy() -> None:
    from medforensics.dsp.seams import SeamBox
    from medforensics.forgery.direction import apply_direction, decide_direction

    flat = np.zeros((200, 300), np.float32)  # no border can be measured: the box decides
    cmap = np.zeros((200, 300), np.float32)
    cmap[20:80, 30:90] = 1.0  # area a
    cmap[110:170, 200:260] = 1.0  # area b (the pasted copy)
    reg = {"bbox_a": (30, 20, 90, 80), "bbox_b": (200, 110, 260, 170)}
    dec = decide_direction(flat, reg, paste_boxes=[SeamBox((200, 110, 260, 170), 4, 60)])
    assert dec["target_side"] == "b" and dec["cue"] == "paste seam"
    apply_direction(cmap, reg, dec)
    assert reg["direction"] == "a->b" and reg["decided"]
    assert cmap[50, 60] == pytest.approx(0.35) and cmap[140, 230] == 1.0
    # a box over both / neither area: no evidence, undetermined, map untouched
    for boxes in ([SeamBox((0, 0, 300, 200), 4, 60)], []):
        dec = decide_direction(flat, reg, paste_boxes=boxes)
        assert dec["target_side"] == "" and "either could be the paste" in dec["evidence"]


def test_localize_marks_the_hard_edged_clone_not_its_source() -> None:
    img = _scene(12)
    img[180:276, 250:346] = img[30:126, 40:136]  # hard-edged clone, no feather
    res = localize(img, cues=["copymove", "seam"])
    reg = res.details["copymove"]["regions"][0]
    assert reg["decided"] and "paste seam" in reg["cue"]
    copy_side = "b" if abs(reg["bbox_b"][0] - 250) <= 8 else "a"
    assert reg["target_side"] == copy_side
    assert res.map[200:250, 270:320].min() >= 0.9  # the copy
    assert res.map[50:100, 60:110].max() <= 0.5  # its source, down-weighted
