"""Command line of the PACS side: ``medforensics pacs scan``, ``medforensics pacs listen``
and the ``--dicom-out`` option of ``identify`` and ``forgery detect``.

The library (:mod:`medforensics.pacs`) takes results as dicts and analyses through
callables; this module builds those callables from the runs (source predictor, forgery
detector) and names the model behind each result (architecture, run folder, weights
SHA-256, run integrity). Heavy imports happen inside the functions so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from medforensics.cli._common import fail
from medforensics.pacs.results import model_identity

if TYPE_CHECKING:  # Self is in typing from Python 3.11 on
    from typing_extensions import Self

log = logging.getLogger(__name__)

pacs_app = typer.Typer(
    help="Results a PACS understands: scan a PACS over DICOMweb and store DICOM SR / SEG "
    "results back, or run a DICOM node that analyses what it receives (docs/dicom.md).",
    no_args_is_help=True)

#: the ``--dicom-out`` option of ``identify`` and ``forgery detect``
DICOM_OUT_OPT = typer.Option(
    None, "--dicom-out", help="Also write DICOM results here: a Comprehensive SR per DICOM "
    "image (and, for forgery detect, a SEG of the map), named <SOPInstanceUID>_*.dcm "
    "(needs the dicom extra; docs/dicom.md).")
#: the ``--seg`` option
SEG_OPT = typer.Option(
    "fractional", "--seg", help="SEG of the forgery map: fractional (probabilities), binary "
    "(the forged-area mask) or none.")


def _quiet_libraries() -> None:
    """highdicom and dicomweb-client log every step at INFO: keep them to warnings unless
    the command runs with --verbose."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("highdicom", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.WARNING)



def _check_seg(seg: str) -> Optional[str]:
    from medforensics.errors import ConfigError

    kind = seg.strip().lower()
    if kind == "none":
        return None
    if kind not in ("fractional", "binary"):
        raise ConfigError(f"--seg must be fractional, binary or none, got {seg!r}")
    return kind


def _dicom_ready(out: Path) -> None:
    from medforensics.pacs.common import require

    require("highdicom")
    _quiet_libraries()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from medforensics.errors import ConfigError

        raise ConfigError(f"--dicom-out {out}: cannot create ({exc.strerror or exc})") from None


def _write_results(out: Path, path: str, what: str, *, identify: Optional[dict] = None,
                   forgery: Optional[dict] = None, prob_map: Any = None,
                   seg_kind: Optional[str] = None) -> list[str]:
    """Write the SR (and SEG) of one file; a file that cannot get one is reported on stderr
    and the batch goes on."""
    from medforensics.errors import MedForensicsError
    from medforensics.pacs.results import write_dicom_results

    try:
        return write_dicom_results(out, path, what, identify=identify, forgery=forgery,
                                   prob_map=prob_map, seg_kind=seg_kind)
    except MedForensicsError as exc:
        typer.echo(f"no DICOM result for {path}: {exc}", err=True)
    except OSError as exc:
        typer.echo(f"no DICOM result for {path}: cannot write ({exc.strerror or exc})",
                   err=True)
    return []


def identify_dicom_out(results: Iterator[tuple[Any, dict]], out: Optional[Path],
                       run: Path, predictor: Any) -> Iterator[tuple[Any, dict]]:
    """``identify --dicom-out``: pass the ``(Verdict, extra)`` pairs through, writing an SR
    for every DICOM image on the way (unreadable files get none)."""
    if out is None:
        yield from results
        return
    from medforensics.errors import MedForensicsError

    try:
        _dicom_ready(out)
    except MedForensicsError as exc:
        fail(exc)
    model = model_identity(run, getattr(predictor, "run_integrity", None))
    for v, extra in results:
        if v.verdict != "unreadable" and v.path:
            _write_results(out, v.path, "identify",
                           identify={**v.to_dict(), **extra, "model": model})
        yield v, extra


def forgery_dicom_out(results: Iterator[Any], out: Optional[Path], run: Any, detector: Any,
                      seg: str = "fractional") -> Iterator[Any]:
    """``forgery detect --dicom-out``: pass the ``FileResult`` records through, writing a SEG
    of the map and an SR for every analysed DICOM image on the way."""
    if out is None:
        yield from results
        return
    from medforensics.errors import MedForensicsError

    try:
        kind = _check_seg(seg)
        _dicom_ready(out)
    except MedForensicsError as exc:
        fail(exc)
    model = model_identity(run, getattr(detector, "run_integrity", None),
                           default_name=f"{getattr(detector, 'method', 'cues')} (training-free)")
    for fr in results:
        if fr.result is not None:
            _write_results(out, fr.path, "forgery",
                           forgery={**fr.to_dict(), "model": model},
                           prob_map=fr.result.prob_map, seg_kind=kind)
        yield fr


