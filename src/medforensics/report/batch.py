"""Case reports for many files: one page per image and an index (``medforensics report``).

:func:`write_report` loads and hashes the models once, then analyses and renders each file
(:mod:`medforensics.report.analysis`, :mod:`medforensics.report.html`). A batch never stops
on one file: unreadable images get a page that says why, and a page whose analysis fails
unexpectedly is replaced by an error page (counted in :attr:`ReportOutput.n_failed`). Pages
are written whole or not at all.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medforensics.common.atomic import atomic_write_text
from medforensics.common.hashing import file_sha256
from medforensics.data.files import find_files
from medforensics.errors import ConfigError
from medforensics.report.analysis import CaseAnalysis, analyse_case
from medforensics.report.html import badge, esc, fmt_num, fmt_p, page, render_html
from medforensics.report.images import DISPLAY_MAX_SIDE
from medforensics.report.provenance import load_forgery, load_source
from medforensics.report.redaction import redact
from medforensics.source.schema import image_ids

__all__ = ["ReportOutput", "write_report"]

log = logging.getLogger(__name__)


@dataclass
class ReportOutput:
    """What :func:`write_report` wrote.

    Attributes:
        pages: one HTML page per input file, in input order.
        index: the ``index.html`` (``None`` for a single ``.html`` output).
        verdicts: per page, the device verdict (or ``"no-model"``) and the forgery verdict.
        n_unreadable: inputs that could not be read (they still have a page).
        n_failed: pages whose analysis failed unexpectedly (an error page was written).
    """

    pages: list[Path]
    index: Path | None
    verdicts: list[dict[str, Any]]
    n_unreadable: int = 0
    n_failed: int = 0


# ----------------------------------------------------------------------------- index


def _index_row(i: int, e: Mapping[str, Any], mask: bool) -> str:
    """One row of the index: file (or its hash), verdicts, prediction, claim, page link."""
    name = (f'<span class="mono">{esc(e["name"])}</span>' if not mask else
            f'<span class="mono">sha256 {esc((e["sha256"] or "-")[:16])}</span>')
    pred = "" if e.get("predicted") is None else (
        f"{esc(e['predicted'])} ({fmt_p(e.get('probability'))})")
    if e.get("reason"):
        pred = f'<span class="note">{esc(e["reason"])}</span>'
    elif e.get("error"):
        pred = f'<span class="note">{esc(e["error"])}</span>'
    fg_txt = badge(e["forgery_verdict"]) + (f" {fmt_num(e.get('forgery_score'))}"
                                            if e.get("forgery_score") is not None else "")
    return (
        f'<tr><td class="num">{i}</td><td>{name}</td><td>{badge(e["device_verdict"])}</td>'
        f"<td>{pred}</td><td>{esc(e.get('header_claim') or '')}</td><td>{fg_txt}</td>"
        f'<td><a href="{esc(e["page"])}">report</a></td></tr>'
    )


def _model_lines(s_prov: Mapping[str, Any] | None, f_prov: Mapping[str, Any] | None) -> str:
    """The index's list of the models used, with the first characters of their file hashes."""
    lines = []
    for what, prov in (("Source model", s_prov), ("Forgery model", f_prov)):
        if prov is None:
            lines.append(f"<li>{what}: none given</li>")
            continue
        files = ", ".join(f"{k} {v[:12]}" for k, v in (prov.get("files") or {}).items())
        lines.append(f"<li>{what}: <span class=\"mono\">{esc(prov.get('run') or '-')}"
                     f"</span> ({esc(files) or 'no files'})</li>")
    return "".join(lines)


