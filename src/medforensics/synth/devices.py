"""The simulated devices: fictional manufacturers, models and units, and their parameters.

Devices differ only by their fingerprint (the archive draws content, exposure and image size
from the same distributions for every device):

* **per unit** (tied to the detector pixel grid, so the pattern stays registered across image
  sizes): a multiplicative gain pattern (PRNU-like, 0.5-2 % std, white or slightly
  correlated), fixed column and row offsets, a few defective pixels (dead / hot / stuck,
  imperfectly corrected), the phase of the anti-scatter grid. A unit's parameters are drawn
  from its model's distribution.
* **per model**: quantum efficiency and read noise, detector blur, an unsharp-mask processing
  kernel, stored bit depth (10/12/14/16), anti-scatter grid lines (some models none), a modest
  output LUT (linear, gamma or filmic), photometric interpretation (one model writes
  MONOCHROME1), pixel spacing and header style.
* **per manufacturer**: name (written with spelling variants by different units, so label
  normalisation has work), LUT family and software version scheme.

A device's parameters depend only on its indices ``(manufacturer, model, unit)``
(:mod:`medforensics.synth.streams`), so excluding devices never changes the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from medforensics.data.labels import device_labels
from medforensics.errors import ConfigError
from medforensics.synth.streams import (
    T_DESIGN,
    T_MFR,
    T_MODEL,
    T_UNIT,
    stream,
)

SOP_CLASSES: dict[str, str] = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
}

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


def manufacturer_entry(m: int) -> tuple[str, tuple[str, ...], str]:
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
    offset = stream(seed, T_DESIGN).random(_DESIGN_DIMS)
    return (offset + (g + 1) * alpha) % 1.0


def _make_model(seed: int, m: int, k: int, modalities: Sequence[str]) -> ModelSpec:
    canon, _variants, prefix = manufacturer_entry(m)
    dz = _model_design(seed, m, k)
    house = stream(seed, T_MFR, m)
    lut_family = ("linear", "gamma", "filmic")[int(house.integers(0, 3))]
    sw_major = int(house.integers(1, 9))
    r = stream(seed, T_MODEL, m, k)
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
    canon, variants, _ = manufacturer_entry(m)
    r = stream(seed, T_UNIT, m, k, u)
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


