"""The private coding scheme of medforensics' DICOM results (designator ``99MEDFOR``).

DICOM has no standard concept for "this image was manipulated", "the pixels name another
device than the header" or "copy-move partner", so the SR and SEG objects written by
:mod:`medforensics.pacs.sr` and :mod:`medforensics.pacs.seg` use this private scheme for
them. Standard codes are used where one means exactly what is said (DCM "Source of
Measurement", "Algorithm Name", "Algorithm Version"; UCUM units). A designator starting
with ``99`` is reserved by DICOM (PS3.16, section 8) for private schemes; every object that
uses it declares it in its Coding Scheme Identification Sequence
(:func:`coding_scheme_identification`).

The table :data:`CODES` is the single source of truth; docs/dicom.md lists every entry
(a test keeps the two in step). Code values never change meaning: a new concept gets a new
value, and :data:`SCHEME_VERSION` goes up when concepts are added.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

__all__ = [
    "CODES",
    "COPY_ROLES",
    "FORGERY_VERDICTS",
    "IDENTIFY_VERDICTS",
    "SCHEME",
    "SCHEME_NAME",
    "SCHEME_VERSION",
    "code",
    "coding_scheme_identification",
    "dcm",
    "ucum",
]

#: coding scheme designator of the private scheme
SCHEME = "99MEDFOR"
#: its human name (Coding Scheme Name)
SCHEME_NAME = "medforensics image forensics concepts"
#: its version (Coding Scheme Version); raised when concepts are added
SCHEME_VERSION = "1"
#: who is responsible for the scheme (Coding Scheme Responsible Organization)
SCHEME_OWNER = "medforensics developers"

#: keyword -> (code value, code meaning); meanings are at most 64 characters (VR LO)
CODES: dict[str, tuple[str, str]] = {
    # document and sections
    "report": ("MF0001", "Image forensics report"),
    "source_section": ("MF0002", "Source device identification"),
    "forgery_section": ("MF0003", "Forgery detection"),
    "flagged_area": ("MF0004", "Flagged area"),
    "software": ("MF0005", "Analysis software"),
    # source device identification
    "source_verdict": ("MF0101", "Source device verdict"),
    "named_device": ("MF0102", "Named device"),
    "header_claim": ("MF0103", "Header device claim"),
    "nearest_class": ("MF0104", "Nearest device class"),
    "nearest_probability": ("MF0105", "Nearest class probability"),
    "openset_score": ("MF0106", "Open-set score"),
    "openset_threshold": ("MF0107", "Open-set threshold"),
    "feature_distance": ("MF0108", "Feature distance"),
    "feature_threshold": ("MF0109", "Feature distance threshold"),
    "class_probability": ("MF0110", "Device class probability"),
    "device_class": ("MF0111", "Device class"),
    "verdict_statement": ("MF0112", "Verdict statement"),
    "label_level": ("MF0113", "Device label level"),
    "matched_unit": ("MF0114", "Matched unit"),
    "unit_pce": ("MF0115", "Unit pattern peak-to-correlation energy"),
    "header_unit": ("MF0116", "Header unit claim"),
    "named_by": ("MF0117", "Device named by"),
    "informative_windows": ("MF0118", "Informative windows"),
    "model_knowledge": ("MF0119", "Model knowledge"),
    "network_features_distance": ("MF0120", "Network features distance"),
    "noise_shape_distance": ("MF0121", "Noise shape distance"),
    # source verdict values (identify's verdicts)
    "consistent": ("MF0150", "Pixels consistent with header device"),
    "mismatch": ("MF0151", "Pixels name another device than header"),
    "unknown": ("MF0152", "Unknown device"),
    "claim_not_in_model": ("MF0153", "Header device not known to model"),
    "no_header_claim": ("MF0154", "No header device claim"),
    "insufficient_evidence": ("MF0155", "Insufficient evidence"),
    "unreadable": ("MF0156", "Unreadable image"),
    # forgery detection
    "forgery_verdict": ("MF0201", "Forgery verdict"),
    "forgery_score": ("MF0202", "Forgery score"),
    "forgery_threshold": ("MF0203", "Forgery score threshold"),
    "forged_area": ("MF0204", "Forged area"),
    "readable_share": ("MF0205", "Readable image share"),
    "ela_score": ("MF0206", "Error level analysis score"),
    "inconclusive_reason": ("MF0207", "Inconclusive reason"),
    "method": ("MF0208", "Detection method"),
    "probability_map": ("MF0209", "Forgery probability map"),
    "area_outline": ("MF0210", "Area outline"),
    "mean_probability": ("MF0211", "Mean forgery probability"),
    "flagging_cue": ("MF0212", "Flagging cue"),
    "partner_outline": ("MF0213", "Copy-move partner outline"),
    "copy_role": ("MF0214", "Copy-move role"),
    "copy_transform": ("MF0215", "Copy-move transform"),
    "direction_evidence": ("MF0216", "Copy-move direction evidence"),
    "note": ("MF0217", "Analysis note"),
    "map_threshold": ("MF0218", "Map threshold"),
    "area_share": ("MF0219", "Area share of image"),
    # forgery verdict values
    "tampered": ("MF0250", "Manipulated image"),
    "authentic": ("MF0251", "No evidence of manipulation"),
    "inconclusive": ("MF0252", "Forgery analysis inconclusive"),
    # copy-move roles
    "pasted_copy": ("MF0260", "Pasted copy"),
    "copy_source": ("MF0261", "Copy source"),
    "role_undetermined": ("MF0262", "Copy direction undetermined"),
    # segmentation
    "seg_category": ("MF0270", "Image forensics finding"),
    "seg_type": ("MF0271", "Suspected manipulated region"),
    # software and model identity
    "weights_sha256": ("MF0301", "Model weights SHA-256"),
    "run_integrity": ("MF0302", "Model run integrity"),
    "model_run": ("MF0303", "Model run"),
    "model_name": ("MF0304", "Model architecture"),
}

#: ``identify`` verdict -> keyword of its code
IDENTIFY_VERDICTS: dict[str, str] = {
    "consistent": "consistent",
    "MISMATCH": "mismatch",
    "UNKNOWN": "unknown",
    "claim-not-in-model": "claim_not_in_model",
    "no-header-claim": "no_header_claim",
    "insufficient-evidence": "insufficient_evidence",
    "unreadable": "unreadable",
}

#: ``forgery detect`` verdict -> keyword of its code
FORGERY_VERDICTS: dict[str, str] = {
    "tampered": "tampered",
    "authentic": "authentic",
    "inconclusive": "inconclusive",
}

#: copy-move ``role`` of a flagged area -> keyword of its code
COPY_ROLES: dict[str, str] = {
    "pasted copy": "pasted_copy",
    "source": "copy_source",
    "undetermined": "role_undetermined",
}


def code(keyword: str) -> Code:
    """The private :class:`~pydicom.sr.coding.Code` of ``keyword`` (a key of :data:`CODES`).

    Raises:
        KeyError: unknown keyword (a programming error, not a user error).
    """
    value, meaning = CODES[keyword]
    return Code(value, SCHEME, meaning, SCHEME_VERSION)


def dcm(value: str, meaning: str) -> Code:
    """A code of the DICOM Controlled Terminology (``DCM``)."""
    return Code(value, "DCM", meaning)


def ucum(value: str, meaning: str) -> Code:
    """A UCUM unit code."""
    return Code(value, "UCUM", meaning)


def coding_scheme_identification() -> list[Dataset]:
    """Items of the Coding Scheme Identification Sequence (0008,0110) that declare
    :data:`SCHEME` in an object using it (PS3.3 C.12.1.1.2)."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeVersion = SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = SCHEME_OWNER
    return [item]
