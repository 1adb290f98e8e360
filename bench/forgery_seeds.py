"""How much the fingerprint cue depends on the source model: one source model per seed.

    python bench/forgery_seeds.py [--work bench/out/forgery/work] [--seeds 0,1,2,3]
                                  [--min-coverage 0,0.5]

The fingerprint cue slides a source-identification ``patch`` model over the image; its false
alarms depend on how well that model was trained. ``bench/forgery.py`` trains one (seed 0).
This script reuses that script's work folder (run it first): the simulated archive and its
patient split (``manifest.csv``), the first tamper draw's test pairs (``tamper_dicom_test.csv``)
and the held-out second draw (``tamper_dicom_draw2``). For every seed it trains the source
model with the same recipe (``patch`` preset, label ``model``, 8 epochs, train split only; a
seed's run is cached in ``--out``) and evaluates the training-free detector with the
fingerprint cue on both draws. Image AUC and pixel F1-best per kind, with 95 % bootstrap
intervals over source images, and the source model's best validation balanced accuracy.
``--min-coverage`` lists the fingerprint cue's ``min_coverage`` settings to compare (0 = a
pixel's value is the plain mean of the patches covering it, as before 0.5 became the default).

Writes ``results.json`` and ``results.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.forgery_seeds")

KINDS = ("copy-move", "splice-device", "removal")


def cell(m: dict[str, Any], kind: str | None) -> str:
    """``AUC [lo-hi] / F1 [lo-hi]`` of one kind (None = all kinds)."""
    from medforensics.eval.tables import fmt_interval

    ci = m.get("ci") or {}
    if kind is None:
        auc, f1, c = m["image_auc"], m["pixel"].get("f1_best"), ci
    else:
        auc = m["image_auc_by_kind"].get(kind)
        f1 = m["pixel_by_kind"].get(kind, {}).get("f1_best")
        c = ci.get("by_kind", {}).get(kind, {})
    return (f"{auc:.2f}{fmt_interval(c.get('image_auc'))} / "
            f"{f1:.2f}{fmt_interval(c.get('pixel_f1_best'))}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="bench/out/forgery/work",
                    help="work folder of bench/forgery.py")
    ap.add_argument("--out", default="bench/out/forgery_seeds")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--epochs", type=int, default=8, help="source model epochs (as forgery.py)")
    ap.add_argument("--min-coverage", default="0,0.5",
                    help="fingerprint min_coverage settings to compare")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("pydicom", "medforensics"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from medforensics.data.manifest import read_manifest
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.evaluate import evaluate_detector
    from medforensics.training.engine import train

    torch.set_num_threads(1)
    work, out = Path(args.work), Path(args.out)
    sets = {"1st draw": work / "tamper_dicom_test.csv",
            "2nd draw (held out)": work / "tamper_dicom_draw2" / "tamper_manifest.csv"}
    missing = [str(p) for p in [work / "manifest.csv", *sets.values()] if not p.is_file()]
    if missing:
        raise SystemExit(f"run bench/forgery.py first; missing: {', '.join(missing)}")
    rows = [r for r in read_manifest(work / "manifest.csv") if r.get("status") == "eligible"]
    coverages = [float(x) for x in args.min_coverage.split(",") if x.strip()]
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": "python bench/forgery_seeds.py "
                               + " ".join(argv if argv is not None else []), "seeds": {}}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        run = out / f"source_run_seed{seed}"
        t0 = time.perf_counter()
        if not (run / "model.json").is_file():
            train(rows, label="model", preset="patch", out_dir=str(run), epochs=args.epochs,
                  seed=seed, progress=False)
        t_train = time.perf_counter() - t0
        hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        val_bacc = max(h.get("val_bacc", float("nan")) for h in hist)
        per: dict[str, Any] = {"val_bacc": val_bacc, "train_s": round(t_train, 1)}
        for mc, name in [(mc, name) for mc in coverages for name in sets]:
            manifest = sets[name]
            det = ForgeryDetector.from_run(None, source_run=run,
                                           cue_params={"fingerprint": {"min_coverage": mc}})
            d = out / f"eval_seed{seed}_{name.split()[0]}_mc{mc:g}"
            if (d / "metrics.json").is_file():
                m = json.loads((d / "metrics.json").read_text())
            else:
                evaluate_detector(det, manifest, out_dir=d, split="all", n_examples=0)
                m = json.loads((d / "metrics.json").read_text())
            fp_orig = sum(1 for r in json.loads((d / "per_image.json").read_text())
                          if r["label"] == 0 and r["score"] >= m["threshold"])
            per[f"{name}|{mc:g}"] = {"metrics_file": str(d / "metrics.json"), "originals_flagged": fp_orig,
                         "n_original": m["n_original"],
                         "cells": {k: cell(m, k) for k in KINDS} | {"all": cell(m, None)},
                         "splice_auc": m["image_auc_by_kind"].get("splice-device"),
                         "splice_f1": m["pixel_by_kind"].get("splice-device", {}).get("f1_best")}
            log.info("seed %d %s, min_coverage %g: splice %s, %d of %d originals flagged",
                     seed, name, mc, per[f"{name}|{mc:g}"]["cells"]["splice-device"], fp_orig,
                     m["n_original"])
        results["seeds"][str(seed)] = per
    md = ["# Fingerprint cue over source-model seeds", "",
          f"Command: `{results['command'].strip()}`; image AUC / pixel F1-best [95 % interval "
          "over source images]; training-free detector with the fingerprint cue.", "",
          "| seed | source val bacc | draw | min_coverage | all | copy-move | splice, other "
          "device | removal | originals flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for seed, per in results["seeds"].items():
        for name in sets:
            for mc in coverages:
                e = per[f"{name}|{mc:g}"]
                c = e["cells"]
                md.append(f"| {seed} | {per['val_bacc']:.3f} | {name} | {mc:g} | {c['all']} | "
                          f"{c['copy-move']} | {c['splice-device']} | {c['removal']} | "
                          f"{e['originals_flagged']} of {e['n_original']} |")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
