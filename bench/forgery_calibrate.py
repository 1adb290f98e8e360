"""The default forgery threshold, calibrated to a stated false-alarm rate on untouched images.

    python bench/forgery_calibrate.py [--work bench/out/forgery/work] [--alpha 0.05]
                                      [--docs docs/forgery.md]

The training-free detector (``ForgeryDetector.from_run(None)``, no source model: the default
of ``medforensics forgery detect none``) calls an image ``tampered`` when its score reaches
the threshold. An analyst may accuse a person on that word, so the threshold is set from
untouched images, not from the cues' own decision points:

* **calibration images**: the untouched simulated images of the train and validation splits
  of ``bench/forgery.py``'s archive (``--work``/manifest.csv; run that script's first step, or
  the whole script, first), and the distinct untouched lossless real files of
  ``../shared/data/real`` (radiographs and MR slices, ``bench/realfiles.py``);
* **threshold**: the smallest value on a 0.01 grid, not below the map threshold (0.5, where
  every cue is at its own decision point), at which at most ``--alpha`` of the simulated
  calibration images *and* at most ``--alpha`` of the real files score at or above it;
  images that are ``inconclusive`` for having nothing to read are left out (they cannot be
  called tampered);
* **checks**: the false-alarm rate at that threshold on the untouched simulated *test* images
  (never used to choose it), on the real files in-sample, and on the real files
  leave-one-out (each file scored against the threshold chosen without it: an out-of-sample
  estimate from the same few files). Every rate has an exact (Clopper-Pearson) 95 % interval;
  the MR slices come from two series of one patient each, so their real uncertainty is
  larger than the binomial interval says.

Writes ``results.json`` into ``--out``, prints a table, and (unless ``--no-docs``) replaces
the block between ``<!-- calibration:begin -->`` and ``<!-- calibration:end -->`` in
``--docs`` with the table, the command and the machine's load. The value the code uses
(``medforensics.forgery.detector.DEFAULT_THRESHOLD``) is set by hand from this output; the
script says whether they agree.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.forgery_calibrate")

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of ``k / n``."""
    from scipy.stats import beta

    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def false_alarms(scores: list[float], t: float) -> tuple[int, int]:
    s = np.asarray(scores, float)
    return int((s >= t).sum()), int(s.size)


def choose_threshold(sets: list[list[float]], alpha: float, floor: float) -> float:
    """Smallest grid value >= ``floor`` with a false-alarm share <= ``alpha`` in every set."""
    for t in np.round(np.arange(floor, 1.0001, 0.01), 2):
        if all(false_alarms(s, t)[0] <= alpha * len(s) for s in sets if len(s)):
            return float(t)
    return 1.01  # nothing reaches it: no image would be called tampered


def rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return (f"{k} of {n} ({100 * k / n:.1f} % [{100 * lo:.1f}-{100 * hi:.1f} %])" if n else "-")


