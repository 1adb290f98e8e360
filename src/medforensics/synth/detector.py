"""Detector physics: one image of one unit, from anatomy to stored values.

Image formation::

    A        = anatomy line integral (collimator blades and lead marker included)
    q        = N0 * heel(y, x) * ((1 - s) * exp(-A) + s * blur(exp(-A)))     # scatter s
               (N0 set by automatic exposure control: mean q over the field = target dose)
    q       *= 1 - a * (1 + cos(2 pi f x + phi)) / 2                          # grid (model)
    c        = dqe*q + sqrt(dqe*q) * z1                # quantum noise (Gaussian approx. of
                                                       # Poisson; counts are >> 10)
    c        = G_psf * c                                # detector blur (model)
    d        = c * (1 + K) + sigma_r * z2 + col[x] + row[y]; defects   # unit fingerprint
    u        = (hi - log d) / (hi - lo)                 # log + auto-ranging on the field
    u       += a_s * (u - G_rs * u)                     # small-scale sharpening (model)
    u       += a_u * (u - G_ru * u)                     # large-scale unsharp mask (model)
    stored   = round((0.02 + 0.96 * LUT(clip(u))) * (2**bits - 1))   # LUT, bits (model)

Unit patterns are generated in 256-pixel tiles seeded by tile position, so they do not depend
on the image sizes of an archive; every image is read out from the detector's top-left corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medforensics.errors import ConfigError
from medforensics.synth.anatomy import (
    VIEWS,
    PatientTraits,
    Phantom,
    choose_study,
    draw_patient_traits,
    render_anatomy,
    resize_bilinear,
)
from medforensics.synth.devices import ModelSpec, UnitSpec
from medforensics.synth.streams import (
    T_COL,
    T_DEFECT,
    T_GAIN,
    T_IMAGE,
    T_LOOK_IMAGE,
    T_NOISE,
    T_ROW,
    stream,
)
from medforensics.synth.vendorlook import (
    ImageLook,
    VendorLook,
    apply_look,
    draw_image_look,
    make_look,
)

_TILE = 256
_GEN_MARGIN = 16

# ------------------------------------------------------------------- fixed pattern

@dataclass
class FixedPattern:
    """A unit's fixed pattern over the detector region ``[0:H, 0:W]``.

    Attributes:
        gain: float32 (H, W), PRNU ``K`` (multiplicative gain is ``1 + K``), mean ~0.
        col_offset: float32 (W,), additive column offsets (detected-quanta units).
        row_offset: float32 (H,), additive row offsets.
        defect_rows, defect_cols: int arrays, positions of defective pixels.
        defect_kind: int array, 0 = dead (10 % response), 1 = hot (x3 + 300), 2 = stuck.
        defect_value: float32 array, the stuck value (detected-quanta units).
    """

    gain: np.ndarray
    col_offset: np.ndarray
    row_offset: np.ndarray
    defect_rows: np.ndarray
    defect_cols: np.ndarray
    defect_kind: np.ndarray
    defect_value: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.gain.shape[0]), int(self.gain.shape[1])


def _gauss_white_norm(sigma: float) -> float:
    """Std of a 2-D Gaussian-filtered unit white noise (for re-normalisation)."""
    delta = np.zeros(int(8 * sigma) * 2 + 3)
    delta[delta.size // 2] = 1.0
    k = ndimage.gaussian_filter1d(delta, sigma)
    return float(np.sum(k * k))  # separable: (sum k^2)^(1/2 * 2)


def unit_pattern(unit: UnitSpec, shape: tuple[int, int]) -> FixedPattern:
    """Generate the unit's fixed pattern over the top-left ``shape`` of its detector.

    The values at a pixel do not depend on ``shape`` (tile-seeded generation), so patterns of
    the same unit generated for different extents agree on their overlap.

    Args:
        unit: the unit.
        shape: (H, W) region needed (the largest image of the unit).

    Returns:
        A :class:`FixedPattern`.
    """
    m, k, u = unit.key
    s = unit.seed
    h, w = int(shape[0]), int(shape[1])
    gh, gw = h + _GEN_MARGIN, w + _GEN_MARGIN
    nty, ntx = -(-gh // _TILE), -(-gw // _TILE)
    white = np.empty((nty * _TILE, ntx * _TILE), np.float32)
    for ty in range(nty):
        for tx in range(ntx):
            white[ty * _TILE:(ty + 1) * _TILE, tx * _TILE:(tx + 1) * _TILE] = \
                stream(s, T_GAIN, m, k, u, ty, tx).standard_normal((_TILE, _TILE), np.float32)
    white = white[:gh, :gw]
    sig = unit.model.prnu_corr
    if sig > 0:
        white = ndimage.gaussian_filter(white, sig, mode="reflect") / _gauss_white_norm(sig)
    gain = (white[:h, :w] * np.float32(unit.prnu_std)).astype(np.float32)

    def offsets(tag: int, n: int, std: float) -> np.ndarray:
        nt = -(-n // _TILE)
        parts = [stream(s, tag, m, k, u, t).standard_normal(_TILE) for t in range(nt)]
        v = np.concatenate(parts)[:n] if parts else np.zeros(0)
        return (v * std).astype(np.float32)

    col = offsets(T_COL, w, unit.col_offset_std)
    row = offsets(T_ROW, h, unit.row_offset_std)
    rows, cols, kinds, vals = [], [], [], []
    for ty in range(-(-h // _TILE)):
        for tx in range(-(-w // _TILE)):
            r = stream(s, T_DEFECT, m, k, u, ty, tx)
            n = int(r.poisson(unit.defect_rate * _TILE * _TILE))
            rr = r.integers(0, _TILE, n) + ty * _TILE
            cc = r.integers(0, _TILE, n) + tx * _TILE
            kk = r.choice(3, size=n, p=[0.3, 0.3, 0.4])
            vv = r.uniform(30.0, 2000.0, n)
            keep = (rr < h) & (cc < w)
            rows.append(rr[keep])
            cols.append(cc[keep])
            kinds.append(kk[keep])
            vals.append(vv[keep])
    return FixedPattern(gain=gain, col_offset=col, row_offset=row,
                        defect_rows=np.concatenate(rows).astype(np.int64),
                        defect_cols=np.concatenate(cols).astype(np.int64),
                        defect_kind=np.concatenate(kinds).astype(np.int64),
                        defect_value=np.concatenate(vals).astype(np.float32))


# --------------------------------------------------------------------- image physics

def _lut(u: np.ndarray, kind: str, param: float, gamma_img: float) -> np.ndarray:
    """Output tone curve on [0, 1] -> [0, 1] (model LUT times per-image gamma)."""
    if kind == "gamma":
        y = np.power(u, param * gamma_img)
    else:
        y = np.power(u, gamma_img) if gamma_img != 1.0 else u
        if kind == "filmic":
            s = 0.5 - 0.5 * np.cos(np.pi * y)  # smooth S-curve with the same end points
            y = (1.0 - param) * y + param * s
    return y


def render_detector_image(unit: UnitSpec, pattern: FixedPattern, phantom: Phantom,
                          rng: np.random.Generator, *,
                          look: ImageLook | None = None) -> np.ndarray:
    """Form one image on a unit's detector: exposure, noise, fingerprint, processing.

    Args:
        unit: the unit (its model supplies noise, blur, grid, processing, bit depth).
        pattern: the unit's fixed pattern covering at least the phantom's shape
            (the image is read out from the detector's top-left corner).
        phantom: the body part (attenuation map and collimated field).
        rng: per-image generator (exposure, quantum and read noise, processing jitter).
        look: the model's vendor look as realised on this image
            (:mod:`medforensics.synth.vendorlook`): its ranging percentiles replace the shared
            ones, and after the fingerprint processing its noise reduction, edge enhancement,
            equalisation, LUT, output levels, shutter and burned-in marker/text replace the
            modest model LUT. ``None`` (default): the fingerprint-only image.

    Returns:
        uint16 (H, W) stored values in ``[0, 2**bits_stored - 1]`` as written to Pixel Data
        (MONOCHROME1 models store inverted values).

    Raises:
        ConfigError: the pattern is smaller than the image.
    """
    md = unit.model
    att = phantom.attenuation
    h, w = att.shape
    if pattern.shape[0] < h or pattern.shape[1] < w:
        raise ConfigError(f"fixed pattern {pattern.shape} smaller than image {(h, w)}")
    f32 = np.float32
    # ---- exposure (shared distributions)
    target = float(math.exp(rng.normal(math.log(5000.0), 0.3)))  # AEC: detector dose target
    heel_dir = rng.uniform(0, 2 * math.pi)
    heel_amp = rng.uniform(0.0, 0.12)
    yy = (np.arange(h, dtype=f32)[:, None] / h - 0.5) * f32(math.sin(heel_dir))
    xx = (np.arange(w, dtype=f32)[None, :] / w - 0.5) * f32(math.cos(heel_dir))
    heel = 1.0 + f32(heel_amp) * (yy + xx)
    trans = np.exp(-att, dtype=f32)
    sf = float(rng.uniform(0.05, 0.25))
    ds = 8
    small = trans[::ds, ::ds]
    small = ndimage.gaussian_filter(small, max(1.0, 0.04 * min(h, w) / ds))
    scatter = resize_bilinear(small, (h, w))
    q = heel * ((1.0 - f32(sf)) * trans + f32(sf) * scatter)
    fld = phantom.field
    # automatic exposure control: the mean fluence in the open field meets the target
    q *= f32(target / max(float(q[::4, ::4][fld[::4, ::4]].mean()) if fld.any() else
                          float(q.mean()), 1e-6))
    # ---- stationary anti-scatter grid (model frequency/orientation, unit phase)
    if md.grid_freq > 0:
        n = w if md.grid_axis == 1 else h
        x = np.arange(n, dtype=np.float64)
        g = 1.0 - md.grid_amplitude * 0.5 * (1.0 + np.cos(2 * math.pi * md.grid_freq * x
                                                          + unit.grid_phase))
        q *= (g[None, :] if md.grid_axis == 1 else g[:, None]).astype(f32)
    # ---- quantum noise (Poisson, Gaussian approximation: counts are large) and blur
    mean = q * f32(md.dqe)
    counts = mean + np.sqrt(mean) * rng.standard_normal((h, w), dtype=f32)
    if max(md.psf_sigma) > 0.05:
        counts = ndimage.gaussian_filter(counts, md.psf_sigma, mode="nearest")
    # ---- unit fingerprint: PRNU, electronic noise, fixed offsets, defects
    sig = counts * (1.0 + pattern.gain[:h, :w])
    sig += f32(md.read_noise) * rng.standard_normal((h, w), dtype=f32)
    sig += pattern.col_offset[None, :w]
    sig += pattern.row_offset[:h, None]
    sel = (pattern.defect_rows < h) & (pattern.defect_cols < w)
    if np.any(sel):
        dr, dc = pattern.defect_rows[sel], pattern.defect_cols[sel]
        kind, val = pattern.defect_kind[sel], pattern.defect_value[sel]
        cur = sig[dr, dc]
        sig[dr, dc] = np.where(kind == 0, 0.1 * cur, np.where(kind == 1, 3.0 * cur + 300.0, val))
    logs = np.log(np.maximum(sig, 1.0))
    # ---- processing: auto-ranging on the collimated field (shared algorithm + jitter)
    # exposure recognition: percentiles of the log signal within the collimated field
    step = max(1, int(math.sqrt(h * w / 250_000.0)))
    sample = logs[::step, ::step][fld[::step, ::step]]
    if sample.size < 16:
        sample = logs.ravel()
    if look is None:
        lo, hi = np.percentile(sample, [rng.uniform(0.2, 1.0), rng.uniform(99.0, 99.9)])
    else:
        lo, hi = np.percentile(sample, list(look.range_pct))
    rng_span = max(float(hi - lo), 1e-3)
    u = (f32(hi) - logs) / f32(rng_span)
    if md.sharpen_amount > 0:
        u = u + f32(md.sharpen_amount) * (u - ndimage.gaussian_filter(u, md.sharpen_radius,
                                                                       mode="nearest"))
    if md.unsharp_amount > 0:
        u = u + f32(md.unsharp_amount) * (u - ndimage.gaussian_filter(u, md.unsharp_radius,
                                                                       mode="nearest"))
    maxval = (1 << md.bits_stored) - 1
    if look is None:
        np.clip(u, 0.0, 1.0, out=u)
        gamma_img = float(math.exp(rng.normal(0.0, 0.15)))  # per-image tone (shared)
        y = _lut(u, md.lut, md.lut_param, gamma_img)
        v = (f32(0.02) + f32(0.96) * y) * f32(maxval)
    else:
        v = apply_look(u, fld, look) * f32(maxval)
    out = np.clip(np.rint(v), 0, maxval).astype(np.uint16)
    if md.photometric == "MONOCHROME1":
        out = (maxval - out).astype(np.uint16)
    return out


def simulate_image(unit: UnitSpec, shape: tuple[int, int], *, seed: int = 0,
                   body_part: str | None = None, view: str | None = None,
                   laterality: str = "R", traits: PatientTraits | None = None,
                   pattern: FixedPattern | None = None,
                   vendor_look: bool = False) -> tuple[np.ndarray, Phantom]:
    """Render one image of a unit in memory (no DICOM), e.g. for tests and tampering demos.

    Args:
        unit: the device.
        shape: (rows, cols).
        seed: seed of the image's content and noise.
        body_part: body part (default: a random one of the unit's modality family).
        view: ViewPosition (default: the part's first view).
        laterality: "L"/"R".
        traits: patient anatomy factors (default: drawn from ``seed``).
        pattern: the unit's fixed pattern (generated when ``None``).
        vendor_look: also apply the model's processing look (:func:`model_look`); ``shape``
            is kept as given (the look's matrix sizes apply to archives).

    Returns:
        (stored uint16 (H, W), the phantom).
    """
    r = stream(unit.seed, T_IMAGE, seed, 0xFFFF)
    part, lat, views = choose_study(r, unit.model.modality, 1)
    part = body_part or part
    if part == "BREAST":
        v = view or "CC"
        lat = laterality or "R"
    else:
        v = view or VIEWS[part][0]
        lat = "" if part == "CHEST" else (laterality or lat)
    tr = traits or draw_patient_traits(r, sex="F" if part == "BREAST" else None)
    look = model_look(unit.model, unit.seed) if vendor_look else None
    ph = render_anatomy(part, v, lat, shape, r, tr,
                        fov_scale=look.fov_scale if look is not None else 1.0)
    pat = pattern if pattern is not None else unit_pattern(unit, shape)
    il = None if look is None else draw_image_look(
        look, stream(unit.seed, T_LOOK_IMAGE, seed, 0xFFFF), part, lat)
    return render_detector_image(unit, pat, ph, stream(unit.seed, T_NOISE, seed, 0xFFFF),
                                 look=il), ph


def model_look(model: ModelSpec, seed: int) -> VendorLook:
    """The vendor processing look of a model in an archive seeded with ``seed``.

    See :mod:`medforensics.synth.vendorlook`. Depends only on the seed and the model's
    indices, modality and pixel spacing.
    """
    m, k = (int(p) for p in model.model_id.split("."))
    return make_look(seed, m, k, model.modality, model.pixel_spacing)


