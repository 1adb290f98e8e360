"""Data commands: ``simulate``, ``ingest``, ``split``, ``prepare``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from medforensics.cli._common import (
    EXIT_PARTIAL,
    EXIT_USAGE,
    PROGRESS_OPT,
    app,
    csv_list,
    fail,
    tick_progress,
)
from medforensics.errors import MedForensicsError

#: The calibration's default false-UNKNOWN target (``calibrate --target-false-unknown``): the
#: validation split needs enough images to back it (:func:`min_images_for` of half of it).
_CALIBRATION_TARGET = 0.05


def _int_range(text: str, what: str) -> int | tuple[int, int]:
    """Parse "512" or "384-768" (also "384:768") for the simulate command."""
    parts = text.replace(":", "-").split("-")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise typer.BadParameter(f"{what} must be N or MIN-MAX, got {text!r}")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


def _csv(value: Optional[str]) -> list[str]:
    return list(csv_list(value) or ())


@app.command("simulate")
def simulate_cmd(
    out: Path = typer.Argument(..., help="Output directory of the simulated archive."),
    manufacturers: int = typer.Option(3, "--manufacturers", help="Fictional manufacturers."),
    models_per_manufacturer: int = typer.Option(2, "--models-per-manufacturer"),
    units_per_model: int = typer.Option(2, "--units-per-model"),
    patients: int = typer.Option(48, "--patients", help="Patients (over all units)."),
    images_per_patient: str = typer.Option(
        "2-4", "--images-per-patient", help="Images per study: N or MIN-MAX."),
    seed: int = typer.Option(0, "--seed", help="Seed of devices, content, noise and UIDs."),
    size: str = typer.Option(
        "384-768", "--size", help="Image side in px: N (square NxN) or MIN-MAX (rows and cols "
        "drawn independently); up to 8192."),
    transfer_syntax: str = typer.Option(
        "explicit", "--transfer-syntax", help="explicit|implicit|rle|jpeg-ls|j2k (lossless)."),
    modality: str = typer.Option(
        "DX,CR", "--modality", help="Modalities given to the models in turn, e.g. DX,CR or MG."),
    multi_device: float = typer.Option(
        0.1, "--multi-device-fraction", help="Share of patients with a study on a 2nd unit."),
    include: Optional[str] = typer.Option(
        None, "--include", help="Write only these devices (ids like 0.1.0, 0.1, or serials)."),
    exclude: Optional[str] = typer.Option(
        None, "--exclude", help="Hold out these devices (same selectors as --include)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty dir."),
    progress: Optional[bool] = PROGRESS_OPT,
    vendor_look: bool = typer.Option(
        False, "--vendor-look/--no-vendor-look",
        help="Each manufacturer/model also applies its own processing look (LUT and contrast, "
        "edge enhancement, noise reduction, matrix formats, shutter, burned-in marker/text), "
        "varied per image. Default: devices differ only by their sensor fingerprint."),
) -> None:
    """Write a simulated multi-device X-ray archive (DICOM + devices.json ground truth)."""
    from medforensics.synth.simulate import (
        DEVICES_FILE,
        build_devices,
        select_units,
        simulate_archive,
    )

    mods = [m.upper() for m in _csv(modality)] or ["DX", "CR"]
    kw = dict(manufacturers=manufacturers, models_per_manufacturer=models_per_manufacturer,
              units_per_model=units_per_model, seed=seed, modalities=mods)
    chosen = _csv(include) if include else None
    t0 = time.perf_counter()
    try:
        units = select_units(build_devices(**kw), include=chosen, exclude=_csv(exclude))
        with tick_progress("simulate", progress) as tick:
            paths = simulate_archive(
                out, patients=patients,
                images_per_patient=_int_range(images_per_patient, "--images-per-patient"),
                size=_int_range(size, "--size"), transfer_syntax=transfer_syntax,
                multi_device_fraction=multi_device, include=chosen, exclude=_csv(exclude),
                overwrite=overwrite, progress=tick, vendor_look=vendor_look, **kw)
    except MedForensicsError as exc:
        fail(exc)
    console = _console()
    _print_devices(console, units, seed, vendor_look)
    console.print(f"{len(paths)} DICOM files ({transfer_syntax}) for {len(units)} units in "
                  f"{time.perf_counter() - t0:.1f} s -> {out}/<PatientID>/<study>/<n>.dcm; "
                  f"ground truth: {out / DEVICES_FILE}")


def _console() -> Any:
    """A rich console on stdout; one line per table row when piped or logged."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=170)


