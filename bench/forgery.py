"""Forgery benchmark: detection (image AUC) and localization (pixel F1) per tampering kind.

    python bench/forgery.py [--quick] [--out bench/out/forgery] [--patients 60] [--skip-jpeg]

What it does (everything generated here, nothing downloaded; steps are cached in
``--out/work`` so an interrupted run continues):

1. simulates a lossless DICOM archive (3 manufacturers x 2 models x 1 unit, 14-bit), splits it
   by patient and trains the source ``patch`` model on the train split (for the fingerprint
   cue);
2. **lossless DICOM**: tampers every image (copy-move, splice from another device, removal;
   regions 64-192 px; the tamper manifest carries the patient split), trains the ``cues``
   combiner (with the fingerprint cue) and the paper's ``ela-cnn`` on the train split and
   evaluates on the test split: training-free cues, + fingerprint cue, learned combiner,
   ELA-CNN;
3. **small regions**: the test images again with 32-40 px regions; a second, independent
   64-192 px tamper draw of the test images (held out from the tuning of the cues); and
   copy-moves that are turned (quarter turns and -30..30 degrees) or scaled;
4. **JPEG exports**: every DICOM exported as 8-bit JPEG q90 (0.5-99.5 percentile window), the
   JPEG files tampered (an edit of the exported JPEG, re-saved with the same tables), the
   paper's ``ela-cnn`` trained on the train split vs ours, accuracy on the test split (the
   paper reports 93 % on its own 600 images); and the textbook ELA case: the decoded JPEG
   exports edited and saved losslessly (PNG), so that only the edit lacks the JPEG history;
5. **JPEG re-save of a tampered DICOM export**: the tampered and original test DICOMs of step 2
   exported to JPEG q90 *after* the edit (the edit leaves no double-compression trace);
6. **real files** (../shared/data/real, skipped when absent): the distinct lossless
   single-frame radiographs (xray/ and codecs/; a file whose decoded pixels equal an earlier
   one's is dropped) tampered in ``--real-rounds`` rounds (default 4), and the distinct
   lossless MR slices (mr/) in 2 rounds with 64-96 px regions; training-free detector, plus
   its verdict on every untouched real file. One more radiograph row measures copy-moves
   whose source is clipped background (``copy_source="clipped"``: a constant fill, which the
   generator's ordinary copy-moves no longer make), and one the radiograph pairs re-encoded as
   lossy JPEG 2000 10:1 after the edit.

Copy-move rows carry two pixel F1s: against the pasted area only (the tamper mask) and against
both copies (the paste and the source area it was copied from, the tamper set's source mask).
A copy-move whose direction cannot be shown is reported as ``undetermined`` with both copies
marked, which the paste-only F1 counts as false positives.

Image AUC and pixel F1-best carry 95 % bootstrap intervals in brackets, resampling source
images (a tampered image and its original, and every pair made from one real picture, move
together): with 15-30 edits of a kind, the second decimal is not settled.

Writes ``results.json`` and ``results.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any


log = logging.getLogger("bench.forgery")

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
KINDS = ["copy-move", "splice-device", "removal"]


# ------------------------------------------------------------------------------- helpers
def export_jpeg(src: str | Path, dst: Path, quality: int = 90) -> None:
    """8-bit JPEG export of a DICOM: 0.5-99.5 percentile window of the stored values."""
    from medforensics.forgery.cues.ela import window_to_uint8
    from medforensics.io import read_image, write_jpeg

    px, _ = read_image(src)
    img8, _, _ = window_to_uint8(px)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(dst, img8, quality=quality)


def export_j2k(src: str | Path, dst: Path, ratio: int = 10) -> None:
    """The DICOM re-encoded as lossy JPEG 2000 (``ratio``:1, pylibjpeg-openjpeg), with the
    header saying so (LossyImageCompression "01", ratio, method ISO_15444_1)."""
    import pydicom
    from pydicom.uid import JPEG2000

    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.compress(JPEG2000, j2k_cr=[ratio], encoding_plugin="pylibjpeg")
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = str(ratio)
    ds.LossyImageCompressionMethod = "ISO_15444_1"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)


def write_rows(rows: list[dict[str, str]], path: Path) -> None:
    from medforensics.synth.tamper import write_manifest

    write_manifest(rows, path)


def tamper_and_train(rows: list[dict[str, str]], work: Path, name: str, *, tamper_seed: int,
                     seed: int, ela_epochs: int, source_run: Path | None = None
                     ) -> tuple[Path, Path, Path, Path]:
    """Tamper set ``work/tamper_<name>``, its ELA-CNN and cues runs and its test manifest.

    Every step is skipped when its output exists (a killed training resumes).

    Returns:
        ``(tamper manifest, ela-cnn run, cues run, test-split manifest)``.
    """
    from medforensics.synth.tamper import generate
    from medforensics.forgery.train import train_forgery

    tset = work / f"tamper_{name}"
    manifest = tset / "tamper_manifest.csv"
    if not manifest.is_file():
        generate(rows, tset, kinds=KINDS, seed=tamper_seed, sizes=(64, 192))
    ela_run, cues_run = work / f"run_ela_{name}", work / f"run_cues_{name}"
    if not (cues_run / "model.json").is_file():
        train_forgery(manifest, preset="cues", out_dir=cues_run, source_run=source_run,
                      seed=seed, resume=cues_run.exists(), progress=False)
    if not (ela_run / "model.json").is_file():
        train_forgery(manifest, preset="ela-cnn", out_dir=ela_run, epochs=ela_epochs,
                      seed=seed, resume=ela_run.exists(), progress=False)
    test = work / f"tamper_{name}_test.csv"
    with open(manifest, newline="") as fh:
        write_rows([r for r in csv.DictReader(fh) if r["split"] == "test"], test)
    return manifest, ela_run, cues_run, test


def evaluate(det: Any, manifest: Path, out: Path, name: str, split: str = "auto"
             ) -> dict[str, Any]:
    """evaluate_detector, cached as ``out/<name>/metrics.json``."""
    from medforensics.forgery.evaluate import evaluate_detector

    d = out / name
    if (d / "metrics.json").is_file():
        m = json.loads((d / "metrics.json").read_text())
        if not m.get("ci"):  # cached before the intervals existed: add them
            m["ci"] = cached_intervals(d, manifest, float(m["threshold"]))
            (d / "metrics.json").write_text(json.dumps(m, indent=2, sort_keys=True))
        return m
    t0 = time.perf_counter()
    res = evaluate_detector(det, manifest, out_dir=d, split=split, n_examples=3)
    log.info("%s: image AUC %.3f, pixel F1-best %.3f (%.0f s)", name, res["image_auc"],
             res["pixel"].get("f1_best", float("nan")), time.perf_counter() - t0)
    return json.loads((d / "metrics.json").read_text())


def cached_intervals(d: Path, manifest: Path, threshold: float) -> dict[str, Any]:
    """Bootstrap intervals from a cached ``per_image.json`` (source images from the manifest)."""
    from medforensics.common.jsonio import to_jsonable
    from medforensics.forgery.evaluate import confidence_intervals

    rows = {r["path"]: r for r in csv.DictReader(open(manifest, newline=""))}
    recs = json.loads((d / "per_image.json").read_text())
    for r in recs:
        if not r.get("cluster"):
            m = rows.get(r["path"], {})
            r["cluster"] = m.get("original_path") or m.get("pair_id") or r["path"]
    return to_jsonable(confidence_intervals(recs, threshold=threshold))


def summary_rows(dataset: str, detector: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows: one per kind plus 'all'."""
    out = []
    im = m.get("image", {})
    ci = m.get("ci") or {}
    out.append({
        "dataset": dataset, "detector": detector, "kind": "all",
        "n": f"{m['n_tampered']}+{m['n_original']}",
        "image_auc": m.get("image_auc"), "image_auc_ci": ci.get("image_auc"),
        "pixel_f1_best_ci": ci.get("pixel_f1_best"), "accuracy": im.get("accuracy"),
        "precision": im.get("precision"), "recall": im.get("recall"), "f1": im.get("f1"),
        "pixel_f1_best": m["pixel"].get("f1_best"), "pixel_f1_05": m["pixel"].get("f1_fixed"),
        "iou_05": m["pixel"].get("iou_fixed"), "pixel_auc": m["pixel"].get("auc"),
        "fp_area_original": m.get("fp_area_original"),
    })
    for k, auc in sorted(m.get("image_auc_by_kind", {}).items()):
        px = m.get("pixel_by_kind", {}).get(k, {})
        both = m.get("pixel_both_by_kind", {}).get(k, {})
        out.append({
            "dataset": dataset, "detector": detector, "kind": k,
            "n": str(int(px.get("n_images", 0))), "image_auc": auc,
            "image_auc_ci": ci.get("by_kind", {}).get(k, {}).get("image_auc"),
            "pixel_f1_best_ci": ci.get("by_kind", {}).get(k, {}).get("pixel_f1_best"),
            "recall": m.get("recall_by_kind", {}).get(k),
            "pixel_f1_best": px.get("f1_best"), "pixel_f1_05": px.get("f1_fixed"),
            "iou_05": px.get("iou_fixed"), "pixel_auc": px.get("auc"),
            "pixel_f1_best_both": both.get("f1_best"), "pixel_f1_05_both": both.get("f1_fixed"),
            "pixel_f1_best_both_ci": ci.get("by_kind", {}).get(k, {}).get("pixel_f1_best_both"),
        })
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)


