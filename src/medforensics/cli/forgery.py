"""Forgery commands: ``tamper``, ``forgery train``, ``forgery evaluate``, ``forgery detect``.

Wherever a forgery run is asked for, ``cues`` names the training-free detector (no run
folder needed); ``none``, its former name, is still read as ``cues``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional

import typer

from medforensics.cli._common import (
    ALLOW_MODIFIED_OPT,
    EXIT_PARTIAL,
    OUT_OPT,
    PROGRESS_OPT,
    SHARD_OPT,
    app,
    batch_files,
    check_run_kind,
    csv_list,
    dump_line,
    fail,
    files_progress,
    finish_batch,
    forgery_app,
    json_sink,
    tick_progress,
    training_free_name,
    warn_integrity,
)
from medforensics.cli.pacs import DICOM_OUT_OPT, SEG_OPT, forgery_dicom_out
from medforensics.errors import MedForensicsError

_RUN_HELP = "Forgery run directory, or 'cues' for the training-free detector."
_ELA_OPT = typer.Option(
    "auto", "--ela", help="Training-free ELA cue: auto (lossy inputs), always, never.")
_TEXTURE_OPT = typer.Option(
    True, "--texture/--no-texture",
    help="Noise-texture cue (default on; forgery train feeds it to the learned combiner).")
_SEAM_OPT = typer.Option(
    True, "--seam/--no-seam",
    help="Hard-edged paste seam cue (default on; forgery train feeds it to the combiner).")
_WHITENESS_OPT = typer.Option(
    True, "--whiteness/--no-whiteness",
    help="Noise-whiteness cue (noise whiter than the image's own; default on; forgery train "
         "feeds it to the combiner).")


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
    from medforensics.synth.tamper import generate

    try:
        lo, hi = (int(v) for v in sizes.split(","))
    except ValueError:
        raise typer.BadParameter("--sizes must be MIN,MAX (two integers)") from None
    try:
        rep = generate(source, out, kinds=list(csv_list(kinds) or ()), seed=seed,
                       sizes=(lo, hi), n=n, feather=feather,
                       options={"rotate": rotate, "scale": scale, "copy_source": copy_source})
    except MedForensicsError as exc:
        fail(exc)
    n_t = sum(r["label"] == "tampered" for r in rep.rows)
    typer.echo(f"wrote {n_t} tampered + {len(rep.rows) - n_t} original images; "
               f"manifest {rep.manifest_path}")
    if rep.failures:
        typer.echo(f"{len(rep.failures)} input(s) failed, see {out / 'failures.csv'}", err=True)
        raise typer.Exit(EXIT_PARTIAL)


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
    progress: Optional[bool] = PROGRESS_OPT,
    texture: bool = _TEXTURE_OPT,
    seam: bool = _SEAM_OPT,
    whiteness: bool = _WHITENESS_OPT,
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
) -> None:
    """Train a forgery detector (original vs tampered; split by source image / patient)."""
    from medforensics.forgery.train import train_forgery

    check_run_kind(source_model, "source", "--source-model")
    try:
        res = train_forgery(manifest, preset=preset, out_dir=out, epochs=epochs, seed=seed,
                            device=device, resume=resume, source_run=source_model,
                            batch_size=batch_size, lr=lr, resplit=resplit,
                            progress=progress is not False, texture=texture, seam=seam,
                            whiteness=whiteness, allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        fail(exc)
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
        raise typer.Exit(EXIT_PARTIAL)


def _load_detector(run: str, source_model: Optional[Path], device: str, allow: bool,
                   **kw: Any) -> Any:
    """The forgery detector of ``run`` (``cues``: training-free), refusing runs of the
    wrong kind; exits on failure."""
    from medforensics.forgery.detector import ForgeryDetector

    run = training_free_name(run) or run
    check_run_kind(run, "forgery", "RUN")
    check_run_kind(source_model, "source", "--source-model")
    try:
        det = ForgeryDetector.from_run(run, source_run=source_model, device=device,
                                       allow_modified=allow, **kw)
    except MedForensicsError as exc:
        fail(exc)
    warn_integrity(det.run_integrity)
    return det


@forgery_app.command("evaluate")
def forgery_evaluate_cmd(
    run: str = typer.Argument(..., help=_RUN_HELP),
    manifest: Path = typer.Option(..., "--manifest", help="Tamper manifest."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, roc.png, ...)."),
    split: str = typer.Option(
        "auto", "--split", help="auto (the run's test split of this manifest, else all), "
        "all, train, val, test."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="Source patch run for the fingerprint cue."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated kinds only."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many pairs."),
    ela: str = _ELA_OPT,
    texture: bool = _TEXTURE_OPT,
    seam: bool = _SEAM_OPT,
    whiteness: bool = _WHITENESS_OPT,
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0,
        help="Resamples for 95 % confidence intervals over source images (0 = none)."),
    progress: Optional[bool] = PROGRESS_OPT,
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
) -> None:
    """Image-level and pixel-level metrics of a forgery detector on a tamper manifest."""
    from medforensics.forgery.evaluate import evaluate_detector

    det = _load_detector(run, source_model, device, allow_modified_run, ela=ela,
                         texture=texture, seam=seam, whiteness=whiteness)
    try:
        with tick_progress("evaluate", progress) as tick:
            res = evaluate_detector(det, manifest, out_dir=out, split=split, limit=limit,
                                    n_boot=bootstrap, progress=tick,
                                    kinds=None if kinds is None else list(csv_list(kinds) or ()))
    except MedForensicsError as exc:
        fail(exc)
    _print_forgery_metrics(res)
    typer.echo(f"wrote {out / 'metrics.json'}")
    if res["failures"]:
        typer.echo(f"{len(res['failures'])} file(s) failed (listed in metrics.json)", err=True)
        raise typer.Exit(EXIT_PARTIAL)


def _f3(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) and v == v else "n/a"


def _print_forgery_metrics(res: dict[str, Any]) -> None:
    """The summary lines of ``forgery evaluate``."""
    from medforensics.eval.tables import fmt_interval

    ci = res.get("ci") or {}

    def iv(d: dict, key: str) -> str:
        return fmt_interval(d.get(key))

    im, px = res["image"], res["pixel"]
    typer.echo(f"{res['method']} on {res['rows']}: {res['n_tampered']} tampered + "
               f"{res['n_original']} original"
               + (f"; [95 % CI over {ci['n_clusters']} source images]" if ci else ""))
    typer.echo(f"image: AUC {_f3(im.get('auc'))}{iv(ci, 'image_auc')}, accuracy "
               f"{_f3(im.get('accuracy'))}{iv(ci, 'accuracy')}, precision "
               f"{_f3(im.get('precision'))}, recall {_f3(im.get('recall'))}, F1 "
               f"{_f3(im.get('f1'))} (threshold {res['threshold']:.2f})")
    typer.echo(f"pixel (tampered, {res['band']}-px band out): F1-best {_f3(px.get('f1_best'))}"
               f"{iv(ci, 'pixel_f1_best')}, F1@0.5 {_f3(px.get('f1_fixed'))}, IoU@0.5 "
               f"{_f3(px.get('iou_fixed'))}, AUC {_f3(px.get('auc'))}")
    for k, auc in res["image_auc_by_kind"].items():
        pk = res["pixel_by_kind"].get(k, {})
        ck = ci.get("by_kind", {}).get(k, {})
        typer.echo(f"  {k}: image AUC {_f3(auc)}{iv(ck, 'image_auc')}, pixel F1-best "
                   f"{_f3(pk.get('f1_best'))}{iv(ck, 'pixel_f1_best')}")


def _detect_line(rec: dict[str, Any]) -> str:
    """The one-line verdict of ``forgery detect`` (no number where nothing was measured)."""
    def num(v: object, fmt: str) -> str | None:
        return None if v is None or not math.isfinite(float(v)) else format(float(v), fmt)

    score = num(rec.get("score"), ".3f")
    area = num(rec.get("forged_area_percent"), ".2f")
    ela = num(rec.get("ela_score"), ".2f")
    cov = num(rec.get("covered_fraction"), ".0%")
    reason = rec.get("inconclusive_reason")
    return (f"{rec['path']}: {rec['verdict']}" + (f" ({reason})" if reason else "")
            + f"; score {score or 'n/a'} (threshold {rec['threshold']:.2f})"
            + (f", forged area {area} %" if area is not None else "")
            + (f", ELA score {ela}" if ela is not None else ", ELA not run")
            + (f", {cov} of the image readable" if cov is not None else "")
            + (f"; map {rec['files']['map_png']}" if rec.get("files") else ""))


def _region_line(i: int, reg: dict[str, Any]) -> str:
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


def _text_lines(rec: dict[str, Any]) -> list[str]:
    """The text output of one ``forgery detect`` result (verdict, then up to 3 areas)."""
    if rec["status"] != "done":
        return [f"{rec['path']}: not analysed ({rec['reason']}): {rec['message']}"]
    return [_detect_line(rec)] + ["  " + _region_line(i, reg)
                                  for i, reg in enumerate(rec.get("regions", [])[:3], 1)]


@forgery_app.command("detect")
def forgery_detect_cmd(
    run: str = typer.Argument(..., help=_RUN_HELP),
    paths: List[Path] = typer.Argument(
        ..., help="Image files (DICOM, PNG, JPEG, TIFF) or folders (recursive)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of text."),
    maps: Optional[Path] = typer.Option(
        None, "--maps", help="Write maps here: 16-bit PNG + .npy at native size, overlay PNG."),
    source_model: Optional[Path] = typer.Option(
        None, "--source-model", help="Source patch run: adds the fingerprint cue."),
    ela: str = _ELA_OPT,
    texture: bool = _TEXTURE_OPT,
    seam: bool = _SEAM_OPT,
    whiteness: bool = _WHITENESS_OPT,
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    progress: Optional[bool] = PROGRESS_OPT,
    shard: str = SHARD_OPT,
    out: Optional[Path] = OUT_OPT,
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
    dicom_out: Optional[Path] = DICOM_OUT_OPT,
    seg: str = SEG_OPT,
) -> None:
    """Forgery score, verdict, forged area and ELA score per image (unreadable files reported).

    Streams one line per file (flat memory over any number of files); --json lines carry the
    image's DICOM UIDs. Under torchrun each process takes its own shard of the files. Exit
    code 1 when some file could not be analysed."""
    from medforensics.forgery.detector import detect_files
    from medforensics.report.images import MapWriter

    det = _load_detector(run, source_model, device, allow_modified_run, ela=ela,
                         texture=texture, seam=seam, whiteness=whiteness)
    try:
        files, part, where = batch_files(paths, shard)
        write, close = json_sink(out, part) if (as_json or out) else (typer.echo,
                                                                      lambda ok=True: None)
    except MedForensicsError as exc:
        fail(exc)
    if maps is not None and where:  # map names are unique per process: one folder per shard
        maps = maps / "part-{}-of-{}".format(*part)
    results = detect_files(det, files, write_files=None if maps is None else MapWriter(maps))
    results = forgery_dicom_out(results, dicom_out, run, det, seg)
    n_bad = 0
    try:
        for fr in files_progress(results, len(files), "detect" + where, progress):
            rec = fr.to_dict()
            n_bad += rec["status"] != "done"
            for line in ([dump_line(rec)] if (as_json or out) else _text_lines(rec)):
                write(line)
    except BaseException:
        close(False)  # stopped early: no complete --out file is claimed
        raise
    close()
    finish_batch(n_bad, len(files))
