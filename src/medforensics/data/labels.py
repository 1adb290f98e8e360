"""Normalised device labels: ``manufacturer``, ``model`` and ``unit``.

DICOM headers spell the same vendor many ways ("GE MEDICAL SYSTEMS", "GE Healthcare",
"FUJI PHOTO FILM CO. LTD.", "Fuji Photo Film Co.,Ltd.", "FUJIFILM Corporation", ...). A source
identification class must be one device (family), not one spelling, so the manifest carries
three normalised label columns:

* ``manufacturer``: the vendor with spelling variants merged. The value is casefolded,
  punctuation is removed, legal-form and generic suffixes ("Inc", "Co", "Ltd", "GmbH", "AG",
  "Corporation", "Medical Systems", "Healthcare", ...) are stripped, and the result is looked
  up in a small alias table (:data:`MANUFACTURER_ALIASES`). Unknown vendors pass through
  cleaned (suffixes stripped, each word capitalised; words of up to three letters and words
  containing digits are upper-cased, so "ACME Imaging" and "acme imaging" both give
  "Acme Imaging").
* ``model``: ``"<manufacturer> <model name>"`` so a model name is unique across vendors. The
  model name is cleaned (whitespace collapsed, a trailing software version such as
  "VERSION ADS_54.10" dropped, the vendor name repeated at its start dropped).
* ``unit``: ``"<model> #<DeviceSerialNumber>"``, or ``"<model> #<StationName>"`` when there
  is no serial number: one physical machine (DeepMammo's seven classes are seven units of one
  model).

Missing values (documented decision): a label is the empty string when it cannot be formed,
and the ingest then marks the row ``missing-label`` only when *that* label column was chosen
as the class label. In detail:

* no manufacturer -> ``manufacturer`` is "", unless the model name belongs to a well-known
  vendor-specific product family (:data:`MODEL_FAMILY_VENDORS`, e.g. "Mammomat" -> Siemens,
  "Senographe" -> GE), in which case the vendor is inferred from it;
* blank model name -> ``model`` is "" (the row is missing-label for the ``model`` task, but
  still usable for the ``manufacturer`` task);
* ``unit`` needs a manufacturer and a serial number or station name; with a blank model name
  it uses ``"<manufacturer> (unknown model)"`` as its model part, so a unit stays
  identifiable by its serial number even when the model name was never written.

Mis-decoded non-Latin vendor strings that carry a Latin name in parentheses (e.g. a Cyrillic
vendor written as ``'ÇÀÎ "Ðåíòãåíïðîì" (JSC Rentgenprom)'``) are reduced to that Latin name.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

__all__ = [
    "MANUFACTURER_ALIASES",
    "MODEL_FAMILY_VENDORS",
    "UNKNOWN_MODEL",
    "clean_text",
    "normalize_manufacturer",
    "normalize_model_name",
    "model_label",
    "unit_label",
    "device_labels",
    "unify_case_variants",
]

UNKNOWN_MODEL = "(unknown model)"

#: Legal-form and generic words removed from the *end* of a casefolded vendor name, repeatedly
#: (longest phrases first). Removing them merges "Siemens AG", "Siemens Healthineers", ...
_VENDOR_SUFFIXES: tuple[str, ...] = (
    "medical systems",
    "medical system",
    "medical solutions",
    "medical imaging",
    "medical corporation",
    "health care",
    "healthcare",
    "healthineers",
    "medical",
    "systems",
    "incorporated",
    "inc",
    "corporation",
    "corp",
    "company",
    "co",
    "limited",
    "ltd",
    "gmbh",
    "ag",
    "llc",
    "plc",
    "sa",
    "spa",
    "bv",
    "nv",
    "kk",
    "oy",
    "ab",
)

#: Legal-form words removed from the *start* of a casefolded vendor name.
_VENDOR_PREFIXES: tuple[str, ...] = ("jsc", "ooo", "zao", "oao", "pjsc")

#: Cleaned, casefolded vendor key -> canonical manufacturer label.
MANUFACTURER_ALIASES: dict[str, str] = {
    "ge": "GE",
    "gems": "GE",
    "general electric": "GE",
    "ge medical": "GE",
    "siemens": "Siemens",
    "fuji": "Fujifilm",
    "fujifilm": "Fujifilm",
    "fuji film": "Fujifilm",
    "fuji photo film": "Fujifilm",
    "philips": "Philips",
    "koninklijke philips": "Philips",
    "kodak": "Kodak",
    "eastman kodak": "Kodak",
    "carestream": "Carestream",
    "carestream health": "Carestream",
    "canon": "Canon",
    "toshiba": "Toshiba",
    "hologic": "Hologic",
    "lorad": "Lorad",
    "agfa": "Agfa",
    "agfa gevaert": "Agfa",
    "konica minolta": "Konica Minolta",
    "konica": "Konica Minolta",
    "konicaminolta": "Konica Minolta",
    "genesis signa": "GE",
    "rentgenprom": "Rentgenprom",
    "planmed": "Planmed",
    "ims": "IMS",
    "ims giotto": "IMS",
    "giotto": "IMS",
    "sectra": "Sectra",
    "samsung": "Samsung",
    "samsung electronics": "Samsung",
    "shimadzu": "Shimadzu",
    "hitachi": "Hitachi",
    "swissray": "Swissray",
    "varian": "Varian",
    "varex": "Varex",
    "trixell": "Trixell",
    "vidar": "Vidar",
    "drgem": "DRGEM",
    "mindray": "Mindray",
    "instrumentarium": "Instrumentarium",
    "fischer": "Fischer",
    "icrco": "iCRco",
}

#: Vendor-specific product family (casefolded first word(s) of the model name) -> manufacturer,
#: used only when the Manufacturer attribute is blank.
MODEL_FAMILY_VENDORS: dict[str, str] = {
    "mammomat": "Siemens",
    "ysio": "Siemens",
    "luminos": "Siemens",
    "senographe": "GE",
    "pristina": "GE",
    "signa": "GE",
    "discovery": "GE",
    "selenia": "Hologic",
    "digitaldiagnost": "Philips",
    "mammodiagnost": "Philips",
    "aspire": "Fujifilm",
    "amulet": "Fujifilm",
}

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_SPACES = re.compile(r"\s+")
_PAREN_LATIN = re.compile(r"\(([\x20-\x7e]*[A-Za-z][\x20-\x7e]*)\)")
_VERSION_TAIL = re.compile(
    r"\s+(?:version|software|sw|ver)(?![0-9a-z])\.?\s*[:=]?\s*\S.*$", re.IGNORECASE
)


def clean_text(value: object) -> str:
    """Return a header value as clean single-line text.

    ``None`` gives ""; multi-valued elements are joined with a backslash; control characters
    are dropped, whitespace runs collapse to one space, NUL/space padding is stripped. A value
    that contains non-ASCII characters *and* a parenthesised Latin name (a vendor string in a
    non-Latin script, often mis-decoded) is reduced to that Latin name.

    Args:
        value: a DICOM element value (str, PersonName, MultiValue, bytes, number or None).

    Returns:
        The cleaned text, possibly "".
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        text = value.decode("latin-1", errors="replace")
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(clean_text(v) for v in value)  # type: ignore[union-attr]
    else:
        text = str(value)
    if text.isascii() and text.isprintable():  # fast path: the usual plain header value
        if "  " in text:
            text = _SPACES.sub(" ", text)
        return text.strip(" ")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = _SPACES.sub(" ", text).strip(" \x00")
    if text and not text.isascii():
        match = _PAREN_LATIN.search(text)
        if match:
            text = _SPACES.sub(" ", match.group(1)).strip()
    return text