def markdown(rows: list[dict[str, Any]]) -> str:
    from medforensics.eval.tables import fmt_interval

    cols = ["dataset", "detector", "kind", "n", "image_auc", "accuracy", "precision", "recall",
            "f1", "pixel_f1_best", "pixel_f1_05", "pixel_f1_best_both", "pixel_f1_05_both",
            "iou_05", "pixel_auc", "fp_area_original"]
    head = ["data", "detector", "kind", "n (tam+orig / tam)", "image AUC", "acc", "prec",
            "recall", "F1", "pixel F1 best (paste)", "pixel F1 @0.5 (paste)",
            "pixel F1 best (both copies)", "pixel F1 @0.5 (both copies)", "IoU @0.5 (paste)",
            "pixel AUC (paste)", "FP area % (orig)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            cells.append(fmt(r.get(c)) + fmt_interval(r.get(c + "_ci")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_angle(manifest: Path, eval_dir: Path) -> dict[str, Any]:
    """Copy-move cue score and pixel F1-best (paste only, and both copies) per rotation class
    of a turned copy-move set."""
    rows = {r["path"]: r for r in csv.DictReader(open(manifest, newline=""))}
    per = json.loads((eval_dir / "per_image.json").read_text())
    out: dict[str, dict[str, list[float]]] = {}
    for rec in per:
        if rec["label"] != 1:
            continue
        angle = float(json.loads(rows[rec["path"]]["detail"])["angle"])
        cls = "quarter turn" if angle in (90.0, 180.0, 270.0) else "-30..30 deg"
        d = out.setdefault(cls, {"score": [], "f1_best": [], "f1_best_both": []})
        d["score"].append(float(rec["score"]))
        d["f1_best"].append(float(rec.get("pixel_f1_best") or 0.0))
        d["f1_best_both"].append(float(rec.get("pixel_f1_best_both") or 0.0))
    return {k: {"n": len(v["score"]),
                "detected_at_0.5": sum(s >= 0.5 for s in v["score"]) / len(v["score"]),
                "mean_pixel_f1_best": sum(v["f1_best"]) / len(v["f1_best"]),
                "mean_pixel_f1_best_both": sum(v["f1_best_both"]) / len(v["f1_best_both"])}
            for k, v in out.items()}


def real_inputs(cands: list[Path]) -> list[dict[str, str]]:
    """Rows of the distinct lossless single-frame images among ``cands`` (see realfiles)."""
    from realfiles import lossless_real_files

    return [{"path": str(p)} for p, _ in lossless_real_files(cands)]


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/forgery")
    ap.add_argument("--quick", action="store_true", help="small archive, few epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patients", type=int, default=None)
    ap.add_argument("--source-epochs", type=int, default=None)
    ap.add_argument("--ela-epochs", type=int, default=None, help="default: the preset's 30")
    ap.add_argument("--real-rounds", type=int, default=None)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-jpeg", action="store_true",
                    help="only the lossless DICOM, small-region and real-file rows (steps 1-3, 6)")
    ap.add_argument("--fresh", action="store_true", help="delete the cached work folder first")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("medforensics.data.transforms", "medforensics.source.patches", "openjpeg"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    import torch

    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits, check_leakage
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.synth.tamper import generate
    from medforensics.training.engine import train

    torch.set_num_threads(1)
    out = Path(args.out)
    work = (out / "work").resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    patients = args.patients or (16 if args.quick else 60)
    src_epochs = args.source_epochs or (2 if args.quick else 8)
    ela_epochs = args.ela_epochs or (3 if args.quick else None)
    rounds = args.real_rounds or (1 if args.quick else 4)
    mr_rounds = 1 if args.quick else 2
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "command": "python bench/forgery.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "settings": {"patients": patients, "source_epochs": src_epochs,
                     "ela_epochs": ela_epochs or 30, "real_rounds": rounds,
                     "real_mr_rounds": mr_rounds, "seed": args.seed},
        "timings_s": {},
    }
    table: list[dict[str, Any]] = []

    def lap(name: str, t: float) -> None:
        res["timings_s"][name] = round(time.perf_counter() - t, 1)

    # 1. archive, split, source model ---------------------------------------------------
    t = time.perf_counter()
    arch = work / "archive"
    if not arch.exists():
        simulate_archive(arch, manufacturers=3, models_per_manufacturer=2, units_per_model=1,
                         patients=patients, images_per_patient=(2, 3),
                         size=(320, 448) if args.quick else (384, 640), seed=args.seed)
    manifest = work / "manifest.csv"
    rows = [r for r in ingest([arch], progress=False) if r["status"] == "eligible"]
    assign_splits(rows, by="patient", test=0.3, val=0.15, stratify="model", seed=args.seed)
    check_leakage(rows)
    write_manifest(rows, manifest)
    src_run = work / "source_run"
    if not (src_run / "model.json").is_file():
        if src_run.exists():
            shutil.rmtree(src_run)
        train(rows, label="model", preset="patch", out_dir=str(src_run), epochs=src_epochs,
              seed=args.seed, progress=False)
    res["archive"] = {"images": len(rows),
                      "splits": {s: sum(r["split"] == s for r in rows)
                                 for s in ("train", "val", "test")},
                      "devices": sorted({r["model"] for r in rows})}
    lap("archive+source model", t)

    # 2. lossless DICOM tamper set ---------------------------------------------------------
    t = time.perf_counter()
    dcm_manifest, ela_run, cues_run, test_dcm = tamper_and_train(
        rows, work, "dicom", tamper_seed=args.seed + 1, seed=args.seed, ela_epochs=ela_epochs,
        source_run=src_run)
    lap("tamper + train dicom", t)
    t = time.perf_counter()
    free = ForgeryDetector.from_run(None)
    free_fp = ForgeryDetector.from_run(None, source_run=src_run)
    learned = ForgeryDetector.from_run(cues_run, source_run=src_run)
    ela_dcm = ForgeryDetector.from_run(ela_run)
    ev = out / "eval"
    # the free detectors evaluate the same test rows as the trained ones
    for key, name, det, man in (
            ("free", "cues (training-free)", free, test_dcm),
            ("free_fp", "cues + fingerprint (training-free)", free_fp, test_dcm),
            ("learned_fp", "cues learned (+ fingerprint)", learned, dcm_manifest),
            ("ela_cnn", "ela-cnn (paper)", ela_dcm, dcm_manifest)):
        m = evaluate(det, man, ev, "dicom__" + key)
        table += summary_rows("lossless DICOM 64-192 px", name, m)
    lap("evaluate dicom", t)

    # 3. small regions ------------------------------------------------------------------
    t = time.perf_counter()
    test_src = [r for r in rows if r["split"] == "test"]
    small = work / "tamper_small"
    if not (small / "tamper_manifest.csv").is_file():
        generate(test_src, small, kinds=KINDS, seed=args.seed + 2, sizes=(32, 40))
    for key, name, det in (("free_fp", "cues + fingerprint (training-free)", free_fp),
                           ("learned_fp", "cues learned (+ fingerprint)", learned)):
        m = evaluate(det, small / "tamper_manifest.csv", ev, "small__" + key, split="all")
        table += summary_rows("lossless DICOM 32-40 px", name, m)
    lap("small regions", t)

    # 3b. a second, independent tamper draw of the test images: the noise / fingerprint rules
    # were tuned on step 2's test pairs, this draw was not looked at while tuning ------------
    t = time.perf_counter()
    draw2 = work / "tamper_dicom_draw2"
    if not (draw2 / "tamper_manifest.csv").is_file():
        generate(test_src, draw2, kinds=KINDS, seed=args.seed + 5, sizes=(64, 192))
    for key, name, det in (("free", "cues (training-free)", free),
                           ("free_fp", "cues + fingerprint (training-free)", free_fp)):
        m = evaluate(det, draw2 / "tamper_manifest.csv", ev, "draw2__" + key, split="all")
        table += summary_rows("lossless DICOM 64-192 px, 2nd tamper draw (held out)", name, m)
    lap("second tamper draw", t)

    # 3c. copy-moves turned or scaled: rotation by a multiple of 90 degrees (exact pixel
    # turn; 30 % of the rotated set), by -30..30 degrees, or scaling by 0.8-1.25 (both
    # resampled: the copy's noise is interpolated) -----------------------------------------
    t = time.perf_counter()
    for tag, opts, label in (
            ("rotated", {"rotate": True, "p_transform": 1.0},
             "copy-moves turned (30 % by 90/180/270 deg, 70 % by -30..30 deg) 64-192 px"),
            ("scaled", {"scale": True, "p_transform": 1.0},
             "copy-moves scaled 0.8-1.25x 64-192 px")):
        cset = work / f"tamper_copymove_{tag}"
        if not (cset / "tamper_manifest.csv").is_file():
            generate(test_src, cset, kinds=["copy-move"], seed=args.seed + 7, sizes=(64, 192),
                     options=opts)
        m = evaluate(free_fp, cset / "tamper_manifest.csv", ev, f"cm_{tag}__free_fp",
                     split="all")
        table += summary_rows(label, "cues + fingerprint (training-free)", m)
        if tag == "rotated":
            res["copymove_rotated_by_angle"] = by_angle(cset / "tamper_manifest.csv",
                                                        ev / f"cm_{tag}__free_fp")
    lap("turned / scaled copy-moves", t)

    if args.skip_jpeg:
        res["jpeg"] = "skipped (--skip-jpeg)"
    else:
        # 4. JPEG exports, tampered as JPEG ---------------------------------------------------
        t = time.perf_counter()
        jpg_dir = work / "jpeg_export"
        jrows = []
        for r in rows:
            dst = jpg_dir / (Path(r["path"]).relative_to(arch).with_suffix(".jpg"))
            if not dst.is_file():
                export_jpeg(r["path"], dst)
            jrows.append({"path": str(dst), "PatientID": r["PatientID"],
                          "StudyInstanceUID": r["StudyInstanceUID"], "unit": r["unit"],
                          "model": r["model"], "manufacturer": r["manufacturer"],
                          "split": r["split"]})
        jpg_manifest, ela_jrun, cues_jrun, test_jpg = tamper_and_train(
            jrows, work, "jpeg", tamper_seed=args.seed + 3, seed=args.seed,
            ela_epochs=ela_epochs)
        ela_j = ForgeryDetector.from_run(ela_jrun)
        cues_j = ForgeryDetector.from_run(cues_jrun)
        for key, name, det, man in (("ela_cnn", "ela-cnn (paper)", ela_j, jpg_manifest),
                                    ("free", "cues (training-free)", free, test_jpg),
                                    ("learned", "cues learned", cues_j, jpg_manifest)):
            m = evaluate(det, man, ev, "jpeg__" + key)
            table += summary_rows("8-bit JPEG q90 export, edited as JPEG", name, m)
        lap("jpeg exports", t)

        # 4b. the textbook ELA case: JPEG export, edited, saved losslessly (PNG) ------------------
        t = time.perf_counter()
        png_dir = work / "jpeg_export_png"
        prows = []
        for jr in jrows:
            dst = png_dir / Path(jr["path"]).relative_to(jpg_dir).with_suffix(".png")
            if not dst.is_file():
                from medforensics.io import read_image, write_png8

                dst.parent.mkdir(parents=True, exist_ok=True)
                write_png8(dst, read_image(jr["path"])[0])
            prows.append({**jr, "path": str(dst)})
        png_manifest, ela_prun, cues_prun, test_png = tamper_and_train(
            prows, work, "jpeg_png", tamper_seed=args.seed + 4, seed=args.seed,
            ela_epochs=ela_epochs)
        for key, name, det, man in (
                ("ela_cnn", "ela-cnn (paper)", ForgeryDetector.from_run(ela_prun), png_manifest),
                ("free", "cues (training-free)", free, test_png),
                ("free_ela", "cues (training-free, --ela always)",
                 ForgeryDetector.from_run(None, ela="always"), test_png),
                ("learned", "cues learned", ForgeryDetector.from_run(cues_prun), png_manifest)):
            m = evaluate(det, man, ev, "jpegpng__" + key)
            table += summary_rows("JPEG q90 export, edited, saved as PNG", name, m)
        lap("jpeg export saved losslessly", t)

        # 5. JPEG re-save of a tampered DICOM export ---------------------------------------------
        t = time.perf_counter()
        resave = work / "resave_after_edit"
        rs_manifest = resave / "tamper_manifest.csv"
        if not rs_manifest.is_file():
            rs_rows = []
            for r in csv.DictReader(open(test_dcm, newline="")):  # the step-2 test pairs
                dst = resave / "images" / (Path(r["path"]).stem + ".jpg")
                export_jpeg(r["path"], dst)
                rs_rows.append({**r, "path": str(dst.resolve()), "format": "jpeg"})
            write_rows(rs_rows, rs_manifest)
        for key, name, det in (("ela_cnn", "ela-cnn (paper, trained on JPEG edits)", ela_j),
                               ("free", "cues (training-free)", free),
                               ("learned", "cues learned (JPEG edits)", cues_j)):
            m = evaluate(det, rs_manifest, ev, "resave__" + key, split="all")
            table += summary_rows("tampered DICOM, then exported to JPEG q90", name, m)
        lap("re-save after edit", t)

    # 6. real files ---------------------------------------------------------------------
    if not args.skip_real and REAL.is_dir():
        t = time.perf_counter()
        xray = sorted(list((REAL / "xray").glob("*.dcm")) + list((REAL / "codecs").glob("*.dcm")))
        mr = sorted((REAL / "mr").glob("*/*.dcm"))
        untouched: list[dict[str, Any]] = []
        res["real_files"], res["real_mr_files"] = [], []
        for key, label, cands, n_rounds, sizes, kinds, opts in (
                ("real", "real lossless radiographs 64-192 px", xray, rounds, (64, 192),
                 KINDS, None),
                ("realmr", "real lossless MR slices (256 px) 64-96 px", mr, mr_rounds,
                 (64, 96), KINDS, None),
                ("realclip", "real lossless radiographs, copy-moves of clipped background "
                 "64-192 px", xray, rounds, (64, 192), ["copy-move"],
                 {"copy_source": "clipped"})):
            real_rows = real_inputs(cands)
            res[{"real": "real_files", "realmr": "real_mr_files"}.get(key, key + "_files")] = [
                Path(r["path"]).name for r in real_rows]
            # verdicts on the untouched files
            for r in real_rows if key != "realclip" else []:
                rr = free.detect_file(r["path"])
                untouched.append({"file": str(Path(r["path"]).relative_to(REAL)),
                                  "verdict": rr.verdict, "score": rr.score,
                                  "forged_area_percent": rr.forged_area_percent,
                                  "cues": rr.cues})
            real_all = []
            for k in range(n_rounds):
                rset = work / f"tamper_{key}_{k}"
                if not (rset / "tamper_manifest.csv").is_file():
                    generate(real_rows, rset, kinds=kinds, options=opts,
                             seed=args.seed + {"real": 10, "realmr": 50, "realclip": 90}[key] + k,
                             sizes=sizes)
                real_all += list(csv.DictReader(open(rset / "tamper_manifest.csv", newline="")))
            real_manifest = work / f"tamper_{key}.csv"
            for r in real_all:  # pair ids are per round: make them unique
                r["pair_id"] = Path(r["path"]).parent.parent.name + "_" + r["pair_id"]
            write_rows(real_all, real_manifest)
            m = evaluate(free, real_manifest, ev, f"{key}__free_r{n_rounds}", split="all")
            table += summary_rows(label, "cues (training-free)", m)
            if key == "real":  # the same pairs re-encoded as JPEG 2000 10:1 after the edit
                j2k_manifest = work / "tamper_real_j2k.csv"
                if not j2k_manifest.is_file():
                    jrows = []
                    for r in real_all:
                        dst = work / "real_j2k" / (r["pair_id"] + "_" + Path(r["path"]).name)
                        export_j2k(r["path"], dst)
                        jrows.append({**r, "path": str(dst)})
                    write_rows(jrows, j2k_manifest)
                m = evaluate(free, j2k_manifest, ev, f"realj2k__free_r{n_rounds}", split="all")
                table += summary_rows("real lossless radiographs, tampered, then JPEG 2000 10:1",
                                      "cues (training-free)", m)
        res["real_untouched"] = untouched
        lap("real", t)
    else:
        res["real_files"] = "skipped (../shared/data/real absent or --skip-real)"

    res["table"] = table
    res["timings_s"]["total"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float))
    md = [f"# Forgery benchmark\n\nCommand: `{res['command']}`\n", markdown(table), ""]
    if isinstance(res.get("real_untouched"), list):
        md += ["Untouched real files, training-free detector:", "",
               "| file | verdict | score | forged area % | cue scores |", "|---|---|---|---|---|"]
        for u in res["real_untouched"]:
            md.append(f"| {u['file']} | {u['verdict']} | {u['score']:.3f} | "
                      f"{u['forged_area_percent']:.3f} | "
                      + ", ".join(f"{k} {v:.2f}" for k, v in u["cues"].items()) + " |")
        md.append("")
    if isinstance(res.get("copymove_rotated_by_angle"), dict):
        md += ["Turned copy-moves by rotation class (training-free + fingerprint):", ""]
        for cls, d in res["copymove_rotated_by_angle"].items():
            md.append(f"- {cls}: {d['n']} images, detected (score >= 0.5) "
                      f"{100 * d['detected_at_0.5']:.0f} %, mean pixel F1-best "
                      f"{d['mean_pixel_f1_best']:.2f} (paste only), "
                      f"{d['mean_pixel_f1_best_both']:.2f} (both copies)")
        md.append("")
    md.append(f"Timings (s): {json.dumps(res['timings_s'])}")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
