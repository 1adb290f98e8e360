"""Simulated multi-device X-ray archive: a physically motivated detector simulator.

The archive is the data everything else in medforensics is tested and demonstrated on. It
writes real DICOM files (``OUT/<PatientID>/<study>/<n>.dcm``) and ``OUT/devices.json`` with
the ground truth.

Devices differ ONLY by their fingerprint
----------------------------------------
Content (procedural anatomy, :mod:`medforensics.synth.anatomy`), exposure and image size are
drawn from the same distributions for every device (within a modality family: DX and CR image
the Deep-RSI sites hand/wrist/forearm/elbow/shoulder plus chest; MG images breasts, CC/MLO, as
in DeepMammo). What differs between devices:

* **per unit** (tied to the detector pixel grid: every image is read out from the detector's
  top-left corner, so the pattern stays registered across images of different sizes): a
  multiplicative gain pattern (PRNU-like, 0.5-2 % std, white or slightly correlated), fixed
  column and row offsets, a few defective pixels (dead / hot / stuck, imperfectly corrected),
  the phase of the anti-scatter grid. The unit's parameters are drawn from its model's
  distribution.
* **per model**: quantum efficiency and read noise (Poisson-Gaussian noise), detector blur
  (scintillator / phosphor point-spread), an unsharp-mask processing kernel, stored bit depth
  (10/12/14/16), anti-scatter grid lines (frequency, orientation, amplitude; some models none),
  a modest output LUT (linear, gamma or filmic), photometric interpretation (one model writes
  MONOCHROME1), pixel spacing and header style.
* **per manufacturer**: name (written with spelling variants by different units, so label
  normalisation has work), LUT family and software version scheme.

Option ``vendor_look=True`` (``medforensics simulate --vendor-look``) adds what real archives
also have and the default leaves out: each manufacturer and model applies its own processing
look (tone curve with body-part presets, edge enhancement, equalisation, noise reduction,
matrix formats and field of view, shutter, burned-in side marker and text), varied per image;
see :mod:`medforensics.synth.vendorlook`. That signal survives the papers' 8-bit 256 x 256
preprocessing; the fingerprint alone does not. Without the option nothing of it runs and the
archive is the same, file for file.

Image formation (per image)::

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

Determinism: every random draw comes from a ``numpy`` generator seeded by
``(seed, purpose, indices...)``. A device's parameters depend only on its indices
``(manufacturer, model, unit)``, an image only on ``(seed, patient, study, image)``, and the
unit patterns are generated in 256-pixel tiles seeded by tile position, so they do not depend on
the archive's image sizes. Hence excluding devices (``exclude=``/``include=``) writes exactly
the same files for the remaining devices, and adding units keeps the existing units' fingerprints
(though patients are then reassigned). UIDs come from :func:`pydicom.uid.generate_uid` with
seeded entropy sources.

Headers: realistic DX / CR / MG "for presentation" objects (proper SOP classes, file meta,
BitsAllocated 16, model-specific BitsStored, MONOCHROME1 for model "0.1", fictional vendor,
model, serial, station, institution, software, fake patient names). CR objects carry no
PresentationIntentType and no Rescale Slope/Intercept (neither is part of the CR IOD); about one
unit in eight writes no DeviceSerialNumber (its label falls back to the StationName).
Modalities are given to models in turn; DX and CR share the radiography anatomy distribution,
MG models image breasts only (so content differs across modality families, as in reality).

Patients: each patient is assigned to one unit (balanced round robin over a seeded shuffle);
with probability ``multi_device_fraction`` a patient has a second study on another unit, so a
patient may appear under two devices (that is why splits must be by patient, and the patient's
anatomy factors are shared by all their images).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from medforensics.data.labels import device_labels
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
from medforensics.synth.vendorlook import (
    ImageLook,
    VendorLook,
    apply_look,
    choose_matrix,
    draw_image_look,
    look_summary,
    make_look,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEVICES_FILE",
    "TRANSFER_SYNTAXES",
    "ModelSpec",
    "UnitSpec",
    "FixedPattern",
    "ImagePlan",
    "build_devices",
    "unit_pattern",
    "render_detector_image",
    "simulate_image",
    "plan_archive",
    "simulate_archive",
    "device_table",
    "format_device_table",
    "load_devices",
    "select_units",
    "model_look",
]

DEVICES_FILE = "devices.json"
"""Name of the ground-truth file written at the archive root."""

TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit": "1.2.840.10008.1.2.1",
    "implicit": "1.2.840.10008.1.2",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "j2k": "1.2.840.10008.1.2.4.90",
}
"""Transfer syntax names accepted by :func:`simulate_archive` (all lossless)."""

SOP_CLASSES: dict[str, str] = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
}

# purposes of random streams (first entries of every seed sequence)
_T_MFR, _T_MODEL, _T_UNIT, _T_GAIN, _T_COL, _T_ROW, _T_DEFECT = 11, 12, 13, 21, 22, 23, 24
_T_DESIGN = 14
_T_ASSIGN, _T_PATIENT, _T_STUDY, _T_IMAGE, _T_NOISE = 31, 32, 33, 34, 35
_T_LOOK_IMAGE, _T_LOOK_MATRIX = 51, 52
_TILE = 256
_GEN_MARGIN = 16

# -------------------------------------------------------------------- fictional names

_MANUFACTURERS: list[tuple[str, tuple[str, ...], str]] = [
    # canonical header spelling, other spellings written by some units, model prefix
    ("Orvantis Medical", ("ORVANTIS MEDICAL", "Orvantis Medical Systems", "Orvantis Medical, Inc."),
     "OrviDR"),
    ("Quillmark Imaging", ("QUILLMARK IMAGING", "Quillmark Imaging Ltd.", "quillmark imaging"),
     "Q-Ray"),
    ("Halvorsen Radiologic", ("HALVORSEN RADIOLOGIC", "Halvorsen Radiologic AG",
                              "Halvorsen Radiologic GmbH"), "Halix"),
    ("Norvix Diagnostics", ("NORVIX DIAGNOSTICS", "Norvix Diagnostics Corp.",
                            "Norvix Diagnostics Inc"), "NX"),
    ("Tessaron Healthcare", ("TESSARON HEALTHCARE", "Tessaron", "Tessaron Health Care"),
     "Tessa"),
    ("Brightwell Imaging", ("BRIGHTWELL IMAGING", "Brightwell Imaging Co.", "Brightwell Imaging"),
     "Lumen"),
    ("Calderis Medical Systems", ("CALDERIS MEDICAL SYSTEMS", "Calderis", "Calderis Medical"),
     "CalDR"),
    ("Meridane X-Ray", ("MERIDANE X-RAY", "Meridane X-Ray Ltd", "meridane x-ray"), "Merix"),
]
_MODEL_SERIES = {"DX": ("DR", "Digital", "FlatPanel"), "CR": ("CR", "Reader", "CR Plus"),
                 "MG": ("Mammo", "Mammo DR", "Breast")}
_INSTITUTIONS = ("Riverside General Hospital", "Northgate Orthopaedic Clinic",
                 "St. Aldric Medical Centre", "Lakeshore Community Hospital",
                 "Westbrook Imaging Center", "Harbor View University Hospital",
                 "Pinecrest Emergency Department", "Elm Valley Women's Health",
                 "Greystone Medical Group", "Maple Ridge Outpatient Radiology")
_STATION_STYLES = ("XR{n:02d}", "ED_XRAY_{n}", "RAD-ROOM{n}", "DR{n:03d}", "ORTHO{n}", "XRAY{n}")
_FAMILY = ("ARDEN", "BALCOMBE", "CARVELL", "DUNMORE", "ELSWICK", "FARNLEY", "GOSWORTH",
           "HALBERD", "INGLEBY", "JESMOND", "KIRKWALL", "LANGSTROTH", "MARLOW", "NETHERBY",
           "ORMSKIRK", "PENDLETON", "QUORNDON", "RAVENSCAR", "SEDBERGH", "THORNABY")
_GIVEN_F = ("ALICE", "BEATRIX", "CLARA", "DELIA", "EDITH", "FREYA", "GRETA", "HILDA", "IMOGEN",
            "JUNE")
_GIVEN_M = ("ALARIC", "BERTRAM", "CEDRIC", "DORIAN", "EDMUND", "FELIX", "GILES", "HUGO",
            "IVOR", "JASPER")

_PART_EXPOSURE = {  # kVp range, mAs range
    "HAND": (50, 58, 1.6, 4.0), "WRIST": (52, 60, 2.0, 5.0), "FOREARM": (54, 62, 2.5, 6.3),
    "ELBOW": (55, 63, 3.2, 8.0), "SHOULDER": (68, 78, 8.0, 20.0), "CHEST": (110, 125, 1.6, 4.0),
    "BREAST": (26, 33, 40.0, 160.0),
}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


# ---------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class ModelSpec:
    """One device model: header identity and the model-level physics.

    Attributes:
        model_id: "<manufacturer index>.<model index>", e.g. "0.1".
        manufacturer_id: "<manufacturer index>".
        manufacturer: canonical Manufacturer header spelling.
        name: ManufacturerModelName.
        modality: "DX", "CR" or "MG".
        photometric: "MONOCHROME2" or "MONOCHROME1".
        bits_stored: 10, 12, 14 or 16 (BitsAllocated is 16).
        pixel_spacing: detector pixel pitch in mm.
        detector_type: DetectorType header value.
        software_base: software version prefix.
        dqe: fraction of incident quanta detected (noise level).
        read_noise: electronic noise std, in detected-quanta units.
        psf_sigma: detector blur along rows and columns (Gaussian sigmas, px; 0 = none). CR
            readers blur differently in the laser-scan and plate-transport directions.
        sharpen_radius: small-scale sharpening kernel, Gaussian sigma (px); it shapes the
            high-frequency noise texture.
        sharpen_amount: gain of the small-scale sharpening.
        unsharp_radius: large-scale unsharp mask (local contrast), Gaussian sigma (px).
        unsharp_amount: gain of the large-scale unsharp mask.
        lut: "linear", "gamma" or "filmic".
        lut_param: gamma exponent, or filmic blend weight.
        grid_freq: grid-line frequency in cycles/px (0 = no stationary grid).
        grid_axis: 1 = lines vary along columns (vertical lines), 0 = along rows.
        grid_amplitude: relative modulation depth of the grid lines.
        prnu_std: typical PRNU std of the model's units.
        prnu_corr: Gaussian sigma of PRNU spatial correlation (0 = white).
        col_offset_std: typical fixed column-offset std (detected-quanta units).
        row_offset_std: typical fixed row-offset std.
        defect_rate: typical fraction of defective pixels.
    """

    model_id: str
    manufacturer_id: str
    manufacturer: str
    name: str
    modality: str
    photometric: str
    bits_stored: int
    pixel_spacing: float
    detector_type: str
    software_base: str
    dqe: float
    read_noise: float
    psf_sigma: tuple[float, float]
    sharpen_radius: float
    sharpen_amount: float
    unsharp_radius: float
    unsharp_amount: float
    lut: str
    lut_param: float
    grid_freq: float
    grid_axis: int
    grid_amplitude: float
    prnu_std: float
    prnu_corr: float
    col_offset_std: float
    row_offset_std: float
    defect_rate: float


@dataclass(frozen=True)
class UnitSpec:
    """One physical machine (a unit of a model) with its fingerprint parameters.

    Attributes:
        unit_id: "<manufacturer>.<model>.<unit>" indices, e.g. "0.1.0".
        model: the unit's :class:`ModelSpec`.
        index: unit index within the model.
        seed: archive seed the fingerprint was drawn with.
        manufacturer_header: Manufacturer as this unit writes it (a spelling variant).
        serial: DeviceSerialNumber ("" = the unit does not write one).
        station: StationName.
        institution: InstitutionName.
        software: SoftwareVersions.
        prnu_std: this unit's PRNU std.
        col_offset_std: this unit's column-offset std.
        row_offset_std: this unit's row-offset std.
        defect_rate: this unit's defective-pixel fraction.
        grid_phase: phase of the grid lines on this detector (radians).
    """

    unit_id: str
    model: ModelSpec
    index: int
    seed: int
    manufacturer_header: str
    serial: str
    station: str
    institution: str
    software: str
    prnu_std: float
    col_offset_std: float
    row_offset_std: float
    defect_rate: float
    grid_phase: float

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def manufacturer_id(self) -> str:
        return self.model.manufacturer_id

    @property
    def key(self) -> tuple[int, int, int]:
        m, k, u = (int(p) for p in self.unit_id.split("."))
        return m, k, u

    def labels(self) -> dict[str, str]:
        """Expected normalised labels (manufacturer/model/unit), via :mod:`labels`."""
        return device_labels(self.manufacturer_header, self.model.name, self.serial or None,
                             self.station)


def _manufacturer_entry(m: int) -> tuple[str, tuple[str, ...], str]:
    if m < len(_MANUFACTURERS):
        return _MANUFACTURERS[m]
    name = f"Simulix{m} Imaging"
    return name, (name.upper(), f"Simulix{m} Imaging Inc."), f"S{m}"


_DESIGN_DIMS = 6


def _model_design(seed: int, m: int, k: int) -> np.ndarray:
    """Quasi-random design point in [0, 1)^6 of model (m, k), well spread across models.

    Independent random draws would sometimes give two models nearly the same noise texture
    and grid; an additive recurrence (Roberts' R_d sequence) over a stable model index (the
    Cantor pairing of (m, k), independent of the archive's counts) keeps the models of any
    archive apart in the fingerprint dimensions while staying seed-dependent (random offset).
    Dimensions: grid presence/orientation, grid frequency, detector blur, sharpening radius,
    sharpening amount, unsharp-mask amount.
    """
    g = (m + k) * (m + k + 1) // 2 + k
    phi = 2.0
    for _ in range(60):  # root of x^(d+1) = x + 1
        phi = (1.0 + phi) ** (1.0 / (_DESIGN_DIMS + 1))
    alpha = np.array([(1.0 / phi) ** (j + 1) for j in range(_DESIGN_DIMS)])
    offset = _rng(seed, _T_DESIGN).random(_DESIGN_DIMS)
    return (offset + (g + 1) * alpha) % 1.0


def _make_model(seed: int, m: int, k: int, modalities: Sequence[str]) -> ModelSpec:
    canon, _variants, prefix = _manufacturer_entry(m)
    dz = _model_design(seed, m, k)
    house = _rng(seed, _T_MFR, m)
    lut_family = ("linear", "gamma", "filmic")[int(house.integers(0, 3))]
    sw_major = int(house.integers(1, 9))
    r = _rng(seed, _T_MODEL, m, k)
    modality = modalities[(m + k) % len(modalities)]
    series = _MODEL_SERIES[modality][int(r.integers(0, 3))]
    scale = 100 if modality != "MG" else 10
    number = int(r.integers(1, 10)) * scale + int(r.integers(0, 10)) * 10
    name = f"{prefix} {series} {number}"
    if modality == "CR":
        psf = 0.7 + 0.7 * dz[2]
        psf_pair = (psf, psf * r.uniform(0.45, 0.85))  # sharper along the laser scan
        if r.random() < 0.5:
            psf_pair = psf_pair[::-1]
        det = "STORAGE"
        spacing = float(r.choice([0.1, 0.1, 0.15, 0.175]))
    else:
        if modality == "MG":
            psf = 0.5 * dz[2]
            det = str(r.choice(["DIRECT", "SCINTILLATOR"]))
            spacing = float(r.choice([0.05, 0.07, 0.085, 0.1]))
        else:
            psf = 0.3 + 0.8 * dz[2]
            det = str(r.choice(["SCINTILLATOR", "SCINTILLATOR", "DIRECT"]))
            spacing = float(r.choice([0.125, 0.139, 0.143, 0.148, 0.16]))
        if det == "DIRECT":
            psf = min(psf, 0.35)
        psf_pair = (psf, psf)
    has_grid = dz[0] >= 0.3  # ~70 % of models have a stationary grid
    grid_axis = int(dz[0] >= 0.65)
    # grid lines must survive the detector blur along their axis: MTF(f) >= 0.5
    f_max = min(0.45, 0.19 / max(psf_pair[grid_axis], 0.05))
    grid_freq = float(0.08 + (f_max - 0.08) * dz[1])
    lut_param = {"linear": 0.0, "gamma": float(r.uniform(0.96, 1.04)),
                 "filmic": float(r.uniform(0.03, 0.08))}[lut_family]
    return ModelSpec(
        model_id=f"{m}.{k}",
        manufacturer_id=str(m),
        manufacturer=canon,
        name=name,
        modality=modality,
        photometric="MONOCHROME1" if (m, k) == (0, 1) else "MONOCHROME2",
        bits_stored=int(r.choice([10, 12, 12, 14, 14, 16])),
        pixel_spacing=spacing,
        detector_type=det,
        software_base=f"{sw_major}.{int(r.integers(0, 10))}",
        dqe=float(r.uniform(0.35, 0.8)),
        read_noise=float(r.uniform(0.5, 3.0)),
        psf_sigma=(float(round(psf_pair[0], 3)), float(round(psf_pair[1], 3))),
        sharpen_radius=float(0.6 + 1.0 * dz[3]),
        sharpen_amount=float(1.0 * dz[4]),
        unsharp_radius=float(r.uniform(3.0, 10.0)),
        unsharp_amount=float(0.2 + 0.6 * dz[5]),
        lut=lut_family,
        lut_param=lut_param,
        grid_freq=grid_freq if has_grid else 0.0,
        grid_axis=grid_axis,
        grid_amplitude=float(r.uniform(0.02, 0.05)) if has_grid else 0.0,
        prnu_std=float(r.uniform(0.005, 0.02)),
        prnu_corr=float(r.choice([0.0, 0.0, 0.6])),
        col_offset_std=float(r.uniform(0.5, 3.0)),
        row_offset_std=float(r.uniform(0.2, 1.5)) * (2.5 if modality == "CR" else 1.0),
        defect_rate=float(r.uniform(2e-5, 1.5e-4)),
    )


def _make_unit(seed: int, model: ModelSpec, u: int) -> UnitSpec:
    m, k = (int(p) for p in model.model_id.split("."))
    canon, variants, _ = _manufacturer_entry(m)
    r = _rng(seed, _T_UNIT, m, k, u)
    header = canon if u == 0 else str(r.choice((canon,) + tuple(variants)))
    inst = _INSTITUTIONS[int(r.integers(0, len(_INSTITUTIONS)))]
    style = _STATION_STYLES[int(r.integers(0, len(_STATION_STYLES)))]
    station = style.format(n=int(r.integers(1, 40)))
    tag = model.name.split()[0][:3].upper()
    serial = f"{tag}{int(r.integers(10, 99))}-{int(r.integers(0, 99999)):05d}"
    if r.random() < 0.12:
        serial = ""  # this unit writes no DeviceSerialNumber: labels fall back to StationName
    software = f"{model.software_base}.{int(r.integers(0, 40))}"
    if r.random() < 0.3:
        software += f" build {int(r.integers(100, 999))}"

    def jitter() -> float:
        return float(r.uniform(0.8, 1.25))

    return UnitSpec(
        unit_id=f"{m}.{k}.{u}",
        model=model,
        index=u,
        seed=seed,
        manufacturer_header=header,
        serial=serial,
        station=station,
        institution=inst,
        software=software,
        prnu_std=model.prnu_std * jitter(),
        col_offset_std=model.col_offset_std * jitter(),
        row_offset_std=model.row_offset_std * jitter(),
        defect_rate=model.defect_rate * jitter(),
        grid_phase=float(r.uniform(0, 2 * math.pi)),
    )


def build_devices(*, manufacturers: int = 3, models_per_manufacturer: int = 2,
                  units_per_model: int | Sequence[int] = 2, seed: int = 0,
                  modalities: Sequence[str] = ("DX", "CR")) -> list[UnitSpec]:
    """Create the units of a simulated archive.

    A device's parameters depend only on ``seed`` and its indices, so asking for more
    manufacturers, models or units keeps the existing devices identical.

    Args:
        manufacturers: number of manufacturers (>= 1).
        models_per_manufacturer: models of each manufacturer (>= 1).
        units_per_model: units of each model; an int, or one int per model in
            manufacturer-major order (e.g. ``[2, 2, 3, 2]`` for 2 x 2 models).
        seed: archive seed.
        modalities: modalities assigned to models in turn ((m + k) mod len): any of
            "DX", "CR", "MG".

    Returns:
        Units, ordered by (manufacturer, model, unit).

    Raises:
        ConfigError: invalid counts or modality.
    """
    if manufacturers < 1 or models_per_manufacturer < 1:
        raise ConfigError("manufacturers and models_per_manufacturer must be >= 1")
    mods = [str(x).upper() for x in modalities]
    if not mods or any(x not in SOP_CLASSES for x in mods):
        raise ConfigError(f"modalities must be among {sorted(SOP_CLASSES)}, got {list(modalities)}")
    n_models = manufacturers * models_per_manufacturer
    if isinstance(units_per_model, int):
        counts = [units_per_model] * n_models
    else:
        counts = [int(c) for c in units_per_model]
        if len(counts) != n_models:
            raise ConfigError(f"units_per_model lists {len(counts)} counts for {n_models} models")
    if any(c < 1 for c in counts):
        raise ConfigError("every model needs at least one unit")
    units = []
    for m in range(manufacturers):
        for k in range(models_per_manufacturer):
            model = _make_model(seed, m, k, mods)
            for u in range(counts[m * models_per_manufacturer + k]):
                units.append(_make_unit(seed, model, u))
    return units


def select_units(units: Sequence[UnitSpec], *, include: Iterable[str] | None = None,
                 exclude: Iterable[str] = ()) -> list[UnitSpec]:
    """Filter units by selectors.

    A selector matches a unit when it equals the unit id ("0.1.0"), its model id ("0.1"), its
    manufacturer id ("0"), its serial number, its model name or its canonical manufacturer name
    (case-insensitive).

    Args:
        units: all units.
        include: keep only matching units (``None`` = all).
        exclude: then drop matching units.

    Returns:
        The selected units, in the original order.

    Raises:
        ConfigError: a selector matches no unit.
    """
    def matches(sel: str, u: UnitSpec) -> bool:
        s = sel.strip().casefold()
        return s in {u.unit_id, u.model_id, u.manufacturer_id, u.serial.casefold(),
                     u.model.name.casefold(), u.model.manufacturer.casefold()} - {""}

    inc = list(include) if include is not None else None
    exc = list(exclude)
    for sel in (inc or []) + exc:
        if not any(matches(sel, u) for u in units):
            raise ConfigError(f"device selector {sel!r} matches no unit "
                              f"(known unit ids: {', '.join(u.unit_id for u in units)})")
    out = [u for u in units if inc is None or any(matches(s, u) for s in inc)]
    return [u for u in out if not any(matches(s, u) for s in exc)]


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
                _rng(s, _T_GAIN, m, k, u, ty, tx).standard_normal((_TILE, _TILE), np.float32)
    white = white[:gh, :gw]
    sig = unit.model.prnu_corr
    if sig > 0:
        white = ndimage.gaussian_filter(white, sig, mode="reflect") / _gauss_white_norm(sig)
    gain = (white[:h, :w] * np.float32(unit.prnu_std)).astype(np.float32)

    def offsets(tag: int, n: int, std: float) -> np.ndarray:
        nt = -(-n // _TILE)
        parts = [_rng(s, tag, m, k, u, t).standard_normal(_TILE) for t in range(nt)]
        v = np.concatenate(parts)[:n] if parts else np.zeros(0)
        return (v * std).astype(np.float32)

    col = offsets(_T_COL, w, unit.col_offset_std)
    row = offsets(_T_ROW, h, unit.row_offset_std)
    rows, cols, kinds, vals = [], [], [], []
    for ty in range(-(-h // _TILE)):
        for tx in range(-(-w // _TILE)):
            r = _rng(s, _T_DEFECT, m, k, u, ty, tx)
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
    r = _rng(unit.seed, _T_IMAGE, seed, 0xFFFF)
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
        look, _rng(unit.seed, _T_LOOK_IMAGE, seed, 0xFFFF), part, lat)
    return render_detector_image(unit, pat, ph, _rng(unit.seed, _T_NOISE, seed, 0xFFFF),
                                 look=il), ph


def model_look(model: ModelSpec, seed: int) -> VendorLook:
    """The vendor processing look of a model in an archive seeded with ``seed``.

    See :mod:`medforensics.synth.vendorlook`. Depends only on the seed and the model's
    indices, modality and pixel spacing.
    """
    m, k = (int(p) for p in model.model_id.split("."))
    return make_look(seed, m, k, model.modality, model.pixel_spacing)


# --------------------------------------------------------------------------- planning

@dataclass
class ImagePlan:
    """Everything needed to render and write one file (no pixels).

    Attributes:
        unit_id: device unit id.
        patient_index, study_index, image_index: indices seeding the image.
        patient_id, patient_name, patient_sex, patient_birth: patient header values.
        study_uid, series_uid, sop_uid: DICOM UIDs.
        study_date, study_time: DA/TM strings.
        body_part, view, laterality: content.
        rows, cols: image size.
        instance_number: InstanceNumber within the series.
        relpath: path relative to the archive root.
    """

    unit_id: str
    patient_index: int
    study_index: int
    image_index: int
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str
    study_time: str
    accession: str
    body_part: str
    view: str
    laterality: str
    rows: int
    cols: int
    instance_number: int
    relpath: str


def _size_range(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        lo = hi = int(size)
    else:
        lo, hi = (int(size[0]), int(size[1]))
    if lo < 32 or hi < lo or hi > 8192:
        raise ConfigError(f"size must be within 32..8192 px (min <= max), got {size!r}")
    return lo, hi


def plan_archive(units: Sequence[UnitSpec], *, patients: int, images_per_patient:
                 int | tuple[int, int] = (2, 4), size: int | tuple[int, int] = (384, 768),
                 seed: int = 0, multi_device_fraction: float = 0.1) -> list[ImagePlan]:
    """Plan the patients, studies and images of an archive over ``units``.

    Patients are assigned to units in balanced round robin over seeded shuffles, so the plan
    for a patient depends only on the seed, the patient index and the full unit list.

    Args:
        units: ALL units of the archive (before any exclusion).
        patients: number of patients (>= 1).
        images_per_patient: images per study, an int or an inclusive (min, max) range
            (MG studies are capped at 4 views).
        size: image side in px, fixed or an inclusive (min, max) range; rows and cols are drawn
            independently (rounded to even) from the same distribution for every device.
        seed: archive seed.
        multi_device_fraction: probability that a patient has a second study on another unit.

    Returns:
        Image plans, ordered by patient, study, image.

    Raises:
        ConfigError: invalid argument.
    """
    from pydicom.uid import generate_uid

    if patients < 1:
        raise ConfigError("patients must be >= 1")
    if isinstance(images_per_patient, (int, np.integer)):
        ilo = ihi = int(images_per_patient)
    else:
        ilo, ihi = int(images_per_patient[0]), int(images_per_patient[1])
    if ilo < 1 or ihi < ilo:
        raise ConfigError("images_per_patient must be >= 1 (min <= max), "
                          f"got {images_per_patient!r}")
    if not 0.0 <= multi_device_fraction <= 1.0:
        raise ConfigError("multi_device_fraction must be within [0, 1]")
    slo, shi = _size_range(size)
    n_units = len(units)
    if n_units == 0:
        raise ConfigError("no units")
    plans: list[ImagePlan] = []
    base_day = _dt.date(2015, 1, 1)
    for i in range(patients):
        block = _rng(seed, _T_ASSIGN, i // n_units).permutation(n_units)
        first = int(block[i % n_units])
        pr = _rng(seed, _T_PATIENT, i)
        unit_idx = [first]
        if n_units > 1 and pr.random() < multi_device_fraction:
            unit_idx.append((first + 1 + int(pr.integers(0, n_units - 1))) % n_units)
        any_mg = any(units[j].model.modality == "MG" for j in unit_idx)
        sex = "F" if any_mg else ("F" if pr.random() < 0.5 else "M")
        given = (_GIVEN_F if sex == "F" else _GIVEN_M)[int(pr.integers(0, 10))]
        family = _FAMILY[int(pr.integers(0, len(_FAMILY)))]
        pid = f"SIM{seed % 1000:03d}{i:05d}"
        birth = base_day - _dt.timedelta(days=int(pr.integers(18 * 365, 90 * 365)))
        day0 = int(pr.integers(0, 8 * 365))
        for j, uidx in enumerate(unit_idx):
            unit = units[uidx]
            sr = _rng(seed, _T_STUDY, i, j)
            n_img = int(sr.integers(ilo, ihi + 1))
            if unit.model.modality == "MG":
                n_img = min(n_img, 4)
            part, lat, views = choose_study(sr, unit.model.modality, n_img)
            date = base_day + _dt.timedelta(days=day0 + j * int(sr.integers(1, 400)))
            tod = int(sr.integers(7 * 3600, 20 * 3600))
            ent = ["medforensics-sim", str(seed), str(i), str(j)]
            study_uid = str(generate_uid(entropy_srcs=ent + ["study"]))
            series_uid = str(generate_uid(entropy_srcs=ent + ["series"]))
            study_dir = f"ST{j + 1}_{study_uid.replace('.', '')[-8:]}"
            for n, view in enumerate(views):
                if part == "BREAST":
                    img_lat, img_view = view.split("-")
                else:
                    img_lat, img_view = lat, view
                rows = int(sr.integers(slo, shi + 1)) // 2 * 2 or 2
                cols = int(sr.integers(slo, shi + 1)) // 2 * 2 or 2
                plans.append(ImagePlan(
                    unit_id=unit.unit_id, patient_index=i, study_index=j, image_index=n,
                    patient_id=pid, patient_name=f"{family}^{given}", patient_sex=sex,
                    patient_birth=birth.strftime("%Y%m%d"),
                    study_uid=study_uid, series_uid=series_uid,
                    sop_uid=str(generate_uid(entropy_srcs=ent + ["image", str(n)])),
                    study_date=date.strftime("%Y%m%d"),
                    study_time=f"{tod // 3600:02d}{tod // 60 % 60:02d}{tod % 60:02d}",
                    accession=f"A{seed % 100:02d}{i:05d}{j}",
                    body_part=part, view=img_view, laterality=img_lat, rows=max(rows, slo),
                    cols=max(cols, slo), instance_number=n + 1,
                    relpath=f"{pid}/{study_dir}/{n + 1:03d}.dcm"))
    return plans


# ------------------------------------------------------------------------------ DICOM

def _check_transfer_syntax(name: str) -> str:
    key = name.strip().lower()
    if key not in TRANSFER_SYNTAXES:
        raise ConfigError(f"unknown transfer syntax {name!r}; choose one of "
                          f"{', '.join(TRANSFER_SYNTAXES)}")
    uid = TRANSFER_SYNTAXES[key]
    if key in ("rle", "jpeg-ls", "j2k"):
        from pydicom.pixels.encoders import (
            JPEG2000LosslessEncoder,
            JPEGLSLosslessEncoder,
            RLELosslessEncoder,
        )

        enc = {"rle": RLELosslessEncoder, "jpeg-ls": JPEGLSLosslessEncoder,
               "j2k": JPEG2000LosslessEncoder}[key]
        if not enc.is_available:
            missing = "; ".join(str(m) for m in enc.missing_dependencies)
            raise ConfigError(f"no encoder installed for transfer syntax {name!r} ({uid}): "
                              f"{missing or 'no plugin available'}. Use 'explicit', 'implicit',"
                              f" 'rle' or install an encoder plugin.")
    return uid


def _dataset(plan: ImagePlan, unit: UnitSpec, pixels: np.ndarray, rng: np.random.Generator,
             ts_uid: str, burned_in: bool = False) -> Any:
    """Build the pydicom Dataset (file meta included) for one image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

    md = unit.model
    sop_class = SOP_CLASSES[md.modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(plan.sop_uid)
    meta.TransferSyntaxUID = UID(ts_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDFORENSICS_SIM"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = UID(plan.sop_uid)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = plan.study_date
    ds.StudyTime = ds.SeriesTime = plan.study_time
    ds.ContentTime = ds.AcquisitionTime = plan.study_time
    ds.AccessionNumber = plan.accession
    ds.Modality = md.modality
    ds.Manufacturer = unit.manufacturer_header
    ds.InstitutionName = unit.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = unit.station
    ds.StudyDescription = f"XR {plan.body_part}" if md.modality != "MG" else "MAMMO SCREENING"
    ds.SeriesDescription = f"{plan.body_part} {plan.view}"
    ds.ManufacturerModelName = md.name
    ds.PatientName = plan.patient_name
    ds.PatientID = plan.patient_id
    ds.PatientBirthDate = plan.patient_birth
    ds.PatientSex = plan.patient_sex
    age = int(plan.study_date[:4]) - int(plan.patient_birth[:4])
    ds.PatientAge = f"{max(age, 0):03d}Y"
    ds.BodyPartExamined = plan.body_part
    kv0, kv1, mas0, mas1 = _PART_EXPOSURE[plan.body_part]
    ds.KVP = f"{rng.uniform(kv0, kv1):.1f}"
    if unit.serial:
        ds.DeviceSerialNumber = unit.serial
    ds.SoftwareVersions = unit.software
    mas = rng.uniform(mas0, mas1)
    ds.Exposure = str(int(round(mas)))
    ds.ExposureInuAs = int(round(mas * 1000))
    ds.ImagerPixelSpacing = [f"{md.pixel_spacing:.3f}"] * 2
    ds.DetectorType = md.detector_type
    ds.ViewPosition = plan.view
    ds.StudyInstanceUID = UID(plan.study_uid)
    ds.SeriesInstanceUID = UID(plan.series_uid)
    ds.StudyID = plan.accession[-6:]
    ds.SeriesNumber = plan.study_index + 1
    ds.InstanceNumber = plan.instance_number
    if plan.laterality:
        ds.ImageLaterality = plan.laterality
    ds.PatientOrientation = ["A", "F"] if md.modality == "MG" else ["R", "F"]
    if md.modality in ("DX", "MG"):
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if md.photometric == "MONOCHROME2" else 1
        ds.PresentationLUTShape = "IDENTITY" if md.photometric == "MONOCHROME2" else "INVERSE"
        ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    if md.modality == "CR" and burned_in:
        ds.BurnedInAnnotation = "YES"
    if md.modality == "DX":
        ds.PixelSpacing = ds.ImagerPixelSpacing
    if md.modality == "MG":
        ds.BreastImplantPresent = "NO"
        ds.BodyPartThickness = f"{rng.uniform(30, 75):.0f}"
        ds.CompressionForce = f"{rng.uniform(60, 160):.0f}"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = (
            ("399162004", "SCT") if plan.view == "CC" else ("399368009", "SCT"))
        code.CodeMeaning = "cranio-caudal" if plan.view == "CC" else "medio-lateral oblique"
        ds.ViewCodeSequence = DicomSequence([code])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = md.photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = md.bits_stored
    ds.HighBit = md.bits_stored - 1
    ds.PixelRepresentation = 0
    maxval = (1 << md.bits_stored) - 1
    ds.WindowCenter = f"{(maxval + 1) // 2}"
    ds.WindowWidth = f"{maxval + 1}"
    if md.modality != "CR":
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _write(ds: Any, path: Path, ts_key: str) -> None:
    if ts_key in ("rle", "jpeg-ls", "j2k"):
        arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
        uid = TRANSFER_SYNTAXES[ts_key]
        ds.compress(uid, arr, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------- archive

def simulate_archive(out_dir: str | Path, *, manufacturers: int = 3,
                     models_per_manufacturer: int = 2,
                     units_per_model: int | Sequence[int] = 2, patients: int = 48,
                     images_per_patient: int | tuple[int, int] = (2, 4),
                     size: int | tuple[int, int] = (384, 768), seed: int = 0,
                     transfer_syntax: str = "explicit",
                     modalities: Sequence[str] = ("DX", "CR"),
                     multi_device_fraction: float = 0.1,
                     include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                     overwrite: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     vendor_look: bool = False) -> list[Path]:
    """Write a simulated multi-device archive of DICOM files plus ``devices.json``.

    Args:
        out_dir: archive root; files go to ``<PatientID>/ST<n>_<study>/<nnn>.dcm``.
        manufacturers: number of (fictional) manufacturers.
        models_per_manufacturer: models per manufacturer.
        units_per_model: units per model (int, or one count per model; see
            :func:`build_devices`).
        patients: number of patients planned over ALL units (those on excluded units are
            skipped).
        images_per_patient: images per study, int or inclusive (min, max).
        size: image side in px, fixed or inclusive (min, max) range (<= 8192).
        seed: seed of everything (devices, patients, content, noise, UIDs).
        transfer_syntax: "explicit" (VR little endian, default), "implicit", "rle",
            "jpeg-ls" or "j2k" (lossless; the last three need an encoder plugin).
        modalities: modalities given to the models in turn ("DX", "CR", "MG").
        multi_device_fraction: share of patients with a second study on another unit.
        include: write only units matching these selectors (see :func:`select_units`).
        exclude: do not write units matching these selectors (held-out devices).
        overwrite: allow writing into a non-empty directory.
        progress: called as ``progress(done, total)`` after each file.
        vendor_look: each model also applies its own processing look
            (:mod:`medforensics.synth.vendorlook`: LUT and contrast with body-part presets,
            edge enhancement, equalisation, noise reduction, matrix formats and field of
            view, shutter, burned-in side marker and text), with per-image variation. Image
            sizes then follow the models' formats within ``size``. ``devices.json`` records
            every model's look (``looks``) and every image's (``files[i].look``). Off
            (default): devices differ only by their fingerprint, and nothing of this runs.

    Returns:
        Paths of the written DICOM files, in plan order.

    Raises:
        ConfigError: invalid argument, unavailable encoder, or non-empty ``out_dir``
            without ``overwrite``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    ts_key = transfer_syntax.strip().lower()
    ts_uid = _check_transfer_syntax(ts_key)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; choose a new directory or pass overwrite=True")
    units = build_devices(manufacturers=manufacturers,
                          models_per_manufacturer=models_per_manufacturer,
                          units_per_model=units_per_model, seed=seed, modalities=modalities)
    selected = select_units(units, include=include, exclude=exclude)
    if not selected:
        raise ConfigError("the include/exclude selectors leave no unit to write")
    chosen = {u.unit_id for u in selected}
    plans = [p for p in plan_archive(units, patients=patients,
                                     images_per_patient=images_per_patient, size=size, seed=seed,
                                     multi_device_fraction=multi_device_fraction)
             if p.unit_id in chosen]
    unit_map = {u.unit_id: u for u in units}
    looks: dict[str, VendorLook] = {}
    if vendor_look:
        looks = {u.model_id: model_look(u.model, seed) for u in units}
        plans = [_with_matrix(p, looks, unit_map, _size_range(size), seed) for p in plans]
    image_looks: dict[str, ImageLook] = {}
    out.mkdir(parents=True, exist_ok=True)
    by_unit: dict[str, list[ImagePlan]] = {}
    for p in plans:
        by_unit.setdefault(p.unit_id, []).append(p)
    total = len(plans)
    done = 0
    for uid_, uplans in by_unit.items():
        unit = unit_map[uid_]
        ext = (max(p.rows for p in uplans), max(p.cols for p in uplans))
        pattern = unit_pattern(unit, ext)
        for p in uplans:
            traits_rng = _rng(seed, _T_PATIENT, p.patient_index, 1)
            traits = draw_patient_traits(traits_rng, sex=p.patient_sex)
            r = _rng(seed, _T_IMAGE, p.patient_index, p.study_index, p.image_index)
            look = looks.get(unit.model_id)
            il = None if look is None else draw_image_look(
                look, _rng(seed, _T_LOOK_IMAGE, p.patient_index, p.study_index, p.image_index),
                p.body_part, p.laterality)
            ph = render_anatomy(p.body_part, p.view, p.laterality, (p.rows, p.cols), r, traits,
                                fov_scale=look.fov_scale if look is not None else 1.0)
            pix = render_detector_image(unit, pattern, ph, _rng(
                seed, _T_NOISE, p.patient_index, p.study_index, p.image_index), look=il)
            hdr_rng = _rng(seed, _T_IMAGE, p.patient_index, p.study_index, p.image_index, 7)
            ds = _dataset(p, unit, pix, hdr_rng, ts_uid,
                          burned_in=il is not None and il.burned_in)
            if il is not None:
                image_looks[p.relpath] = il
            _write(ds, out / p.relpath, ts_key)
            done += 1
            if progress is not None:
                progress(done, total)
        del pattern
    _write_devices_json(out, units, selected, plans, dict(
        manufacturers=manufacturers, models_per_manufacturer=models_per_manufacturer,
        units_per_model=units_per_model if isinstance(units_per_model, int)
        else list(units_per_model),
        patients=patients, images_per_patient=images_per_patient, size=size, seed=seed,
        transfer_syntax=ts_key, modalities=list(modalities),
        multi_device_fraction=multi_device_fraction,
        include=None if include is None else list(include), exclude=list(exclude)),
        looks=looks, image_looks=image_looks)
    logger.info("wrote %d files for %d units to %s in %.1f s", total, len(selected), out,
                time.perf_counter() - t0)
    return [out / p.relpath for p in plans]


def device_table(units: Sequence[UnitSpec]) -> list[dict[str, Any]]:
    """One row per unit for display: ids, header identity and key fingerprint parameters."""
    rows = []
    for u in units:
        md = u.model
        grid = (f"{md.grid_freq:.2f}c/px {'V' if md.grid_axis == 1 else 'H'} "
                f"{100 * md.grid_amplitude:.1f}%") if md.grid_freq > 0 else "none"
        rows.append({
            "unit": u.unit_id, "manufacturer": u.manufacturer_header, "model": md.name,
            "modality": md.modality, "serial": u.serial or "-", "station": u.station,
            "institution": u.institution, "bits": md.bits_stored,
            "photometric": md.photometric, "prnu_%": round(100 * u.prnu_std, 2),
            "psf": "x".join(f"{v:.2f}" for v in md.psf_sigma),
            
            "sharpen": f"r{md.sharpen_radius:.2f} a{md.sharpen_amount:.2f}",
            "unsharp": f"r{md.unsharp_radius:.1f} a{md.unsharp_amount:.2f}",
            "lut": f"{md.lut}" + (f" {md.lut_param:.2f}" if md.lut != "linear" else ""),
            "grid": grid, "read_noise": round(md.read_noise, 1), "dqe": round(md.dqe, 2),
        })
    return rows


def format_device_table(units: Sequence[UnitSpec]) -> str:
    """Plain-text table of :func:`device_table` (for logs and the CLI)."""
    rows = device_table(units)
    if not rows:
        return "(no devices)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines.append("  ".join("-" * width[c] for c in cols))
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _with_matrix(plan: ImagePlan, looks: dict[str, VendorLook], units: dict[str, UnitSpec],
                 size: tuple[int, int], seed: int) -> ImagePlan:
    """The plan with rows/cols set to one of its model's matrix formats (vendor look)."""
    import dataclasses

    unit = units[plan.unit_id]
    rows, cols = choose_matrix(
        looks[unit.model_id], size,
        _rng(seed, _T_LOOK_MATRIX, plan.patient_index, plan.study_index, plan.image_index),
        unit.model.modality)
    return dataclasses.replace(plan, rows=rows, cols=cols)


def _write_devices_json(out: Path, units: Sequence[UnitSpec], selected: Sequence[UnitSpec],
                        plans: Sequence[ImagePlan], params: dict[str, Any], *,
                        looks: dict[str, VendorLook] | None = None,
                        image_looks: dict[str, ImageLook] | None = None) -> None:
    chosen = {u.unit_id for u in selected}
    models: dict[str, dict[str, Any]] = {}
    unit_rows = []
    for u in units:
        models.setdefault(u.model_id, asdict(u.model))
        row = {k: v for k, v in asdict(u).items() if k != "model"}
        row.update(model_id=u.model_id, manufacturer_id=u.manufacturer_id,
                   written=u.unit_id in chosen, labels=u.labels())
        unit_rows.append(row)
    manufacturers = {}
    for u in units:
        canon, variants, _ = _manufacturer_entry(int(u.manufacturer_id))
        manufacturers[u.manufacturer_id] = {"canonical": canon, "spellings": [canon, *variants]}
    doc = {
        "generator": "medforensics.synth.simulate",
        "format_version": 1,
        "parameters": params,
        "manufacturers": manufacturers,
        "models": models,
        "units": unit_rows,
        "files": [{"path": p.relpath, "unit_id": p.unit_id,
                   "model_id": p.unit_id.rsplit(".", 1)[0],
                   "manufacturer_id": p.unit_id.split(".", 1)[0], "patient_id": p.patient_id,
                   "study_uid": p.study_uid, "sop_uid": p.sop_uid, "body_part": p.body_part,
                   "view": p.view, "laterality": p.laterality, "rows": p.rows, "cols": p.cols}
                  for p in plans],
    }
    if looks:
        doc["parameters"]["vendor_look"] = True
        doc["looks"] = {mid: asdict(lk) for mid, lk in sorted(looks.items())}
        for f in doc["files"]:
            il = (image_looks or {}).get(f["path"])
            if il is not None:
                f["look"] = look_summary(il)
    (out / DEVICES_FILE).write_text(json.dumps(doc, indent=1), encoding="utf-8")


def load_devices(archive: str | Path) -> dict[str, Any]:
    """Read ``devices.json`` of a simulated archive.

    Args:
        archive: the archive root (or the devices.json path itself).

    Returns:
        The parsed document: ``parameters``, ``manufacturers``, ``models`` (by model id),
        ``units`` (list; each with ``labels`` and ``written``) and ``files`` (relative path ->
        ground-truth ids).

    Raises:
        ConfigError: the file is missing or not a simulator ground-truth file.
    """
    p = Path(archive)
    if p.is_dir():
        p = p / DEVICES_FILE
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read simulator ground truth {p}: {exc}") from exc
    if doc.get("generator") != "medforensics.synth.simulate":
        raise ConfigError(f"{p} is not a medforensics simulator devices.json")
    return doc
