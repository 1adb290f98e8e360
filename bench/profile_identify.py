"""Where identify spends its CPU: per-stage times and a cProfile of ``identify_files``.

Usage::

    python bench/profile_identify.py                      # generated archive, 1-epoch model
    python bench/profile_identify.py --files DIR --run RUN  # your files and trained run

Stages are timed separately on the same files with CPU time as the clock (robust to other
load on the machine): raw decode (pydicom ``dcmread`` + ``pixel_array``, the floor),
``read_image`` (pixel contract), patch-position choice, and the model's forward pass; then
``identify_files`` end to end under cProfile, top lines by own time. Writes nothing but the
generated data (under ``--work``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cpu_ms_per_file(fn: Callable[[], object], n_files: int, repeats: int) -> float:
    """Median CPU milliseconds per file of ``fn`` over ``repeats`` runs."""
    out = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out.append((time.process_time() - t) * 1000.0 / n_files)
    return float(np.median(out))


def generated(work: Path) -> tuple[list[str], Path]:
    """A 60-file simulated archive of 1500-2500 px and a 1-epoch patch model (cached)."""
    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.training.engine import train

    root = work / "archive"
    if not (work / "archive.complete").is_file():
        simulate_archive(root, manufacturers=2, models_per_manufacturer=2, units_per_model=1,
                         patients=30, images_per_patient=2, size=(1500, 2500), seed=11,
                         multi_device_fraction=0.0)
        (work / "archive.complete").write_text("ok")
    files = sorted(str(p) for p in root.rglob("*.dcm"))
    run = work / "run_patch"
    if not (run / "model.json").is_file():
        rows = ingest(files, workers=1, progress=False)
        for r in rows:
            r["split"] = "train" if r["status"] == "eligible" else ""
        train(rows, out_dir=str(run), preset="patch", epochs=1, patches_per_image=8,
              progress=False)
    return files, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default=None, help="folder of DICOM files (default: generated)")
    ap.add_argument("--run", default=None, help="trained patch run (default: generated)")
    ap.add_argument("--work", default="bench/out/profile_identify")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    import pydicom
    import torch

    from medforensics.io import read_image
    from medforensics.source.predictor import SourcePredictor, identify_files
    from medforensics.source.patches import model_input

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    if args.files:
        files = sorted(str(p) for p in Path(args.files).rglob("*") if p.is_file())
        run = Path(args.run) if args.run else None
    else:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        files, run = generated(work)
        run = Path(args.run) if args.run else run
    if run is None:
        ap.error("--run is required with --files")
    pred = SourcePredictor.from_run(run)
    n = len(files)
    list(identify_files(pred, files[:2]))  # warm-up: lazy imports, first forward

    images = [read_image(f).pixels for f in files]
    inputs = [model_input(p, pred.input_spec) for p in images]
    stages = {
        "raw decode (pydicom)": lambda: [pydicom.dcmread(f).pixel_array for f in files],
        "read_image": lambda: [read_image(f) for f in files],
        "model input (patch positions + stack)": lambda: [model_input(p, pred.input_spec)
                                                          for p in images],
        "model forward": lambda: [pred._forward(x, k) for x, k in inputs],
        "identify_files end to end": lambda: list(identify_files(pred, files)),
    }
    print(f"{n} files, preset {pred.preset}, {pred.n_patches} patches per image, 1 torch "
          f"thread; CPU ms per file (median of {args.repeats}):\n")
    print("| stage | CPU ms / file |\n|---|---:|")
    for name, fn in stages.items():
        print(f"| {name} | {cpu_ms_per_file(fn, n, args.repeats):.1f} |")
    prof = cProfile.Profile()
    prof.enable()
    list(identify_files(pred, files))
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    print("\ncProfile of identify_files, top lines by own time:\n```")
    print("\n".join(lines[start:]))
    print("```")


if __name__ == "__main__":
    main()
