"""The HTML of a case report: one self-contained page per image.

:func:`render_case_report` analyses one image file (:func:`medforensics.report.analysis.
analyse_case`) and returns one HTML page that needs nothing else to be read (images embedded
as base64 PNG, inline CSS from ``static/report.css``, no scripts, no external resources).
:mod:`medforensics.report.batch` writes such pages for many files with an index.

What a page holds:

* **Image**: a display rendering of the first frame: a window of the stored values (the
  0.5 and 99.5 percentiles, stated on the page) mapped to 8 bits and shrunk to at most 768
  px. It is for people to look at; every analysis uses the full-depth stored values of
  :func:`medforensics.io.read_image`.
* **Device**: the verdict of :func:`medforensics.source.predictor.identify_image` (prediction,
  calibrated probability, top 3, the header's claim, consistent / MISMATCH / UNKNOWN / ...),
  and the acquisition unit from the run's reference patterns when it has them.
* **Forgery** (when a detector is given): score, verdict, forged-area percentage, ELA score
  and the probability map as a heat-map overlay (``ForgeryDetector.detect``).
* **Header**: a summary of the DICOM header (or raster file header). Patient and
  institution identifiers are shown as ``masked`` unless ``mask_identifiers=False``; the
  file path is masked too (archives often name folders after patients): the file is named
  by its SHA-256 instead (:mod:`medforensics.report.redaction`). Text burned into the pixels
  is *not* removed.
* **Provenance**: SHA-256 of the input file and of every model file (``model.json``,
  weights, calibration, reference patterns), the model's preset, preprocessing, training
  manifest hash and seed, software versions, the analysis parameters and the time
  (:mod:`medforensics.report.provenance`).

Determinism: the time the page was generated is the only thing that changes between two
renders of the same file with the same models; it sits on a line of its own
(``<p class="generated">``). Source inference draws its patches from a fixed seed and the
forgery detector is deterministic, so re-running gives the same numbers.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from medforensics.report.analysis import CaseAnalysis, analyse_case, finite_or_none
from medforensics.report.colours import heat_scale
from medforensics.report.images import (
    DISPLAY_MAX_SIDE,
    DISPLAY_WINDOW_PERCENTILES,
    png_b64,
)
from medforensics.report.redaction import MASKED, uid_text

__all__ = [
    "badge", "esc", "fmt_num", "fmt_p", "page", "render_case_report", "render_html",
]

#: Badge colour class of each device verdict (forgery verdicts: :func:`_forgery_class`).
_VERDICT_CLASS = {
    "consistent": "ok",
    "MISMATCH": "bad",
    "UNKNOWN": "warn",
    "claim-not-in-model": "warn",
    "no-header-claim": "neutral",
    "insufficient-evidence": "neutral",
    "unreadable": "bad",
}

#: Labels of the ``model.json`` values shown in the provenance (two keys may share a label:
#: the first present is shown).
_MODEL_LABELS = {
    "preset": "preset", "name": "preset", "preprocess": "preprocessing",
    "preprocessing_description": "preprocessing (detail)", "label_column": "label",
    "weights_sha256": "weights sha256 (model.json)",
    "training_manifest_sha256": "training manifest sha256",
    "seed": "training seed", "epochs": "epochs", "best_epoch": "best epoch",
    "software_version": "trained with medforensics", "torch_version": "trained with torch",
    "created": "model created", "task": "task", "num_classes": "classes",
    "weights_match_model_json": "weights file matches model.json",
}


@cache
def _css() -> str:
    """The page's style sheet, ``static/report.css`` of this package (read once)."""
    return resources.files("medforensics.report").joinpath("static/report.css").read_text(encoding="utf-8")


def esc(value: Any) -> str:
    """``value`` as HTML text (``None`` is empty; quotes escaped for attributes)."""
    return escape("" if value is None else str(value), quote=True)


