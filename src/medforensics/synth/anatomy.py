"""Procedural anatomy for the detector simulator: X-ray attenuation maps of body parts.

Every function here is pure NumPy and deterministic for a given ``numpy.random.Generator``.
The output is a *line integral of attenuation* ``A(y, x) = sum(mu * path length)``
(dimensionless, >= 0): the detector simulator turns it into a transmitted fluence
``N0 * exp(-A)``. Nothing here depends on the device: the same distributions are used for every
manufacturer, model and unit so that content cannot reveal the source.

Body parts (Deep-RSI radiography sites plus chest, and mammography as in DeepMammo):

* ``HAND``, ``WRIST``, ``FOREARM``, ``ELBOW`` are framings of one procedural upper limb
  (phalanges, metacarpals, carpals, radius, ulna, distal humerus as hollow rods/ellipsoids with a
  cortical shell and trabecular texture, inside soft tissue); lateral views squeeze and flex it.
* ``SHOULDER`` and ``CHEST`` are framings of a procedural torso (soft-tissue cylinder, lungs,
  heart, spine, ribs, clavicles, scapula, humeral head).
* ``BREAST`` is a compressed breast (CC or MLO view, pectoral muscle on MLO) with
  power-law fibroglandular texture and occasional calcifications.

Each image gets a collimation border (sometimes none) and sometimes a lead marker letter.
Units: lengths in centimetres, attenuation coefficients in 1/cm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

RADIOGRAPHY_PARTS: tuple[str, ...] = ("HAND", "WRIST", "FOREARM", "ELBOW", "SHOULDER", "CHEST")
"""Body parts drawn for DX/CR models (same distribution for every device)."""

MAMMOGRAPHY_PARTS: tuple[str, ...] = ("BREAST",)
"""Body parts drawn for MG models."""

VIEWS: dict[str, tuple[str, ...]] = {
    "HAND": ("PA", "LAT", "PA"),
    "WRIST": ("PA", "LAT"),
    "FOREARM": ("AP", "LAT"),
    "ELBOW": ("AP", "LAT"),
    "SHOULDER": ("AP", "LAT"),
    "CHEST": ("PA", "LAT", "PA"),
    "BREAST": ("CC", "MLO"),
}
"""Views of each body part, in the order a study acquires them."""

MU_SOFT = 0.20  # soft tissue, 1/cm (effective, ~60 keV)
MU_BONE = 0.55  # cortical bone
MU_MARROW = 0.24  # cancellous bone / marrow
MU_FAT = 0.16  # adipose (breast)
MU_GLAND = 0.24  # fibroglandular (breast)
COLLIMATOR_ATTENUATION = 4.0  # line integral behind the collimator blades (+ leakage/scatter)
MARKER_ATTENUATION = 2.5  # lead marker letter

_LETTERS = {
    "L": ["1000", "1000", "1000", "1000", "1000", "1000", "1111"],
    "R": ["1110", "1001", "1001", "1110", "1100", "1010", "1001"],
}


@dataclass(frozen=True)
class PatientTraits:
    """Per-patient anatomy factors (the same for all images of a patient).

    Attributes:
        size: body size factor (1.0 = average adult).
        bone_density: multiplies bone attenuation.
        soft_tissue: multiplies soft-tissue thickness.
        breast_density: fibroglandular fraction in [0, 1].
        sex: "F", "M".
        age: years.
        finger_spread: degrees of extra finger abduction.
    """

    size: float
    bone_density: float
    soft_tissue: float
    breast_density: float
    sex: str
    age: int
    finger_spread: float


def draw_patient_traits(rng: np.random.Generator, *, sex: str | None = None) -> PatientTraits:
    """Draw the anatomy factors of one patient.

    Args:
        rng: random generator (consumed).
        sex: force "F" or "M" (mammography patients are "F"); random when ``None``.

    Returns:
        A :class:`PatientTraits`.
    """
    sex = sex if sex is not None else ("F" if rng.random() < 0.5 else "M")
    age = int(rng.integers(18, 90))
    return PatientTraits(
        size=float(np.clip(rng.normal(1.0 if sex == "M" else 0.93, 0.07), 0.75, 1.25)),
        bone_density=float(np.clip(rng.normal(1.0 - 0.004 * max(age - 45, 0), 0.08), 0.6, 1.3)),
        soft_tissue=float(np.clip(rng.lognormal(0.0, 0.15), 0.7, 1.6)),
        breast_density=float(rng.beta(2.0, 3.0)),
        sex=sex,
        age=age,
        finger_spread=float(rng.normal(0.0, 4.0)),
    )


@dataclass
class Phantom:
    """A rendered body part.

    Attributes:
        attenuation: float32 (H, W), line integral of attenuation, >= 0.
        field: bool (H, W), True inside the collimated field.
        body_part: DICOM BodyPartExamined value.
        view: ViewPosition value.
        laterality: "L", "R" or "" (chest).
    """

    attenuation: np.ndarray
    field: np.ndarray
    body_part: str
    view: str
    laterality: str


class _Canvas:
    """Maps body coordinates (cm; x right, y down) to pixels and accumulates layers."""

    def __init__(self, shape: tuple[int, int], center_px: tuple[float, float], px_per_cm: float,
                 angle_deg: float) -> None:
        self.h, self.w = shape
        self.cy, self.cx = center_px
        self.s = px_per_cm
        a = math.radians(angle_deg)
        self.cos, self.sin = math.cos(a), math.sin(a)
        self.soft = np.zeros(shape, np.float32)  # soft tissue: union by maximum
        self.add = np.zeros(shape, np.float32)  # additive (organs, air subtracts)
        self.bone = np.zeros(shape, np.float32)  # bones: additive, textured later

    def to_px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = self.cx + self.s * (self.cos * x - self.sin * y)
        row = self.cy + self.s * (self.sin * x + self.cos * y)
        return row, col

    def local(self, pts: list[tuple[float, float]], pad_cm: float
              ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Bounding box of ``pts`` +- pad in pixels and the body coordinates of its pixels."""
        xs = np.array([p[0] for p in pts], np.float64)
        ys = np.array([p[1] for p in pts], np.float64)
        r, c = self.to_px(xs, ys)
        pad = pad_cm * self.s + 2
        r0, r1 = int(max(math.floor(r.min() - pad), 0)), int(min(math.ceil(r.max() + pad), self.h))
        c0, c1 = int(max(math.floor(c.min() - pad), 0)), int(min(math.ceil(c.max() + pad), self.w))
        if r0 >= r1 or c0 >= c1:
            return None
        rr = np.arange(r0, r1, dtype=np.float32)[:, None] - self.cy
        cc = np.arange(c0, c1, dtype=np.float32)[None, :] - self.cx
        x = (self.cos * cc + self.sin * rr) / self.s
        y = (-self.sin * cc + self.cos * rr) / self.s
        return (slice(r0, r1), slice(c0, c1)), x, y

    def _put(self, layer: str, sl: tuple[slice, slice], vals: np.ndarray) -> None:
        arr = getattr(self, layer)
        if layer == "soft":
            np.maximum(arr[sl], vals, out=arr[sl])
        else:
            arr[sl] += vals

    def rod(self, p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float,
            mu: float, layer: str, *, depth: float | None = None, hollow: float = 0.0,
            mu_inner: float = 0.0) -> None:
        """Tapered capsule from p0 to p1 (radii r0, r1 cm), optionally a hollow bone.

        Projected chord of an elliptic cross-section: ``depth * sqrt(1 - (d/r)^2)``.
        """
        res = self.local([p0, p1], max(r0, r1))
        if res is None:
            return
        sl, x, y = res
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        ll = dx * dx + dy * dy or 1e-9
        t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / ll, 0.0, 1.0)
        d2 = (x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2
        r = r0 + (r1 - r0) * t
        q = d2 / (r * r)
        dep = 2.0 * r if depth is None else depth * (r / max(r0, r1))
        vals = mu * dep * np.sqrt(np.clip(1.0 - q, 0.0, None))
        if hollow > 0:
            qi = q / (hollow * hollow)
            vals -= (mu - mu_inner) * dep * hollow * np.sqrt(np.clip(1.0 - qi, 0.0, None))
        self._put(layer, sl, vals.astype(np.float32))

    def ellipsoid(self, c: tuple[float, float], a: float, b: float, angle_deg: float, mu: float,
                  layer: str, *, depth: float | None = None, hollow: float = 0.0,
                  mu_inner: float = 0.0, power: float = 0.5) -> None:
        """Ellipsoid with semi-axes a (along angle) and b; chord ``depth*(1-q)^power``."""
        res = self.local([c], max(a, b))
        if res is None:
            return
        sl, x, y = res
        th = math.radians(angle_deg)
        u = (x - c[0]) * math.cos(th) + (y - c[1]) * math.sin(th)
        v = -(x - c[0]) * math.sin(th) + (y - c[1]) * math.cos(th)
        q = (u / a) ** 2 + (v / b) ** 2
        dep = 2.0 * min(a, b) if depth is None else depth
        vals = mu * dep * np.clip(1.0 - q, 0.0, None) ** power
        if hollow > 0:
            inner = np.clip(1.0 - q / hollow**2, 0.0, None) ** power
            vals -= (mu - mu_inner) * dep * hollow * inner
        self._put(layer, sl, vals.astype(np.float32))

    def chain(self, pts: list[tuple[float, float]], r: float, mu: float, layer: str, *,
              hollow: float = 0.0, mu_inner: float = 0.0) -> None:
        """A curved bone (rib, clavicle) as the maximum over capsule segments."""
        res = self.local(pts, r)
        if res is None:
            return
        sl, x, y = res
        best = np.zeros(x.shape, np.float32)
        for p0, p1 in zip(pts[:-1], pts[1:]):
            dx, dy = p1[0] - p0[0], p1[1] - p0[1]
            ll = dx * dx + dy * dy or 1e-9
            t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / ll, 0.0, 1.0)
            q = ((x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2) / (r * r)
            v = mu * 2 * r * np.sqrt(np.clip(1.0 - q, 0.0, None))
            if hollow > 0:
                inner = np.sqrt(np.clip(1.0 - q / hollow**2, 0, None))
                v -= (mu - mu_inner) * 2 * r * hollow * inner
            np.maximum(best, v, out=best)
        self._put(layer, sl, best)


def resize_bilinear(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fast separable bilinear resampling (corner-aligned) of a 2-D array.

    Args:
        a: float array (h, w), h, w >= 2.
        shape: output (H, W).

    Returns:
        float32 (H, W).
    """
    out = np.asarray(a, np.float32)
    for axis, n_out in ((0, shape[0]), (1, shape[1])):
        n_in = out.shape[axis]
        pos = np.linspace(0.0, n_in - 1.0, int(n_out), dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), n_in - 2)
        t = pos - i0
        a0 = np.take(out, i0, axis=axis)
        a1 = np.take(out, i0 + 1, axis=axis)
        t = t[:, None] if axis == 0 else t[None, :]
        out = a0 + (a1 - a0) * t
    return out.astype(np.float32, copy=False)


def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, *, beta: float = 3.0,
                 downsample: int = 4, fmin: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-std random field with power spectrum ~ 1/f^beta.

    Args:
        shape: output (H, W).
        rng: random generator.
        beta: spectral exponent (3 ~ breast parenchyma; 2 ~ soft texture).
        downsample: synthesis happens on a grid ``downsample`` times coarser, then is
            interpolated (the field is smooth, so this only saves time).
        fmin: frequencies below this (cycles per coarse pixel) are removed.

    Returns:
        float32 (H, W), mean 0, std 1.
    """
    h = max(shape[0] // downsample + 2, 8)
    w = max(shape[1] // downsample + 2, 8)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[f < fmin] = 0.0
    amp[0, 0] = 0.0
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    field = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    field = resize_bilinear(field, shape)
    if downsample > 1:  # remove the kinks of linear interpolation (no pixel-scale content)
        field = ndimage.gaussian_filter(field, 0.6 * downsample, mode="nearest")
    field -= field.mean()
    sd = float(field.std()) or 1.0
    return (field / sd).astype(np.float32)


# --------------------------------------------------------------------------- upper limb

class _LimbPose:
    """Body-to-canvas placement of the upper limb, and its bone primitives.

    Body coordinates are in cm, wrist at y=0; the pose squeezes x for lateral views
    (fingers and forearm bones superimpose), mirrors left limbs and turns the parts distal to
    the elbow by the flexion angle.
    """

    def __init__(self, cv: _Canvas, tr: PatientTraits, *, lateral: bool, flexion_deg: float,
                 mirror: bool) -> None:
        self.cv = cv
        self.k = tr.size
        self.bd = tr.bone_density
        self.lateral = lateral
        self.sx = -1.0 if mirror else 1.0
        self.squeeze = 0.35 if lateral else 1.0
        self.elbow = (0.0, 25.0 * self.k)
        self.flexion_deg = flexion_deg
        self.fl = math.radians(flexion_deg)

    def xf(self, p: tuple[float, float], distal: bool = True) -> tuple[float, float]:
        """Body coords: apply squeeze, mirror and elbow flexion (distal parts rotate)."""
        x, y = p[0] * self.squeeze * self.sx, p[1]
        if distal and self.flexion_deg:
            ex, ey = self.elbow
            dx, dy = x - ex, y - ey
            x = ex + dx * math.cos(self.fl) - dy * math.sin(self.fl)
            y = ey + dx * math.sin(self.fl) + dy * math.cos(self.fl)
        return (x, y)

    def bone(self, p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float,
             distal: bool = True, hollow: float = 0.55) -> None:
        """A long bone from ``p0`` to ``p1`` (body cm), radii ``r0``, ``r1`` (x patient size)."""
        k, bd = self.k, self.bd
        self.cv.rod(self.xf(p0, distal), self.xf(p1, distal), r0 * k, r1 * k, MU_BONE * bd,
                    "bone", hollow=hollow, mu_inner=MU_MARROW * bd)

    def blob(self, c: tuple[float, float], a: float, b: float, ang: float,
             distal: bool = True) -> None:
        """A short bone (carpal, epiphysis): an ellipsoid at ``c`` with half-axes ``a``, ``b``."""
        k, bd = self.k, self.bd
        a_eff = a * k * (self.squeeze if self.lateral else 1.0) ** 0.3
        self.cv.ellipsoid(self.xf(c, distal), a_eff, b * k, ang * self.sx, MU_BONE * bd, "bone",
                          hollow=0.75, mu_inner=MU_MARROW * bd)


def _limb(cv: _Canvas, tr: PatientTraits, rng: np.random.Generator, *, lateral: bool,
          flexion_deg: float, mirror: bool) -> None:
    """Right upper limb from fingertips (y ~ -19 cm) to shoulder (y ~ +55 cm); wrist at y=0."""
    pose = _LimbPose(cv, tr, lateral=lateral, flexion_deg=flexion_deg, mirror=mirror)
    k, st, xf = pose.k, tr.soft_tissue, pose.xf
    # soft tissue: forearm, arm, palm, fingers (union = max)
    cv.rod(xf((0, 1.0 * k)), xf((0, 23.0 * k)), 2.6 * k * st ** 0.5, 3.6 * k * st ** 0.5,
           MU_SOFT, "soft", depth=7.0 * k * st)
    cv.rod(xf(pose.elbow, False), (0.0, 58.0 * k), 4.0 * k * st ** 0.5, 5.0 * k * st ** 0.5,
           MU_SOFT, "soft", depth=9.0 * k * st)
    cv.ellipsoid(xf((0.0, -4.0 * k)), 4.2 * k * pose.squeeze ** 0.5, 5.2 * k, 0, MU_SOFT, "soft",
                 depth=3.0 * k * st * (1.6 if lateral else 1.0), power=0.35)
    spread = 1.0 + tr.finger_spread / 10.0
    _fingers(pose, st, spread, rng)
    _thumb(pose, st, spread, rng)
    _wrist_and_arm_bones(pose, rng)


def _fingers(pose: _LimbPose, st: float, spread: float, rng: np.random.Generator) -> None:
    """Four fingers: soft tissue, metacarpal and three phalanges each, fanned by ``spread``."""
    k, cv, xf = pose.k, pose.cv, pose.xf
    angles = [-13.0 * spread, -4.0 * spread, 4.0 * spread, 12.5 * spread]
    lengths = [0.92, 1.0, 0.95, 0.76]
    xs = [-2.3, -0.8, 0.75, 2.1]
    for a, ln, x0 in zip(angles, lengths, xs):
        th = math.radians(a + rng.normal(0, 1.5))
        ux, uy = math.sin(th), -math.cos(th)
        base = (x0 * k, -7.6 * k)
        segs = [4.4 * ln, 2.7 * ln, 1.9 * ln]
        tip = (base[0] + ux * sum(segs) * k, base[1] + uy * sum(segs) * k)
        cv.rod(xf(base), xf(tip), 0.85 * k * st ** 0.3, 0.7 * k * st ** 0.3, MU_SOFT, "soft",
               depth=1.8 * k * st ** 0.5 * (2.2 if pose.lateral else 1.0))
        # metacarpal from the carpus to the finger base
        mc0 = (x0 * 0.55 * k, -1.6 * k)
        pose.bone(mc0, (base[0], base[1] + 0.35 * k), 0.42, 0.36)
        p = (base[0], base[1])
        radii = [(0.42, 0.34), (0.34, 0.3), (0.3, 0.24)]
        for sg, (r0, r1) in zip(segs, radii):
            q = (p[0] + ux * (sg - 0.25) * k, p[1] + uy * (sg - 0.25) * k)
            pose.bone(p, q, r0, r1)
            p = (p[0] + ux * sg * k, p[1] + uy * sg * k)


def _thumb(pose: _LimbPose, st: float, spread: float, rng: np.random.Generator) -> None:
    """The thumb: soft tissue and three bones, turned out from the hand."""
    k, xf = pose.k, pose.xf
    th = math.radians(-48.0 - 6 * spread + rng.normal(0, 3))
    ux, uy = math.sin(th), -math.cos(th)
    t0 = (-2.2 * k, -1.2 * k)
    tsegs = [3.8, 3.0, 2.2]
    tip = (t0[0] + ux * sum(tsegs) * k, t0[1] + uy * sum(tsegs) * k)
    pose.cv.rod(xf(t0), xf(tip), 1.3 * k, 0.9 * k, MU_SOFT, "soft", depth=2.2 * k * st ** 0.5)
    p = t0
    for sg, (r0, r1) in zip(tsegs, [(0.5, 0.4), (0.42, 0.36), (0.36, 0.28)]):
        q = (p[0] + ux * (sg - 0.3) * k, p[1] + uy * (sg - 0.3) * k)
        pose.bone(p, q, r0, r1)
        p = (p[0] + ux * sg * k, p[1] + uy * sg * k)


def _wrist_and_arm_bones(pose: _LimbPose, rng: np.random.Generator) -> None:
    """Carpals (two rows), radius and ulna, elbow, humerus and humeral head."""
    k, bone, blob = pose.k, pose.bone, pose.blob
    for cx, cy, a, b in [(-1.6, -0.6, 0.75, 0.6), (-0.5, -0.8, 0.6, 0.7),
                         (0.6, -0.75, 0.6, 0.65), (1.5, -0.5, 0.55, 0.6),
                         (-1.3, 0.55, 0.8, 0.55), (-0.1, 0.6, 0.65, 0.6),
                         (0.9, 0.55, 0.6, 0.5), (1.6, 0.9, 0.4, 0.4)]:
        blob((cx * k + rng.normal(0, 0.05), cy * k + rng.normal(0, 0.05)), a, b, rng.normal(0, 15))
    # radius and ulna (distal epiphyses widen), distal humerus, humeral shaft
    bone((-1.1, 1.6 * k), (-0.7, 23.5 * k), 0.75, 0.55)
    blob((-1.1 * k, 1.6 * k), 1.45, 0.75, 0)
    bone((1.5, 2.0 * k), (0.8, 23.0 * k), 0.45, 0.62)
    blob((1.5 * k, 1.9 * k), 0.6, 0.55, 0)
    blob((0.6 * k, 23.6 * k), 0.95, 0.9, 0)  # olecranon / radial head region
    blob((0.0, 26.3 * k), 2.3, 1.2, 0, distal=False)  # humeral condyles
    bone((0.0, 26.0 * k), (0.0, 52.0 * k), 1.05, 1.1, distal=False)
    pose.cv.ellipsoid((0.0, 54.5 * k), 2.4 * k, 2.5 * k, 0, MU_BONE * pose.bd, "bone",
                      hollow=0.8, mu_inner=MU_MARROW * pose.bd)


# --------------------------------------------------------------------------------- torso

def _torso(cv: _Canvas, tr: PatientTraits, rng: np.random.Generator, *, lateral: bool,
           mirror: bool) -> None:
    """Torso centred on the sternum (y=0 at the carina, y<0 upward). PA or lateral."""
    k = tr.size
    st = tr.soft_tissue
    bd = tr.bone_density * 0.8  # higher kVp for the torso: lower effective attenuation
    sx = -1.0 if mirror else 1.0
    mu_soft = MU_SOFT * 0.75
    half_w = (11.0 if lateral else 17.0) * k * st ** 0.3
    depth = (32.0 if lateral else 21.0) * k * st ** 0.5
    cv.rod((0.0, -28.0 * k), (0.0, 30.0 * k), half_w, half_w * 1.05, mu_soft, "soft", depth=depth)
    # neck
    cv.rod((0.0, -40.0 * k), (0.0, -24.0 * k), 6.0 * k, 6.5 * k, mu_soft, "soft",
           depth=12.0 * k)
    # shoulders / arms at the sides (PA only)
    if not lateral:
        for s in (-1.0, 1.0):
            cv.rod((s * 17.5 * k, -20.0 * k), (s * 20.0 * k, 25.0 * k), 4.2 * k, 4.0 * k,
                   mu_soft, "soft", depth=9.0 * k * st)
            cv.rod((s * 12.0 * k, -22.0 * k), (s * 18.0 * k, -19.0 * k), 4.0 * k, 4.0 * k,
                   mu_soft, "soft", depth=12.0 * k * st)
    lung_depth = depth * 0.62
    if lateral:
        cv.ellipsoid((0.5 * sx * k, -2.0 * k), 9.5 * k, 13.0 * k, 0, -mu_soft, "add",
                     depth=lung_depth, power=0.6)
        cv.ellipsoid((-1.5 * sx * k, 6.0 * k), 5.5 * k, 5.5 * k, 0, mu_soft, "add",
                     depth=6.0 * k)  # heart
        cv.rod((-8.0 * sx * k, -18.0 * k), (-8.5 * sx * k, 20.0 * k), 1.6 * k, 1.8 * k,
               MU_BONE * bd, "bone", hollow=0.8, mu_inner=MU_MARROW * bd)
        return
    for s in (-1.0, 1.0):
        cv.ellipsoid((s * 7.5 * k, -1.0 * k), 6.0 * k, 13.5 * k, s * 4.0, -mu_soft, "add",
                     depth=lung_depth, power=0.6)
    cv.ellipsoid((1.8 * sx * k, 7.5 * k), 6.5 * k, 5.0 * k, -20.0 * sx, mu_soft, "add",
                 depth=4.0 * k)  # heart shadow
    # spine: vertebral bodies
    for i in range(16):
        y = (-24.0 + i * 3.4) * k
        cv.ellipsoid((0.0, y), 1.9 * k, 1.35 * k, 0, MU_BONE * bd, "bone", depth=3.5 * k,
                     hollow=0.85, mu_inner=MU_MARROW * bd)
    # ribs: posterior arcs
    for s in (-1.0, 1.0):
        for i in range(10):
            y0 = (-17.0 + i * 2.9) * k
            pts = []
            for t in np.linspace(0, 1, 7):
                x = s * (1.5 + 13.5 * math.sin(math.pi * 0.55 * t)) * k
                y = y0 + (-2.0 * math.sin(math.pi * t) + 5.0 * t * t) * k
                pts.append((x, y))
            cv.chain(pts, 0.55 * k, MU_BONE * bd, "bone", hollow=0.6, mu_inner=MU_MARROW * bd)
        # clavicle, scapula, humeral head
        cv.chain([(s * 1.5 * k, -19.0 * k), (s * 8.0 * k, -20.5 * k), (s * 15.5 * k, -22.0 * k)],
                 0.65 * k, MU_BONE * bd, "bone", hollow=0.6, mu_inner=MU_MARROW * bd)
        cv.ellipsoid((s * 12.5 * k, -13.0 * k), 4.0 * k, 7.5 * k, s * -12.0, MU_BONE * bd, "bone",
                     depth=0.9 * k)
        cv.ellipsoid((s * 17.2 * k, -18.0 * k), 2.5 * k, 2.6 * k, 0, MU_BONE * bd, "bone",
                     hollow=0.8, mu_inner=MU_MARROW * bd)
        cv.rod((s * 17.8 * k, -17.0 * k), (s * 19.0 * k, 10.0 * k), 1.1 * k, 1.0 * k,
               MU_BONE * bd, "bone", hollow=0.55, mu_inner=MU_MARROW * bd)


# -------------------------------------------------------------------------------- breast

def _breast(shape: tuple[int, int], tr: PatientTraits, rng: np.random.Generator, *, view: str,
            laterality: str) -> np.ndarray:
    """Compressed breast; chest wall at the left edge for R, right edge for L (as displayed)."""
    h, w = shape
    thick = float(np.clip(rng.normal(5.5, 1.0) * tr.soft_tissue ** 0.5, 2.5, 8.5))  # cm
    a = w * float(np.clip(rng.normal(0.72, 0.08) * tr.size, 0.45, 0.95))  # depth from wall
    b = h * float(np.clip(rng.normal(0.40, 0.04) * tr.size ** 0.5, 0.28, 0.49))
    cy = h * (0.5 + rng.normal(0, 0.03))
    yy = (np.arange(h, dtype=np.float32)[:, None] - cy) / b
    xx = np.arange(w, dtype=np.float32)[None, :] / a
    q = xx * xx + yy * yy
    # compressed: flat interior, rounded periphery over the last ~15 % of the radius
    edge = np.clip((1.0 - q) / 0.3, 0.0, 1.0)
    t = thick * np.sqrt(edge)
    gland = smooth_noise(shape, rng, beta=3.0, downsample=4)
    fine = smooth_noise(shape, rng, beta=2.0, downsample=2)
    z = 1.6 * (gland + 0.4 * fine) + (tr.breast_density - 0.5) * 3.0 \
        + 2.0 * (1.0 - np.sqrt(np.clip(q, 0, 1))) - 1.0
    frac = 1.0 / (1.0 + np.exp(-z))
    att = t * (MU_FAT + (MU_GLAND - MU_FAT) * frac)
    if view == "MLO":  # pectoral muscle: triangle at the upper chest wall
        pw = w * float(rng.uniform(0.12, 0.3))
        ph = h * float(rng.uniform(0.45, 0.8))
        rows = np.arange(h, dtype=np.float32)[:, None]
        cols = np.arange(w, dtype=np.float32)[None, :]
        inside = np.clip((pw * (1.0 - rows / ph) - cols) / 4.0, 0.0, 1.0)
        att = att + inside * thick * 0.5 * MU_SOFT
    n_calc = int(rng.poisson(1.5))
    for _ in range(n_calc):
        r0, c0 = int(rng.uniform(0.3, 0.7) * h), int(rng.uniform(0.1, 0.6) * w)
        for _ in range(int(rng.integers(1, 8))):
            r, c = r0 + int(rng.normal(0, 4)), c0 + int(rng.normal(0, 4))
            if 0 <= r < h - 1 and 0 <= c < w - 1 and q[r, c] < 1:
                att[r:r + 2, c:c + 2] += float(rng.uniform(0.05, 0.2))
    att = att.astype(np.float32)
    if laterality == "L":
        att = att[:, ::-1].copy()
    return att


# ------------------------------------------------------------------- field and marker

def _collimation(shape: tuple[int, int], rng: np.random.Generator, p_none: float
                 ) -> np.ndarray:
    """Soft-edged collimated field in [0, 1] (1 = open); sometimes fully open."""
    h, w = shape
    if rng.random() < p_none:
        return np.ones(shape, np.float32)
    m = rng.uniform(0.0, 0.14, size=4)  # top, bottom, left, right margins (fraction)
    ang = math.radians(rng.normal(0.0, 1.5))
    cy, cx = (h * (1 + m[0] - m[1]) / 2.0), (w * (1 + m[2] - m[3]) / 2.0)
    hh, hw = h * (1 - m[0] - m[1]) / 2.0, w * (1 - m[2] - m[3]) / 2.0
    rr = np.arange(h, dtype=np.float32)[:, None] - cy
    cc = np.arange(w, dtype=np.float32)[None, :] - cx
    u = math.cos(ang) * cc + math.sin(ang) * rr
    v = -math.sin(ang) * cc + math.cos(ang) * rr
    pen = max(1.0, 0.004 * min(h, w))  # penumbra width (px)
    fu = np.clip((hw - np.abs(u)) / pen + 0.5, 0.0, 1.0)
    fv = np.clip((hh - np.abs(v)) / pen + 0.5, 0.0, 1.0)
    return (fu * fv).astype(np.float32)


def _marker(att: np.ndarray, field: np.ndarray, letter: str, rng: np.random.Generator) -> None:
    """Stamp a lead letter (L/R) inside the open field, near a corner."""
    h, w = att.shape
    bitmap = np.array([[c == "1" for c in row] for row in _LETTERS[letter]], np.float32)
    px = max(2, int(min(h, w) * rng.uniform(0.006, 0.009)))
    glyph = np.kron(bitmap, np.ones((px, px), np.float32))
    gh, gw = glyph.shape
    rows, cols = np.nonzero(field > 0.99)
    if rows.size == 0 or gh + 4 >= h or gw + 4 >= w:
        return
    top = rows.min() + int(rng.uniform(0.02, 0.08) * h)
    left = (cols.min() + int(rng.uniform(0.02, 0.08) * w)) if rng.random() < 0.5 else \
        (cols.max() - gw - int(rng.uniform(0.02, 0.08) * w))
    top = int(np.clip(top, 0, h - gh))
    left = int(np.clip(left, 0, w - gw))
    att[top:top + gh, left:left + gw] += MARKER_ATTENUATION * glyph


# -------------------------------------------------------------------------------- public

_FRAMING: dict[str, tuple[float, float, float]] = {
    # body part: (centre y in cm, field of view of the short side in cm, y jitter)
    "HAND": (-7.5, 26.0, 1.5),
    "WRIST": (0.0, 12.0, 1.0),
    "FOREARM": (11.5, 34.0, 2.0),
    "ELBOW": (25.0, 15.0, 1.0),
}


def render_anatomy(body_part: str, view: str, laterality: str, shape: tuple[int, int],
                   rng: np.random.Generator, traits: PatientTraits, *,
                   marker_probability: float = 0.5, open_field_probability: float = 0.25,
                   fov_scale: float = 1.0) -> Phantom:
    """Render one body part as a line-integral attenuation map.

    Args:
        body_part: one of :data:`RADIOGRAPHY_PARTS` or :data:`MAMMOGRAPHY_PARTS`.
        view: ViewPosition (PA/AP/LAT, or CC/MLO for BREAST).
        laterality: "L" or "R" ("" for CHEST).
        shape: (rows, cols) of the image.
        rng: random generator (consumed): pose, framing, textures, collimation, marker.
        traits: the patient's anatomy factors.
        marker_probability: chance of a lead L/R marker (not for BREAST).
        open_field_probability: chance of no visible collimation (BREAST: always open).
        fov_scale: field of view relative to the default framing (> 1 shows more of the body,
            smaller; a model's pixel spacing in the vendor-look archive). Ignored for BREAST,
            which fills its image.

    Returns:
        A :class:`Phantom` with float32 attenuation (H, W) >= 0 and the open-field mask.

    Raises:
        ValueError: unknown body part or view.
    """
    h, w = int(shape[0]), int(shape[1])
    if body_part not in VIEWS:
        raise ValueError(f"unknown body part {body_part!r}")
    if view not in VIEWS[body_part]:
        raise ValueError(f"view {view!r} not valid for {body_part}")
    if body_part == "BREAST":
        att = _breast((h, w), traits, rng, view=view, laterality=laterality)
        field = np.ones((h, w), np.float32)
        return Phantom(att, field > 0.5, body_part, view, laterality)

    lateral = view == "LAT"
    mirror = laterality == "L"
    short = min(h, w)
    if body_part in _FRAMING:
        cy_cm, fov, jit = _FRAMING[body_part]
        fov *= float(rng.uniform(0.85, 1.15))
        cy_cm += float(rng.normal(0, jit))
        cx_cm = float(rng.normal(0, fov * 0.04))
        # long axis of the limb along the long side of the image, +- some rotation
        base = 0.0 if h >= w else 90.0
        angle = base + float(rng.normal(0, 8.0))
    elif body_part == "SHOULDER":
        fov = 28.0 * float(rng.uniform(0.85, 1.15))
        cy_cm = -16.0 + float(rng.normal(0, 1.5))
        cx_cm = (13.0 if not mirror else -13.0) + float(rng.normal(0, 1.5))
        angle = float(rng.normal(0, 5.0))
    else:  # CHEST
        fov = 40.0 * float(rng.uniform(0.9, 1.1))
        cy_cm = -2.0 + float(rng.normal(0, 1.5))
        cx_cm = float(rng.normal(0, 1.0))
        angle = float(rng.normal(0, 2.0))
    if fov_scale != 1.0:
        fov *= float(fov_scale)
    s = short / fov
    # place body point (cx_cm, cy_cm) at the image centre
    a = math.radians(angle)
    cy_px = h / 2.0 - s * (math.sin(a) * cx_cm + math.cos(a) * cy_cm)
    cx_px = w / 2.0 - s * (math.cos(a) * cx_cm - math.sin(a) * cy_cm)
    cv = _Canvas((h, w), (cy_px, cx_px), s, angle)
    if body_part in _FRAMING:
        flex = float(rng.uniform(70, 100)) if (body_part == "ELBOW" and lateral) else 0.0
        _limb(cv, traits, rng, lateral=lateral, flexion_deg=flex * (-1 if mirror else 1),
              mirror=mirror)
    else:
        _torso(cv, traits, rng, lateral=lateral and body_part == "CHEST", mirror=mirror)
        if body_part == "SHOULDER" and lateral:
            cv.add *= 0.7  # oblique (Y) view: less lung, more overlap
            cv.bone *= 1.25
    tex = smooth_noise((h, w), rng, beta=3.0, downsample=4)
    soft_tex = smooth_noise((h, w), rng, beta=3.0, downsample=8)
    att = cv.soft * (1.0 + 0.04 * soft_tex) + cv.add + cv.bone * (1.0 + 0.08 * tex)
    np.maximum(att, 0.0, out=att)
    field = _collimation((h, w), rng, open_field_probability)
    if rng.random() < marker_probability:
        letter = laterality if laterality in ("L", "R") else ("R" if rng.random() < 0.5 else "L")
        _marker(att, field, letter, rng)
    att = att + COLLIMATOR_ATTENUATION * (1.0 - field)
    return Phantom(att.astype(np.float32), field > 0.5, body_part, view, laterality)


def choose_study(rng: np.random.Generator, modality: str, n_images: int
                 ) -> tuple[str, str, list[str]]:
    """Draw a study's body part, laterality and the views of its ``n_images`` images.

    The distribution depends only on the modality family (radiography or mammography).

    Args:
        rng: random generator.
        modality: "DX", "CR" or "MG".
        n_images: images in the study (>= 1).

    Returns:
        (body_part, laterality, views). For MG a screening exam takes CC/MLO of both breasts,
        so the laterality is per image; it is returned as "" and encoded in the views as
        e.g. "L-CC".
    """
    if modality == "MG":
        order = ["R-CC", "L-CC", "R-MLO", "L-MLO"]
        start = int(rng.integers(0, 4))
        views = [order[(start + i) % 4] for i in range(n_images)]
        return "BREAST", "", views
    weights = np.array([0.26, 0.18, 0.12, 0.14, 0.14, 0.16])
    part = str(rng.choice(RADIOGRAPHY_PARTS, p=weights / weights.sum()))
    lat = "" if part == "CHEST" else ("L" if rng.random() < 0.5 else "R")
    cycle = VIEWS[part]
    views = [cycle[i % len(cycle)] for i in range(n_images)]
    return part, lat, views

