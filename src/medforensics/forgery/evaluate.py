"""Evaluate forgery localization on a tamper manifest (output of :func:`forgery.tamper.generate`).

For every row (tampered and matched original) the cues are computed with
:func:`medforensics.forgery.localize.localize_file`; the image-level score gives an image AUC
(tampered vs original, overall, per kind and per cue) and the map gives pixel metrics against
the row's mask (:func:`medforensics.forgery.metrics.pixel_scores`, boundary band excluded).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medforensics.errors import ConfigError, MedForensicsError
from medforensics.eval.metrics import binary_auc
from medforensics.forgery.metrics import PixelScores, pixel_scores, summarize

__all__ = ["evaluate_tamper_manifest"]

log = logging.getLogger(__name__)


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
    """Image AUC and pixel metrics of the combined map (and of each cue) on a tamper manifest.

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
        ``image_auc_by_cue``, ``image_auc_by_kind``, ``pixel`` (summary of the combined map on
        tampered images), ``pixel_by_kind``, ``pixel_by_cue``, ``fp_area_original`` (mean
        forged-area % on originals), ``failures`` (list of (path, reason)).
    """
    from medforensics.forgery.localize import localize_file

    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "label" not in rows[0]:
        raise ConfigError(f"{manifest}: not a tamper manifest")
    kinds_set = set(kinds) if kinds is not None else None
    pairs: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        pairs.setdefault(r["pair_id"], []).append(r)
    chosen = []
    for pid, rs in pairs.items():
        t = [r for r in rs if r["label"] == "tampered"]
        if kinds_set is not None and (not t or t[0]["kind"] not in kinds_set):
            continue
        chosen.extend(rs)
    if limit is not None:
        keep_ids = list(dict.fromkeys(r["pair_id"] for r in chosen))[:limit]
        chosen = [r for r in chosen if r["pair_id"] in set(keep_ids)]
    labels: list[int] = []
    scores: list[float] = []
    kinds_of: list[str] = []
    cue_scores: dict[str, list[float]] = {}
    px_all: list[PixelScores] = []
    px_kind: dict[str, list[PixelScores]] = {}
    px_cue: dict[str, list[PixelScores]] = {}
    fp_area: list[float] = []
    failures: list[tuple[str, str]] = []
    kw = dict(localize_kw or {})
    if cues is not None:
        kw["cues"] = list(cues)
    for i, r in enumerate(chosen):
        try:
            res = localize_file(r["path"], threshold=threshold, **kw)
        except MedForensicsError as exc:
            failures.append((r["path"], str(exc)))
            continue
        is_t = r["label"] == "tampered"
        labels.append(int(is_t))
        scores.append(res.score)
        kind = r["kind"] if is_t else "none"
        kinds_of.append(r.get("pair_kind", kind))
        for c, v in res.cue_scores.items():
            cue_scores.setdefault(c, []).append(v)
        if is_t:
            mask = np.asarray(Image.open(r["mask_path"])) > 0
            ps = pixel_scores(res.map, mask, band=band, threshold=threshold)
            px_all.append(ps)
            px_kind.setdefault(kind, []).append(ps)
            for c, m in res.cues.items():
                px_cue.setdefault(c, []).append(pixel_scores(m, mask, band=band,
                                                             threshold=threshold))
        else:
            fp_area.append(res.forged_area_percent)
        if progress is not None:
            progress(i + 1, len(chosen))
    y = np.array(labels)
    s = np.array(scores)
    # pair kind for originals: the kind of their tampered partner
    pair_kind = {r["pair_id"]: r["kind"] for r in chosen if r["label"] == "tampered"}
    row_kind = [pair_kind.get(r["pair_id"], "") for r in chosen
                if r["path"] not in {f[0] for f in failures}]
    by_kind: dict[str, float] = {}
    for k in sorted(set(pair_kind.values())):
        sel = np.array([rk == k for rk in row_kind], bool)
        if sel.any():
            by_kind[k] = binary_auc(y[sel], s[sel])
    return {
        "n_tampered": int(y.sum()),
        "n_original": int((1 - y).sum()),
        "image_auc": binary_auc(y, s) if y.size else float("nan"),
        "image_auc_by_cue": {c: binary_auc(y, np.array(v)) for c, v in cue_scores.items()
                             if len(v) == y.size},
        "image_auc_by_kind": by_kind,
        "pixel": summarize(px_all),
        "pixel_by_kind": {k: summarize(v) for k, v in px_kind.items()},
        "pixel_by_cue": {c: summarize(v) for c, v in px_cue.items()},
        "fp_area_original": float(np.mean(fp_area)) if fp_area else float("nan"),
        "failures": failures,
    }