def _print_devices(console: Any, units: list, seed: int, vendor_look: bool) -> None:
    """The ground-truth device table, and the per-model vendor looks when they are on."""
    from rich.table import Table

    from medforensics.synth.detector import model_look
    from medforensics.synth.devices import device_table

    cols = ("unit", "manufacturer", "model", "modality", "serial", "station", "bits",
            "photometric", "prnu_%", "psf", "sharpen", "grid")
    table = Table(title="simulated devices (ground truth)")
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in device_table(units):
        table.add_row(*(str(r[c]) for c in cols))
    console.print(table)
    if not vendor_look:
        return
    looks = Table(title="vendor looks (per model; each image varies around them)")
    for col in ("model", "lut", "slope", "centre", "edge", "equalise", "denoise",
                "matrices (long pos, aspect)", "fov", "shutter", "marker", "text"):
        looks.add_column(col, overflow="fold")
    seen: set = set()
    for u in units:
        if u.model_id in seen:
            continue
        seen.add(u.model_id)
        lk = model_look(u.model, seed)
        looks.add_row(
            f"{u.model_id} {u.model.name}", lk.lut, f"{lk.lut_slope:.2f}",
            f"{lk.lut_center:.2f}", f"{lk.edge_amount:.2f}", f"{lk.eq_amount:+.2f}",
            f"{lk.nr_amount:.2f}", " ".join(f"{a:.2f}/{b:.2f}" for a, b in lk.matrices),
            f"{lk.fov_scale:.2f}", f"{lk.shutter} {lk.shutter_probability:.0%}",
            f"{lk.marker_corner} {lk.marker_probability:.0%}",
            f"{lk.text_corner} {lk.text_probability:.0%}")
    console.print(looks)


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
    progress: Optional[bool] = PROGRESS_OPT,
    follow_links_outside: bool = typer.Option(
        False, "--follow-links-outside", help="Read files that links lead to outside the "
        "given folders (default: such links get a 'link-outside-roots' row, never opened)."),
) -> None:
    """Scan DICOM archives into a manifest: one row per file, status eligible or a reason."""
    from rich.table import Table

    from medforensics.data.manifest import (
        IngestFilters,
        ingest,
        summarize,
        write_manifest,
    )

    filters = IngestFilters(
        min_images_per_class=min_images, min_patients_per_class=min_patients,
        modalities=csv_list(modality), views=csv_list(views), min_size=min_size,
    )
    try:
        rows = ingest(dirs, label=label, filters=filters, workers=workers, verify=verify,
                      force=force, progress=progress is not False,
                      follow_links_outside=follow_links_outside)
        write_manifest(rows, out)
    except MedForensicsError as exc:
        fail(exc)
    summary = summarize(rows, label)
    console = _console()
    table = Table(title=f"eligible images per {label}")
    for col, justify in ((label, "left"), ("images", "right"), ("patients", "right")):
        table.add_column(col, justify=justify)
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
    force: bool = typer.Option(
        False, "--force", help="Replace the splits of a manifest that already has them."),
) -> None:
    """Assign train/val/test splits to the eligible rows and check for leakage.

    A manifest that already has splits is not overwritten unless --force is given (a model
    trained on the old splits would otherwise be evaluated on images it was trained on)."""
    from medforensics.data.manifest import read_manifest, write_manifest
    from medforensics.data.splits import assign_splits, check_leakage
    from medforensics.errors import LeakageError

    target = out or manifest
    try:
        rows = read_manifest(manifest)
        if not force:
            _refuse_existing_splits(target, rows if target == manifest else None)
        assign_splits(rows, by=by, test=test, val=val, seed=seed,
                      stratify=None if stratify.lower() == "none" else stratify)
    except MedForensicsError as exc:
        fail(exc)
    column = "status" if stratify.lower() == "none" else stratify
    _print_split_table(rows, column)
    strict = ("sha256",) if by == "image" else ("PatientID", "StudyInstanceUID", "sha256")
    try:
        check_leakage(rows, keys=strict)
    except LeakageError as exc:
        typer.echo(f"error: leakage: {exc}", err=True)
        raise typer.Exit(EXIT_PARTIAL) from None
    if by == "image":
        try:
            check_leakage(rows, keys=("PatientID",))
        except LeakageError as exc:
            typer.echo("warning: --by image puts images of one patient in several splits "
                       f"(the Deep-RSI protocol): {exc}", err=True)
    _warn_small_splits(rows)
    write_manifest(rows, target)
    typer.echo(f"no file-hash leakage; wrote {target}" if by == "image" else
               f"no patient/study/file leakage; wrote {target}")


