"""Held-out check of the forgery cue rules: old vs current rules on a fresh tamper draw.

Usage::

    python bench/forgery_holdout.py                              # 48 splice-device pairs
    python bench/forgery_holdout.py --kinds copy-move,removal    # 48 copy-move/removal pairs

Needs the work folder of ``python bench/forgery.py`` (``--work``, default
``bench/out/forgery/work``: its source manifest and source ``patch`` run). The test images of
that manifest are tampered again with another seed (``--seed``, default 77; regions 64-192 px)
by ``medforensics.synth.tamper.generate``; this draw was never looked at while the cue rules
were tuned. Four training-free detectors are evaluated on it (``evaluate_detector``, all
pairs):

* current rules, without and with the fingerprint cue;
* the previous rules, without and with the fingerprint cue: the noise cue with
  ``range_aware=False, min_extent=0, max_clipped=0`` (every block touching a clipped pixel
  dropped, no range-aware expectation, no opening of the map) and the fingerprint cue without
  its weak map of partly clipped patches (``weak_clipped`` equal to ``max_clipped``).

Prints image AUC / pixel F1 at the best threshold, overall and per region size; writes the
per-detector metrics under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="bench/out/forgery/work")
    ap.add_argument("--out", default="bench/out/forgery_holdout")
    ap.add_argument("--kinds", default="splice-device")
    ap.add_argument("--seed", type=int, default=77)
    args = ap.parse_args()

    import torch

    import medforensics.forgery.cues.fingerprint as loc
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.evaluate import evaluate_detector
    from medforensics.synth.tamper import generate

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    work, out = Path(args.work), Path(args.out)
    manifest, src_run = work / "manifest.csv", work / "source_run"
    if not manifest.is_file() or not (src_run / "model.json").is_file():
        raise SystemExit(f"{work}: run `python bench/forgery.py` first (needs manifest.csv and "
                         "source_run/)")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    test_src = [r for r in csv.DictReader(open(manifest, newline="", encoding="utf-8"))
                if r.get("split") == "test" and r.get("status", "eligible") == "eligible"]
    tag = f"holdout_s{args.seed}_{'_'.join(kinds)}"
    tset = work / tag
    if not (tset / "tamper_manifest.csv").is_file():
        generate(test_src, tset, kinds=kinds, seed=args.seed, sizes=(64, 192))

    old_noise = {"range_aware": False, "min_extent": 0, "max_clipped": 0.0}
    current_fp = loc.fingerprint_llr_map

    def no_weak_map(*a: Any, **kw: Any) -> Any:
        kw["weak_clipped"] = kw.get("max_clipped", 0.05)
        return current_fp(*a, **kw)

    rows = []
    for rules in ("previous", "current"):
        for with_fp in (False, True):
            det = ForgeryDetector.from_run(None, source_run=src_run if with_fp else None,
                                           cue_params={"noise": old_noise} if rules == "previous" else None)
            loc.fingerprint_llr_map = no_weak_map if rules == "previous" else current_fp
            try:
                name = f"{rules}{'_fp' if with_fp else ''}"
                d = out / tag / name
                res = evaluate_detector(det, tset / "tamper_manifest.csv", out_dir=d,
                                        split="all", n_examples=2)
            finally:
                loc.fingerprint_llr_map = current_fp
            m = json.loads((d / "metrics.json").read_text())
            rows.append((rules, with_fp, m, res))
    sizes = sorted({b for _, _, m, _ in rows for b in m.get("pixel_by_size", {})})
    head = "| rules | fingerprint cue | n | image AUC / pixel F1 best | " + " | ".join(
        f"{b} px" for b in sizes) + " |"
    print(f"{tag}: {len(test_src)} test images, kinds {', '.join(kinds)}\n")
    print(head)
    print("|" + "---|" * (4 + len(sizes)))
    for rules, with_fp, m, _ in rows:
        cells = [f"{m['image_auc_by_size'].get(b, float('nan')):.2f} / "
                 f"{m['pixel_by_size'].get(b, {}).get('f1_best', float('nan')):.2f}"
                 for b in sizes]
        print(f"| {rules} | {'yes' if with_fp else 'no'} | {m['n_tampered']}+{m['n_original']} | "
              f"{m['image_auc']:.2f} / {m['pixel'].get('f1_best', float('nan')):.2f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
