"""Vendor processing looks for the simulator: what a resized 8-bit image still shows.

On real archives, manufacturers and models differ in more than the detector's noise
fingerprint. Before an image is stored "for presentation", the vendor's software applies its
own processing: an output LUT and contrast curve (often with a preset per body part), edge
enhancement, dynamic-range equalisation, noise reduction; the detector or cassette fixes the
matrix size and pixel spacing; the software shutters the collimated border (black, white, a
frame) and may burn in a side marker and text. Those differences survive a min-max 8-bit
rescale and a 256 x 256 resize, which is what the Deep-RSI and DeepMammo pipelines keep.

The default simulated archive leaves all of this out on purpose (devices differ only by their
fingerprint). With ``vendor_look=True`` (``medforensics simulate --vendor-look``),
:mod:`medforensics.synth.simulate` gives every model a :class:`VendorLook` and every image an
:class:`ImageLook` drawn from it, and applies them with the functions here:

* **house** (per manufacturer): LUT family, shutter style, side-marker corner and style, the
  corner of the annotation text;
* **model**: LUT slope and centre, a LUT-centre preset per body part, the ranging percentiles,
  black and white output levels, edge enhancement, equalisation and noise-reduction strengths,
  its matrices (aspect ratio and size), a field-of-view scale that follows its pixel spacing,
  and how often it shutters, marks and annotates;
* **image**: jitter of the LUT, ranging and strengths, and whether (and where) the shutter,
  marker and text appear.

Everything is deterministic: looks come from ``(seed, manufacturer, model)``, an image's look
from a generator the caller seeds per image. The functions are pure NumPy on float32 arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.synth.anatomy import resize_bilinear

__all__ = [
    "LUT_FAMILIES",
    "SHUTTER_STYLES",
    "VendorLook",
    "ImageLook",
    "make_look",
    "draw_image_look",
    "choose_matrix",
    "lut",
    "enhance",
    "tone",
    "overlay",
    "apply_look",
    "look_summary",
]

LUT_FAMILIES: tuple[str, ...] = ("sigmoid", "gamma", "log", "invlog")
"""Tone-curve families; the first four manufacturers each get a different one."""

SHUTTER_STYLES: tuple[str, ...] = ("black", "white", "none", "frame")
"""What the software does outside the collimated field (``frame``: a constant plate-edge band
around the whole image)."""

_CORNERS = ("tl", "tr", "bl", "br")
_PARTS = ("HAND", "WRIST", "FOREARM", "ELBOW", "SHOULDER", "CHEST", "BREAST")
_T_HOUSE, _T_MODEL, _T_DESIGN = 41, 42, 43
_DESIGN_DIMS = 8

# 7 x 5 bitmaps of the side-marker letters
_SIDE_GLYPHS = {
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _design(seed: int, m: int, k: int) -> np.ndarray:
    """Quasi-random point in [0, 1)^8 for model (m, k): models of any archive stay apart.

    Additive recurrence (Roberts' R_d sequence) over the Cantor pairing of (m, k) with a
    seeded offset, as for the fingerprint design in :mod:`medforensics.synth.simulate`, so two
    models never draw nearly the same processing by chance.
    """
    g = (m + k) * (m + k + 1) // 2 + k
    phi = 2.0
    for _ in range(60):
        phi = (1.0 + phi) ** (1.0 / (_DESIGN_DIMS + 1))
    alpha = np.array([(1.0 / phi) ** (j + 1) for j in range(_DESIGN_DIMS)])
    offset = _rng(seed, _T_DESIGN).random(_DESIGN_DIMS)
    return (offset + (g + 1) * alpha) % 1.0


# ------------------------------------------------------------------------------ specs

@dataclass(frozen=True)
class VendorLook:
    """The processing look of one device model (house style plus model settings).

    Attributes:
        model_id: "<manufacturer index>.<model index>".
        lut: tone-curve family, one of :data:`LUT_FAMILIES` (house).
        lut_slope: steepness of the curve (sigmoid gain, gamma exponent, log strength).
        lut_center: input value at the curve's midpoint, in [0, 1].
        part_shift: LUT-centre preset per body part, ``((part, shift), ...)``.
        range_pct: (low, high) percentiles of the log signal in the field mapped to 0 and 1
            (exposure recognition; how much is clipped).
        black: output level of input 0, fraction of full scale.
        white: output level of input 1.
        edge_radius: Gaussian sigma (px) of the fine edge enhancement.
        edge_amount: gain of the fine edge enhancement (0 = none).
        eq_radius: Gaussian sigma of the large-scale equalisation, fraction of the short side.
        eq_amount: its gain: > 0 boosts local contrast, < 0 compresses the dynamic range.
        nr_sigma: Gaussian sigma (px) of the edge-preserving noise reduction.
        nr_amount: its strength in [0, 1] (0 = none).
        matrices: ``((long side position in the archive's size range 0..1, aspect
            short/long), ...)``: the detector or cassette formats of the model.
        fov_scale: field of view relative to the default framing (> 1: anatomy smaller),
            from the model's pixel spacing.
        shutter: what happens outside the collimated field, one of :data:`SHUTTER_STYLES`
            (house).
        shutter_probability: share of images where the shutter is applied.
        frame_width: width of the ``frame`` band, fraction of the short side.
        marker_probability: share of images with a burned-in side marker.
        marker_corner: its corner ("tl", "tr", "bl", "br"; house).
        marker_size: glyph height, fraction of the short side.
        marker_boxed: letter drawn on a dark box (house).
        text_probability: share of images with burned-in annotation text.
        text_corner: corner of the text (house; never the marker's).
        text_lines: lines of text.
        text_chars: typical characters per line.
        text_level: grey level of the text, fraction of full scale.
    """

    model_id: str
    lut: str
    lut_slope: float
    lut_center: float
    part_shift: tuple[tuple[str, float], ...]
    range_pct: tuple[float, float]
    black: float
    white: float
    edge_radius: float
    edge_amount: float
    eq_radius: float
    eq_amount: float
    nr_sigma: float
    nr_amount: float
    matrices: tuple[tuple[float, float], ...]
    fov_scale: float
    shutter: str
    shutter_probability: float
    frame_width: float
    marker_probability: float
    marker_corner: str
    marker_size: float
    marker_boxed: bool
    text_probability: float
    text_corner: str
    text_lines: int
    text_chars: int
    text_level: float


@dataclass(frozen=True)
class ImageLook:
    """A model's look as realised on one image (jittered values, what is burned in).

    Attributes:
        model_id: the model.
        lut, lut_slope, lut_center: the image's tone curve (centre includes the body-part
            preset).
        range_pct: the image's ranging percentiles.
        black, white: output levels.
        edge_radius, edge_amount: fine edge enhancement.
        eq_radius, eq_amount: large-scale equalisation (radius as a fraction of the short
            side).
        nr_sigma, nr_amount: noise reduction.
        shutter: shutter applied to this image ("none" when not applied).
        frame_width: ``frame`` band width, fraction of the short side.
        marker: burned-in side-marker letter ("" = none).
        marker_corner, marker_size, marker_boxed: where and how.
        marker_offset: (dy, dx) distance of the marker from its corner, fractions of the
            short side.
        text_lines: lines of burned-in text (0 = none).
        text_chars: characters per line.
        text_corner, text_level: where and how bright.
        text_seed: seed of the glyph shapes.
    """

    model_id: str
    lut: str
    lut_slope: float
    lut_center: float
    range_pct: tuple[float, float]
    black: float
    white: float
    edge_radius: float
    edge_amount: float
    eq_radius: float
    eq_amount: float
    nr_sigma: float
    nr_amount: float
    shutter: str
    frame_width: float
    marker: str
    marker_corner: str
    marker_size: float
    marker_boxed: bool
    marker_offset: tuple[float, float]
    text_lines: int
    text_chars: int
    text_corner: str
    text_level: float
    text_seed: int

    @property
    def burned_in(self) -> bool:
        """True when a marker or text is burned into the pixels (BurnedInAnnotation YES)."""
        return bool(self.marker) or self.text_lines > 0


_SPACING_REF = {"DX": 0.143, "CR": 0.125, "MG": 0.07}


def make_look(seed: int, m: int, k: int, modality: str, pixel_spacing: float) -> VendorLook:
    """The look of model ``(m, k)`` of an archive seeded with ``seed``.

    Depends only on its arguments, so adding or excluding devices keeps every other model's
    look.

    Args:
        seed: archive seed.
        m: manufacturer index.
        k: model index within the manufacturer.
        modality: "DX", "CR" or "MG" (formats and shutter habits differ).
        pixel_spacing: the model's detector pixel pitch in mm (sets ``fov_scale``).

    Returns:
        A :class:`VendorLook`.
    """
    house = _rng(seed, _T_HOUSE, m)
    fam_offset = int(_rng(seed, _T_HOUSE, 0xFFFF).integers(0, len(LUT_FAMILIES)))
    family = LUT_FAMILIES[(m + fam_offset) % len(LUT_FAMILIES)]
    shutter = SHUTTER_STYLES[(m + fam_offset + 1) % len(SHUTTER_STYLES)]
    corners = list(house.permutation(len(_CORNERS)))
    marker_corner, text_corner = _CORNERS[corners[0]], _CORNERS[corners[1]]
    boxed = bool(house.random() < 0.5)
    text_lines = int(house.integers(1, 4))
    # house ranges of the model settings: one manufacturer's models resemble each other
    house_edge = float(house.uniform(0.0, 1.0))
    house_nr = float(house.uniform(0.0, 1.0))
    house_eq = float(house.uniform(-1.0, 1.0))
    dz = _design(seed, m, k)
    r = _rng(seed, _T_MODEL, m, k)
    slope = {"sigmoid": 5.0 + 7.0 * dz[0], "gamma": 0.55 + 1.1 * dz[0],
             "log": 2.0 + 18.0 * dz[0], "invlog": 2.0 + 18.0 * dz[0]}[family]
    center = 0.42 + 0.16 * dz[1]
    parts = tuple((p, float(round(r.normal(0.0, 0.04), 4))) for p in _PARTS)
    range_pct = (float(0.1 + 4.9 * dz[2] ** 2), float(99.9 - 4.9 * dz[3] ** 2))
    black = float(0.1 * r.random() ** 2)
    white = float(1.0 - 0.12 * r.random() ** 2)
    edge_amount = float(np.clip(0.4 * house_edge + 1.1 * dz[4], 0.0, 1.5))
    nr_amount = float(np.clip(0.3 * house_nr + 0.5 * dz[5], 0.0, 0.8))
    eq_amount = float(np.clip(0.3 * house_eq + 1.2 * (dz[6] - 0.5), -0.6, 0.8))
    if modality == "MG":
        n_mat = 2
        aspects = [0.75, 0.8]
    elif modality == "CR":
        n_mat = int(r.integers(2, 4))
        aspects = [0.78, 0.8, 0.82, 0.84, 1.0]
    else:
        n_mat = int(r.integers(1, 3))
        aspects = [0.81, 0.83, 1.0, 1.0]
    pos0 = float(dz[7])
    matrices = tuple(
        (float(round((pos0 + j * 0.37) % 1.0, 3)), float(r.choice(aspects)))
        for j in range(n_mat))
    ref = _SPACING_REF.get(modality, 0.143)
    fov = float(np.clip((pixel_spacing / ref) ** 0.75, 0.75, 1.35)) if modality != "MG" else 1.0
    return VendorLook(
        model_id=f"{m}.{k}",
        lut=family,
        lut_slope=float(round(slope, 4)),
        lut_center=float(round(center, 4)),
        part_shift=parts,
        range_pct=(round(range_pct[0], 3), round(range_pct[1], 3)),
        black=round(black, 4),
        white=round(white, 4),
        edge_radius=float(round(r.uniform(0.8, 3.0), 3)),
        edge_amount=round(edge_amount, 3),
        eq_radius=float(round(r.uniform(0.03, 0.12), 4)),
        eq_amount=round(eq_amount, 3),
        nr_sigma=float(round(r.uniform(0.7, 1.5), 3)),
        nr_amount=round(nr_amount, 3),
        matrices=matrices,
        fov_scale=round(fov, 4),
        shutter=shutter if modality != "MG" else "none",
        shutter_probability=float(round(r.uniform(0.6, 1.0), 3)),
        frame_width=float(round(r.uniform(0.01, 0.03), 4)),
        marker_probability=float(round(r.uniform(0.3, 0.95), 3)),
        marker_corner=marker_corner,
        marker_size=float(round(r.uniform(0.04, 0.08), 4)),
        marker_boxed=boxed,
        text_probability=float(round(r.uniform(0.0, 0.8), 3)),
        text_corner=text_corner,
        text_lines=text_lines,
        text_chars=int(r.integers(8, 17)),
        text_level=float(round(r.uniform(0.85, 1.0), 3)),
    )


def draw_image_look(look: VendorLook, rng: np.random.Generator, body_part: str,
                    laterality: str) -> ImageLook:
    """Realise a model's look on one image (jitter, body-part preset, what is burned in).

    Args:
        look: the model's look.
        rng: the image's generator (consumed).
        body_part: BodyPartExamined (selects the LUT preset).
        laterality: "L", "R" or "" (the side marker's letter; drawn when "").

    Returns:
        An :class:`ImageLook`.
    """
    shift = dict(look.part_shift).get(body_part, 0.0)
    lo, hi = look.range_pct
    lo_j = float(np.clip(lo * math.exp(rng.normal(0.0, 0.25)), 0.05, 10.0))
    hi_j = float(np.clip(100.0 - (100.0 - hi) * math.exp(rng.normal(0.0, 0.25)), 90.0, 99.95))
    letter = laterality if laterality in ("L", "R") else ("L" if rng.random() < 0.5 else "R")
    marker = letter if rng.random() < look.marker_probability else ""
    text = look.text_lines if rng.random() < look.text_probability else 0
    shutter = look.shutter if rng.random() < look.shutter_probability else "none"
    return ImageLook(
        model_id=look.model_id,
        lut=look.lut,
        lut_slope=float(look.lut_slope * math.exp(rng.normal(0.0, 0.08))),
        lut_center=float(np.clip(look.lut_center + shift + rng.normal(0.0, 0.03), 0.2, 0.8)),
        range_pct=(lo_j, hi_j),
        black=look.black,
        white=look.white,
        edge_radius=look.edge_radius,
        edge_amount=float(look.edge_amount * math.exp(rng.normal(0.0, 0.15))),
        eq_radius=look.eq_radius,
        eq_amount=float(look.eq_amount + rng.normal(0.0, 0.08)),
        nr_sigma=look.nr_sigma,
        nr_amount=float(np.clip(look.nr_amount + rng.normal(0.0, 0.05), 0.0, 0.9)),
        shutter=shutter,
        frame_width=look.frame_width,
        marker=marker,
        marker_corner=look.marker_corner,
        marker_size=float(look.marker_size * math.exp(rng.normal(0.0, 0.1))),
        marker_boxed=look.marker_boxed,
        marker_offset=(float(rng.uniform(0.015, 0.05)), float(rng.uniform(0.015, 0.05))),
        text_lines=text,
        text_chars=max(4, look.text_chars + int(rng.integers(-3, 4))),
        text_corner=look.text_corner,
        text_level=look.text_level,
        text_seed=int(rng.integers(0, 2**31 - 1)),
    )


def choose_matrix(look: VendorLook, size_range: tuple[int, int], rng: np.random.Generator,
                  modality: str) -> tuple[int, int]:
    """Rows and columns of one image: one of the model's formats, in portrait or landscape.

    Args:
        look: the model's look.
        size_range: the archive's (min, max) image side in px.
        rng: the image's generator (consumed).
        modality: "MG" images are always portrait; DX/CR either way.

    Returns:
        (rows, cols), even, within ``size_range``.
    """
    lo, hi = int(size_range[0]), int(size_range[1])
    pos, aspect = look.matrices[int(rng.integers(0, len(look.matrices)))]

    def even(v: float) -> int:
        return int(min(max(int(round(v)) // 2 * 2, lo), hi))

    a = even(lo + (hi - lo) * pos)
    b = even(max(float(lo), a * aspect))
    if modality == "MG" or rng.random() < 0.5:
        return a, b
    return b, a


# ----------------------------------------------------------------------- processing

def lut(u: np.ndarray, family: str, slope: float, center: float) -> np.ndarray:
    """Tone curve mapping [0, 1] onto [0, 1], monotone non-decreasing, 0 -> 0 and 1 -> 1.

    Families: ``sigmoid`` (logistic of gain ``slope`` around ``center``, rescaled to the
    end points), ``gamma`` (``v ** slope`` of the input shifted so ``center`` maps like 0.5),
    ``log`` (``log1p(slope v) / log1p(slope)``: brightens shadows) and ``invlog`` (its mirror:
    darkens them), both on the shifted input.

    Args:
        u: float32 array, values in [0, 1] (any shape).
        family: one of :data:`LUT_FAMILIES`.
        slope: curve steepness (> 0).
        center: midpoint in [0, 1].

    Returns:
        float32 array of ``u``'s shape in [0, 1].

    Raises:
        ValueError: unknown family.
    """
    f32 = np.float32
    if family == "sigmoid":
        def s(x: Any) -> Any:
            return 1.0 / (1.0 + np.exp(-slope * (x - center)))
        s0, s1 = float(s(0.0)), float(s(1.0))
        y = (s(u.astype(f32)) - f32(s0)) / f32(max(s1 - s0, 1e-6))
    else:
        v = np.clip(u + f32(0.5 - center), 0.0, 1.0).astype(f32)
        if family == "gamma":
            y = np.power(v, f32(slope))
        elif family == "log":
            y = np.log1p(f32(slope) * v) / f32(math.log1p(slope))
        elif family == "invlog":
            y = 1.0 - np.log1p(f32(slope) * (1.0 - v)) / f32(math.log1p(slope))
        else:
            raise ValueError(f"unknown LUT family {family!r}; choose one of {LUT_FAMILIES}")
    return np.clip(y, 0.0, 1.0).astype(f32)


def enhance(u: np.ndarray, look: ImageLook) -> np.ndarray:
    """Noise reduction, fine edge enhancement and large-scale equalisation, in that order.

    Noise reduction blends each pixel towards its Gaussian-smoothed value with a weight
    that falls off at edges (gradient above the image's median gradient), so edges keep their
    contrast. Edge enhancement and equalisation are unsharp masks at a small and a large
    radius; a negative equalisation gain compresses the dynamic range.

    Args:
        u: float32 (H, W) ranged log signal, mostly in [0, 1].
        look: the image's look.

    Returns:
        float32 (H, W), not clipped.
    """
    f32 = np.float32
    out = np.asarray(u, dtype=f32)
    if look.nr_amount > 0:
        smooth = ndimage.gaussian_filter(out, look.nr_sigma, mode="nearest")
        grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
        ref = float(np.median(grad[::2, ::2])) + 1e-6
        weight = 1.0 / (1.0 + (grad / f32(3.0 * ref)) ** 2)
        out = out + f32(look.nr_amount) * weight * (smooth - out)
    if look.edge_amount > 0:
        out = out + f32(look.edge_amount) * (
            out - ndimage.gaussian_filter(out, look.edge_radius, mode="nearest"))
    if look.eq_amount != 0:
        h, w = out.shape
        sigma = max(1.0, look.eq_radius * min(h, w))
        step = max(1, int(sigma // 4))
        small = ndimage.gaussian_filter(out[::step, ::step], sigma / step, mode="nearest")
        low = resize_bilinear(small, (h, w)) if step > 1 else small
        out = out + f32(look.eq_amount) * (out - low)
    return out.astype(f32, copy=False)


def tone(u: np.ndarray, look: ImageLook) -> np.ndarray:
    """Clip to [0, 1], apply the image's LUT, map onto its black..white output levels.

    Args:
        u: float32 (H, W) processed signal.
        look: the image's look.

    Returns:
        float32 (H, W) in ``[look.black, look.white]``.
    """
    y = lut(np.clip(u, 0.0, 1.0), look.lut, look.lut_slope, look.lut_center)
    return (np.float32(look.black) + np.float32(look.white - look.black) * y).astype(np.float32)


def _glyph_cells(rows: tuple[str, ...]) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in rows], dtype=bool)


def _corner_origin(corner: str, shape: tuple[int, int], size: tuple[int, int],
                   offset: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    gh, gw = size
    y = offset[0] if corner[0] == "t" else h - gh - offset[0]
    x = offset[1] if corner[1] == "l" else w - gw - offset[1]
    return int(np.clip(y, 0, max(h - gh, 0))), int(np.clip(x, 0, max(w - gw, 0)))


def _text_bitmap(look: ImageLook) -> np.ndarray:
    """Pseudo-text: ``text_lines`` lines of ``text_chars`` random 7 x 5 glyphs (bool)."""
    r = np.random.default_rng(look.text_seed)
    lines = []
    for _ in range(look.text_lines):
        chars = []
        for _ in range(look.text_chars):
            if r.random() < 0.15:  # a space
                chars.append(np.zeros((7, 6), bool))
                continue
            g = r.random((7, 5)) < 0.45
            chars.append(np.pad(g, ((0, 0), (0, 1))))
        lines.append(np.pad(np.concatenate(chars, axis=1), ((0, 2), (0, 0))))
    return np.concatenate(lines, axis=0)


def overlay(y: np.ndarray, field: np.ndarray, look: ImageLook) -> np.ndarray:
    """Shutter the collimated border and burn in the side marker and text.

    Args:
        y: float32 (H, W) output levels in [0, 1].
        field: bool (H, W), True inside the collimated field.
        look: the image's look.

    Returns:
        float32 (H, W) in [0, 1] (a new array).
    """
    out = np.array(y, dtype=np.float32)
    h, w = out.shape
    short = min(h, w)
    if look.shutter == "black":
        out[~field] = 0.0
    elif look.shutter == "white":
        out[~field] = 1.0
    elif look.shutter == "frame":
        fw = max(1, int(round(look.frame_width * short)))
        out[:fw, :] = out[-fw:, :] = 0.0
        out[:, :fw] = out[:, -fw:] = 0.0
    if look.marker:
        cell = max(1, int(round(look.marker_size * short / 7)))
        glyph = np.kron(_glyph_cells(_SIDE_GLYPHS[look.marker]), np.ones((cell, cell), bool))
        pad = cell if look.marker_boxed else 0
        gh, gw = glyph.shape[0] + 2 * pad, glyph.shape[1] + 2 * pad
        off = (int(look.marker_offset[0] * short), int(look.marker_offset[1] * short))
        if gh < h and gw < w:
            y0, x0 = _corner_origin(look.marker_corner, (h, w), (gh, gw), off)
            if look.marker_boxed:
                out[y0:y0 + gh, x0:x0 + gw] = 0.0
            region = out[y0 + pad:y0 + pad + glyph.shape[0], x0 + pad:x0 + pad + glyph.shape[1]]
            region[glyph] = 1.0
    if look.text_lines > 0:
        cell = max(1, int(round(0.025 * short / 7)))
        bitmap = _text_bitmap(look)
        text = np.kron(bitmap, np.ones((cell, cell), bool))
        th, tw = text.shape
        if th < h // 2 and tw < w:
            off = (int(0.02 * short), int(0.02 * short))
            y0, x0 = _corner_origin(look.text_corner, (h, w), (th, tw), off)
            region = out[y0:y0 + th, x0:x0 + tw]
            region[text] = np.float32(look.text_level)
    return out


def apply_look(u: np.ndarray, field: np.ndarray, look: ImageLook) -> np.ndarray:
    """The whole look on a ranged log signal: :func:`enhance`, :func:`tone`, :func:`overlay`.

    Args:
        u: float32 (H, W) ranged log signal (0 = least, 1 = most attenuation), mostly in
            [0, 1].
        field: bool (H, W) collimated field.
        look: the image's look.

    Returns:
        float32 (H, W) output levels in [0, 1] (to be scaled to the stored bit depth).
    """
    return overlay(tone(enhance(u, look), look), field, look)


def look_summary(look: ImageLook) -> dict[str, Any]:
    """JSON-ready record of an image's look (for devices.json)."""
    d = asdict(replace(look))
    for key in ("lut_slope", "lut_center", "edge_amount", "eq_amount", "nr_amount",
                "marker_size"):
        d[key] = round(float(d[key]), 4)
    d["range_pct"] = [round(float(v), 3) for v in d["range_pct"]]
    d["marker_offset"] = [round(float(v), 4) for v in d["marker_offset"]]
    return d
