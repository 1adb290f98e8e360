"""Training forgery detectors on a tamper manifest (``medforensics forgery train``).

The manifest is the output of ``medforensics tamper`` (:data:`medforensics.synth.tamper.
MANIFEST_COLUMNS`): one tampered file and its matched original per ``pair_id``. Labels are
``original`` (0) and ``tampered`` (1).

**Split** (:func:`split_tamper_rows`). An original and its tampered twin always land in the same
split, and so does everything from one patient: when the manifest carries a complete
``split`` column with train and test rows (carried over from the source-identification
manifest the tampered images came from), it is used as is - this also keeps the fingerprint
cue's source model from having seen the test images - unless ``resplit=True``; otherwise
:func:`medforensics.data.splits.assign_splits` (``by="patient"``) assigns train/val/test with
pairs tied together by their source image (``original_path``) and by ``PatientID`` /
``StudyInstanceUID`` when present, stratified by the pair's tampering kind. The assignment is
written to ``RUN/split.json``; ``medforensics forgery evaluate`` uses it to score only the
test split of the same manifest.

**Presets**

* ``ela-cnn`` (the paper, seed 004): the ELA image of every file (ELA at JPEG q90 of the 8-bit
  data, or of an explicit 0.5-99.5 percentile 8-bit window for 12-16-bit data, brightness-
  enhanced, bilinear resize to 128 x 128: :func:`medforensics.forgery.cues.ela.ela_cnn_input`),
  scaled by 1/255, into :class:`medforensics.models.ela_cnn.ElaCNN`; cross-entropy, Adam.
  The paper states neither epochs, batch size nor learning rate; defaults here are Keras'
  Adam defaults (lr 1e-3), batch 32 and 30 epochs, and the weights of the epoch with the best
  validation accuracy are kept (the last epoch when there is no validation split).
  A checkpoint is written after every epoch (:mod:`medforensics.training.checkpoint`, no pickle)
  and ``resume=True`` continues bit-identically. Output: ``model.safetensors`` +
  ``model.json`` (:func:`medforensics.models.io.save_model`; keys ``preset``, ``classes``
  ``["original", "tampered"]``, ``threshold``, ``seed``, ``training_manifest_sha256``,
  ``input_scale``).
* ``cues`` (ours): the cue maps of :mod:`medforensics.forgery.localize` (copy-move, noise, ELA
  for lossy files, the fingerprint cue when a source model is given) for every train/val image,
  then the logistic combiner of :mod:`medforensics.forgery.combiner` fitted on the train split
  (pixels sampled on a 4-px grid). Per-image cue features are cached in
  ``RUN/features/`` (safetensors) so that ``resume=True`` skips images already analysed.
  Output: ``combiner.safetensors`` + ``model.json``. ``epochs`` does not apply.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics import __version__
from medforensics.common.hashing import manifest_sha256
from medforensics.common.jsonio import atomic_write_json
from medforensics.data.splits import assign_splits
from medforensics.errors import (
    ConfigError,
    ManifestError,
    MedForensicsError,
    ModelFileError,
)
from medforensics.forgery.combiner import (
    COMBINER_FILE,
    _sigmoid,
    fit_combiner,
    grid_score,
    image_feature_names,
    image_features,
    pixel_feature_names,
    pixel_features,
)
from medforensics.forgery.cues.ela import ela_cnn_input, lossy_codec
from medforensics.forgery.detector import FORGERY_PRESETS, ForgeryDetector
from medforensics.forgery.localize import default_cues
from medforensics.io import read_image
from medforensics.models.io import save_model
from medforensics.models.registry import create_model
from medforensics.models.runfiles import record_files
from medforensics.training.checkpoint import (
    capture_rng_state,
    copy_state_exact,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

__all__ = [
    "FORGERY_PRESETS",
    "ELA_CNN_DEFAULTS",
    "ForgeryTrainResult",
    "read_tamper_manifest",
    "split_tamper_rows",
    "train_forgery",
    "SPLIT_FILE",
]

log = logging.getLogger(__name__)

#: paper silent on these: Keras defaults (Adam lr 1e-3, batch 32); 30 epochs
ELA_CNN_DEFAULTS: dict[str, Any] = {"epochs": 30, "lr": 1e-3, "batch_size": 32, "size": 128,
                                    "quality": 90}
CLASSES = ["original", "tampered"]
SPLIT_FILE = "split.json"
CUES_FORMAT = "medforensics-forgery-cues/1"
_GRID = 4  # pixel sampling step of the cues combiner


@dataclass
class ForgeryTrainResult:
    """Outcome of :func:`train_forgery`.

    Attributes:
        run_dir: the run directory.
        preset: ``ela-cnn`` or ``cues``.
        counts: images per split (``train``/``val``/``test``).
        history: per-epoch records (``ela-cnn``) or the fit summary (``cues``).
        best_epoch: epoch whose weights were kept (``ela-cnn``), else 0.
        failures: ``(path, reason)`` of images that could not be used.
    """

    run_dir: Path
    preset: str
    counts: dict[str, int]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def read_tamper_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a tamper manifest.

    Raises:
        ManifestError: missing file, no rows, or missing ``path``/``label``/``pair_id``/
            ``original_path``/``mask_path`` columns.
    """
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            cols = reader.fieldnames or []
    except OSError as exc:
        raise ManifestError(f"{p}: cannot read tamper manifest ({exc})") from None
    need = ("path", "label", "pair_id", "original_path", "mask_path")
    missing = [c for c in need if c not in cols]
    if missing:
        raise ManifestError(f"{p}: not a tamper manifest (missing columns {missing}); make one "
                            "with `medforensics tamper`")
    if not rows:
        raise ManifestError(f"{p}: the tamper manifest has no rows")
    bad = sorted({r["label"] for r in rows} - {"original", "tampered"})
    if bad:
        raise ManifestError(f"{p}: unknown labels {bad} (original / tampered)")
    base = p.parent
    for r in rows:
        for k in ("path", "mask_path"):
            q = Path(r.get(k) or "")
            if r.get(k) and not q.is_absolute() and not q.exists() and (base / q).exists():
                r[k] = str(base / q)
    return rows


