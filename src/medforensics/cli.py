"""Command-line interface: ``medforensics <command>``.

Each command is a thin wrapper around the library; the work happens in the modules it calls.
Imports of heavy modules happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup


class _Commands(TyperGroup):
    """The command group: a write that fails (disk full, ...) ends with one clear line naming
    the output and exit code 1, not a traceback."""

    def invoke(self, ctx):  # click's signature
        try:
            return super().invoke(ctx)
        except OSError as exc:
            from medforensics.errors import OutputWriteError

            if not isinstance(exc, OutputWriteError) and exc.errno not in _WRITE_ERRNOS:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


def _write_errnos() -> frozenset:
    import errno

    names = ("ENOSPC", "EDQUOT", "EFBIG", "EROFS")
    return frozenset(getattr(errno, n) for n in names if hasattr(errno, n))


_WRITE_ERRNOS = _write_errnos()

app = typer.Typer(
    cls=_Commands,
    name="medforensics",
    help="Medical-image forensics: which device made an image, and was it altered?",
    no_args_is_help=True,
    add_completion=False,
)
forgery_app = typer.Typer(help="Forgery detection and localization.", no_args_is_help=True)
app.add_typer(forgery_app, name="forgery")
from medforensics.cli_pacs import DICOM_OUT_OPT, SEG_OPT, pacs_app  # noqa: E402
app.add_typer(pacs_app, name="pacs")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for the models (default: OMP_NUM_THREADS, else "
        "half the usable cores; see medforensics.common.runtime)."),
) -> None:
    from medforensics.common.runtime import configure_threads
    from medforensics.errors import ConfigError

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        configure_threads(threads)
    except ConfigError as exc:
        _fail(exc)


def _files_progress(results, total: int, label: str, enabled: Optional[bool]):
    """Yield ``results`` while a bar with files/s runs on stderr (``enabled=None``: on a TTY).

    After the last item one summary line (files, seconds, files/s) goes to stderr when the
    bar was shown, so a long batch always ends with its speed.
    """
    import sys
    import time

    show = sys.stderr.isatty() if enabled is None else bool(enabled)
    if not show:
        yield from results
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    t0, n = time.perf_counter(), 0
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, rate="")
        for item in results:
            n += 1
            bar.update(task, completed=n,
                       rate=f"{n / max(time.perf_counter() - t0, 1e-9):.1f} files/s")
            yield item
    dt = time.perf_counter() - t0
    typer.echo(f"{label}: {n} file(s) in {dt:.1f} s ({n / max(dt, 1e-9):.1f} files/s)", err=True)


_PROGRESS_OPT = typer.Option(
    None, "--progress/--no-progress", help="Progress bar with files/s on stderr (default: "
    "when stderr is a terminal).")


_SHARD_OPT = typer.Option(
    "auto", "--shard", help="Process shard K/N of the files (0-based, round-robin); 'auto' "
    "takes RANK/WORLD_SIZE from torchrun, 'none' all files.")
_OUT_OPT = typer.Option(
    None, "--out", help="Write JSON lines here (per shard: NAME.part-K-of-N.jsonl) instead of "
    "stdout.")


_ALLOW_MODIFIED_OPT = typer.Option(
    False, "--allow-modified-run", help="Load runs whose files differ from their run manifest "
    "(run.json) instead of refusing them; every verdict then says run_integrity 'modified'. "
    "Out-of-range values are refused regardless.")


def _warn_integrity(status: Optional[str], what: str = "run") -> None:
    """One stderr line when a loaded run is not ``verified`` (verdicts carry it too)."""
    if status == "modified":
        typer.echo(f"warning: the {what} was modified after it was written "
                   "(--allow-modified-run): its verdicts are not evidence", err=True)
    elif status == "unverified":
        typer.echo(f"warning: the {what} has no run manifest (run.json): its files could not "
                   "be checked; its verdicts say run_integrity 'unverified'", err=True)


def _batch_files(paths: List[Path], shard: str
                 ) -> "tuple[List[Path], tuple[int, int], str]":
    """This process's shard of the expanded files, ``(k, n)`` and a label for messages.

    Raises:
        ConfigError: a malformed ``--shard`` (or RANK/WORLD_SIZE).
    """
    from medforensics.common.sharding import parse_shard, take_shard

    k, n = parse_shard(shard)
    files = take_shard(_expand_paths(paths), k, n)
    return files, (k, n), ("" if n == 1 else f" [shard {k}/{n}]")


def _json_sink(out: Optional[Path], part: "tuple[int, int]"):
    """A ``write(line)`` callable and a ``close()``: stdout, or this shard's output file.

    A file is streamed to ``NAME.partial`` (whole lines only) and renamed to ``NAME`` by
    ``close()``, so ``NAME`` exists only complete (:class:`medforensics.common.atomic.JsonLinesOutput`).
    """
    if out is None:
        return typer.echo, (lambda ok=True: None)
    from medforensics.common.sharding import shard_output_path
    from medforensics.common.atomic import JsonLinesOutput

    sink = JsonLinesOutput(shard_output_path(out, *part))

    def close(ok: bool = True) -> None:  # ok=False: stopped early, keep NAME.partial only
        if ok:
            sink.close()
        else:
            sink.abandon()

    return sink.write, close


# --- section: data (simulate, ingest, split) -------------------------------------------------

def _int_range(text: str, what: str) -> "int | tuple[int, int]":
    """Parse "512" or "384-768" (also "384:768") for the simulate command."""
    parts = text.replace(":", "-").split("-")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise typer.BadParameter(f"{what} must be N or MIN-MAX, got {text!r}")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    vendor_look: bool = typer.Option(
        False, "--vendor-look/--no-vendor-look",
        help="Each manufacturer/model also applies its own processing look (LUT and contrast, "
        "edge enhancement, noise reduction, matrix formats, shutter, burned-in marker/text), "
        "varied per image. Default: devices differ only by their sensor fingerprint."),
) -> None:
    """Write a simulated multi-device X-ray archive (DICOM + devices.json ground truth)."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from medforensics.errors import MedForensicsError
    from medforensics.synth.detector import model_look
    from medforensics.synth.devices import build_devices, device_table, select_units
    from medforensics.synth.simulate import DEVICES_FILE, simulate_archive

    def csv(value: Optional[str]) -> list:
        return [v.strip() for v in (value or "").split(",") if v.strip()]

    mods = [m.upper() for m in csv(modality)] or ["DX", "CR"]
    kw = dict(manufacturers=manufacturers, models_per_manufacturer=models_per_manufacturer,
              units_per_model=units_per_model, seed=seed, modalities=mods)
    console = Console()
    if not console.is_terminal:  # piped/logged: keep the device table on one line per unit
        console = Console(width=170)
    t0 = time.perf_counter()
    try:
        units = select_units(build_devices(**kw), include=csv(include) if include else None,
                             exclude=csv(exclude))
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                      disable=not progress) as bar:
            task = bar.add_task("simulating", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            paths = simulate_archive(
                out, patients=patients,
                images_per_patient=_int_range(images_per_patient, "--images-per-patient"),
                size=_int_range(size, "--size"), transfer_syntax=transfer_syntax,
                multi_device_fraction=multi_device, include=csv(include) if include else None,
                exclude=csv(exclude), overwrite=overwrite, progress=tick,
                vendor_look=vendor_look, **kw)
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    cols = ("unit", "manufacturer", "model", "modality", "serial", "station", "bits",
            "photometric", "prnu_%", "psf", "sharpen", "grid")
    table = Table(title="simulated devices (ground truth)")
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in device_table(units):
        table.add_row(*(str(r[c]) for c in cols))
    console.print(table)
    if vendor_look:
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
    console.print(f"{len(paths)} DICOM files ({transfer_syntax}) for {len(units)} units in "
                  f"{time.perf_counter() - t0:.1f} s -> {out}/<PatientID>/<study>/<n>.dcm; "
                  f"ground truth: {out / DEVICES_FILE}")


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
    follow_links_outside: bool = typer.Option(
        False, "--follow-links-outside", help="Read files that links lead to outside the "
        "given folders (default: such links get a 'link-outside-roots' row, never opened)."),
) -> None:
    """Scan DICOM archives into a manifest: one row per file, status eligible or a reason."""
    from rich.console import Console
    from rich.table import Table

    from medforensics.data.manifest import (
        IngestFilters,
        ingest,
        summarize,
        write_manifest,
    )
    from medforensics.errors import MedForensicsError

    filters = IngestFilters(
        min_images_per_class=min_images, min_patients_per_class=min_patients,
        modalities=_csv_list(modality), views=_csv_list(views), min_size=min_size,
    )
    try:
        rows = ingest(dirs, label=label, filters=filters, workers=workers, verify=verify,
                      force=force, progress=progress, follow_links_outside=follow_links_outside)
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
    from medforensics.data.splits import (
        SPLITS,
        assign_splits,
        check_leakage,
        split_counts,
    )
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
    label: Optional[str] = typer.Option(
        None, "--label", help="Class label: manufacturer, model (default), unit."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="patch (default), deep-rsi or deepmammo."),
    out: Path = typer.Option(..., "--out", help="Run directory (model, checkpoints, metrics)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (preset default)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate."),
    patch: Optional[int] = typer.Option(
        None, "--patch", help="Patch side in native pixels (patch preset; default 64)."),
    patches_per_image: Optional[int] = typer.Option(
        None, "--patches-per-image", help="Training patches per image and epoch (patch preset)."),
    sampling: Optional[str] = typer.Option(
        None, "--sampling", help="weighted (Deep-RSI) or balanced (DeepMammo batches)."),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed of initialisation, sampling, patches (default 0)."),
    select: Optional[str] = typer.Option(
        None, "--select", help="Best epoch by: loss (patch default) or bacc (paper presets)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out (unset options keep the run's)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers (0 = deterministic)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    store: Optional[Path] = typer.Option(
        None, "--store", help="Prepared store (medforensics prepare): no decoding per epoch."),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate",
        help="After training: temperature + open-set thresholds (val), unit patterns (train)."),
    outlier_devices: Optional[int] = typer.Option(
        None, "--outlier-devices",
        help="Procedurally drawn 'none of these' devices (outlier exposure; patch default 16, "
             "0 = off)."),
) -> None:
    """Train a source-identification model (train split; validates on val; never reads test).

    Under torchrun (WORLD_SIZE > 1) the process group is started here (gloo on CPU, NCCL on
    CUDA); only rank 0 writes files and calibrates.
    """
    from medforensics.errors import MedForensicsError
    from medforensics.training.engine import init_distributed_from_env, train

    try:
        distributed = init_distributed_from_env(device)
        source = None
        if store is not None:
            from medforensics.data.store import open_store

            source = open_store(store, manifest)
        res = train(
            manifest, label=label, preset=preset, out_dir=str(out), epochs=epochs,
            batch_size=batch_size, lr=lr, patch=patch, patches_per_image=patches_per_image,
            sampling=sampling, seed=seed, select=select, device=device, resume=resume,
            workers=workers, outlier_devices=outlier_devices,
            progress=progress, image_source=source,
        )
        if calibrate and not distributed:
            _calibrate_after_training(out, manifest, device)
        elif calibrate:
            import torch.distributed as dist

            if dist.get_rank() == 0:
                _calibrate_after_training(out, manifest, device)
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    last = res.metrics[-1] if res.metrics else {}
    meta_cfg = res.config
    typer.echo(
        f"trained {meta_cfg.preset} on {meta_cfg.label} ({len(res.classes)} classes): "
        f"best epoch {res.best_epoch}, "
        f"val balanced accuracy {res.best_val_balanced_accuracy:.3f}; "
        f"last epoch {last.get('epoch', '-')}; model in {out}"
    )


