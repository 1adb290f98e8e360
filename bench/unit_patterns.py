"""Unit-level identification with reference patterns: accuracy against references per unit.

Usage::

    python bench/unit_patterns.py [--out DIR] [--refs 1,2,4,10] [--size 512] [--seed 0]

Simulates 3 manufacturers x 2 models x 3 units (``size`` px images, no patient on two units),
enrols all units but the last of every model (the never-enrolled units stand in for devices the
archive has not seen), and for each number of reference images per unit: fits
:class:`medforensics.source.units.UnitFingerprints` on that many images per enrolled unit,
calibrates nothing (the default threshold), then identifies every other image. Prints top-1
accuracy on enrolled units' images, thresholded accuracy (the unit must also pass the
threshold), the share of never-enrolled units' images rejected, the smallest PCE of a correct
match and the largest PCE any never-enrolled image reached, and the CPU time per query.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/unit_patterns")
    ap.add_argument("--refs", default="1,2,4,10")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--patients", type=int, default=72)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.source.units import UnitFingerprints
    from medforensics.io import read_image

    logging.basicConfig(level=logging.ERROR)
    out = Path(args.out)
    archive = out / f"archive_s{args.seed}_{args.size}"
    if not (out / f"{archive.name}.complete").is_file():
        simulate_archive(archive, manufacturers=3, models_per_manufacturer=2, units_per_model=3,
                         patients=args.patients, images_per_patient=(2, 3), size=args.size,
                         seed=args.seed, multi_device_fraction=0.0, overwrite=True)
        (out / f"{archive.name}.complete").write_text("ok")
    rows = [r for r in ingest([archive], progress=False) if r["status"] == "eligible"]
    by_unit: dict[str, list[str]] = defaultdict(list)
    model_of: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        by_unit[r["unit"]].append(r["path"])
        model_of[r["unit"]] = r["model"]
    units_of_model: dict[str, list[str]] = defaultdict(list)
    for u in sorted(by_unit):
        units_of_model[model_of[u]].append(u)
    unseen = {us[-1] for us in units_of_model.values()}
    enrolled = sorted(set(by_unit) - unseen)
    pixels = {p: read_image(p).pixels for ps in by_unit.values() for p in ps}

    results = []
    for k in [int(x) for x in args.refs.split(",") if x.strip()]:
        refs = {u: by_unit[u][:k] for u in enrolled if len(by_unit[u]) > k}
        fps = UnitFingerprints().fit({u: [pixels[p] for p in ps] for u, ps in refs.items()})
        queries = [(p, u) for u in refs for p in by_unit[u][k:]]
        queries += [(p, u) for u in unseen for p in by_unit[u]]
        top1 = thr_ok = n_known = rejected = n_unseen = 0
        match_pce: list[float] = []
        unseen_pce: list[float] = []
        t0 = time.process_time()
        for p, truth in queries:
            ranked = fps.match(pixels[p])
            best_unit, best = ranked[0]
            said = best_unit if best > fps.config.threshold else None
            if truth in refs:
                n_known += 1
                top1 += best_unit == truth
                thr_ok += said == truth
                match_pce.append(dict(ranked)[truth])
            else:
                n_unseen += 1
                rejected += said is None
                unseen_pce.append(best)
        cpu = (time.process_time() - t0) / max(1, len(queries))
        results.append({
            "refs_per_unit": k, "enrolled_units": len(refs), "known_queries": n_known,
            "top1": top1 / max(1, n_known), "thresholded": thr_ok / max(1, n_known),
            "unseen_queries": n_unseen, "unseen_rejected": rejected / max(1, n_unseen),
            "min_match_pce": float(min(match_pce)) if match_pce else None,
            "max_unseen_pce": float(max(unseen_pce)) if unseen_pce else None,
            "threshold": float(fps.config.threshold), "cpu_s_per_query": cpu,
        })
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{len(by_unit)} units ({len(enrolled)} enrolled, {len(unseen)} never enrolled), "
          f"{len(rows)} images of {args.size} px, seed {args.seed}\n")
    print("| refs / unit | top-1 | thresholded | unseen rejected | min matching PCE | "
          "max unseen PCE | CPU s / query |\n|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['refs_per_unit']} | {100 * r['top1']:.1f}% ({r['known_queries']}) | "
              f"{100 * r['thresholded']:.1f}% | {100 * r['unseen_rejected']:.1f}% "
              f"({r['unseen_queries']}) | {r['min_match_pce']:.0f} | {r['max_unseen_pce']:.1f} | "
              f"{r['cpu_s_per_query']:.2f} |")


if __name__ == "__main__":
    main()