def split_tamper_rows(
    rows: list[dict[str, str]],
    *,
    test: float = 0.2,
    val: float = 0.1,
    seed: int = 0,
    resplit: bool = False,
) -> tuple[list[dict[str, str]], str]:
    """Assign ``split`` to every row (in place; see module docs).

    Returns:
        ``(rows, how)`` with ``how`` = ``"manifest"`` (the manifest's own split column) or
        ``"assigned"``.
    """
    own = [r.get("split") for r in rows]
    if not resplit and all(s in ("train", "val", "test") for s in own) and "train" in own \
            and "test" in own:
        _check_pairs(rows)
        return rows, "manifest"
    pair_kind = {r["pair_id"]: r.get("kind", "") for r in rows if r["label"] == "tampered"}
    proxies = []
    for r in rows:
        src = r.get("original_path") or r["path"]
        proxies.append({
            "status": "eligible",
            "path": r["path"],
            # ties the twins together (and every pair made from the same source image)
            "sha256": hashlib.sha256(src.encode()).hexdigest(),
            "PatientID": r.get("PatientID", ""),
            "StudyInstanceUID": r.get("StudyInstanceUID", ""),
            "pair_kind": pair_kind.get(r["pair_id"], "none"),
        })
    assign_splits(proxies, by="patient", test=test, val=val, stratify="pair_kind", seed=seed)
    for r, p in zip(rows, proxies):
        r["split"] = p["split"]
    _check_pairs(rows)
    return rows, "assigned"


def _check_pairs(rows: Sequence[dict[str, str]]) -> None:
    seen: dict[str, str] = {}
    for r in rows:
        s = seen.setdefault(r["pair_id"], r["split"])
        if s != r["split"]:
            raise ManifestError(f"pair {r['pair_id']} is split across {s} and {r['split']}")