def fmt_p(p: Any) -> str:
    """A probability with three decimals, ``-`` when missing or not finite."""
    v = finite_or_none(p)
    return "-" if v is None else f"{v:.3f}"


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``-`` when missing or not finite."""
    v = finite_or_none(x)
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def badge(verdict: str | None) -> str:
    """A verdict as a coloured badge (green consistent/authentic, red MISMATCH/forged, ...)."""
    if not verdict:
        return '<span class="badge neutral">-</span>'
    cls = _VERDICT_CLASS.get(verdict, _forgery_class(verdict))
    return f'<span class="badge {cls}">{esc(verdict)}</span>'


def _forgery_class(verdict: str) -> str:
    """Badge colour class of a forgery verdict, from the words it uses."""
    v = verdict.lower()
    if any(w in v for w in ("forged", "tamper", "manipulat", "suspicious", "edited")):
        return "bad"
    if any(w in v for w in ("authentic", "clean", "original", "pristine")):
        return "ok"
    if "uncertain" in v or "inconclusive" in v or "unknown" in v:
        return "warn"
    return "neutral"


def _kv_table(rows: Iterable[tuple[str, str]], raw: bool = False) -> str:
    """A two-column table of ``(label, value)`` rows; ``raw`` values are HTML already."""
    body = "".join(
        f"<tr><th>{esc(k)}</th><td>{v if raw else esc(v)}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


_INTEGRITY_NOTES = {
    "modified": "the run's files differ from its run manifest (loaded with "
                "--allow-modified-run): this result is not evidence",
    "unverified": "the run has no run manifest: its files could not be checked",
}


def _integrity_note(status: Any) -> str:
    """A warning line for a ``run_integrity`` other than ``verified`` (else empty)."""
    text = _INTEGRITY_NOTES.get(str(status)) if status else None
    return f'<div class="note">run {esc(status)}: {esc(text)}</div>' if text else ""


def _device_card(dev: Mapping[str, Any]) -> str:
    """The summary card of the device verdict at the top of the page."""
    status = dev.get("status")
    if status == "no-model":
        return ('<div class="card"><div class="label">Source device</div>'
                '<div class="big">not analysed</div><div class="note">no source model given'
                "</div></div>")
    if status != "done":
        return ('<div class="card"><div class="label">Source device</div>'
                f'<div class="big">{badge("unreadable")}</div></div>')
    pred = dev.get("predicted")
    says = (f"pixels say <b>{esc(pred)}</b> (p = {fmt_p(dev.get('probability'))})"
            if dev.get("confident") and pred is not None else "pixels name <b>no device</b>")
    return (
        '<div class="card"><div class="label">Source device</div>'
        f'<div class="big">{badge(dev.get("verdict"))}</div>'
        f"<div>{says}; "
        f"header claims <b>{esc(dev.get('header_claim') or 'nothing')}</b></div>"
        f"{_integrity_note(dev.get('run_integrity'))}</div>"
    )


def _forgery_card(fg: Mapping[str, Any]) -> str:
    """The summary card of the forgery verdict at the top of the page."""
    status = fg.get("status")
    if status == "no-model":
        return ('<div class="card"><div class="label">Forgery</div>'
                '<div class="big">not analysed</div><div class="note">no forgery model given'
                "</div></div>")
    if status != "done":
        text = "analysis failed" if status == "failed" else "unreadable"
        return (f'<div class="card"><div class="label">Forgery</div>'
                f'<div class="big">{badge(text)}</div></div>')
    reason = fg.get("inconclusive_reason")
    return (
        '<div class="card"><div class="label">Forgery</div>'
        f'<div class="big">{badge(str(fg.get("verdict") or "-"))}</div>'
        + (f'<div class="note">{esc(reason)}</div>' if reason else "")
        + f"<div>score <b>{fmt_num(fg.get('score'))}</b>; forged area "
        f"<b>{fmt_num(fg.get('forged_area_percent'), 2)} %</b></div>"
        f"{_integrity_note((fg.get('details') or {}).get('run_integrity'))}</div>"
    )


def _pixels_say(dev: Mapping[str, Any]) -> str:
    """What the pixels name: the device and its probability, or no device (and the nearest)."""
    if dev.get("confident") and dev.get("predicted") is not None:
        by_unit = (" (named by an enrolled unit's reference pattern)"
                   if dev.get("named_by") == "unit-pattern" else "")
        return (f"<b>{esc(dev.get('predicted'))}</b>, calibrated probability "
                f"{fmt_p(dev.get('probability'))}{by_unit}")
    nearest = (f" <span class=\"note\">(nearest: {esc(dev.get('predicted'))}, "
               f"p={fmt_p(dev.get('probability'))})</span>"
               if dev.get("predicted") is not None else "")
    return "<b>no device named</b>" + nearest


def _unit_row(dev: Mapping[str, Any]) -> tuple[str, str]:
    """The acquisition-unit row: the enrolled unit whose reference pattern the image
    carries, against the header's unit."""
    if not (dev.get("has_unit_patterns") and "unit" in dev):
        return ("Acquisition unit", "no reference patterns in this run")
    unit, claim = dev.get("unit"), dev.get("unit_claim")
    if unit is None:
        unit_text = "no enrolled unit's reference pattern is present in the image"
    elif claim is not None and unit == claim:
        unit_text = f"<b>{esc(unit)}</b> <span class=\"t-ok\">(matches the header)</span>"
    else:
        unit_text = (f"<b>{esc(unit)}</b> <span class=\"t-bad\">(header claims "
                     f"{esc(claim or 'no unit')})</span>")
    return ("Acquisition unit (reference patterns)",
            f"{unit_text}; PCE {fmt_num(dev.get('unit_score'), 1)}")


