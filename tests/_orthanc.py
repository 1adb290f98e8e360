"""A throw-away Orthanc PACS with its DICOMweb plugin, for the ``pacs`` tests.

``from _orthanc import orthanc  # noqa: F401`` gives a fixture yielding an :class:`Orthanc`:
the server runs on free loopback ports with a temporary configuration and storage, and is
stopped (by its process id) when the test module ends. The fixture skips, saying why, when
Orthanc or its DICOMweb plugin is not installed (Debian: ``apt-get install orthanc
orthanc-dicomweb``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: where Debian's orthanc-dicomweb puts the plugin
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"),
               Path("/usr/local/share/orthanc/plugins"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_orthanc() -> tuple[str, Path] | None:
    """``(Orthanc executable, DICOMweb plugin)``, or None when either is missing."""
    exe = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None)
    plugin = next((d / "libOrthancDicomWeb.so" for d in PLUGIN_DIRS
                   if (d / "libOrthancDicomWeb.so").is_file()), None)
    return None if exe is None or plugin is None else (exe, plugin)


@dataclass
class Orthanc:
    """A running Orthanc: ``url`` is its HTTP root, ``dicomweb`` its DICOMweb root."""

    url: str
    dicomweb: str
    process: subprocess.Popen
    log: Path
    user: str
    password: str

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance (REST API)."""
        req = urllib.request.Request(self.url + "/instances")
        req.add_header("Authorization", _basic(self.user, self.password))
        with urllib.request.urlopen(req, timeout=10) as r:
            return list(json.loads(r.read()))


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def start_orthanc(workdir: Path, *, user: str = "scanner", password: str = "s3cret",
                  timeout: float = 30.0) -> Orthanc:
    """Start Orthanc on free loopback ports with storage under ``workdir``; wait for it.

    HTTP basic authentication is on (``user`` / ``password``), remote access off, the
    DICOM (DIMSE) port bound to a free port as well.

    Raises:
        RuntimeError: it did not answer within ``timeout`` seconds (its log is quoted).
    """
    found = find_orthanc()
    if found is None:
        raise RuntimeError("Orthanc or its DICOMweb plugin is not installed")
    exe, plugin = found
    http, dimse = _free_port(), _free_port()
    cfg = {
        "Name": "medforensics-test",
        "StorageDirectory": str(workdir / "db"),
        "IndexDirectory": str(workdir / "db"),
        "HttpPort": http,
        "DicomPort": dimse,
        "DicomAet": "MFTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "HttpServerEnabled": True,
        "StorageCompression": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        "HttpThreadsCount": 4,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "orthanc.json"
    conf.write_text(json.dumps(cfg, indent=1))
    log = workdir / "orthanc.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([exe, str(conf)], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True)
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            req = urllib.request.Request(url + "/system")
            req.add_header("Authorization", _basic(user, password))
            with urllib.request.urlopen(req, timeout=2):
                return Orthanc(url=url, dicomweb=url + "/dicom-web", process=proc, log=log,
                               user=user, password=password)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_orthanc(proc)
    raise RuntimeError(f"Orthanc did not start: {log.read_text(errors='replace')[-2000:]}")


def stop_orthanc(proc: subprocess.Popen) -> None:
    """Stop the Orthanc process started here (SIGTERM, then SIGKILL after 10 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A running Orthanc with DICOMweb and basic auth (module-scoped); skips when absent."""
    if find_orthanc() is None:
        pytest.skip("Orthanc and its DICOMweb plugin are not installed "
                    "(Debian: apt-get install orthanc orthanc-dicomweb)")
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        stop_orthanc(server.process)
