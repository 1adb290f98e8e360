"""Tests for medforensics.data.labels (device label normalisation)."""

from __future__ import annotations

import pytest

from medforensics.data.labels import (
    clean_text,
    device_labels,
    normalize_manufacturer,
    normalize_model_name,
    unify_case_variants,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GE MEDICAL SYSTEMS", "GE"),
        ("GE Medical Systems", "GE"),
        ("GE Healthcare", "GE"),
        ("GENESIS_SIGNA", "GE"),
        ("SIEMENS", "Siemens"),
        ("Siemens Healthineers", "Siemens"),
        ("Siemens AG", "Siemens"),
        ("Siemens Medical Solutions USA, Inc.", "Siemens"),
        ("FUJIFILM Corporation", "Fujifilm"),
        ("FUJI PHOTO FILM", "Fujifilm"),
        ("Fuji Photo Film", "Fujifilm"),
        ("Fuji Photo Film Co.,Ltd.", "Fujifilm"),
        ("FUJI PHOTO FILM CO. LTD.", "Fujifilm"),
        ("Philips Medical Systems", "Philips"),
        ("KODAK", "Kodak"),
        ("Carestream Health", "Carestream"),
        ("Canon Inc.", "Canon"),
        ("Canon Medical Systems Corporation", "Canon"),
        ("JSC Rentgenprom", "Rentgenprom"),
        ('ÇÀÎ "Ðåíòãåíïðîì" (JSC Rentgenprom)', "Rentgenprom"),
        ('ЗАО "Рентгенпром" (JSC Rentgenprom)', "Rentgenprom"),
        ("HOLOGIC, Inc.", "Hologic"),
        ("Agfa-Gevaert AG", "Agfa"),
        ("Konica Minolta, Inc.", "Konica Minolta"),
        ("  ACME   Imaging GmbH ", "Acme Imaging"),
        ("acme imaging", "Acme Imaging"),
        ("FO-DICOM", "FO Dicom"),
        ("", ""),
        (None, ""),
        ("   ", ""),
    ],
)
def test_normalize_manufacturer(raw: object, expected: str) -> None:
    assert normalize_manufacturer(raw) == expected


def test_kodak_and_carestream_stay_separate() -> None:
    assert normalize_manufacturer("Eastman Kodak Company") == "Kodak"
    assert normalize_manufacturer("Carestream") == "Carestream"


def test_clean_text_handles_multivalue_and_control_chars() -> None:
    assert clean_text(["ORIGINAL", "PRIMARY"]) == "ORIGINAL\\PRIMARY"
    assert clean_text("a\tb\n  c\x00") == "a b c"
    assert clean_text(b"XY ") == "XY"
    assert clean_text(12) == "12"


@pytest.mark.parametrize(
    ("raw", "vendor", "expected"),
    [
        ("Senographe Essential VERSION ADS_54.10", "GE", "Senographe Essential"),
        ("Senographe Vertex", "GE", "Senographe Vertex"),  # "Ver..." inside a word stays
        ("CR500 ver. 2.1", "Kodak", "CR500"),
        ("GE Senographe DS", "GE", "Senographe DS"),
        ("  Selenia   Dimensions ", "Hologic", "Selenia Dimensions"),
        ("Hologic", "Hologic", ""),
        (None, "GE", ""),
    ],
)
def test_normalize_model_name(raw: object, vendor: str, expected: str) -> None:
    assert normalize_model_name(raw, vendor) == expected


def test_device_labels_full() -> None:
    labels = device_labels(
        "GE MEDICAL SYSTEMS", "Senographe Essential VERSION ADS_54.10", "10452020145105", "GESEN"
    )
    assert labels == {
        "manufacturer": "GE",
        "model": "GE Senographe Essential",
        "unit": "GE Senographe Essential #10452020145105",
    }


def test_unit_falls_back_to_station_name() -> None:
    labels = device_labels("HOLOGIC, Inc.", "Selenia Dimensions", "", "MAMMO-ROOM-3")
    assert labels["unit"] == "Hologic Selenia Dimensions #MAMMO-ROOM-3"


def test_blank_model_name_gives_blank_model_but_keeps_unit() -> None:
    labels = device_labels("Canon Inc.", "", "61758", "")
    assert labels == {"manufacturer": "Canon", "model": "", "unit": "Canon (unknown model) #61758"}


def test_no_identifier_gives_blank_unit() -> None:
    assert device_labels("KODAK", "CR500", None, None)["unit"] == ""


def test_vendor_inferred_from_product_family_only_when_blank() -> None:
    assert device_labels(None, "Mammomat Inspiration", "2608")["model"] == (
        "Siemens Mammomat Inspiration"
    )
    assert device_labels("", "Unknown Box 9")["manufacturer"] == ""
    assert device_labels("", "Unknown Box 9")["model"] == ""
    # an explicit vendor is never overridden by the family table
    assert device_labels("Acme", "Mammomat clone")["manufacturer"] == "Acme"


def test_model_label_unique_across_vendors() -> None:
    a = device_labels("Vendor One", "X100")["model"]
    b = device_labels("Vendor Two", "X100")["model"]
    assert a != b


def test_unify_case_variants_prefers_most_frequent_then_smallest() -> None:
    values = ["GE Signa", "GE SIGNA", "GE SIGNA", "Kodak CR500", "", "kodak cr500"]
    mapping = unify_case_variants(values)
    assert mapping["GE Signa"] == "GE SIGNA"
    assert mapping["GE SIGNA"] == "GE SIGNA"
    assert mapping["kodak cr500"] == mapping["Kodak CR500"] == "Kodak CR500"
    assert "" not in mapping
