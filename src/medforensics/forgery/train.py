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
  Epochs, batch size, learning rate, input size and ELA quality default to the values
  registered with the model (:data:`medforensics.models.ela_cnn.DEFAULTS`, which says where
  each comes from); the weights of the epoch with the best validation accuracy are kept (the
  last epoch when there is no validation split). Training runs through the one loop
  (:func:`medforensics.training.loop.fit`; this module only builds the net, data and
  validation), so it writes ``metrics.jsonl`` and a checkpoint after every epoch, and
  ``resume=True`` continues bit-identically. Output: ``model.safetensors`` +
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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import load_file, save_file
from torch import nn

from medforensics import __version__
from medforensics.common.hashing import manifest_sha256
from medforensics.common.jsonio import atomic_write_json
from medforensics.common.progress import iter_progress, library_mode
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
from medforensics.models.registry import create_model, training_defaults
from medforensics.models.runfiles import record_files
from medforensics.training.distributed import (
    Determinism,
    resolve_device,
    seed_everything,
)
from medforensics.training.loop import LoopFiles, Trainable, Validation, fit

__all__ = [
    "FORGERY_PRESETS",
    "ForgeryTrainResult",
    "read_tamper_manifest",
    "split_tamper_rows",
    "train_forgery",
    "SPLIT_FILE",
]

log = logging.getLogger(__name__)

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
        for k in ("path", "mask_path", "source_mask_path"):
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


def _write_run_config(run: Path, cfg: dict[str, Any], resume: bool) -> None:
    """Write ``train_config.json``; when resuming, refuse a run made with other settings."""
    cfg_path = run / "train_config.json"
    if resume and cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        diffs = [k for k in ("preset", "manifest_sha256", "seed", "split", "test", "val")
                 if old.get(k) != cfg[k]]
        if diffs:
            raise ConfigError(f"cannot resume {run}: {', '.join(diffs)} differ from the run")
    cfg_path.write_text(json.dumps(cfg, indent=1, sort_keys=True))


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
    texture: bool | None = None,
    seam: bool | None = None,
    whiteness: bool | None = None,
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
        epochs: ``ela-cnn`` epochs (default: the registered one); ignored by ``cues``.
        seed: seed of split, initialisation and batch order.
        device: torch device (``cpu``/``cuda``).
        resume: continue the run in ``out_dir`` (same manifest and preset).
        source_run: ``cues``: trained source ``patch`` run for the fingerprint cue.
        batch_size: ``ela-cnn`` batch size (default: the registered one).
        lr: ``ela-cnn`` Adam learning rate (default: the registered one).
        test: test fraction when the split is assigned here.
        val: validation fraction when the split is assigned here.
        resplit: ignore the manifest's own ``split`` column.
        progress: report progress: bars on stderr when it is a terminal, a log line every
            hundred images otherwise.
        texture: ``cues``: feed the noise-texture cue to the combiner (None = as the
            training-free detector: :data:`~medforensics.forgery.localize.DEFAULT_TEXTURE`).
        seam: ``cues``: feed the paste seam cue (None = ``DEFAULT_SEAM``).
        whiteness: ``cues``: feed the noise-whiteness cue (None = ``DEFAULT_WHITENESS``).
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
    _write_run_config(run, cfg, resume)
    _write_split(run, rows, how, sha)
    if preset == "ela-cnn":
        return _train_ela_cnn(rows, run, cfg, counts, epochs=epochs, device=device,
                              resume=resume, batch_size=batch_size, lr=lr, progress=progress)
    return _train_cues(rows, run, cfg, counts, device=device, source_run=source_run,
                       progress=progress, texture=texture, seam=seam, whiteness=whiteness,
                       allow_modified=allow_modified)


# --------------------------------------------------------------------------------- ela-cnn


def _ela_inputs(rows: Sequence[dict[str, str]], size: int, quality: int, progress: bool,
                desc: str) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    xs: list[np.ndarray] = []
    ys: list[int] = []
    failures: list[tuple[str, str]] = []
    for r in iter_progress(rows, len(rows), desc, library_mode(progress), unit="images",
                           emit=log.info):
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


def _ela_settings(epochs: int | None, batch_size: int | None, lr: float | None
                  ) -> tuple[int, int, float]:
    """``(epochs, batch size, lr)``: the arguments, else the ``ela-cnn`` registered defaults."""
    d = training_defaults("ela-cnn")
    n_epochs = int(epochs if epochs is not None else d.epochs)
    bs = int(batch_size if batch_size is not None else d.batch_size)
    rate = float(lr if lr is not None else d.lr)
    if n_epochs < 1 or bs < 1 or not rate > 0:
        raise ConfigError("epochs and batch size must be >= 1 and lr > 0")
    return n_epochs, bs, rate


