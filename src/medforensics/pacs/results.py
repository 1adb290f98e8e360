"""Results of one image as DICOM objects: the SEG of its forgery map and one Comprehensive SR.

The one place where an analysis (the JSON-able dicts that ``identify`` and ``forgery detect``
produce) becomes DICOM; the command line's ``--dicom-out``, ``pacs scan`` / ``pacs listen``,
the Python API and the service's DICOM download all call :func:`dicom_results`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medforensics.pacs.common import Producer, source_header, write_dataset
from medforensics.pacs.errors import DicomBuildError
from medforensics.pacs.seg import build_seg
from medforensics.pacs.sr import build_report

__all__ = ["InstanceResult", "dicom_results", "model_identity", "write_dicom_results"]


@dataclass
class InstanceResult:
    """What happened to one DICOM instance analysed from a PACS (``pacs scan``) or received
    by the node (``pacs listen``): one JSON line of their ``--json`` output.

    Attributes:
        study, series, sop: its UIDs.
        status: ``done``, ``skipped`` (a lasting reason: not an image, unreadable pixels, the
            analysis refused it, no result object can reference it), ``failed`` (may pass on
            a later try) or, for a scan, ``resumed`` (finished by an earlier run).
        reason: machine-readable reason of a skip / failure (reader reasons such as
            ``no-pixel-data``; ``invalid-image``, ``result-failed``, ...).
        message: the human message of a skip / failure.
        identify: the identify result (JSON-able), when analysed.
        forgery: the forgery result (JSON-able, without the map), when analysed.
        sr, seg: SOP Instance UIDs of the SR / SEG built.
        files: paths written.
    """

    study: str
    series: str
    sop: str
    status: str = "done"
    reason: str | None = None
    message: str | None = None
    identify: dict[str, Any] | None = None
    forgery: dict[str, Any] | None = None
    sr: str | None = None
    seg: str | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (one ``--json`` line)."""
        return asdict(self)


def dicom_results(source: Dataset | str | os.PathLike[str], *,
                  identify: Mapping[str, Any] | None = None,
                  forgery: Mapping[str, Any] | None = None,
                  prob_map: np.ndarray | None = None,
                  seg_kind: str | None = "fractional",
                  producer: Producer | None = None) -> dict[str, Dataset]:
    """The result objects of one analysed image.

    Args:
        source: the analysed image's data set (pixels optional) or its DICOM file.
        identify: the identify result (``identify --json`` line), or None.
        forgery: the forgery result (``forgery detect --json`` line), or None.
        prob_map: the forgery probability map, float (Rows, Columns) in [0, 1]; with
            ``forgery`` and ``seg_kind`` it becomes a SEG the SR references.
        seg_kind: ``"fractional"`` (probabilities), ``"binary"`` (the map thresholded at the
            result's ``map_threshold``) or None (no SEG).
        producer: who writes the objects (device / software identification); default: this
            installation of medforensics.

    Returns:
        ``{"seg": Dataset, "sr": Dataset}`` (``seg`` only when one was built).

    Raises:
        medforensics.pacs.errors.DicomBuildError: the source is not a referenceable DICOM
            image, or the map does not fit it.
        medforensics.errors.ReadError: the source file cannot be read.
    """
    src = source_header(source)
    out: dict[str, Dataset] = {}
    try:
        if forgery is not None and prob_map is not None and seg_kind:
            out["seg"] = build_seg(src, prob_map, kind=seg_kind,
                                   threshold=float(forgery.get("map_threshold") or 0.5),
                                   model=forgery.get("model"), producer=producer)
        out["sr"] = build_report(src, identify=identify, forgery=forgery, seg=out.get("seg"),
                                 producer=producer)
    except (ValueError, TypeError) as exc:  # a source value highdicom will not copy
        raise DicomBuildError(f"{src.get('SOPInstanceUID', '?')}: no result object can be "
                              f"built from this source: {exc}") from None
    return out


def write_dicom_results(out_dir: str | os.PathLike[str], source: Dataset | str | os.PathLike[str],
                        what: str, **kwargs: Any) -> list[str]:
    """:func:`dicom_results`, each object written whole (temporary file, then rename) as
    ``<SOPInstanceUID>_<what>_<seg|sr>.dcm`` in ``out_dir``; returns the paths."""
    src = source_header(source)
    objects = dicom_results(src, **kwargs)
    sop = str(src.SOPInstanceUID)
    written = []
    for suffix in ("seg", "sr"):
        if suffix in objects:
            written.append(str(write_dataset(objects[suffix],
                                             Path(out_dir) / f"{sop}_{what}_{suffix}.dcm")))
    return written


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}



def model_identity(run: Path | str | None, integrity: str | None,
                   default_name: str = "") -> dict[str, Any]:
    """The ``model`` entry of a result: ``name``, ``run`` (folder name), ``sha256`` of the
    weights and ``run_integrity``, from the run's ``model.json`` / ``run.json`` (already
    verified by the loader). ``run`` None or ``"none"``: only ``default_name``."""
    out: dict[str, Any] = {}
    if run is None or str(run).lower() in ("none", "cues") and not Path(str(run)).is_dir():
        out["name"] = default_name or "training-free"
        return out
    folder = Path(run)
    meta = _read_json(folder / "model.json")
    files = dict(_read_json(folder / "run.json").get("files") or {})
    out["name"] = str(meta.get("name") or meta.get("method") or default_name or "")
    out["run"] = folder.resolve().name
    sha = meta.get("weights_sha256") or next(
        (files[k] for k in ("model.safetensors", "combiner.safetensors") if k in files), None)
    if sha:
        out["sha256"] = str(sha)
    if integrity:
        out["run_integrity"] = integrity
    return {k: v for k, v in out.items() if v}
