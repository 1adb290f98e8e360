"""Tampering generator with exact ground-truth masks.

Kinds (``KINDS``):

* ``copy-move``: a region of the image is pasted elsewhere in the same image (optional
  rotation / scaling; feathered edges).
* ``splice``: a region from another image is pasted in (intensity matched to the destination by
  mean/standard deviation).
* ``splice-device``: like ``splice`` but the donor image comes from a *different device*
  (``unit`` / ``model`` label of the input manifest, or the DICOM header).
* ``removal``: a region is filled from its surroundings (harmonic / diffusion fill solving
  Laplace's equation with the surrounding values as boundary condition) plus Gaussian noise
  matched to the surrounding noise level.
* ``insertion``: a synthetic lesion / nodule (smooth radial profile with faint texture) is
  added; it is brighter (higher attenuation) in display orientation.
* ``local-edit``: local contrast change around the local mean, or Gaussian blur, in a region.

**Pixel domain.** Edits are made on the *stored* integer values (DICOM: the Pixel Data values
before the Modality LUT; PNG/TIFF: the stored 8/16-bit values; JPEG: the decoded 8-bit values).
Results are rounded and clipped to the original image's own ``[min, max]``; an edit is
re-drawn elsewhere if it would change the image's minimum or maximum (so MONOCHROME1
inversion and any min/max-based normalisation are unaffected outside the edit), if the location
is flat (background), or if it would change fewer than 80 % of the region's pixels (50 % for
``insertion``, whose smooth profile rounds to zero at its rim). A copy-move *source* is
re-drawn too when it is flat or more than half of it is at the image's minimum or maximum:
pasting clipped background is a constant fill, with no content to copy (``copy_source``
option: ``"clipped"`` makes exactly such fills, for measuring them on their own).

**Masks.** The mask is *exactly the set of pixels whose stored value differs* between the
tampered and the matched original file. With feathered edges, pixels in the soft border whose
rounded blend equals the original value are therefore *not* in the mask, and pixels inside the
region whose value happens to be equal (e.g. copying 0 onto 0) are not either. Exception: JPEG
outputs are re-encoded, so the decoded tampered and decoded original files differ in every
8x8 block touched by the edit; for JPEG the mask is the set of pixels changed *before* encoding
(the edit itself), and the decoded difference lies within the 8x8 blocks the mask touches.

**Outputs** (:func:`generate`): the tampered file in the source's format (DICOM stays DICOM
with its header and a new deterministic SOPInstanceUID; PNG keeps its 8/16-bit depth; JPEG is
re-encoded with the source's quantisation tables; TIFF keeps its dtype), a matched original
written through the *same* writer (so format artefacts and header treatment match: the
original copy also gets a new SOPInstanceUID), uint8 0/255 mask PNGs, and one manifest row per
output file (see :data:`MANIFEST_COLUMNS`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.errors import ConfigError, MedForensicsError, TamperError
from medforensics.synth.edits import (
    KINDS,
    MAX_TRIES,
    Edit,
    bbox_of,
    clipped_share,
    copy_source_option,
    draw_size,
    propose_edit,
    textured,
)
from medforensics.synth.rasters import Raster, load_raster

__all__ = [
    "KINDS",
    "DEFAULT_KINDS",
    "MANIFEST_COLUMNS",
    "TamperResult",
    "Raster",
    "tamper_array",
    "load_raster",
    "tamper_file",
    "generate",
    "write_manifest",
    "read_inputs",
]

log = logging.getLogger(__name__)

DEFAULT_KINDS: tuple[str, ...] = ("copy-move", "splice", "removal", "insertion", "local-edit")

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "original_path",
    "label",
    "kind",
    "pair_id",
    "format",
    "bbox",
    "region_size",
    "n_changed",
    "donor_path",
    "seed",
    "mask_path",
    "source_mask_path",
    "source_bbox",
    "detail",
    "PatientID",
    "StudyInstanceUID",
    "manufacturer",
    "model",
    "unit",
    "split",
)
_CARRIED = ("PatientID", "StudyInstanceUID", "manufacturer", "model", "unit", "split")



# ---------------------------------------------------------------------------------------------
# array-level operations
# ---------------------------------------------------------------------------------------------


@dataclass
class TamperResult:
    """Outcome of :func:`tamper_array`.

    Attributes:
        pixels: tampered stored values, same shape and dtype as the input.
        mask: bool (H, W), True exactly where ``pixels != original``.
        kind: one of :data:`KINDS`.
        bbox: ``(x0, y0, x1, y1)`` of the mask, end-exclusive.
        region_size: nominal region size in pixels (longer side of the edited shape).
        source_mask: copy-move only: bool (H, W) of the source pixels that were copied onto the
            changed pixels (exact for a translation or a quarter turn; to the nearest pixel for
            a copy turned by any angle or scaled).
        source_bbox: copy-move only: ``(x0, y0, x1, y1)`` of ``source_mask``.
        detail: JSON-serialisable parameters of the edit.
    """

    pixels: np.ndarray
    mask: np.ndarray
    kind: str
    bbox: tuple[int, int, int, int]
    region_size: int
    source_mask: np.ndarray | None = None
    source_bbox: tuple[int, int, int, int] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def tamper_array(
    pixels: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    *,
    sizes: tuple[int, int] = (32, 256),
    feather: float | None = None,
    donor: np.ndarray | None = None,
    polarity: int = 1,
    donor_polarity: int = 1,
    options: dict[str, Any] | None = None,
) -> TamperResult:
    """Apply one tampering operation to an image of stored values.

    Args:
        pixels: integer-valued array (H, W) of stored values (any integer or float dtype);
            the output keeps this dtype.
        kind: one of :data:`KINDS`.
        rng: NumPy generator (all randomness comes from it).
        sizes: ``(min, max)`` region size in pixels; drawn log-uniformly, the maximum clipped to
            ``min(H, W) // 2`` (and for splices to the donor size).
        feather: Gaussian feather sigma in pixels; ``None`` draws one of 0, 1, 2 px.
        donor: donor image (stored values) for ``splice``/``splice-device``.
        polarity: +1 when higher stored values are brighter (MONOCHROME2 and positive rescale
            slope), -1 otherwise; used by ``insertion`` and to orient donors.
        donor_polarity: polarity of ``donor``.
        options: ``rotate``/``scale`` (bool, copy-move), ``p_transform`` (probability of each
            transform when enabled, default 0.5), ``copy_source`` (copy-move: "content", the
            default, redraws a source that is flat or more than half at the image's minimum /
            maximum - a copy of clipped background is a constant fill, not a copy of content;
            "clipped" asks for exactly such a source; "any" takes what is drawn),
            ``splice_match`` ("meanstd", "mean", "none"), ``removal_max`` (cap on the removal
            region size, default 160 px).

    Returns:
        :class:`TamperResult`; ``mask`` is exactly ``result.pixels != pixels``.

    Raises:
        ConfigError: unknown kind or bad sizes.
        TamperError: no valid location found (too small / flat image, missing donor).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown tampering kind {kind!r}; choose from {', '.join(KINDS)}")
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise TamperError(f"expected a 2-D image, got shape {arr.shape}")
    if kind in ("splice", "splice-device") and donor is None:
        raise TamperError(f"{kind} needs a donor image")
    opts = dict(options or {})
    H, W = arr.shape
    orig = arr.astype(np.float64)
    vmin, vmax = float(orig.min()), float(orig.max())
    if vmax <= vmin:
        raise TamperError("constant image: nothing to tamper")
    p1, p99 = np.percentile(orig, [1, 99])
    dyn = float(max(p99 - p1, 1.0))
    ref_std = float(orig.std())
    copy_source = copy_source_option(opts)
    limit = min(H, W) // 2
    last_reason = "no attempt"
    for _attempt in range(MAX_TRIES):
        size = draw_size(rng, sizes, limit)
        f = float(rng.choice([0.0, 1.0, 2.0])) if feather is None else float(feather)
        try:
            ed = propose_edit(kind, arr, rng, size, f, opts, ref_std, donor=donor,
                              donor_polarity=donor_polarity, polarity=polarity, dyn=dyn)
        except TamperError as exc:
            last_reason = str(exc)
            continue
        ys, xs = ed.win
        if not textured(arr, ys.start, xs.start, ys.stop - ys.start, xs.stop - xs.start, ref_std):
            last_reason = "flat location"
            continue
        if kind == "copy-move" and ed.source_win is not None:
            why = _source_rejected(ed, orig, vmin, vmax, ref_std, copy_source)
            if why:
                last_reason = why
                continue
        applied = _apply(ed, orig, vmin, vmax, 0.5 if kind == "insertion" else 0.8)
        if isinstance(applied, str):
            last_reason = applied
            continue
        out, mask = applied
        res = TamperResult(
            pixels=out.astype(arr.dtype),
            mask=mask,
            kind=kind,
            bbox=bbox_of(mask),
            region_size=int(size),
            detail={**ed.detail, "attempt": _attempt},
        )
        if kind == "copy-move" and ed.source_win is not None:
            res.source_mask = _source_mask(ed, mask, (H, W))
            res.source_bbox = bbox_of(res.source_mask)
        return res
    raise TamperError(f"could not place a {kind} edit after {MAX_TRIES} attempts ({last_reason})")