def _write_split(run: Path, rows: Sequence[dict[str, str]], how: str, sha: str) -> None:
    data = {"manifest_sha256": sha, "how": how,
            "paths": {r["path"]: r["split"] for r in rows}}
    atomic_write_json(run / SPLIT_FILE, data, indent=1, sort_keys=True)
    record_files(run, [SPLIT_FILE])


def train_forgery(
    manifest: str | Path,
    *,
    preset: str,
    out_dir: str | Path,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    source_run: str | Path | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    test: float = 0.2,
    val: float = 0.1,
    resplit: bool = False,
    progress: bool = True,
    texture: bool = False,
    seam: bool = False,
    allow_modified: bool = False,
) -> ForgeryTrainResult:
    """Train a forgery detector on a tamper manifest (see module docs).

    Every file the detector loads (``split.json``, the model or combiner and ``model.json``)
    is hashed into the run manifest ``RUN/run.json`` when written
    (:mod:`medforensics.models.runfiles`).

    Args:
        manifest: ``tamper_manifest.csv``.
        preset: ``ela-cnn`` or ``cues``.
        out_dir: run directory (must be new or empty unless ``resume``).
        epochs: ``ela-cnn`` epochs (default 30); ignored by ``cues``.
        seed: seed of split, initialisation and batch order.
        device: torch device (``cpu``/``cuda``).
        resume: continue the run in ``out_dir`` (same manifest and preset).
        source_run: ``cues``: trained source ``patch`` run for the fingerprint cue.
        batch_size: ``ela-cnn`` batch size (default 32).
        lr: ``ela-cnn`` Adam learning rate (default 1e-3).
        test: test fraction when the split is assigned here.
        val: validation fraction when the split is assigned here.
        resplit: ignore the manifest's own ``split`` column.
        progress: show tqdm progress bars.
        texture: ``cues``: include the noise-texture cue as a combiner feature (off by
            default: not yet measured for the learned combiner).
        seam: ``cues``: include the paste seam cue as a combiner feature (off by default,
            like ``texture``).
        allow_modified: load a ``source_run`` whose files differ from its run manifest
            (logged) instead of refusing it.

    Returns:
        :class:`ForgeryTrainResult`.

    Raises:
        ConfigError: unknown preset, non-empty run directory without ``resume``, resuming a
            different configuration, no usable training image of one class.
        ManifestError: not a tamper manifest.
    """
    if preset not in FORGERY_PRESETS:
        raise ConfigError(f"unknown forgery preset {preset!r}; choose from "
                          f"{', '.join(FORGERY_PRESETS)}")
    run = Path(out_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise ConfigError(f"{run} is not empty; choose a new --out or pass --resume")
    run.mkdir(parents=True, exist_ok=True)
    rows = read_tamper_manifest(manifest)

    sha = manifest_sha256(manifest)
    rows, how = split_tamper_rows(rows, test=test, val=val, seed=seed, resplit=resplit)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    log.info("tamper manifest %s: %s split %s", manifest, how, counts)
    cfg = {"preset": preset, "manifest_sha256": sha, "seed": int(seed), "split": how,
           "test": test, "val": val}
    cfg_path = run / "train_config.json"
    if resume and cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        diffs = [k for k in ("preset", "manifest_sha256", "seed", "split", "test", "val")
                 if old.get(k) != cfg[k]]
        if diffs:
            raise ConfigError(f"cannot resume {run}: {', '.join(diffs)} differ from the run")
    cfg_path.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    _write_split(run, rows, how, sha)
    if preset == "ela-cnn":
        return _train_ela_cnn(rows, run, cfg, counts, epochs=epochs, device=device,
                              resume=resume, batch_size=batch_size, lr=lr, progress=progress)
    return _train_cues(rows, run, cfg, counts, device=device, source_run=source_run,
                       progress=progress, texture=texture, seam=seam,
                       allow_modified=allow_modified)


# --------------------------------------------------------------------------------- ela-cnn


def _ela_inputs(rows: Sequence[dict[str, str]], size: int, quality: int, progress: bool,
                desc: str) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    from tqdm.auto import tqdm

    xs: list[np.ndarray] = []
    ys: list[int] = []
    failures: list[tuple[str, str]] = []
    for r in tqdm(rows, desc=desc, disable=not progress, unit="img", leave=False):
        try:
            px, meta = read_image(r["path"])
            xs.append(ela_cnn_input(px, bits_stored=meta.bits_stored, size=size,
                                    quality=quality))
            ys.append(int(r["label"] == "tampered"))
        except MedForensicsError as exc:
            log.warning("skipping %s: %s", r["path"], exc)
            failures.append((r["path"], f"{type(exc).__name__}: {exc}"))
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, size, size), np.float32)
    return x, np.asarray(ys, dtype=np.int64), failures


