"""Paper presets (Deep-RSI, DeepMammo) and the patch model, side by side, on two archives.

    nice -n 10 env OMP_NUM_THREADS=1 python bench/source_id_papers.py \\
        --out bench/out/source_id_papers

Where does the papers' signal live? Two simulated archives with the same devices, patients,
content and patient-level split (everything generated here, nothing downloaded):

* ``fingerprint``: the default simulator: devices differ only by their sensor fingerprint;
* ``vendor-look``: ``simulate --vendor-look``: each manufacturer and model also applies its own
  processing look (tone curve, edge enhancement, noise reduction, matrix formats, shutter,
  burned-in marker and text).

On each archive, six runs trained on the ``model`` label (manufacturer = model probabilities
summed per manufacturer), evaluated on the same held-out test patients:

1. as published: ``deep-rsi`` and ``deepmammo`` with the papers' preprocessing (8-bit
   min-max, 256 x 256 resize), ``patch`` on native stored values;
2. swapped inputs: ``patch`` on the papers' 8-bit 256 x 256 image (its 64 px patches are cut
   from the resized image), and ``deep-rsi`` / ``deepmammo`` on native-resolution 256 x 256
   crops (whole-image min-max to 0..255 kept in float, no rounding, no resize; one fixed crop
   per training image chosen in the informative area, the mean of the log-probabilities of 4
   crops per test image). The paper networks have a fixed 256 x 256 input, so a crop of that
   size is the closest thing to a native patch they can take unchanged.

Reported per archive and run: manufacturer and model accuracy and macro one-vs-rest AUC with
95 % patient-cluster bootstrap intervals (:func:`medforensics.source.evaluate.
headline_intervals`), the mean one-vs-rest accuracy (what DeepMammo calls accuracy), epochs,
best epoch and training time; plus the papers' own figures for reference and the machine
load. Runs whose ``model.json`` exists are not retrained (re-running renders the table).

Writes ``results.json`` and ``results.md`` into ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.source_id_papers")

#: The papers' figures (their real archives), for reference next to ours.
PAPERS: list[dict[str, Any]] = [
    {"preset": "deep-rsi", "source": "Deep-RSI paper (Tables 3-5)",
     "data": "7,898 radiographs (hand, wrist, forearm, elbow, shoulder), 4 manufacturers, "
             "10 models; random image-level 80/20 split (6,318 / 1,580)",
     "manufacturer_acc": 0.9854, "manufacturer_auc": 0.98, "model_acc": 0.8487,
     "model_auc": None, "epochs": "100 (Adam lr 1e-4)",
     "notes": "manufacturer AUC 0.98 in Table 5 (0.97 in the abstract); per-model AUC "
              "0.88-0.99; one manufacturer holds 93.7 % of the images (majority baseline "
              "92.8 % of the test set), and the paper notes one manufacturer per body site "
              "for > 99 % of images"},
    {"preset": "deepmammo", "source": "DeepMammo paper (Tables 1-2)",
     "data": "7,269 screening mammograms of 1,574 patients, 7 machines that are all the same "
             "manufacturer and model (HOLOGIC Selenia Dimensions at different locations); "
             "patient-level 80/20 split",
     "manufacturer_acc": None, "manufacturer_auc": None, "model_acc": 0.9809,
     "model_auc": 0.9596, "epochs": "not stated",
     "notes": "98.09 % is the mean of the 7 per-class one-vs-rest accuracies; it implies a "
              "7-class accuracy of about 93.3 % (1 - 7/2 x 1.91 %), close to the mean "
              "sensitivity of 93.05 %; the classes are machines (units), not models"},
]


# ---------------------------------------------------------------------------- image sources
def _key(path: str) -> int:
    return zlib.crc32(str(path).encode("utf-8"))


def paper_view(pixels: np.ndarray) -> np.ndarray:
    """What the paper presets see: 8-bit min-max, 256 x 256 bilinear (float32 0..255)."""
    from medforensics.data.transforms import paper_preprocess

    return paper_preprocess(pixels)


class PaperViewReader:
    """``path -> paper_view(read_pixels(path))``: the patch model fed the papers' image."""

    def __call__(self, path: str) -> np.ndarray:
        from medforensics.data.datasets import read_pixels

        return paper_view(read_pixels(path))


