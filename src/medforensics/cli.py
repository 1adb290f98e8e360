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

def _csv_list(value: Optional[str]) -> Optional[tuple]:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command("ingest")
def ingest_cmd(
    dirs: List[Path] = typer.Argument(..., help="Directories (scanned recursively) or files."),
    out: Path = typer.Option(..., "--out", help="Manifest CSV to write."),
    workers: Optional[int] = typer.Option(
        None, "--workers",
        help="Parallel worker processes (default: usable CPUs, max 8; 1 = serial)."),
    label: str = typer.Option("model", "--label", help="Class label: manufacturer, model, unit."),
    min_images: int = typer.Option(
        0, "--min-images-per-class", help="Filter classes with fewer eligible images."),
    min_patients: int = typer.Option(
        0, "--min-patients-per-class", help="Filter classes with fewer patients (DeepMammo: 200)."),
    modality: Optional[str] = typer.Option(
        None, "--modality", help="Keep only these modalities, e.g. DX,CR,MG."),
    views: Optional[str] = typer.Option(
        None, "--views", help="Keep only these ViewPosition values, e.g. CC,MLO."),
    min_size: int = typer.Option(64, "--min-size", help="Minimum of Rows and Columns."),
    verify: bool = typer.Option(
        False, "--verify", help="Also decode every image (slow) to catch corrupt pixel data."),
    force: bool = typer.Option(
        False, "--force", help="Read DICOM without file meta (ACR-NEMA) instead of refusing it."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Scan DICOM archives into a manifest: one row per file, status eligible or a reason."""
    from rich.console import Console
    from rich.table import Table

    from medforensics.data.manifest import IngestFilters, ingest, summarize, write_manifest
    from medforensics.errors import MedForensicsError

    filters = IngestFilters(
        min_images_per_class=min_images, min_patients_per_class=min_patients,
        modalities=_csv_list(modality), views=_csv_list(views), min_size=min_size,
    )
    try:
        rows = ingest(dirs, label=label, filters=filters, workers=workers, verify=verify,
                      force=force, progress=progress)
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    write_manifest(rows, out)
    summary = summarize(rows, label)
    console = Console()
    table = Table(title=f"eligible images per {label}")
    table.add_column(label)
    table.add_column("images", justify="right")
    table.add_column("patients", justify="right")
    for cls, n in summary.per_label.items():
        table.add_row(cls, str(n), str(summary.patients_per_label.get(cls, 0)))
    console.print(table)
    status_table = Table(title="files per status")
    status_table.add_column("status")
    status_table.add_column("files", justify="right")
    for status, n in summary.per_status.items():
        status_table.add_row(status, str(n))
    console.print(status_table)
    console.print(f"{summary.n_files} files -> {out}")


@app.command("split")
def split_cmd(
    manifest: Path = typer.Argument(..., help="Manifest CSV from `medforensics ingest`."),
    by: str = typer.Option("patient", "--by", help="patient (grouped) or image (Deep-RSI)."),
    test: float = typer.Option(0.2, "--test", help="Test fraction."),
    val: float = typer.Option(0.1, "--val", help="Validation fraction."),
    stratify: str = typer.Option(
        "model", "--stratify", help="Label column to stratify on ('none': no stratification)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output CSV (default: in place)."),
) -> None:
    """Assign train/val/test splits to the eligible rows and check for leakage."""
    from rich.console import Console
    from rich.table import Table

    from medforensics.data.manifest import read_manifest, write_manifest
    from medforensics.data.splits import SPLITS, assign_splits, check_leakage, split_counts
    from medforensics.errors import LeakageError, MedForensicsError

    try:
        rows = read_manifest(manifest)
        assign_splits(rows, by=by, test=test, val=val, seed=seed,
                      stratify=None if stratify.lower() == "none" else stratify)
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    console = Console()
    column = "status" if stratify.lower() == "none" else stratify
    table = Table(title=f"images per split and {column}")
    table.add_column(column)
    for s in SPLITS:
        table.add_column(s, justify="right")
    counts = split_counts(rows, column)
    for cls, c in counts.items():
        table.add_row(cls, *(str(c[s]) for s in SPLITS))
    table.add_row("total", *(str(sum(c[s] for c in counts.values())) for s in SPLITS))
    console.print(table)
    strict = ("sha256",) if by == "image" else ("PatientID", "StudyInstanceUID", "sha256")
    try:
        check_leakage(rows, keys=strict)
    except LeakageError as exc:
        typer.echo(f"error: leakage: {exc}", err=True)
        raise typer.Exit(3) from None
    if by == "image":
        try:
            check_leakage(rows, keys=("PatientID",))
        except LeakageError as exc:
            console.print("[yellow]warning:[/] --by image puts images of one patient in "
                          f"several splits (the Deep-RSI protocol): {exc}")
    target = out or manifest
    write_manifest(rows, target)
    console.print(f"no file-hash leakage; wrote {target}" if by == "image" else
                  f"no patient/study/file leakage; wrote {target}")

# --- end section: data ------------------------------------------------------------------------

# --- section: source (train, evaluate, identify) ----------------------------------------------

@app.command("train")
def train_cmd(
    manifest: Path = typer.Argument(..., help="Split manifest CSV (train/val/test column)."),
    label: str = typer.Option("model", "--label", help="Class label: manufacturer, model, unit."),
    preset: str = typer.Option("patch", "--preset", help="patch, deep-rsi or deepmammo."),
    out: Path = typer.Option(..., "--out", help="Run directory (model, checkpoints, metrics)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (preset default)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate."),
    patch: int = typer.Option(64, "--patch", help="Patch side in native pixels (patch preset)."),
    patches_per_image: Optional[int] = typer.Option(
        None, "--patches-per-image", help="Training patches per image and epoch (patch preset)."),
    sampling: Optional[str] = typer.Option(
        None, "--sampling", help="weighted (Deep-RSI) or balanced (DeepMammo batches)."),
    seed: int = typer.Option(0, "--seed", help="Seed (initialisation, sampling, patches)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers (0 = deterministic)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Train a source-identification model; never reads the test split."""
    from medforensics.errors import MedForensicsError
    from medforensics.train.engine import train

    try:
        res = train(
            manifest, label=label, preset=preset, out_dir=str(out), epochs=epochs,
            batch_size=batch_size, lr=lr, patch=patch, patches_per_image=patches_per_image,
            sampling=sampling, seed=seed, device=device, resume=resume, workers=workers,
            progress=progress,
        )
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    last = res.metrics[-1] if res.metrics else {}
    typer.echo(
        f"trained {preset} on {label} ({len(res.classes)} classes): best epoch {res.best_epoch}, "
        f"val balanced accuracy {res.best_val_balanced_accuracy:.3f}; "
        f"last epoch {last.get('epoch', '-')}; model in {out}"
    )


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
