"""Command-line interface: ``medforensics <command>`` (also ``python -m medforensics``).

Each command is a thin wrapper around the library; the work happens in the modules it calls.
One module per command group: :mod:`~medforensics.cli.data` (simulate, ingest, split, prepare),
:mod:`~medforensics.cli.train` (train, calibrate, evaluate, export, seal),
:mod:`~medforensics.cli.identify`, :mod:`~medforensics.cli.forgery` (tamper, forgery
train/evaluate/detect), :mod:`~medforensics.cli.report` (report, demo),
:mod:`~medforensics.cli.serve`, :mod:`~medforensics.cli.pacs` (pacs scan / listen, and the
``--dicom-out`` of identify and forgery detect); what they share (exit codes, logging, progress, options) is in
:mod:`~medforensics.cli._common`. The commands import torch-backed modules inside their bodies
so that ``--help`` and ``--version`` answer without loading torch.
"""

from __future__ import annotations

from typing import Optional

import typer

from medforensics import __version__
from medforensics.cli._common import app, configure_logging, fail, forgery_app
from medforensics.common.runtime import configure_threads
from medforensics.errors import ConfigError

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medforensics {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True,
        help="More log lines: -v INFO, -vv DEBUG (default: warnings and errors only)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for the models (default: OMP_NUM_THREADS, else "
        "half the usable cores; see medforensics.common.runtime)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    configure_logging(verbose)
    try:
        configure_threads(threads)
    except ConfigError as exc:
        fail(exc)


# Registration order is the order of ``--help``.
# isort: off
from medforensics.cli import data, train, identify, forgery, report, serve, pacs  # noqa: F401
# isort: on

app.add_typer(forgery_app, name="forgery")
app.add_typer(pacs.pacs_app, name="pacs")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