def _parse_filters(items: List[str], modality: Optional[str]) -> dict[str, str]:
    from medforensics.errors import ConfigError

    out: dict[str, str] = {}
    for it in items:
        key, sep, value = it.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--filter {it!r}: expected KEYWORD=VALUE, e.g. "
                              "StudyDate=20240101-20240131")
        out[key.strip()] = value.strip()
    if modality:
        out["Modality"] = modality
    return out


def _analysers(source_run: Optional[Path], forgery: Optional[str], device: str,
               allow_modified: bool) -> tuple[Any, Any]:
    """The ``image -> result dict`` callables of ``pacs scan`` (None when not asked for)."""
    analyse_source = analyse_forgery = None
    if source_run is not None:
        from medforensics.source.predictor import SourcePredictor, identify_image

        pred = SourcePredictor.from_run(source_run, device=device, allow_modified=allow_modified)
        smodel = model_identity(source_run, pred.run_integrity)

        def analyse_source(image: Any) -> dict[str, Any]:
            v, extra = identify_image(pred, image.pixels, image.meta, path=image.meta.path)
            return {**v.to_dict(), **extra, "model": smodel}

    if forgery is not None:
        from medforensics.forgery.detector import ForgeryDetector

        det = ForgeryDetector.from_run(forgery, device=device, allow_modified=allow_modified)
        fmodel = model_identity(forgery, det.run_integrity,
                                default_name=f"{det.method} (training-free)")

        def analyse_forgery(image: Any) -> dict[str, Any]:
            r = det.detect(image.pixels, image.meta)
            return {"path": image.meta.path, "status": "done", **r.to_dict(),
                    "model": fmodel, "prob_map": r.prob_map}

    return analyse_source, analyse_forgery


class ScanProgress:
    """Progress of ``pacs scan`` on stderr while results go to stdout.

    On a terminal a live line (rich) counts instances found, analysed, skipped, failed and
    stored, with the rate; elsewhere (a log file, a pipe) one log line every ``every``
    instances says the same, so a long scan shows it is moving without flooding the log.
    The number of instances is not known in advance (the search is paged as it goes), so
    there is no bar.

    Args:
        enabled: live line on (True) / off (False); None: when stderr is a terminal.
        every: instances between two log lines when the live line is off (0: none).
    """

    def __init__(self, enabled: Optional[bool] = None, every: int = 100) -> None:
        import sys

        self.live = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.every = max(0, int(every))
        self.counts = {"found": 0, "done": 0, "skipped": 0, "failed": 0, "resumed": 0,
                       "stored": 0}
        self._bar: Any = None
        self._task: Any = None
        self._t0 = 0.0

    def __enter__(self) -> Self:
        import time

        self._t0 = time.perf_counter()
        if self.live:
            from rich.console import Console
            from rich.progress import (
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), console=Console(stderr=True),
                                 transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def text(self) -> str:
        """The counts and the rate, in one line."""
        import time

        c = self.counts
        rate = c["found"] / max(time.perf_counter() - self._t0, 1e-9)
        return (f"{c['found']} instance(s): {c['done']} analysed, {c['skipped']} skipped, "
                f"{c['failed']} failed, {c['resumed']} earlier, {c['stored']} stored "
                f"({rate:.1f}/s)")

    def update(self, item: Any) -> None:
        """Count one :class:`~medforensics.pacs.scan.ScanItem`."""
        self.counts["found"] += 1
        self.counts[item.status] = self.counts.get(item.status, 0) + 1
        self.counts["stored"] += int(bool(item.stored))
        if self._bar is not None:
            self._bar.update(self._task, description=self.text())
        elif self.every and self.counts["found"] % self.every == 0:
            log.info("pacs scan: %s", self.text())


def _result_text(item: Any) -> list[str]:
    """The verdicts of one analysed item, for a line of text."""
    parts = []
    if item.identify:
        named = item.identify.get("named") or "UNKNOWN"
        parts.append(f"source {item.identify.get('verdict')} (named: {named})")
    if item.forgery:
        score = item.forgery.get("score")
        parts.append(f"forgery {item.forgery.get('verdict')}"
                     + (f" (score {score:.3f})" if isinstance(score, float) else ""))
    return parts