def score_images(det: Any, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    from medforensics.io import read_image

    out = []
    for name, path in items:
        img = read_image(path)
        res = det.detect(img.pixels, img.meta)
        nothing = bool(res.inconclusive_reason and
                       not res.inconclusive_reason.startswith("score"))
        out.append({"name": name, "path": path, "score": float(res.score),
                    "covered_fraction": float(res.covered_fraction),
                    "nothing_to_read": nothing})
        log.info("%s: score %.3f covered %.2f%s", name, res.score, res.covered_fraction,
                 " (nothing to read)" if nothing else "")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="bench/out/forgery/work")
    ap.add_argument("--out", default="bench/out/forgery_calibrate")
    ap.add_argument("--alpha", type=float, default=0.05, help="stated false-alarm rate")
    ap.add_argument("--docs", default="docs/forgery.md")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("medforensics", "openjpeg"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from realfiles import lossless_real_files

    from medforensics.forgery.detector import DEFAULT_THRESHOLD, ForgeryDetector

    torch.set_num_threads(1)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    rows = [r for r in csv.DictReader(open(Path(args.work) / "manifest.csv", newline="",
                                           encoding="utf-8")) if r.get("status") == "eligible"]
    calib = [(Path(r["path"]).name, r["path"]) for r in rows if r["split"] in ("train", "val")]
    test = [(Path(r["path"]).name, r["path"]) for r in rows if r["split"] == "test"]
    cands = (list((REAL / "xray").glob("*.dcm")) + list((REAL / "codecs").glob("*.dcm"))
             + list((REAL / "mr").glob("*/*.dcm")))
    real = [(f"{p.parent.name}/{p.name}", str(p)) for p, _ in lossless_real_files(cands)]
    det = ForgeryDetector.from_run(None)
    res: dict[str, Any] = {"alpha": args.alpha, "load_at_start": load}
    scored = {k: score_images(det, v) for k, v in
              (("sim_calibration", calib), ("sim_test", test), ("real", real))}

    def readable(name: str, pred: Any = None) -> list[float]:
        return [r["score"] for r in scored[name]
                if not r["nothing_to_read"] and (pred is None or pred(r))]

    floor = det.map_threshold
    sim_c, sim_t, real_s = readable("sim_calibration"), readable("sim_test"), readable("real")
    t = choose_threshold([sim_c, real_s], args.alpha, floor)
    # leave-one-out on the real files: each scored against the threshold chosen without it
    loo = 0
    real_rows = [r for r in scored["real"] if not r["nothing_to_read"]]
    for i, r in enumerate(real_rows):
        rest = [x["score"] for j, x in enumerate(real_rows) if j != i]
        loo += r["score"] >= choose_threshold([sim_c, rest], args.alpha, floor)
    is_mr = lambda r: r["name"].split("/")[0] in ("ge_genesis_signa",  # noqa: E731
                                                   "ge_signa_profile_excite")
    table = []
    for label, s in (
            ("simulated, train + val (calibration)", sim_c),
            ("simulated, test split (held out)", sim_t),
            ("real lossless radiographs", readable("real", lambda r: not is_mr(r))),
            ("real lossless MR slices", readable("real", is_mr)),
            ("real lossless files, all (calibration)", real_s)):
        table.append({"set": label, "at_threshold": false_alarms(s, t),
                      "at_0.5": false_alarms(s, 0.5)})
    nothing = {k: sum(r["nothing_to_read"] for r in v) for k, v in scored.items()}
    res.update(threshold=t, code_default=DEFAULT_THRESHOLD, table=table,
               real_leave_one_out=[int(loo), len(real_rows)], nothing_to_read=nothing,
               scores=scored, seconds=round(time.perf_counter() - t0, 1),
               load_at_end=subprocess.run(["uptime"], capture_output=True,
                                          text=True).stdout.strip())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    flagged = sorted((r["score"], r["name"]) for r in scored["real"] if r["score"] >= 0.5)
    md = [f"Threshold **{t:.2f}** (stated false-alarm rate {100 * args.alpha:.0f} % on each "
          "calibration set; floor 0.5). Untouched images called `tampered`, with exact 95 % "
          "intervals:", "",
          f"| untouched images | at {t:.2f} | at 0.50 (the previous default) |",
          "|---|---|---|"]
    for row in table:
        md.append(f"| {row['set']} | {rate(*row['at_threshold'])} | {rate(*row['at_0.5'])} |")
    md.append(f"| real lossless files, leave-one-out | {rate(int(loo), len(real_rows))} | |")
    md += ["", "Real files scoring >= 0.5: " + (", ".join(
        f"`{n}` {s:.3f}" for s, n in flagged) or "none") + ".",
        f"Left out as nothing to read: {nothing['sim_calibration']} + {nothing['sim_test']} "
        f"simulated, {nothing['real']} real.", "",
        f"Command: `{' '.join(['python', 'bench/forgery_calibrate.py', *(argv or sys.argv[1:])])}`"
        f" ({res['seconds']:.0f} s); load at start: `{load}`; at end: `{res['load_at_end']}`."]
    text = "\n".join(md)
    print(text)
    if abs(t - DEFAULT_THRESHOLD) > 1e-9:
        print(f"\nNOTE: the code's DEFAULT_THRESHOLD is {DEFAULT_THRESHOLD}, this calibration "
              f"gives {t:.2f}", file=sys.stderr)
    if not args.no_docs:
        doc = Path(args.docs)
        s = doc.read_text(encoding="utf-8")
        if BEGIN in s and END in s:
            a, b = s.index(BEGIN) + len(BEGIN), s.index(END)
            doc.write_text(s[:a] + "\n" + text + "\n" + s[b:], encoding="utf-8")
            print(f"\nwrote the calibration block of {doc}")
        else:
            print(f"\n{doc} has no {BEGIN} ... {END} block: not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
