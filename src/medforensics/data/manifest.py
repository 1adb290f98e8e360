"""Ingest: scan an archive into a manifest (one row per file, nothing silently dropped).

:func:`ingest` walks the given roots recursively, takes *every* regular file (any name, with
or without ``.dcm``), and reads headers only (``medforensics.io.read_header``) in parallel
worker processes, hashing each file (sha256 of its bytes) in the worker. Each file becomes one
row with the columns of :data:`COLUMNS` (see docs/design.md) and a ``status``: ``eligible`` or
the reason it was excluded, with a human-readable ``reason_detail``.

Statuses, in the order they are decided (the first that applies wins):

1. Per file (in the worker, independent of options), from the header alone via the reader's
   own checks (:func:`medforensics.io.dicom_pixels.check_header`):

   * ``unreadable``: the reader refused the file; ``reason_detail`` starts with the
     :class:`~medforensics.errors.ReadError` reason (``not-an-image-file``, ``no-file-meta``,
     ``corrupt-header``, ``file-access``, ``truncated-pixel-data`` (native Pixel Data shorter
     than Rows x Columns x Samples x Frames x BitsAllocated), ``no-decoder``, ``too-large``,
     ...).
   * ``not-an-image``: a known non-image SOP class (structured report, presentation state,
     encapsulated document, ...) or no Rows/Columns/Pixel Data at all.
   * ``no-pixel-data``: an image header (Rows/Columns) without a Pixel Data element (found
     by looking at the bytes where ``stop_before_pixels`` stopped: nothing is decoded).
   * ``unsupported-photometric``: colour images (RGB, YBR_*, PALETTE COLOR, or more than one
     sample per pixel).
   * with ``verify=True`` only, the first frame is decoded with ``medforensics.io.read_image``
     and its errors (``decode-failed``, ``truncated-pixel-data`` inside an encapsulated
     stream, ...) become ``unreadable`` too. This is slow (it decodes every image); the
     default reads headers only, so a corrupt compressed stream stays ``eligible`` until a
     reader meets it.

2. Over the archive (rows sorted by path, so the outcome is deterministic):

   * ``duplicate``: same sha256 (byte-identical) or same SOPInstanceUID as an earlier row
     that passed step 1; ``reason_detail`` names the earlier path. Files that share a
     SOPInstanceUID but not their bytes are decoded first, so a damaged copy is
     ``unreadable`` and never makes a readable file its duplicate.
   * ``too-small``: min(Rows, Columns) < ``min_size``.
   * ``qc-phantom``: ImageType or SeriesDescription contains QC, QA, PHANTOM, CALIB...,
     TEST, FLAT FIELD, UNIFORMITY or CONSTANCY as a word (Deep-RSI removed QC images).
   * ``missing-label``: the chosen ``label`` column (manufacturer, model or unit) is blank
     (see :mod:`medforensics.data.labels` for when a label is blank).

3. Paper filters, on the rows still eligible (only when asked for):

   * ``filtered-modality``: Modality not in ``modalities``.
   * ``filtered-view``: ViewPosition not in ``views`` (DeepMammo kept CC and MLO).
   * ``filtered-min-images`` / ``filtered-min-patients``: the row's class has fewer eligible
     images / distinct patients than required (DeepMammo dropped machines with < 200
     patients). Patients are counted as connected groups of PatientID/StudyInstanceUID/sha256
     (:func:`medforensics.data.splits.group_ids`), the same grouping the splits use.

Model and unit labels that differ only by letter case are merged to the most frequent
spelling (:func:`medforensics.data.labels.unify_case_variants`).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import (
    Executor,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medforensics.common.atomic import atomic_output
from medforensics.common.progress import ProgressReport, library_mode
from medforensics.common.workers import with_parent_watch
from medforensics.data.files import SIDE_FILE_SUFFIXES, walk_roots
from medforensics.data.labels import unify_case_variants
from medforensics.data.scan import (
    BOOL_COLUMNS,
    COLUMNS,
    ELIGIBLE,
    INT_COLUMNS,
    LABEL_COLUMNS,
    PYDICOM_FILTER,
    default_workers,
    empty_row,
    init_worker,
    scan_chunk,
    scan_file,
    verify_pixels,
)
from medforensics.data.splits import group_ids
from medforensics.errors import ConfigError, ManifestError

__all__ = [
    "IngestFilters",
    "IngestSummary",
    "ingest",
    "summarize",
    "write_manifest",
    "read_manifest",
]

logger = logging.getLogger(__name__)


_REQUIRED_ON_READ = ("path", "status")


@dataclass(frozen=True)
class IngestFilters:
    """Optional paper filters; the defaults filter nothing.

    Attributes:
        min_images_per_class: drop classes with fewer eligible images.
        min_patients_per_class: drop classes with fewer distinct patients (DeepMammo: 200).
        modalities: keep only these Modality values (e.g. ``("DX", "CR", "MG")``).
        views: keep only these ViewPosition values (DeepMammo: ``("CC", "MLO")``).
        min_size: minimum of Rows and Columns (smaller images are ``too-small``).
    """

    min_images_per_class: int = 0
    min_patients_per_class: int = 0
    modalities: tuple[str, ...] | None = None
    views: tuple[str, ...] | None = None
    min_size: int = 64


@dataclass
class IngestSummary:
    """What an ingest produced.

    Attributes:
        n_files: rows in the manifest (one per file found).
        label: the class label column.
        per_status: rows per status (``eligible`` included), most frequent first.
        per_label: eligible rows per class label, sorted by label.
        patients_per_label: distinct patient groups per class label among eligible rows.
    """

    n_files: int
    label: str
    per_status: dict[str, int] = field(default_factory=dict)
    per_label: dict[str, int] = field(default_factory=dict)
    patients_per_label: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- finding files



# ----------------------------------------------------------------------------- worker



# ----------------------------------------------------------------------------- ingest


def ingest(
    roots: Sequence[Path | str],
    *,
    label: str = "model",
    filters: IngestFilters | None = None,
    workers: int | None = None,
    backend: str = "process",
    chunk_size: int | None = None,
    verify: bool = False,
    force: bool = False,
    progress: bool = True,
    follow_links_outside: bool = False,
) -> list[dict[str, Any]]:
    """Scan ``roots`` into manifest rows (one per file found, sorted by path).

    Entries that are not read get a row too (:func:`walk_roots`): an unreadable folder or a
    dangling link (``unreadable``), a FIFO, socket, device or link to a folder
    (``not-a-regular-file``), a link leading outside the roots (``link-outside-roots``).

    Args:
        roots: directories (walked recursively) and/or files.
        label: class label column for ``missing-label`` and the per-class filters:
            ``"manufacturer"``, ``"model"`` or ``"unit"``.
        filters: paper filters and the minimum size (:class:`IngestFilters`).
        workers: parallel workers (default :func:`default_workers`: usable CPUs, at most 8);
            0 or 1 reads in this process.
        backend: ``"process"`` (default) or ``"thread"``. Most of a file's CPU time is
            header parsing in pure Python under the GIL, so threads barely scale while
            processes scale with cores (docs/performance.md).
        chunk_size: files per task (default: chosen from the file count).
        verify: also decode the first frame of every image (slow; catches corrupt streams).
        force: read DICOM files without file meta (ACR-NEMA) instead of refusing them.
        progress: report progress: a bar on stderr when it is a terminal, a log line every
            hundred files otherwise.
        follow_links_outside: read files that links lead to outside the roots (by default
            they are reported as ``link-outside-roots`` and never opened).

    Returns:
        Rows (dicts with the :data:`COLUMNS` keys; ints for Rows/Columns/BitsStored/
        NumberOfFrames, bool for lossy, None when absent).

    Raises:
        ConfigError: unknown label, backend, or a root that does not exist.
    """
    if label not in LABEL_COLUMNS:
        raise ConfigError(f"label must be one of {', '.join(LABEL_COLUMNS)}, got {label!r}")
    if backend not in ("process", "thread"):
        raise ConfigError(f"backend must be 'process' or 'thread', got {backend!r}")
    filters = filters or IngestFilters()
    walk = walk_roots(roots, follow_links_outside=follow_links_outside)
    paths = walk.files
    logger.info("found %d files under %s (%d other entries not read)", len(paths),
                ", ".join(map(str, roots)), len(walk.skipped))
    rows = _scan_all(paths, workers, backend, chunk_size, verify, force, progress)
    for row in rows:
        _mark_side_file(row)
    for path, status, detail in walk.skipped:
        row = empty_row(path)
        row["status"], row["reason_detail"], row["_qc"] = status, detail, ""
        rows.append(row)
    rows.sort(key=lambda r: r["path"])
    _settle_sop_conflicts(rows, force)
    _archive_statuses(rows, label, filters)
    for row in rows:
        row.pop("_qc", None)
    return rows


def _scan_all(
    paths: list[str],
    workers: int | None,
    backend: str,
    chunk_size: int | None,
    verify: bool,
    force: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    n_workers = default_workers() if workers is None else max(0, workers)
    rows: list[dict[str, Any]] = []
    pydicom_logger = logging.getLogger("pydicom")
    pydicom_logger.addFilter(PYDICOM_FILTER)
    bar = None
    try:
        if n_workers <= 1 or len(paths) < 2:
            bar = _ingest_progress(len(paths), progress)
            for p in paths:
                rows.append(scan_file(p, verify=verify, force=force))
                bar.advance()
            return rows
        size = chunk_size or max(1, min(64, len(paths) // (n_workers * 8) or 1))
        chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
        pool_cls: type[Executor] = (
            ProcessPoolExecutor if backend == "process" else ThreadPoolExecutor
        )
        pool_kw: dict[str, Any] = {}
        if backend == "process":  # workers exit with this process, also on kill -9

            pool_kw = with_parent_watch(init_worker)
        with pool_cls(max_workers=n_workers, **pool_kw) as pool:
            futures = {pool.submit(scan_chunk, c, verify, force): c for c in chunks}
            # the bar (and its drawing thread) only after the workers were forked
            bar = _ingest_progress(len(paths), progress)
            for fut in as_completed(futures):
                chunk = futures[fut]
                try:
                    rows.extend(fut.result())
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by the OS
                    logger.warning(
                        "worker failed on %d files (%r); retrying them here", len(chunk), exc
                    )
                    rows.extend(scan_chunk(chunk, verify, force))
                bar.advance(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        pydicom_logger.removeFilter(PYDICOM_FILTER)
    return rows


def _ingest_progress(total: int, progress: bool) -> ProgressReport:
    """The ingest's progress report (a log line every :data:`PROGRESS_EVERY` files when
    stderr is redirected)."""
    return ProgressReport("ingest", total, library_mode(progress), emit=logger.info)


def _mark_side_file(row: dict[str, Any]) -> None:
    """A ``.json``, ``.csv``, ``.txt``, ... that is not an image (the simulator's
    ``devices.json``, notes beside the images) is a ``side-file``, not an unreadable image."""
    suffix = Path(row["path"]).suffix.lower()
    if (suffix in SIDE_FILE_SUFFIXES and row["status"] == "unreadable"
            and str(row["reason_detail"]).startswith("not-an-image-file")):
        row["status"] = "side-file"
        row["reason_detail"] = (f"not an image: a {suffix} file (archive or run metadata, "
                                f"notes); {row['reason_detail']}")


def _settle_sop_conflicts(rows: list[dict[str, Any]], force: bool) -> None:
    """Files that share a SOPInstanceUID but not their bytes: decode each, so that a file
    whose pixels do not decode is marked unreadable instead of making a readable one its
    "duplicate". Only these few files are decoded (ingest reads headers otherwise)."""
    by_sop: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r["status"] and r["SOPInstanceUID"]:
            by_sop.setdefault(r["SOPInstanceUID"], []).append(r)
    for group in by_sop.values():
        if len({r["sha256"] for r in group}) < 2:
            continue
        for r in group:
            bad = verify_pixels(r["path"], force)
            if bad is not None:
                r["status"], r["reason_detail"] = bad


def _archive_statuses(rows: list[dict[str, Any]], label: str, filters: IngestFilters) -> None:
    """Steps 2 and 3: duplicates, size, QC, labels, paper filters (rows sorted by path)."""
    for column in ("model", "unit"):
        mapping = unify_case_variants(r[column] for r in rows)
        for r in rows:
            if r[column]:
                r[column] = mapping[r[column]]
    by_hash: dict[str, str] = {}
    by_sop: dict[str, str] = {}
    for r in rows:
        if r["status"]:
            continue
        first_hash = by_hash.setdefault(r["sha256"], r["path"]) if r["sha256"] else r["path"]
        sop = r["SOPInstanceUID"]
        first_sop = by_sop.setdefault(sop, r["path"]) if sop else r["path"]
        if first_hash != r["path"]:
            r["status"], r["reason_detail"] = "duplicate", f"same sha256 as {first_hash}"
        elif first_sop != r["path"]:
            r["status"] = "duplicate"
            r["reason_detail"] = f"same SOPInstanceUID as {first_sop}"
        elif min(r["Rows"], r["Columns"]) < filters.min_size:
            r["status"] = "too-small"
            r["reason_detail"] = (
                f"{r['Rows']}x{r['Columns']} is smaller than min size {filters.min_size}"
            )
        elif r["_qc"]:
            r["status"] = "qc-phantom"
            r["reason_detail"] = f"ImageType/SeriesDescription contains {r['_qc']!r}"
        elif not r[label]:
            r["status"] = "missing-label"
            r["reason_detail"] = _missing_label_detail(r, label)
    for wanted, column, status in ((filters.modalities, "Modality", "filtered-modality"),
                                   (filters.views, "ViewPosition", "filtered-view")):
        if wanted is None:
            continue
        keep = {v.strip().upper() for v in wanted}
        for r in rows:
            if not r["status"] and r[column].upper() not in keep:
                r["status"] = status
                r["reason_detail"] = f"{column} {r[column]!r} not in {','.join(sorted(keep))}"
    if filters.min_images_per_class or filters.min_patients_per_class:
        _class_size_filters(rows, label, filters)
    for r in rows:
        if not r["status"]:
            r["status"] = ELIGIBLE


def _missing_label_detail(row: dict[str, Any], label: str) -> str:
    if not row["manufacturer"]:
        return "no Manufacturer in the header"
    if label == "model":
        return "no ManufacturerModelName in the header"
    return "no DeviceSerialNumber or StationName in the header"


def _class_size_filters(rows: list[dict[str, Any]], label: str, filters: IngestFilters) -> None:
    remaining = [r for r in rows if not r["status"]]
    images = Counter(r[label] for r in remaining)
    patients = _patients_per_class(remaining, label)
    for r in remaining:
        cls = r[label]
        if images[cls] < filters.min_images_per_class:
            r["status"] = "filtered-min-images"
            r["reason_detail"] = (
                f"class {cls!r} has {images[cls]} images < {filters.min_images_per_class}"
            )
        elif patients[cls] < filters.min_patients_per_class:
            r["status"] = "filtered-min-patients"
            r["reason_detail"] = (
                f"class {cls!r} has {patients[cls]} patients < {filters.min_patients_per_class}"
            )


def _patients_per_class(rows: Sequence[dict[str, Any]], label: str) -> Counter:
    gids = group_ids(rows)
    per_class: dict[str, set[int]] = {}
    for gid, r in zip(gids, rows):
        per_class.setdefault(r[label], set()).add(gid)
    return Counter({cls: len(g) for cls, g in per_class.items()})


def summarize(rows: Sequence[dict[str, Any]], label: str = "model") -> IngestSummary:
    """Counts per status and per class label (eligible rows) of a manifest.

    Args:
        rows: manifest rows.
        label: class label column.

    Returns:
        An :class:`IngestSummary`.
    """
    statuses = Counter(str(r.get("status", "")) for r in rows)
    eligible = [r for r in rows if r.get("status") == ELIGIBLE]
    per_label = Counter(str(r.get(label, "")) for r in eligible)
    return IngestSummary(
        n_files=len(rows),
        label=label,
        per_status=dict(statuses.most_common()),
        per_label=dict(sorted(per_label.items())),
        patients_per_label=dict(sorted(_patients_per_class(eligible, label).items())),
    )


# ----------------------------------------------------------------------------- CSV


def _to_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def write_manifest(rows: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Write rows as CSV (UTF-8): :data:`COLUMNS`, then ``split`` and any other columns.

    The file is written whole or not at all (:func:`medforensics.common.atomic.atomic_output`:
    a temporary file next to ``path``, then a rename). File names that are not valid UTF-8
    (Linux file names are bytes) are written as their original bytes (Python's
    ``surrogateescape``), so :func:`read_manifest` gives back the same path and the file can
    still be opened; such names are counted in a warning, since the CSV is then not pure
    UTF-8. Any other text that cannot be encoded is written with backslash escapes.

    Args:
        rows: manifest rows.
        path: output CSV path.

    Returns:
        The path written.

    Raises:
        OutputWriteError: the manifest cannot be written (disk full, no permission, ...);
            nothing is left under ``path`` (an earlier manifest there is kept).
    """
    path = Path(path)
    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in COLUMNS and key not in extra and not key.startswith("_"):
                extra.append(key)
    extra.sort(key=lambda k: (k != "split", k))
    fieldnames = list(COLUMNS) + extra
    n_raw = 0
    with atomic_output(path, "w", encoding="utf-8", errors="surrogateescape",
                       newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {k: _to_cell(row.get(k)) for k in fieldnames}
            for k, v in cells.items():
                if v.isascii():
                    continue
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    if k == "path" and _encodable(v):
                        n_raw += 1
                    else:
                        cells[k] = v.encode("utf-8", "backslashreplace").decode("ascii")
            writer.writerow(cells)
    if n_raw:
        logger.warning(
            "%s: %d file name(s) are not valid UTF-8; they are written as their original "
            "bytes (read_manifest gives them back unchanged, other CSV readers may show "
            "replacement characters)", path, n_raw)
    return path


def _from_cell(column: str, text: str) -> Any:
    if column in INT_COLUMNS:
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            return None
    if column in BOOL_COLUMNS:
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        return None
    return text


def read_manifest(path: Path | str) -> list[dict[str, Any]]:
    """Read a manifest CSV written by :func:`write_manifest`.

    Text columns are str ("" when blank); Rows/Columns/BitsStored/NumberOfFrames are int or
    None; lossy is bool or None. Unknown columns are kept as text.

    Args:
        path: CSV path.

    Returns:
        The rows.

    Raises:
        ManifestError: the file is missing, empty, or lacks the ``path``/``status`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ManifestError(f"{path}: empty manifest (no header line)")
        missing = [c for c in _REQUIRED_ON_READ if c not in reader.fieldnames]
        if missing:
            raise ManifestError(
                f"{path}: not a medforensics manifest, missing column(s) {', '.join(missing)}"
            )
        return [
            {k: _from_cell(k, v if v is not None else "") for k, v in row.items() if k is not None}
            for row in reader
        ]
