"""Copy-move pixel F1 against both copies (forgery.evaluate): a map that marks the paste and
its source scores 1 against both copies and less against the paste alone."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from medforensics.forgery.evaluate import evaluate_detector
from medforensics.synth.tamper import generate


def _radiograph(seed: int, n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    base = 1500 + 900 * np.sin(xx / 37 + seed) * np.cos(yy / 51)
    return np.clip(base + rng.normal(0, 25, (n, n)), 0, 4095).astype(np.uint16)


class _MapsFromTruth:
    """A stand-in detector whose map is a fixed mask per image (keyed by the pixels)."""

    threshold = 0.5
    map_threshold = 0.5
    method = "truth-maps"
    run_dir = None

    def __init__(self, maps: dict[str, np.ndarray]) -> None:
        self.maps = maps

    def detect_with_cues(self, px: np.ndarray, meta: Any) -> tuple[Any, dict[str, np.ndarray]]:
        key = hashlib.sha256(np.ascontiguousarray(px).tobytes()).hexdigest()
        pmap = self.maps.get(key, np.zeros(px.shape, np.float32))
        res = SimpleNamespace(verdict="forged" if pmap.any() else "authentic",
                              score=float(pmap.max()), prob_map=pmap, cues={})
        return res, {}


def test_both_copies_f1_uses_the_recorded_source_mask(tmp_path: Path) -> None:
    from medforensics.io import read_image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_radiograph(20 + i)).save(src / f"img{i}.png")
    rep = generate(src, tmp_path / "out", kinds=["copy-move"], seed=5, sizes=(48, 64),
                   feather=0.0)
    assert not rep.failures
    maps = {}
    for r in rep.rows:
        if r["label"] == "tampered":
            both = (np.asarray(Image.open(r["mask_path"])) > 0) | (
                np.asarray(Image.open(r["source_mask_path"])) > 0)
            px = read_image(r["path"]).pixels
            maps[hashlib.sha256(np.ascontiguousarray(px).tobytes()).hexdigest()] = \
                both.astype(np.float32)
    m = evaluate_detector(_MapsFromTruth(maps), rep.manifest_path, split="all", n_boot=50)
    paste = m["pixel_by_kind"]["copy-move"]
    both = m["pixel_both_by_kind"]["copy-move"]
    assert both["n_images"] == paste["n_images"] == 3
    assert both["f1_best"] == 1.0 and both["f1_fixed"] == 1.0
    assert 0.5 < paste["f1_fixed"] < 0.8  # half the marked pixels are the source
    lo, hi = m["ci"]["by_kind"]["copy-move"]["pixel_f1_best_both"]
    assert lo == hi == 1.0