def _source_rejected(ed: Edit, orig: np.ndarray, vmin: float, vmax: float, ref_std: float,
                     copy_source: str) -> str | None:
    """Why a copy-move source does not suit the ``copy_source`` option (None: it does; its
    clipped share is then recorded in ``ed.detail``)."""
    assert ed.source_win is not None
    src_values = orig[ed.source_win]
    clipped = clipped_share(src_values, vmin, vmax)
    if copy_source == "content" and (clipped > 0.5 or src_values.std() <= 0.05 * ref_std):
        return "copy-move source is flat or clipped background"
    if copy_source == "clipped" and clipped <= 0.5:
        return "copy-move source is not clipped background"
    ed.detail["source_clipped"] = round(clipped, 3)
    return None


def _apply(ed: Edit, orig: np.ndarray, vmin: float, vmax: float, need: float
           ) -> tuple[np.ndarray, np.ndarray] | str:
    """Blend, round and clip an edit into float64 ``orig``: ``(out, mask)``, or why it was
    refused (it would change the image's min/max, or change less than ``need`` of its region's
    pixels - near-no-op edits such as a contrast-matched splice into flat background)."""
    region = ed.alpha >= 1.0
    blended = ed.alpha * ed.new + (1.0 - ed.alpha) * orig[ed.win]
    out = orig.copy()
    out[ed.win] = np.clip(np.rint(blended), vmin, vmax)
    if float(out.min()) != vmin or float(out.max()) != vmax:
        return "edit would change the image min/max"
    mask = out != orig
    n_region = int(region.sum())
    changed_in_region = int(mask[ed.win][region].sum())
    if n_region == 0 or changed_in_region < need * n_region:
        return f"edit changed only {changed_in_region}/{n_region} region pixels"
    return out, mask