def _vendor_key(text: str) -> str:
    """Casefold, drop punctuation and strip legal/generic prefixes and suffixes."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    words = _NON_ALNUM.sub(" ", folded).split()
    changed = True
    while changed and words:
        changed = False
        for suffix in _VENDOR_SUFFIXES:
            parts = suffix.split()
            if len(words) > len(parts) and words[-len(parts) :] == parts:
                words = words[: -len(parts)]
                changed = True
                break
        if words and len(words) > 1 and words[0] in _VENDOR_PREFIXES:
            words = words[1:]
            changed = True
    return " ".join(words)


def _display_words(key: str) -> str:
    """Deterministic display casing for a vendor key not in the alias table."""
    out = []
    for word in key.split():
        if len(word) <= 3 or any(ch.isdigit() for ch in word):
            out.append(word.upper())
        else:
            out.append(word.capitalize())
    return " ".join(out)


def normalize_manufacturer(value: object) -> str:
    """Merge the spelling variants of a vendor name.

    Examples: "GE MEDICAL SYSTEMS", "GE Healthcare" -> "GE"; "SIEMENS", "Siemens Healthineers"
    -> "Siemens"; "FUJI PHOTO FILM CO. LTD.", "FUJIFILM Corporation" -> "Fujifilm";
    "HOLOGIC, Inc." -> "Hologic"; "Canon Inc." -> "Canon"; unknown vendors pass through
    cleaned ("ACME Imaging GmbH" and "acme imaging" -> "Acme Imaging").

    Args:
        value: the raw Manufacturer (0008,0070) value, or None.

    Returns:
        The canonical vendor label, or "" when the value is blank.
    """
    key = _vendor_key(clean_text(value))
    if not key:
        return ""
    if key in MANUFACTURER_ALIASES:
        return MANUFACTURER_ALIASES[key]
    first = key.split()[0]
    # "GE OEC", "Philips Research" ...: a known vendor's first word followed by a division name
    # stays that vendor only for the unambiguous single-token brands.
    if first in {"ge", "siemens", "philips", "fujifilm", "hologic", "agfa", "kodak", "canon"}:
        return MANUFACTURER_ALIASES[first]
    return _display_words(key)


def normalize_model_name(value: object, manufacturer: str = "") -> str:
    """Clean a ManufacturerModelName value.

    Whitespace is collapsed, a trailing software version ("Senographe Essential VERSION
    ADS_54.10" -> "Senographe Essential") is dropped, and the vendor name repeated at the start
    ("GE Senographe DS" with manufacturer "GE") is removed.

    Args:
        value: the raw ManufacturerModelName (0008,1090) value, or None.
        manufacturer: the normalised manufacturer label (may be "").

    Returns:
        The cleaned model name, or "".
    """
    text = clean_text(value)
    text = _VERSION_TAIL.sub("", text).strip(" -_/,;")
    if manufacturer and text:
        if text.casefold().startswith(manufacturer.casefold() + " "):
            text = text[len(manufacturer) + 1 :].strip()
        elif text.casefold() == manufacturer.casefold():
            text = ""
    return text


def _infer_vendor_from_model(model_name: str) -> str:
    words = _NON_ALNUM.sub(" ", model_name.casefold()).split()
    for n in (2, 1):
        key = "".join(words[:n])
        if len(words) >= n and key in MODEL_FAMILY_VENDORS:
            return MODEL_FAMILY_VENDORS[key]
    return ""


def model_label(manufacturer: str, model_name: str) -> str:
    """``"<manufacturer> <model name>"``, or "" when either part is blank."""
    if not manufacturer or not model_name:
        return ""
    return f"{manufacturer} {model_name}"


def unit_label(manufacturer: str, model_name: str, serial: object, station: object) -> str:
    """``"<model label> #<serial or station>"``; "" without manufacturer or identifier.

    A blank model name is written as ``"<manufacturer> (unknown model)"``.
    """
    ident = clean_text(serial) or clean_text(station)
    if not manufacturer or not ident:
        return ""
    model = model_label(manufacturer, model_name) or f"{manufacturer} {UNKNOWN_MODEL}"
    return f"{model} #{ident}"


def device_labels(
    manufacturer: object, model_name: object, serial: object = None, station: object = None
) -> dict[str, str]:
    """All three normalised labels from raw header values.

    Args:
        manufacturer: raw Manufacturer value.
        model_name: raw ManufacturerModelName value.
        serial: raw DeviceSerialNumber value.
        station: raw StationName value.

    Returns:
        ``{"manufacturer": ..., "model": ..., "unit": ...}`` (each possibly "").
    """
    vendor = normalize_manufacturer(manufacturer)
    name = normalize_model_name(model_name, vendor)
    if not vendor and name:
        vendor = _infer_vendor_from_model(name)
        name = normalize_model_name(name, vendor)
    return {
        "manufacturer": vendor,
        "model": model_label(vendor, name),
        "unit": unit_label(vendor, name, serial, station),
    }


def unify_case_variants(values: Iterable[str]) -> dict[str, str]:
    """Map labels that differ only by letter case to one spelling.

    The most frequent spelling wins; ties go to the lexicographically smallest. Used by the
    ingest so that "GE SIGNA Profile EXCITE" and "GE Signa Profile Excite" are one class.

    Args:
        values: label values (blank values are ignored).

    Returns:
        A mapping from every spelling seen to its canonical spelling.
    """
    counts = Counter(v for v in values if v)
    groups: dict[str, list[str]] = {}
    for spelling in counts:
        groups.setdefault(spelling.casefold(), []).append(spelling)
    mapping: dict[str, str] = {}
    for spellings in groups.values():
        best = min(spellings, key=lambda s: (-counts[s], s))
        for s in spellings:
            mapping[s] = best
    return mapping
