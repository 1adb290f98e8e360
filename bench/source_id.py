"""Source-identification benchmark: our `patch` model vs the paper presets, on one split.

    python bench/source_id.py [--quick] [--out bench/out/source_id] [--paper-epochs 10]

What it does (everything generated here, nothing downloaded):

1. simulates an archive of 3 manufacturers x 2 models x 2 units (plus one extra model and
   one extra unit that are kept out of training entirely, for the open-set rows);
2. ingests it, splits it by patient (stratified by model), and moves every image of the
   held-out model/unit out of train/val;
3. trains `patch` (ours) on `model`, calibrates it, enrols unit reference patterns; trains
   `deep-rsi` and `deepmammo` with the papers' preprocessing on the same split;
4. reports on the test images of known devices: manufacturer (model probabilities summed per
   manufacturer), model, unit (reference patterns); robustness rows for the test images
   re-saved as 8-bit JPEG q95 / q85, resized 0.5x, or with mild Gaussian noise; open set:
   the fraction of held-out-device images called UNKNOWN and the false-UNKNOWN rate on known
   devices;
5. a real-data fingerprint check on ../shared/data/real/xray (when present): every real
   acquisition is cut into tiles; tiles from the left part train, tiles from the right part
   test (spatially disjoint), label = device.

Writes ``results.json`` and ``results.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.source_id")

REAL_XRAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "xray"


# ---------------------------------------------------------------------------- perturbations
def to_jpeg8(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Export-like re-save: min-max window to 8 bits, JPEG at ``quality``, decoded back."""
    from PIL import Image

    lo, hi = float(pixels.min()), float(pixels.max())
    u8 = np.round((pixels - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32)


def resize_half(pixels: np.ndarray) -> np.ndarray:
    """Bilinear 0.5x resize of the stored values (float, no quantisation)."""
    from PIL import Image

    h, w = pixels.shape
    im = Image.fromarray(pixels.astype(np.float32), mode="F")
    return np.asarray(im.resize((w // 2, h // 2), Image.Resampling.BILINEAR), dtype=np.float32)


def add_noise(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild Gaussian noise: std = half the image's own estimated noise level."""
    from medforensics.dsp.residuals import estimate_sigma

    sigma = 0.5 * float(estimate_sigma(pixels))
    return (pixels + rng.normal(0.0, sigma, pixels.shape)).astype(np.float32)


# ---------------------------------------------------------------------------- helpers
def manufacturer_of(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {r["model"]: r["manufacturer"] for r in rows if r.get("model")}


def accuracy_rows(pred, images, truths, classes_to_manu, transform=None, rng=None):
    """Model and manufacturer accuracy of ``pred`` on (pixels, true model) pairs."""
    ok_model, ok_manu = [], []
    man = classes_to_manu
    for px, truth in zip(images, truths):
        if transform is not None:
            px = transform(px) if rng is None else transform(px, rng)
        p = pred.predict(px).probs
        k = int(np.argmax(p))
        ok_model.append(pred.classes[k] == truth)
        by_manu: dict[str, float] = {}
        for c, pc in zip(pred.classes, p):
            by_manu[man[c]] = by_manu.get(man[c], 0.0) + float(pc)
        ok_manu.append(max(by_manu, key=by_manu.get) == man[truth])
    return float(np.mean(ok_manu)), float(np.mean(ok_model))


def real_tiles(out: Path, tile: int) -> list[dict[str, Any]]:
    """Cut every real X-ray acquisition into tiles (PNG16); left 60% train, right 40% test."""
    from medforensics.io import read_image, write_png16

    rows = []
    for f in sorted(REAL_XRAY.glob("*.dcm")):
        img = read_image(f)
        px = img.pixels
        if min(px.shape) < 2 * tile:
            continue
        device = f.stem
        lo = float(px.min())
        stored = np.round(px - lo)
        if stored.max() > 65535:
            continue
        h, w = px.shape
        cut = int(w * 0.6) // tile * tile
        for y in range(0, h - tile + 1, tile):
            for x in range(0, w - tile + 1, tile):
                if x + tile <= cut:
                    split = "train"
                elif x >= cut:
                    split = "test"
                else:
                    continue
                p = out / device / f"{y}_{x}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                write_png16(p, stored[y : y + tile, x : x + tile].astype(np.uint16))
                rows.append({"path": str(p), "status": "eligible", "split": split,
                             "device": device, "model": device,
                             "PatientID": f"{device}-{'right' if x >= cut else 'left'}"})
    # validation: a few train tiles per device (same region as training: this only picks the
    # best epoch; the test tiles stay disjoint)
    rng = np.random.default_rng(0)
    for d in sorted({r["device"] for r in rows}):
        tr = [r for r in rows if r["device"] == d and r["split"] == "train"]
        for r in rng.choice(len(tr), size=max(1, len(tr) // 6), replace=False):
            tr[int(r)]["split"] = "val"
    return rows


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/source_id")
    ap.add_argument("--quick", action="store_true", help="small archive, few epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patients", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="patch model epochs")
    ap.add_argument("--patches-per-image", type=int, default=48, help="patch model")
    ap.add_argument("--paper-epochs", type=int, default=None, help="deep-rsi/deepmammo epochs")
    ap.add_argument("--train-seeds", default="",
                    help="extra patch-model training seeds (comma list) for a spread line")
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.data.splits import assign_splits, check_leakage
    from medforensics.eval.calibration import open_set_rates
    from medforensics.io import read_image
    from medforensics.source.predictor import SourcePredictor, enroll_units
    from medforensics.source.calibrate import calibrate_run
    from medforensics.synth.devices import build_devices
    from medforensics.synth.simulate import simulate_archive
    from medforensics.training.engine import train

    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    patients = args.patients or (40 if args.quick else 96)
    epochs = args.epochs or (4 if args.quick else 12)
    paper_epochs = args.paper_epochs or (2 if args.quick else 10)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                       "torch": torch.__version__,
                                       "threads": torch.get_num_threads()},
                           "settings": vars(args) | {"patients": patients, "epochs": epochs,
                                                     "paper_epochs": paper_epochs}}

    # 1. archive: 3 manufacturers x 3 models; models 0.2 and 1.2 are not written, model 2.2 is
    # held out of training (an unknown model of a known manufacturer), and model 2.1 has a third
    # unit 2.1.2 that is held out too (an unknown unit of a known model).
    arch = out / "archive"
    dev_kw = dict(manufacturers=3, models_per_manufacturer=3,
                  units_per_model=[2, 2, 2, 2, 2, 2, 2, 3, 2], seed=args.seed)
    if not arch.exists():
        simulate_archive(arch, **dev_kw, patients=patients * 3 // 2,
                         size=(448, 768) if not args.quick else (320, 512),
                         exclude=["0.2", "1.2"])
    devices = {u.unit_id: u.labels() for u in build_devices(**dev_kw)}
    held_model = devices["2.2.0"]["model"]
    held_unit = devices["2.1.2"]["unit"]
    rows = [r for r in ingest([arch], progress=False) if r["status"] == "eligible"]
    assign_splits(rows, by="patient", test=0.25, val=0.15, stratify="model", seed=args.seed)
    held_patients = {r["PatientID"] for r in rows if r["model"] == held_model or r["unit"] == held_unit}
    for r in rows:  # a patient seen on a held-out device is held out with all their images
        if r["PatientID"] in held_patients:
            r["split"] = "heldout"
    check_leakage([r for r in rows if r["split"] != "heldout"])
    write_manifest(rows, out / "manifest.csv")
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test", "heldout")}
    res["archive"] = {"images": len(rows), "splits": counts, "held_out_model": held_model,
                      "held_out_unit": held_unit,
                      "known_models": sorted({r["model"] for r in rows if r["split"] == "train"})}
    log.info("archive: %s", res["archive"])
    known_test = [r for r in rows if r["split"] == "test"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    test_px = [read_image(r["path"]).pixels for r in known_test]
    test_truth = [r["model"] for r in known_test]
    man = manufacturer_of(rows)

    table: list[dict[str, Any]] = []

    # 2. ours
    t = time.perf_counter()
    run = out / "run-patch"
    if not (run / "model.json").exists():
        train(rows, label="model", preset="patch", out_dir=str(run), epochs=epochs,
              patches_per_image=args.patches_per_image, seed=args.seed, progress=False)
    train_s = time.perf_counter() - t
    calibrate_run(run, rows)
    fps = enroll_units(run, rows)
    pred = SourcePredictor.from_run(run)
    a_man, a_mod = accuracy_rows(pred, test_px, test_truth, man)
    unit_ok = [fps.identify_unit(px)[0] == r["unit"] for px, r in zip(test_px, known_test)]
    row = {"preset": "patch (ours)", "input": "native stored values", "manufacturer": a_man,
           "model": a_mod, "unit": float(np.mean(unit_ok)), "train_s": round(train_s, 1)}
    rng = np.random.default_rng(1)
    for name, fn, needs_rng in [("jpeg_q95", lambda p: to_jpeg8(p, 95), False),
                                ("jpeg_q85", lambda p: to_jpeg8(p, 85), False),
                                ("resize_0.5x", resize_half, False),
                                ("gauss_noise", add_noise, True)]:
        row[f"model_{name}"] = accuracy_rows(pred, test_px, test_truth, man, fn,
                                             rng if needs_rng else None)[1]
    known_scores = [float(pred.predict(px).probs.max()) for px in test_px]
    unk_scores = [float(pred.predict(read_image(r["path"]).pixels).probs.max()) for r in heldout
                  if r["model"] == held_model]
    osr = open_set_rates(np.array(known_scores), np.array(unk_scores), pred.unknown_threshold)
    row["open_set"] = osr
    # unit-level open set: held-out unit's images rejected by the reference patterns
    hu = [read_image(r["path"]).pixels for r in heldout if r["unit"] == held_unit]
    row["unit_open_set_rejected"] = float(np.mean([fps.identify_unit(px)[0] is None for px in hu])) if hu else None
    table.append(row)
    # inference patches per image: accuracy against CPU time (same model, same test images)
    sweep = []
    for k in (8, 16, 32, 64):
        pk = SourcePredictor.from_run(run, n_patches=k)
        a_man_k, a_mod_k = accuracy_rows(pk, test_px, test_truth, man)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # CPU time of one thread: comparable across runs
        cpu = []
        for _ in range(3):
            c0 = time.process_time()
            for px in test_px:
                pk.predict(px)
            cpu.append(1000.0 * (time.process_time() - c0) / len(test_px))
        torch.set_num_threads(threads)
        sweep.append({"n_patches": k, "manufacturer": a_man_k, "model": a_mod_k,
                      "cpu_ms_per_image": min(cpu), "torch_threads": 1})
    res["patch_sweep"] = sweep
    # the same training with other seeds: how much of the accuracy is the draw of one run
    spread = [{"seed": args.seed, "manufacturer": a_man, "model": a_mod}]
    for seed in [int(x) for x in args.train_seeds.split(",") if x.strip()]:
        srun = out / f"run-patch-seed{seed}"
        if not (srun / "model.json").exists():
            train(rows, label="model", preset="patch", out_dir=str(srun), epochs=epochs,
                  patches_per_image=args.patches_per_image, seed=seed, progress=False)
        s_man, s_mod = accuracy_rows(SourcePredictor.from_run(srun), test_px, test_truth, man)
        spread.append({"seed": seed, "manufacturer": s_man, "model": s_mod})
    res["seed_spread"] = spread

    # 3. paper presets
    if not args.skip_paper:
        for preset in ("deep-rsi", "deepmammo"):
            t = time.perf_counter()
            prun = out / f"run-{preset}"
            if not (prun / "model.json").exists():
                train(rows, label="model", preset=preset, out_dir=str(prun),
                      epochs=paper_epochs, seed=args.seed, progress=False)
            ts = time.perf_counter() - t
            pp = SourcePredictor.from_run(prun)
            a_man, a_mod = accuracy_rows(pp, test_px, test_truth, man)
            prow = {"preset": preset, "input": "8-bit min-max, resized 256x256 (paper)",
                    "manufacturer": a_man, "model": a_mod, "unit": None,
                    "train_s": round(ts, 1), "epochs": paper_epochs}
            for name, fn in [("jpeg_q95", lambda p: to_jpeg8(p, 95)),
                             ("jpeg_q85", lambda p: to_jpeg8(p, 85)),
                             ("resize_0.5x", resize_half)]:
                prow[f"model_{name}"] = accuracy_rows(pp, test_px, test_truth, man, fn)[1]
            table.append(prow)
    res["table"] = table

    # 4. real data
    if not args.skip_real and REAL_XRAY.is_dir():
        t = time.perf_counter()
        rdir = out / "real"
        rrows = real_tiles(rdir / "tiles", tile=256)
        rrun = rdir / "run"
        if not (rrun / "model.json").exists():
            train(rrows, label="model", preset="patch", out_dir=str(rrun),
                  epochs=max(3, epochs // 2), patches_per_image=args.patches_per_image,
                  seed=args.seed, progress=False)
        rp = SourcePredictor.from_run(rrun, n_patches=16)
        per: dict[str, list[bool]] = {}
        for r in rrows:
            if r["split"] != "test":
                continue
            p = rp.predict(read_image(r["path"]).pixels).probs
            per.setdefault(r["device"], []).append(rp.classes[int(np.argmax(p))] == r["device"])
        res["real"] = {"tile": 256, "devices": {d: {"test_tiles": len(v), "accuracy": float(np.mean(v))}
                                                for d, v in sorted(per.items())},
                       "overall": float(np.mean([x for v in per.values() for x in v])),
                       "seconds": round(time.perf_counter() - t, 1)}
    res["seconds_total"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    md = render(res)
    (out / "results.md").write_text(md)
    sys.stdout.write(md + "\n")
    return 0


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def render(res: dict[str, Any]) -> str:
    a = res["archive"]
    lines = [
        f"Archive: {a['images']} simulated images, splits {a['splits']} (patient level); "
        f"held out of training: model {a['held_out_model']}, unit {a['held_out_unit']}.",
        "",
        "| preset | input | manufacturer | model | unit | JPEG q95 | JPEG q85 | resize 0.5x | noise | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["table"]:
        lines.append(f"| {r['preset']} | {r['input']} | {_pct(r['manufacturer'])} | {_pct(r['model'])} | "
                     f"{_pct(r.get('unit'))} | {_pct(r.get('model_jpeg_q95'))} | {_pct(r.get('model_jpeg_q85'))} | "
                     f"{_pct(r.get('model_resize_0.5x'))} | {_pct(r.get('model_gauss_noise'))} | {r['train_s']} |")
    o = res["table"][0].get("open_set", {})
    lines += ["", f"Open set (patch): held-out devices flagged UNKNOWN {_pct(o.get('unknown_flagged', o.get('true_unknown_rate')))}; "
              f"false UNKNOWN on known devices {_pct(o.get('false_unknown', o.get('false_unknown_rate')))}; "
              f"held-out unit rejected by reference patterns {_pct(res['table'][0].get('unit_open_set_rejected'))}. "
              f"Raw: {json.dumps(o)}"]
    sp = res.get("seed_spread") or []
    if len(sp) > 1:
        mods = [x["model"] for x in sp]
        lines += ["", f"Patch model over {len(sp)} training seeds "
                  f"({', '.join(str(x['seed']) for x in sp)}; same archive and split, "
                  f"64 patches per image): model accuracy mean {_pct(np.mean(mods))}, "
                  f"min {_pct(min(mods))}, max {_pct(max(mods))} "
                  f"({', '.join(_pct(m) for m in mods)})."]
    if res.get("patch_sweep"):
        lines += ["", "Inference patches per image (patch model, clean test images; CPU ms per "
                  "image = patch choice + forward pass, one torch thread, best of 3):", "",
                  "| patches | manufacturer | model | CPU ms / image |", "|---|---|---|---|"]
        lines += [f"| {s['n_patches']} | {_pct(s['manufacturer'])} | {_pct(s['model'])} | "
                  f"{s['cpu_ms_per_image']:.1f} |" for s in res["patch_sweep"]]
    if "real" in res:
        r = res["real"]
        lines += ["", f"Real X-ray fingerprint check ({r['tile']} px tiles, train on left 60%, test on right 40% of each acquisition): "
                  f"overall tile accuracy {_pct(r['overall'])}.", "", "| device | test tiles | accuracy |", "|---|---|---|"]
        lines += [f"| {d} | {v['test_tiles']} | {_pct(v['accuracy'])} |" for d, v in r["devices"].items()]
    lines += ["", f"Total time {res['seconds_total']} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
