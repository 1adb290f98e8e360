"""``pacs listen``: a loopback DICOM node receives images by C-STORE, analyses them with
injected callables and writes / forwards the SR and SEG; a full queue answers 0xA700, a
non-image SOP Class is refused, SIGTERM stops it cleanly."""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")
pynetdicom = pytest.importorskip("pynetdicom")

from medforensics.errors import ConfigError
from medforensics.pacs.errors import ForwardError, ListenError
from medforensics.pacs.listen import (
    STATUS_BUSY,
    STATUS_NOT_AN_IMAGE,
    ForwardTarget,
    Listener,
    ListenItem,
    forward,
    serve_until_signalled,
)
from medforensics.pacs.seg import seg_mask
from medforensics.pacs.sr import report_summary

pytestmark = pytest.mark.timeout(60)

AET = "MFLISTEN"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    from medforensics.synth.simulate import simulate_archive

    root = tmp_path_factory.mktemp("pacs_listen")
    paths = simulate_archive(root / "a", manufacturers=1, models_per_manufacturer=1,
                             units_per_model=1, patients=1, images_per_patient=3,
                             size=(64, 72), seed=5)
    return [pydicom.dcmread(p) for p in paths]


def _source(image: Any) -> dict[str, Any]:
    return {"verdict": "UNKNOWN", "message": "UNKNOWN: nothing named", "predicted": "X",
            "probability": 0.5, "top": [], "named": None, "level": "model",
            "model": {"name": "patch", "sha256": "00" * 32}}


