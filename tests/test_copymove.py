"""Tests for residual block matching (dsp.blockmatch) and copy-move detection."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.dsp.blockmatch import (
    match_blocks,
    match_density,
    shift_consensus,
    shift_correlation,
)
from medforensics.dsp.residuals import highpass_residual
from medforensics.errors import ConfigError
from medforensics.forgery.cues.copymove import detect_copy_move
from medforensics.synth.tamper import tamper_array

N = 320


def _radiograph(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    base = 1500 + 900 * np.sin(xx / 37 + seed) * np.cos(yy / 51)
    noisy = base + rng.normal(0, 1, (n, n)) * np.sqrt(base) * 25 / np.sqrt(1500)
    return np.clip(noisy, 0, 4095).astype(np.uint16)


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((pred & gt).sum() / max((pred | gt).sum(), 1))


def test_planted_clone_found_and_clean_image_silent() -> None:
    img = _radiograph(0)
    clone = img.copy()
    clone[200:264, 180:260] = img[40:104, 30:110]  # hard-edged 64x80 clone, shift (160, 150)
    res = detect_copy_move(clone)
    assert res.shifts and res.shifts[0][:2] == (160, 150)
    gt_t = np.zeros(img.shape, bool)
    gt_t[200:264, 180:260] = True
    gt_s = np.zeros(img.shape, bool)
    gt_s[40:104, 30:110] = True
    assert _iou(res.map >= 0.3, gt_t | gt_s) > 0.7
    assert res.score > 0.9
    # the two matched regions' boxes, (x0, y0, x1, y1), within a few pixels of the truth
    reg = res.regions[0]
    assert np.abs(np.subtract(reg["bbox_a"], (30, 40, 110, 104))).max() <= 5
    assert np.abs(np.subtract(reg["bbox_b"], (180, 200, 260, 264))).max() <= 5
    clean = detect_copy_move(img)
    assert clean.shifts == [] and clean.map.max() == 0.0 and clean.score < 0.2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_copy_move_iou(seed: int) -> None:
    img = _radiograph(seed)
    t = tamper_array(img, "copy-move", np.random.default_rng(seed), sizes=(64, 128), feather=2.0)
    both = detect_copy_move(t.pixels, disambiguate=False)
    # target + source against the union of the two true regions
    assert _iou(both.map >= 0.3, t.mask | t.source_mask) > 0.7
    res = detect_copy_move(t.pixels)
    assert res.regions, "copy-move not detected"
    reg = res.regions[0]
    # a feathered paste leaves no hard step along its border: a direction is named only
    # when it is right; otherwise the pair is undetermined and both areas stay flagged
    truth = "b" if tuple(reg["shift"]) == tuple(t.detail["shift_yx"]) else "a"
    if reg["decided"]:
        assert reg["target_side"] == truth
        assert reg["direction"] == ("a->b" if truth == "b" else "b->a")
        assert _iou(res.map >= 0.5, t.mask) > 0.7
    else:
        assert reg["direction"] == "undetermined" and reg["direction_evidence"]
        assert _iou(res.map >= 0.5, t.mask | t.source_mask) > 0.7


def test_block_matching_primitives() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0, 1, (96, 96))
    r[60:80, 50:74] = r[10:30, 5:29]  # copy with shift (50, 45)
    m = match_blocks(r, block=8, min_shift=16)
    assert len(m.a) == (20 - 7) * (24 - 7)
    assert np.all(m.shifts == [50, 45]) and np.all(m.dist == 0)
    shifts, keep = shift_consensus(m, min_count=10)
    assert shifts.tolist() == [[50, 45, (20 - 7) * (24 - 7)]] and keep.all()
    dens = match_density(r.shape, m.b, 8)
    assert dens[60:80, 50:74].min() > 0 and dens[:60].max() == 0 and dens[70, 62] == 1.0
    c = shift_correlation(r, (50, 45), 5)
    assert c[65:75, 55:69].min() > 0.999
    assert np.abs(c[5:40, 60:90]).max() < 0.9
    with pytest.raises(ConfigError):
        match_blocks(r, block=7)
    # flat areas are not matched with each other
    flat = np.zeros((64, 64))
    flat[:, :32] = rng.normal(0, 1, (64, 32))
    assert len(match_blocks(flat).a) == 0


def test_residual_copy_is_exact_inside() -> None:
    img = _radiograph(4).astype(np.float64)
    img[100:160, 100:160] = img[10:70, 200:260]
    r = highpass_residual(img, "kb")
    assert np.array_equal(r[101:159, 101:159], r[11:69, 201:259])


@pytest.mark.real
def test_real_radiograph_no_false_alarm_and_planted_clone(real_data) -> None:
    from medforensics.io import read_image

    px, _ = read_image(real_data / "xray" / "siemens_mammomat_inspiration_mg.dcm")
    clean = detect_copy_move(px)
    assert clean.shifts == [] and clean.map.max() == 0.0
    t = tamper_array(px.astype(np.int32), "copy-move", np.random.default_rng(7),
                     sizes=(96, 160), feather=1.0)
    res = detect_copy_move(t.pixels.astype(np.float32))
    assert res.shifts
    reg = res.regions[0]
    if reg["decided"]:  # named only when right; else both areas stay marked
        truth = "b" if tuple(reg["shift"]) == tuple(t.detail["shift_yx"]) else "a"
        assert reg["target_side"] == truth and _iou(res.map >= 0.5, t.mask) > 0.6
    else:
        assert reg["direction"] == "undetermined"
        assert _iou(res.map >= 0.5, t.mask | t.source_mask) > 0.6


def test_coherent_support_solid_vs_scattered() -> None:
    from medforensics.dsp.blockmatch import coherent_support

    yy, xx = np.mgrid[0:20, 0:30]
    solid = np.stack([yy.ravel() + 100, xx.ravel() + 50], 1)  # one copied patch, 1 px apart
    assert coherent_support(solid) == 600
    rng = np.random.default_rng(0)
    scattered = rng.integers(0, 2000, size=(60, 2))  # chance matches all over a large image
    assert coherent_support(scattered) <= 3
    both = np.concatenate([solid, scattered])
    assert coherent_support(both) >= 600
    assert coherent_support(np.zeros((0, 2), int)) == 0
    with pytest.raises(ConfigError):
        coherent_support(solid, cell=0)


def test_clone_in_quiet_area_of_noisy_image_found() -> None:
    """Keys are scaled per block: a copy where the noise is 15x weaker than the image's
    typical level is matched (a global key step and energy floor used to leave it out)."""
    rng = np.random.default_rng(5)
    n = 384
    yy, xx = np.mgrid[0:n, 0:n]
    base = 2000 + 300 * np.sin(xx / 41) * np.cos(yy / 29)
    sigma = np.where(xx < 128, 2.0, 30.0)  # a quiet third (e.g. a bright, low-dose area)
    img = np.clip(base + rng.normal(0, 1, (n, n)) * sigma, 0, 4095).round().astype(np.uint16)
    clone = img.copy()
    clone[250:330, 30:110] = img[40:120, 20:100]  # 80 px copy inside the quiet part
    res = detect_copy_move(clone)
    assert res.shifts and res.shifts[0][:2] == (210, 10)
    gt = np.zeros(img.shape, bool)
    gt[250:330, 30:110] = True
    gt[40:120, 20:100] = True
    assert _iou(res.map >= 0.3, gt) > 0.6
    clean = detect_copy_move(img)
    assert clean.shifts == [] and clean.score < 0.2
    # lossy inputs keep the energy floor (quiet JPEG blocks repeat by chance): not matched
    assert detect_copy_move(clone, lossy=True).shifts == []


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_rotated_and_mirrored_clones_found(k: int) -> None:
    """An exact 90/180-degree rotation or mirroring keeps the noise: found, with its name."""
    from medforensics.dsp.blockmatch import DIHEDRAL, dihedral_apply

    img = _radiograph(7)
    clone = img.copy()
    clone[200:272, 180:252] = dihedral_apply(img[40:112, 30:102], k)
    res = detect_copy_move(clone, disambiguate=False)
    assert res.score > 0.9
    assert [r["transform"] for r in res.regions] == [DIHEDRAL[k]]
    boxes = sorted([res.regions[0]["bbox_a"], res.regions[0]["bbox_b"]], key=lambda b: b[1])
    assert np.abs(np.subtract(boxes, [(30, 40, 102, 112), (180, 200, 252, 272)])).max() <= 5
    gt = np.zeros(img.shape, bool)
    gt[200:272, 180:252] = True
    gt[40:112, 30:102] = True
    assert _iou(res.map >= 0.5, gt) > 0.7
    # with the seam cue the pasted copy keeps its full level; a decision names the lower box
    dis = detect_copy_move(clone)
    assert float(dis.map[210:262, 190:242].mean()) > 0.9
    reg = dis.regions[0]
    if reg["decided"]:
        pasted = reg["bbox_b"] if reg["target_side"] == "b" else reg["bbox_a"]
        assert abs(pasted[1] - 200) <= 5 and float(dis.map[50:102, 40:92].max()) < 0.5
    # translation-only matching does not see it
    assert detect_copy_move(clone, dihedral=False).score < 0.5


def test_dihedral_apply_matches_its_matrix() -> None:
    from medforensics.dsp.blockmatch import _DIHEDRAL_M, DIHEDRAL, dihedral_apply

    b = np.arange(36).reshape(6, 6)
    c = 2.5
    for k in range(len(DIHEDRAL)):
        t = dihedral_apply(b, k)
        for y, x in [(0, 0), (1, 4), (5, 2)]:
            ny, nx = _DIHEDRAL_M[k] @ np.array([y - c, x - c]) + c
            assert t[int(ny), int(nx)] == b[y, x]


def test_heavily_repeated_content_is_sampled_not_exhausted() -> None:
    """A tiled image has a candidate pair for nearly every block: only a bounded, evenly
    spread sample is verified, and its shift still wins the consensus."""
    tile = _radiograph(11, n=128)
    tiled = np.tile(tile, (3, 3)).astype(np.float32)
    r = highpass_residual(tiled, "kb")
    full = match_blocks(r, block=8, min_shift=16)
    capped = match_blocks(r, block=8, min_shift=16, max_pairs=20_000)
    assert full.sample_stride == 1 and capped.sample_stride > 1
    assert len(capped.a) <= 20_000 < len(full.a)
    shifts, _ = shift_consensus(capped, min_count=40)
    assert {(128, 0), (0, 128)} <= {(int(a), int(b)) for a, b, _ in shifts}


def test_seam_cue_names_the_pasted_side_of_a_mirrored_clone() -> None:
    from medforensics.dsp.blockmatch import dihedral_apply

    img = _radiograph(4)
    clone = img.copy()
    clone[224:306, 209:291] = dihedral_apply(img[121:203, 223:305], 4)  # flipped upside down
    res = detect_copy_move(clone)
    reg = res.regions[0]
    assert reg["transform"] == "flip-v" and reg["decided"] and reg["cue"] == "border seam"
    pasted = reg["bbox_b"] if reg["target_side"] == "b" else reg["bbox_a"]
    assert abs(pasted[0] - 209) <= 5 and abs(pasted[1] - 224) <= 5
    assert float(res.map[234:296, 219:281].mean()) > 0.9  # the copy at full level
    assert float(res.map[131:193, 233:295].max()) < 0.5  # its source down-weighted


def _noise_field(seed: int, n: int = 320) -> np.ndarray:
    """Stationary noise around one level: no position differs from another but by chance."""
    rng = np.random.default_rng(seed)
    return np.rint(2000 + rng.normal(0, 30, (n, n))).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_symmetric_clone_direction_is_undetermined(seed: int) -> None:
    """A block copied within stationary noise: no seam, matching noise, both copies equally
    plausible. The pair is reported, both areas stay flagged, no area is named the paste."""
    from medforensics.forgery.detector import ForgeryDetector

    img = _noise_field(seed)
    img[200:272, 180:252] = img[40:112, 30:102].copy()
    res = ForgeryDetector.from_run(None).detect(img)
    assert res.verdict == "tampered"
    (pair,) = res.copy_moves
    assert pair["direction"] == "undetermined"
    assert pair["pasted_bbox"] is None and pair["source_bbox"] is None
    assert "either could be the paste" in pair["evidence"]
    # both areas at full level, and each region says so
    assert float(res.prob_map[210:262, 190:242].mean()) > 0.9
    assert float(res.prob_map[50:102, 40:92].mean()) > 0.9
    roles = {r["copy_of"]["role"] for r in res.regions if "copy_of" in r}
    assert roles == {"undetermined"}
    d = res.to_dict()
    assert d["copy_moves"][0]["direction"] == "undetermined"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_seam_names_the_paste(seed: int) -> None:
    """The same noise on a ramp: the copy lands where the ramp is higher, so its border is a
    hard step and its source's is not - the paste is named, the source down-weighted."""
    from medforensics.forgery.detector import ForgeryDetector

    img = _noise_field(seed)
    img += np.arange(img.shape[1], dtype=np.float32)[None, :] * 4.0
    img[200:272, 180:252] = img[40:112, 30:102].copy()
    res = ForgeryDetector.from_run(None).detect(img)
    (pair,) = res.copy_moves
    assert pair["direction"] in ("a->b", "b->a")
    px0, py0 = pair["pasted_bbox"][:2]
    sx0, sy0 = pair["source_bbox"][:2]
    assert abs(px0 - 180) <= 8 and abs(py0 - 200) <= 8  # boxes of the correlation map
    assert abs(sx0 - 30) <= 8 and abs(sy0 - 40) <= 8
    assert "border seam" in pair["cue"] and "hard step" in pair["evidence"]
    assert float(res.prob_map[210:262, 190:242].mean()) > 0.9  # the paste
    assert float(res.prob_map[50:102, 40:92].max()) < 0.5  # its source, down-weighted
    (reg,) = [r for r in res.regions if "copy_of" in r]
    assert reg["copy_of"]["role"] == "pasted copy"


