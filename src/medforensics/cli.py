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


@app.command("tamper")
def tamper_cmd(
    source: Path = typer.Argument(..., help="Input manifest CSV (eligible rows) or directory."),
    out: Path = typer.Option(..., "--out", help="Output directory (images/, masks/, manifest)."),
    kinds: str = typer.Option(
        "copy-move,splice,removal,insertion,local-edit", "--kinds",
        help="Comma-separated: copy-move, splice, splice-device, removal, insertion, local-edit.",
    ),
    seed: int = typer.Option(0, "--seed", help="Master seed (per-image seeds are recorded)."),
    sizes: str = typer.Option("32,256", "--sizes", help="Region size range MIN,MAX in pixels."),
    n: Optional[int] = typer.Option(None, "--n", help="Number of source images (default all)."),
    feather: Optional[float] = typer.Option(
        None, "--feather", help="Feather sigma in px (default: random 0/1/2 per image)."),
    rotate: bool = typer.Option(False, "--rotate", help="Copy-move: allow rotation."),
    scale: bool = typer.Option(False, "--scale", help="Copy-move: allow scaling."),
) -> None:
    """Generate tampered images with exact masks plus matched untampered originals."""
    from medforensics.errors import MedForensicsError
    from medforensics.forgery.tamper import generate

    try:
        lo, hi = (int(v) for v in sizes.split(","))
    except ValueError:
        raise typer.BadParameter("--sizes must be MIN,MAX (two integers)") from None
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    try:
        rep = generate(source, out, kinds=kind_list, seed=seed, sizes=(lo, hi), n=n,
                       feather=feather, options={"rotate": rotate, "scale": scale})
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    n_t = sum(r["label"] == "tampered" for r in rep.rows)
    typer.echo(f"wrote {n_t} tampered + {len(rep.rows) - n_t} original images; "
               f"manifest {rep.manifest_path}")
    if rep.failures:
        typer.echo(f"{len(rep.failures)} input(s) failed, see {out / 'failures.csv'}", err=True)

# --- end section: forgery ---------------------------------------------------------------------

# --- section: pipeline (demo, prepare, export, report, serve) ---------------------------------

# --- end section: pipeline --------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
