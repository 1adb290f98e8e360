"""Comprehensive SR documents holding identify and forgery results (highdicom).

One SR document per analysed image. Its content tree (concepts of :mod:`.codes`; tree and
codes in docs/dicom.md)::

    CONTAINER  Image forensics report                          (99MEDFOR MF0001)
      IMAGE      Source of Measurement -> the analysed image    (DCM 121112)
      CONTAINER  Analysis software: Algorithm Name / Version, model architecture, run,
                 weights SHA-256, run integrity
      CONTAINER  Source device identification  (when an identify result is given)
        CODE       Source device verdict = consistent / MISMATCH / UNKNOWN / ...
        TEXT       Named device (the device, or "UNKNOWN" when nothing is named)
        TEXT       Header device claim, Nearest device class, Verdict statement, ...
        NUM        Nearest class probability, Open-set score / threshold, feature
                   distance / threshold, Device class probability (per top class)
        TEXT/NUM   Matched unit, Unit pattern PCE, Header unit claim
      CONTAINER  Forgery detection             (when a forgery result is given)
        CODE       Forgery verdict = Manipulated image / No evidence / inconclusive
        NUM        Forgery score, threshold, Forged area (%), Readable image share (%), ...
        IMAGE      Forgery probability map -> the SEG (segment 1), when one was written
        CONTAINER  Flagged area (one per area): SCOORD outline on the image, NUM share,
                   mean probability, TEXT cue; for a copy-move: partner outline, role
                   (pasted copy / copy source / undetermined), transform, evidence

Each section names the model behind it (architecture, run, weights SHA-256, run
integrity) from the result's ``model`` entry. Results come as the JSON-able dicts that ``medforensics identify --json`` and
``medforensics forgery detect --json`` print (``Verdict.to_dict()`` merged with its
``extra``; ``FileResult.to_dict()``), so this module needs neither the models nor torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from medforensics.pacs import codes as C
from medforensics.pacs.common import (
    Producer,
    derived_uid,
    model_fingerprint,
    require,
    source_header,
)
from medforensics.pacs.errors import DicomBuildError
from medforensics.source.openset import OPENSET_BLOCKS

__all__ = ["SR_SERIES_NUMBER", "build_report", "report_summary"]

#: Series Number of the SR documents (results sort after the images in a viewer)
SR_SERIES_NUMBER = 9901
#: the unit of probabilities and scores
_NO_UNITS = C.ucum("1", "no units")
_PERCENT = C.ucum("%", "Percent")
_PCE = C.ucum("1", "no units")
#: largest number of flagged areas and top classes written (the JSON keeps all)
MAX_AREAS = 20
MAX_TOP = 10


def _num(v: Any) -> float | None:
    """A finite float, or None (None, NaN, infinities, non-numbers)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class _Tree:
    """Small builder of highdicom content items (CONTAINS children of one container)."""

    def __init__(self, hd: Any) -> None:
        self.hd = hd
        self.sr = hd.sr

    def container(self, name: Code, children: Iterable[Any], rel: str | None = "CONTAINS"
                  ) -> Any:
        item = self.sr.ContainerContentItem(name=name, is_content_continuous=False,
                                            relationship_type=rel)
        kids = [c for c in children if c is not None]
        if kids:
            item.ContentSequence = self.sr.ContentSequence(kids)
        return item

    def text(self, name: Code, value: Any, rel: str = "CONTAINS") -> Any:
        if value is None or str(value).strip() == "":
            return None
        return self.sr.TextContentItem(name=name, value=str(value), relationship_type=rel)

    def code(self, name: Code, value: Code, rel: str = "CONTAINS") -> Any:
        return self.sr.CodeContentItem(name=name, value=value, relationship_type=rel)

    def num(self, name: Code, value: Any, unit: Code = _NO_UNITS, rel: str = "CONTAINS",
            children: Sequence[Any] = ()) -> Any:
        f = _num(value)
        if f is None:
            return None
        item = self.sr.NumContentItem(name=name, value=f, unit=unit, relationship_type=rel)
        kids = [c for c in children if c is not None]
        if kids:
            item.ContentSequence = self.sr.ContentSequence(kids)
        return item

    def image(self, name: Code, ref: Dataset, rel: str = "CONTAINS",
              segment: int | None = None) -> Any:
        return self.sr.ImageContentItem(
            name=name, referenced_sop_class_uid=ref.SOPClassUID,
            referenced_sop_instance_uid=ref.SOPInstanceUID,
            referenced_segment_numbers=segment, relationship_type=rel)

    def box(self, name: Code, bbox: Sequence[Any], ref: Dataset) -> Any:
        """A closed POLYLINE rectangle (pixel edges) on ``ref``, or None for a bad box."""
        import numpy as np

        try:
            x0, y0, x1, y1 = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            return None
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
        item = self.sr.ScoordContentItem(name=name, graphic_type="POLYLINE",
                                         graphic_data=pts, relationship_type="CONTAINS")
        item.ContentSequence = self.sr.ContentSequence(
            [self.image(C.dcm("111040", "Original Source"), ref, rel="SELECTED FROM")])
        return item


