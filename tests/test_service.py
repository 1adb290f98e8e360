"""Web service: endpoints, authentication, limits, bad input, clean-up, logging (TestClient)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from fixtures_service import (  # noqa: E402,F401
    ContractForgeryDetector,
    ServiceArchive,
    service_archive,
    source_run,
)

from medforensics.errors import InvalidArrayError  # noqa: E402
from medforensics.source.verdicts import VERDICTS  # noqa: E402
from medforensics.service.app import create_app  # noqa: E402
from medforensics.service.uploads import (  # noqa: E402
    UploadError,
    UploadTooLarge,
    receive_upload,
    safe_filename,
)

ENDPOINTS = ("/v1/identify", "/v1/forgery", "/v1/report", "/v1/models", "/health")


# ---------------------------------------------------------------------- helpers / fixtures
def _png_image(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def _b64_png(text: str) -> np.ndarray:
    raw = base64.b64decode(text)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return _png_image(raw)


def _row_of(archive: ServiceArchive, path: Path) -> dict:
    return next(r for r in archive.rows if Path(r["path"]) == path)


@pytest.fixture(scope="module")
def dicom(service_archive: ServiceArchive) -> Path:  # noqa: F811
    """A test-split DICOM file of the simulated archive."""
    return next(Path(r["path"]) for r in service_archive.rows if r.get("split") == "test")


@pytest.fixture(scope="module")
def dicom_bytes(dicom: Path) -> bytes:
    return dicom.read_bytes()


@pytest.fixture(scope="module")
def upload_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def app(source_run: Path, upload_root: Path):  # noqa: F811
    return create_app(source_run, tmp_dir=upload_root)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def lenient(app) -> TestClient:
    """A client that returns 500 answers instead of raising the server's exception."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _post(client: TestClient, endpoint: str, data: bytes, name: str = "image.dcm", **kw):
    return client.post(endpoint, files={"file": (name, data, "application/octet-stream")}, **kw)


# ---------------------------------------------------------------------- health, models, schema
def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["source_model"] is True
    assert h["forgery_model"] is False and h["auth_required"] is False
    assert h["max_upload_bytes"] == 200 * 2**20 and h["timeout_s"] == 60.0
    assert h["report"] is (importlib.util.find_spec("medforensics.report.html") is not None)


def test_models_lists_classes_hashes_calibration(client: TestClient,
                                                 source_run: Path) -> None:  # noqa: F811
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    info = r.json()
    meta = json.loads((source_run / "model.json").read_text())
    cal = json.loads((source_run / "calibration.json").read_text())
    src = info["source"]
    assert src["classes"] == meta["classes"] and src["num_classes"] == len(meta["classes"])
    assert src["preset"] == "patch" and src["label_column"] == "model"
    weights = hashlib.sha256((source_run / "model.safetensors").read_bytes()).hexdigest()
    assert src["weights_sha256"] == weights
    assert src["model_json_sha256"] == hashlib.sha256(
        (source_run / "model.json").read_bytes()).hexdigest()
    assert src["calibrated"] is True
    assert src["calibration"]["temperature"] == pytest.approx(cal["temperature"])
    assert src["calibration"]["unknown_threshold"] == pytest.approx(cal["unknown_threshold"])
    assert "patch" in info["available_presets"] and "deep-rsi" in info["available_presets"]
    assert info["forgery"] is None
    assert str(source_run) not in json.dumps(info)  # no server paths, only the run's name


