"""Command-line interface: ``medforensics <command>``.

Each command is a thin wrapper around the library; the work happens in the modules it calls.
Imports of heavy modules happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="medforensics",
    help="Medical-image forensics: which device made an image, and was it altered?",
    no_args_is_help=True,
    add_completion=False,
)
forgery_app = typer.Typer(help="Forgery detection and localization.", no_args_is_help=True)
app.add_typer(forgery_app, name="forgery")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# --- section: data (simulate, ingest, split) -------------------------------------------------

# --- end section: data ------------------------------------------------------------------------

# --- section: source (train, evaluate, identify) ----------------------------------------------

# --- end section: source ----------------------------------------------------------------------

# --- section: forgery (tamper, forgery train/evaluate/detect) ---------------------------------

# --- end section: forgery ---------------------------------------------------------------------

# --- section: pipeline (demo, prepare, export, report, serve) ---------------------------------

# --- end section: pipeline --------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