def _source_mask(ed: Edit, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the copy-move source pixels copied onto the changed ones (exact for a
    translation or a quarter turn; for a resampled copy, the source pixels whose nearest
    target position is a changed pixel - see :func:`_resampled_source`)."""
    assert ed.source_win is not None
    sm = np.zeros(shape, bool)
    if ed.translation is not None:
        dy, dx = ed.translation
        ys, xs = np.nonzero(mask)
        sm[ys - dy, xs - dx] = True
    elif ed.detail.get("scale") == 1.0 and ed.detail.get("angle") in (90.0, 180.0, 270.0):
        # exact quarter turn: the source window is the target's turned back
        sm[ed.source_win] = np.rot90(ed.alpha > 0, -int(ed.detail["angle"]) // 90)
    else:
        sm = _resampled_source(ed, mask, shape)
    return sm


def _resampled_source(ed: Edit, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the source area of a copy turned by any angle and / or scaled.

    The copy was sampled at ``R(angle) @ offset / scale`` around the source window's centre
    (``edits._op_copy_move``); here every image pixel near that centre is sent the other way,
    to ``R(angle).T @ offset * scale`` in the target window, and kept when the nearest target
    pixel changed. Unlike marking the untransformed shape in the source window, this follows
    the turn and the size of the copied area (a copy scaled by 0.8 came from an area 1.25 x
    as wide), so a "both copies" truth covers what was really copied.
    """
    assert ed.source_win is not None
    H, W = shape
    changed = mask[ed.win]
    hw, ww = changed.shape
    cy = ed.source_win[0].start + hw / 2.0
    cx = ed.source_win[1].start + ww / 2.0
    angle = math.radians(float(ed.detail.get("angle", 0.0)))
    scale = float(ed.detail.get("scale", 1.0))
    reach = math.hypot(hw, ww) / (2.0 * scale) + 2.0
    y0, y1 = max(int(cy - reach), 0), min(int(math.ceil(cy + reach)) + 1, H)
    x0, x1 = max(int(cx - reach), 0), min(int(math.ceil(cx + reach)) + 1, W)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = yy - cy + 0.5, xx - cx + 0.5
    c, s = math.cos(angle), math.sin(angle)
    ty = np.rint(scale * (c * dy + s * dx) + (hw - 1) / 2.0).astype(np.int64)
    tx = np.rint(scale * (-s * dy + c * dx) + (ww - 1) / 2.0).astype(np.int64)
    inside = (ty >= 0) & (ty < hw) & (tx >= 0) & (tx < ww)
    hit = np.zeros(ty.shape, bool)
    hit[inside] = changed[ty[inside], tx[inside]]
    sm = np.zeros(shape, bool)
    sm[y0:y1, x0:x1] = hit
    return sm


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def _mask_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path, format="PNG")


