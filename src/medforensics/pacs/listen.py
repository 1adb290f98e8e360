"""``pacs listen``: a DICOM node that analyses every image sent to it and passes the results on.

The node (pynetdicom) accepts C-STORE of the storage SOP Classes. For each instance:

1. A SOP Class that holds no image (SR, SEG, presentation state, ...; see
   :func:`medforensics.pacs.scan.is_image_sop_class`) is refused with status ``0x0122``
   (SOP Class not supported) and a log line, so the results of this node are never analysed.
2. The data set goes onto a bounded queue. When the queue is full the C-STORE answers
   ``0xA700`` (refused: out of resources) and the sender retries later: memory stays bounded
   by the queue size plus one image per open association, however fast images arrive.
3. One worker thread takes the images in order, reads each with
   :func:`medforensics.io.read_image` (the pixel contract and its checks), runs the analyses
   handed in by the caller, builds the SEG of the forgery map and the Comprehensive SR
   (:mod:`.seg`, :mod:`.sr`), writes them to ``out_dir`` and / or sends them by C-STORE to
   a forward node.

A success status of the C-STORE means the node took the image into its queue; what the
analysis made of it is in the log, the :class:`ListenItem` records and the objects written.
The node binds to the loopback interface unless told otherwise.
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from medforensics.errors import ConfigError, MedForensicsError, ReadError
from medforensics.io import read_image
from medforensics.io.meta import Image
from medforensics.pacs.common import Producer, require, write_dataset
from medforensics.pacs.errors import DicomBuildError, ForwardError, ListenError
from medforensics.pacs.results import InstanceResult, dicom_results
from medforensics.pacs.scan import is_image_sop_class

__all__ = [
    "STATUS_BUSY",
    "STATUS_NOT_AN_IMAGE",
    "ForwardTarget",
    "ListenItem",
    "ListenSummary",
    "Listener",
    "forward",
    "serve_until_signalled",
]

log = logging.getLogger(__name__)

#: C-STORE status when the analysis queue is full (PS3.4 B.2.3: Refused: Out of Resources)
STATUS_BUSY = 0xA700
#: C-STORE status for a SOP Class that holds no image (PS3.7 C.4: Refused: SOP Class not
#: supported)
STATUS_NOT_AN_IMAGE = 0x0122
#: C-STORE status while the node shuts down (out of resources: the sender may retry)
STATUS_CLOSING = 0xA701

Analyser = Callable[[Image], dict[str, Any]]


def _decodable(ts: str) -> bool:
    """Whether the reader can decode pixel data in transfer syntax ``ts`` here."""
    from pydicom.pixels import get_decoder

    uid = UID(ts)
    if not uid.is_compressed:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:  # no decoder for this syntax in pydicom at all
        return False


@functools.lru_cache(maxsize=1)
def _supported_contexts() -> tuple[Any, ...]:
    """The presentation contexts the node accepts (built once: building them is slow).

    Image storage SOP Classes in every transfer syntax whose pixels the reader can decode
    here, so a sender converts anything else to one of them. Every other storage SOP Class
    in the uncompressed syntaxes only: a study with non-images in it is not refused whole,
    its non-images are refused one by one in the C-STORE answer. Verification (C-ECHO),
    to test the node.
    """
    pn = require("pynetdicom")
    decodable = [ts for ts in pn.ALL_TRANSFER_SYNTAXES if _decodable(ts)]
    plain = [ts for ts in decodable if not UID(ts).is_compressed]
    out = [pn.build_context(cx.abstract_syntax,
                            decodable if is_image_sop_class(cx.abstract_syntax) else plain)
           for cx in pn.AllStoragePresentationContexts]
    out.append(pn.build_context(pn.sop_class.Verification))
    return tuple(out)


@dataclass(frozen=True)
class ForwardTarget:
    """A DICOM node to send the results to.

    Attributes:
        host: its host name or address.
        port: its DICOM port.
        ae_title: its AE title (the called AE title of the association).
    """

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> ForwardTarget:
        """``HOST:PORT:AET`` (an IPv6 address in brackets: ``[::1]:104:PACS``).

        Raises:
            ConfigError: not of that form, a port outside 1..65535 or an AE title longer
                than 16 characters.
        """
        head, sep, aet = text.strip().rpartition(":")
        host, sep2, port_s = head.rpartition(":")
        host = host.strip("[]")
        if not (sep and sep2 and host and aet.strip()):
            raise ConfigError(f"--forward-to {text!r}: expected HOST:PORT:AET, e.g. "
                              "127.0.0.1:4242:ORTHANC")
        try:
            port = int(port_s)
        except ValueError:
            raise ConfigError(f"--forward-to {text!r}: port {port_s!r} is not a number") \
                from None
        if not 0 < port < 65536:
            raise ConfigError(f"--forward-to {text!r}: port {port} is outside 1..65535")
        _check_ae_title(aet.strip(), "--forward-to")
        return cls(host, port, aet.strip())

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def _check_ae_title(aet: str, what: str) -> None:
    """AE titles are 1 to 16 characters of the default repertoire without backslash."""
    if not aet or len(aet) > 16 or "\\" in aet or not aet.isprintable() or not aet.isascii():
        raise ConfigError(f"{what}: AE title {aet!r} must be 1 to 16 printable ASCII "
                          "characters without a backslash")


@dataclass
class ListenItem(InstanceResult):
    """What happened to one received image (:class:`medforensics.pacs.results.InstanceResult`;
    ``failed`` here means writing or forwarding the results failed, or the analysis raised),
    plus what only the node knows.

    Attributes:
        calling_ae: the AE title of the node that sent it.
        forwarded: whether the forward node accepted every result object.
        seconds: time from taking the image off the queue to its results.
    """

    calling_ae: str = ""
    forwarded: bool = False
    seconds: float = 0.0


@dataclass
class ListenSummary:
    """Counts since the node started: images received into the queue, C-STOREs refused
    (not an image), answered busy (queue full or shutting down), analysed, skipped, failed,
    forwarded, and dropped unanalysed at an impatient shutdown."""

    received: int = 0
    refused: int = 0
    busy: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    forwarded: int = 0
    dropped: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One line for people."""
        return (f"{self.received} image(s) received: {self.done} analysed, {self.skipped} "
                f"skipped, {self.failed} failed, {self.forwarded} forwarded, {self.dropped} "
                f"dropped; {self.refused} non-image(s) refused, {self.busy} answered busy; "
                f"{self.seconds:.1f} s")