def native_scaled(pixels: np.ndarray) -> np.ndarray:
    """Whole-image min-max to 0..255 in float32, no rounding and no resize."""
    lo, hi = float(pixels.min()), float(pixels.max())
    return ((pixels - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.float32)


def native_crop_positions(pixels: np.ndarray, path: str, n: int, stream: int) -> np.ndarray:
    """``n`` 256 x 256 crop corners in the informative area, seeded by the path."""
    from medforensics.data.datasets import valid_patch_positions

    rng = np.random.default_rng([stream, _key(path)])
    pos = valid_patch_positions(pixels, 256, n, rng, path)
    return np.resize(pos, (n, 2))


class NativeCropSource:
    """An image source whose "paper variants" are native 256 x 256 crops (see module doc).

    The training engine feeds ``paper_source()`` images to the paper presets unchanged when
    ``has_paper`` is true, so the presets train on one fixed native crop per image.
    """

    has_paper = True

    def __init__(self) -> None:
        from medforensics.data.datasets import MemoryImageSource

        self._raw = MemoryImageSource(1 << 30)
        self._cache: dict[str, np.ndarray] = {}

    def paper_source(self) -> NativeCropSource:
        return self

    def get(self, path: str) -> np.ndarray:
        out = self._cache.get(path)
        if out is None:
            px = self._raw.get(path)
            y, x = native_crop_positions(px, path, 1, stream=11)[0]
            out = native_scaled(px)[y:y + 256, x:x + 256].copy()
            self._cache[path] = out
        return out

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        return np.array(self.get(path)[y:y + h, x:x + w], dtype=np.float32)


# ---------------------------------------------------------------------------- archive
def make_archive(root: Path, vendor_look: bool, patients: int, seed: int,
                 size: tuple[int, int]) -> Path:
    from medforensics.synth.simulate import simulate_archive

    if not (root / "devices.json").exists():
        simulate_archive(root, manufacturers=3, models_per_manufacturer=2, units_per_model=2,
                         patients=patients, images_per_patient=(2, 4), size=size, seed=seed,
                         vendor_look=vendor_look, overwrite=True)
    return root


# ---------------------------------------------------------------------------- evaluation
def metrics_of(y: np.ndarray, probs: np.ndarray, classes: list[str], patients: list[str],
               n_boot: int) -> dict[str, Any]:
    from medforensics.source.evaluate import headline_intervals
    from medforensics.eval.classification import classification_report

    rep = classification_report(y, probs, classes)
    iv = headline_intervals(y, probs, patients, n_boot=n_boot)
    return {"accuracy": rep.accuracy, "accuracy_ci": iv["accuracy"],
            "macro_auc": rep.macro_auc, "macro_auc_ci": iv["macro_auc"],
            "balanced_accuracy": rep.balanced_accuracy,
            "mean_ovr_accuracy": rep.macro.get("acc"), "n": rep.n,
            "confusion": rep.confusion}


def to_manufacturer(probs: np.ndarray, classes: list[str], manu_of: dict[str, str]
                    ) -> tuple[np.ndarray, list[str]]:
    manus = sorted({manu_of[c] for c in classes})
    out = np.zeros((probs.shape[0], len(manus)))
    for j, c in enumerate(classes):
        out[:, manus.index(manu_of[c])] += probs[:, j]
    return out / out.sum(axis=1, keepdims=True), manus


def predict_probs(run: Path, kind: str, test: list[dict[str, Any]], images: list[np.ndarray]
                  ) -> tuple[np.ndarray, list[str]]:
    """(N, C) class probabilities of the test images, and the classes."""
    import torch

    from medforensics.source.predictor import SourcePredictor

    if kind in ("paper", "native-patch"):
        pred = SourcePredictor.from_run(run, n_patches=64)
        return np.stack([pred.predict(px).probs for px in images]), pred.classes
    if kind == "paper-view-patch":
        pred = SourcePredictor.from_run(run, n_patches=64)
        return np.stack([pred.predict(paper_view(px)).probs for px in images]), pred.classes
    if kind == "native-crop":
        from medforensics.models.io import load_model

        model, meta = load_model(run, map_location="cpu")
        model.eval()
        out = []
        with torch.no_grad():
            for r, px in zip(test, images):
                scaled = native_scaled(px)
                pos = native_crop_positions(px, r["path"], 4, stream=12)
                xb = torch.from_numpy(np.stack([scaled[y:y + 256, x:x + 256] for y, x in pos]))
                lp = torch.log_softmax(model(xb[:, None]).float(), dim=-1).mean(dim=0)
                out.append(torch.softmax(lp, dim=-1).numpy())
        return np.stack(out), [str(c) for c in meta["classes"]]
    raise ValueError(kind)


# ---------------------------------------------------------------------------- main
RUNS = [  # (table, preset, input kind, description of the input)
    ("published", "deep-rsi", "paper", "8-bit min-max, 256x256 resize (paper)"),
    ("published", "deepmammo", "paper", "8-bit min-max, 256x256 resize (paper)"),
    ("published", "patch", "native-patch", "native stored values, 64 px patches"),
    ("swapped", "patch", "paper-view-patch", "8-bit 256x256 paper image, 64 px patches"),
    ("swapped", "deep-rsi", "native-crop", "native-resolution 256x256 crops, float"),
    ("swapped", "deepmammo", "native-crop", "native-resolution 256x256 crops, float"),
]


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/source_id_papers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patients", type=int, default=72)
    ap.add_argument("--size", default="320-512", help="image side range MIN-MAX (>= 256)")
    ap.add_argument("--paper-epochs", type=int, default=15,
                    help="deep-rsi/deepmammo epochs on the paper input (papers: 100)")
    ap.add_argument("--native-epochs", type=int, default=10,
                    help="deep-rsi/deepmammo epochs on native crops")
    ap.add_argument("--patch-epochs", type=int, default=8)
    ap.add_argument("--paper-batch", type=int, default=8,
                    help="deep-rsi/deepmammo batch size (the papers do not state theirs)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--archives", default="fingerprint,vendor-look")
    ap.add_argument("--tables", default="published,swapped")
    ap.add_argument("--runs", default="",
                    help="only these runs, e.g. deep-rsi/paper,patch/paper-view-patch "
                         "(default: all of the chosen tables)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.data.splits import assign_splits, check_leakage
    from medforensics.io import read_image
    from medforensics.training.engine import train

    torch.set_num_threads(1)
    lo, hi = (int(v) for v in args.size.split("-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else
                                                        sys.argv[1:])]),
        "load_start": _load(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()},
        "settings": vars(args), "papers": PAPERS, "archives": {}, "rows": []}

    # one patient-level split, computed on the fingerprint archive, applied to both
    split_of: dict[str, str] = {}
    kinds = [a.strip() for a in args.archives.split(",") if a.strip()]
    tables = {t.strip() for t in args.tables.split(",") if t.strip()}
    only = {t.strip() for t in args.runs.split(",") if t.strip()}
    for name in ("fingerprint", *[k for k in kinds if k != "fingerprint"]):
        root = make_archive(out / f"archive-{name}", name == "vendor-look", args.patients,
                            args.seed, (lo, hi))
        rows = [r for r in ingest([root], progress=False) if r["status"] == "eligible"]
        if not split_of:
            assign_splits(rows, by="patient", test=0.3, val=0.15, stratify="model",
                          seed=args.seed)
            split_of = {r["PatientID"]: r["split"] for r in rows}
        for r in rows:
            r["split"] = split_of[r["PatientID"]]
        check_leakage(rows)
        write_manifest(rows, out / f"manifest-{name}.csv")
        if name not in kinds:
            continue
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        test = sorted((r for r in rows if r["split"] == "test"), key=lambda r: r["path"])
        res["archives"][name] = {
            "images": len(rows), "splits": counts,
            "test_patients": len({r["PatientID"] for r in test}),
            "models": sorted({r["model"] for r in rows}),
            "manufacturers": sorted({r["manufacturer"] for r in rows})}
        log.info("archive %s: %s", name, res["archives"][name])
        images = [read_image(r["path"]).pixels for r in test]
        patients = [r["PatientID"] for r in test]
        manu_of = {r["model"]: r["manufacturer"] for r in rows}
        for table, preset, kind, desc in RUNS:
            if table not in tables or (only and f"{preset}/{kind}" not in only):
                continue
            run = out / f"run-{name}-{preset}-{kind}"
            epochs = (args.patch_epochs if preset == "patch" else
                      args.native_epochs if kind == "native-crop" else args.paper_epochs)
            source = None
            if kind == "paper-view-patch":
                from medforensics.data.datasets import MemoryImageSource

                source = MemoryImageSource(1 << 30, reader=PaperViewReader())
            elif kind == "native-crop":
                source = NativeCropSource()
            t = time.perf_counter()
            if not (run / "model.json").exists():
                extra = {} if preset == "patch" else {"batch_size": args.paper_batch}
                train(rows, label="model", preset=preset, out_dir=str(run), epochs=epochs,
                      seed=args.seed, progress=False, image_source=source, **extra)
                train_s = round(time.perf_counter() - t, 1)
            else:
                train_s = None
            mrec = [json.loads(line) for line in
                    (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
            best = mrec[-1].get("best_epoch") if mrec else None
            probs, classes = predict_probs(run, kind, test, images)
            y = np.array([classes.index(r["model"]) for r in test])
            mp, manus = to_manufacturer(probs, classes, manu_of)
            ym = np.array([manus.index(manu_of[r["model"]]) for r in test])
            row = {"archive": name, "table": table, "preset": preset, "input": desc,
                   "epochs": len(mrec), "best_epoch": best,
                   "val_bacc_by_epoch": [round(float(m.get("val_bacc", float("nan"))), 3)
                                         for m in mrec],
                   "train_s": train_s if train_s is not None else
                   round(sum(float(m.get("seconds", 0.0)) for m in mrec), 1),
                   "model": metrics_of(y, probs, classes, patients, args.n_boot),
                   "manufacturer": metrics_of(ym, mp, manus, patients, args.n_boot)}
            res["rows"].append(row)
            log.info("%s %s %s: manufacturer %.3f model %.3f (%s epochs, best %s)", name,
                     preset, kind, row["manufacturer"]["accuracy"], row["model"]["accuracy"],
                     row["epochs"], best)
            (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    res["seconds_total"] = round(time.perf_counter() - t0, 1)
    res["load_end"] = _load()
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    md = render(res)
    (out / "results.md").write_text(md)
    sys.stdout.write(md + "\n")
    return 0


def _pct(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{100 * float(x):.1f}%"


def _ci(m: dict[str, Any], key: str, pct: bool = True) -> str:
    v, (a, b) = m[key], m[f"{key}_ci"]
    if pct:
        return f"{_pct(v)} [{100 * a:.0f}-{100 * b:.0f}]"
    return f"{v:.2f} [{a:.2f}-{b:.2f}]"


def render(res: dict[str, Any]) -> str:
    lines = []
    for name, a in res["archives"].items():
        lines.append(f"Archive `{name}`: {a['images']} images, splits {a['splits']} "
                     f"({a['test_patients']} test patients), {len(a['manufacturers'])} "
                     f"manufacturers, {len(a['models'])} models (chance: manufacturer "
                     f"{_pct(1 / len(a['manufacturers']))}, model {_pct(1 / len(a['models']))}).")
    head = ("| archive | preset | input | epochs (best) | manufacturer acc | manufacturer AUC | "
            "model acc | model AUC | model mean OvR acc | train s |")
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    titles = {"published": "As published (the presets with the papers' input, patch on native "
                           "values)",
              "swapped": "Swapped inputs (patch restricted to the papers' input, presets given "
                         "native crops)"}
    for table in ("published", "swapped"):
        rows = [r for r in res["rows"] if r["table"] == table]
        if not rows:
            continue
        lines += ["", f"{titles[table]}; 95 % patient-cluster bootstrap intervals in brackets:",
                  "", head, sep]
        for r in rows:
            lines.append(
                f"| {r['archive']} | {r['preset']} | {r['input']} | {r['epochs']} "
                f"({r['best_epoch']}) | {_ci(r['manufacturer'], 'accuracy')} | "
                f"{_ci(r['manufacturer'], 'macro_auc', False)} | {_ci(r['model'], 'accuracy')} | "
                f"{_ci(r['model'], 'macro_auc', False)} | {_pct(r['model']['mean_ovr_accuracy'])} "
                f"| {r['train_s']} |")
        if table == "published":
            for p in res["papers"]:
                lines.append(
                    f"| paper (real data) | {p['preset']} | {p['source']} | {p['epochs']} | "
                    f"{_pct(p['manufacturer_acc'])} | "
                    f"{'n/a' if p['manufacturer_auc'] is None else p['manufacturer_auc']} | "
                    f"{_pct(p['model_acc']) if p['preset'] != 'deepmammo' else 'see note'} | "
                    f"{'n/a' if p['model_auc'] is None else p['model_auc']} | "
                    f"{_pct(p['model_acc']) if p['preset'] == 'deepmammo' else 'n/a'} | |")
    lines += ["", "Papers' data and notes:"]
    lines += [f"* {p['preset']}: {p['data']}; {p['notes']}." for p in res["papers"]]
    lines += ["", f"Command: `{res['command']}`", f"Load at start: `{res['load_start']}`; at "
              f"end: `{res.get('load_end', '?')}`. Total {res.get('seconds_total', '?')} s "
              f"(torch threads {res['machine']['torch_threads']})."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
