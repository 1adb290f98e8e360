"""The main job, end to end on the built-in simulated archive (``medforensics demo``).

Steps (each one is also a CLI command; the demo only chains them):

1. ``simulate``: a small multi-device archive of DICOM files (3 manufacturers x 2 models x
   2 units by default), devices differing only by their detector fingerprint;
2. ``ingest``: headers into a manifest, with a status for every file;
3. ``split``: patient-level, stratified by model, leakage-checked;
4. ``train``: the ``patch`` model on native-resolution patches (label ``model``);
5. ``calibrate``: temperature + open-set threshold on validation, unit reference patterns;
6. ``evaluate``: the test split, paper-style tables and figures;
7. ``identify``: a few test images, plus one whose header was edited to claim another device
   and one unreadable file;
8. a Markdown report (``REPORT.md``) linking everything.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medforensics.data.manifest import ingest, write_manifest
from medforensics.data.splits import assign_splits, check_leakage
from medforensics.demo.forgery import forgery_demo
from medforensics.eval.tables import fmt_interval
from medforensics.source.evaluate import evaluate_run
from medforensics.source.calibrate import calibrate_run, calibration_summary
from medforensics.source.predictor import SourcePredictor, enroll_units, identify_files
from medforensics.source.schema import identify_record
from medforensics.source.verdicts import format_table
from medforensics.synth.simulate import simulate_archive
from medforensics.training.engine import train

__all__ = ["DemoConfig", "run_demo", "edit_header_claim", "blank_copy", "demote_headings",
           "report_markdown"]

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of the demo. The defaults finish in a few minutes on 2 CPU cores."""

    out_dir: str = "runs/demo"
    seed: int = 0
    manufacturers: int = 3
    models_per_manufacturer: int = 2
    units_per_model: int = 2
    patients: int = 48
    size: tuple[int, int] = (384, 640)
    epochs: int = 12
    patches_per_image: int | None = None
    device: str = "cpu"
    n_identify: int = 4
    forgery: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def edit_header_claim(src: str | Path, dst: str | Path, donor: str | Path) -> Path:
    """Copy DICOM ``src`` to ``dst`` with the device fields of ``donor``'s header (a lie).

    Manufacturer, ManufacturerModelName, DeviceSerialNumber and StationName are taken from
    ``donor``; the pixels are untouched. This is the "header edited to claim another device"
    case the identify verdict must catch.
    """
    import pydicom

    ds = pydicom.dcmread(src)
    donor_ds = pydicom.dcmread(donor, stop_before_pixels=True)
    for kw in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "StationName"):
        if kw in donor_ds:
            setattr(ds, kw, getattr(donor_ds, kw))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def blank_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy DICOM ``src`` to ``dst`` with every pixel set to one value (nothing to read).

    The header, including its device claim, is kept: the identify verdict must say
    ``insufficient-evidence`` rather than confirm or refute the claim.
    """
    import numpy as np
    import pydicom

    ds = pydicom.dcmread(src)
    arr = ds.pixel_array
    flat = np.full_like(arr, int(np.median(arr)))
    ds.PixelData = flat.tobytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _step(name: str, log_fn: Callable[[str], None]) -> Callable[[], None]:
    t0 = time.perf_counter()
    log_fn(f"== {name}")

    def done() -> None:
        log_fn(f"   {name}: {time.perf_counter() - t0:.1f} s")

    return done


class _Steps:
    """Runs the demo's steps one after another, announcing each and keeping its duration."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        #: seconds per step name, in the order run (0.1 s resolution)
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` as step ``name`` and return its result."""
        done = _step(name, self.echo)
        t0 = time.perf_counter()
        res = fn()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        done()
        return res


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = log.info) -> Path:
    """Run the whole job and return the path of ``REPORT.md``.

    Args:
        cfg: settings (see :class:`DemoConfig`).
        echo: where progress lines go (the CLI passes ``typer.echo``).
    """
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    archive, run, ev = out / "archive", out / "run", out / "evaluation"
    steps = _Steps(echo)
    paths, rows, statuses, counts = _archive_and_split(cfg, out, archive, steps)
    res, cal, fps = _train_and_evaluate(cfg, rows, run, ev, steps)
    test_rows = [r for r in rows if r.get("split") == "test"]
    predictor, table = _identify_cases(cfg, out, test_rows, run, steps)
    forgery_md = ""
    if cfg.forgery:
        try:
            forgery_md = steps.run("forgery", lambda: _forgery_demo(out, test_rows, cfg, echo))
        except ImportError as exc:  # forgery parts not installed/built: say so, don't hide it
            forgery_md = f"Forgery demo skipped: {exc}\n"

    timings = steps.timings
    timings["total"] = round(time.perf_counter() - t_start, 1)
    report = out / "REPORT.md"
    train_cfg = res.config
    patches = (
        f"Patches per image: training draws {train_cfg.patches_per_image} per image and epoch "
        f"and validates on {train_cfg.val_patches} fixed ones; calibration, evaluation and "
        f"identify use {predictor.n_patches}."
        if train_cfg.preset == "patch" else ""
    )
    report.write_text(report_markdown(
        summary=[
            f"Simulated archive: {cfg.manufacturers} manufacturers x "
            f"{cfg.models_per_manufacturer} models x {cfg.units_per_model} units, "
            f"{len(paths)} images, seed {cfg.seed}. Manifest: `manifest.csv` (statuses "
            f"{statuses}); split {counts}.",
            f"Model: `patch` preset on label `model`, {cfg.epochs} epochs (best epoch "
            f"{res.best_epoch}); calibration {calibration_summary(cal)}; "
            f"{len(fps.units)} unit reference patterns.",
            patches,
        ],
        identify_table=table,
        evaluation_md=(ev / "report.md").read_text(),
        evaluation_dir=ev.name,
        forgery_md=forgery_md,
        timings=timings,
    ))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    return report


def _archive_and_split(cfg: DemoConfig, out: Path, archive: Path, steps: _Steps
                       ) -> tuple[list[Path], list[dict[str, Any]], dict[str, int],
                                  dict[str, int]]:
    """Steps 1-3: simulate the archive, ingest it, split it by patient; write the manifest.

    Returns:
        ``(paths, rows, statuses, counts)``: the simulated files, the manifest rows (with
        their ``split``), the number of rows per status and per split.
    """
    echo = steps.echo
    paths = steps.run("simulate", lambda: simulate_archive(
        archive, manufacturers=cfg.manufacturers,
        models_per_manufacturer=cfg.models_per_manufacturer,
        units_per_model=cfg.units_per_model, patients=cfg.patients, size=cfg.size,
        seed=cfg.seed))
    echo(f"   {len(paths)} DICOM files in {archive}")

    rows = steps.run("ingest", lambda: ingest([archive], progress=False))
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    echo(f"   statuses: {statuses}")

    def do_split() -> list[dict[str, Any]]:
        assign_splits(rows, by="patient", test=0.25, val=0.15, stratify="model", seed=cfg.seed)
        check_leakage(rows)
        return rows

    steps.run("split", do_split)
    manifest = out / "manifest.csv"
    write_manifest(rows, manifest)
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("split"):
            counts[r["split"]] = counts.get(r["split"], 0) + 1
    echo(f"   split (patient level): {counts}; manifest {manifest}")
    return paths, rows, statuses, counts


def _train_and_evaluate(cfg: DemoConfig, rows: list[dict[str, Any]], run: Path, ev: Path,
                        steps: _Steps) -> tuple[Any, Any, Any]:
    """Steps 4-6: train the ``patch`` model, calibrate it, enrol the units, evaluate the test
    split into ``ev``.

    Returns:
        ``(train result, calibration, unit fingerprints)``.
    """
    echo = steps.echo
    kw: dict[str, Any] = {}
    if cfg.patches_per_image:
        kw["patches_per_image"] = cfg.patches_per_image
    res = steps.run("train", lambda: train(rows, label="model", preset="patch",
                                           out_dir=str(run), epochs=cfg.epochs, seed=cfg.seed,
                                           device=cfg.device, progress=True, **kw))
    echo(f"   best epoch {res.best_epoch}, val balanced accuracy "
         f"{res.best_val_balanced_accuracy:.3f}")

    cal = steps.run("calibrate", lambda: calibrate_run(run, rows, device=cfg.device))
    fps = steps.run("enrol units", lambda: enroll_units(run, rows))
    echo(f"   {calibration_summary(cal)}; {len(fps.units)} unit patterns")

    metrics = steps.run("evaluate", lambda: evaluate_run(run, rows, ev, split="test",
                                                          device=cfg.device, progress=False))
    img = metrics["image_level"]
    ci = metrics.get("intervals") or {}
    echo(f"   test: accuracy {img['accuracy']:.4f}{fmt_interval(ci.get('accuracy'), 3)}, "
         f"balanced {img['balanced_accuracy']:.4f}, "
         f"patient-level {metrics['patient_level']['accuracy']:.4f}"
         + (f", unit {metrics['unit_level']['accuracy']:.4f}" if "unit_level" in metrics else "")
         + f"; identify names {metrics['verdicts']['named_right']:.1%} right, "
           f"{metrics['verdicts']['named_wrong']:.1%} wrong, "
           f"{metrics['verdicts']['not_named']:.1%} not at all")
    return res, cal, fps


def _identify_cases(cfg: DemoConfig, out: Path, test_rows: list[dict[str, Any]], run: Path,
                    steps: _Steps) -> tuple[SourcePredictor, str]:
    """Step 7: identify a few test images, a header edited to lie, a blank image and an
    unreadable file; write ``identify.jsonl``.

    Returns:
        ``(predictor, table)``: the loaded predictor and the verdicts as a Markdown table.
    """
    picks = test_rows[: cfg.n_identify]
    cases = out / "identify_cases"
    cases.mkdir()
    donor = next(r for r in test_rows if r["model"] != picks[0]["model"])
    liar = edit_header_claim(picks[0]["path"], cases / "header_edited.dcm", donor["path"])
    blank = blank_copy(picks[1]["path"], cases / "blank_pixels.dcm")
    junk = cases / "not_an_image.dcm"
    junk.write_bytes(b"this is not DICOM" * 10)
    predictor = SourcePredictor.from_run(run, device=cfg.device)
    verdicts = steps.run("identify", lambda: list(identify_files(
        predictor, [r["path"] for r in picks] + [liar, blank, junk])))
    table = format_table([v for v, _ in verdicts], fmt="markdown", details=True)
    steps.echo(format_table([v for v, _ in verdicts]))
    (out / "identify.jsonl").write_text(
        "".join(json.dumps(identify_record(v, e)) + "\n" for v, e in verdicts))
    return predictor, table


def demote_headings(markdown: str, levels: int) -> str:
    """Move every ATX heading of ``markdown`` down ``levels`` levels (``#`` -> ``###`` for 2).

    A report embedded under a heading of another document must start below that heading,
    or the outline of the whole document jumps. Lines inside fenced code blocks are kept.
    """
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            hashes = len(line) - len(line.lstrip("#"))
            if hashes <= 6 and (len(line) == hashes or line[hashes] == " "):
                line = "#" * min(6, hashes + levels) + line[hashes:]
        out.append(line)
    return "\n".join(out) + ("\n" if markdown.endswith("\n") else "")


def report_markdown(
    *,
    summary: list[str],
    identify_table: str,
    evaluation_md: str,
    evaluation_dir: str,
    forgery_md: str,
    timings: dict[str, float],
) -> str:
    """The demo's ``REPORT.md``: one ``#`` title and ``##`` sections, nested without jumps.

    Args:
        summary: paragraphs under the title (empty ones are left out).
        identify_table: the identify verdicts (Markdown).
        evaluation_md: the evaluation's own ``report.md``; its headings are moved under the
            "Test-set evaluation" section and its figure links into ``evaluation_dir``.
        evaluation_dir: folder of the evaluation, relative to the report.
        forgery_md: the forgery section (starts with a ``##`` heading), or ``""``.
        timings: seconds per step.

    Returns:
        The Markdown text.
    """
    evaluation = demote_headings(evaluation_md, 2).replace("](", f"]({evaluation_dir}/")
    lines = ["# medforensics demo report", ""]
    for paragraph in summary:
        if paragraph:
            lines += [paragraph, ""]
    lines += [
        "## Identify (including a header edited to claim another device, and a blank image)",
        "",
        identify_table,
        "",
        "## Test-set evaluation",
        "",
        evaluation,
        forgery_md,
        "## Timings (s)",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in timings.items()],
        "",
    ]
    return "\n".join(lines)


def _forgery_demo(out: Path, test_rows: list[dict[str, Any]], cfg: DemoConfig,
                  echo: Callable[[str], None]) -> str:
    """Tamper a few test images and localise the edits (filled in by the forgery part)."""
    return forgery_demo(out / "forgery", [r["path"] for r in test_rows], seed=cfg.seed,
                        echo=echo)