def _software(t: _Tree, producer: Producer) -> Any:
    return t.container(C.code("software"), [
        t.text(C.dcm("111001", "Algorithm Name"), producer.software),
        t.text(C.dcm("111003", "Algorithm Version"), producer.resolved_version()),
    ])


def _model(t: _Tree, model: Mapping[str, Any] | None) -> list[Any]:
    """The items naming the model behind one result (its ``model`` entry)."""
    m = model or {}
    return [
        t.text(C.code("model_name"), m.get("name")),
        t.text(C.code("model_run"), m.get("run")),
        t.text(C.code("weights_sha256"), m.get("sha256")),
        t.text(C.code("run_integrity"), m.get("run_integrity")),
    ]


def _identify_section(t: _Tree, res: Mapping[str, Any]) -> Any:
    verdict = str(res.get("verdict", ""))
    key = C.IDENTIFY_VERDICTS.get(verdict)
    if key is None:
        raise DicomBuildError(f"unknown identify verdict {verdict!r} (expected one of "
                              f"{', '.join(C.IDENTIFY_VERDICTS)})")
    named = res.get("named")
    parts = res.get("distance_parts") or {}
    top = []
    for entry in list(res.get("top") or [])[:MAX_TOP]:
        label = entry.get("label") if isinstance(entry, Mapping) else entry[0]
        prob = entry.get("probability") if isinstance(entry, Mapping) else entry[1]
        top.append(t.num(C.code("class_probability"), prob, children=[
            t.text(C.code("device_class"), label, rel="HAS CONCEPT MOD")]))
    return t.container(C.code("source_section"), [
        t.code(C.code("source_verdict"), C.code(key)),
        t.text(C.code("named_device"), named if named else "UNKNOWN"),
        t.text(C.code("named_by"), res.get("named_by")),
        t.text(C.code("label_level"), res.get("level")),
        t.text(C.code("header_claim"), res.get("header_claim")),
        t.text(C.code("nearest_class"), res.get("predicted")),
        t.num(C.code("nearest_probability"), res.get("probability")),
        t.num(C.code("openset_score"), res.get("score")),
        t.num(C.code("openset_threshold"), res.get("unknown_threshold")),
        t.num(C.code("feature_distance"), res.get("feature_distance")),
        *(t.num(C.code(key), parts.get(block)) for key, block in zip(
            ("network_features_distance", "noise_shape_distance"), OPENSET_BLOCKS)),
        t.num(C.code("feature_threshold"), res.get("feature_threshold")),
        t.num(C.code("informative_windows"), res.get("informative_windows")),
        *top,
        t.text(C.code("matched_unit"), (res.get("unit") or "none") if "unit" in res else None),
        t.num(C.code("unit_pce"), res.get("unit_score"), unit=_PCE),
        t.text(C.code("header_unit"), res.get("unit_claim")),
        t.text(C.code("model_knowledge"), res.get("model_knowledge")),
        t.text(C.code("verdict_statement"), res.get("message")),
        *_model(t, res.get("model")),
    ])


