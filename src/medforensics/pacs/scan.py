"""``pacs scan``: search a PACS, stream each image, analyse it, write / store the results.

One instance at a time (memory stays flat over any archive size):

1. QIDO-RS search, paged (:meth:`PacsClient.search`).
2. Instances whose SOP Class is not an image (SR, SEG, presentation states, key object
   selections, RT, PDF, waveforms, ...) are skipped without being retrieved; so are the
   SR / SEG results that an earlier ``--store`` put into the PACS.
3. WADO-RS retrieve, then :func:`medforensics.io.read_image` on the data set (the pixel
   contract); a reader error skips the instance with the reader's reason.
4. The analyses handed in by the caller (``analyse_source(image) -> identify dict``,
   ``analyse_forgery(image) -> forgery dict`` with the map under ``prob_map``).
5. The SEG of the forgery map and one SR (:mod:`.seg`, :mod:`.sr`); written to ``out_dir``
   and / or stored back with STOW-RS.
6. One line appended to the state file.

Resumable: the state file (JSON lines, first line names the server and query) records
every finished instance; a re-run with the same server and query skips them. An instance
counts as finished when it was analysed (and stored, when storing is asked for) or skipped
for a lasting reason (not an image, unreadable pixels). Failures that may pass (the PACS
answered 5xx or 404, a store was refused) are recorded as ``failed`` and tried again next
time. An unreachable server or refused credentials stop the scan at once (every further
request would fail the same way); so do ``max_failures`` failures in a row.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medforensics.errors import ConfigError, MedForensicsError, ReadError
from medforensics.io import read_image
from medforensics.io.meta import Image
from medforensics.pacs.common import Producer, write_dataset
from medforensics.pacs.dicomweb import InstanceRef, PacsClient
from medforensics.pacs.errors import (
    DicomBuildError,
    PacsAuthError,
    PacsError,
    PacsUnreachableError,
    ScanStateError,
)
from medforensics.pacs.results import InstanceResult, dicom_results

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["STATE_FORMAT", "ScanItem", "ScanSummary", "is_image_sop_class", "scan"]

log = logging.getLogger(__name__)

STATE_FORMAT = "medforensics-pacs-scan/1"

#: SOP Class UID prefixes of objects that are not images to analyse (PS3.4 B.5)
_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports (incl. key object selection)
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # segmentation, registration, fiducials, surface seg
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA / STL
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.30",  # parametric map
    "1.2.840.10008.5.1.4.1.1.91.",  # microscopy bulk annotations
    "1.2.840.10008.5.1.4.1.1.90.",  # content assessment results
    "1.2.840.10008.5.1.4.1.1.200.",  # protocol storage
    "1.2.840.10008.5.1.4.1.1.201.",  # inventory
    "1.2.840.10008.5.1.4.34.",  # radiotherapy second generation, plans
    "1.2.840.10008.5.1.4.38.",  # hanging protocols
    "1.2.840.10008.5.1.4.39.",  # colour palettes
    "1.2.840.10008.5.1.4.43.",  # generic implant templates
    "1.2.840.10008.5.1.4.44.",
    "1.2.840.10008.5.1.4.45.",
)
_NON_IMAGE_EXACT = frozenset({
    "1.2.840.10008.5.1.4.1.1.66",  # raw data
})

Analyser = Callable[[Image], dict[str, Any]]


def is_image_sop_class(sop_class: str) -> bool:
    """False for SOP Classes that hold no image to analyse (SR, SEG, presentation state,
    RT, encapsulated documents, waveforms, ...); True otherwise, including unknown and
    empty ones (the reader then decides)."""
    uid = sop_class.strip()
    return not (uid in _NON_IMAGE_EXACT or any(uid.startswith(p) for p in _NON_IMAGE_PREFIXES))


@dataclass
class ScanItem(InstanceResult):
    """What happened to one instance of a scan
    (:class:`medforensics.pacs.results.InstanceResult`; ``failed`` may pass and is tried again
    next run), plus whether its results were stored in the PACS."""

    stored: bool = False


@dataclass
class ScanSummary:
    """Counts of one scan: instances found, analysed, skipped, failed, finished before
    (``resumed``) and whose results were stored."""

    found: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    resumed: int = 0
    stored: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One line for people."""
        rate = self.found / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.found} instance(s): {self.done} analysed, {self.skipped} skipped, "
                f"{self.failed} failed, {self.resumed} finished earlier; {self.stored} "
                f"result set(s) stored; {self.seconds:.1f} s ({rate:.1f} instances/s)")


