"""How well ``dsp.ela.jpeg_grid`` tells 8-bit images with a JPEG history from those without.

    python bench/jpeg_grid.py [--patients 30] [--out bench/out/jpeg_grid]

A simulated lossless archive (14-bit DICOM) is generated; every image is then seen as

* ``never-JPEG 8-bit``: its 0.5-99.5 percentile 8-bit window (as a PNG export would be);
* ``never-JPEG 14-bit``: the stored values themselves;
* ``JPEG q<Q> -> PNG``: the 8-bit window encoded as JPEG at quality Q (75, 90, 95) and
  decoded (what a PNG saved from a JPEG holds);
* the same, cropped by (3, 5) pixels (the 8 x 8 grid no longer starts at 0).

For each group the share called "JPEG history" is printed and written to ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default="bench/out/jpeg_grid")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from medforensics.synth.simulate import simulate_archive
    from medforensics.dsp.ela import jpeg_grid, jpeg_roundtrip
    from medforensics.forgery.cues.ela import window_to_uint8
    from medforensics.io import read_image

    t0 = time.perf_counter()
    groups: dict[str, list[bool]] = {}
    ratios: dict[str, list[float]] = {}

    def add(name: str, img) -> None:  # noqa: ANN001 - numpy array
        g = jpeg_grid(img)
        groups.setdefault(name, []).append(g.detected)
        ratios.setdefault(name, []).append(min(g.ratio))

    with tempfile.TemporaryDirectory() as tmp:
        files = simulate_archive(Path(tmp) / "archive", patients=args.patients, seed=args.seed,
                                 units_per_model=1, size=(384, 640))
        for f in files:
            px, _ = read_image(f)
            img8, _, _ = window_to_uint8(px)
            add("never-JPEG 8-bit window", img8)
            add("never-JPEG 14-bit stored values", px)
            add("never-JPEG 8-bit window, cropped (3, 5)", img8[3:, 5:])
            for q in (75, 90, 95):
                dec = jpeg_roundtrip(img8, q)
                add(f"JPEG q{q} -> PNG", dec)
                add(f"JPEG q{q} -> PNG, cropped (3, 5)", dec[3:, 5:])
    res = {"command": "python bench/jpeg_grid.py " + " ".join(argv or []),
           "images": len(files), "seconds": round(time.perf_counter() - t0, 1), "groups": {}}
    print(f"{len(files)} simulated images; share called 'JPEG history' by jpeg_grid")
    print(f"{'group':45s} {'called JPEG':>12s} {'min ratio (median)':>20s}")
    for name, det in groups.items():
        share = sum(det) / len(det)
        r = sorted(ratios[name])
        res["groups"][name] = {"n": len(det), "called_jpeg": share,
                               "median_min_axis_ratio": r[len(r) // 2]}
        print(f"{name:45s} {100 * share:11.1f}% {r[len(r) // 2]:20.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