def _fmt_box(b: tuple[int, int, int, int] | None) -> str:
    return "" if b is None else " ".join(str(int(v)) for v in b)


def tamper_file(
    src: str | Path,
    out_dir: str | Path,
    kind: str,
    *,
    seed: int,
    pair_id: str,
    sizes: tuple[int, int] = (32, 256),
    donor: str | Path | None = None,
    feather: float | None = None,
    options: dict[str, Any] | None = None,
    carried: dict[str, str] | None = None,
    raster: Raster | None = None,
    donor_raster: Raster | None = None,
) -> list[dict[str, str]]:
    """Tamper one file and write the tampered copy, the matched original and both masks.

    Files written (``out_dir/images``, ``out_dir/masks``): ``{pair_id}_{kind}{ext}``,
    ``{pair_id}_original{ext}``, ``{pair_id}_{kind}.png`` (mask), ``{pair_id}_original.png``
    (all-zero mask), and for copy-move ``{pair_id}_{kind}_source.png``.

    Args:
        src: source image file.
        out_dir: output directory (created).
        kind: one of :data:`KINDS`.
        seed: integer seed; the edit depends only on it, the source and the donor.
        pair_id: identifier prefix shared by the tampered/original pair.
        sizes: ``(min, max)`` region size in pixels.
        donor: donor file for splices.
        feather: feather sigma (``None``: random 0/1/2 px).
        options: see :func:`tamper_array`.
        carried: input-manifest values copied to the rows (PatientID, unit, split, ...).
        raster: pre-loaded source (avoids reading twice).
        donor_raster: pre-loaded donor.

    Returns:
        Two manifest rows (tampered, original) with the columns of :data:`MANIFEST_COLUMNS`.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    r = raster if raster is not None else load_raster(src)
    d = None
    if kind in ("splice", "splice-device"):
        if donor_raster is not None:
            d = donor_raster
        elif donor is not None:
            d = load_raster(donor)
        else:
            raise TamperError(f"{kind} needs a donor file")
    rng = np.random.default_rng(int(seed))
    res = tamper_array(
        r.pixels, kind, rng, sizes=sizes, feather=feather,
        donor=None if d is None else d.pixels, polarity=r.polarity,
        donor_polarity=1 if d is None else d.polarity, options=options,
    )
    t_path = out / "images" / f"{pair_id}_{kind}{r.ext}"
    o_path = out / "images" / f"{pair_id}_original{r.ext}"
    tm_path = out / "masks" / f"{pair_id}_{kind}.png"
    om_path = out / "masks" / f"{pair_id}_original.png"
    r.writer(t_path, res.pixels, f"tampered:{kind}:{seed}")
    r.writer(o_path, r.pixels, f"original:{seed}")
    _mask_png(tm_path, res.mask)
    _mask_png(om_path, np.zeros_like(res.mask))
    sm_path = ""
    if res.source_mask is not None:
        smp = out / "masks" / f"{pair_id}_{kind}_source.png"
        _mask_png(smp, res.source_mask)
        sm_path = str(smp.resolve())
    base = {c: "" for c in MANIFEST_COLUMNS}
    base.update({k: str(v) for k, v in (carried or {}).items() if k in _CARRIED})
    base.update({"original_path": str(Path(src)), "pair_id": pair_id, "format": r.fmt,
                 "seed": str(int(seed))})
    t_row = dict(base)
    t_row.update({
        "path": str(t_path.resolve()), "label": "tampered", "kind": kind,
        "bbox": _fmt_box(res.bbox), "region_size": str(res.region_size),
        "n_changed": str(int(res.mask.sum())),
        "donor_path": "" if d is None else str(d.path),
        "mask_path": str(tm_path.resolve()), "source_mask_path": sm_path,
        "source_bbox": _fmt_box(res.source_bbox),
        "detail": json.dumps({**res.detail, **({"donor_device": d.device} if d else {})},
                             sort_keys=True, default=float),
    })
    o_row = dict(base)
    o_row.update({"path": str(o_path.resolve()), "label": "original", "kind": "none",
                  "n_changed": "0", "mask_path": str(om_path.resolve())})
    return [t_row, o_row]


_IMAGE_EXT = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def read_inputs(source: str | Path) -> list[dict[str, str]]:
    """List input images from a manifest CSV (eligible rows) or a directory (recursive).

    Args:
        source: a CSV with a ``path`` column (rows whose ``status`` is not ``eligible`` are
            skipped and counted in the log), or a directory searched for
            .dcm/.dicom/.png/.jpg/.jpeg/.tif/.tiff files and extension-less DICOM files.

    Returns:
        Rows with at least ``path`` (plus any manifest columns), sorted by path.
    """
    s = Path(source)
    if s.is_file():
        with open(s, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ConfigError(f"{s}: manifest has no 'path' column")
            rows = list(reader)
        keep = [r for r in rows if r.get("status", "eligible") in ("", "eligible")]
        if len(keep) < len(rows):
            log.info("%s: %d of %d rows are not eligible and are not tampered",
                     s, len(rows) - len(keep), len(rows))
        base = s.parent
        for r in keep:
            p = Path(r["path"])
            if not p.is_absolute() and not p.exists() and (base / p).exists():
                r["path"] = str(base / p)
        return sorted(keep, key=lambda r: r["path"])
    if s.is_dir():
        found = []
        for p in sorted(s.rglob("*")):
            if not p.is_file():
                continue
            if p.suffix.lower() in _IMAGE_EXT:
                found.append({"path": str(p)})
            elif p.suffix == "":
                with open(p, "rb") as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        found.append({"path": str(p)})
        return found
    raise ConfigError(f"{s} is neither a manifest CSV nor a directory")


def write_manifest(rows: Sequence[dict[str, str]], path: str | Path) -> None:
    """Write tamper-manifest rows (columns :data:`MANIFEST_COLUMNS`) to CSV."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in MANIFEST_COLUMNS})