class _State:
    """The JSON-lines state file: a header, then one record per instance handled."""

    def __init__(self, path: Path | None, header: dict[str, Any], *, store: bool) -> None:
        self.path = path
        self.store = store
        self.finished: set[str] = set()
        self._fh: Any = None
        if path is None:
            return
        if path.exists():
            self._load(path, header)
        else:
            self._create(path, header)
        try:
            self._fh = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ScanStateError(f"{path}: cannot append ({exc.strerror or exc})") from None

    def _create(self, path: Path, header: dict[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(header) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ScanStateError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def _load(self, path: Path, header: dict[str, Any]) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ScanStateError(f"{path}: cannot read ({exc})") from None
        if not lines:
            raise ScanStateError(f"{path}: empty state file (remove it to start afresh)")
        try:
            head = json.loads(lines[0])
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("format") != STATE_FORMAT:
            raise ScanStateError(f"{path}: not a pacs scan state file ({STATE_FORMAT})")
        for key in ("url", "query"):
            if head.get(key) != header.get(key):
                raise ScanStateError(
                    f"{path}: written for another {key} ({head.get(key)!r}, now "
                    f"{header.get(key)!r}); use another --state file or remove this one")
        for i, line in enumerate(lines[1:], 2):
            try:
                rec = json.loads(line)
            except ValueError:
                if i == len(lines):  # the last line of an interrupted run: ignored
                    log.warning("%s: ignoring the incomplete last line", path)
                    continue
                raise ScanStateError(f"{path}: line {i} is not JSON") from None
            if self._finishes(rec):
                self.finished.add(str(rec.get("sop")))

    def _finishes(self, rec: Mapping[str, Any]) -> bool:
        status = rec.get("status")
        return status == "skipped" or (status == "done" and (rec.get("stored") or
                                                             not self.store))

    def record(self, item: ScanItem) -> None:
        if self._finishes({"status": item.status, "stored": item.stored}):
            self.finished.add(item.sop)
        if self._fh is None:
            return
        rec = {"sop": item.sop, "study": item.study, "series": item.series,
               "status": item.status, "reason": item.reason, "sr": item.sr, "seg": item.seg,
               "stored": item.stored, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self._fh.write(json.dumps(rec) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise ScanStateError(f"{self.path}: cannot append ({exc.strerror or exc})") \
                from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _results(image: Image, analyse_source: Analyser | None,
             analyse_forgery: Analyser | None) -> tuple[dict | None, dict | None, Any]:
    """Run the analyses; returns (identify, forgery without map, map)."""
    ident = analyse_source(image) if analyse_source is not None else None
    forg, prob = None, None
    if analyse_forgery is not None:
        forg = dict(analyse_forgery(image))
        prob = forg.pop("prob_map", None)
    return ident, forg, prob


@dataclass
class _Steps:
    """What :func:`scan` does with each instance: the analyses and where the results go."""

    analyse_source: Analyser | None
    analyse_forgery: Analyser | None
    producer: Producer
    store: bool
    out: Path | None
    seg_kind: str | None
    max_failures: int


class _ScanRun:
    """One scan's instances handled one at a time: each ends as one :class:`ScanItem`,
    counted in the summary, recorded in the state file and handed to ``on_item``."""

    def __init__(self, client: PacsClient, steps: _Steps, state: _State,
                 on_item: Callable[[ScanItem], None] | None) -> None:
        self.client = client
        self.steps = steps
        self.state = state
        self.on_item = on_item
        self.summary = ScanSummary()
        self.in_a_row = 0  # failures in a row

    def emit(self, item: ScanItem) -> None:
        """Count ``item``, record it (unless finished earlier) and pass it on."""
        attr = item.status  # one of the summary's counters
        setattr(self.summary, attr, getattr(self.summary, attr) + 1)
        if item.stored:
            self.summary.stored += 1
        if item.status != "resumed":
            self.state.record(item)
        if self.on_item is not None:
            self.on_item(item)

    def _failed(self, item: ScanItem, reason: str, exc: PacsError) -> None:
        """A failure that may pass: recorded; raised once ``max_failures`` came in a row."""
        item.status, item.reason, item.message = "failed", reason, str(exc)
        self.in_a_row += 1
        self.emit(item)
        if self.in_a_row >= self.steps.max_failures:
            raise exc

    def _skipped(self, item: ScanItem, reason: str, message: str) -> None:
        item.status, item.reason, item.message = "skipped", reason, message
        self.emit(item)

    def instance(self, ref: InstanceRef) -> None:
        """Retrieve, analyse, write and store the results of one instance."""
        item = ScanItem(ref.study, ref.series, ref.sop, status="done")
        if ref.sop in self.state.finished:
            item.status = "resumed"
            self.emit(item)
            return
        if not is_image_sop_class(ref.sop_class) or ref.has_pixels is False:
            self._skipped(item, "not-an-image-class",
                          f"SOP Class {ref.sop_class or '?'} holds no image to analyse")
            return
        try:
            ds = self.client.retrieve(ref)
        except (PacsUnreachableError, PacsAuthError):
            raise
        except PacsError as exc:
            self._failed(item, "retrieve-failed", exc)
            return
        built = self._results(ds, item)
        if built is None:
            return
        seg, sr = built
        self._write(ref, item, seg, sr)
        objs = [obj for obj in (seg, sr) if obj is not None]
        if self.steps.store and not self._store(item, objs):
            return
        self.in_a_row = 0
        self.emit(item)

    def _results(self, ds: Dataset, item: ScanItem) -> tuple[Dataset | None, Dataset] | None:
        """The analyses of ``ds`` as a SEG (None without a forgery map) and an SR; None when
        the instance was skipped."""
        steps = self.steps
        try:
            image = read_image(ds)
            ident, forg, prob = _results(image, steps.analyse_source, steps.analyse_forgery)
        except ReadError as exc:
            self._skipped(item, exc.reason, str(exc))
            return None
        except MedForensicsError as exc:
            self._skipped(item, "invalid-image", str(exc))
            return None
        item.identify, item.forgery = ident, forg
        try:
            objects = dicom_results(ds, identify=ident, forgery=forg, prob_map=prob,
                                    seg_kind=steps.seg_kind, producer=steps.producer)
            seg, sr = objects.get("seg"), objects["sr"]
        except DicomBuildError as exc:
            self._skipped(item, "result-failed", str(exc))
            return None
        item.sr = str(sr.SOPInstanceUID)
        item.seg = None if seg is None else str(seg.SOPInstanceUID)
        return seg, sr

    def _write(self, ref: InstanceRef, item: ScanItem, seg: Dataset | None,
               sr: Dataset) -> None:
        """The SEG and SR written under ``out`` (a write error stops the scan)."""
        out = self.steps.out
        if out is None:
            return
        for obj, suffix in ((seg, "seg"), (sr, "sr")):
            if obj is not None:
                path = out / f"{ref.sop}_{suffix}.dcm"
                try:
                    write_dataset(obj, path)
                except OSError as exc:
                    raise ConfigError(f"{path}: cannot write "
                                      f"({exc.strerror or exc})") from None
                item.files.append(str(path))

    def _store(self, item: ScanItem, objs: list[Dataset]) -> bool:
        """Store the results in the PACS; False (the item emitted as failed) when not."""
        try:
            res = self.client.store(objs)
        except (PacsUnreachableError, PacsAuthError):
            raise
        except PacsError as exc:
            self._failed(item, "store-failed", exc)
            return False
        if res.failed:
            item.status, item.reason = "failed", "store-failed"
            item.message = ("the PACS refused "
                            + ", ".join(f"{u} (reason {r})" for u, r in res.failed))
            self.in_a_row += 1  # counted, but a refusal never stops the scan by itself
            self.emit(item)
            return False
        item.stored = True
        return True


def scan(
    client: PacsClient,
    *,
    study: str | None = None,
    series: str | None = None,
    filters: Mapping[str, str] | None = None,
    analyse_source: Analyser | None = None,
    analyse_forgery: Analyser | None = None,
    producer: Producer | None = None,
    store: bool = False,
    out_dir: str | Path | None = None,
    seg_kind: str | None = "fractional",
    state: str | Path | None = None,
    limit: int | None = None,
    max_failures: int = 5,
    on_item: Callable[[ScanItem], None] | None = None,
) -> ScanSummary:
    """Search, retrieve, analyse and write / store results, one instance at a time.

    Args:
        client: the PACS.
        study, series, filters: the QIDO query (see :meth:`PacsClient.search`).
        analyse_source: ``image -> identify result`` (``Verdict.to_dict()`` merged with its
            extra, plus an optional ``model`` entry); None = no source identification.
        analyse_forgery: ``image -> forgery result`` (``ForgeryResult.to_dict()`` plus the
            map under ``prob_map`` and an optional ``model`` entry); None = no forgery
            detection.
        producer: the software named in the objects.
        store: store the SR (and SEG) back into the PACS (STOW-RS).
        out_dir: also write them here as ``<SOPInstanceUID>_sr.dcm`` / ``_seg.dcm`` of the
            analysed instance.
        seg_kind: ``"fractional"``, ``"binary"`` or None (no SEG).
        state: the resumable state file (None: no resuming).
        limit: stop after this many instances analysed in this run.
        max_failures: stop after this many failures in a row (the last one is raised).
        on_item: called with every :class:`ScanItem` (progress, JSON lines).

    Returns:
        the :class:`ScanSummary`.

    Raises:
        ConfigError: no analysis given.
        PacsUnreachableError, PacsAuthError: at once; PacsError after ``max_failures``
            failures in a row.
        ScanStateError: the state file is unusable or belongs to another server / query.
    """
    if analyse_source is None and analyse_forgery is None:
        raise ConfigError("nothing to analyse: give a source model, a forgery detector or "
                          "both")
    query = {"study": study, "series": series, "filters": dict(sorted((filters or {}).items()))}
    st = _State(None if state is None else Path(state),
                {"format": STATE_FORMAT, "url": client.url, "query": query}, store=store)
    steps = _Steps(analyse_source, analyse_forgery, producer or Producer(), store,
                   None if out_dir is None else Path(out_dir), seg_kind, max_failures)
    run = _ScanRun(client, steps, st, on_item)
    t0 = time.perf_counter()
    try:
        refs: Iterator[InstanceRef] = client.search(study=study, series=series,
                                                    filters=filters)
        for ref in refs:
            if limit is not None and run.summary.done >= limit:
                break
            run.summary.found += 1
            run.instance(ref)
    finally:
        st.close()
        run.summary.seconds = time.perf_counter() - t0
    return run.summary