def _refuse_existing_splits(target: Path, rows: Optional[list]) -> None:
    """Exit 2 when ``target`` already holds split assignments (``rows``: its rows, if read)."""
    from medforensics.data.manifest import read_manifest

    if rows is None:
        if not target.exists():
            return
        try:
            rows = read_manifest(target)
        except MedForensicsError:
            typer.echo(f"error: {target} exists; pass --force to replace it", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    counts = {s: sum(r.get("split") == s for r in rows) for s in ("train", "val", "test")}
    if any(counts.values()):
        have = ", ".join(f"{s} {n}" for s, n in counts.items())
        typer.echo(f"error: {target} already has splits ({have} images); pass --force to "
                   "replace them, or --out NEW.csv to write the new splits elsewhere", err=True)
        raise typer.Exit(EXIT_USAGE)


def _print_split_table(rows: list, column: str) -> None:
    from rich.table import Table

    from medforensics.data.splits import SPLITS, split_counts

    table = Table(title=f"images per split and {column}")
    table.add_column(column)
    for s in SPLITS:
        table.add_column(s, justify="right")
    counts = split_counts(rows, column)
    for cls, c in counts.items():
        table.add_row(cls, *(str(c[s]) for s in SPLITS))
    table.add_row("total", *(str(sum(c[s] for c in counts.values())) for s in SPLITS))
    _console().print(table)


def _warn_small_splits(rows: list) -> None:
    """Say so, with the numbers, when val or test is empty or too small for its job."""
    from medforensics.source.openset import min_images_for

    need_val = min_images_for(_CALIBRATION_TARGET / 2)
    n = {s: sum(r.get("split") == s for r in rows) for s in ("val", "test")}
    if n["val"] == 0:
        typer.echo("warning: the val split is empty: training cannot pick its best epoch and "
                   "calibrate has nothing to fit (raise --val)", err=True)
    elif n["val"] < need_val:
        typer.echo(f"warning: the val split has {n['val']} images; an UNKNOWN threshold at a "
                   f"{_CALIBRATION_TARGET:.0%} false-UNKNOWN rate needs at least {need_val} "
                   "(raise --val, or add patients)", err=True)
    if n["test"] == 0:
        typer.echo("warning: the test split is empty: evaluate has nothing to measure "
                   "(raise --test)", err=True)
    elif n["test"] < 20:
        typer.echo(f"warning: the test split has {n['test']} images: its figures will have "
                   "wide confidence intervals", err=True)


@app.command("prepare")
def prepare_cmd(
    manifest: Path = typer.Argument(..., help="Manifest CSV (from ingest / split)."),
    out: Path = typer.Option(..., "--out", help="Store directory (created, or updated in place)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Decode processes (default: CPU count; 1 = serial)."),
    paper: bool = typer.Option(
        True, "--paper/--no-paper", help="Also cache the 256x256 8-bit paper variants."),
    splits: Optional[str] = typer.Option(
        None, "--splits", help="Only rows of these splits, e.g. train,val (default: all)."),
    progress: Optional[bool] = PROGRESS_OPT,
) -> None:
    """Decode every eligible image once into a memory-mapped store for fast training."""
    from medforensics.data.store import prepare_store

    try:
        rep = prepare_store(manifest, out, workers=workers, paper=paper,
                            splits=csv_list(splits), progress=progress is not False)
    except MedForensicsError as exc:
        fail(exc)
    typer.echo(
        f"store {out}: {rep.n_cached}/{rep.n_selected} eligible images cached "
        f"({rep.n_decoded} decoded, {rep.n_reused} already stored, {rep.n_duplicates} "
        f"duplicates) in {rep.seconds:.1f} s, {rep.images_per_second:.1f} images/s with "
        f"{rep.workers or 1} process(es), {rep.bytes_written / 1e6:.1f} MB written"
    )
    if rep.skipped:
        typer.echo("not selected: " + ", ".join(f"{n} ({k})" for k, n in rep.skipped.items()))
    if rep.failures:
        typer.echo(f"{len(rep.failures)} image(s) could not be cached (listed in "
                   f"{out / 'index.json'}, training will refuse them):", err=True)
        for f in rep.failures[:20]:
            typer.echo(f"  {f.path}: {f.reason}: {f.detail}", err=True)
        if len(rep.failures) > 20:
            typer.echo(f"  ... and {len(rep.failures) - 20} more", err=True)
        raise typer.Exit(EXIT_PARTIAL)