def _index_html(
    entries: Sequence[dict[str, Any]],
    mask: bool,
    s_prov: Mapping[str, Any] | None,
    f_prov: Mapping[str, Any] | None,
    when: _dt.datetime,
) -> str:
    """The ``index.html`` page: verdict counts, one row per page, the models used."""
    counts = "; ".join(f"{k}: {n}" for k, n in
                       sorted(Counter(e["device_verdict"] for e in entries).items()))
    fg_line = "; ".join(f"{k}: {n}" for k, n in
                        sorted(Counter(e["forgery_verdict"] for e in entries).items()))
    rows = "".join(_index_row(i, e, mask) for i, e in enumerate(entries, 1))
    body = (
        '<header class="top"><h1>Forensic case reports</h1>'
        f'<p class="sub">{len(entries)} image(s). Device verdicts: {esc(counts)}. '
        f"Forgery: {esc(fg_line)}.</p></header>"
        + ('<div class="alert">These pages show patient identifiers.</div>' if not mask else "")
        + '<section><table class="list"><tr><th>#</th><th>File</th><th>Device verdict</th>'
        "<th>Pixels say</th><th>Header claims</th><th>Forgery</th><th></th></tr>"
        + rows + "</table>"
        + ('<p class="note">File paths are masked (they may contain identifiers); files are '
           "named by their SHA-256.</p>" if mask else "")
        + f"<ul>{_model_lines(s_prov, f_prov)}</ul></section>"
    )
    return page("Forensic case reports", body, when)


# ----------------------------------------------------------------------------- pages


def _entry(case: CaseAnalysis, page_name: str, path: str) -> dict[str, Any]:
    """The index entry of an analysed case: its verdicts and what they name."""
    dev, fg = case.device, case.forgery
    if case.read_error is not None:
        dv = "unreadable"
    elif dev.get("status") == "no-model":
        dv = "no-model"
    else:
        dv = dev.get("verdict") or dev.get("status")
    if fg.get("status") == "done":
        fv = str(fg.get("verdict") or "-")
    else:
        fv = {"no-model": "no-model", "failed": "failed"}.get(fg.get("status"), "unreadable")
    return {
        "page": page_name,
        "name": path,
        "sha256": case.file.get("sha256"),
        "device_verdict": dv,
        "predicted": dev.get("predicted") if dev.get("confident") else None,
        "probability": dev.get("probability") if dev.get("confident") else None,
        "header_claim": dev.get("header_claim"),
        "unit": dev.get("unit"),
        "forgery_verdict": fv,
        "forgery_score": fg.get("score"),
        "reason": (case.read_error or {}).get("reason"),
    }


def _error_page(path: str, exc: BaseException, mask: bool, when: _dt.datetime) -> str:
    """The page written when a file's analysis failed unexpectedly (path masked)."""
    shown = "File path masked" if mask else f'File <span class="mono">{esc(path)}</span>'
    msg = str(exc) if not mask else redact(str(exc), [path, os.path.abspath(path)], "[file]")
    body = (f'<header class="top"><h1>Forensic case report</h1><p class="sub">{shown}</p>'
            f'</header><div class="alert"><b>The report for this file failed</b> '
            f"({esc(type(exc).__name__)}): {esc(msg)}. This is a bug in medforensics; please "
            "report it.</div>")
    return page("Case report (failed)", body, when)


def _failed_entry(path: str, exc: BaseException) -> dict[str, Any]:
    """The index entry of a page whose analysis failed."""
    try:
        sha = file_sha256(path)
    except OSError:
        sha = None
    return {"page": "", "name": path, "sha256": sha, "device_verdict": "report-failed",
            "forgery_verdict": "report-failed", "error": f"{type(exc).__name__}: {exc}"}


