"""End to end against a real PACS (Orthanc + DICOMweb): upload simulated images with STOW-RS,
run ``pacs scan --store`` through the command line, query the SR and SEG back with QIDO-RS /
WADO-RS and compare them with the files ``--dicom-out`` writes. Skips without Orthanc."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

from _helpers import one_torch_thread  # noqa: F401 - fixture
from _orthanc import orthanc  # noqa: F401 - fixture
from fixtures_service import service_archive, source_run  # noqa: F401 - fixtures
from typer.testing import CliRunner

from medforensics.cli import app
from medforensics.pacs.dicomweb import PacsClient
from medforensics.pacs.seg import seg_mask
from medforensics.pacs.sr import report_summary

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _pick(paths: list[Path], n: int = 3) -> list[Path]:
    """One image of each device first, then more (the archive alternates little)."""
    by_model: dict[str, Path] = {}
    for p in paths:
        by_model.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True)
                                .ManufacturerModelName), p)
    chosen = list(by_model.values())[:n]
    return chosen + [p for p in paths if p not in chosen][: n - len(chosen)]


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.output


def test_scan_stores_results_a_pacs_serves(orthanc, service_archive, tmp_path):
    images = _pick(service_archive.paths)
    client = PacsClient(orthanc.dicomweb, user=orthanc.user, password=orthanc.password)
    up = client.store([pydicom.dcmread(p) for p in images])
    assert len(up.stored) == len(images) and not up.failed
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
               for p in images}

    # local results first: the same analyses on the files, written with --dicom-out
    local = tmp_path / "local"
    code, out = _invoke(["forgery", "detect", "none", *map(str, images), "--json",
                         "--dicom-out", str(local)])
    assert code == 0, out
    code, out = _invoke(["identify", str(service_archive.run), *map(str, images), "--json",
                         "--dicom-out", str(local)])
    assert code == 0, out
    assert len(list(local.glob("*_forgery_seg.dcm"))) == len(images)
    assert len(list(local.glob("*_identify_sr.dcm"))) == len(images)

    auth = ["--user", orthanc.user, "--password", orthanc.password]
    state = tmp_path / "state.jsonl"
    code, out = _invoke(["pacs", "scan", orthanc.dicomweb, "--source-run",
                         str(service_archive.run), "--forgery", "none", "--store", "--json",
                         "--state", str(state), "--out", str(tmp_path / "scan"), *auth])
    assert code == 0, out
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert {ln["sop"] for ln in lines if ln["status"] == "done"} == set(sources)
    assert all(ln["stored"] for ln in lines if ln["status"] == "done")

    # query the results back from the PACS
    found = list(client.search())
    results = [r for r in found if r.sop_class in (SR_CLASS, SEG_CLASS)]
    assert len(results) == 2 * len(images)
    srs = [client.retrieve(r) for r in results if r.sop_class == SR_CLASS]
    segs = {str(d.SOPInstanceUID): d for d in
            (client.retrieve(r) for r in results if r.sop_class == SEG_CLASS)}
    for sr in srs:
        summ = report_summary(sr)
        sop = summ["source"][1]
        assert sop in sources
        src = pydicom.dcmread(sources[sop], stop_before_pixels=True)
        assert sr.StudyInstanceUID == src.StudyInstanceUID
        assert summ["identify_verdict"] and summ["forgery_verdict"]
        seg = segs[summ["seg"]]
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == src.SeriesInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == sop
        assert (seg.Rows, seg.Columns) == (src.Rows, src.Columns)
        # the map in the PACS is the map --dicom-out wrote from the file
        written = pydicom.dcmread(local / f"{sop}_forgery_seg.dcm")
        np.testing.assert_array_equal(seg_mask(seg), seg_mask(written))
        assert report_summary(pydicom.dcmread(local / f"{sop}_forgery_sr.dcm"))[
            "forgery_verdict"] == summ["forgery_verdict"]
        assert report_summary(pydicom.dcmread(local / f"{sop}_identify_sr.dcm"))[
            "identify_verdict"] == summ["identify_verdict"]

    # a re-run with the state file analyses nothing and stores nothing new
    code, out = _invoke(["pacs", "scan", orthanc.dicomweb, "--source-run",
                         str(service_archive.run), "--forgery", "none", "--store",
                         "--state", str(state), *auth])
    assert code == 0, out
    assert "0 analysed" in out and f"{len(images)} finished earlier" in out
    assert len(list(client.search())) == len(found)


def test_scan_errors_are_clear(orthanc, tmp_path):
    code, out = _invoke(["pacs", "scan", orthanc.dicomweb, "--forgery", "none",
                         "--user", orthanc.user, "--password", "wrong"])
    assert code == 2 and "HTTP 401" in out and "--user/--password" in out
    code, out = _invoke(["pacs", "scan", orthanc.dicomweb, "--forgery", "none"])
    assert code == 2 and "HTTP 401" in out
    base = orthanc.url
    code, out = _invoke(["pacs", "scan", base + "/no-such-root", "--forgery", "none",
                         "--user", orthanc.user, "--password", orthanc.password])
    assert code == 2 and "HTTP 404" in out
    code, out = _invoke(["pacs", "scan", "http://127.0.0.1:9/dicom-web", "--forgery", "none",
                         "--timeout", "2"])
    assert code == 2 and "no answer" in out
    code, out = _invoke(["pacs", "scan", orthanc.dicomweb, "--user", orthanc.user,
                         "--password", orthanc.password])
    assert code == 2 and "nothing to analyse" in out