def _area(t: _Tree, reg: Mapping[str, Any], ref: Dataset) -> Any:
    cp = reg.get("copy_of") or None
    role_key = None
    if cp:
        role_key = C.COPY_ROLES.get(str(cp.get("role") or "undetermined"),
                                    "role_undetermined")
    return t.container(C.code("flagged_area"), [
        t.box(C.code("area_outline"), reg.get("bbox") or (), ref),
        t.num(C.code("area_share"), reg.get("area_percent"), unit=_PERCENT),
        t.num(C.code("mean_probability"), reg.get("mean_prob")),
        t.text(C.code("flagging_cue"), reg.get("cue")),
        t.box(C.code("partner_outline"), cp.get("partner_bbox") or (), ref) if cp else None,
        t.code(C.code("copy_role"), C.code(role_key)) if role_key else None,
        t.text(C.code("copy_transform"), cp.get("transform")) if cp else None,
        t.text(C.code("direction_evidence"), cp.get("evidence")) if cp else None,
    ])


def _forgery_section(t: _Tree, res: Mapping[str, Any], ref: Dataset,
                     seg: Dataset | None) -> Any:
    verdict = str(res.get("verdict", ""))
    key = C.FORGERY_VERDICTS.get(verdict)
    if key is None:
        raise DicomBuildError(f"unknown forgery verdict {verdict!r} (expected one of "
                              f"{', '.join(C.FORGERY_VERDICTS)})")
    cov = _num(res.get("covered_fraction"))
    areas = [_area(t, r, ref) for r in list(res.get("regions") or [])[:MAX_AREAS]]
    return t.container(C.code("forgery_section"), [
        t.code(C.code("forgery_verdict"), C.code(key)),
        t.num(C.code("forgery_score"), res.get("score")),
        t.num(C.code("forgery_threshold"), res.get("threshold")),
        t.num(C.code("forged_area"), res.get("forged_area_percent"), unit=_PERCENT),
        t.num(C.code("map_threshold"), res.get("map_threshold")),
        t.num(C.code("readable_share"), None if cov is None else 100.0 * cov, unit=_PERCENT),
        t.num(C.code("ela_score"), res.get("ela_score"), unit=_PERCENT),
        t.text(C.code("inconclusive_reason"), res.get("inconclusive_reason")),
        t.text(C.code("method"), res.get("method")),
        *_model(t, res.get("model")),
        t.image(C.code("probability_map"), seg, segment=1) if seg is not None else None,
        *areas,
        *(t.text(C.code("note"), n) for n in list(res.get("notes") or [])[:MAX_AREAS]),
    ])


