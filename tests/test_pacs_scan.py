"""``pacs scan`` logic against an in-memory PACS: streaming, non-image skips, reader skips,
failures, resuming from the state file, limits, and the DICOMweb error mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")

from medforensics.errors import ConfigError
from medforensics.pacs.dicomweb import InstanceRef, PacsClient, StoreOutcome
from medforensics.pacs.errors import (
    PacsAuthError,
    PacsRequestError,
    PacsServerError,
    PacsUnreachableError,
    ScanStateError,
)
from medforensics.pacs.scan import is_image_sop_class, scan
from medforensics.pacs.seg import seg_mask
from medforensics.pacs.sr import report_summary


class FakePacs:
    """Enough of :class:`PacsClient` for :func:`scan`: search, retrieve, store."""

    url = "http://fake/dicom-web"

    def __init__(self, datasets: list[pydicom.Dataset]) -> None:
        self.data = {str(d.SOPInstanceUID): d for d in datasets}
        self.stored: list[pydicom.Dataset] = []
        self.retrieved: list[str] = []
        self.fail_retrieve: dict[str, Exception] = {}
        self.refuse_store = False

    def search(self, *, study=None, series=None, filters=None):
        for d in list(self.data.values()) + self.stored:
            yield InstanceRef(str(d.StudyInstanceUID), str(d.SeriesInstanceUID),
                              str(d.SOPInstanceUID), str(d.SOPClassUID),
                              str(d.get("Modality", "")), "Rows" in d)

    def retrieve(self, ref):
        self.retrieved.append(ref.sop)
        if ref.sop in self.fail_retrieve:
            raise self.fail_retrieve[ref.sop]
        return self.data[ref.sop]

    def store(self, datasets):
        if self.refuse_store:
            return StoreOutcome((), tuple((str(d.SOPInstanceUID), 272) for d in datasets))
        self.stored.extend(datasets)
        return StoreOutcome(tuple(str(d.SOPInstanceUID) for d in datasets), ())


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from medforensics.synth.simulate import simulate_archive

    root = tmp_path_factory.mktemp("pacs_scan")
    return [Path(p) for p in simulate_archive(
        root / "a", manufacturers=1, models_per_manufacturer=1, units_per_model=1, patients=1,
        images_per_patient=3, size=(80, 96), seed=2)]


def _source(image):
    return {"verdict": "UNKNOWN", "message": "UNKNOWN: nothing named", "predicted": "X",
            "probability": 0.5, "top": [], "named": None, "level": "model",
            "model": {"name": "patch", "sha256": "00" * 32}}


def _forgery(image):
    h, w = image.pixels.shape
    m = np.zeros((h, w), np.float32)
    m[: h // 2, : w // 2] = 0.75
    return {"status": "done", "score": 0.7, "verdict": "tampered", "map_threshold": 0.5,
            "forged_area_percent": 25.0, "regions": [], "prob_map": m,
            "model": {"name": "cues (training-free)"}}


def _pacs(archive: list[Path]) -> FakePacs:
    return FakePacs([pydicom.dcmread(p) for p in archive])


def test_scan_analyses_stores_and_resumes(archive, tmp_path):
    pacs = _pacs(archive)
    sr_like = pydicom.dcmread(archive[0], stop_before_pixels=True)
    sr_like.SOPInstanceUID = "1.2.3.4.5"
    sr_like.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    del sr_like.Rows
    pacs.data[sr_like.SOPInstanceUID] = sr_like
    items = []
    state = tmp_path / "state.jsonl"
    s = scan(pacs, analyse_source=_source, analyse_forgery=_forgery, store=True,
             out_dir=tmp_path / "out", state=state, on_item=items.append)
    assert (s.found, s.done, s.skipped, s.failed, s.stored) == (4, 3, 1, 0, 3)
    assert "1.2.3.4.5" not in pacs.retrieved  # the non-image was not downloaded
    skipped = [i for i in items if i.status == "skipped"]
    assert skipped[0].reason == "not-an-image-class"
    done = [i for i in items if i.status == "done"]
    assert len(pacs.stored) == 6 and all(i.stored and i.sr and i.seg for i in done)
    for item in done:
        sr = next(d for d in pacs.stored if d.SOPInstanceUID == item.sr)
        seg = next(d for d in pacs.stored if d.SOPInstanceUID == item.seg)
        summ = report_summary(sr)
        assert summ["source"][1] == item.sop and summ["seg"] == item.seg
        src = pacs.data[item.sop]
        assert seg.StudyInstanceUID == src.StudyInstanceUID
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0] \
            .ReferencedSOPInstanceUID == item.sop
        written = pydicom.dcmread(tmp_path / "out" / f"{item.sop}_seg.dcm")
        np.testing.assert_array_equal(seg_mask(written), seg_mask(seg))
        assert abs(seg_mask(seg).max() - 0.75) <= 0.5 / 255 + 1e-6
        assert "prob_map" not in (item.forgery or {})
        json.dumps(item.to_dict())
    header = json.loads(state.read_text().splitlines()[0])
    assert header["url"] == pacs.url and header["format"].startswith("medforensics-pacs-scan")

    # second run: everything finished (the results it stored are non-images, skipped unread)
    pacs.retrieved.clear()
    again = scan(pacs, analyse_source=_source, analyse_forgery=_forgery, store=True,
                 state=state)
    assert again.done == 0 and again.resumed == 4 and again.skipped == 6
    assert pacs.retrieved == []


def test_analysed_but_not_stored_is_stored_on_a_storing_rerun(archive, tmp_path):
    pacs = _pacs(archive)
    state = tmp_path / "s.jsonl"
    first = scan(pacs, analyse_forgery=_forgery, state=state)
    assert first.done == 3 and first.stored == 0 and not pacs.stored
    again = scan(pacs, analyse_forgery=_forgery, state=state)
    assert again.resumed == 3 and again.done == 0
    stored = scan(pacs, analyse_forgery=_forgery, state=state, store=True)
    assert stored.done == 3 and stored.stored == 3


def test_interrupted_state_line_is_ignored_and_other_query_refused(archive, tmp_path):
    pacs = _pacs(archive)
    state = tmp_path / "s.jsonl"
    scan(pacs, analyse_forgery=_forgery, state=state, limit=1)
    with state.open("a") as fh:
        fh.write('{"sop": "cut sh')
    s = scan(pacs, analyse_forgery=_forgery, state=state)
    assert s.resumed == 1 and s.done == 2
    with pytest.raises(ScanStateError, match="another query"):
        scan(pacs, analyse_forgery=_forgery, state=state, filters={"Modality": "MG"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ScanStateError, match="not a pacs scan state file"):
        scan(pacs, analyse_forgery=_forgery, state=bad)


def test_failures_skips_and_limits(archive, tmp_path):
    pacs = _pacs(archive)
    sops = list(pacs.data)
    pacs.fail_retrieve[sops[0]] = PacsRequestError("gone", status=404)
    bare = pydicom.dcmread(archive[1], stop_before_pixels=True)  # image class, no pixels
    pacs.data[sops[1]] = bare
    items = []
    s = scan(pacs, analyse_forgery=_forgery, on_item=items.append)
    assert [i.status for i in items] == ["failed", "skipped", "done"]
    assert items[0].reason == "retrieve-failed" and items[1].reason == "no-pixel-data"
    assert s.failed == 1 and s.done == 1

    pacs = _pacs(archive)
    for sop in pacs.data:
        pacs.fail_retrieve[sop] = PacsServerError("boom", status=500)
    with pytest.raises(PacsServerError):
        scan(pacs, analyse_forgery=_forgery, max_failures=2)
    pacs = _pacs(archive)
    pacs.fail_retrieve[next(iter(pacs.data))] = PacsAuthError("no", status=401)
    with pytest.raises(PacsAuthError):
        scan(pacs, analyse_forgery=_forgery)
    pacs = _pacs(archive)
    pacs.refuse_store = True
    s = scan(pacs, analyse_forgery=_forgery, store=True)
    assert s.failed == 3 and s.stored == 0
    assert scan(_pacs(archive), analyse_forgery=_forgery, limit=2).done == 2
    with pytest.raises(ConfigError, match="nothing to analyse"):
        scan(_pacs(archive))


def test_analysis_refusal_is_a_skip(archive):
    from medforensics.errors import InvalidArrayError

    def refuse(image):
        raise InvalidArrayError("too small")

    items = []
    s = scan(_pacs(archive), analyse_source=refuse, on_item=items.append)
    assert s.skipped == 3 and {i.reason for i in items} == {"invalid-image"}


def test_sop_class_filter():
    assert is_image_sop_class("1.2.840.10008.5.1.4.1.1.1.1")  # DX
    assert is_image_sop_class("1.2.840.10008.5.1.4.1.1.1.2")  # MG
    assert is_image_sop_class("")  # unknown: the reader decides
    for uid in ("1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.66.4",
                "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.104.1",
                "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.88.59"):
        assert not is_image_sop_class(uid), uid


def test_client_errors_are_specific(monkeypatch):
    with pytest.raises(ConfigError, match="http"):
        PacsClient("ftp://x")
    with pytest.raises(ConfigError, match="both a user and a password"):
        PacsClient("http://127.0.0.1:1/dicom-web", user="u")
    with pytest.raises(ConfigError, match="not both"):
        PacsClient("http://127.0.0.1:1/dicom-web", user="u", password="p", token="t")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PacsClient(f"http://127.0.0.1:{port}/dicom-web", timeout=2, retries=1)
    with pytest.raises(PacsUnreachableError, match="no answer"):
        list(client.search())

    import requests

    def answer(status):
        resp = requests.Response()
        resp.status_code = status
        resp.url = "http://pacs/dicom-web/instances"
        resp.reason = "Reason"
        resp._content = b"details"
        return requests.HTTPError(response=resp)

    assert isinstance(client._error(answer(401), "x"), PacsAuthError)
    assert isinstance(client._error(answer(403), "x"), PacsAuthError)
    assert isinstance(client._error(answer(404), "x"), PacsRequestError)
    err = client._error(answer(503), "search")
    assert isinstance(err, PacsServerError) and err.status == 503 and "HTTP 503" in str(err)


def test_forgery_detect_dicom_out(archive, tmp_path):
    """``forgery detect --dicom-out``: SEG + SR for a DICOM image, a stderr line for a PNG."""
    from typer.testing import CliRunner

    from medforensics.cli import app
    from medforensics.io import read_image, write_png16

    png = tmp_path / "export.png"
    write_png16(png, read_image(archive[0]).pixels.astype(np.uint16))
    out = tmp_path / "dicom"
    res = CliRunner().invoke(app, ["forgery", "detect", "none", str(archive[0]), str(png),
                                   "--json", "--dicom-out", str(out), "--seg", "binary"])
    assert res.exit_code == 0, res.output
    assert "no DICOM result for" in res.output and "PNG" in res.output
    sop = pydicom.dcmread(archive[0], stop_before_pixels=True).SOPInstanceUID
    seg = pydicom.dcmread(out / f"{sop}_forgery_seg.dcm")
    sr = pydicom.dcmread(out / f"{sop}_forgery_sr.dcm")
    assert seg.SegmentationType == "BINARY"
    assert report_summary(sr)["seg"] == seg.SOPInstanceUID
    line = json.loads(next(ln for ln in res.output.splitlines() if ln.startswith("{")))
    assert report_summary(sr)["forgery_verdict"] is not None and line["status"] == "done"
    bad = CliRunner().invoke(app, ["forgery", "detect", "none", str(archive[0]),
                                   "--dicom-out", str(out), "--seg", "labelmap"])
    assert bad.exit_code == 2 and "--seg" in bad.output


def test_scan_progress_logs_every_n_without_a_terminal(caplog, capsys):
    from medforensics.cli.pacs import ScanProgress
    from medforensics.pacs.scan import ScanItem

    items = [ScanItem("s", "r", str(i), status=st, stored=st == "done")
             for i, st in enumerate(["done", "skipped", "done", "failed", "done"])]
    with caplog.at_level("INFO", logger="medforensics.cli.pacs"), \
            ScanProgress(enabled=False, every=2) as bar:
        for it in items:
            bar.update(it)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # after the 2nd and the 4th instance
    assert "4 instance(s): 2 analysed, 1 skipped, 1 failed" in lines[1]
    assert bar.counts["stored"] == 3
    caplog.clear()
    with ScanProgress(enabled=True, every=1) as live:  # a live line on stderr, no log lines
        for it in items:
            live.update(it)
    assert not caplog.records and live.counts["found"] == 5
    assert "5 instance(s): 3 analysed" in live.text()
