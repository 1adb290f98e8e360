"""Unit-pattern decisions and cost against the size of the compared window.

Usage::

    python bench/unit_window.py [--out DIR] [--side 2048] [--windows 0,1024,768,512,256]

A simulated archive of ``side`` px images (JPEG 2000 lossless; 3 manufacturers x 2 models x
2 units, cached under ``OUT/work``) is split per unit: the first 2 images enrol the unit's
reference pattern, the others are queries. Every query is compared with every enrolled unit
at each window side (``0`` = the whole overlap, the rule before the window existed) with the
same patterns, and the table gives per window: top-1 accuracy, the share of queries whose own
unit passes the PCE floor (a named unit), the smallest and the median PCE of the own unit, the
largest PCE of another unit, and the CPU time of comparing one query with all units. Writes
``OUT/unit_window.json`` and ``OUT/unit_window.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[unit_window {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def archive(work: Path, side: int, seed: int) -> dict[str, list[str]]:
    """unit label -> its files, of a cached simulated archive (12 units, 5 images each)."""
    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive

    root = work / f"units12_{side}_s{seed}"
    done = work / f"{root.name}.complete"
    if not done.is_file():
        log(f"simulating 60 files of {side} px into {root} ...")
        simulate_archive(root, manufacturers=3, models_per_manufacturer=2, units_per_model=2,
                         patients=30, images_per_patient=2, size=(side, side), seed=seed,
                         multi_device_fraction=0.0, transfer_syntax="j2k")
        done.write_text("{}")
    files = sorted(str(p) for p in root.rglob("*.dcm"))
    by_unit: dict[str, list[str]] = {}
    for r in ingest(files, workers=1, progress=False):
        if r.get("status") == "eligible" and r.get("unit"):
            by_unit.setdefault(str(r["unit"]), []).append(str(r["path"]))
    return by_unit


def measure(by_unit: dict[str, list[str]], windows: list[int], n_ref: int) -> dict[str, Any]:
    """Scores of every query against every unit, per window side."""
    from medforensics.io import read_image
    from medforensics.source.unit_records import PCE_FLOOR, FingerprintConfig
    from medforensics.source.units import UnitFingerprints

    refs = {u: ps[:n_ref] for u, ps in by_unit.items() if len(ps) > n_ref}
    log(f"enrolling {len(refs)} units from {n_ref} images each ...")
    base = UnitFingerprints().fit({u: (read_image(p).pixels for p in ps)
                                   for u, ps in refs.items()})
    queries = [(u, p) for u in refs for p in by_unit[u][n_ref:]]
    log(f"{len(queries)} queries x {len(windows)} windows ...")
    out: dict[str, Any] = {"n_units": len(refs), "n_queries": len(queries), "n_ref": n_ref,
                           "threshold": PCE_FLOOR, "windows": {}}
    pixels = [(u, read_image(p).pixels) for u, p in queries]
    for w in windows:
        fps = UnitFingerprints(FingerprintConfig(window=w), patterns=base.patterns,
                               counts=base.counts, n_images=base.n_images)
        own, other, top1, cpu = [], [], 0, []
        for u, img in pixels:
            t = time.process_time()
            scores = fps.match_details(img)
            cpu.append(time.process_time() - t)
            top1 += scores[0].unit == u
            own.append(next(s.pce for s in scores if s.unit == u))
            other.append(max(s.pce for s in scores if s.unit != u))
        out["windows"][str(w)] = {
            "top1": top1 / len(pixels),
            "named": sum(p > PCE_FLOOR for p in own) / len(pixels),
            "own_pce_min": min(own), "own_pce_median": statistics.median(own),
            "other_pce_max": max(other),
            "other_above_floor": sum(p > PCE_FLOOR for p in other),
            "cpu_ms_per_query": 1e3 * statistics.mean(cpu),
        }
        log(f"window {w}: {out['windows'][str(w)]}")
    return out


def table(res: dict[str, Any]) -> str:
    rows = [f"{res['n_units']} units ({res['n_ref']} reference images each), "
            f"{res['n_queries']} queries of {res['side']} px, each compared with every unit; "
            f"PCE floor {res['threshold']:g}.", "",
            "| window (px a side; 0 = whole image) | top-1 | own unit named | own PCE min | "
            "own PCE median | other units' max PCE | others over the floor | CPU ms / query |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for w, d in res["windows"].items():
        rows.append(f"| {w} | {100 * d['top1']:.1f} % | {100 * d['named']:.1f} % | "
                    f"{d['own_pce_min']:.0f} | {d['own_pce_median']:.0f} | "
                    f"{d['other_pce_max']:.1f} | {d['other_above_floor']} | "
                    f"{d['cpu_ms_per_query']:.0f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out" / "unit_window"))
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--windows", default="0,1024,768,512,256")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--refs", type=int, default=2, help="reference images per unit")
    args = ap.parse_args()

    import os

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    res = measure(archive(out / "work", args.side, args.seed),
                  [int(w) for w in args.windows.split(",")], args.refs)
    res.update(side=args.side, seed=args.seed, seconds=time.perf_counter() - t0,
               command="python bench/unit_window.py " + " ".join(sys.argv[1:]),
               load_start=load0, load_end=os.getloadavg())
    (out / "unit_window.json").write_text(json.dumps(res, indent=1))
    md = (f"Command: `{res['command']}`; {res['seconds']:.0f} s; load average "
          f"{load0[0]:.1f} -> {res['load_end'][0]:.1f}.\n\n" + table(res))
    (out / "unit_window.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
