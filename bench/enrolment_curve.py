"""Enrolment learning curve: how much of one's own archive a run needs before it names devices.

    python bench/enrolment_curve.py [--out bench/out/enrolment_curve] [--ks 2,4,8,16]
                                    [--epochs 8] [--val-patients 4] [--test-patients 10]
                                    [--real-n 1,2,4,8] [--real-seeds 0,1,2] [--skip-real]
                                    [--seed 0]

Answers the questions of a user who enrols their own devices ("Enrolling your own devices"
in ``docs/openset.md``): how many patients per device model, and what the verdicts then are.

1. **Simulated archive** of 3 manufacturers x 2 models x 2 units (6 models, 12 units),
   ``size`` (256, 448), 1-2 images per patient, one unit per patient (so that "K patients
   per model" is well defined). Every unit's patients are shuffled once (``--seed``) and
   cut into a training pool (``max(ks) / 2`` patients), ``--val-patients`` validation and
   ``--test-patients`` test patients; validation and test are the same for every K. For
   K = 2, 4, 8, 16 training patients per model (K / 2 per unit, nested: the K = 4 patients
   include the K = 2 ones) a ``patch`` model is trained with the default settings (outlier
   exposure on) for ``--epochs`` epochs, calibrated (:func:`medforensics.source.calibrate.calibrate_run`)
   and its units enrolled from the training patients (:func:`medforensics.source.predictor.enroll_units`),
   as ``medforensics train`` does. On the test images it measures, with 95 % bootstrap
   intervals over test patients: (a) model named right by the full verdict, (b) top-1 model
   accuracy of the classifier (arg-max, no thresholds), (c) unit named right by the unit
   reference patterns alone (``UnitFingerprints.identify_unit`` over all enrolled units, at
   the calibrated PCE threshold), (d) false UNKNOWN (a known test image with nothing named),
   and the model named right by the classifier alone (no unit patterns loaded).
2. **Unit patterns on real X-rays**: not run. PRNU-style patterns are tied to detector
   positions, so references and queries must cover the same pixels of the detector in
   *different* acquisitions. The real set has one acquisition per device: tiles of the same
   position are the same pixels (a query would be compared with itself), tiles of other
   positions share no pattern. The result records this instead of a number.
3. **Classifier on real tiles** (``bench/source_id.real_tiles``: 256 px tiles; left 60 %
   of each acquisition for training, right 40 % for test, spatially disjoint): 4 known
   devices; per known device 6 left tiles are validation (24 in all, enough for a 5 %
   conformal threshold) and N = 1, 2, 4, 8 further left tiles train. Measured on the right
   tiles: top-1 accuracy, named right, false UNKNOWN on the 4 known devices, and the share
   of the other devices' right tiles that are not named. Intervals resample devices (the
   tiles of one acquisition are not independent), so with 4 devices they are wide. Each N
   is trained with every seed of ``--real-seeds`` (same tiles, other initialisation and
   patch draw), since a few tiles make single runs noisy.

The simulated curve has one training seed per point: its intervals cover the draw of test
patients, not the draw of the training run. Writes ``results.json`` and ``results.md`` into ``--out`` and prints
the tables. Run folders are reused when present (delete ``--out`` for a fresh run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openset import fmt as shared_fmt  # noqa: E402  (bench/ sibling)
from openset import interval as shared_interval  # noqa: E402
from openset import finish, verdicts  # noqa: E402

log = logging.getLogger("bench.enrolment_curve")

REAL_XRAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "xray"

REAL_PRNU_SKIPPED = (
    "not run: the real set has one acquisition per device. Reference patterns are tied to "
    "detector positions, so references and queries must cover the same detector pixels in "
    "different acquisitions; tiles of the same position in one acquisition are the same "
    "pixels (the query would be matched against itself) and tiles of other positions share "
    "no pattern. A meaningful curve needs at least two full-frame acquisitions per device "
    "with the same orientation and cropping.")

CAL_KEYS = ("temperature", "unknown_threshold", "feature_threshold", "threshold_note",
            "n_val_images", "val_accuracy", "val_false_unknown",
            "leave_one_class_out_unknown_rate", "outlier_devices_named_rate")


def interval(values: list[bool], groups: list[str], n_boot: int = 1000) -> dict[str, Any]:
    """:func:`openset.interval` plus the number of clusters."""
    return shared_interval(values, groups, n_boot) | {"clusters": len(set(groups))}


def fmt(cell: dict[str, Any] | None) -> str:
    """``rate [low-high]`` in percent, or ``n/a`` (:func:`openset.fmt` without the count)."""
    if not cell or cell.get("rate") is None:
        return "n/a"
    return shared_fmt(cell).split(" (n=")[0]


def classifier_alone(run: Path) -> Any:
    """The run's predictor without unit patterns: only the classifier's open set names."""
    from medforensics.source.predictor import SourcePredictor

    pred = SourcePredictor.from_run(run)
    pred.fingerprints, pred.require_unit_match = None, False
    return pred


# ---------------------------------------------------------------------------- simulated
def simulated_rows(args: argparse.Namespace, out: Path) -> tuple[list[dict[str, Any]],
                                                                  dict[str, list[str]]]:
    """The archive's eligible rows and, per unit, its patients in a fixed shuffled order.

    Each unit's list is cut as [training pool | validation | test].
    """
    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive

    per_unit = max(args.ks) // 2 + args.val_patients + args.test_patients
    arch = out / "archive"
    done = out / "archive.complete"
    if not done.is_file():
        simulate_archive(arch, manufacturers=3, models_per_manufacturer=2, units_per_model=2,
                         patients=12 * per_unit, images_per_patient=(1, 2), size=(256, 448),
                         seed=args.seed, multi_device_fraction=0.0, overwrite=True)
        done.write_text("ok\n")
    rows = [r for r in ingest([arch], progress=False) if r["status"] == "eligible"]
    patients: dict[str, set[str]] = {}
    for r in rows:
        patients.setdefault(r["unit"], set()).add(r["PatientID"])
    rng = np.random.default_rng(args.seed)
    order = {u: [str(p) for p in rng.permutation(sorted(ps))] for u, ps in sorted(patients.items())}
    for u, ps in order.items():
        if len(ps) < per_unit:
            raise SystemExit(f"unit {u} has {len(ps)} patients, {per_unit} needed")
    return rows, order


def simulated_point(args: argparse.Namespace, out: Path, k: int, rows: list[dict[str, Any]],
                    order: dict[str, list[str]]) -> dict[str, Any]:
    """Train, calibrate and enrol with K training patients per model; measure on test."""
    from medforensics.data.splits import check_leakage
    from medforensics.io import read_image
    from medforensics.source.predictor import SourcePredictor, enroll_units
    from medforensics.source.calibrate import calibrate_run
    from medforensics.training.engine import train

    pool = max(args.ks) // 2
    split_of: dict[str, str] = {}
    for ps in order.values():
        for p in ps[: k // 2]:
            split_of[p] = "train"
        for p in ps[pool : pool + args.val_patients]:
            split_of[p] = "val"
        for p in ps[pool + args.val_patients : pool + args.val_patients + args.test_patients]:
            split_of[p] = "test"
    rows = [dict(r, split=split_of.get(r["PatientID"], "unused")) for r in rows]
    check_leakage([r for r in rows if r["split"] != "unused"])
    run = out / f"run-k{k}"
    t0 = time.perf_counter()
    if not (run / "model.json").exists():
        train(rows, label="model", preset="patch", out_dir=str(run), epochs=args.epochs,
              seed=args.seed, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cal = calibrate_run(run, rows)
    fps = enroll_units(run, rows, progress=False)
    cal_s = time.perf_counter() - t0
    test = [r for r in rows if r["split"] == "test"]
    paths = [r["path"] for r in test]
    groups = [r["PatientID"] for r in test]
    t0 = time.perf_counter()
    full = verdicts(SourcePredictor.from_run(run), paths)
    alone = verdicts(classifier_alone(run), paths)
    units = [fps.identify_unit(read_image(p).pixels)[0] for p in paths]
    eval_s = time.perf_counter() - t0
    train_rows = [r for r in rows if r["split"] == "train"]
    entry = {
        "k_patients_per_model": k,
        "train_patients": len({r["PatientID"] for r in train_rows}),
        "train_images": len(train_rows),
        "enrolment_images_per_unit": sorted(fps.n_images.values()),
        "val_images": sum(r["split"] == "val" for r in rows),
        "test_images": len(test),
        "test_patients": len(set(groups)),
        "calibration": {key: cal.get(key) for key in CAL_KEYS},
        "unit_threshold": float(fps.config.threshold),
        "model_named_right": interval([bool(v.confident) and v.predicted == r["model"]
                                       for v, r in zip(full, test)], groups),
        "classifier_top1": interval([bool(v.top) and v.top[0][0] == r["model"]
                                     for v, r in zip(alone, test)], groups),
        "unit_named_right": interval([u == r["unit"] for u, r in zip(units, test)], groups),
        "unit_named_wrong": interval([u is not None and u != r["unit"]
                                      for u, r in zip(units, test)], groups),
        "false_unknown": interval([not v.confident for v in full], groups),
        "model_named_wrong": interval([bool(v.confident) and v.predicted != r["model"]
                                       for v, r in zip(full, test)], groups),
        "classifier_alone_named_right": interval(
            [bool(v.confident) and v.predicted == r["model"] for v, r in zip(alone, test)],
            groups),
        "verdicts": dict(Counter(v.verdict for v in full)),
        "named_by": dict(Counter(str(v.named_by) for v in full)),
        "seconds": {"train": round(train_s, 1), "calibrate_and_enrol": round(cal_s, 1),
                    "evaluate": round(eval_s, 1)},
    }
    log.info("K=%d: %s", k, json.dumps({key: entry[key]["rate"] for key in (
        "model_named_right", "classifier_top1", "unit_named_right", "false_unknown")}))
    return entry


# ---------------------------------------------------------------------------- real tiles
def real_tile_curve(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Classifier curve on real tiles: N left tiles per known device train, right tiles test."""
    from source_id import real_tiles

    from medforensics.source.calibrate import calibrate_run
    from medforensics.training.engine import train

    base = real_tiles(out / "tiles", tile=256)
    devices = sorted({r["device"] for r in base})
    known = devices[::2][:4]
    rng = np.random.default_rng(args.seed)
    role: dict[str, str] = {}
    pools: dict[str, list[str]] = {}
    for d in known:
        left = sorted(r["path"] for r in base if r["device"] == d and r["split"] in ("train", "val"))
        left = [left[int(i)] for i in rng.permutation(len(left))]
        for p in left[:6]:
            role[p] = "val"
        pools[d] = left[6:]
    res: dict[str, Any] = {"devices": devices, "known": known,
                           "train_pool": {d: len(p) for d, p in pools.items()}, "points": []}
    for n, seed in [(n, s) for n in args.real_n for s in args.real_seeds]:
        if any(len(p) < n for p in pools.values()):
            log.warning("real tiles: N=%d exceeds a device's pool %s; skipped", n,
                        {d: len(p) for d, p in pools.items()})
            continue
        train_set = {p for d in known for p in pools[d][:n]}
        rows = []
        for r in base:
            r = dict(r)
            if r["split"] == "test":
                pass
            elif r["path"] in train_set:
                r["split"] = "train"
            else:
                r["split"] = role.get(r["path"], "unused")
            if r["device"] not in known and r["split"] != "test":
                r["split"] = "unused"
            rows.append(r)
        run = out / (f"run-n{n}" if seed == args.seed else f"run-n{n}-seed{seed}")
        t0 = time.perf_counter()
        if not (run / "model.json").exists():
            train(rows, label="model", preset="patch", out_dir=str(run), epochs=args.epochs,
                  seed=seed, progress=False)
        cal = calibrate_run(run, rows, n_patches=16)
        alone = classifier_alone(run)
        test = [r for r in rows if r["split"] == "test"]
        vs = verdicts(alone, [r["path"] for r in test])
        kn = [(v, r) for v, r in zip(vs, test) if r["device"] in known]
        un = [(v, r) for v, r in zip(vs, test) if r["device"] not in known]
        kg = [r["device"] for _, r in kn]
        point = {
            "n_tiles_per_device": n,
            "train_seed": seed,
            "val_tiles": sum(r["split"] == "val" for r in rows),
            "calibration": {key: cal.get(key) for key in CAL_KEYS},
            "top1": interval([bool(v.top) and v.top[0][0] == r["model"] for v, r in kn], kg),
            "named_right": interval([bool(v.confident) and v.predicted == r["model"]
                                     for v, r in kn], kg),
            "false_unknown": interval([not v.confident for v, _ in kn], kg),
            "unseen_not_named": interval([not v.confident for v, _ in un],
                                         [r["device"] for _, r in un]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log.info("real N=%d seed %d: %s", n, seed, json.dumps({key: point[key]["rate"] for key in (
            "top1", "named_right", "false_unknown", "unseen_not_named")}))
        res["points"].append(point)
    return res


# ---------------------------------------------------------------------------- output
def render(res: dict[str, Any]) -> str:
    s = res["simulated"]
    lines = [f"Simulated: {s['units']} units of {s['models']} models; fixed validation "
             f"{s['val_images']} images ({s['val_patients']} patients), fixed test "
             f"{s['test_images']} images ({s['test_patients']} patients); {res['settings']['epochs']} "
             "epochs; 95 % intervals over test patients.", "",
             "| training patients per model (images) | enrolment images per unit | (a) model "
             "named right, full verdict | (b) classifier top-1 | (c) unit named right, "
             "patterns | (d) false UNKNOWN | classifier alone named right | "
             "LOCO rejected / outliers named |",
             "|---|---|---|---|---|---|---|---|"]
    for e in s["points"]:
        c = e["calibration"]
        ipu = e["enrolment_images_per_unit"]
        loco, outl = c.get("leave_one_class_out_unknown_rate"), c.get("outlier_devices_named_rate")
        lines.append(
            f"| {e['k_patients_per_model']} ({e['train_images']}) | {min(ipu)}-{max(ipu)} | "
            f"{fmt(e['model_named_right'])} | {fmt(e['classifier_top1'])} | "
            f"{fmt(e['unit_named_right'])} | {fmt(e['false_unknown'])} | "
            f"{fmt(e['classifier_alone_named_right'])} | "
            f"{'n/a' if loco is None else f'{loco:.0%}'} / {'n/a' if outl is None else f'{outl:.0%}'} |")
    wrong = [(e["k_patients_per_model"], e["model_named_wrong"]["rate"],
              e["unit_named_wrong"]["rate"]) for e in s["points"]]
    lines += ["", "Named wrong (model by the full verdict / unit by the patterns), per K: "
              + "; ".join(f"K={k}: {m:.1%} / {u:.1%}" for k, m, u in wrong) + "."]
    lines += ["", f"Unit patterns on real X-rays: {res['real_unit_patterns']}"]
    rt = res.get("real_tiles")
    if rt and rt.get("points"):
        lines += ["", f"Real tiles (256 px; known: {', '.join(rt['known'])}; train pool "
                  f"{rt['train_pool']}; 95 % intervals over devices):", "",
                  "| training tiles per device | training seed | top-1 (known) | named right (known) | "
                  "false UNKNOWN (known) | unseen devices' tiles not named | feature threshold |",
                  "|---|---|---|---|---|---|---|"]
        for p in rt["points"]:
            ft = p["calibration"].get("feature_threshold")
            lines.append(f"| {p['n_tiles_per_device']} | {p['train_seed']} | {fmt(p['top1'])} | "
                         f"{fmt(p['named_right'])} | {fmt(p['false_unknown'])} | "
                         f"{fmt(p['unseen_not_named'])} | "
                         f"{'not set' if ft is None else f'{ft:.3g}'} |")
        means = []
        for n in sorted({p["n_tiles_per_device"] for p in rt["points"]}):
            ps = [p for p in rt["points"] if p["n_tiles_per_device"] == n]
            avg = {key: float(np.mean([p[key]["rate"] for p in ps])) for key in (
                "top1", "named_right", "false_unknown", "unseen_not_named")}
            means.append(f"N={n}: {avg['top1']:.0%} / {avg['named_right']:.0%} / "
                         f"{avg['false_unknown']:.0%} / {avg['unseen_not_named']:.0%}")
        lines += ["", f"Mean over {len(ps)} training seeds (top-1 / named right / false "
                  "UNKNOWN / unseen not named): " + "; ".join(means) + "."]
    m = res["machine"]
    lines += ["", f"Load average (1, 5, 15 min) at start {m['load_at_start']}, at end "
              f"{m['load_at_end']}; {res['seconds']} s wall, torch {m['threads']} thread."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/enrolment_curve")
    ap.add_argument("--ks", default="2,4,8,16", help="training patients per model (even)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--val-patients", type=int, default=4, help="per unit")
    ap.add_argument("--test-patients", type=int, default=10, help="per unit")
    ap.add_argument("--real-n", default="1,2,4,8", help="training tiles per real device")
    ap.add_argument("--real-seeds", default="0,1,2", help="training seeds per real-tile N")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.ks = sorted(int(x) for x in args.ks.split(",") if x.strip())
    args.real_n = sorted(int(x) for x in args.real_n.split(",") if x.strip())
    args.real_seeds = [int(x) for x in args.real_seeds.split(",") if x.strip()]
    if any(k < 2 or k % 2 for k in args.ks):
        ap.error("--ks must be even numbers >= 2 (K / 2 patients per unit)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("medforensics", "medforensics.source.predictor", "medforensics.source.units"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                       "torch": torch.__version__, "threads": 1,
                                       "load_at_start": [round(x, 2) for x in os.getloadavg()]},
                           "settings": vars(args)}
    rows, order = simulated_rows(args, out / "sim")
    pool = max(args.ks) // 2
    val_p = {p for ps in order.values() for p in ps[pool : pool + args.val_patients]}
    test_p = {p for ps in order.values()
              for p in ps[pool + args.val_patients : pool + args.val_patients + args.test_patients]}
    res["simulated"] = {
        "units": len(order), "models": len({r["model"] for r in rows}),
        "archive_images": len(rows),
        "val_patients": len(val_p), "val_images": sum(r["PatientID"] in val_p for r in rows),
        "test_patients": len(test_p), "test_images": sum(r["PatientID"] in test_p for r in rows),
        "points": [simulated_point(args, out / "sim", k, rows, order) for k in args.ks],
    }
    res["real_unit_patterns"] = REAL_PRNU_SKIPPED
    if not args.skip_real and REAL_XRAY.is_dir():
        res["real_tiles"] = real_tile_curve(args, out / "real")
    finish(out, res, render, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