def _build_ela_validate(xva: torch.Tensor, yva: np.ndarray, dev: torch.device
                        ) -> Callable[[nn.Module], Validation] | None:
    """Validation accuracy at the 0.5 threshold on the tampered probability (None: no data)."""
    if not len(yva):
        return None

    @torch.no_grad()
    def validate(net: nn.Module) -> Validation:
        net.eval()
        pv = torch.cat([torch.softmax(net(xva[i : i + 256].to(dev)), -1)[:, 1].cpu()
                        for i in range(0, len(xva), 256)]).numpy()
        acc = float(np.mean((pv >= 0.5) == (yva == 1)))
        return Validation({"val_acc": acc}, score=acc)

    return validate


def _build_ela_trainable(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray,
                         *, seed: int, bs: int, rate: float, size: int, scale: float,
                         dev: torch.device) -> Trainable:
    """The ELA-CNN for the one loop: net, Adam, cross-entropy, a seeded shuffle per epoch.

    ``xtr``/``xva``: float32 (N, size, size) ELA images in 0..255, scaled by ``scale`` here;
    ``ytr``/``yva``: int64 (N,) labels (1 = tampered). The global torch RNG is seeded by the
    caller before this builds the net.
    """
    xtr_t = torch.from_numpy(xtr * scale)[:, None]
    ytr_t = torch.from_numpy(ytr)
    model = create_model("ela-cnn", 2, in_channels=1, input_size=size).to(dev)
    n = len(ytr_t)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            yield xtr_t[idx], ytr_t[idx]

    return Trainable(
        net=model, optimizer=torch.optim.Adam(model.parameters(), lr=rate),
        criterion=F.cross_entropy, batches=batches, lr_at=lambda epoch: rate,
        validate=_build_ela_validate(torch.from_numpy(xva * scale)[:, None], yva, dev),
        select=training_defaults("ela-cnn").select, device=dev,
    )


def _train_ela_cnn(rows: list[dict[str, str]], run: Path, cfg: dict[str, Any],
                   counts: dict[str, int], *, epochs: int | None, device: str, resume: bool,
                   batch_size: int | None, lr: float | None, progress: bool
                   ) -> ForgeryTrainResult:
    n_epochs, bs, rate = _ela_settings(epochs, batch_size, lr)
    d = training_defaults("ela-cnn")
    size, quality = int(d.size or 128), int(d.ela_quality or 90)
    dev = resolve_device(device)
    seed = int(cfg["seed"])
    xtr, ytr, fail = _ela_inputs([r for r in rows if r["split"] == "train"], size, quality,
                                 progress, "ELA train")
    xva, yva, fail_v = _ela_inputs([r for r in rows if r["split"] == "val"], size, quality,
                                   progress, "ELA val")
    if len(set(ytr.tolist())) < 2:
        raise ConfigError("the train split needs both original and tampered images")
    scale = 1.0 / 255.0

    def check_resume(info: Mapping[str, Any]) -> None:
        old = info.get("config", {})
        if old.get("lr") != rate or old.get("batch_size") != bs:
            raise ConfigError(f"cannot resume {run}: batch size / learning rate differ")

    files = LoopFiles(out_dir=run, info={"config": {"lr": rate, "batch_size": bs,
                                                    "epochs": n_epochs}},
                      resume=resume, check_resume=check_resume, label="ela-cnn epoch",
                      progress=progress)
    with Determinism(dev):
        seed_everything(seed)
        t = _build_ela_trainable(xtr, ytr, xva, yva, seed=seed, bs=bs, rate=rate, size=size,
                                 scale=scale, dev=dev)
        res = fit(t, n_epochs, files)
    model = t.net
    model.load_state_dict(res.best_state)
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
        "best_epoch": res.best_epoch,
        "batch_size": bs,
        "lr": rate,
        "optimizer": d.optimizer,
        "split": cfg["split"],
        "counts": counts,
        "note": "paper preset (seed 004): ELA of an 8-bit version (8-bit data as is; an "
                "explicit 0.5-99.5 percentile window for 12-16-bit data), as the paper did on "
                "8-bit JPEG/PNG images",
    })
    # the learning record; wall-clock seconds stay in metrics.jsonl only
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in res.records]
    return ForgeryTrainResult(run, "ela-cnn", counts, history, res.best_epoch, fail + fail_v)


# ------------------------------------------------------------------------------------ cues


def _feature_key(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:24]


def _cue_features(det: Any, row: dict[str, str], cues: Sequence[str], cache: Path
                  ) -> dict[str, np.ndarray]:
    """Per-image features for the combiner (cached as safetensors under ``cache``)."""
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
                progress: bool, texture: bool | None = None, seam: bool | None = None,
                whiteness: bool | None = None, allow_modified: bool = False
                ) -> ForgeryTrainResult:
    det = ForgeryDetector.from_run(None, source_run=source_run, device=device,
                                   texture=texture, seam=seam, whiteness=whiteness,
                                   allow_modified=allow_modified)
    cues = default_cues(texture=det.texture, seam=det.seam, whiteness=det.whiteness,
                        fingerprint=det.source is not None)
    cache = run / "features"
    cache.mkdir(exist_ok=True)
    use = [r for r in rows if r["split"] in ("train", "val")]
    feats: dict[str, dict[str, np.ndarray]] = {}
    failures: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for r in iter_progress(use, len(use), "cue maps", library_mode(progress), unit="images",
                           emit=log.info):
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
