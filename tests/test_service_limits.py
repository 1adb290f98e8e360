"""A service that stays up: slow clients, overrunning analyses (loopback, bounded loops)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from fixtures_service import service_archive, source_run  # noqa: F401

from medforensics.errors import ConfigError
from medforensics.service.app import create_app
from medforensics.service.isolation import (
    AnalysisCrashed,
    AnalysisTimeout,
    run_forked,
)
from medforensics.service.server import BackgroundServer, ConnectionLimits

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HALF_HEADER = b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"


def _open(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        s.sendall(data)
    return s


def _closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``s`` (b"" for a bare close), or None when the
    connection is still open after ``within`` seconds."""
    s.settimeout(0.2)
    got = b""
    t_end = time.monotonic() + within
    while time.monotonic() < t_end:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return got
        if not chunk:
            return got
        got += chunk
    return None


def _dicom_bytes(archive) -> bytes:
    row = next(r for r in archive.rows if r.get("split") == "test")
    return Path(row["path"]).read_bytes()


# ---------------------------------------------------------------------- slow connections
def test_half_headers_do_not_starve_authenticated_clients(source_run: Path) -> None:  # noqa: F811
    limits = ConnectionLimits(header_timeout_s=3.0, body_timeout_s=2.0, max_pending=16,
                              max_pending_per_client=8, limit_concurrency=64)
    app = create_app(source_run, token=TOKEN)
    socks: list[socket.socket] = []
    with BackgroundServer(app, limits=limits) as srv:
        try:
            for _ in range(80):  # more than limit_concurrency; never completed
                socks.append(_open(srv.port, HALF_HEADER))
            t0 = time.monotonic()
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                for _ in range(5):
                    r = c.get("/v1/models", headers=AUTH)
                    assert r.status_code == 200, r.text
                assert c.get("/v1/models").status_code == 401  # answered, not 503
            assert time.monotonic() - t0 < 10
            # the flood evicted itself: at most max_pending_per_client are still waiting ...
            first = [_closed_by_server(s, 0.3) for s in socks]
            still_open = [s for s, a in zip(socks, first) if a is None]
            assert len(still_open) <= limits.max_pending_per_client
            # ... and those are closed at the header deadline, with a 408. Evicted ones are
            # closed without an answer (on a loaded machine the server may accept a
            # connection late, so evictions can still happen after the first look)
            later = [_closed_by_server(s, limits.header_timeout_s + 3) for s in still_open]
            assert all(a is not None for a in later)
            answers = [a for a in first if a is not None] + later
            assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers), answers
            assert any(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        finally:
            for s in socks:
                s.close()


def test_silent_connection_and_stalled_body_are_closed(source_run: Path) -> None:  # noqa: F811
    limits = ConnectionLimits(header_timeout_s=1.0, body_timeout_s=1.0)
    app = create_app(source_run, token=TOKEN)
    with BackgroundServer(app, limits=limits) as srv:
        silent = _open(srv.port, b"")
        assert _closed_by_server(silent, 4) == b""  # no request began: closed without answer
        silent.close()
        # an unauthenticated upload is refused before its body is read; the rest of the
        # body has body_timeout_s, then the connection is closed
        head = (b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/dicom\r\nContent-Length: 100000\r\n\r\n")
        s = _open(srv.port, head + b"x" * 10)
        got = _closed_by_server(s, 5)
        assert got is not None and got.startswith(b"HTTP/1.1 401")
        s.close()
        # an authenticated upload whose body stalls is closed after body_timeout_s
        head_auth = head.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                                 .encode())
        s = _open(srv.port, head_auth + b"x" * 10)
        t0 = time.monotonic()
        assert _closed_by_server(s, 6) is not None
        assert time.monotonic() - t0 < 6
        s.close()
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/v1/models", headers=AUTH).status_code == 200


def test_connection_limits_are_checked() -> None:
    with pytest.raises(ConfigError):
        ConnectionLimits(header_timeout_s=0)
    with pytest.raises(ConfigError):
        ConnectionLimits(max_pending=300, limit_concurrency=256)
    with pytest.raises(ConfigError):
        ConnectionLimits(max_pending=4, max_pending_per_client=8)


# ---------------------------------------------------------------------- overrunning analyses
def test_timed_out_analysis_is_killed_and_next_request_served(
        source_run: Path, service_archive, tmp_path: Path) -> None:  # noqa: F811
    app = create_app(source_run, timeout_s=1.5, workers=1, tmp_dir=tmp_path / "up")
    real_identify = app.state.service.identify
    pid_file = tmp_path / "slow.pid"

    def identify(path: Path, filename: str, *, preview: bool = False) -> dict:
        if filename == "slow.dcm":  # runs in the child process
            pid_file.write_text(str(os.getpid()))
            time.sleep(60)
        return real_identify(path, filename, preview=preview)

    app.state.service.identify = identify
    data = _dicom_bytes(service_archive)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        t0 = time.monotonic()
        r = c.post("/v1/identify", files={"file": ("slow.dcm", data)})
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        assert time.monotonic() - t0 < 6
        child = int(pid_file.read_text())
        for _ in range(100):  # the child was killed and reaped
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"analysis process {child} still alive after its 504")
        # the only worker is free again: the next request is served, within its limit
        t1 = time.monotonic()
        r = c.post("/v1/identify", files={"file": ("next.dcm", data)})
        assert r.status_code == 200, r.text
        assert r.json()["verdict"]
        assert time.monotonic() - t1 < 1.5 + 1
        for _ in range(100):  # both uploads deleted
            if not any((tmp_path / "up").iterdir()):
                break
            time.sleep(0.05)
        assert not any((tmp_path / "up").iterdir())


def _sleep_then(value: object, seconds: float) -> object:
    time.sleep(seconds)
    return value


def _raise_value_error() -> None:
    raise ValueError("boom")


def test_run_forked_results_errors_and_deadline() -> None:
    from medforensics.service.analysis import InputError

    assert run_forked(_sleep_then, ({"a": [1, 2.5, None]}, 0), deadline=time.monotonic() + 20) \
        == {"a": [1, 2.5, None]}

    def refuse() -> None:
        raise InputError("too-large", "no", 422)

    with pytest.raises(InputError) as err:
        run_forked(refuse, (), deadline=time.monotonic() + 20)
    assert err.value.reason == "too-large" and err.value.status == 422
    with pytest.raises(AnalysisCrashed) as crash:
        run_forked(_raise_value_error, (), deadline=time.monotonic() + 20)
    assert crash.value.kind == "ValueError"
    with pytest.raises(AnalysisCrashed, match="signal 9"):
        run_forked(lambda: os.kill(os.getpid(), 9), (), deadline=time.monotonic() + 20)
    t0 = time.monotonic()
    with pytest.raises(AnalysisTimeout):
        run_forked(_sleep_then, (1, 30), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(AnalysisTimeout):
        run_forked(_sleep_then, (1, 0), deadline=time.monotonic() - 1)