def _distance_parts(dev: Mapping[str, Any]) -> str:
    """``"; network features 1.1, noise shape 7.9"``: what the feature distance is made of
    (HTML-escaped), or "" when the run has one block."""
    parts = dev.get("distance_parts") or {}
    return "".join(f"; {esc(k)} {fmt_num(v, 2)}" for k, v in parts.items())


def _device_rows(dev: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The device section's table: verdict, what the pixels and the header say, the open-set
    test, the thresholds and the acquisition unit (HTML cells)."""
    level = dev.get("level") or "model"
    thr = dev.get("unknown_threshold")
    dist, dthr = dev.get("feature_distance"), dev.get("feature_threshold")
    return [
        ("Verdict", f"{badge(dev.get('verdict'))} {esc(dev.get('message'))}"),
        (f"Pixels say ({esc(level)})", _pixels_say(dev)),
        ("Open-set feature distance", "-" if dist is None else
         f"{fmt_num(dist, 2)} (threshold {fmt_num(dthr, 2) if dthr is not None else 'none'}"
         "; above it the pixels match no known device)" + _distance_parts(dev)),
        ("Informative windows", esc(dev.get("informative_windows", "-"))),
        (f"Header claims ({esc(level)})", esc(dev.get("header_claim") or "nothing at this level")
         + ("" if dev.get("header_claim") is None or dev.get("claim_class") is not None
            else " <span class=\"note\">(not among the model's classes)</span>")),
        ("Probability of the claimed device", fmt_p(dev.get("claim_probability"))
         if dev.get("claim_probability") is not None else "-"),
        ("UNKNOWN threshold", "none (uncalibrated run: no open-set rejection)"
         if not thr else f"{thr:.3f} (calibrated max-probability below it: UNKNOWN)"),
        ("Patches used", esc(dev.get("n_patches"))),
        _unit_row(dev),
    ]


def _device_html(dev: Mapping[str, Any], classes: Sequence[str] | None) -> str:
    """The device section (a short paragraph when there is no verdict to show)."""
    status = dev.get("status")
    if status == "no-model":
        return ('<section id="device"><h2>Source device</h2><p>No source model given: the '
                "device was not analysed.</p></section>")
    if status != "done":
        return ('<section id="device"><h2>Source device</h2><p>Not analysed: the image '
                "could not be read (see above).</p></section>")
    if dev.get("verdict") == "unreadable":
        return (f'<section id="device"><h2>Source device</h2><p>{badge("unreadable")} '
                f"{esc(dev.get('message'))}</p></section>")
    top_rows = "".join(
        f"<tr><td>{i}</td><td>{esc(lab)}</td><td class=\"num\">{p:.3f}</td>"
        f'<td><div class="bar"><span style="width:{max(0.0, min(1.0, p)) * 100:.1f}%">'
        "</span></div></td></tr>"
        for i, (lab, p) in enumerate(dev.get("top") or [], 1)
    )
    classes_html = ""
    if classes:
        items = "".join(f"<li>{esc(c)}</li>" for c in classes)
        classes_html = (f"<details><summary>{len(classes)} devices the model was trained on"
                        f"</summary><ul>{items}</ul></details>")
    return (
        '<section id="device"><h2>Source device</h2>'
        + _kv_table(_device_rows(dev), raw=True)
        + '<h3>Top 3</h3><table class="list"><tr><th>#</th><th>Device</th>'
        '<th>p</th><th style="width:40%"></th></tr>' + top_rows + "</table>"
        + classes_html
        + (f'<p class="note"><b>This model knows only {esc(dev["model_knowledge"])}.</b></p>'
           if dev.get("model_knowledge") else "")
        + '<p class="note">Probabilities are calibrated (temperature scaling on the run\'s '
        "validation split). A device is named only when an enrolled unit's reference pattern "
        "matches, or the classifier's open-set test passes (probability and feature distance "
        "within their thresholds). consistent = the named device is the claimed one; "
        "MISMATCH = another known device is named; UNKNOWN = the pixels match none of the "
        "known devices (the claim is neither confirmed nor refuted); insufficient-evidence = "
        "too little of the image carries readable detector noise.</p></section>"
    )


def _ramp_png() -> str:
    """The overlay's colour scale (:func:`medforensics.report.colours.heat_scale`) as a
    base64 160x10 PNG."""
    return png_b64(heat_scale(160, 10))


def _forgery_rows(fg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The forgery section's table: verdict, score, area, ELA, readable share, cue scores,
    the result's other fields and its notes (HTML cells)."""
    ela = fg.get("ela_score")
    rows = [
        ("Verdict", badge(str(fg.get("verdict") or "-")) + (
            f" {esc(fg['inconclusive_reason'])}" if fg.get("inconclusive_reason") else "")),
        ("Forgery score", fmt_num(fg.get("score"))),
        ("Forged area", f"{fmt_num(fg.get('forged_area_percent'), 2)} % of the image"),
        ("ELA score", (f"{fmt_num(ela, 2)} <span class=\"note\">(mean error-level "
                       "difference, % of 8-bit full scale; not a share of pixels)</span>")
         if finite_or_none(ela) is not None else
         '<span class="note">not run (ELA does not apply to this image; see the notes)</span>'),
    ]
    if finite_or_none(fg.get("covered_fraction")) is not None:
        rows.append(("Readable share", (f"{100 * float(fg['covered_fraction']):.1f} % of the "
                     "image carries measurable noise (the cues read only there)")))
    if fg.get("cues"):
        rows.append(("Cue scores", ", ".join(
            f"{esc(k)} {fmt_num(v)}" for k, v in fg["cues"].items())))
    for k, v in (fg.get("details") or {}).items():
        rows.append((k.replace("_", " "), esc(v) if not isinstance(v, float) else f"{v:.4g}"))
    if fg.get("notes"):
        rows.append(("Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in fg["notes"])
                     + "</ul>"))
    return rows


def _forgery_figures(fg: Mapping[str, Any], image_png: str | None) -> str:
    """The image beside its forgery heat map with the colour scale (nothing without a map)."""
    if not fg.get("overlay_png"):
        return ""
    return (
        '<div class="figs">'
        + (f'<figure><img alt="image" src="data:image/png;base64,{image_png}">'
           "<figcaption>Image (display rendering)</figcaption></figure>" if image_png else "")
        + f'<figure><img alt="forgery heat map" src="data:image/png;base64,'
        f'{fg["overlay_png"]}"><figcaption>Forgery probability map over the image: '
        f'0 <img class="ramp" alt="colour scale" src="data:image/png;base64,{_ramp_png()}">'
        " 1 (the colour's opacity grows with the probability; display only). Boxes: the "
        "flagged areas, numbered as in the table; arrow: copy-move from its source (dashed) "
        "to the pasted copy; dashed magenta line: copy-move whose direction is not known."
        "</figcaption>"
        "</figure></div>"
    )


def _forgery_html(fg: Mapping[str, Any], image_png: str | None) -> str:
    """The forgery section (a short paragraph when there is no result to show)."""
    status = fg.get("status")
    if status == "no-model":
        return ('<section id="forgery"><h2>Forgery</h2><p>No forgery model given: forgery '
                "was not analysed.</p></section>")
    if status == "unreadable":
        return ('<section id="forgery"><h2>Forgery</h2><p>Not analysed: the image could not '
                "be read (see above).</p></section>")
    if status == "failed":
        return (f'<section id="forgery"><h2>Forgery</h2><p>{badge("analysis failed")} '
                f"{esc(fg.get('reason'))}: {esc(fg.get('message'))}</p></section>")
    regions = _regions_html(fg.get("regions") or []) + _copy_moves_html(
        fg.get("copy_moves") or [])
    return ('<section id="forgery"><h2>Forgery</h2>' + _kv_table(_forgery_rows(fg), raw=True)
            + regions + _forgery_figures(fg, image_png) + "</section>")


def _regions_html(regions: list[Mapping[str, Any]]) -> str:
    """Table of the flagged areas (largest first), or nothing."""
    if not regions:
        return ""
    body = []
    for i, r in enumerate(regions, 1):
        x0, y0, x1, y1 = (int(v) for v in r.get("bbox", (0, 0, 0, 0)))
        cp = r.get("copy_of") or {}
        copy = ""
        if cp:
            px0, py0, px1, py1 = (int(v) for v in cp.get("partner_bbox", (0, 0, 0, 0)))
            turn = cp.get("transform") or "identity"
            role = cp.get("role") or "undetermined"
            what = ('<span class="t-warn">direction undetermined</span>: either area could '
                    "be the paste" if role == "undetermined" else
                    f"this area: {esc(role)}" + (f" ({esc(cp['cue'])})" if cp.get("cue")
                                                else ""))
            copy = (f"partner ({px0}, {py0})-({px1}, {py1}); {what}"
                    + ("" if turn == "identity" else f", {esc(turn)}")
                    + (", matched by content" if cp.get("method") == "content" else ""))
        cue = esc(r.get("cue") or "-") + (
            " (values on a coarse lattice: scaled up from fewer grey levels)"
            if r.get("coarse_lattice") else "")
        body.append(
            f"<tr><td>{i}</td><td>({x0}, {y0})-({x1}, {y1})</td><td>{x1 - x0} x {y1 - y0}</td>"
            f"<td>{fmt_num(r.get('area_percent'), 2)} %</td><td>{fmt_num(r.get('mean_prob'))}"
            f"</td><td>{cue}</td><td>{copy}</td></tr>")
    return ("<h3>Flagged areas</h3><table><tr><th>#</th><th>box (x, y), ends exclusive</th>"
            "<th>size px</th><th>of the image</th><th>mean probability</th><th>cue</th>"
            "<th>copy-move</th></tr>" + "".join(body) + "</table>")


def _copy_moves_html(pairs: list[Mapping[str, Any]]) -> str:
    """Table of the copy-move pairs with their direction and its evidence, or nothing."""
    if not pairs:
        return ""

    def box(b: Any) -> str:
        if not b:
            return "-"
        x0, y0, x1, y1 = (int(v) for v in b)
        return f"({x0}, {y0})-({x1}, {y1})"

    body = []
    for i, c in enumerate(pairs, 1):
        if c.get("direction") == "undetermined" or not c.get("pasted_bbox"):
            what = ('<span class="t-warn">undetermined</span>: the two areas hold the same '
                    f"content, {box(c.get('bbox_a'))} and {box(c.get('bbox_b'))}; which one "
                    "was pasted is not known")
        else:
            what = (f"pasted at <b>{box(c.get('pasted_bbox'))}</b>, copied from "
                    f"{box(c.get('source_bbox'))}")
        turn = c.get("transform") or "identity"
        body.append(f"<tr><td>{i}</td><td>{what}</td><td>{esc(turn)}</td>"
                    f"<td>{esc(c.get('evidence') or '-')}</td></tr>")
    return ("<h3>Copy-moves</h3><table><tr><th>#</th><th>direction</th><th>transform</th>"
            "<th>evidence</th></tr>" + "".join(body) + "</table>")


def _header_html(case: CaseAnalysis) -> str:
    """The header summary section with what was masked and the burned-in warning."""
    if not case.header:
        return ('<section id="header"><h2>Header</h2><p>The header could not be read.</p>'
                "</section>")
    body = "".join(
        f"<tr><th>{esc(label)}</th><td>"
        + (f'<span class="masked">{MASKED}</span>' if masked and value == MASKED
           else esc(value))
        + "</td></tr>"
        for label, _kw, value, masked in case.header
    )
    if case.file.get("format") not in (None, "dicom"):
        note = ("A raster file carries no DICOM header (no patient fields); "
                + ("the file path is masked." if case.mask_identifiers
                   else "identifiers are shown on this page."))
    elif case.mask_identifiers:
        note = (f"{case.n_masked} identifying field(s) masked (patient, staff, institution, "
                "dates, UIDs); the file path is masked too. Run with --show-identifiers "
                "(mask_identifiers=False) to reveal them. Masking covers the header only: "
                "text burned into the pixels is not removed.")
    else:
        note = "Identifiers are shown on this page."
    burned = ""
    if case.burned_in.upper() == "YES":
        burned = ('<div class="info">The header says the pixels carry burned-in annotation '
                  "(BurnedInAnnotation = YES): the image may show identifying text.</div>")
    return (f'<section id="header"><h2>Header</h2><table>{body}</table>'
            f'<p class="note">{esc(note)}</p>{burned}</section>')


def _json_block(value: Any) -> str:
    """``value`` as one line of sorted JSON in a monospace span."""
    text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return f'<span class="mono">{esc(text)}</span>'


def _model_prov_rows(prov: Mapping[str, Any] | None, what: str) -> list[tuple[str, str]]:
    """Provenance rows of one model (``what``: "Source model" or "Forgery model"): run,
    detector, integrity, file hashes, training facts and parameters."""
    if prov is None:
        return [(what, f"no {what.lower()} given")]
    rows = [(f"{what}: run", esc(prov.get("run") or "none (no run directory: training-free "
                                  "or passed in as an object)"))]
    if prov.get("detector"):
        rows.append((f"{what}: detector", esc(prov["detector"])))
    if prov.get("run_integrity"):
        rows.append((f"{what}: run integrity", esc(prov["run_integrity"])
                     + _integrity_note(prov["run_integrity"])))
    for name, sha in (prov.get("files") or {}).items():
        rows.append((f"{what}: {name}", f'<span class="mono">sha256 {esc(sha)}</span>'))
    model = prov.get("model") or {}
    seen = set()
    for key, label in _MODEL_LABELS.items():
        if key in model and label not in seen:
            seen.add(label)
            val = model[key]
            cell = (f'<span class="mono">{esc(val)}</span>' if "sha256" in key else esc(val))
            rows.append((f"{what}: {label}", cell))
    if prov.get("parameters"):
        rows.append((f"{what}: parameters", _json_block(prov["parameters"])))
    return rows


def _provenance_html(case: CaseAnalysis) -> str:
    """The provenance section: input, models, software and parameters."""
    prov = case.provenance
    inp = prov.get("input", {})
    rows: list[tuple[str, str]] = [
        ("Input file", (f'<span class="mono">sha256 {esc(inp.get("sha256") or "not readable")}'
                       f"</span>")),
        ("Input size", f"{esc(inp.get('size_bytes'))} bytes"),
        ("Input path", '<span class="masked">masked</span>' if inp.get("path") == MASKED
         else f'<span class="mono">{esc(inp.get("path"))}</span>'),
    ]
    f = case.file
    if f.get("format"):
        ts = f.get("transfer_syntax") or ""
        if ts:
            ts = uid_text(ts)
        rows.append(("Format", esc(f"{f.get('format')} {ts}".strip())
                     + (" (lossy compression)" if f.get("lossy") else "")))
    rows += _model_prov_rows(prov.get("source_model"), "Source model")
    rows += _model_prov_rows(prov.get("forgery_model"), "Forgery model")
    sw = prov.get("software", {})
    rows.append(("Software", esc(", ".join(f"{k} {v}" for k, v in sw.items()))))
    params = dict(prov.get("parameters", {}))
    src = params.pop("source", None)
    rows.append(("Parameters", _json_block(params)))
    if src is not None:
        src = {k: v for k, v in src.items() if k not in ("classes",)}
        rows.append(("Source inference parameters", _json_block(src)))
    return '<section id="provenance"><h2>Provenance</h2>' + _kv_table(rows, raw=True) + \
        "</section>"


def _generated_line(when: _dt.datetime) -> str:
    """``when`` in UTC, to the second, on its own line."""
    stamp = when.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")
    return f'<p class="generated">Report generated {esc(stamp)}</p>'


def page(title: str, body: str, when: _dt.datetime) -> str:
    """A whole HTML document around ``body`` (HTML) with the style sheet and the
    generated-time line, the only line that differs between two renders."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="medforensics">\n'
        f"<title>{esc(title)}</title>\n<style>\n{_css()}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n"
        f"{_generated_line(when)}\n"
        "</main>\n</body>\n</html>\n"
    )


def _image_html(case: CaseAnalysis) -> str:
    """The image section: the display rendering and how it was made."""
    f = case.file
    lo, hi = case.window or (0.0, 0.0)
    pct = DISPLAY_WINDOW_PERCENTILES
    return (
        '<section id="image"><h2>Image</h2><div class="figs"><figure>'
        f'<img alt="display rendering" src="data:image/png;base64,{case.image_png}">'
        "</figure></div>"
        f'<p class="note">Display rendering only: frame 1 of {esc(f.get("n_frames"))}, '
        f"{esc(f.get('cols'))} x {esc(f.get('rows'))} px, {esc(f.get('bits_stored'))}-bit "
        f"stored values windowed to 8 bits over [{lo:.6g}, {hi:.6g}] (the "
        f"{pct[0]:g} and {pct[1]:g} percentiles) and reduced to at most "
        f"{esc(case.provenance.get('parameters', {}).get('display_max_side'))} px. "
        "Every analysis on this page uses the full-depth stored values, never this "
        "rendering.</p></section>"
    )


def render_html(case: CaseAnalysis, *, generated_at: _dt.datetime | None = None) -> str:
    """The HTML page of an analysed case (see :func:`render_case_report`).

    Args:
        case: the analysed case.
        generated_at: the time stamped on the page (default: now, UTC).

    Returns:
        The page as text.
    """
    when = generated_at or _dt.datetime.now(_dt.timezone.utc)
    sha = case.file.get("sha256") or ""
    name = case.display_name
    subtitle = (f'File <span class="mono">{esc(name)}</span>' if name is not None
                else "File path masked")
    parts = [
        ('<header class="top"><h1>Forensic case report</h1>'
        f'<p class="sub">{subtitle} &middot; sha256 <span class="mono">{esc(sha or "-")}'
        "</span></p></header>")
    ]
    if not case.mask_identifiers:
        parts.append('<div class="alert">This page shows patient identifiers.</div>')
    if case.read_error is not None:
        parts.append(
            f'<div class="alert"><b>The image could not be read</b> '
            f'({esc(case.read_error["reason"])}): {esc(case.read_error["message"])}</div>')
    parts.append(f'<div class="summary">{_device_card(case.device)}'
                 f"{_forgery_card(case.forgery)}</div><br>")
    if case.image_png:
        parts.append(_image_html(case))
    src_params = (case.provenance.get("parameters") or {}).get("source") or {}
    parts.append(_device_html(case.device, src_params.get("classes")))
    parts.append(_forgery_html(case.forgery, case.image_png))
    parts.append(_header_html(case))
    parts.append(_provenance_html(case))
    title = f"Case report {sha[:12]}" if sha else "Case report"
    return page(title, "\n".join(parts), when)


def render_case_report(
    path: str | Path,
    *,
    source: Any = None,
    forgery: Any = None,
    mask_identifiers: bool = True,
    force: bool = False,
    filename: str | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
    device: str = "cpu",
    generated_at: _dt.datetime | None = None,
    allow_modified_run: bool = False,
) -> str:
    """One self-contained HTML case report for one image file.

    Args:
        path: the image (DICOM, PNG, JPEG or TIFF). The first frame is analysed.
        source: a :class:`medforensics.source.predictor.SourcePredictor`, or a trained run directory
            (loaded with ``SourcePredictor.from_run``; then its files are hashed in the
            provenance), or ``None`` ("no source model given").
        forgery: a forgery detector (an object with ``detect(pixels, meta)``, normally
            ``medforensics.forgery.detector.ForgeryDetector``), or its run directory, or
            ``"cues"`` for the training-free detector (``ForgeryDetector.from_run(None)``),
            or ``None`` ("no forgery model given").
        mask_identifiers: show patient/staff/institution identifiers, dates, UIDs and the
            file path as ``masked`` (default). ``False`` reveals them (and says so).
        force: read DICOM files without file meta (ACR-NEMA), as ``read_image(force=)``.
        filename: name to show for the file instead of ``path`` (e.g. an upload's client
            name); only shown when ``mask_identifiers`` is False.
        max_side: longest side of the display images in pixels.
        device: torch device when ``source`` is a run directory.
        generated_at: the time stamped on the page (default: now, UTC).
        allow_modified_run: load runs given as paths even when their files differ from
            their run manifest (the page then says the run was modified) instead of refusing.

    Returns:
        The HTML page (UTF-8 text). Unreadable files give a page that says why.

    Raises:
        ModelFileError: a run directory cannot be loaded.
        ConfigError: a forgery run was given but there is no forgery detector.
    """
    case = analyse_case(path, source=source, forgery=forgery, mask_identifiers=mask_identifiers,
                        force=force, filename=filename, max_side=max_side, device=device,
                        allow_modified_run=allow_modified_run)
    return render_html(case, generated_at=generated_at)


