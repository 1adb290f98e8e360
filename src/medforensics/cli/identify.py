"""``identify``: which device made each image."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from medforensics.cli._common import (
    ALLOW_MODIFIED_OPT,
    OUT_OPT,
    PROGRESS_OPT,
    SHARD_OPT,
    app,
    batch_files,
    check_run_kind,
    dump_line,
    fail,
    files_progress,
    finish_batch,
    json_sink,
    warn_integrity,
)
from medforensics.cli.pacs import DICOM_OUT_OPT, identify_dicom_out
from medforensics.errors import MedForensicsError

#: Rows of the text table printed at a time (memory stays flat over any number of files).
_TABLE_BLOCK = 200


@app.command("identify")
def identify_cmd(
    run: Path = typer.Argument(..., help="Trained (and calibrated) run directory."),
    paths: List[Path] = typer.Argument(..., help="Image files or folders (recursive)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="Decode-ahead worker processes (0 = in-process; default: "
        "one per CPU, at most 4, none for fewer than 4 files); same results."),
    n_patches: Optional[int] = typer.Option(
        None, "--patches", help="Patches per image (patch preset; default: the run's "
        "calibration, 64). Fewer is faster and less accurate: see docs/source_id.md."),
    progress: Optional[bool] = PROGRESS_OPT,
    shard: str = SHARD_OPT,
    out: Optional[Path] = OUT_OPT,
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
    dicom_out: Optional[Path] = DICOM_OUT_OPT,
) -> None:
    """Which device made each image? A verdict per image; unreadable files are reported.

    Verdicts: consistent / MISMATCH / UNKNOWN / claim-not-in-model / no-header-claim /
    insufficient-evidence.

    A device is named only when an enrolled unit's pattern matches or the classifier's
    open-set test passes ("named" in the JSON; docs/openset.md); otherwise UNKNOWN.

    Streams: memory stays flat over any number of files (the text table is printed in
    blocks of 200 rows; --json or --out give one JSON line per file, with the image's DICOM
    UIDs). Under torchrun each process takes its own shard of the files. Exit code 1 when
    some file could not be analysed.
    """
    from medforensics.source.predictor import SourcePredictor, identify_files
    from medforensics.source.schema import STATUS_ERROR, identify_record

    check_run_kind(run, "source", "RUN")
    try:
        predictor = SourcePredictor.from_run(run, device=device, n_patches=n_patches,
                                             allow_modified=allow_modified_run)
        files, part, where = batch_files(paths, shard)
        write, close = json_sink(out, part) if (as_json or out) else (None, lambda ok=True: None)
    except MedForensicsError as exc:
        fail(exc)
    warn_integrity(predictor.run_integrity)
    table = _Table()
    n_bad = 0
    if workers is None:
        from medforensics.common.runtime import decode_workers
        workers = decode_workers(len(files))
    results = identify_dicom_out(identify_files(predictor, files, workers=workers), dicom_out,
                                 run, predictor)
    try:
        for v, extra in files_progress(results, len(files), "identify" + where, progress):
            rec = identify_record(v, extra)
            n_bad += rec["status"] == STATUS_ERROR
            if write is not None:
                write(dump_line(rec))
            else:
                table.add(v, extra)
    except BaseException:
        close(False)  # stopped early: no complete --out file is claimed
        raise
    close()
    table.flush()
    finish_batch(n_bad, len(files))


class _Table:
    """The text output of ``identify``: a table per block of verdicts, then unit lines."""

    def __init__(self, echo: Callable[[str], Any] = typer.echo) -> None:
        self.rows: list[tuple[Any, dict[str, Any]]] = []
        self.echo = echo

    def add(self, v: Any, extra: dict[str, Any]) -> None:
        self.rows.append((v, extra))
        if len(self.rows) >= _TABLE_BLOCK:
            self.flush()

    def flush(self) -> None:
        from medforensics.source.verdicts import format_table

        if not self.rows:
            return
        self.echo(format_table([v for v, _ in self.rows], details=True))
        for v, e in self.rows:
            if "unit" not in e:
                continue
            claim = e.get("unit_claim") or "-"
            said = e["unit"] or "no enrolled unit"
            flag = "" if e["unit"] is None or e["unit"] == claim else \
                "  <-- unit differs from header"
            self.echo(f"unit: {v.path}: header {claim}; pattern says {said} "
                      f"(PCE {e['unit_score']:.0f}){flag}")
        self.rows.clear()
