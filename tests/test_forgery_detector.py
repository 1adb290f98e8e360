"""ForgeryDetector contract: fields, shapes, ranges, JSON; planted edits found; maps written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medforensics.errors import InvalidArrayError, ModelFileError
from medforensics.report.images import MapWriter
from medforensics.report.marks import AREA_COLOUR
from medforensics.forgery.detector import (
    DEFAULT_THRESHOLD,
    ForgeryDetector,
    ForgeryResult,
    detect_files,
)
from medforensics.forgery.localize import default_cues
from medforensics.synth.tamper import tamper_array

#: the optional cues of the default training-free list (texture, seam)
DEFAULT_SET = set(default_cues(ela=False)) - {"copymove", "noise"}

N = 288


def _radiograph(seed: int, n: int = N, sigma: float = 25.0) -> np.ndarray:
    """Smooth 12-bit content + signal-dependent noise (uint16)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    base = 1500 + 900 * np.sin(xx / 37 + seed) * np.cos(yy / 51)
    noisy = base + rng.normal(0, 1, (n, n)) * np.sqrt(base) * sigma / np.sqrt(1500)
    return np.clip(noisy, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def cues() -> ForgeryDetector:
    return ForgeryDetector.from_run(None)


def test_result_contract_and_json(cues: ForgeryDetector) -> None:
    img = _radiograph(1).astype(np.float32)
    res = cues.detect(img, None)
    assert isinstance(res, ForgeryResult) and res.method == "cues"
    assert res.prob_map.shape == img.shape and res.prob_map.dtype == np.float32
    assert 0.0 <= float(res.prob_map.min()) and float(res.prob_map.max()) <= 1.0
    assert 0.0 <= res.score <= 1.0 and 0.0 <= res.forged_area_percent <= 100.0
    assert res.verdict in ("tampered", "inconclusive", "authentic")
    # the calibrated default threshold; the inconclusive band starts 0.1 below the cues' own
    # decision point (map threshold 0.5)
    assert res.threshold == DEFAULT_THRESHOLD and res.inconclusive_from == pytest.approx(0.4)
    assert set(res.cues) == {"copymove", "noise"} | DEFAULT_SET  # lossless: no ELA cue
    assert res.ela_score is not None and res.ela_score >= 0.0
    # the ELA score of 12-bit data says which 8-bit window it used; ELA skipped as a cue
    assert any("8-bit window" in n for n in res.notes)
    assert any("ELA skipped" in n for n in res.notes)
    d = json.loads(json.dumps(res.to_dict()))
    assert "prob_map" not in d and d["rows"] == N and d["cols"] == N
    assert d["verdict"] == res.verdict and d["score"] == pytest.approx(res.score)
    assert set(d["cues"]) == {"copymove", "noise"} | DEFAULT_SET
    # same input, same output (the detector is deterministic)
    again = cues.detect(img, None)
    assert again.score == res.score and np.array_equal(again.prob_map, res.prob_map)


def test_lossy_input_adds_ela_cue(cues: ForgeryDetector) -> None:
    class Meta:
        lossy = True
        bits_stored = 8

    img8 = (_radiograph(2) // 16).astype(np.float32)
    res = cues.detect(img8, Meta())
    assert "ela" in res.cues and any("stored 8-bit values" in n for n in res.notes)
    # --ela always / never override the lossy flag
    assert "ela" in ForgeryDetector(ela="always").detect(img8, None).cues
    assert "ela" not in ForgeryDetector(ela="never").detect(img8, Meta()).cues


def test_planted_copy_move_found(cues: ForgeryDetector) -> None:
    img = _radiograph(3)
    t = tamper_array(img, "copy-move", np.random.default_rng(5), sizes=(64, 80), feather=1.0)
    res = cues.detect(t.pixels.astype(np.float32), None)
    assert res.score > 0.9 and res.verdict == "tampered" and res.cues["copymove"] > 0.9
    called = res.prob_map >= 0.5
    # the pasted copy is found (the source side may be marked too, at reduced weight)
    assert (called & t.mask).sum() > 0.7 * t.mask.sum()
    assert called.sum() < 2.5 * t.mask.sum()
    clean = cues.detect(img.astype(np.float32), None)
    assert clean.verdict != "tampered" and clean.forged_area_percent < 0.5
    # the flagged area is listed, named as a copy-move with the other area as its partner
    reg = res.regions[0]
    x0, y0, x1, y1 = reg["bbox"]
    ty0, tx0, ty1, tx1 = t.bbox[1], t.bbox[0], t.bbox[3], t.bbox[2]
    sx0, sy0, sx1, sy1 = t.source_bbox
    boxes = [(x0, y0, x1, y1)] + [tuple(reg["copy_of"]["partner_bbox"])]
    truth = [(tx0, ty0, tx1, ty1), (sx0, sy0, sx1, sy1)]
    assert reg["cue"] == "copymove" and reg["copy_of"]["transform"] == "identity"
    assert np.abs(np.subtract(sorted(boxes), sorted(truth))).max() <= 8
    d = json.loads(json.dumps(res.to_dict()))
    assert d["regions"][0]["bbox"] == list(reg["bbox"])
    assert clean.regions == []


def test_png_with_jpeg_history_gets_ela(cues: ForgeryDetector) -> None:
    """A losslessly stored image that was a JPEG before is treated as lossy (ELA on)."""
    import io

    img8 = (_radiograph(4) // 16).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img8).save(buf, format="JPEG", quality=75)
    was_jpeg = np.asarray(Image.open(buf)).astype(np.float32)

    class Png:
        lossy = False
        bits_stored = 8

    res = cues.detect(was_jpeg, Png())
    assert "ela" in res.cues and any("JPEG history found" in n for n in res.notes)
    never = cues.detect(img8.astype(np.float32), Png())
    assert "ela" not in never.cues and not any("JPEG history" in n for n in never.notes)


class _StubPatchModel(torch.nn.Module):
    """Log-odds of 'device 1' grow with the share of the patch above 2700 (a fake patch model)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frac = (x > 2700).float().mean(dim=(1, 2, 3))
        return torch.stack([-8.0 * frac, -8.0 * (1 - frac)], 1)


class _StubSource:
    def __init__(self) -> None:
        self.model = _StubPatchModel()
        self.device = torch.device("cpu")
        self.batch_size = 64
        self.patch = 64
        self.run_dir = None


def test_fingerprint_cue_wired_to_the_source_model() -> None:
    det = ForgeryDetector(source=_StubSource(), cue_params={"fingerprint": {"stride": 16}})
    img = _radiograph(4).astype(np.float32)
    img[80:208, 64:192] += 2500.0  # the region "from another device" for the stub
    res = det.detect(img, None)
    assert "fingerprint" in res.cues and res.cues["fingerprint"] > 0.9
    # a pixel's value is the mean over the patches covering it: the centre of the region is
    # called, the rim (covered by patches straddling the edge) and the rest are not
    fp_called = res.prob_map >= 0.5
    assert fp_called[120:168, 104:152].all()
    assert not fp_called[:64].any() and not fp_called[:, 224:].any()
    assert det.params["fingerprint_cue"] is True


def test_bad_inputs_rejected(cues: ForgeryDetector) -> None:
    with pytest.raises(InvalidArrayError):
        cues.detect(np.zeros((100, 100, 3), np.float32), None)
    bad = _radiograph(5).astype(np.float32)
    bad[5, 5] = np.nan
    with pytest.raises(InvalidArrayError):
        cues.detect(bad, None)
    with pytest.raises(ModelFileError):
        ForgeryDetector.from_run("/nonexistent/forgery-run")
    assert ForgeryDetector.from_run("none").method == "cues"


def _flat() -> np.ndarray:
    return np.full((256, 256), 1200, np.float32)


def _saturated() -> np.ndarray:
    """A detector driven into saturation: everything at the maximum but a 20-px speck of
    noise and a black corner."""
    img = np.full((256, 256), 4095, np.float32)
    img[:20, :20] = np.rint(np.random.default_rng(1).normal(2000, 30, (20, 20)))
    img[200:, 200:] = 0
    return img


def _ramp() -> np.ndarray:
    """A synthetic gradient rounded to integers: no noise, only rounding patterns (which
    repeat, so the copy-move matcher would see 'copies' and the texture cue 'lattices')."""
    return np.rint(np.add.outer(np.linspace(0, 700, 250), np.linspace(0, 1234, 270))
                   ).astype(np.float32)


def _tiny() -> np.ndarray:
    return np.rint(np.random.default_rng(2).normal(1000, 20, (40, 300))).astype(np.float32)


@pytest.mark.parametrize("make,why", [(_flat, "nothing to read"),
                                      (_saturated, "nothing to read"),
                                      (_ramp, "nothing to read"),
                                      (_tiny, "too small")])
def test_nothing_to_read_is_inconclusive(cues: ForgeryDetector, make, why: str) -> None:
    """Flat, saturated, ramp and tiny images: no cue can read noise on enough of the image,
    so the verdict is ``inconclusive`` with the reason - never ``authentic`` - and no ELA
    score is given."""
    res = cues.detect(make(), None)
    assert res.verdict == "inconclusive"
    assert why in res.inconclusive_reason
    assert res.covered_fraction < 0.05
    assert res.ela_score is None
    assert not any(n.startswith("ela_score only") for n in res.notes)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["verdict"] == "inconclusive" and why in d["inconclusive_reason"]
    assert d["covered_fraction"] == pytest.approx(res.covered_fraction)
    assert d["ela_score"] is None


def test_ordinary_untouched_image_is_analysed(cues: ForgeryDetector) -> None:
    """An untouched noisy image is read all over and judged on its score: ``authentic``
    here, with an ELA score and no inconclusive reason."""
    res = cues.detect(_radiograph(3).astype(np.float32), None)
    assert res.covered_fraction > 0.9
    assert res.verdict == "authentic" and res.inconclusive_reason is None
    assert res.ela_score is not None and res.score < res.inconclusive_from
    # the score band below the threshold is inconclusive too, and says why
    for s in (0.45, 0.55, res.threshold - 0.01):
        verdict, reason = cues.verdict_and_reason(s)
        assert verdict == "inconclusive" and "below the threshold" in reason
    assert cues.verdict_and_reason(res.threshold)[0] == "tampered"
    assert cues.verdict_and_reason(0.39) == ("authentic", None)


def test_default_threshold_is_documented_from_the_calibration() -> None:
    """The code's default is the value the calibration script wrote into docs/forgery.md."""
    import re

    doc = (Path(__file__).parents[1] / "docs" / "forgery.md").read_text(encoding="utf-8")
    block = doc[doc.index("<!-- calibration:begin -->"):doc.index("<!-- calibration:end -->")]
    (value,) = re.findall(r"Threshold \*\*([0-9.]+)\*\*", block)
    assert float(value) == pytest.approx(DEFAULT_THRESHOLD)
    assert ForgeryDetector.from_run(None).threshold == DEFAULT_THRESHOLD


def test_cli_line_of_an_inconclusive_image(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app
    from medforensics.io import write_png16

    flat = tmp_path / "flat.png"
    write_png16(flat, np.full((128, 128), 900, np.uint16))
    out = CliRunner().invoke(app, ["forgery", "detect", "cues", str(flat)])
    assert out.exit_code == 0, out.output
    line = out.output.strip().splitlines()[0]
    assert "inconclusive (nothing to read" in line and "ELA not run" in line
    assert "authentic" not in line and "ELA score" not in line
    js = CliRunner().invoke(app, ["forgery", "detect", "cues", str(flat), "--json"])
    d = json.loads(js.output.strip().splitlines()[0])
    assert d["verdict"] == "inconclusive" and d["ela_score"] is None
    assert d["covered_fraction"] == 0.0 and d["inconclusive_reason"]


def test_detect_files_and_cli_write_maps(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    img = _radiograph(6)
    t = tamper_array(img, "copy-move", np.random.default_rng(1), sizes=(64, 72), feather=0.0)
    good = tmp_path / "tampered.png"
    Image.fromarray(t.pixels).save(good)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not an image at all" * 20)
    out = list(detect_files(ForgeryDetector.from_run(None), [junk, good],
                            write_files=MapWriter(tmp_path / "m1")))
    assert out[0].result is None and out[0].reason == "not-an-image-file"
    assert out[1].result is not None and out[1].result.verdict == "tampered"
    m16 = np.asarray(Image.open(out[1].files["map_png"]))
    npy = np.load(out[1].files["map_npy"])
    assert m16.shape == img.shape and npy.shape == img.shape and npy.dtype == np.float32
    assert np.array_equal(m16.astype(np.int64), np.rint(npy * 65535).astype(np.int64))
    assert np.array_equal(npy, out[1].result.prob_map)
    ov = np.asarray(Image.open(out[1].files["overlay_png"]))
    assert ov.shape[1:] == (N, 3) and ov.shape[0] > N  # the image, then the legend below it
    assert np.all(ov[:N] == AREA_COLOUR, axis=-1).any()  # the flagged areas are boxed

    maps = tmp_path / "maps"
    res = CliRunner().invoke(app, ["forgery", "detect", "cues", str(good), str(junk), str(good),
                                   "--json", "--maps", str(maps)])
    assert res.exit_code == 1, res.output  # one unreadable file -> exit 1, batch goes on
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [x["status"] for x in lines] == ["done", "error", "done"]
    assert lines[1]["reason"] == "not-an-image-file"
    assert lines[0]["verdict"] == "tampered" and 0 < lines[0]["forged_area_percent"] < 10
    assert lines[0]["regions"] and lines[0]["regions"][0]["cue"] == "copymove"
    text = CliRunner().invoke(app, ["forgery", "detect", "cues", str(good)])
    assert text.exit_code == 0, text.output
    assert "  area 1: (" in text.stdout and "cue copymove" in text.stdout
    off = CliRunner().invoke(app, ["forgery", "detect", "cues", str(good), "--json",
                                   "--no-texture", "--no-seam", "--no-whiteness"])
    assert off.exit_code == 0
    assert not {"texture", "seam", "whiteness"} & set(
        json.loads(off.stdout.splitlines()[0])["cues"])
    names = sorted(p.name for p in maps.iterdir())
    assert names == ["tampered_2_map.npy", "tampered_2_map.png", "tampered_2_overlay.png",
                     "tampered_map.npy", "tampered_map.png", "tampered_overlay.png"]


def test_forgery_demo_section(tmp_path: Path) -> None:
    from medforensics.synth.simulate import simulate_archive
    from medforensics.demo.forgery import forgery_demo

    paths = simulate_archive(tmp_path / "arch", manufacturers=2, models_per_manufacturer=1,
                             units_per_model=1, patients=4, images_per_patient=1, size=224,
                             seed=3)
    said: list[str] = []
    md = forgery_demo(tmp_path / "out" / "forgery", paths, seed=1, echo=said.append,
                      n_images=3)
    table = [x for x in md.splitlines() if x.startswith("| ") and "dcm" in x]
    assert len(table) == 6  # 3 tampered + their 3 originals
    kinds = {x.split("|")[2].strip() for x in table}
    assert kinds == {"copy-move", "splice-device", "removal", "original"}
    link = md.split("](")[1].split(")")[0]
    assert (tmp_path / "out" / link).is_file()  # relative to the report's folder
    data = json.loads((tmp_path / "out" / "forgery" / "forgery_demo.json").read_text())
    assert len(data["rows"]) == 6 and said
    # the text states the detector's own thresholds, not numbers written into it
    det = ForgeryDetector.from_run(None)
    assert f"(threshold {DEFAULT_THRESHOLD:g}, 'inconclusive' from {det.inconclusive_from:g})" in md
