"""Evaluate forgery detection and localization on a tamper manifest.

Two entry points share one loop:

* :func:`evaluate_detector` - a :class:`~medforensics.forgery.detector.ForgeryDetector` (any
  preset) on a tamper manifest (``medforensics forgery evaluate``): image-level accuracy,
  precision, recall, F1 at the detector's threshold and ROC AUC; per kind and per region size;
  pixel metrics of the map on tampered images (F1 at the best threshold per image and at 0.5,
  IoU at 0.5, pixel AUC; 3-px boundary band left out, :mod:`medforensics.forgery.metrics`);
  the same per cue; 95 % bootstrap confidence intervals (:func:`confidence_intervals`);
  optionally ``metrics.json``, ``roc.png`` and example panels.
* :func:`evaluate_tamper_manifest` - the raw cues of :func:`medforensics.forgery.localize.
  localize` (no detector), image AUC and pixel metrics per cue.

For every row (tampered and matched original) the image is read with
:func:`medforensics.io.read_image`; unreadable rows are listed in ``failures`` and the
evaluation goes on. An original's "kind" and "region size" are those of its tampered twin.

Copy-move pixel metrics come twice: against the pasted (changed) pixels only, the tamper mask,
and against both copies (``pixel_both_by_kind``: the mask plus the source pixels of the row's
``source_mask_path``). A detector that cannot show which copy was pasted marks both, and the
paste-only truth counts the found source as false positives.

Confidence intervals resample *source images*, not rows: a tampered image and its matched
original are made from one picture, and a small real set makes several pairs from each
picture (the ``original_path`` column; ``pair_id`` when it is missing). Resampling rows would
treat those as independent and give intervals that are too narrow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medforensics.common.hashing import manifest_sha256
from medforensics.common.jsonio import to_jsonable
from medforensics.errors import ConfigError, MedForensicsError
from medforensics.eval.metrics import binary_auc, binary_metrics, bootstrap_interval
from medforensics.eval.plots import plot_binary_roc
from medforensics.forgery.cues.ela import window_to_uint8
from medforensics.forgery.localize import localize_file
from medforensics.forgery.metrics import PixelScores, pixel_scores, summarize
from medforensics.forgery.train import SPLIT_FILE, read_tamper_manifest
from medforensics.io import read_image

__all__ = ["evaluate_tamper_manifest", "evaluate_detector", "SIZE_BINS", "select_rows",
           "confidence_intervals"]

log = logging.getLogger(__name__)

#: region-size bins (longer side of the edited shape, px): name -> [lo, hi)
SIZE_BINS: dict[str, tuple[int, int]] = {
    "<48": (0, 48), "48-95": (48, 96), "96-191": (96, 192), ">=192": (192, 1 << 30),
}

# analyse(path) -> (score, map, cue_maps, cue_scores)
Analyse = Callable[[str], tuple[float, np.ndarray, dict[str, np.ndarray], dict[str, float]]]


def _size_bin(size: str | int | None) -> str:
    try:
        v = int(size)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    for name, (lo, hi) in SIZE_BINS.items():
        if lo <= v < hi:
            return name
    return ""


def _read_rows(manifest: str | Path) -> list[dict[str, str]]:
    rows = read_tamper_manifest(manifest)
    if "label" not in rows[0]:
        raise ConfigError(f"{manifest}: not a tamper manifest")
    return rows


def _choose(rows: list[dict[str, str]], kinds: Iterable[str] | None,
            limit: int | None) -> list[dict[str, str]]:
    kinds_set = set(kinds) if kinds is not None else None
    pairs: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        pairs.setdefault(r["pair_id"], []).append(r)
    chosen: list[dict[str, str]] = []
    for rs in pairs.values():
        t = [r for r in rs if r["label"] == "tampered"]
        if kinds_set is not None and (not t or t[0]["kind"] not in kinds_set):
            continue
        chosen.extend(rs)
    if limit is not None:
        keep_ids = set(list(dict.fromkeys(r["pair_id"] for r in chosen))[:limit])
        chosen = [r for r in chosen if r["pair_id"] in keep_ids]
    return chosen


def _both_copies(row: dict[str, str], mask: np.ndarray) -> np.ndarray | None:
    """Truth with both copies of a copy-move: the changed pixels plus the source pixels they
    were copied from (the row's ``source_mask_path``), or None for rows without a source mask.

    A detector that cannot tell which copy was pasted marks both; scored against the paste
    alone, every correctly found source pixel counts as a false positive.
    """
    path = row.get("source_mask_path") or ""
    if not path:
        return None
    with Image.open(path) as im:
        src = np.asarray(im) > 0
    if src.shape != mask.shape:
        raise ConfigError(f"{path}: source mask {src.shape} does not match the mask {mask.shape}")
    return mask | src


def _loop(chosen: list[dict[str, str]], analyse: Analyse, *, band: int, threshold: float,
          progress: Callable[[int, int], None] | None, keep: set[str]) -> dict[str, Any]:
    """Run ``analyse`` over the rows and collect per-row results."""
    pair_kind = {r["pair_id"]: r.get("kind", "") for r in chosen if r["label"] == "tampered"}
    pair_size = {r["pair_id"]: r.get("region_size", "") for r in chosen
                 if r["label"] == "tampered"}
    recs: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, r in enumerate(chosen):
        try:
            score, pmap, cue_maps, cue_scores = analyse(r["path"])
        except MedForensicsError as exc:
            failures.append((r["path"], f"{getattr(exc, 'reason', type(exc).__name__)}: {exc}"))
            if progress is not None:
                progress(i + 1, len(chosen))
            continue
        is_t = r["label"] == "tampered"
        rec: dict[str, Any] = {
            "path": r["path"], "label": int(is_t), "score": float(score),
            "kind": pair_kind.get(r["pair_id"], ""), "size_bin": _size_bin(
                pair_size.get(r["pair_id"])), "cue_scores": dict(cue_scores),
            "forged_area_percent": float(100.0 * np.mean(pmap >= threshold)),
            "cluster": r.get("original_path") or r["pair_id"],
        }
        if is_t:
            with Image.open(r["mask_path"]) as im:
                mask = np.asarray(im) > 0
            rec["pixel"] = pixel_scores(pmap, mask, band=band, threshold=threshold)
            both = _both_copies(r, mask)
            if both is not None:
                rec["pixel_both"] = pixel_scores(pmap, both, band=band, threshold=threshold)
            rec["pixel_cue"] = {c: pixel_scores(m, mask, band=band, threshold=threshold)
                                for c, m in cue_maps.items()}
            if r["path"] in keep:
                kept[r["path"]] = (pmap, mask)
        recs.append(rec)
        if progress is not None:
            progress(i + 1, len(chosen))
    return {"records": recs, "failures": failures, "kept": kept}


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return binary_auc(y, s)


def confidence_intervals(records: list[dict[str, Any]], *, threshold: float | None = None,
                         n_boot: int = 1000, level: float = 0.95, seed: int = 0
                         ) -> dict[str, Any]:
    """Cluster-bootstrap confidence intervals of the headline forgery figures.

    Args:
        records: one dict per evaluated image with ``label`` (1 tampered, 0 original),
            ``score``, ``kind`` (an original's is its twin's), ``cluster`` (source image key)
            and, for tampered images, ``pixel_f1_best`` (NaN or absent = not scored) and for
            copy-moves ``pixel_f1_best_both`` (truth = paste and source); the
            ``per_image.json`` rows of :func:`evaluate_detector` have these keys.
        threshold: image-score threshold for recall / accuracy intervals (None = skip those).
        n_boot: bootstrap resamples.
        level: two-sided coverage.
        seed: random seed (the intervals are deterministic for a seed).

    Returns:
        ``{"level", "n_boot", "n_clusters", "image_auc": [lo, hi], "pixel_f1_best": [lo, hi],
        "accuracy": [lo, hi], "by_kind": {kind: {"image_auc", "pixel_f1_best", "recall",
        "pixel_f1_best_both"}}}`` (``pixel_f1_best_both`` only for kinds that have it,
        ``accuracy`` and ``recall`` only with a threshold; NaN bounds when a statistic is
        undefined in most resamples).
    """
    y = np.array([int(r["label"]) for r in records], dtype=int)
    s = np.array([float(r["score"]) for r in records])
    f1 = np.array([np.nan if r.get("pixel_f1_best") is None else float(r["pixel_f1_best"])
                   for r in records])
    f1_both = np.array([np.nan if r.get("pixel_f1_best_both") is None
                        else float(r["pixel_f1_best_both"]) for r in records])
    kinds = np.array([r.get("kind") or "" for r in records])
    clusters = [str(r.get("cluster") or r.get("path", i)) for i, r in enumerate(records)]

    def interval(stat: Callable[[np.ndarray], float], sel: np.ndarray) -> list[float]:
        rows = np.flatnonzero(sel)
        if rows.size == 0:
            return [float("nan"), float("nan")]
        lo, hi = bootstrap_interval(lambda ix: stat(rows[ix]), rows.size,
                                    clusters=[clusters[i] for i in rows], n_boot=n_boot,
                                    level=level, seed=seed)
        return [lo, hi]

    def auc(ix: np.ndarray) -> float:
        return _auc(y[ix], s[ix])

    def mean_f1(ix: np.ndarray, values: np.ndarray = f1) -> float:
        v = values[ix][(y[ix] == 1) & np.isfinite(values[ix])]
        return float(v.mean()) if v.size else float("nan")

    everyone = np.ones(y.size, bool)
    out: dict[str, Any] = {
        "level": level, "n_boot": n_boot, "n_clusters": len(set(clusters)),
        "image_auc": interval(auc, everyone), "pixel_f1_best": interval(mean_f1, everyone),
        "by_kind": {},
    }
    if threshold is not None:
        out["accuracy"] = interval(lambda ix: float(np.mean((s[ix] >= threshold) == y[ix])),
                                   everyone)
    for k in sorted({str(k) for k in kinds[y == 1]}):
        sel = kinds == k
        d = {"image_auc": interval(auc, sel), "pixel_f1_best": interval(mean_f1, sel)}
        if np.isfinite(f1_both[sel]).any():
            d["pixel_f1_best_both"] = interval(lambda ix: mean_f1(ix, f1_both), sel)
        if threshold is not None:
            d["recall"] = interval(lambda ix: float(np.mean(s[ix][y[ix] == 1] >= threshold))
                                   if (y[ix] == 1).any() else float("nan"), sel)
        out["by_kind"][k] = d
    return out


def _per_image(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``per_image.json`` rows (plain values) of evaluated records."""
    return [{"path": r["path"], "label": r["label"], "kind": r["kind"],
             "size_bin": r["size_bin"], "score": r["score"], "cluster": r.get("cluster"),
             "forged_area_percent": r["forged_area_percent"], "cues": r["cue_scores"],
             **({"pixel_f1_best": r["pixel"].f1_best, "pixel_f1_fixed": r["pixel"].f1_fixed,
                 "pixel_iou_fixed": r["pixel"].iou_fixed} if "pixel" in r else {}),
             **({"pixel_f1_best_both": r["pixel_both"].f1_best,
                 "pixel_f1_fixed_both": r["pixel_both"].f1_fixed} if "pixel_both" in r else {})}
            for r in recs]


def _summaries(recs: list[dict[str, Any]]) -> dict[str, Any]:
    y = np.array([r["label"] for r in recs], dtype=int)
    s = np.array([r["score"] for r in recs], dtype=np.float64)
    kinds = sorted({r["kind"] for r in recs if r["kind"]})
    by_kind = {}
    for k in kinds:
        sel = np.array([r["kind"] == k for r in recs], bool)
        by_kind[k] = _auc(y[sel], s[sel])
    orig = y == 0
    by_size = {}
    for b in SIZE_BINS:
        sel = np.array([r["label"] == 1 and r["size_bin"] == b for r in recs], bool)
        if sel.any():
            by_size[b] = _auc(y[sel | orig], s[sel | orig])
    cue_names = sorted({c for r in recs for c in r["cue_scores"]})
    by_cue = {}
    for c in cue_names:
        if all(c in r["cue_scores"] for r in recs):
            by_cue[c] = _auc(y, np.array([r["cue_scores"][c] for r in recs]))
    tam = [r for r in recs if r["label"] == 1]
    px_kind: dict[str, list[PixelScores]] = {}
    px_size: dict[str, list[PixelScores]] = {}
    px_cue: dict[str, list[PixelScores]] = {}
    px_both: dict[str, list[PixelScores]] = {}
    for r in tam:
        px_kind.setdefault(r["kind"], []).append(r["pixel"])
        if "pixel_both" in r:
            px_both.setdefault(r["kind"], []).append(r["pixel_both"])
        if r["size_bin"]:
            px_size.setdefault(r["size_bin"], []).append(r["pixel"])
        for c, ps in r["pixel_cue"].items():
            px_cue.setdefault(c, []).append(ps)
    fp_area = [r["forged_area_percent"] for r in recs if r["label"] == 0]
    return {
        "n_tampered": int(y.sum()),
        "n_original": int((1 - y).sum()),
        "image_auc": _auc(y, s),
        "image_auc_by_cue": by_cue,
        "image_auc_by_kind": by_kind,
        "image_auc_by_size": by_size,
        "pixel": summarize([r["pixel"] for r in tam]),
        "pixel_by_kind": {k: summarize(v) for k, v in sorted(px_kind.items())},
        # copy-move: truth = the paste and its source (see _both_copies)
        "pixel_both_by_kind": {k: summarize(v) for k, v in sorted(px_both.items())},
        "pixel_by_size": {k: summarize(px_size[k]) for k in SIZE_BINS if k in px_size},
        "pixel_by_cue": {c: summarize(v) for c, v in sorted(px_cue.items())},
        "fp_area_original": float(np.mean(fp_area)) if fp_area else float("nan"),
    }


def evaluate_tamper_manifest(
    manifest: str | Path,
    *,
    cues: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    band: int = 3,
    threshold: float = 0.5,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    localize_kw: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Image AUC and pixel metrics of the raw cue combination (and of each cue).

    Args:
        manifest: ``tamper_manifest.csv``.
        cues: cue names for :func:`~medforensics.forgery.localize.localize` (default: its
            default set).
        kinds: evaluate only pairs of these kinds (default all).
        band: boundary band half-width excluded from pixel metrics.
        threshold: fixed map threshold.
        limit: evaluate at most this many pairs (in manifest order).
        progress: callback ``(done, total)``.
        localize_kw: extra keyword arguments for ``localize``.

    Returns:
        Dict with ``n_tampered``, ``n_original``, ``image_auc`` (combined score),
        ``image_auc_by_cue``, ``image_auc_by_kind``, ``image_auc_by_size``, ``pixel`` (summary
        of the combined map on tampered images), ``pixel_by_kind``, ``pixel_by_size``,
        ``pixel_by_cue``, ``pixel_both_by_kind`` (copy-move rows with a source mask: truth =
        paste and source), ``fp_area_original`` (mean forged-area % on originals),
        ``failures`` (list of (path, reason)).
    """
    kw = dict(localize_kw or {})
    if cues is not None:
        kw["cues"] = list(cues)

    def analyse(path: str) -> tuple[float, np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        res = localize_file(path, threshold=threshold, **kw)
        return res.score, res.map, res.cues, res.cue_scores

    chosen = _choose(_read_rows(manifest), kinds, limit)
    out = _loop(chosen, analyse, band=band, threshold=threshold, progress=progress, keep=set())
    res = _summaries(out["records"])
    res["failures"] = out["failures"]
    return res


def select_rows(rows: list[dict[str, str]], detector: Any, manifest: str | Path,
                split: str) -> tuple[list[dict[str, str]], str]:
    """Rows to evaluate and a description of the choice.

    ``split="auto"``: when the detector's run recorded the split of this very manifest
    (``RUN/split.json`` with the same sha256), only its ``test`` rows; otherwise every row.
    ``"all"``: every row. ``"train"``/``"val"``/``"test"``: that split of the run's record (or
    of the manifest's own ``split`` column).

    Raises:
        ConfigError: a named split that is not known for this manifest.
    """
    if split == "all":
        return rows, "all rows"
    run = getattr(detector, "run_dir", None)
    rec = None
    if run is not None and (Path(run) / SPLIT_FILE).is_file():
        data = json.loads((Path(run) / SPLIT_FILE).read_text())
        if data.get("manifest_sha256") == manifest_sha256(manifest):
            rec = data.get("paths", {})
    want = "test" if split == "auto" else split
    if rec is not None:
        return [r for r in rows if rec.get(r["path"]) == want], \
            f"the run's {want} split of this manifest"
    if split == "auto":
        return rows, "all rows (the detector was not trained on this manifest)"
    if split not in ("train", "val", "test"):
        raise ConfigError(f"unknown split {split!r} (auto, all, train, val, test)")
    if all(r.get("split") for r in rows):
        return [r for r in rows if r["split"] == split], f"the manifest's {split} split"
    raise ConfigError(f"split {split!r}: neither the run nor the manifest records a split")


def evaluate_detector(
    detector: Any,
    manifest: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str = "auto",
    kinds: Iterable[str] | None = None,
    band: int = 3,
    limit: int | None = None,
    n_examples: int = 4,
    progress: Callable[[int, int], None] | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Evaluate a :class:`~medforensics.forgery.detector.ForgeryDetector` on a tamper manifest.

    Args:
        detector: the detector.
        manifest: ``tamper_manifest.csv``.
        out_dir: when given, writes ``metrics.json``, ``roc.png`` (detector and every cue) and
            ``examples/<name>.png`` panels (image, ground truth, map) of up to ``n_examples``
            tampered images (one per kind first).
        split: rows to use (see :func:`select_rows`).
        kinds: only pairs of these kinds.
        band: boundary band half-width (px) excluded from pixel metrics.
        limit: at most this many pairs.
        n_examples: example panels to draw.
        progress: callback ``(done, total)``.
        n_boot: bootstrap resamples for the 95 % confidence intervals (0 = none).

    Returns:
        The :func:`evaluate_tamper_manifest` keys plus ``image`` (accuracy, precision, recall,
        specificity, F1, AUC at the detector threshold), ``recall_by_kind``, ``ci``
        (:func:`confidence_intervals`, or None with ``n_boot=0``), ``verdicts``
        (counts), ``rows`` ("which rows"), ``method``, ``threshold``, ``failures`` and, with
        ``out_dir``, ``files``.

    Raises:
        ConfigError: no row to evaluate.
    """
    rows, which = select_rows(_read_rows(manifest), detector, manifest, split)
    chosen = _choose(rows, kinds, limit)
    if not chosen:
        raise ConfigError(f"no rows to evaluate ({which})")
    examples: list[str] = []
    seen_kinds: set[str] = set()
    tam_rows = [r for r in chosen if r["label"] == "tampered"]
    for r in tam_rows:
        if len(examples) < n_examples and r.get("kind") not in seen_kinds:
            examples.append(r["path"])
            seen_kinds.add(r.get("kind", ""))
    for r in tam_rows:
        if len(examples) < n_examples and r["path"] not in examples:
            examples.append(r["path"])
    verdicts: dict[str, int] = {}
    pixels_of: dict[str, np.ndarray] = {}

    def analyse(path: str) -> tuple[float, np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        px, meta = read_image(path)
        res, maps = detector.detect_with_cues(px, meta)
        verdicts[res.verdict] = verdicts.get(res.verdict, 0) + 1
        if out_dir is not None and path in examples:
            pixels_of[path] = px
        return res.score, res.prob_map, maps, res.cues

    thr_map = float(getattr(detector, "map_threshold", 0.5))
    out = _loop(chosen, analyse, band=band, threshold=thr_map, progress=progress,
                keep=set(examples) if out_dir is not None else set())
    recs = out["records"]
    if not recs:
        raise ConfigError(f"every row failed ({len(out['failures'])} failures)")
    res = _summaries(recs)
    y = np.array([r["label"] for r in recs], dtype=int)
    s = np.array([r["score"] for r in recs])
    thr = float(detector.threshold)
    res["image"] = to_jsonable(binary_metrics(y, s, threshold=thr)) if y.size else {}
    res["recall_by_kind"] = {
        k: float(np.mean([r["score"] >= thr for r in recs if r["label"] == 1 and r["kind"] == k]))
        for k in sorted({r["kind"] for r in recs if r["label"] == 1})
    }
    per_image = _per_image(recs)
    res["ci"] = (confidence_intervals(per_image, threshold=thr, n_boot=n_boot)
                 if n_boot > 0 else None)
    res.update(verdicts=verdicts, rows=which, method=detector.method, threshold=thr,
               map_threshold=thr_map, band=band, failures=out["failures"],
               run=None if getattr(detector, "run_dir", None) is None
               else str(detector.run_dir),
               run_integrity=getattr(detector, "run_integrity", None))
    if out_dir is not None:
        res["files"] = _write_outputs(Path(out_dir), res, recs, per_image, out["kept"],
                                      pixels_of, detector)
    return res


def _write_outputs(out: Path, res: dict[str, Any], recs: list[dict[str, Any]],
                   per_image: list[dict[str, Any]],
                   kept: dict[str, tuple[np.ndarray, np.ndarray]],
                   pixels_of: dict[str, np.ndarray], detector: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"metrics": str(out / "metrics.json")}
    y = np.array([r["label"] for r in recs], dtype=int)
    if y.min() != y.max():
        curves = {f"detector ({detector.method})": (y, np.array([r["score"] for r in recs]))}
        for c in sorted({c for r in recs for c in r["cue_scores"]}):
            if all(c in r["cue_scores"] for r in recs):
                curves[f"cue: {c}"] = (y, np.array([r["cue_scores"][c] for r in recs]))
        files["roc"] = str(plot_binary_roc(curves, out / "roc.png",
                                           title="Forgery detection: tampered vs original"))
    ex_dir = out / "examples"
    files["examples"] = []
    kinds = {r["path"]: r["kind"] for r in recs}
    for i, (path, (pmap, mask)) in enumerate(kept.items()):
        if path not in pixels_of:
            continue
        ex_dir.mkdir(exist_ok=True)
        p = ex_dir / f"{i:02d}_{kinds.get(path, 'tampered')}.png"
        _panel(pixels_of[path], mask, pmap, p, f"{Path(path).name}")
        files["examples"].append(str(p))
    (out / "per_image.json").write_text(json.dumps(to_jsonable(per_image), indent=1))
    files["per_image"] = str(out / "per_image.json")
    (out / "metrics.json").write_text(json.dumps(to_jsonable({**res, "files": files}),
                                                 indent=2, sort_keys=True))
    return files


def _panel(pixels: np.ndarray, mask: np.ndarray, pmap: np.ndarray, path: Path,
           title: str) -> None:
    """Three panels side by side: image (8-bit display window), ground truth, map."""
    from matplotlib.figure import Figure

    img8, _, _ = window_to_uint8(pixels)
    fig = Figure(figsize=(12, 4.8), dpi=90)
    axes = fig.subplots(1, 3)
    axes[0].imshow(img8, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title(f"image (display window)\n{title}", fontsize=9)
    axes[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"ground truth ({100 * mask.mean():.2f} % of pixels)", fontsize=9)
    im = axes[2].imshow(pmap, cmap="inferno", vmin=0, vmax=1)
    axes[2].set_title("forgery probability map", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.96))
    fig.savefig(path)