def _device_of(row: dict[str, str], raster: Raster | None) -> str:
    for k in ("unit", "model"):
        if row.get(k):
            return str(row[k])
    return raster.device if raster is not None else ""


@dataclass
class GenerateReport:
    """Summary of :func:`generate`: rows written and the inputs that failed (path, reason)."""

    rows: list[dict[str, str]]
    failures: list[tuple[str, str]]
    manifest_path: Path


class _RasterCache:
    """The last few loaded rasters, and the device label of every input seen so far.

    Device labels come from the manifest (``unit``, else ``model``) or, for inputs without
    one, from the raster once it is loaded; a splice-device donor must differ in it.
    """

    def __init__(self, rows: Sequence[dict[str, str]], size: int = 8) -> None:
        self.size = size
        self.cache: dict[str, Raster] = {}
        self.devices: dict[str, str] = {}
        for r in rows:
            if r.get("unit") or r.get("model"):
                self.devices[r["path"]] = _device_of(r, None)

    def get(self, path: str) -> Raster:
        """The raster of ``path``, loaded on first use (the oldest is dropped past ``size``)."""
        if path not in self.cache:
            if len(self.cache) > self.size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[path] = load_raster(path)
            self.devices.setdefault(path, self.cache[path].device)
        return self.cache[path]


