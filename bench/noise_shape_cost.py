"""What the open-set noise shape costs per image: the classifier's predict with and without it.

Loads a calibrated run (its open-set model with the noise-shape block) and times, in one
process and the same run, ``predict`` as the run is and with the noise shape and the open-set
distance switched off (the model alone), over the given files, ``--repeats`` times each,
alternating. Prints the median seconds per pass and their ratio.

    python bench/noise_shape_cost.py RUN ../shared/data/real/xray/*.dcm
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from medforensics.io import read_image
from medforensics.source.predictor import SourcePredictor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with_shape = SourcePredictor.from_run(args.run)
    with_shape.fingerprints = None  # the unit comparison is timed elsewhere
    if not with_shape.noise_shape:
        ap.error(f"{args.run} was calibrated without the noise shape")
    model_only = copy.copy(with_shape)
    model_only.openset, model_only.noise_shape = None, False
    images = [read_image(f).pixels for f in args.files]
    times: dict[str, list[float]] = {"model only": [], "with noise shape": []}
    for _ in range(args.repeats):
        for name, pred in (("model only", model_only), ("with noise shape", with_shape)):
            t = time.perf_counter()
            for px in images:
                pred.predict(px)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(images)} images, {args.repeats} repeats, 1 thread, load {os.getloadavg()[0]:.2f}")
    for k, v in med.items():
        print(f"  {k}: {v:.3f} s per pass")
    print(f"  ratio: {med['with noise shape'] / med['model only']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
