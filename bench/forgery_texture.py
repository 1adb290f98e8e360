"""Does the noise-texture cue help the training-free forgery detector? With vs without, measured.

Usage::

    python bench/forgery_texture.py                       # every set, every variant
    python bench/forgery_texture.py --sets real,untouched --variants none,texture

Needs the work folder of ``python bench/forgery.py`` (``--work``, default
``bench/out/forgery/work``) and, for the held-out sets, the draws of
``python bench/forgery_holdout.py`` (``holdout_s77_splice-device`` and
``holdout_s77_copy-move_removal``). Sets:

* ``sim``: the simulated lossless test pairs (``tamper_dicom_test.csv``, 48 + 48);
* ``hold-splice`` / ``hold-cmr``: the seed-77 held-out draws of the same test images
  (48 splice-device pairs / 48 copy-move + removal pairs), never looked at while the texture
  cue was written;
* ``real``: the 18 tampered pairs of the 9 real lossless radiographs (``tamper_real.csv``);
* ``untouched``: the detector's verdict on the 9 untouched real files (as bench/forgery.py
  step 6 selects them: ``xray/`` and ``codecs/``, lossless, single frame, >= 256 px).

Variants (training-free detector, no fingerprint cue unless ``--fingerprint``):

* ``none``: copy-move + noise (the default before the texture cue);
* ``texture``: + the texture cue with its defaults (residual correlations + lattice share,
  ``z_thr=10``);
* ``texture-z6``: the same at ``z_thr=6``;
* ``texture-corr-z6``: without the lattice share, ``z_thr=6``.

Everything runs on one thread (``medforensics.common.runtime.configure_threads(1)``). Metrics are
cached per set and variant under ``--out``; the table is printed and written to
``--out/results.md`` / ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"texture": False},
    "texture": {"texture": True},
    "texture-z6": {"texture": True, "cue_params": {"texture": {"z_thr": 6.0}}},
    "texture-corr-z6": {"texture": True, "cue_params": {"texture": {"z_thr": 6.0,
                                                                        "use_lattice": False}}},
}


def real_files() -> list[Path]:
    """The untouched real radiographs of bench/forgery.py step 6 (see realfiles)."""
    from realfiles import lossless_real_files

    cands = list((REAL / "xray").glob("*.dcm")) + list((REAL / "codecs").glob("*.dcm"))
    return [p for p, _ in lossless_real_files(cands)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="bench/out/forgery/work")
    ap.add_argument("--out", default="bench/out/forgery_texture")
    ap.add_argument("--sets", default="sim,hold-splice,hold-cmr,real,untouched")
    ap.add_argument("--variants", default="none,texture,texture-z6")
    ap.add_argument("--fingerprint", action="store_true",
                    help="add the fingerprint cue (source model of the work folder) on the "
                         "simulated sets")
    args = ap.parse_args()

    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.evaluate import evaluate_detector
    from medforensics.common.runtime import configure_threads

    logging.basicConfig(level=logging.ERROR)
    configure_threads(1)
    work, out = Path(args.work), Path(args.out)
    manifests = {
        "sim": work / "tamper_dicom_test.csv",
        "hold-splice": work / "holdout_s77_splice-device" / "tamper_manifest.csv",
        "hold-cmr": work / "holdout_s77_copy-move_removal" / "tamper_manifest.csv",
        "real": work / "tamper_real.csv",
    }
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, Any] = {}
    lines = ["| set | variant | n tam+orig | image AUC | pixel F1 best | FP area % orig | "
             "originals >= 0.5 | per kind (AUC / F1 best) |", "|---|---|---|---|---|---|---|---|"]
    for s in sets:
        for v in variants:
            kw = dict(VARIANTS[v])
            fp = args.fingerprint and s != "real" and s != "untouched"
            name = v + ("_fp" if fp else "")
            d = out / s / name
            det = ForgeryDetector.from_run(None, source_run=work / "source_run" if fp else None,
                                           **kw)
            t0 = time.perf_counter()
            if s == "untouched":
                f = d / "untouched.json"
                if f.is_file():
                    rows = json.loads(f.read_text())
                else:
                    rows = []
                    for p in real_files():
                        r = det.detect_file(p)
                        rows.append({"file": p.name, "verdict": r.verdict, "score": r.score,
                                     "forged_area_percent": r.forged_area_percent,
                                     "cues": r.cues})
                    d.mkdir(parents=True, exist_ok=True)
                    f.write_text(json.dumps(rows, indent=1))
                results[f"{s}/{name}"] = rows
                n_t = sum(r["verdict"] == "tampered" for r in rows)
                flagged = ", ".join(f"{r['file']} {r['score']:.2f} ("
                                    + ", ".join(f"{k} {x:.2f}" for k, x in r["cues"].items())
                                    + ")" for r in rows if r["verdict"] == "tampered")
                lines.append(f"| untouched real | {name} | 0+{len(rows)} | | | | "
                             f"{n_t}/{len(rows)} | {flagged} |")
                print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
                continue
            mf = d / "metrics.json"
            n_rows = sum(1 for _ in open(manifests[s], encoding="utf-8")) - 1
            if mf.is_file():  # a cache of another version of the manifest is not used
                old = json.loads(mf.read_text())
                if old.get("n_tampered", 0) + old.get("n_original", 0) != n_rows:
                    mf.unlink()
            if not mf.is_file():
                evaluate_detector(det, manifests[s], out_dir=d, split="all", n_examples=2)
            m = json.loads(mf.read_text())
            results[f"{s}/{name}"] = m
            pi = json.loads((d / "per_image.json").read_text()) if (d / "per_image.json"
                                                                     ).is_file() else None
            n_orig_hi = _originals_flagged(pi)
            kinds = "; ".join(
                f"{k} {a:.2f} / {m.get('pixel_by_kind', {}).get(k, {}).get('f1_best', float('nan')):.2f}"
                for k, a in sorted(m.get("image_auc_by_kind", {}).items()))
            lines.append(f"| {s} | {name} | {m['n_tampered']}+{m['n_original']} | "
                         f"{m['image_auc']:.3f} | {m['pixel'].get('f1_best', float('nan')):.3f} | "
                         f"{m.get('fp_area_original', float('nan')):.3f} | {n_orig_hi} | {kinds} |")
            print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _originals_flagged(per_image: Any) -> str:
    """'k/n' originals with a score >= 0.5 from ``per_image.json`` (best effort)."""
    if not isinstance(per_image, list):
        return ""
    orig = [r for r in per_image if r.get("label") in ("original", 0)]
    if not orig:
        return ""
    k = sum(float(r.get("score", 0.0)) >= 0.5 for r in orig)
    return f"{k}/{len(orig)}"


if __name__ == "__main__":
    main()