def _pick_donor(rows_in: Sequence[dict[str, str]], path: str, raster: Raster, kind: str,
                item_seed: int, rasters: _RasterCache) -> Raster:
    """The first readable other input, in an order drawn from ``item_seed``, to splice from.

    For ``splice-device`` the donor's device label must be known and differ from the
    image's own.

    Raises:
        TamperError: no input qualifies.
    """
    drng = np.random.default_rng(item_seed ^ 0x5A5A)
    own = rasters.devices.get(path, raster.device)
    cands = [j for j in drng.permutation(len(rows_in)) if rows_in[int(j)]["path"] != path]
    for j in cands:
        dp = rows_in[int(j)]["path"]
        if kind == "splice-device":
            dev = rasters.devices.get(dp)
            if dev is None:
                try:
                    dev = rasters.get(dp).device
                except MedForensicsError:
                    continue
            if not own or not dev or dev == own:
                continue
        try:
            return rasters.get(dp)
        except MedForensicsError:
            continue
    raise TamperError(
        "no donor image" + (" from another device (device labels missing or a "
                            "single device)" if kind == "splice-device" else "")
    )


def generate(
    inputs: str | Path | Sequence[dict[str, str]],
    out_dir: str | Path,
    *,
    kinds: Iterable[str] = DEFAULT_KINDS,
    seed: int = 0,
    sizes: tuple[int, int] = (32, 256),
    n: int | None = None,
    feather: float | None = None,
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateReport:
    """Generate a tampering data set: one tampered + one matched original per source image.

    Sources are shuffled with ``seed``; the first ``n`` (default all) are used and kinds are
    assigned round-robin in that shuffled order (balanced). Splice donors are other inputs
    (``splice``: any other image; ``splice-device``: an image whose device label differs).
    Per-image seeds are derived from ``(seed, index)`` and recorded in the manifest.
    Failures (unreadable, unsupported, no donor) are logged, recorded, and do not stop the batch.

    Args:
        inputs: manifest CSV, directory, or rows with a ``path`` key.
        out_dir: output directory; writes ``images/``, ``masks/``, ``tamper_manifest.csv`` and
            ``failures.csv`` (when any failed).
        kinds: kinds to use (subset of :data:`KINDS`).
        seed: master seed.
        sizes: ``(min, max)`` region size in pixels.
        n: number of source images to use (default: all).
        feather: feather sigma (``None``: random 0/1/2 px per image).
        options: see :func:`tamper_array`.
        progress: optional callback ``(done, total)``.

    Returns:
        :class:`GenerateReport`.
    """
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(f"unknown kinds {bad}; choose from {', '.join(KINDS)}")
    copy_source_option(dict(options or {}))
    rows_in = read_inputs(inputs) if isinstance(inputs, (str, Path)) else list(inputs)
    if not rows_in:
        raise ConfigError("no input images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    master = np.random.default_rng(seed)
    order = master.permutation(len(rows_in))
    if n is not None:
        if n < 1:
            raise ConfigError("n must be >= 1")
        order = order[:n]
    rasters = _RasterCache(rows_in)
    rows_out: list[dict[str, str]] = []
    failures: list[tuple[str, str]] = []
    total = len(order)
    for i, idx in enumerate(order):
        row = rows_in[int(idx)]
        path = row["path"]
        kind = kinds[i % len(kinds)]
        item_seed = int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])
        pair_id = f"{i:05d}"
        try:
            r = rasters.get(path)
            donor_r = None
            if kind in ("splice", "splice-device"):
                donor_r = _pick_donor(rows_in, path, r, kind, item_seed, rasters)
            carried = {k: row.get(k, "") for k in _CARRIED}
            rows_out.extend(tamper_file(
                path, out, kind, seed=item_seed, pair_id=pair_id, sizes=sizes,
                feather=feather, options=options, carried=carried, raster=r,
                donor_raster=donor_r,
            ))
        except MedForensicsError as exc:
            log.warning("tamper %s (%s) failed: %s", path, kind, exc)
            failures.append((path, f"{type(exc).__name__}: {exc}"))
        if progress is not None:
            progress(i + 1, total)
    mpath = out / "tamper_manifest.csv"
    write_manifest(rows_out, mpath)
    if failures:
        with open(out / "failures.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            w.writerows(failures)
    return GenerateReport(rows_out, failures, mpath)