def _train_ela_cnn(rows: list[dict[str, str]], run: Path, cfg: dict[str, Any],
                   counts: dict[str, int], *, epochs: int | None, device: str, resume: bool,
                   batch_size: int | None, lr: float | None, progress: bool
                   ) -> ForgeryTrainResult:
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    d = ELA_CNN_DEFAULTS
    n_epochs = int(epochs if epochs is not None else d["epochs"])
    bs = int(batch_size if batch_size is not None else d["batch_size"])
    rate = float(lr if lr is not None else d["lr"])
    if n_epochs < 1 or bs < 1 or not rate > 0:
        raise ConfigError("epochs and batch size must be >= 1 and lr > 0")
    size, quality = int(d["size"]), int(d["quality"])
    dev = torch.device(device)
    seed = int(cfg["seed"])
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    xtr, ytr, fail = _ela_inputs(train_rows, size, quality, progress, "ELA train")
    xva, yva, fail_v = _ela_inputs(val_rows, size, quality, progress, "ELA val")
    failures = fail + fail_v
    if len(set(ytr.tolist())) < 2:
        raise ConfigError("the train split needs both original and tampered images")
    scale = 1.0 / 255.0
    xtr_t = torch.from_numpy(xtr * scale)[:, None]
    ytr_t = torch.from_numpy(ytr)
    xva_t = torch.from_numpy(xva * scale)[:, None]

    torch.manual_seed(seed)
    model = create_model("ela-cnn", 2, in_channels=1, input_size=size).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=rate)
    history: list[dict[str, Any]] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_val, best_epoch, start = -1.0, 0, 1
    ck_root = run / "checkpoints"
    if resume:
        path = latest_checkpoint(ck_root)
        if path is not None:
            ck = load_checkpoint(path)
            if ck.info.get("config", {}).get("lr") != rate or \
                    ck.info.get("config", {}).get("batch_size") != bs:
                raise ConfigError(f"cannot resume {run}: batch size / learning rate differ")
            copy_state_exact(model, ck.model)
            opt.load_state_dict(ck.optimizer)
            restore_rng_state(ck.rng)
            best_state = {k: v.clone() for k, v in ck.best_model.items()}
            history = list(ck.info.get("history", []))
            best_val = float(ck.info.get("best_val", -1.0))
            best_epoch = int(ck.info.get("best_epoch", 0))
            start = ck.epoch + 1
            log.info("resuming %s after epoch %d", run, ck.epoch)
    bar = tqdm(range(start, n_epochs + 1), desc="ela-cnn", disable=not progress, unit="epoch",
               initial=start - 1, total=n_epochs)
    n = len(ytr_t)
    for epoch in bar:
        model.train()
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=g)
        tot, correct = 0.0, 0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            xb, yb = xtr_t[idx].to(dev), ytr_t[idx].to(dev)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()}; lower --lr")
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
        rec: dict[str, Any] = {"epoch": epoch, "train_loss": tot / n, "train_acc": correct / n}
        if len(yva):
            model.eval()
            with torch.no_grad():
                pv = torch.cat([torch.softmax(model(xva_t[i : i + 256].to(dev)), -1)[:, 1].cpu()
                                for i in range(0, len(xva_t), 256)]).numpy()
            rec["val_acc"] = float(np.mean((pv >= 0.5) == (yva == 1)))
            score = rec["val_acc"]
        else:
            score = float(epoch)  # no validation: keep the last epoch
        if score > best_val:
            best_val, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{rec.get('val_acc', math.nan):.3f}")
        save_checkpoint(ck_root, epoch=epoch, model_state=model.state_dict(),
                        best_state=best_state, optimizer_state=opt.state_dict(),
                        rng_state=capture_rng_state(),
                        info={"history": history, "best_val": best_val,
                              "best_epoch": best_epoch,
                              "config": {"lr": rate, "batch_size": bs, "epochs": n_epochs}})
        with open(run / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    bar.close()
    model.load_state_dict(best_state)
    save_model(run, model, {
        "preset": "ela-cnn",
        "classes": CLASSES,
        "threshold": 0.5,
        "seed": seed,
        "training_manifest_sha256": cfg["manifest_sha256"],
        "preprocess": f"ela-q{quality}-enhance-resize{size}",
        "input_scale": scale,
        "ela_quality": quality,
        "epochs": n_epochs,
        "best_epoch": best_epoch,
        "batch_size": bs,
        "lr": rate,
        "optimizer": "adam",
        "split": cfg["split"],
        "counts": counts,
        "note": "paper preset (seed 004): ELA of an 8-bit version (8-bit data as is; an "
                "explicit 0.5-99.5 percentile window for 12-16-bit data), as the paper did on "
                "8-bit JPEG/PNG images",
    })
    return ForgeryTrainResult(run, "ela-cnn", counts, history, best_epoch, failures)


# ------------------------------------------------------------------------------------ cues


def _feature_key(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:24]


def _cue_features(det: Any, row: dict[str, str], cues: Sequence[str], cache: Path
                  ) -> dict[str, np.ndarray]:
    """Per-image features for the combiner (cached as safetensors under ``cache``)."""
    from PIL import Image
    from safetensors.numpy import load_file, save_file

    f = cache / f"{_feature_key(row['path'])}.safetensors"
    if f.is_file():
        try:
            got = load_file(str(f))
            if (got["pixel_x"].shape[1] == len(pixel_feature_names(cues))
                    and got["image_x"].shape[0] == len(image_feature_names(cues)) - 1):
                return got
            log.info("recomputing %s: cached for another cue list", f)
        except Exception:  # a half-written cache file from a killed run: recompute
            log.info("recomputing damaged cache file %s", f)
    px, meta = read_image(row["path"])
    codec = lossy_codec(px, meta)[0]
    loc = det.compute_cues(px, lossy=codec is not None, bits_stored=meta.bits_stored,
                           lossy_codec=codec)
    z = loc.details.get("noise", {}).get("z")
    feats = pixel_features(loc.cues, cues, px.shape, z)
    grid = feats[::_GRID, ::_GRID]
    mask = np.zeros(px.shape, bool)
    if row["label"] == "tampered" and row.get("mask_path"):
        with Image.open(row["mask_path"]) as im:
            mask = np.asarray(im) > 0
    if mask.shape != px.shape:
        raise ConfigError(f"{row['mask_path']}: mask shape {mask.shape} differs from the "
                          f"image {px.shape}")
    out = {
        "pixel_x": np.ascontiguousarray(grid.reshape(-1, grid.shape[-1]), np.float32),
        "pixel_y": np.ascontiguousarray(mask[::_GRID, ::_GRID].reshape(-1), np.uint8),
        "grid_shape": np.array(grid.shape[:2], np.int64),
        "image_x": image_features(loc.cues, cues),
        "label": np.array([int(row["label"] == "tampered")], np.int64),
    }
    tmp = f.with_name(f.name + ".tmp")
    save_file(out, str(tmp))
    tmp.replace(f)
    return out


def _train_cues(rows: list[dict[str, str]], run: Path, cfg: dict[str, Any],
                counts: dict[str, int], *, device: str, source_run: str | Path | None,
                progress: bool, texture: bool = False, seam: bool = False,
                allow_modified: bool = False) -> ForgeryTrainResult:
    from tqdm.auto import tqdm

    det = ForgeryDetector.from_run(None, source_run=source_run, device=device,
                                   texture=bool(texture), seam=bool(seam),
                                   allow_modified=allow_modified)
    cues = default_cues(texture=bool(texture), seam=bool(seam),
                        fingerprint=source_run is not None)
    cache = run / "features"
    cache.mkdir(exist_ok=True)
    use = [r for r in rows if r["split"] in ("train", "val")]
    feats: dict[str, dict[str, np.ndarray]] = {}
    failures: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for r in tqdm(use, desc="cue maps", disable=not progress, unit="img"):
        try:
            feats[r["path"]] = _cue_features(det, r, cues, cache)
        except MedForensicsError as exc:
            log.warning("skipping %s: %s", r["path"], exc)
            failures.append((r["path"], f"{type(exc).__name__}: {exc}"))
    tr = [feats[r["path"]] for r in rows if r["split"] == "train" and r["path"] in feats]
    if not tr:
        raise ConfigError("no usable training image")
    comb = _fit_from_features(tr, cues, seed=int(cfg["seed"]))
    val = [feats[r["path"]] for r in rows if r["split"] == "val" and r["path"] in feats]
    info = dict(comb.info)
    info["feature_seconds"] = round(time.perf_counter() - t0, 1)
    if val:
        yv = np.array([int(f["label"][0]) for f in val])
        pv = np.array([_image_prob_from_features(comb, f) for f in val])
        info["val_image_accuracy"] = float(np.mean((pv >= 0.5) == (yv == 1)))
    comb.info = info
    comb.save(run)
    meta = {
        "format": CUES_FORMAT,
        "preset": "cues",
        "classes": CLASSES,
        "cues": cues,
        "threshold": 0.5,
        "seed": int(cfg["seed"]),
        "training_manifest_sha256": cfg["manifest_sha256"],
        "source_run": None if source_run is None else str(Path(source_run).resolve()),
        "source_weights_sha256": _source_sha(source_run),
        "fingerprint_stride": det.fingerprint_stride,
        "fingerprint_min_coverage": det.fingerprint_min_coverage,
        "weights_file": "combiner.safetensors",
        "pixel_grid": _GRID,
        "split": cfg["split"],
        "counts": counts,
        "fit": info,
        "software_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    atomic_write_json(run / "model.json", meta, indent=2, sort_keys=True)
    record_files(run, [COMBINER_FILE, "model.json"])
    return ForgeryTrainResult(run, "cues", counts, [info], 0, failures)


def _version() -> str:
    return __version__


def _source_sha(source_run: str | Path | None) -> str | None:
    if source_run is None:
        return None
    try:
        meta = json.loads((Path(source_run) / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{source_run}: unreadable source model metadata ({exc})") from None
    return meta.get("weights_sha256")


def _image_prob_from_features(comb: Any, f: dict[str, np.ndarray]) -> float:
    """Image probability from cached features (the same computation as at detection)."""
    shp = tuple(int(v) for v in f["grid_shape"])
    p = _sigmoid(f["pixel_x"].astype(np.float64) @ comb.pixel_coef + comb.pixel_intercept)
    return comb.image_probability_from(f["image_x"], grid_score(p.reshape(shp)))


def _fit_from_features(tr: Sequence[dict[str, np.ndarray]], cues: Sequence[str], *,
                       seed: int) -> Any:
    return fit_combiner(
        [f["pixel_x"] for f in tr],
        [f["pixel_y"].astype(bool) for f in tr],
        [tuple(int(v) for v in f["grid_shape"]) for f in tr],
        [f["image_x"] for f in tr],
        [int(f["label"][0]) for f in tr],
        cues,
        grid=_GRID,
        seed=seed,
    )
