"""The forgery part of ``medforensics demo``: tamper a few test images, localise the edits.

:func:`forgery_demo` takes test-split DICOM files of the demo archive, makes a handful of
tampered copies (copy-move, splice from another device, removal; with exact masks and matched
originals, :func:`medforensics.synth.tamper.generate`), runs the training-free detector
(``ForgeryDetector.from_run(None)``) on every tampered file and its original, writes the maps
and overlays, and returns a short Markdown section for the demo report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medforensics.errors import MedForensicsError
from medforensics.forgery.detector import ForgeryDetector
from medforensics.forgery.localize import default_cues
from medforensics.forgery.metrics import pixel_scores
from medforensics.io import read_image
from medforensics.report.images import save_map_files
from medforensics.synth.tamper import generate

__all__ = ["forgery_demo", "DEMO_KINDS"]

log = logging.getLogger(__name__)

DEMO_KINDS: tuple[str, ...] = ("copy-move", "splice-device", "removal")


def forgery_demo(
    out_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    n_images: int = 6,
    sizes: tuple[int, int] = (64, 128),
) -> str:
    """Tamper ``n_images`` of ``paths`` and run the training-free detector on them.

    Args:
        out_dir: output folder (``tampered/`` with images, masks and the tamper manifest,
            ``maps/`` with 16-bit maps and overlays, ``forgery_demo.json``). Links in the
            returned Markdown are relative to ``out_dir``'s parent (where the demo report is).
        paths: candidate image files (the demo passes its test-split DICOM files); all of them
            serve as splice donors.
        seed: seed of the tampering.
        echo: progress printer.
        n_images: number of source images to tamper (kinds round-robin over
            :data:`DEMO_KINDS`).
        sizes: ``(min, max)`` edited-region size in pixels.

    Returns:
        Markdown: a table (file, kind, score, verdict, forged area %, pixel F1 at the map
        threshold, F1 at the best threshold) and one overlay image.
    """
    from PIL import Image

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not paths:
        return "## Forgery detection\n\nNo test images to tamper.\n"
    rep = generate([{"path": str(p)} for p in paths], out / "tampered", kinds=DEMO_KINDS,
                   seed=seed, sizes=sizes, n=min(n_images, len(paths)))
    echo(f"   tampered {sum(r['label'] == 'tampered' for r in rep.rows)} images "
         f"({', '.join(DEMO_KINDS)}); {len(rep.failures)} failed")
    det = ForgeryDetector.from_run(None)
    link_root = out.name
    table: list[dict[str, object]] = []
    overlay = ""
    for r in rep.rows:
        try:
            px, meta = read_image(r["path"])
            res = det.detect(px, meta)
        except MedForensicsError as exc:
            table.append({"file": Path(r["path"]).name, "kind": r["kind"], "error": str(exc)})
            continue
        stem = Path(r["path"]).stem
        files = save_map_files(res, px, out / "maps", stem, overlay_max_side=768)
        f1 = f1_best = None
        if r["label"] == "tampered":
            with Image.open(r["mask_path"]) as im:
                mask = np.asarray(im) > 0
            ps = pixel_scores(res.prob_map, mask, threshold=res.map_threshold)
            f1, f1_best = ps.f1_fixed, ps.f1_best
            if not overlay and r["kind"] == "copy-move":
                overlay = f"{link_root}/maps/{Path(files['overlay_png']).name}"
        table.append({"file": Path(r["path"]).name, "kind": r["kind"], "score": res.score,
                      "verdict": res.verdict, "forged_area_percent": res.forged_area_percent,
                      "pixel_f1": f1, "pixel_f1_best": f1_best,
                      "true_area_percent": float(r["n_changed"]) * 100.0 / px.size
                      if r["label"] == "tampered" else 0.0})
    if not overlay:
        tam = [t for t in table if t.get("kind") != "none" and "error" not in t]
        if tam:
            overlay = f"{link_root}/maps/{Path(str(tam[0]['file'])).stem}_overlay.png"
    seconds = round(time.perf_counter() - t0, 1)
    (out / "forgery_demo.json").write_text(json.dumps(
        {"rows": table, "failures": rep.failures, "seconds": seconds}, indent=1, default=float))
    echo(f"   forgery demo: {len(table)} images analysed in {seconds} s")
    return _markdown(table, overlay, rep.failures, link_root, det)


_CUE_WORDS = {
    "copymove": "residual blocks, exact stored values and SIFT content repeated under one "
                "shift, turn or scaling",
    "noise": "local noise level against the image's own expectation at that intensity",
    "texture": "noise shape and stored-value lattice against the image's own blocks",
    "whiteness": "noise whiter (less spatially correlated) than the image's own at that "
                 "intensity",
    "seam": "straight, pixel-aligned paste outlines",
}


def _fmt(v: object, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{nd}f}"
    return str(v)


def _markdown(table: list[dict[str, object]], overlay: str,
              failures: list[tuple[str, str]], link_root: str, det: ForgeryDetector) -> str:
    lines = [
        "## Forgery detection (training-free cues)",
        "",
        "A few test images were tampered (copy-move, splice from another device, removal; "
        f"exact masks in `{link_root}/tampered/`) and analysed together with their untouched "
        "originals by `ForgeryDetector.from_run(None)`, whose cues are: "
        + "; ".join(f"`{c}` ({_CUE_WORDS[c]})" for c in default_cues(ela=False))
        + ". ELA is not used on losslessly stored DICOM. Score and verdict are image-level "
        f"(threshold {det.threshold:g}, 'inconclusive' from {det.inconclusive_from:g}); "
        f"forged area = share of pixels with map >= {det.map_threshold:g}; pixel F1 against the "
        f"true mask with a 3-px boundary band left out, at the map threshold "
        f"{det.map_threshold:g} and at the best threshold for that image.",
        "",
        "| file | kind | score | verdict | forged area % (true %) | pixel F1 @0.5 | "
        "pixel F1 best |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in table:
        if "error" in t:
            lines.append(f"| {t['file']} | {t['kind']} | - | unreadable: {t['error']} | - | - "
                         "| - |")
            continue
        kind = "original" if t["kind"] == "none" else t["kind"]
        true = t.get("true_area_percent")
        lines.append(
            f"| {t['file']} | {kind} | {_fmt(t['score'])} | {t['verdict']} | "
            f"{_fmt(t['forged_area_percent'], 2)} ({_fmt(true, 2)}) | {_fmt(t['pixel_f1'])} | "
            f"{_fmt(t['pixel_f1_best'])} |"
        )
    if failures:
        lines += ["", f"{len(failures)} source image(s) could not be tampered: "
                  + "; ".join(f"`{Path(p).name}`: {why}" for p, why in failures)]
    if overlay:
        lines += ["", f"![forgery map overlay]({overlay})", "",
                  "Heat map of the forgery probability over the image (display window only)."]
    lines.append("")
    return "\n".join(lines)