@dataclass
class _Job:
    """A received data set waiting for the worker."""

    ds: Dataset
    calling_ae: str


def forward(datasets: Sequence[Dataset], target: ForwardTarget, *, ae_title: str,
            timeout: float = 30.0) -> None:
    """Send ``datasets`` to ``target`` by C-STORE over one association.

    Args:
        datasets: DICOM objects with file meta (their transfer syntax is proposed).
        target: the receiving node.
        ae_title: our (calling) AE title.
        timeout: seconds allowed for the association and for each answer.

    Raises:
        ForwardError: the association was refused or aborted, or an object was not
            accepted (status other than success or a warning).
    """
    pynetdicom = require("pynetdicom")
    ae = pynetdicom.AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts: dict[str, set[str]] = {}
    for ds in datasets:
        ts = str(ds.file_meta.TransferSyntaxUID)
        contexts.setdefault(str(ds.SOPClassUID), set()).add(ts)
    for sop_class, syntaxes in sorted(contexts.items()):
        ae.add_requested_context(sop_class, sorted(syntaxes))
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else \
            "not established (no answer?)"
        raise ForwardError(f"association with {target} {why}", target=str(target))
    refused: list[str] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            # 0x0000 success; 0xB000, 0xB006, 0xB007 warnings (stored with coercion)
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                refused.append(f"{ds.SOPInstanceUID} (status "
                               + ("none: connection lost" if code < 0 else f"0x{code:04X}")
                               + ")")
    finally:
        if assoc.is_established:
            assoc.release()
    if refused:
        raise ForwardError(f"{target} did not accept " + ", ".join(refused),
                           target=str(target))


