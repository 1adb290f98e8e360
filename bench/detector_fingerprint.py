"""Outputs of the training-free forgery detector on the real radiographs, for comparing code.

For each lossless real X-ray of ``../shared/data/real/xray``: the original and one copy-move,
splice and removal written by the tamper generator (fixed seeds); per case the verdict, the
score and a hash of the probability map. Run it on two checkouts (``PYTHONPATH=OTHER/src``)
and compare the JSON files: equal files mean the detector and the generator behave alike. An
edit the generator cannot place in a file is recorded as ``["not placed", reason]``.

    python bench/detector_fingerprint.py bench/out/detector_new.json
    PYTHONPATH=/path/to/old/src python bench/detector_fingerprint.py bench/out/detector_old.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "xray"


def _imports():
    """The detector, the generator and the reader under whichever layout the code has."""
    try:
        from medforensics.synth.tamper import tamper_array
    except ImportError:  # the layout before synth/
        from medforensics.forgery.tamper import tamper_array
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.errors import MedForensicsError
    from medforensics.io import read_image

    return tamper_array, ForgeryDetector, read_image, MedForensicsError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--real", type=Path, default=REAL)
    args = ap.parse_args()
    tamper_array, ForgeryDetector, read_image, MedForensicsError = _imports()
    det = ForgeryDetector.from_run(None)
    out: dict[str, object] = {}
    for f in sorted(args.real.glob("*.dcm")):
        img = read_image(f)
        cases = {"orig": img.pixels}
        for i, kind in enumerate(("copy-move", "splice", "removal")):
            donor = np.flipud(img.pixels) if kind == "splice" else None
            try:
                cases[kind] = tamper_array(img.pixels, kind, np.random.default_rng(10 + i),
                                           sizes=(64, 128), donor=donor).pixels
            except MedForensicsError as exc:  # the generator found no place: recorded
                out[f"{f.name}:{kind}"] = ["not placed", str(exc)]
        for name, pixels in cases.items():
            r = det.detect(pixels, img.meta)
            digest = hashlib.sha256(np.ascontiguousarray(r.prob_map).tobytes()).hexdigest()
            out[f"{f.name}:{name}"] = [r.verdict, round(float(r.score), 6), digest[:16]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(out)} cases -> {args.out}")


if __name__ == "__main__":
    main()