def test_conflicting_evidence_leaves_direction_undetermined() -> None:
    """Two items of evidence naming different areas cancel."""
    from medforensics.dsp.seams import SeamBox
    from medforensics.forgery.direction import decide_direction

    img = _noise_field(5)
    img += np.arange(img.shape[1], dtype=np.float32)[None, :] * 4.0
    img[200:272, 180:252] = img[40:112, 30:102].copy()
    reg = {"bbox_a": (30, 40, 102, 112), "bbox_b": (180, 200, 252, 272)}
    assert decide_direction(img, reg)["target_side"] == "b"
    dec = decide_direction(img, reg, paste_boxes=[SeamBox((30, 40, 102, 112), 4, 72)])
    assert dec["target_side"] == "" and "disagrees" in dec["evidence"]


def test_border_steps_skip_edges_next_to_the_partner() -> None:
    """A paste touching its source shares a border with it: that border says nothing about
    which side is the paste and is not measured."""
    from medforensics.forgery.direction import border_steps

    img = _noise_field(6)
    img += np.arange(img.shape[1], dtype=np.float32)[None, :] * 4.0
    img[100:180, 182:262] = img[100:180, 100:180].copy()  # paste right next to its source
    a, b = (100, 100, 180, 180), (182, 100, 262, 180)
    ea = border_steps(img, a, partner=b)
    assert ea[1] is None  # a's right edge lies against b
    eb = border_steps(img, b, partner=a)
    assert eb[0] is None and eb[1] is not None and eb[1] > 2.0