def _item_line(item: Any) -> str:
    if item.status in ("skipped", "failed"):
        return f"{item.sop}: {item.status} ({item.reason}): {item.message}"
    if item.status == "resumed":
        return f"{item.sop}: finished in an earlier run"
    parts = _result_text(item)
    where = "stored" if item.stored else ("written" if item.files else "not kept")
    return f"{item.sop}: " + "; ".join(parts) + f"; SR {item.sr}" + \
        (f", SEG {item.seg}" if item.seg else "") + f" {where}"


@pacs_app.command("scan")
def scan_cmd(
    url: str = typer.Argument(..., help="DICOMweb root, e.g. https://pacs.example.org/dicom-web"),
    source_run: Optional[Path] = typer.Option(
        None, "--source-run", help="Trained, calibrated source run: identify every image."),
    forgery: Optional[str] = typer.Option(
        None, "--forgery", help="Forgery run folder, or 'none' for the training-free cues: "
        "detect forgeries in every image."),
    study: Optional[str] = typer.Option(None, "--study", help="Only this Study Instance UID."),
    series: Optional[str] = typer.Option(
        None, "--series", help="Only this Series Instance UID (with --study)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Only this modality."),
    filters: List[str] = typer.Option(
        [], "--filter", help="QIDO matching key KEYWORD=VALUE (repeatable), e.g. "
        "StudyDate=20240101-20240131."),
    store: bool = typer.Option(
        False, "--store", help="Store the SR / SEG results back into the PACS (STOW-RS)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Also write the SR / SEG files here (<SOPInstanceUID>_sr.dcm, "
        "_seg.dcm)."),
    seg: str = SEG_OPT,
    state: Optional[Path] = typer.Option(
        None, "--state", help="Resumable state file (JSON lines): a re-run skips what is "
        "finished."),
    user: Optional[str] = typer.Option(
        None, "--user", envvar="MEDFORENSICS_PACS_USER", help="HTTP basic user."),
    password: Optional[str] = typer.Option(
        None, "--password", envvar="MEDFORENSICS_PACS_PASSWORD",
        help="HTTP basic password (better: the MEDFORENSICS_PACS_PASSWORD variable)."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="MEDFORENSICS_PACS_TOKEN",
        help="Bearer token (better: the MEDFORENSICS_PACS_TOKEN variable)."),
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle", help="CA file for TLS."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Skip TLS certificate checks (test servers only)."),
    timeout: float = typer.Option(30.0, "--timeout", min=1.0, help="Seconds per request."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Stop after this many images analysed."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of text."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = typer.Option(
        False, "--allow-modified-run", help="Load runs whose files differ from run.json "
        "(results then say run_integrity 'modified')."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Live progress line on stderr (default: when "
        "stderr is a terminal)."),
    log_every: int = typer.Option(
        100, "--log-every", min=0, help="Without the live line: a progress log line every N "
        "instances (0: none)."),
) -> None:
    """Search a PACS (QIDO-RS), stream each image (WADO-RS), identify its source and / or
    detect forgeries, and write / store a Comprehensive SR (+ a SEG of the forgery map).

    Non-image objects (SR, SEG, presentation states, ...) are skipped without download.
    Exit status: 0 all analysed or skipped, 1 some failed (tried again by a re-run with
    the same --state), 2 an error stopped the scan (unreachable server, refused
    credentials, unusable run or state file)."""
    from medforensics.errors import MedForensicsError
    from medforensics.pacs.dicomweb import PacsClient
    from medforensics.pacs.scan import scan

    _quiet_libraries()
    try:
        kind = _check_seg(seg)
        query = _parse_filters(filters, modality)
        client = PacsClient(url, user=user, password=password, token=token,
                            ca_bundle=None if ca_bundle is None else str(ca_bundle),
                            insecure=insecure, timeout=timeout)
        if source_run is None and forgery is None:
            from medforensics.errors import ConfigError

            raise ConfigError("nothing to analyse: give --source-run RUN and / or --forgery "
                              "RUN|none")
        analyse_source, analyse_forgery = _analysers(source_run, forgery, device,
                                                     allow_modified_run)
    except MedForensicsError as exc:
        fail(exc)
        return

    bar = ScanProgress(progress, log_every)

    def on_item(item: Any) -> None:
        typer.echo(json.dumps(item.to_dict()) if as_json else _item_line(item))
        bar.update(item)

    try:
        with bar:
            summary = scan(client, study=study, series=series, filters=query,
                           analyse_source=analyse_source, analyse_forgery=analyse_forgery,
                           store=store, out_dir=out, seg_kind=kind, state=state, limit=limit,
                           on_item=on_item)
    except MedForensicsError as exc:
        fail(exc)
        return
    typer.echo(summary.line(), err=True)
    if summary.failed:
        raise typer.Exit(1)


def _listen_line(item: Any) -> str:
    """One line of text for an image received by ``pacs listen``."""
    head = f"{item.sop} (from {item.calling_ae})"
    if item.status != "done":
        return f"{head}: {item.status} ({item.reason}): {item.message}"
    where = [w for w, on in (("written", bool(item.files)), ("forwarded", item.forwarded))
             if on]
    return f"{head}: " + "; ".join(_result_text(item)) + f"; SR {item.sr}" + \
        (f", SEG {item.seg}" if item.seg else "") + " " + " and ".join(where)


@pacs_app.command("listen")
def listen_cmd(
    ae_title: str = typer.Option(
        "MEDFORENSICS", "--ae-title", help="Our AE title; senders must call it."),
    port: int = typer.Option(
        11112, "--port", min=0, max=65535, help="DICOM port to listen on (0: any free port; "
        "the log line says which)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind: loopback by default; 0.0.0.0 for every "
        "interface (then restrict senders with --allow-calling and a firewall)."),
    source_run: Optional[Path] = typer.Option(
        None, "--source-run", help="Trained, calibrated source run: identify every image."),
    forgery: Optional[str] = typer.Option(
        None, "--forgery", help="Forgery run folder, or 'none' for the training-free cues: "
        "detect forgeries in every image."),
    forward_to: Optional[str] = typer.Option(
        None, "--forward-to", help="Send the SR / SEG results by C-STORE to this node: "
        "HOST:PORT:AET."),
    dicom_out: Optional[Path] = typer.Option(
        None, "--dicom-out", help="Write the SR / SEG results here (<SOPInstanceUID>_sr.dcm, "
        "_seg.dcm)."),
    seg: str = SEG_OPT,
    queue_size: int = typer.Option(
        16, "--queue-size", min=1, help="Images waiting for analysis at most; beyond, senders "
        "get status 0xA700 (out of resources) and retry later."),
    allow_calling: List[str] = typer.Option(
        [], "--allow-calling", help="Only accept associations from this calling AE title "
        "(repeatable; default: any)."),
    timeout: float = typer.Option(
        30.0, "--timeout", min=1.0, help="Network time-out in seconds."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of text."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = typer.Option(
        False, "--allow-modified-run", help="Load runs whose files differ from run.json "
        "(results then say run_integrity 'modified')."),
) -> None:
    """Run a DICOM node: accept images by C-STORE, identify their source and / or detect
    forgeries, and write (--dicom-out) and / or forward (--forward-to) a Comprehensive SR
    (+ a SEG of the forgery map) per image.

    Non-image objects (SR, SEG, presentation states, ...) are refused (status 0x0122).
    One line per image on stdout; SIGINT or SIGTERM stops taking images, finishes the
    queue and exits 0 (a second signal drops the queue). Exit status 2: the node could not
    start (port in use, bad run folder or option)."""
    from medforensics.errors import ConfigError, MedForensicsError
    from medforensics.pacs.listen import ForwardTarget, Listener, serve_until_signalled

    _quiet_libraries()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        kind = _check_seg(seg)
        target = None if forward_to is None else ForwardTarget.parse(forward_to)
        if source_run is None and forgery is None:
            raise ConfigError("nothing to analyse: give --source-run RUN and / or --forgery "
                              "RUN|none")
        if target is None and dicom_out is None:
            raise ConfigError("nowhere to put the results: give --dicom-out DIR and / or "
                              "--forward-to HOST:PORT:AET")
        analyse_source, analyse_forgery = _analysers(source_run, forgery, device,
                                                     allow_modified_run)

        def on_item(item: Any) -> None:
            typer.echo(json.dumps(item.to_dict()) if as_json else _listen_line(item))

        node = Listener(ae_title, port, host, analyse_source=analyse_source,
                        analyse_forgery=analyse_forgery, out_dir=dicom_out,
                        forward_to=target, seg_kind=kind, queue_size=queue_size,
                        allowed_calling=allow_calling, on_item=on_item, timeout=timeout)
        summary = serve_until_signalled(node)
    except MedForensicsError as exc:
        fail(exc)
        return
    typer.echo(summary.line(), err=True)
