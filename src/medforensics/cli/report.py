"""Commands for people: ``report`` (HTML case reports) and ``demo`` (the job end to end)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from medforensics.cli._common import (
    ALLOW_MODIFIED_OPT,
    EXIT_PARTIAL,
    PROGRESS_OPT,
    TRAINING_FREE,
    app,
    check_run_kind,
    fail,
    tick_progress,
    training_free_name,
)
from medforensics.errors import MedForensicsError


@app.command("report")
def report_cmd(
    paths: List[Path] = typer.Argument(..., help="Image files or folders (recursive)."),
    out: Path = typer.Option(
        ..., "--out", help="report.html (exactly one image) or a folder (one page per image "
        "+ index.html)."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="Trained (and calibrated) source run directory."),
    forgery_model: Optional[str] = typer.Option(
        None, "--forgery-model",
        help=f"Forgery run directory, or '{TRAINING_FREE}' for the training-free detector."),
    show_identifiers: bool = typer.Option(
        False, "--show-identifiers",
        help="Show patient/institution identifiers and file paths (masked by default)."),
    force: bool = typer.Option(
        False, "--force", help="Read DICOM without file meta (ACR-NEMA) instead of refusing it."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    progress: Optional[bool] = PROGRESS_OPT,
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
) -> None:
    """Self-contained HTML case reports: image, device verdict, forgery map, header, provenance.

    Exit code 1 when some file could not be read or analysed (its page, or a message, says
    why)."""
    from medforensics.report.batch import write_report

    forgery_model = training_free_name(forgery_model)
    check_run_kind(source_model, "source", "--source-model")
    check_run_kind(forgery_model, "forgery", "--forgery-model")
    if source_model is None and forgery_model is None:
        typer.echo("warning: neither --source-model nor --forgery-model given: the pages "
                   "show the image, header and provenance only", err=True)
    missing = [p for p in paths if not p.exists()]
    for p in missing:
        typer.echo(f"error: {p}: no such file or folder", err=True)
    present = [p for p in paths if p.exists()]
    if not present:
        raise typer.Exit(EXIT_PARTIAL)
    try:
        with tick_progress("report", progress) as tick:
            res = write_report(present, out, source=source_model, forgery=forgery_model,
                               mask_identifiers=not show_identifiers, force=force,
                               device=device, progress=tick,
                               allow_modified_run=allow_modified_run)
    except MedForensicsError as exc:
        fail(exc)
    where = res.index if res.index is not None else res.pages[0]
    typer.echo(f"wrote {len(res.pages)} case page(s); open {where}")
    if res.n_unreadable:
        typer.echo(f"{res.n_unreadable} file(s) could not be read (their pages say why)",
                   err=True)
    if res.n_failed:
        typer.echo(f"error: the report failed for {res.n_failed} file(s) (see the log)", err=True)
    if missing or res.n_unreadable or res.n_failed:
        raise typer.Exit(EXIT_PARTIAL)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder (replaced)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the whole job."),
    patients: int = typer.Option(48, "--patients", help="Simulated patients."),
    epochs: int = typer.Option(12, "--epochs", help="Training epochs of the patch model."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    forgery: bool = typer.Option(True, "--forgery/--no-forgery", help="Include the forgery part."),
) -> None:
    """The main job end to end on the built-in simulated archive; prints where the report is."""
    from medforensics.demo.pipeline import DemoConfig, run_demo

    cfg = DemoConfig(out_dir=str(out), seed=seed, patients=patients, epochs=epochs,
                     device=device, forgery=forgery)
    try:
        report = run_demo(cfg, echo=typer.echo)
    except MedForensicsError as exc:
        fail(exc)
    typer.echo(f"\nreport: {report.resolve()}")
