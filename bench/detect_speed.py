"""Forgery-detect speed per cue on real-size images, against the decode of the same files.

    python bench/detect_speed.py [FILE ...] [--repeats 2] [--out bench/out/detect_speed]

Default files: the lossless single-frame radiographs of ``../shared/data/real/xray`` (skipped
with a message when absent). For each file it times, in this one process with one thread:
``read_image`` (the baseline), the training-free detector as a whole
(``ForgeryDetector.from_run(None).detect``), and each cue alone
(``localize(pixels, cues=[name])``). Medians over ``--repeats``; the table gives Mpx/s and
the ratio of each step to the decode of the same pixels. Writes ``results.json``.

To compare with an older commit on the same machine, run it again from that commit's tree:
``git worktree add /tmp/old REV && PYTHONPATH=/tmp/old/src python bench/detect_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "xray"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/out/detect_speed")
    args = ap.parse_args(argv)

    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.localize import localize
    from medforensics.io import read_header, read_image
    from medforensics.common.runtime import configure_threads

    configure_threads(1)
    files = [Path(f) for f in args.files]
    if not files:
        if not REAL.is_dir():
            print(f"no files given and {REAL} is absent", file=sys.stderr)
            return 1
        for p in sorted(REAL.glob("*.dcm")):
            m = read_header(p)
            if not m.lossy and m.n_frames == 1 and min(m.rows, m.cols) >= 512:
                files.append(p)
    det = ForgeryDetector.from_run(None)
    steps = ["decode", "detect"] + det.cue_names
    times: dict[str, float] = {s: 0.0 for s in steps}
    mpx = 0.0
    for f in files:
        def med(fn) -> float:  # noqa: ANN001 - a callable
            ts = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)

        img = read_image(f)
        px = img.pixels
        mpx += px.size / 1e6
        times["decode"] += med(lambda: read_image(f))
        times["detect"] += med(lambda: det.detect(px, img.meta))
        for cue in steps[2:]:
            times[cue] += med(lambda: localize(px, cues=[cue], lossy=bool(img.meta.lossy)))
        print(f"{f.name}: {px.shape[0]}x{px.shape[1]}", file=sys.stderr)
    res = {"command": "python bench/detect_speed.py " + " ".join(argv or sys.argv[1:]),
           "files": [str(f) for f in files], "mpx": mpx, "repeats": args.repeats,
           "seconds": times,
           "mpx_per_s": {k: mpx / v for k, v in times.items() if v > 0},
           "ratio_to_decode": {k: v / times["decode"] for k, v in times.items()}}
    print(f"{len(files)} files, {mpx:.1f} Mpx, median of {args.repeats}, one thread")
    print(f"{'step':12s} {'seconds':>8s} {'Mpx/s':>8s} {'x decode':>9s}")
    for k, v in times.items():
        print(f"{k:12s} {v:8.2f} {mpx / v:8.2f} {v / times['decode']:9.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