def test_openapi_lists_endpoints(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    for ep in ENDPOINTS:
        assert ep in schema["paths"], ep
    for ep in ("/v1/identify", "/v1/forgery", "/v1/report"):
        op = schema["paths"][ep]["post"]
        body = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["properties"]["file"]["format"] == "binary"
        assert "413" in op["responses"] and "422" in op["responses"]
    assert "503" in schema["paths"]["/v1/forgery"]["post"]["responses"]
    assert "501" in schema["paths"]["/v1/report"]["post"]["responses"]
    # Swagger UI / ReDoc would pull scripts from a CDN: they are not offered.
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


def test_page_and_static_files_are_local(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'id="file"' in html and 'type="file"' in html
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        a = client.get(asset)
        assert a.status_code == 200 and len(a.text) > 500
        # no CDN, no web fonts, no third-party requests
        assert "http://" not in a.text and "https://" not in a.text, asset
        assert "@import" not in a.text and "url(" not in a.text.replace("URL.createObjectURL", "")
    assert "https://" not in html and "http://" not in html
    assert "innerHTML" not in client.get("/static/app.js").text  # server text goes in as text


# ---------------------------------------------------------------------- identify
def test_identify_dicom(client: TestClient, service_archive: ServiceArchive,  # noqa: F811
                        dicom: Path, dicom_bytes: bytes) -> None:
    from medforensics.source.predictor import SourcePredictor, identify_files

    r = _post(client, "/v1/identify", dicom_bytes, name="DOE^JOHN.dcm")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    v = r.json()
    assert v["verdict"] in VERDICTS and v["verdict"] != "unreadable"
    assert v["path"] == "DOE^JOHN.dcm"
    assert v["level"] == "model"
    row = _row_of(service_archive, dicom)
    assert v["header_claim"] == row["model"]
    assert v["claim_in_classes"] is True
    probs = [t["probability"] for t in v["top"]]
    assert probs == sorted(probs, reverse=True) and 0.0 <= probs[-1] <= probs[0] <= 1.0
    assert v["predicted"] == v["top"][0]["label"] and v["probability"] == pytest.approx(probs[0])
    assert "preview_png_b64" not in v
    # The service says exactly what the library says for the same file.
    pred = SourcePredictor.from_run(service_archive.run)
    lib, extra = next(iter(identify_files(pred, [dicom])))
    assert v["verdict"] == lib.verdict and v["predicted"] == lib.predicted
    assert v["probability"] == pytest.approx(lib.probability, abs=1e-6)
    assert v["n_patches"] == extra["n_patches"]


def test_identify_preview_and_raw_body(client: TestClient, dicom_bytes: bytes) -> None:
    r = _post(client, "/v1/identify?preview=true", dicom_bytes)
    assert r.status_code == 200
    img = _b64_png(r.json()["preview_png_b64"])
    assert img.dtype == np.uint8 and img.ndim == 2 and img.std() > 5  # real content
    raw = client.post("/v1/identify", content=dicom_bytes,
                      headers={"Content-Type": "application/dicom"})
    assert raw.status_code == 200
    assert raw.json()["probability"] == pytest.approx(r.json()["probability"], abs=1e-6)
    assert raw.json()["path"] == "upload"


def test_identify_png_has_no_header_claim(client: TestClient, dicom: Path, tmp_path: Path) -> None:
    from medforensics.io import read_image, write_png16

    pix = read_image(dicom).pixels
    png = tmp_path / "x.png"
    write_png16(png, pix - pix.min())
    r = _post(client, "/v1/identify", png.read_bytes(), name="x.png")
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["verdict"] == "no-header-claim" and v["header_claim"] is None


# ---------------------------------------------------------------------- bad input
def _bad_files(dicom_bytes: bytes) -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(0)
    return {
        "zero-bytes": (b"", "not-an-image-file"),
        "random-bytes": (rng.bytes(5000), "not-an-image-file"),
        "text-file": (b"Patient: nobody\nthis is a text file, not an image\n" * 20,
                      "not-an-image-file"),
        "truncated-pixels": (dicom_bytes[: len(dicom_bytes) // 2], "truncated-pixel-data"),
        "truncated-header": (dicom_bytes[:300], "corrupt-header"),
    }


@pytest.mark.parametrize("endpoint", ["/v1/identify", "/v1/forgery-fake"])
@pytest.mark.parametrize("case", ["zero-bytes", "random-bytes", "text-file",
                                  "truncated-pixels", "truncated-header"])
def test_bad_files_give_422_with_reason(case: str, endpoint: str, client: TestClient,
                                        forgery_client: TestClient, dicom_bytes: bytes,
                                        upload_root: Path) -> None:
    data, reason = _bad_files(dicom_bytes)[case]
    c = forgery_client if endpoint.endswith("-fake") else client
    r = _post(c, endpoint.removesuffix("-fake"), data, name=f"{case}.dcm")
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == reason
    # the reader's message, without the server's temp path
    assert len(body["detail"]) > 10 and not body["detail"].startswith("/")
    assert "medforensics-upload" not in body["detail"] and str(upload_root) not in body["detail"]


def test_fuzzed_files_never_500(lenient: TestClient, dicom_bytes: bytes) -> None:
    rng = np.random.default_rng(1)
    blobs = [dicom_bytes[:n] for n in (1, 4, 128, 132, 140, 200, 600, len(dicom_bytes) - 1)]
    flipped = bytearray(dicom_bytes)
    for i in rng.integers(132, 1200, size=40):  # scramble header bytes
        flipped[int(i)] = int(rng.integers(0, 256))
    blobs += [bytes(flipped), b"\x89PNG\r\n\x1a\n" + rng.bytes(300),
              b"\xff\xd8\xff\xe0" + rng.bytes(300)]
    for i, blob in enumerate(blobs):
        r = _post(lenient, "/v1/identify", blob, name=f"fuzz{i}")
        assert r.status_code in (200, 422), (i, r.status_code, r.text)
        if r.status_code == 422:
            assert r.json()["error"] and r.json()["detail"]


def test_corrupt_tiff_is_422(lenient: TestClient) -> None:
    blob = b"II*\x00" + np.random.default_rng(1).bytes(300)
    r = _post(lenient, "/v1/identify", blob, name="broken.tif")
    assert r.status_code == 422, (r.status_code, r.text)


def test_tiny_image_is_insufficient_evidence_and_colour_is_422(client: TestClient,
                                                               tmp_path: Path) -> None:
    from PIL import Image

    small = tmp_path / "small.png"
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(small)
    r = _post(client, "/v1/identify", small.read_bytes(), name="small.png")
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["verdict"] == "insufficient-evidence" and v["confident"] is False
    assert v["informative_windows"] == 0 and "smaller than" in v["message"]
    colour = tmp_path / "colour.png"
    rgb = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(colour)
    r = _post(client, "/v1/identify", colour.read_bytes(), name="colour.png")
    assert r.status_code == 422 and r.json()["error"] == "unsupported-photometric"


def test_malformed_requests(client: TestClient, dicom_bytes: bytes) -> None:
    r = client.post("/v1/identify", files={"image": ("x.dcm", dicom_bytes)})
    assert r.status_code == 422 and r.json()["error"] == "no-file"
    r = client.post("/v1/identify", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported-media-type"
    r = client.post("/v1/identify", content=b"--xyz\r\nContent-Disposition: form-data; "
                    b'name="file"; filename="a"\r\n\r\nabc',
                    headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and r.json()["error"] == "bad-multipart"
    r = client.post("/v1/identify", content=b"x",
                    headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400
    r = client.get("/v1/identify")
    assert r.status_code == 405 and set(r.json()) == {"error", "detail"}
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not-found"


def test_uploads_are_deleted(client: TestClient, upload_root: Path, dicom_bytes: bytes) -> None:
    assert _post(client, "/v1/identify", dicom_bytes).status_code == 200
    assert _post(client, "/v1/identify", b"junk").status_code == 422
    assert list(upload_root.iterdir()) == []


# ---------------------------------------------------------------------- auth
def test_bearer_token(source_run: Path, dicom_bytes: bytes) -> None:  # noqa: F811
    app = create_app(source_run, token="s3cret-token")
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health").json()["auth_required"] is True
        assert c.get("/").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer s3cret-tokeN"}
        assert c.get("/v1/models", headers=bad).status_code == 401
        basic = {"Authorization": "Basic s3cret-token"}
        assert c.get("/v1/models", headers=basic).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert c.get("/v1/models", headers=good).status_code == 200
        r = _post(c, "/v1/identify", dicom_bytes)
        assert r.status_code == 401
        r = _post(c, "/v1/identify", dicom_bytes, headers=good)
        assert r.status_code == 200 and r.json()["verdict"] in VERDICTS
        assert _post(c, "/v1/forgery", dicom_bytes).status_code == 401
        assert _post(c, "/v1/report", dicom_bytes).status_code == 401


def test_token_compare_is_constant_time() -> None:
    import inspect

    from medforensics.service import app as app_module

    assert "hmac.compare_digest" in inspect.getsource(app_module._bearer_check)


# ---------------------------------------------------------------------- size limit
def test_size_limit_413(source_run: Path, dicom_bytes: bytes, tmp_path: Path) -> None:  # noqa: F811
    app = create_app(source_run, max_upload_bytes=10_000, tmp_dir=tmp_path)
    with TestClient(app) as c:
        assert c.get("/health").json()["max_upload_bytes"] == 10_000
        r = _post(c, "/v1/identify", dicom_bytes)
        assert r.status_code == 413 and r.json()["error"] == "too-large-upload"
        r = c.post("/v1/identify", content=dicom_bytes,
                   headers={"Content-Type": "application/dicom"})
        assert r.status_code == 413
        # just under the limit still reaches the reader
        r = _post(c, "/v1/identify", dicom_bytes[:9_000])
        assert r.status_code == 422 and r.json()["error"] == "truncated-pixel-data"
    assert list(tmp_path.iterdir()) == []


async def _count_chunks(n: int, size: int, seen: list[int], prefix: bytes = b""):
    if prefix:
        yield prefix
    for _ in range(n):
        seen.append(size)
        yield b"\0" * size


@pytest.mark.parametrize("multipart", [True, False])
def test_size_limit_checked_while_streaming(multipart: bool, tmp_path: Path) -> None:
    """The receiver stops at the limit: it never pulls the rest of a huge body."""
    seen: list[int] = []
    head = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")
    ctype = "multipart/form-data; boundary=b0undary" if multipart else "application/dicom"
    stream = _count_chunks(100_000, 1024, seen, head if multipart else b"")
    with pytest.raises(UploadTooLarge):
        asyncio.run(receive_upload(stream, ctype, tmp_path, max_bytes=8 * 1024))
    assert 8 <= len(seen) <= 10  # ~8 KiB read out of 100 MB
    # A declared Content-Length over the limit is refused before reading anything.
    seen.clear()
    stream = _count_chunks(100, 1024, seen)
    with pytest.raises(UploadTooLarge):
        asyncio.run(receive_upload(stream, "application/dicom", tmp_path / "", max_bytes=8192,
                                   content_length=100 * 1024))
    assert seen == []


def test_receive_upload_hashes_and_names(tmp_path: Path) -> None:
    data = np.random.default_rng(2).bytes(70_000)
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"../../etc/scan 1.dcm\"\r\nContent-Type: application/dicom\r\n\r\n"
            + data + b"\r\n--XX--\r\n")

    async def chunks():
        for i in range(0, len(body), 4096):
            yield body[i: i + 4096]

    up = asyncio.run(receive_upload(chunks(), "multipart/form-data; boundary=XX", tmp_path,
                                    max_bytes=100_000))
    assert up.path.read_bytes() == data
    assert up.size == len(data) and up.sha256 == hashlib.sha256(data).hexdigest()
    assert up.filename == "scan 1.dcm" and up.content_type == "application/dicom"
    assert up.tag == f"sha256:{up.sha256[:12]} ({len(data)} B)"
    assert (up.path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(UploadError) as err:
        asyncio.run(receive_upload(chunks(), "text/plain", tmp_path / "", max_bytes=10))
    assert err.value.status == 415


@pytest.mark.parametrize("given, expected", [
    ("../../etc/passwd", "passwd"), ("C:\\scans\\a.dcm", "a.dcm"), ("", "upload"),
    (None, "upload"), ("..", "upload"), ("a\x00b\nc.dcm", "abc.dcm"), ("x" * 300, "x" * 200),
])
def test_safe_filename(given, expected) -> None:
    assert safe_filename(given) == expected


# ---------------------------------------------------------------------- timeout, bugs
def test_timeout_504_and_late_cleanup(source_run: Path, dicom_bytes: bytes,  # noqa: F811
                                      tmp_path: Path) -> None:
    # thread isolation: the job cannot be stopped, so its file stays until it ends
    app = create_app(source_run, timeout_s=0.3, tmp_dir=tmp_path, isolation="thread")
    release = threading.Event()
    seen: list[bool] = []

    def slow(path: Path, filename: str, *, preview: bool = False) -> dict:
        release.wait(10)
        seen.append(path.exists())  # the file is still there while the job runs
        return {"verdict": "consistent"}

    app.state.service.identify = slow
    with TestClient(app) as c:
        t0 = time.monotonic()
        r = _post(c, "/v1/identify", dicom_bytes)
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        assert time.monotonic() - t0 < 5
        assert len(list(tmp_path.iterdir())) == 1  # job still running: file kept
        release.set()
        for _ in range(200):
            if not list(tmp_path.iterdir()):
                break
            time.sleep(0.02)
    assert seen == [True]
    assert list(tmp_path.iterdir()) == []


def test_unexpected_exception_is_500_json(source_run: Path,  # noqa: F811
                                          dicom_bytes: bytes) -> None:
    app = create_app(source_run)

    def broken(path: Path, filename: str, *, preview: bool = False) -> dict:
        raise RuntimeError("a bug")

    app.state.service.identify = broken
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _post(c, "/v1/identify", dicom_bytes)
    assert r.status_code == 500
    assert r.json()["error"] == "internal-error" and "RuntimeError" in r.json()["detail"]


def test_config_errors(source_run: Path, tmp_path: Path) -> None:  # noqa: F811
    from medforensics.errors import ConfigError, ModelFileError

    with pytest.raises(ModelFileError):
        create_app(tmp_path / "missing")
    with pytest.raises(ConfigError):
        create_app(source_run, max_upload_bytes=0)
    with pytest.raises(ConfigError):
        create_app(source_run, timeout_s=0)
    with pytest.raises(ConfigError):
        create_app(source_run, token="  ")


# ---------------------------------------------------------------------- privacy of logs
def test_logs_hold_no_patient_data(client: TestClient, dicom: Path, dicom_bytes: bytes,
                                   caplog: pytest.LogCaptureFixture) -> None:
    import pydicom

    ds = pydicom.dcmread(dicom, stop_before_pixels=True)
    with caplog.at_level(logging.DEBUG, logger="medforensics"):
        ok = _post(client, "/v1/identify", dicom_bytes, name="SMITH^JANE_1961.dcm")
        bad = _post(client, "/v1/identify", b"not an image", name="SMITH^JANE.txt")
        rep = _post(client, "/v1/report", dicom_bytes, name="SMITH^JANE_1961.dcm")
    assert ok.status_code == 200 and bad.status_code == 422 and rep.status_code in (200, 501)
    text = caplog.text
    assert hashlib.sha256(dicom_bytes).hexdigest()[:12] in text
    assert f"({len(dicom_bytes)} B)" in text
    for secret in ("SMITH", "JANE", str(ds.PatientID), str(ds.PatientName)):
        assert secret not in text, secret


# ---------------------------------------------------------------------- forgery and report
@pytest.fixture(scope="module")
def fake_detector() -> ContractForgeryDetector:
    return ContractForgeryDetector()


@pytest.fixture(scope="module")
def forgery_client(source_run: Path, fake_detector: ContractForgeryDetector):  # noqa: F811
    # in-process analyses: the tests look at what the detector object was called with
    app = create_app(source_run, fake_detector, isolation="thread")
    with TestClient(app) as c:
        yield c


def test_forgery_503_without_model(client: TestClient, dicom_bytes: bytes) -> None:
    r = _post(client, "/v1/forgery", dicom_bytes)
    assert r.status_code == 503
    assert r.json() == {"error": "no-forgery-model",
                        "detail": "no forgery model loaded (start the service with "
                                  "--forgery-model)"}


def test_forgery_with_contract_detector(forgery_client: TestClient,
                                        fake_detector: ContractForgeryDetector,
                                        dicom: Path, dicom_bytes: bytes) -> None:
    from medforensics.io import read_image

    h = forgery_client.get("/health").json()
    assert h["forgery_model"] is True
    models = forgery_client.get("/v1/models").json()
    assert models["forgery"]["detector"] == "ContractForgeryDetector"
    r = _post(forgery_client, "/v1/forgery", dicom_bytes, name="f.dcm")
    assert r.status_code == 200, r.text
    f = r.json()
    img = read_image(dicom)
    assert fake_detector.calls[-1] == (img.pixels.shape, "dicom")
    assert f["score"] == pytest.approx(0.9) and f["verdict"] == "tampered"
    assert f["ela_score"] == 0.25 and f["threshold"] == 0.5
    assert f["forged_area_percent"] == pytest.approx(6.25, abs=0.6)
    assert f["path"] == "f.dcm" and (f["rows"], f["cols"]) == img.pixels.shape
    overlay = _b64_png(f["overlay_png_b64"])
    hh, ww = img.pixels.shape
    assert overlay.shape == (hh, ww, 3)
    hot = overlay[hh // 4 + 2: hh // 2 - 2, ww // 4 + 2: ww // 2 - 2].astype(int)
    cold = overlay[3 * hh // 4:, 3 * ww // 4:].astype(int)
    assert (hot[..., 0] - hot[..., 2]).mean() > 100  # yellow where the map is 1
    assert np.abs(cold[..., 0] - cold[..., 2]).max() == 0  # untouched grey elsewhere


def test_forgery_detector_refusal_is_422(forgery_client: TestClient, tmp_path: Path) -> None:
    from medforensics.io import write_png8

    p = tmp_path / "tiny.png"
    write_png8(p, np.full((20, 20), 7, np.uint8))
    r = _post(forgery_client, "/v1/forgery", p.read_bytes(), name="tiny.png")
    assert r.status_code == 422 and r.json()["error"] == "invalid-image"
    assert "too small" in r.json()["detail"]


def test_report(client: TestClient, dicom: Path, dicom_bytes: bytes,
                source_run: Path) -> None:  # noqa: F811
    import pydicom

    r = _post(client, "/v1/report", dicom_bytes, name="SMITH^JANE.dcm")
    if importlib.util.find_spec("medforensics.report.html") is None:
        assert r.status_code == 501
        assert r.json()["error"] == "report-not-available"
        assert "render_case_report" in r.json()["detail"]
        return
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    page = r.text
    assert "<html" in page.lower() and "<script" not in page.lower()
    verdict = _post(client, "/v1/identify", dicom_bytes).json()["verdict"]
    assert verdict in page
    # provenance: the run's files are hashed (the service tells the report where the run is)
    weights = hashlib.sha256((source_run / "model.safetensors").read_bytes()).hexdigest()
    assert weights in page
    # identifiers masked by default, shown on request; never the server's temp path
    patient_id = str(pydicom.dcmread(dicom, stop_before_pixels=True).PatientID)
    assert patient_id not in page and "SMITH" not in page
    assert "medforensics-upload" not in page
    # unmasking is the server's choice, not the client's
    r = _post(client, "/v1/report?mask_identifiers=false", dicom_bytes, name="SMITH^JANE.dcm")
    assert r.status_code == 403 and r.json()["error"] == "unmasking-not-allowed"
    assert "--allow-unmasked-reports" in r.json()["detail"]
    with TestClient(create_app(source_run, allow_unmasked_reports=True)) as open_client:
        r = _post(open_client, "/v1/report?mask_identifiers=false", dicom_bytes,
                  name="SMITH^JANE.dcm")
        assert r.status_code == 200 and patient_id in r.text and "SMITH^JANE.dcm" in r.text
        assert "medforensics-upload" not in r.text
        r = _post(open_client, "/v1/report", dicom_bytes, name="SMITH^JANE.dcm")
        assert r.status_code == 200 and patient_id not in r.text
    r = _post(client, "/v1/report", b"not an image", name="x.txt")
    assert r.status_code == 422 and r.json()["error"] == "not-an-image-file"


# ---------------------------------------------------------------------- hosts, CLI
def test_host_guard(source_run: Path) -> None:  # noqa: F811
    from medforensics.service.server import is_loopback, loopback_hosts

    app = create_app(source_run, allowed_hosts=loopback_hosts("127.0.0.1"))
    with TestClient(app, base_url="http://evil.example") as c:
        assert c.get("/health").status_code == 400
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/health").status_code == 200
    with TestClient(app, base_url="http://localhost:8000") as c:
        assert c.get("/health").status_code == 200
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_cli_serve_refuses_open_host_without_token(source_run: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from medforensics.cli import app as cli

    runner = CliRunner()
    res = runner.invoke(cli, ["serve", "--source-model", str(source_run), "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "--token" in res.output
    res = runner.invoke(cli, ["serve", "--source-model", str(source_run) + "-missing"])
    assert res.exit_code == 3 and "not a directory" in res.output


# ---------------------------------------------------------------------- render helpers
def test_render_helpers() -> None:
    from medforensics.report.colours import heat_colours, heat_scale
    from medforensics.report.images import overlay_rgb, preview_grey

    assert heat_colours(np.array([0.0]))[0].tolist() == [1, 0, 0]  # red
    assert heat_colours(np.array([1.0]))[0].tolist() == [1, 1, 0]  # yellow
    assert heat_colours(np.array([np.nan, 7.0])).tolist() == [[1, 0, 0], [1, 1, 0]]
    scale = heat_scale(160, 10)  # the case report's colour scale: red on the left, yellow right
    assert scale.shape == (10, 160, 3) and scale.dtype == np.uint8
    assert scale[0, 0].tolist() == [255, 0, 0] and scale[0, -1].tolist() == [255, 255, 0]
    pix = np.random.default_rng(3).normal(2000, 300, (1200, 900)).astype(np.float32)
    g = preview_grey(pix)
    assert g.shape == (768, 576) and g.dtype == np.uint8
    ov = overlay_rgb(pix, np.zeros((100, 75), np.float32))  # resized to the image
    assert ov.shape == (768, 576, 3)
    assert np.array_equal(ov[..., 0], g) and np.array_equal(ov[..., 2], g)
    with pytest.raises(InvalidArrayError):
        preview_grey(np.zeros(5, np.float32))


def test_report_includes_forgery_section(forgery_client: TestClient, dicom_bytes: bytes) -> None:
    if importlib.util.find_spec("medforensics.report.html") is None:
        pytest.skip("no report module in this installation")
    r = _post(forgery_client, "/v1/report", dicom_bytes)
    assert r.status_code == 200
    assert "tampered" in r.text and "ContractForgeryDetector" in r.text


def test_real_forgery_detector_when_available(source_run: Path, dicom: Path,  # noqa: F811
                                              dicom_bytes: bytes, tmp_path: Path) -> None:
    """Before the forgery detector exists: a forgery run is refused at start-up with a clear
    error. Once it exists: its result (contract fields + overlay) comes out of /v1/forgery."""
    from medforensics.errors import ConfigError

    if importlib.util.find_spec("medforensics.forgery.detector") is None:
        with pytest.raises(ConfigError, match="no forgery detector"):
            create_app(source_run, tmp_path)
        return
    from medforensics.forgery.detector import ForgeryDetector

    app = create_app(source_run, ForgeryDetector.from_run(None))
    with TestClient(app) as c:
        r = _post(c, "/v1/forgery", dicom_bytes)
    assert r.status_code == 200, r.text
    f = r.json()
    for key in ("score", "verdict", "forged_area_percent", "ela_score"):
        assert f[key] is not None, key
    assert 0.0 <= f["score"] <= 1.0 and 0.0 <= f["forged_area_percent"] <= 100.0
    assert _b64_png(f["overlay_png_b64"]).shape[2] == 3


def test_real_detector_copy_pairs(source_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """/v1/forgery with the real detector: a symmetric clone comes with its copy-move pair,
    direction ``undetermined``, and both areas' regions say so."""
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.io import write_png16

    rng = np.random.default_rng(3)
    img = np.rint(2000 + rng.normal(0, 30, (256, 256))).astype(np.uint16)
    img[150:214, 140:204] = img[20:84, 20:84]
    clone = tmp_path / "clone.png"
    write_png16(clone, img)
    app = create_app(source_run, ForgeryDetector.from_run(None))
    with TestClient(app) as c:
        g = _post(c, "/v1/forgery", clone.read_bytes(), name="clone.png").json()
    assert g["verdict"] == "tampered"
    (pair,) = g["copy_moves"]
    assert pair["direction"] == "undetermined" and pair["pasted_bbox"] is None
    assert {r["copy_of"]["role"] for r in g["regions"] if "copy_of" in r} == {"undetermined"}


def test_real_detector_inconclusive(source_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """/v1/forgery with the real detector: an image with nothing to read is ``inconclusive``
    with its reason and covered fraction, and its ELA score is null (not 0)."""
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.io import write_png16

    flat = tmp_path / "flat.png"
    write_png16(flat, np.full((128, 128), 1000, np.uint16))
    app = create_app(source_run, ForgeryDetector.from_run(None))
    with TestClient(app) as c:
        f = _post(c, "/v1/forgery", flat.read_bytes(), name="flat.png").json()
    assert f["verdict"] == "inconclusive" and "nothing to read" in f["inconclusive_reason"]
    assert f["covered_fraction"] == 0.0 and f["ela_score"] is None


def test_page_marks_inconclusive_apart_from_authentic() -> None:
    """The page script colours ``inconclusive`` as a warning (not the green of authentic),
    shows its reason, and writes "not run" where there is no ELA score."""
    js = (Path(__file__).parents[1] / "src/medforensics/service/static/app.js").read_text()
    cls = js[js.index("function forgeryClass"):]
    cls = cls[:cls.index("\n  }\n")]
    assert cls.index("inconclusive") < cls.index("authentic")
    assert '"warn"' in cls.split("inconclusive")[1].split("\n")[0]
    assert "forgery-reason" in js and '"not run"' in js


def test_page_lists_undetermined_copy_moves() -> None:
    js = (Path(__file__).parents[1] / "src/medforensics/service/static/app.js").read_text()
    assert "direction undetermined" in js and "renderCopyMoves(f.copy_moves" in js


def test_oversized_frame_refused_from_header(source_run: Path,  # noqa: F811
                                             dicom_bytes: bytes) -> None:
    app = create_app(source_run, max_frame_pixels=10_000)
    with TestClient(app) as c:
        for ep in ("/v1/identify", "/v1/report"):
            r = _post(c, ep, dicom_bytes)
            assert r.status_code == 422 and r.json()["error"] == "too-large", ep
            assert "10000 pixels per frame" in r.json()["detail"]


def test_dicom_download_is_sr_and_seg_of_the_upload(forgery_client: TestClient, dicom: Path,
                                                    dicom_bytes: bytes) -> None:
    import zipfile

    import pydicom

    pytest.importorskip("highdicom")
    from medforensics.pacs.seg import seg_mask
    from medforensics.pacs.sr import report_summary

    r = _post(forgery_client, "/v1/dicom", dicom_bytes, name="case.dcm")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["seg.dcm", "sr.dcm"]
        sr = pydicom.dcmread(io.BytesIO(zf.read("sr.dcm")))
        seg = pydicom.dcmread(io.BytesIO(zf.read("seg.dcm")))
    src = pydicom.dcmread(dicom, stop_before_pixels=True)
    assert sr.Modality == "SR" and seg.Modality == "SEG"
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == src.StudyInstanceUID
    refs = {item.ReferencedSOPInstanceUID
            for s in seg.ReferencedSeriesSequence for item in s.ReferencedInstanceSequence}
    assert refs == {src.SOPInstanceUID}
    summary = report_summary(sr)
    assert summary  # the SR holds both sections
    text = str(sr)
    assert "Source device" in text and "Forgery" in text
    mask = seg_mask(seg)
    assert mask.shape == (src.Rows, src.Columns)
    # the contract detector's map is 1 in the upper-left quarter block and 0 elsewhere
    h, w = mask.shape
    assert mask[h // 4 + 2: h // 2 - 2, w // 4 + 2: w // 2 - 2].min() > 0.99
    assert mask[3 * h // 4:, 3 * w // 4:].max() == 0


def test_dicom_download_refuses_a_png(forgery_client: TestClient, tmp_path: Path) -> None:
    from medforensics.io import write_png16

    p = tmp_path / "x.png"
    write_png16(p, (np.arange(128 * 128, dtype=np.uint16).reshape(128, 128) * 3))
    r = _post(forgery_client, "/v1/dicom", p.read_bytes(), name="x.png")
    assert r.status_code == 422 and r.json()["error"] == "not-dicom"