class Listener:
    """A DICOM storage node that analyses the images it receives.

    ``start()`` binds and returns; ``stop()`` stops taking images, lets the worker finish
    the queue (or drops it) and closes. :func:`serve_until_signalled` runs one until SIGINT
    or SIGTERM.

    Args:
        ae_title: our AE title; associations must call it.
        port: TCP port (0: any free port, see :attr:`port` after :meth:`start`).
        host: address to bind (loopback by default; ``0.0.0.0`` for every interface).
        analyse_source: ``image -> identify result`` (as for :func:`.scan.scan`) or None.
        analyse_forgery: ``image -> forgery result`` with the map under ``prob_map`` or None.
        out_dir: write the results here as ``<SOPInstanceUID>_sr.dcm`` / ``_seg.dcm``.
        forward_to: send the results there by C-STORE.
        seg_kind: ``"fractional"``, ``"binary"`` or None (no SEG).
        queue_size: images waiting for analysis at most; beyond, C-STORE answers 0xA700.
        allowed_calling: AE titles allowed to send (empty: any).
        producer: the software named in the result objects.
        on_item: called from the worker thread with every :class:`ListenItem`.
        timeout: network time-out in seconds (associations, forwarding).

    Raises:
        ConfigError: nothing to analyse, nowhere to put the results, a bad AE title or
            queue size.
        MissingDicomExtraError: pynetdicom or highdicom is not installed.
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        host: str = "127.0.0.1",
        *,
        analyse_source: Analyser | None = None,
        analyse_forgery: Analyser | None = None,
        out_dir: str | Path | None = None,
        forward_to: ForwardTarget | None = None,
        seg_kind: str | None = "fractional",
        queue_size: int = 16,
        allowed_calling: Iterable[str] = (),
        producer: Producer | None = None,
        on_item: Callable[[ListenItem], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if analyse_source is None and analyse_forgery is None:
            raise ConfigError("nothing to analyse: give a source model, a forgery detector "
                              "or both")
        if out_dir is None and forward_to is None:
            raise ConfigError("nowhere to put the results: give an output folder, a node to "
                              "forward them to, or both")
        if queue_size < 1:
            raise ConfigError(f"queue size must be at least 1, got {queue_size}")
        _check_ae_title(ae_title, "--ae-title")
        self.allowed_calling = tuple(allowed_calling)
        for aet in self.allowed_calling:
            _check_ae_title(aet, "--allow-calling")
        require("highdicom")
        self._pynetdicom = require("pynetdicom")
        self.ae_title, self.host, self._port = ae_title, host, port
        self.analyse_source, self.analyse_forgery = analyse_source, analyse_forgery
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.forward_to = forward_to
        self.seg_kind = seg_kind
        self.producer = producer or Producer()
        self.on_item = on_item
        self.timeout = timeout
        self.summary = ListenSummary()
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._closing = threading.Event()  # no more images taken
        self._finish = threading.Event()  # worker ends once the queue is empty
        self._abandon = threading.Event()  # worker drops what is left
        self._ae: Any = None
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self._t0 = 0.0

    @property
    def port(self) -> int:
        """The bound TCP port (the one chosen by the system when 0 was asked for)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def running(self) -> bool:
        """Whether the node is bound and serving (between :meth:`start` and :meth:`stop`)."""
        return self._server is not None

    @property
    def queued(self) -> int:
        """Images waiting for the worker."""
        return self._queue.qsize()

    def start(self) -> None:
        """Bind the port, start serving associations and the worker; returns at once.

        Raises:
            ListenError: the address cannot be bound (in use, no permission, unknown host).
        """
        pn = self._pynetdicom
        ae = pn.AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        if self.allowed_calling:
            ae.require_calling_aet = list(self.allowed_calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ListenError(f"{self.out_dir}: cannot create ({exc.strerror or exc})") \
                    from None
        handlers = [(pn.evt.EVT_C_STORE, self._on_c_store),
                    (pn.evt.EVT_C_ECHO, lambda event: 0x0000)]
        try:
            self._server = ae.start_server((self.host, self._port), block=False,
                                           evt_handlers=handlers,
                                           contexts=list(_supported_contexts()))
        except OSError as exc:
            raise ListenError(f"cannot listen on {self.host}:{self._port} "
                              f"({exc.strerror or exc}): is the port in use, or below 1024 "
                              "without the right to bind it?") from None
        self._ae = ae
        self._t0 = time.perf_counter()
        self._worker = threading.Thread(target=self._work, name="medforensics-listen-worker",
                                        daemon=True)
        self._worker.start()
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("listening on %s: every host that reaches port %d can send images "
                        "(restrict senders with --allow-calling and a firewall)",
                        self.host, self.port)
        log.info("%s listening on %s:%d (queue of %d); SIGINT or SIGTERM stops",
                 self.ae_title, self.host, self.port, self._queue.maxsize)

    def stop(self, *, drain: bool = True, grace: float = 5.0) -> ListenSummary:
        """Stop taking images, finish (or drop) the queue, close the associations.

        Args:
            drain: analyse what is queued before returning; False drops it (counted in
                :attr:`ListenSummary.dropped`).
            grace: seconds open associations get to end by themselves before they are
                aborted.

        Returns:
            the :class:`ListenSummary`.
        """
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()  # stops accepting; open associations go on
            deadline = time.monotonic() + grace
            while self._ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            self._ae.shutdown()  # aborts what is still open
            self._server = None
        if not drain:
            self.abandon()
        self._finish.set()
        if self._worker is not None:
            left = self._queue.qsize()
            if left and drain:
                log.info("finishing %d queued image(s) before stopping", left)
            while self._worker.is_alive():
                self._worker.join(0.2)  # short waits: a signal handler can still run
            self._worker = None
        self.summary.seconds = time.perf_counter() - self._t0
        return self.summary

    def abandon(self) -> None:
        """Make the worker drop the images still queued (after the one in hand)."""
        self._abandon.set()
        self._finish.set()

    # ---------------------------------------------------------------- network side

    def _status(self, code: int, comment: str) -> Dataset:
        """A C-STORE answer with an Error Comment (at most 64 characters)."""
        ds = Dataset()
        ds.Status = code
        ds.ErrorComment = comment[:64]
        return ds

    def _on_c_store(self, event: Any) -> Dataset | int:
        """Handle one C-STORE: refuse non-images, queue images, answer busy when full."""
        req = event.request
        sop_class = str(req.AffectedSOPClassUID)
        sop = str(req.AffectedSOPInstanceUID)
        calling = str(event.assoc.requestor.ae_title).strip()
        if not is_image_sop_class(sop_class):
            with self._lock:
                self.summary.refused += 1
            name = UID(sop_class).name
            log.warning("refused %s from %s: SOP Class %s (%s) holds no image to analyse",
                        sop, calling, sop_class, name)
            return self._status(STATUS_NOT_AN_IMAGE, f"not an image: {name}")
        if self._closing.is_set():
            with self._lock:
                self.summary.busy += 1
            log.warning("answered busy to %s from %s: shutting down", sop, calling)
            return self._status(STATUS_CLOSING, "shutting down; send again later")
        ds = event.dataset
        ds.file_meta = event.file_meta
        try:
            self._queue.put_nowait(_Job(ds, calling))
        except queue.Full:
            with self._lock:
                self.summary.busy += 1
            log.warning("answered busy (0x%04X) to %s from %s: the analysis queue is full "
                        "(%d)", STATUS_BUSY, sop, calling, self._queue.maxsize)
            return self._status(STATUS_BUSY, "analysis queue full; send again later")
        with self._lock:
            self.summary.received += 1
        log.debug("queued %s from %s (%d waiting)", sop, calling, self._queue.qsize())
        return 0x0000

    # ---------------------------------------------------------------- worker side

    def _work(self) -> None:
        """Take images off the queue until told to finish and the queue is empty."""
        while True:
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._finish.is_set():
                    return
                continue
            try:
                if self._abandon.is_set():
                    with self._lock:
                        self.summary.dropped += 1
                    log.warning("dropped %s unanalysed (stopping)",
                                job.ds.get("SOPInstanceUID", "?"))
                    continue
                item = self._safely_handle(job)
                self._count(item)
                if self.on_item is not None:
                    try:
                        self.on_item(item)
                    except Exception:  # a failing consumer must not stop the node
                        log.exception("the result consumer failed on %s", item.sop)
            finally:
                self._queue.task_done()

    def _count(self, item: ListenItem) -> None:
        with self._lock:
            s = self.summary
            setattr(s, item.status, getattr(s, item.status) + 1)
            s.forwarded += int(item.forwarded)
        if item.status == "done":
            log.info("%s from %s analysed in %.2f s: SR %s%s", item.sop, item.calling_ae,
                     item.seconds, item.sr, f", SEG {item.seg}" if item.seg else "")
        else:
            log.warning("%s from %s %s (%s): %s", item.sop, item.calling_ae, item.status,
                        item.reason, item.message)

    def _safely_handle(self, job: _Job) -> ListenItem:
        """:meth:`_handle`, with anything unforeseen turned into a ``failed`` item (and a
        traceback in the log) so that one image cannot stop the node."""
        try:
            return self._handle(job)
        except Exception as exc:  # the node serves on; the traceback goes to the log
            log.exception("handling %s failed", job.ds.get("SOPInstanceUID", "?"))
            return ListenItem(str(job.ds.get("StudyInstanceUID", "")),
                              str(job.ds.get("SeriesInstanceUID", "")),
                              str(job.ds.get("SOPInstanceUID", "")),
                              calling_ae=job.calling_ae, status="failed", reason="internal-error",
                              message=f"{type(exc).__name__}: {exc}")

    def _handle(self, job: _Job) -> ListenItem:
        """Analyse one image and put its results where they were asked for."""
        t0 = time.perf_counter()
        ds = job.ds
        item = ListenItem(str(ds.get("StudyInstanceUID", "")),
                          str(ds.get("SeriesInstanceUID", "")),
                          str(ds.get("SOPInstanceUID", "")), calling_ae=job.calling_ae)
        try:
            image = read_image(ds)
            ident = self.analyse_source(image) if self.analyse_source is not None else None
            forg, prob = None, None
            if self.analyse_forgery is not None:
                forg = dict(self.analyse_forgery(image))
                prob = forg.pop("prob_map", None)
        except ReadError as exc:
            return self._finished(item, t0, "skipped", exc.reason, str(exc))
        except MedForensicsError as exc:
            return self._finished(item, t0, "skipped", "invalid-image", str(exc))
        except Exception as exc:  # a node serves on after one failed analysis
            log.exception("analysis of %s raised", item.sop)
            return self._finished(item, t0, "failed", "analysis-failed",
                                  f"{type(exc).__name__}: {exc}")
        item.identify, item.forgery = ident, forg
        try:
            objects = dicom_results(ds, identify=ident, forgery=forg, prob_map=prob,
                                    seg_kind=self.seg_kind, producer=self.producer)
            seg, sr = objects.get("seg"), objects["sr"]
        except DicomBuildError as exc:
            return self._finished(item, t0, "skipped", "result-failed", str(exc))
        item.sr = str(sr.SOPInstanceUID)
        item.seg = None if seg is None else str(seg.SOPInstanceUID)
        objs = [o for o in (seg, sr) if o is not None]
        if self.out_dir is not None:
            for obj, suffix in ((seg, "seg"), (sr, "sr")):
                if obj is None:
                    continue
                path = self.out_dir / f"{item.sop}_{suffix}.dcm"
                try:
                    write_dataset(obj, path)
                except OSError as exc:
                    return self._finished(item, t0, "failed", "write-failed",
                                          f"{path}: cannot write ({exc.strerror or exc})")
                item.files.append(str(path))
        if self.forward_to is not None:
            try:
                forward(objs, self.forward_to, ae_title=self.ae_title, timeout=self.timeout)
            except ForwardError as exc:
                return self._finished(item, t0, "failed", "forward-failed", str(exc))
            item.forwarded = True
        return self._finished(item, t0, "done")

    @staticmethod
    def _finished(item: ListenItem, t0: float, status: str, reason: str | None = None,
                  message: str | None = None) -> ListenItem:
        item.status, item.reason, item.message = status, reason, message
        item.seconds = time.perf_counter() - t0
        return item


def serve_until_signalled(listener: Listener,
                          signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
                          ) -> ListenSummary:
    """Start ``listener`` and serve until one of ``signals`` arrives, then stop cleanly.

    The first signal stops taking images and lets the worker finish the queue; a second one
    drops what is still queued. The previous signal handlers are restored on return. Call
    from the main thread (Python delivers signals there only).

    Returns:
        the :class:`ListenSummary`.

    Raises:
        ListenError: the address cannot be bound.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second %s: dropping %d queued image(s)", signal.Signals(signum).name,
                        listener.queued)
            listener.abandon()
            return
        log.info("%s: stopping (finishing %d queued image(s); signal again to drop them)",
                 signal.Signals(signum).name, listener.queued)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        listener.start()
        while not stop.wait(0.2):
            pass
        return listener.stop(drain=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if listener.running:  # start() succeeded but stop() did not run
            listener.stop(drain=False, grace=0.0)
