"""The "noise alone" evidence rule measured: content spans of real, simulated and blank images.

For every DICOM or PNG image under the given folders (files that cannot be read are counted,
not dropped silently), the content span of :func:`medforensics.data.transforms.content_span`
- the 10th-90th percentile spread of its 32-px windows' means in noise levels - for the
images that pass the evidence floor's other tests for the 64-px ``patch`` model (32-px
windows, 8 of them informative; the others - mostly background, clipped, too small - are
counted apart), and per folder the smallest, the median and the images under
``--show-below``; then the same for images with nothing but noise (Gaussian, uniform,
Poisson, at several levels) and for flat fields with a gentle heel effect. The rule calls an
image with a span under ``MIN_CONTENT_SPAN`` noise alone.

    python bench/content_span.py runs/demo/archive ../shared/data/real
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from medforensics.data.transforms import (
    MIN_CONTENT_SPAN,
    MIN_INFORMATIVE_PATCHES,
    content_span,
    count_informative_windows,
)
from medforensics.errors import MedForensicsError
from medforensics.io import read_image


#: informative 32-px windows the 64-px patch model's evidence floor needs (two patches' worth)
FLOOR = MIN_INFORMATIVE_PATCHES * (64 // 32) ** 2


def synthetic_cases(seed: int = 0, side: int = 512) -> dict[str, np.ndarray]:
    """Images of noise alone, and flat fields (noise on a 1 % or 5 % heel-effect slope)."""
    rng = np.random.default_rng(seed)
    shape = (side, side)
    heel = np.linspace(-1.0, 1.0, side)[None, :]
    return {
        "gaussian noise, std 15": 2000 + 15 * rng.standard_normal(shape),
        "gaussian noise, std 300": 2000 + 300 * rng.standard_normal(shape),
        "uniform noise, 12 bits": rng.integers(0, 4096, shape).astype(float),
        "uniform noise, 8 bits": rng.integers(0, 256, shape).astype(float),
        "poisson noise, mean 400": rng.poisson(400.0, shape).astype(float),
        "flat field, 1 % heel": 2000 * (1 + 0.01 * heel) + 20 * rng.standard_normal(shape),
        "flat field, 5 % heel": 2000 * (1 + 0.05 * heel) + 20 * rng.standard_normal(shape),
    }


def folder_spans(root: Path) -> tuple[list[tuple[float, str]], int, list[str]]:
    """(span, path) of every image under ``root`` that passes the rest of the evidence floor,
    the count of images that do not, and the files that could not be read."""
    spans, blank, failed = [], 0, []
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".dcm", ".png"))
    for p in files:
        try:
            px = np.asarray(read_image(p).pixels, dtype=np.float32)
        except MedForensicsError as exc:
            failed.append(f"{p}: {type(exc).__name__}")
            continue
        ev = count_informative_windows(px, 32, required=FLOOR, min_content_span=0.0)
        if ev.enough():
            spans.append((ev.content_span, str(p)))
        else:
            blank += 1
    return spans, blank, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--show-below", type=float, default=5.0,
                    help="list every image whose span is under this")
    args = ap.parse_args(argv)
    print(f"rule: noise alone below {MIN_CONTENT_SPAN:g} noise levels\n")
    print("| images | pass the rest of the floor | smallest span | median | do not"
          " | unreadable |")
    print("|---|---|---|---|---|---|")
    low: list[tuple[float, str]] = []
    for root in args.folders:
        spans, blank, failed = folder_spans(root)
        vals = sorted(s for s, _ in spans)
        small = f"{vals[0]:.1f}" if vals else "-"
        med = f"{statistics.median(vals):.1f}" if vals else "-"
        print(f"| {root} | {len(vals)} | {small} | {med} | {blank} | {len(failed)} |")
        low += [(s, p) for s, p in spans if s < args.show_below]
    print("\n| synthetic image | span |\n|---|---|")
    for name, px in synthetic_cases().items():
        print(f"| {name} | {content_span(np.round(px)):.2f} |")
    if low:
        print(f"\nimages under {args.show_below:g}:")
        for s, p in sorted(low):
            print(f"  {s:.2f}  {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
