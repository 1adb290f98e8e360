"""Simulated multi-device X-ray archive: a physically motivated detector simulator.

The archive is the data everything else in medforensics is tested and demonstrated on. It
writes real DICOM files (``OUT/<PatientID>/<study>/<n>.dcm``) and ``OUT/devices.json`` with
the ground truth.

Devices (:mod:`medforensics.synth.devices`) differ ONLY by their fingerprint; the detector
physics of one image is in :mod:`medforensics.synth.detector`. Content (procedural anatomy,
:mod:`medforensics.synth.anatomy`), exposure and image size are drawn from the same
distributions for every device (within a modality family: DX and CR image the Deep-RSI sites
hand/wrist/forearm/elbow/shoulder plus chest; MG images breasts, CC/MLO, as in DeepMammo).

Option ``vendor_look=True`` (``medforensics simulate --vendor-look``) adds what real archives
also have and the default leaves out: each manufacturer and model applies its own processing
look (tone curve with body-part presets, edge enhancement, equalisation, noise reduction,
matrix formats and field of view, shutter, burned-in side marker and text), varied per image;
see :mod:`medforensics.synth.vendorlook`. Without the option nothing of it runs and the
archive is the same, file for file.

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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from medforensics.errors import ConfigError
from medforensics.synth.anatomy import (
    choose_study,
    draw_patient_traits,
    render_anatomy,
)
from medforensics.synth.detector import (
    model_look,
    render_detector_image,
    unit_pattern,
)
from medforensics.synth.devices import (
    SOP_CLASSES,
    UnitSpec,
    build_devices,
    manufacturer_entry,
    select_units,
)
from medforensics.synth.streams import (
    T_ASSIGN,
    T_IMAGE,
    T_LOOK_IMAGE,
    T_LOOK_MATRIX,
    T_NOISE,
    T_PATIENT,
    T_STUDY,
    stream,
)
from medforensics.synth.vendorlook import (
    ImageLook,
    VendorLook,
    choose_matrix,
    draw_image_look,
    look_summary,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEVICES_FILE",
    "TRANSFER_SYNTAXES",
    "ImagePlan",
    "plan_archive",
    "simulate_archive",
    "load_devices",
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



# --------------------------------------------------------------------------- planning

# ------------------------------------------------------------------- fictional patients

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
        block = stream(seed, T_ASSIGN, i // n_units).permutation(n_units)
        first = int(block[i % n_units])
        pr = stream(seed, T_PATIENT, i)
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
            sr = stream(seed, T_STUDY, i, j)
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
    """Build the pydicom Dataset (file meta included) for one image.

    ``rng`` draws the exposure values (kVp, mAs; compression for mammograms) in a fixed order.
    """
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.file_meta = _file_meta(plan, unit, ts_uid)
    _identity_attributes(ds, plan, unit)
    _acquisition_attributes(ds, plan, unit, rng, burned_in)
    _pixel_attributes(ds, unit, pixels)
    return ds


def _file_meta(plan: ImagePlan, unit: UnitSpec, ts_uid: str) -> Any:
    """The file meta group (SOP class and instance, transfer syntax, implementation)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASSES[unit.model.modality])
    meta.MediaStorageSOPInstanceUID = UID(plan.sop_uid)
    meta.TransferSyntaxUID = UID(ts_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDFORENSICS_SIM"
    return meta


def _identity_attributes(ds: Any, plan: ImagePlan, unit: UnitSpec) -> None:
    """SOP, study, device (the ground-truth labels) and patient attributes, set on ``ds``."""
    from pydicom.uid import UID

    md = unit.model
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = UID(SOP_CLASSES[md.modality])
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


def _acquisition_attributes(ds: Any, plan: ImagePlan, unit: UnitSpec, rng: np.random.Generator,
                            burned_in: bool) -> None:
    """Exposure, detector, view and series attributes, and the modality's own ones."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import UID

    md = unit.model
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


def _pixel_attributes(ds: Any, unit: UnitSpec, pixels: np.ndarray) -> None:
    """Image pixel module, default window, rescale and the pixel data (uint16 little endian)."""
    md = unit.model
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
            traits_rng = stream(seed, T_PATIENT, p.patient_index, 1)
            traits = draw_patient_traits(traits_rng, sex=p.patient_sex)
            r = stream(seed, T_IMAGE, p.patient_index, p.study_index, p.image_index)
            look = looks.get(unit.model_id)
            il = None if look is None else draw_image_look(
                look, stream(seed, T_LOOK_IMAGE, p.patient_index, p.study_index, p.image_index),
                p.body_part, p.laterality)
            ph = render_anatomy(p.body_part, p.view, p.laterality, (p.rows, p.cols), r, traits,
                                fov_scale=look.fov_scale if look is not None else 1.0)
            pix = render_detector_image(unit, pattern, ph, stream(
                seed, T_NOISE, p.patient_index, p.study_index, p.image_index), look=il)
            hdr_rng = stream(seed, T_IMAGE, p.patient_index, p.study_index, p.image_index, 7)
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


def _with_matrix(plan: ImagePlan, looks: dict[str, VendorLook], units: dict[str, UnitSpec],
                 size: tuple[int, int], seed: int) -> ImagePlan:
    """The plan with rows/cols set to one of its model's matrix formats (vendor look)."""
    import dataclasses

    unit = units[plan.unit_id]
    rows, cols = choose_matrix(
        looks[unit.model_id], size,
        stream(seed, T_LOOK_MATRIX, plan.patient_index, plan.study_index, plan.image_index),
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
        canon, variants, _ = manufacturer_entry(int(u.manufacturer_id))
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