def _calibrate_after_training(run: Path, manifest: Path, device: str) -> None:
    from medforensics.data.manifest import read_manifest
    from medforensics.source.predictor import enroll_units
    from medforensics.source.calibrate import calibrate_run, calibration_summary

    rows = read_manifest(manifest)
    if any(r.get("split") == "val" for r in rows):
        cal = calibrate_run(run, rows, device=device)
        typer.echo(f"calibrated on val: {calibration_summary(cal)}")
    if any(r.get("unit") and r.get("split") == "train" for r in rows):
        fps = enroll_units(run, rows)
        typer.echo(f"enrolled {len(fps.units)} unit reference patterns")


def _fail(exc: Exception) -> None:
    from medforensics.errors import OutputWriteError

    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1 if isinstance(exc, OutputWriteError) else 2) from None


@app.command("calibrate")
def calibrate_cmd(
    run: Path = typer.Argument(..., help="Trained run directory."),
    manifest: Path = typer.Option(..., "--manifest", help="The split manifest used to train."),
    target_false_unknown: float = typer.Option(
        0.05, "--target-false-unknown", help="Wanted UNKNOWN rate on known devices (val)."),
    units: bool = typer.Option(
        True, "--units/--no-units", help="Also enrol unit reference patterns (train split)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
) -> None:
    """Fit temperature scaling + open-set threshold on val, and enrol unit fingerprints.

    The new files' hashes go into the run manifest (run.json)."""
    from medforensics.data.manifest import read_manifest
    from medforensics.errors import MedForensicsError
    from medforensics.source.predictor import enroll_units
    from medforensics.source.calibrate import calibrate_run, calibration_summary

    try:
        rows = read_manifest(manifest)
        cal = calibrate_run(run, rows, target_false_unknown=target_false_unknown, device=device,
                            allow_modified=allow_modified_run)
        typer.echo(f"{calibration_summary(cal)}; val accuracy {cal['val_accuracy']:.3f}")
        if units and any(r.get("unit") for r in rows):
            fps = enroll_units(run, rows)
            typer.echo(f"enrolled {len(fps.units)} units into {run / 'fingerprints'}")
    except MedForensicsError as exc:
        _fail(exc)


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="Trained run directory."),
    manifest: Path = typer.Option(..., "--manifest", help="Split manifest."),
    split: str = typer.Option("test", "--split", help="train, val, test or all."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, report.md, PNGs)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    n_patches: Optional[int] = typer.Option(None, "--patches", help="Patches per image (patch)."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0,
        help="Resamples for 95 % confidence intervals over patients (0 = none)."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
) -> None:
    """Paper-grade evaluation: per-class TPR/TNR/PPV/NPV/AUC, confusion, ROC, per body part."""
    from medforensics.data.manifest import read_manifest
    from medforensics.errors import MedForensicsError
    from medforensics.source.evaluate import evaluate_run

    try:
        res = evaluate_run(run, read_manifest(manifest), out, split=split, device=device,
                           n_patches=n_patches, n_boot=bootstrap,
                           allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        _fail(exc)
        return
    _warn_integrity(res.get("run_integrity"))
    from medforensics.eval.tables import fmt_interval

    img, pat = res["image_level"], res["patient_level"]
    ci = res.get("intervals") or {}
    typer.echo(f"{res['n_images']} {split} images: accuracy {img['accuracy']:.4f}"
               f"{fmt_interval(ci.get('accuracy'), 3)}, balanced {img['balanced_accuracy']:.4f}"
               f"{fmt_interval(ci.get('balanced_accuracy'), 3)}, macro AUC "
               f"{img['macro_auc'] or float('nan'):.4f}{fmt_interval(ci.get('macro_auc'), 3)}; "
               f"patient level accuracy {pat['accuracy']:.4f}"
               + (f" [95 % CI over {ci['n_clusters']} patients]" if ci else ""))
    if "unit_level" in res:
        typer.echo(f"unit level (reference patterns): accuracy {res['unit_level']['accuracy']:.4f}")
    typer.echo(f"report: {out / 'report.md'}")


def _expand_paths(paths: List[Path]) -> List[Path]:
    """The files named, in order, each folder replaced by the files under it (sorted).

    Paths that do not exist are kept, so the batch reports them as unreadable.
    """
    from medforensics.data.files import find_files

    out: List[Path] = []
    for p in paths:
        out.extend(find_files([p]) if p.is_dir() else [p])
    return out


@app.command("identify")
def identify_cmd(
    run: Path = typer.Argument(..., help="Trained (and calibrated) run directory."),
    paths: List[Path] = typer.Argument(..., help="Image files or folders (recursive)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    workers: int = typer.Option(
        0, "--workers", help="Decode-ahead worker processes (0 = in-process); same results."),
    n_patches: Optional[int] = typer.Option(
        None, "--patches", help="Patches per image (patch preset; default: the run's "
        "calibration, 64). Fewer is faster and less accurate: see docs/source_id.md."),
    progress: Optional[bool] = _PROGRESS_OPT,
    shard: str = _SHARD_OPT,
    out: Optional[Path] = _OUT_OPT,
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
    dicom_out: Optional[Path] = DICOM_OUT_OPT,
) -> None:
    """Which device made each image? consistent / MISMATCH / UNKNOWN / claim-not-in-model /
    no-header-claim / insufficient-evidence / unreadable verdicts.

    A device is named only when an enrolled unit's pattern matches or the classifier's
    open-set test passes ("named" in the JSON; docs/openset.md); otherwise UNKNOWN.

    Streams: memory stays flat over any number of files (the text table is printed in
    blocks of 200 rows; --json or --out give one JSON line per file). Under torchrun each
    process takes its own shard of the files.
    """
    import json as _json

    from medforensics.errors import MedForensicsError
    from medforensics.source.predictor import SourcePredictor, identify_files
    from medforensics.source.verdicts import format_table

    try:
        predictor = SourcePredictor.from_run(run, device=device, n_patches=n_patches,
                                             allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        _fail(exc)
        return
    _warn_integrity(predictor.run_integrity)
    try:
        files, part, where = _batch_files(paths, shard)
        write, close = _json_sink(out, part) if (as_json or out) else (None, None)
    except MedForensicsError as exc:
        _fail(exc)
        return
    verdicts: list = []

    def flush() -> None:
        typer.echo(format_table([v for v, _ in verdicts], details=True))
        for v, e in verdicts:
            if "unit" not in e:
                continue
            claim = e.get("unit_claim") or "-"
            said = e["unit"] or "no enrolled unit"
            flag = "" if e["unit"] is None or e["unit"] == claim else "  <-- unit differs from header"
            typer.echo(f"unit: {v.path}: header {claim}; pattern says {said} "
                       f"(PCE {e['unit_score']:.0f}){flag}")
        verdicts.clear()

    results = identify_files(predictor, files, workers=workers)
    from medforensics.cli_pacs import identify_dicom_out
    results = identify_dicom_out(results, dicom_out, run, predictor)
    try:
        for v, extra in _files_progress(results, len(files), "identify" + where, progress):
            if write is not None:
                write(_json.dumps({**v.to_dict(), **extra}))
                continue
            verdicts.append((v, extra))
            if len(verdicts) >= 200:
                flush()
    except BaseException:
        if close is not None:
            close(False)
        raise
    if close is not None:
        close()
    if verdicts:
        flush()


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
    copy_source: str = typer.Option(
        "content", "--copy-source",
        help="Copy-move source: content (default; no flat or clipped background), clipped "
             "(only clipped background: a constant fill) or any."),
) -> None:
    """Generate tampered images with exact masks plus matched untampered originals."""
    from medforensics.errors import MedForensicsError
    from medforensics.synth.tamper import generate

    try:
        lo, hi = (int(v) for v in sizes.split(","))
    except ValueError:
        raise typer.BadParameter("--sizes must be MIN,MAX (two integers)") from None
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    try:
        rep = generate(source, out, kinds=kind_list, seed=seed, sizes=(lo, hi), n=n,
                       feather=feather,
                       options={"rotate": rotate, "scale": scale, "copy_source": copy_source})
    except MedForensicsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    n_t = sum(r["label"] == "tampered" for r in rep.rows)
    typer.echo(f"wrote {n_t} tampered + {len(rep.rows) - n_t} original images; "
               f"manifest {rep.manifest_path}")
    if rep.failures:
        typer.echo(f"{len(rep.failures)} input(s) failed, see {out / 'failures.csv'}", err=True)


@forgery_app.command("train")
def forgery_train_cmd(
    manifest: Path = typer.Argument(..., help="Tamper manifest (from `medforensics tamper`)."),
    preset: str = typer.Option(..., "--preset", help="ela-cnn (paper) or cues (ours)."),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="ela-cnn epochs (default 30)."),
    seed: int = typer.Option(0, "--seed", help="Seed of split, initialisation, batch order."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="cues: source patch run for the fingerprint cue."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="ela-cnn batch (32)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="ela-cnn Adam learning rate (1e-3)."),
    resplit: bool = typer.Option(
        False, "--resplit", help="Ignore the manifest's own split column."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    texture: bool = typer.Option(
        False, "--texture/--no-texture", help="cues: also feed the noise-texture cue."),
    seam: bool = typer.Option(
        False, "--seam/--no-seam", help="cues: also feed the paste seam cue."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
) -> None:
    """Train a forgery detector (original vs tampered; split by source image / patient)."""
    from medforensics.errors import MedForensicsError
    from medforensics.forgery.train import train_forgery

    try:
        res = train_forgery(manifest, preset=preset, out_dir=out, epochs=epochs, seed=seed,
                            device=device, resume=resume, source_run=source_model,
                            batch_size=batch_size, lr=lr, resplit=resplit, progress=progress,
                            texture=texture, seam=seam, allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        _fail(exc)
    extra = ""
    if res.preset == "ela-cnn" and res.history:
        last = res.history[-1]
        extra = (f"; best epoch {res.best_epoch}, last train acc {last['train_acc']:.3f}"
                 + (f", val acc {last['val_acc']:.3f}" if "val_acc" in last else ""))
    elif res.history:
        extra = f"; train image accuracy {res.history[0].get('train_image_accuracy', 0):.3f}"
    typer.echo(f"trained {res.preset} on {res.counts}{extra}; model in {out}")
    if res.failures:
        typer.echo(f"{len(res.failures)} image(s) could not be used:", err=True)
        for path, reason in res.failures:
            typer.echo(f"  {path}: {reason}", err=True)


@forgery_app.command("evaluate")
def forgery_evaluate_cmd(
    run: str = typer.Argument(..., help="Forgery run directory, or 'none' (training-free)."),
    manifest: Path = typer.Option(..., "--manifest", help="Tamper manifest."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, roc.png, ...)."),
    split: str = typer.Option(
        "auto", "--split", help="auto (the run's test split of this manifest, else all), "
        "all, train, val, test."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="Source patch run for the fingerprint cue."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated kinds only."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many pairs."),
    ela: str = typer.Option(
        "auto", "--ela", help="Training-free ELA cue: auto (lossy inputs), always, never."),
    texture: bool = typer.Option(
        True, "--texture/--no-texture", help="Training-free noise-texture cue (default on)."),
    seam: bool = typer.Option(
        True, "--seam/--no-seam", help="Training-free hard-edged paste seam cue (default on)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0,
        help="Resamples for 95 % confidence intervals over source images (0 = none)."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
) -> None:
    """Image-level and pixel-level metrics of a forgery detector on a tamper manifest."""
    from medforensics.errors import MedForensicsError
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.evaluate import evaluate_detector

    try:
        det = ForgeryDetector.from_run(run, source_run=source_model, device=device, ela=ela,
                                       texture=texture, seam=seam,
                                       allow_modified=allow_modified_run)
        _warn_integrity(det.run_integrity)
        res = evaluate_detector(det, manifest, out_dir=out, split=split, limit=limit,
                                n_boot=bootstrap, kinds=None if kinds is None else
                                [k.strip() for k in kinds.split(",") if k.strip()])
    except MedForensicsError as exc:
        _fail(exc)
    def f3(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) and v == v else "n/a"

    from medforensics.eval.tables import fmt_interval

    ci = res.get("ci") or {}

    def iv(d: dict, key: str) -> str:
        return fmt_interval(d.get(key))

    im = res["image"]
    px = res["pixel"]
    typer.echo(f"{res['method']} on {res['rows']}: {res['n_tampered']} tampered + "
               f"{res['n_original']} original"
               + (f"; [95 % CI over {ci['n_clusters']} source images]" if ci else ""))
    typer.echo(f"image: AUC {f3(im.get('auc'))}{iv(ci, 'image_auc')}, accuracy "
               f"{f3(im.get('accuracy'))}{iv(ci, 'accuracy')}, precision "
               f"{f3(im.get('precision'))}, recall {f3(im.get('recall'))}, F1 {f3(im.get('f1'))}"
               f" (threshold {res['threshold']:.2f})")
    typer.echo(f"pixel (tampered, {res['band']}-px band out): F1-best {f3(px.get('f1_best'))}"
               f"{iv(ci, 'pixel_f1_best')}, F1@0.5 {f3(px.get('f1_fixed'))}, IoU@0.5 "
               f"{f3(px.get('iou_fixed'))}, AUC {f3(px.get('auc'))}")
    for k, auc in res["image_auc_by_kind"].items():
        pk = res["pixel_by_kind"].get(k, {})
        ck = ci.get("by_kind", {}).get(k, {})
        typer.echo(f"  {k}: image AUC {f3(auc)}{iv(ck, 'image_auc')}, pixel F1-best "
                   f"{f3(pk.get('f1_best'))}{iv(ck, 'pixel_f1_best')}")
    if res["failures"]:
        typer.echo(f"{len(res['failures'])} file(s) failed (listed in metrics.json)", err=True)
    typer.echo(f"wrote {out / 'metrics.json'}")


def _detect_line(path: str, r: object) -> str:
    """The one-line verdict of ``forgery detect`` (no number where nothing was measured)."""
    import math

    def num(v: object, fmt: str) -> str | None:
        return None if v is None or not math.isfinite(float(v)) else format(float(v), fmt)

    score = num(getattr(r, "score", None), ".3f")
    area = num(getattr(r, "forged_area_percent", None), ".2f")
    ela = num(getattr(r, "ela_score", None), ".2f")
    cov = num(getattr(r, "covered_fraction", None), ".0%")
    reason = getattr(r, "inconclusive_reason", None)
    return (f"{path}: {r.verdict}" + (f" ({reason})" if reason else "")
            + f"; score {score or 'n/a'} (threshold {r.threshold:.2f})"
            + (f", forged area {area} %" if area is not None else "")
            + (f", ELA score {ela}" if ela is not None else ", ELA not run")
            + (f", {cov} of the image readable" if cov is not None else ""))


def _region_line(i: int, reg: dict) -> str:
    """One flagged area of ``forgery detect`` as text."""
    x0, y0, x1, y1 = reg["bbox"]
    line = (f"area {i}: ({x0}, {y0})-({x1}, {y1}), {x1 - x0} x {y1 - y0} px, "
            f"{reg['area_percent']:.2f} % of the image, cue {reg.get('cue') or '-'}")
    cp = reg.get("copy_of")
    if cp:
        px0, py0, px1, py1 = cp["partner_bbox"]
        turn = cp.get("transform") or "identity"
        role = cp.get("role") or "undetermined"
        what = ("direction undetermined: either area could be the paste" if role ==
                "undetermined" else f"this area: {role}" + (
                    f" ({cp['cue']})" if cp.get("cue") else ""))
        line += (f"; copy-move partner ({px0}, {py0})-({px1}, {py1}) [{what}"
                 + ("" if turn == "identity" else f", {turn}")
                 + (", matched by content" if cp.get("method") == "content" else "") + "]")
    if reg.get("coarse_lattice"):
        line += "; values on a coarse lattice (scaled up from fewer grey levels)"
    return line


@forgery_app.command("detect")
def forgery_detect_cmd(
    run: str = typer.Argument(..., help="Forgery run directory, or 'none' (training-free)."),
    paths: List[Path] = typer.Argument(
        ..., help="Image files (DICOM, PNG, JPEG, TIFF) or folders (recursive)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of text."),
    maps: Optional[Path] = typer.Option(
        None, "--maps", help="Write maps here: 16-bit PNG + .npy at native size, overlay PNG."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="Source patch run: adds the fingerprint cue."),
    ela: str = typer.Option(
        "auto", "--ela", help="Training-free ELA cue: auto (lossy inputs), always, never."),
    texture: bool = typer.Option(
        True, "--texture/--no-texture", help="Training-free noise-texture cue (default on)."),
    seam: bool = typer.Option(
        True, "--seam/--no-seam", help="Training-free hard-edged paste seam cue (default on)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    progress: Optional[bool] = _PROGRESS_OPT,
    shard: str = _SHARD_OPT,
    out: Optional[Path] = _OUT_OPT,
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
    dicom_out: Optional[Path] = DICOM_OUT_OPT,
    seg: str = SEG_OPT,
) -> None:
    """Forgery score, verdict, forged area and ELA score per image (unreadable files reported).

    Streams one line per file (flat memory over any number of files). Under torchrun each
    process takes its own shard of the files."""
    import json as _json

    from medforensics.errors import MedForensicsError
    from medforensics.forgery.detector import ForgeryDetector, detect_files
    from medforensics.report.images import MapWriter

    try:
        det = ForgeryDetector.from_run(run, source_run=source_model, device=device, ela=ela,
                                       texture=texture, seam=seam,
                                       allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        _fail(exc)
    _warn_integrity(det.run_integrity)
    n_bad = 0
    try:
        files, part, where = _batch_files(paths, shard)
        write, close = _json_sink(out, part) if (as_json or out) else (typer.echo, None)
    except MedForensicsError as exc:
        _fail(exc)
        return
    if maps is not None and where:  # map names are unique per process: one folder per shard
        maps = maps / "part-{}-of-{}".format(*part)
    results = detect_files(det, files, write_files=None if maps is None else MapWriter(maps))
    from medforensics.cli_pacs import forgery_dicom_out
    results = forgery_dicom_out(results, dicom_out, run, det, seg)
    try:
        for fr in _files_progress(results, len(files), "detect" + where, progress):
            if fr.result is None:
                n_bad += 1
            if as_json or out:
                write(_json.dumps(fr.to_dict()))
            elif fr.result is None:
                write(f"{fr.path}: unreadable ({fr.reason}): {fr.error}")
            else:
                r = fr.result
                write(_detect_line(fr.path, r)
                      + (f"; map {fr.files['map_png']}" if fr.files else ""))
                for i, reg in enumerate(getattr(r, "regions", [])[:3], 1):
                    write("  " + _region_line(i, reg))
    except BaseException:
        if close is not None:
            close(False)
        raise
    if close is not None:
        close()
    if n_bad:
        typer.echo(f"{n_bad} of {len(files)} file(s) could not be analysed", err=True)
        raise typer.Exit(1)

# --- end section: forgery ---------------------------------------------------------------------

# --- section: pipeline (demo, prepare, export, report, serve) ---------------------------------

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
    from medforensics.errors import MedForensicsError

    cfg = DemoConfig(out_dir=str(out), seed=seed, patients=patients, epochs=epochs,
                     device=device, forgery=forgery)
    try:
        report = run_demo(cfg, echo=typer.echo)
    except MedForensicsError as exc:
        _fail(exc)
        return
    typer.echo(f"\nreport: {report.resolve()}")


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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Decode every eligible image once into a memory-mapped store for fast training."""
    from medforensics.data.store import prepare_store
    from medforensics.errors import MedForensicsError

    try:
        rep = prepare_store(manifest, out, workers=workers, paper=paper,
                            splits=_csv_list(splits), progress=progress)
    except MedForensicsError as exc:
        _fail(exc)
        return
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


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run directory (or its model.json) of a trained model."),
    onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write (e.g. model.onnx)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 17)."),
    exporter: str = typer.Option(
        "dynamo", "--exporter", help="dynamo (torch.export, default) or torchscript (legacy)."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare onnxruntime with PyTorch on random inputs."),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", help="Parity: max |logit diff| <= tol * max(1, max |logit|)."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
) -> None:
    """Export a trained model to ONNX (dynamic batch; metadata in metadata_props)."""
    from medforensics.errors import MedForensicsError
    from medforensics.models.export import export_onnx

    try:
        res = export_onnx(run, onnx, opset=opset, exporter=exporter, check=check,
                          tolerance=tolerance, allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        _fail(exc)
        return
    axes = ", ".join(f"{i}:{n}" for i, n in res.dynamic_axes.items())
    typer.echo(f"wrote {res.path} ({res.preset}, {res.metadata['num_classes']} classes, "
               f"opset {res.opset}, {res.exporter} exporter, dynamic axes {axes}, "
               f"{res.bytes / 1e6:.1f} MB)")
    if res.parity is not None:
        p = res.parity
        typer.echo(f"parity with onnxruntime: max |logit diff| {p.max_abs_diff:.2e} "
                   f"(allowed {p.allowed:.1e}), arg-max agreement {p.argmax_agreement:.0%} "
                   f"on inputs {', '.join('x'.join(map(str, s)) for s in p.shapes)}")


@app.command("serve")
def serve_cmd(
    source_model: Path = typer.Option(..., "--source-model", help="Trained source run directory."),
    forgery_model: Optional[Path] = typer.Option(
        None, "--forgery-model", help="Forgery run directory (without it /v1/forgery is 503)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="MEDFORENSICS_TOKEN",
        help="Bearer token required on /v1 (prefer the MEDFORENSICS_TOKEN variable)."),
    max_upload_mb: float = typer.Option(200, "--max-upload-mb", help="Largest upload (MiB)."),
    timeout: float = typer.Option(60, "--timeout", help="Time limit per upload+analysis (s)."),
    allow_no_token: bool = typer.Option(
        False, "--allow-no-token", help="Allow a non-loopback --host without a token."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
    allow_unmasked_reports: bool = typer.Option(
        False, "--allow-unmasked-reports", help="Let /v1/report?mask_identifiers=false show "
        "patient and institution identifiers (refused with 403 otherwise)."),
) -> None:
    """Web service + browser page: upload an image, get the device verdict and forgery map."""
    from medforensics.errors import MedForensicsError
    from medforensics.service.app import create_app
    from medforensics.service.server import is_loopback, loopback_hosts, serve

    local = is_loopback(host)
    if not local and token is None and not allow_no_token:
        _fail(ValueError(f"--host {host} is reachable from other machines: set --token (or "
                         "MEDFORENSICS_TOKEN), or pass --allow-no-token"))
    try:
        web = create_app(source_model, forgery_model, token=token,
                         max_upload_bytes=int(max_upload_mb * 2**20), timeout_s=timeout,
                         allowed_hosts=loopback_hosts(host) if local else None, device=device,
                         allow_modified_run=allow_modified_run,
                         allow_unmasked_reports=allow_unmasked_reports)
    except MedForensicsError as exc:
        _fail(exc)
        return
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"medforensics service on http://{shown}:{port}/ (API schema: /openapi.json); "
               f"forgery model: {'loaded' if forgery_model else 'none'}; "
               f"token: {'required' if token else 'none'}; Ctrl-C stops")
    serve(web, host=host, port=port)


@app.command("report")
def report_cmd(
    paths: List[Path] = typer.Argument(..., help="Image files or folders (recursive)."),
    out: Path = typer.Option(
        ..., "--out", help="report.html (exactly one image) or a folder (one page per image "
        "+ index.html)."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="Trained (and calibrated) source run directory."),
    forgery_model: Optional[Path] = typer.Option(
        None, "--forgery-model",
        help="Forgery detector run directory, or 'cues' for the training-free detector."),
    show_identifiers: bool = typer.Option(
        False, "--show-identifiers",
        help="Show patient/institution identifiers and file paths (masked by default)."),
    force: bool = typer.Option(
        False, "--force", help="Read DICOM without file meta (ACR-NEMA) instead of refusing it."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = _ALLOW_MODIFIED_OPT,
) -> None:
    """Self-contained HTML case reports: image, device verdict, forgery map, header, provenance."""
    from medforensics.errors import MedForensicsError
    from medforensics.report.batch import write_report

    if source_model is None and forgery_model is None:
        typer.echo("warning: neither --source-model nor --forgery-model given: the pages "
                   "show the image, header and provenance only", err=True)
    try:
        res = write_report(paths, out, source=source_model, forgery=forgery_model,
                           mask_identifiers=not show_identifiers, force=force, device=device,
                           allow_modified_run=allow_modified_run)
    except MedForensicsError as exc:
        _fail(exc)
        return
    where = res.index if res.index is not None else res.pages[0]
    typer.echo(f"wrote {len(res.pages)} case page(s); open {where}")
    if res.n_unreadable:
        typer.echo(f"{res.n_unreadable} file(s) could not be read (their pages say why)")
    if res.n_failed:
        typer.echo(f"error: the report failed for {res.n_failed} file(s) (see the log)", err=True)
        raise typer.Exit(1)


@app.command("seal")
def seal_cmd(
    run: Path = typer.Argument(..., help="Run directory written before run manifests."),
) -> None:
    """Vouch for a run as it is now: hash its files into its run manifest (run.json).

    For runs written before run manifests (their verdicts say run_integrity 'unverified').
    Check the run first: after sealing, any change to its files is refused when it loads."""
    from medforensics.errors import MedForensicsError
    from medforensics.models.runfiles import seal_run

    try:
        path = seal_run(run)
    except MedForensicsError as exc:
        _fail(exc)
        return
    typer.echo(f"wrote {path}")


# --- end section: pipeline --------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