def build_report(
    source: Dataset | str,
    *,
    identify: Mapping[str, Any] | None = None,
    forgery: Mapping[str, Any] | None = None,
    seg: Dataset | None = None,
    producer: Producer | None = None,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> Any:
    """One Comprehensive SR document with the results of one analysed image.

    Args:
        source: the analysed image's data set (pixels not needed) or DICOM file.
        identify: an ``identify`` result (``Verdict.to_dict()`` merged with its extra).
        forgery: a ``forgery detect`` result (``FileResult.to_dict()`` of a done file).
        seg: the Segmentation written for ``forgery`` (:func:`medforensics.pacs.seg.build_seg`);
            the SR then references its segment 1 and lists it as evidence.
        producer: the software (name, version, institution).
        sop_instance_uid: this document's UID (default: derived from the source instance,
            the sections present, the software and the results' models, so the same
            analysis gives the same UID).
        series_instance_uid: its series (default: derived from the study, the software and
            the models: one result series per study and model).

    Each result may carry a ``model`` entry (``name``, ``run``, ``sha256`` of the weights,
    ``run_integrity``), written into its section and used for the UIDs.

    Returns:
        a ``highdicom.sr.ComprehensiveSR`` (a ``pydicom.Dataset``).

    Raises:
        DicomBuildError: neither result given, an unknown verdict, an unreferenceable
            source, or a forgery result that is an error record.
        MissingDicomExtraError: highdicom is not installed.
    """
    if identify is None and forgery is None:
        raise DicomBuildError("nothing to report: give an identify and/or a forgery result")
    if forgery is not None and forgery.get("status") == "error":
        raise DicomBuildError(f"the forgery analysis failed ({forgery.get('reason')}): "
                              "no result to report")
    hd = require("highdicom")
    require("highdicom.coding_schemes")
    producer = producer or Producer()
    ref = source_header(source)
    t = _Tree(hd)
    kinds = "+".join(k for k, v in (("identify", identify), ("forgery", forgery)) if v)
    content = t.container(C.code("report"), [
        t.image(C.dcm("121112", "Source of Measurement"), ref),
        _software(t, producer),
        _identify_section(t, identify) if identify is not None else None,
        _forgery_section(t, forgery, ref, seg) if forgery is not None else None,
    ], rel=None)
    evidence = [ref] + ([source_header(seg)] if seg is not None else [])
    fp = model_fingerprint(producer, (identify or {}).get("model"),
                           (forgery or {}).get("model"))
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=content,
        series_instance_uid=series_instance_uid
        or derived_uid(ref.StudyInstanceUID, "sr-series", fp),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid
        or derived_uid(ref.SOPInstanceUID, "sr", kinds, fp),
        instance_number=int(ref.get("InstanceNumber") or 1),
        manufacturer=producer.software,
        is_complete=True,
        institution_name=producer.institution,
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=C.SCHEME, name=C.SCHEME_NAME, version=C.SCHEME_VERSION,
            responsible_organization=C.SCHEME_OWNER)],
        series_description="medforensics results",
    )
    sr.ManufacturerModelName = producer.software
    sr.SoftwareVersions = producer.resolved_version()
    return sr


def _find(items: Iterable[Dataset], value: str) -> list[Dataset]:
    return [i for i in items
            if i.get("ConceptNameCodeSequence") and
            i.ConceptNameCodeSequence[0].CodeValue == value]


def report_summary(ds: Dataset) -> dict[str, Any]:
    """The main values of an SR written by :func:`build_report`, read back (for tests, tools
    and people checking what a PACS holds).

    Returns:
        ``{"source": (SOPClassUID, SOPInstanceUID), "identify_verdict": code meaning or
        None, "named_device": str or None, "forgery_verdict": ..., "forgery_score": float
        or None, "forged_area_percent": ..., "seg": SOP Instance UID of the referenced SEG or
        None, "areas": number of flagged areas}``.
    """
    root = list(ds.get("ContentSequence") or [])

    def ref(items: list[Dataset]) -> tuple[str, str] | None:
        if not items:
            return None
        r = items[0].ReferencedSOPSequence[0]
        return str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID)

    def value(items: list[Dataset], code: str) -> Any:
        hit = _find(items, code)
        if not hit:
            return None
        it = hit[0]
        vt = it.ValueType
        if vt == "CODE":
            return str(it.ConceptCodeSequence[0].CodeMeaning)
        if vt == "TEXT":
            return str(it.TextValue)
        if vt == "NUM":
            return float(it.MeasuredValueSequence[0].NumericValue)
        return None

    out: dict[str, Any] = {"source": ref(_find(root, "121112"))}
    src = _find(root, C.CODES["source_section"][0])
    fg = _find(root, C.CODES["forgery_section"][0])
    s_items = list(src[0].get("ContentSequence") or []) if src else []
    f_items = list(fg[0].get("ContentSequence") or []) if fg else []
    out["identify_verdict"] = value(s_items, C.CODES["source_verdict"][0])
    out["named_device"] = value(s_items, C.CODES["named_device"][0])
    out["forgery_verdict"] = value(f_items, C.CODES["forgery_verdict"][0])
    out["forgery_score"] = value(f_items, C.CODES["forgery_score"][0])
    out["forged_area_percent"] = value(f_items, C.CODES["forged_area"][0])
    seg = ref(_find(f_items, C.CODES["probability_map"][0]))
    out["seg"] = None if seg is None else seg[1]
    out["areas"] = len(_find(f_items, C.CODES["flagged_area"][0]))
    return out