def _prepare_out_dir(out: Path) -> None:
    """Create the output folder, or empty one that holds a previous report.

    Raises:
        ConfigError: ``out`` is a file, or a folder holding anything but a previous report.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.is_dir():
        others = [p for p in out.iterdir()
                  if not (p.name == "index.html" or (p.name.startswith("case-")
                                                      and p.suffix == ".html"))]
        if others:
            raise ConfigError(
                f"{out} is not empty and does not hold a previous report (found "
                f"{others[0].name}); choose a new or empty folder"
            )
        for p in out.iterdir():  # a previous report: replace it entirely
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _input_files(paths: Sequence[str | Path] | str | Path, out_path: Path) -> list[str]:
    """The image files under ``paths`` (folders walked recursively), checked against the
    output: one ``.html`` page takes exactly one file.

    Raises:
        ConfigError: no files found, or several files for one ``.html`` output.
    """
    roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = [str(p) for p in find_files(roots)]
    if not files:
        raise ConfigError("no files found under " + ", ".join(map(str, roots)))
    if _is_single(out_path) and len(files) != 1:
        raise ConfigError(f"--out {out_path.name} is one page but {len(files)} files were "
                          "given; give a folder as --out for several images")
    return files


def _is_single(out_path: Path) -> bool:
    """Whether the output is one ``.html`` page rather than a folder."""
    return out_path.suffix.lower() in (".html", ".htm")


def write_report(
    paths: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    source: Any = None,
    forgery: Any = None,
    mask_identifiers: bool = True,
    force: bool = False,
    max_side: int = DISPLAY_MAX_SIDE,
    device: str = "cpu",
    generated_at: _dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    allow_modified_run: bool = False,
) -> ReportOutput:
    """Write case reports for image files and folders (folders are walked recursively).

    ``out`` ending in ``.html``/``.htm``: exactly one image, one page. Otherwise ``out`` is
    a folder (created; a folder holding a previous report is replaced, any other non-empty
    folder is refused) receiving ``case-NNNN-<sha256 prefix>.html`` per image, in sorted
    path order, and ``index.html`` listing them with their verdicts. Models are loaded and
    hashed once.

    Args:
        paths: image files and/or folders.
        out: output ``.html`` file or folder.
        source, forgery, mask_identifiers, force, max_side, device, generated_at,
            allow_modified_run: as for :func:`medforensics.report.html.render_case_report`.
        progress: called with ``(done, total)`` after each page.

    Returns:
        A :class:`ReportOutput`.

    Raises:
        ConfigError: a path does not exist, no files found, several files for one ``.html``
            output, or an unusable output folder.
        ModelFileError: a model run cannot be loaded.
        OutputWriteError: a page or the index cannot be written (disk full, ...); pages
            already written are complete, the one that failed is not left behind.
    """
    out_path = Path(out)
    files = _input_files(paths, out_path)
    single = _is_single(out_path)
    when = generated_at or _dt.datetime.now(_dt.timezone.utc)
    predictor, s_prov = load_source(source, device, allow_modified_run)
    detector, f_prov = load_forgery(forgery, allow_modified_run)
    if not single:
        _prepare_out_dir(out_path)
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)

    result = ReportOutput(pages=[], index=None, verdicts=[])
    entries: list[dict[str, Any]] = []
    for i, path in enumerate(files, 1):
        case = None
        try:
            case = analyse_case(path, source=predictor, forgery=detector,
                                mask_identifiers=mask_identifiers, force=force,
                                max_side=max_side, device=device,
                                _source_prov=s_prov, _forgery_prov=f_prov)
            page_html = render_html(case, generated_at=when)
            entry = _entry(case, "", path)
            if case.read_error is not None:
                result.n_unreadable += 1
        except Exception as exc:
            log.exception("report failed for file %d of %d", i, len(files))
            result.n_failed += 1
            page_html = _error_page(path, exc, mask_identifiers, when)
            entry = _failed_entry(path, exc)
        target = out_path if single else \
            out_path / f"case-{i:04d}-{(entry.get('sha256') or 'nohash')[:12]}.html"
        # whole or absent (temporary file + rename); a name that is not UTF-8 is escaped
        atomic_write_text(target, page_html, errors="backslashreplace")
        entry["page"] = target.name
        entries.append(entry)
        result.pages.append(target)
        # the image's UIDs (never masked: they join the verdict with a PACS)
        ids = case.image_ids if case is not None else image_ids(path)
        result.verdicts.append({**ids, **{k: entry.get(k) for k in (
            "page", "device_verdict", "forgery_verdict", "reason", "error") if k in entry}})
        if progress is not None:
            progress(i, len(files))
    if not single:
        result.index = out_path / "index.html"
        atomic_write_text(result.index, _index_html(entries, mask_identifiers, s_prov, f_prov,
                                                    when), errors="backslashreplace")
    return result