def _forgery(image: Any) -> dict[str, Any]:
    h, w = image.pixels.shape
    m = np.zeros((h, w), np.float32)
    m[: h // 2, : w // 2] = 0.75
    return {"status": "done", "score": 0.7, "verdict": "tampered", "map_threshold": 0.5,
            "forged_area_percent": 25.0, "regions": [], "prob_map": m,
            "model": {"name": "cues (training-free)"}}


def _send(port: int, datasets: list[pydicom.Dataset], called: str = AET) -> list[int]:
    """C-STORE ``datasets`` over one association; the status code of each (-1: none)."""
    ae = pynetdicom.AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for uid in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(uid, [pydicom.uid.ExplicitVRLittleEndian,
                                       pydicom.uid.ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        return [int(s.Status) if s else -1 for s in map(assoc.send_c_store, datasets)]
    finally:
        assoc.release()


class _Items:
    """Collects the worker's items; wait() until ``n`` arrived."""

    def __init__(self) -> None:
        self.items: list[ListenItem] = []
        self._cv = threading.Condition()

    def __call__(self, item: ListenItem) -> None:
        with self._cv:
            self.items.append(item)
            self._cv.notify_all()

    def wait(self, n: int, timeout: float = 15.0) -> list[ListenItem]:
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.items) >= n, timeout), self.items
            return list(self.items)


class _Store:
    """An in-test storage node (pynetdicom) that keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[pydicom.Dataset] = []
        self.ae = pynetdicom.AE(ae_title="FWDSCP")
        for uid in ("1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.66.4"):
            self.ae.add_supported_context(uid)  # Comprehensive SR, Segmentation

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
            return 0x0000

        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(pynetdicom.evt.EVT_C_STORE,
                                                          on_store)])
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        self.ae.shutdown()


def test_three_images_get_sr_and_seg_written_and_forwarded(images, tmp_path):
    store = _Store()
    got = _Items()
    node = Listener(AET, 0, analyse_source=_source, analyse_forgery=_forgery,
                    out_dir=tmp_path / "out", queue_size=4, on_item=got,
                    forward_to=ForwardTarget("127.0.0.1", store.port, "FWDSCP"), timeout=10)
    node.start()
    try:
        assert node.running and node.port > 0
        assert _send(node.port, images) == [0, 0, 0]
        items = got.wait(3)
    finally:
        summary = node.stop()
        store.close()
    assert not node.running
    assert [i.status for i in items] == ["done"] * 3, [i.message for i in items]
    assert {i.sop for i in items} == {str(d.SOPInstanceUID) for d in images}
    assert all(i.calling_ae == "TESTSCU" and i.forwarded for i in items)
    assert (summary.received, summary.done, summary.forwarded) == (3, 3, 3)
    by_uid = {str(d.SOPInstanceUID): d for d in store.received}
    assert len(by_uid) == 6  # one SR and one SEG per image
    for src in images:
        sop = str(src.SOPInstanceUID)
        item = next(i for i in items if i.sop == sop)
        sr = pydicom.dcmread(tmp_path / "out" / f"{sop}_sr.dcm")
        seg = pydicom.dcmread(tmp_path / "out" / f"{sop}_seg.dcm")
        summ = report_summary(sr)
        assert summ["source"][1] == sop and summ["seg"] == item.seg == seg.SOPInstanceUID
        assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.SOPInstanceUID == item.sr
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0] \
            .ReferencedSOPInstanceUID == sop
        assert seg_mask(seg).shape == (src.Rows, src.Columns)
        assert abs(seg_mask(seg).max() - 0.75) <= 0.5 / 255 + 1e-6
        # what the forward node got is what was written
        assert report_summary(by_uid[item.sr])["source"][1] == sop
        np.testing.assert_array_equal(seg_mask(by_uid[item.seg]), seg_mask(seg))
        assert "prob_map" not in (item.forgery or {})


def test_full_queue_answers_out_of_resources(images, tmp_path):
    entered, release = threading.Event(), threading.Event()

    def blocked(image: Any) -> dict[str, Any]:
        entered.set()
        assert release.wait(15)
        return _source(image)

    got = _Items()
    node = Listener(AET, 0, analyse_source=blocked, out_dir=tmp_path, queue_size=1,
                    on_item=got, timeout=10)
    node.start()
    try:
        assert _send(node.port, images[:1]) == [0]
        assert entered.wait(10)  # the worker holds image 1
        # image 2 fills the queue of one; image 3 finds it full
        assert _send(node.port, images[1:]) == [0, STATUS_BUSY]
        assert node.queued == 1
        release.set()
        items = got.wait(2)
    finally:
        release.set()
        summary = node.stop()
    assert {i.sop for i in items} == {str(d.SOPInstanceUID) for d in images[:2]}
    assert (summary.received, summary.busy, summary.done) == (2, 1, 2)
    assert sorted(p.name for p in tmp_path.glob("*.dcm")) == sorted(
        f"{d.SOPInstanceUID}_sr.dcm" for d in images[:2])


def test_non_image_sop_class_is_refused(images, tmp_path, caplog):
    sr_like = copy.deepcopy(images[0])
    sr_like.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    sr_like.SOPInstanceUID = "1.2.3.4.5.6"
    sr_like.file_meta.MediaStorageSOPClassUID = sr_like.SOPClassUID
    sr_like.file_meta.MediaStorageSOPInstanceUID = sr_like.SOPInstanceUID
    got = _Items()
    node = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path, on_item=got,
                    timeout=10)
    node.start()
    try:
        with caplog.at_level("WARNING", logger="medforensics.pacs.listen"):
            assert _send(node.port, [sr_like, images[0]]) == [STATUS_NOT_AN_IMAGE, 0]
        got.wait(1)
    finally:
        summary = node.stop()
    assert (summary.refused, summary.received, summary.done) == (1, 1, 1)
    assert "1.2.3.4.5.6" in caplog.text and "no image" in caplog.text
    assert not list(tmp_path.glob("1.2.3.4.5.6*"))


def test_unreadable_image_is_skipped_and_the_node_serves_on(images, tmp_path):
    broken = copy.deepcopy(images[0])
    broken.SOPInstanceUID = "1.2.3.4.5.7"
    del broken.PixelData
    got = _Items()
    node = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path, on_item=got,
                    timeout=10)
    node.start()
    try:
        assert _send(node.port, [broken, images[1]]) == [0, 0]
        items = got.wait(2)
    finally:
        node.stop()
    assert [(i.status, i.reason) for i in items] == [("skipped", "no-pixel-data"),
                                                     ("done", None)]


def test_forward_to_a_closed_port_fails_the_item_not_the_node(images, tmp_path):
    closed = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path)
    closed.start()
    port = closed.port
    closed.stop()
    got = _Items()
    node = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path / "o", on_item=got,
                    forward_to=ForwardTarget("127.0.0.1", port, "NOBODY"), timeout=3)
    node.start()
    try:
        assert _send(node.port, images[:1]) == [0]
        (item,) = got.wait(1)
    finally:
        node.stop()
    assert (item.status, item.reason, item.forwarded) == ("failed", "forward-failed", False)
    assert item.files  # the files were written before the forward failed
    with pytest.raises(ForwardError):
        forward([pydicom.dcmread(item.files[-1])], ForwardTarget("127.0.0.1", port, "X"),
                ae_title=AET, timeout=3)


def test_sigterm_stops_cleanly_after_finishing_the_queue(images, tmp_path):
    got = _Items()
    node = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path, on_item=got,
                    timeout=10)
    result: dict[str, Any] = {}

    def client() -> None:
        deadline = time.monotonic() + 10
        while not node.running and time.monotonic() < deadline:
            time.sleep(0.02)
        result["statuses"] = _send(node.port, images)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=client)
    t.start()
    summary = serve_until_signalled(node)  # main thread: returns after the signal
    t.join(10)
    assert result["statuses"] == [0, 0, 0]
    assert summary.received == 3 and summary.done == 3  # queued images were finished
    assert len(list(tmp_path.glob("*_sr.dcm"))) == 3
    assert not node.running and signal.getsignal(signal.SIGTERM) is before


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="nothing to analyse"):
        Listener(AET, 0, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="nowhere"):
        Listener(AET, 0, analyse_forgery=_forgery)
    with pytest.raises(ConfigError, match="AE title"):
        Listener("A" * 17, 0, analyse_forgery=_forgery, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="HOST:PORT:AET"):
        ForwardTarget.parse("localhost:104")
    with pytest.raises(ConfigError, match="outside"):
        ForwardTarget.parse("localhost:70000:PACS")
    assert ForwardTarget.parse("[::1]:4242:ORTHANC") == ForwardTarget("::1", 4242, "ORTHANC")
    node = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path)
    node.start()
    try:
        busy = Listener(AET, node.port, analyse_forgery=_forgery, out_dir=tmp_path)
        with pytest.raises(ListenError, match="cannot listen"):
            busy.start()
    finally:
        node.stop()


def test_wrong_ae_titles_are_rejected_and_echo_answers(images, tmp_path):
    node = Listener(AET, 0, analyse_forgery=_forgery, out_dir=tmp_path, timeout=10,
                    allowed_calling=["GOODSCU"])
    node.start()
    try:
        def associate(calling: str, called: str) -> Any:
            ae = pynetdicom.AE(ae_title=calling)
            ae.add_requested_context(pynetdicom.sop_class.Verification)
            return ae.associate("127.0.0.1", node.port, ae_title=called)

        assert associate("GOODSCU", "SOMEONE").is_rejected  # not our AE title
        assert associate("TESTSCU", AET).is_rejected  # not an allowed sender
        assoc = associate("GOODSCU", AET)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        node.stop()


def test_a_consumer_or_analysis_that_raises_does_not_stop_the_node(images, tmp_path):
    calls: list[str] = []

    def flaky(image: Any) -> dict[str, Any]:
        calls.append(image.meta.sop_uid)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return _source(image)

    got = _Items()

    def consumer(item: ListenItem) -> None:
        got(item)
        raise BrokenPipeError("stdout closed")

    node = Listener(AET, 0, analyse_source=flaky, out_dir=tmp_path, on_item=consumer,
                    timeout=10)
    node.start()
    try:
        assert _send(node.port, images[:2]) == [0, 0]
        items = got.wait(2)
    finally:
        summary = node.stop()
    assert [(i.status, i.reason) for i in items] == [("failed", "analysis-failed"),
                                                     ("done", None)]
    assert "model exploded" in (items[0].message or "")
    assert (summary.failed, summary.done) == (1, 1)


def test_out_dir_files_are_readable(images, tmp_path):
    """The objects on disk are complete DICOM files (preamble, file meta)."""
    got = _Items()
    node = Listener(AET, 0, analyse_source=_source, out_dir=tmp_path, on_item=got, timeout=10)
    node.start()
    try:
        _send(node.port, images[:1])
        (item,) = got.wait(1)
    finally:
        node.stop()
    assert item.seg is None and len(item.files) == 1
    ds = pydicom.dcmread(Path(item.files[0]))
    assert ds.file_meta.MediaStorageSOPInstanceUID == item.sr



def test_cli_listen_serves_and_stops_on_sigterm(images, tmp_path, monkeypatch):
    """The command, in this process with fake analyses: one image in, JSON line and files
    out, SIGTERM, summary and exit 0; the refusals of bad options exit 2."""
    from typer.testing import CliRunner

    from medforensics.cli import pacs as cli_pacs
    from medforensics.cli import app

    monkeypatch.setattr(cli_pacs, "_analysers", lambda *a: (_source, _forgery))
    started: list[Listener] = []
    real_start = Listener.start

    def start(self: Listener) -> None:
        real_start(self)
        started.append(self)

    monkeypatch.setattr(Listener, "start", start)
    result: dict[str, Any] = {}

    def client() -> None:
        deadline = time.monotonic() + 10
        while not started and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            result["statuses"] = _send(started[0].port, images[:1])
            deadline = time.monotonic() + 10
            while started[0].summary.done < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=client)
    t.start()
    res = CliRunner().invoke(app, ["pacs", "listen", "--ae-title", AET, "--port", "0",
                                   "--source-run", str(tmp_path), "--forgery", "none",
                                   "--dicom-out", str(tmp_path / "out"), "--json"])
    t.join(10)
    assert result["statuses"] == [0]
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    sop = str(images[0].SOPInstanceUID)
    assert [(x["sop"], x["status"]) for x in lines] == [(sop, "done")]
    assert lines[0]["identify"]["verdict"] == "UNKNOWN" and lines[0]["forgery"]["score"] == 0.7
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{sop}_seg.dcm",
                                                                    f"{sop}_sr.dcm"]
    assert "1 image(s) received: 1 analysed" in res.stderr

    for args, msg in ((["--forgery", "none"], "nowhere to put"),
                      (["--dicom-out", str(tmp_path)], "nothing to analyse"),
                      (["--forgery", "none", "--forward-to", "pacs:104"], "HOST:PORT:AET")):
        bad = CliRunner().invoke(app, ["pacs", "listen", "--port", "0", *args])
        assert bad.exit_code == 2 and msg in bad.stderr
