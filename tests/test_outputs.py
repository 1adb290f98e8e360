"""Outputs that are complete or absent: disk full in every output-writing command, file
names that are not UTF-8, and what ingest does with entries it cannot read.

A full disk is simulated by fault injection: the files the commands write go through
``medforensics.common.atomic._open_file`` (the store's pixel blob through the store module's
``open``), replaced here by files that raise ``ENOSPC`` once a byte budget is spent, after
writing what fits, as a real full disk does.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fixtures_service import service_archive, source_run  # noqa: F401
from test_manifest import _dicom
from typer.testing import CliRunner

from medforensics.cli import app
from medforensics.data.manifest import ingest, read_manifest, write_manifest
from medforensics.data.files import walk_roots
from medforensics.errors import OutputWriteError
from medforensics.common import atomic
from medforensics.common.atomic import JsonLinesOutput, atomic_output

runner = CliRunner()


class _FullDisk(io.RawIOBase):
    """A binary file that takes ``budget`` bytes (shared by all files), then ENOSPC."""

    def __init__(self, real: Any, budget: list[int]) -> None:
        self.real, self.budget = real, budget

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self.real.readinto(b)

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        room = self.budget[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real.write(data[:room])
        self.real.flush()
        self.budget[0] -= n
        return n

    def fileno(self) -> int:
        return self.real.fileno()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.real.seek(pos, whence)

    def tell(self) -> int:
        return self.real.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.real.truncate(size)

    def close(self) -> None:
        self.real.close()
        super().close()


def _full_disk_open(budget: int):
    left = [budget]

    def fake_open(path: Any, mode: str = "r", **kw: Any) -> Any:
        if "w" not in mode and "+" not in mode:
            return open(path, mode, **kw)
        binary = "b" in mode
        raw = _FullDisk(open(path, mode if binary else mode + "b", buffering=0),  # noqa: SIM115
                        left)
        buf = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
        if binary:
            return buf
        return io.TextIOWrapper(buf, encoding=kw.get("encoding") or "utf-8",
                                errors=kw.get("errors"), newline=kw.get("newline"))
    return fake_open


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial")))


def _assert_clean_failure(result: Any, where: Path | str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"error: cannot write {where}" in result.output
    assert "No space left on device" in result.output


@pytest.fixture()
def small_archive(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for i in range(6):
        _dicom(data / f"img_{i}.dcm", patient=f"P{i}", seed=i, size=(80, 80))
    return data


# ---------------------------------------------------------------------- the helpers
def test_atomic_output_whole_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(10))
    with pytest.raises(OutputWriteError) as err, atomic_output(target, "w") as fh:
        fh.write("x" * 100_000)
    assert err.value.path == str(target) and err.value.errno == errno.ENOSPC
    assert target.read_text() == "old\n"  # the earlier file is untouched
    assert _leftovers(tmp_path) == [] and len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()
    with pytest.raises(RuntimeError), atomic_output(target, "w") as fh:  # any other failure:
        fh.write("new")                                                  # nothing published
        raise RuntimeError("stop")
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_json_lines_keep_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = json.dumps({"path": "a" * 50, "verdict": "consistent"})
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(int(2.5 * (len(line) + 1))))
    out = JsonLinesOutput(tmp_path / "v.jsonl")
    with pytest.raises(OutputWriteError) as err:
        for _ in range(100):
            out.write(line)
    assert not (tmp_path / "v.jsonl").exists()
    partial = tmp_path / "v.jsonl.partial"
    assert err.value.partial == str(partial) and str(partial) in str(err.value)
    lines = partial.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and all(json.loads(x) for x in lines)
    assert all(x.endswith("\n") for x in lines)
    monkeypatch.undo()
    ok = JsonLinesOutput(tmp_path / "w.jsonl")
    ok.write(line)
    assert not (tmp_path / "w.jsonl").exists()  # the final name appears at the end only
    ok.close()
    assert (tmp_path / "w.jsonl").read_text() == line + "\n"
    assert not (tmp_path / "w.jsonl.partial").exists()


# ---------------------------------------------------------------------- the six commands
def test_ingest_and_split_disk_full(small_archive: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    manifest = out / "manifest.csv"
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(600))
    result = runner.invoke(app, ["ingest", str(small_archive), "--out", str(manifest),
                                 "--workers", "1", "--no-progress"])
    _assert_clean_failure(result, manifest)
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    result = runner.invoke(app, ["ingest", str(small_archive), "--out", str(manifest),
                                 "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    before = manifest.read_bytes()
    # split in place on a full disk: the manifest it read stays as it was
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(600))
    result = runner.invoke(app, ["split", str(manifest), "--test", "0.34", "--val", "0",
                                 "--stratify", "none"])
    _assert_clean_failure(result, manifest)
    assert manifest.read_bytes() == before and _leftovers(out) == []


def test_prepare_disk_full(small_archive: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    import medforensics.data.store.prepare as store_mod

    manifest = write_manifest(ingest([small_archive], workers=0, progress=False),
                              tmp_path / "m.csv")
    store = tmp_path / "store"
    monkeypatch.setattr(store_mod, "open", _full_disk_open(20_000), raising=False)
    result = runner.invoke(app, ["prepare", str(manifest), "--out", str(store),
                                 "--workers", "1", "--no-progress"])
    _assert_clean_failure(result, store / "pixels.bin")
    # the index on disk (none yet) describes the blob: nothing half-written is indexed
    assert not (store / "index.json").exists()
    assert (store / "pixels.bin").stat().st_size == 0
    assert _leftovers(store) == [] and not (store / ".prepare.lock").exists()
    monkeypatch.undo()
    result = runner.invoke(app, ["prepare", str(manifest), "--out", str(store),
                                 "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "6/6 eligible images cached" in result.output
    # and a full disk while writing the index
    (store / "index.json").unlink()
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(100))
    result = runner.invoke(app, ["prepare", str(manifest), "--out", str(store),
                                 "--workers", "1", "--no-progress"])
    _assert_clean_failure(result, store / "index.json")
    assert not (store / "index.json").exists() and _leftovers(store) == []


def test_report_disk_full(small_archive: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("medforensics.report")
    whole = tmp_path / "whole"
    assert runner.invoke(app, ["report", str(small_archive), "--out", str(whole)]).exit_code == 0
    sizes = [p.stat().st_size for p in sorted(whole.glob("case-*.html"))]
    out = tmp_path / "report"
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(sizes[0] + sizes[1] + 1000))
    result = runner.invoke(app, ["report", str(small_archive), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "No space left on device" in result.output
    pages = sorted(out.glob("*.html"))
    assert not (out / "index.html").exists()
    for page in pages:  # the pages that are there are whole
        assert page.read_text().rstrip().endswith("</html>")
    assert len(pages) == 2 and _leftovers(out) == []


def test_forgery_detect_disk_full(small_archive: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("medforensics.forgery.detector")
    out = tmp_path / "det.jsonl"
    maps = tmp_path / "maps"
    files = sorted(small_archive.glob("*.dcm"))[:3]
    monkeypatch.setattr(atomic, "_open_file", _full_disk_open(60_000))
    result = runner.invoke(app, ["forgery", "detect", "none", *map(str, files), "--out",
                                 str(out), "--maps", str(maps), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "No space left on device" in result.output
    assert not out.exists()
    assert _leftovers(tmp_path) == [p for p in _leftovers(tmp_path) if p.endswith(".partial")]
    for npy in maps.glob("*.npy"):  # every map written is whole
        assert np.load(npy, allow_pickle=False).shape == (80, 80)
    for partial in tmp_path.glob("*.partial"):
        assert all(json.loads(x) for x in partial.read_text().splitlines())


def test_identify_out_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                source_run: Path, service_archive) -> None:  # noqa: F811
    files = [r["path"] for r in service_archive.rows if r.get("status") == "eligible"][:4]
    out = tmp_path / "ids.jsonl"
    first = runner.invoke(app, ["identify", str(source_run), *files, "--out", str(out),
                                "--no-progress"])
    assert first.exit_code == 0, first.output
    good = out.read_text().splitlines()
    assert len(good) == 4
    out.unlink()
    monkeypatch.setattr(atomic, "_open_file",
                        _full_disk_open(len(good[0]) + len(good[1]) + 2 + 10))
    result = runner.invoke(app, ["identify", str(source_run), *files, "--out", str(out),
                                 "--no-progress"])
    _assert_clean_failure(result, out)
    assert not out.exists()
    partial = tmp_path / "ids.jsonl.partial"
    assert str(partial) in result.output
    assert partial.read_text().splitlines() == good[:2]


# ---------------------------------------------------------------------- names and entries
def test_non_utf8_name_is_kept(small_archive: Path, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    raw = os.path.join(os.fsencode(small_archive), b"R\xf6ntgen-\xff.dcm")
    with open(raw, "wb") as fh:
        fh.write((small_archive / "img_0.dcm").read_bytes())
    manifest = tmp_path / "m.csv"
    result = runner.invoke(app, ["ingest", str(small_archive), "--out", str(manifest),
                                 "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _leftovers(tmp_path) == []
    rows = read_manifest(manifest)
    assert len(rows) == 7
    odd = [r for r in rows if "\udcff" in r["path"]]
    assert len(odd) == 1 and os.fsencode(odd[0]["path"]) == raw
    assert odd[0]["status"] == "eligible"  # sorts first; img_0.dcm has the same bytes
    assert next(r for r in rows if r["path"].endswith("img_0.dcm"))["status"] == "duplicate"
    assert Path(odd[0]["path"]).is_file()  # the path read back opens the file
    assert b"R\xf6ntgen-\xff.dcm" in manifest.read_bytes()  # written as its bytes
    with caplog.at_level("WARNING", logger="medforensics"):
        write_manifest(rows, tmp_path / "again.csv")
    assert "not valid UTF-8" in caplog.text
    assert (tmp_path / "again.csv").read_bytes() == manifest.read_bytes()


def test_entries_not_read_get_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    _dicom(root / "good.dcm", patient="P1", seed=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("not for ingest\n")
    os.symlink(secret, root / "to-secret")
    os.symlink(root / "good.dcm", root / "inside-link.dcm")
    os.symlink(root / "missing.dcm", root / "dangling.dcm")
    os.symlink(outside, root / "folder-link")
    os.mkfifo(root / "pipe")
    locked = root / "locked"
    locked.mkdir()
    _dicom(locked / "hidden.dcm", patient="P2", seed=2)
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # an unreadable folder, also when run as root
        if os.fspath(path) == os.fspath(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rows = {Path(r["path"]).name: r for r in ingest([root], workers=0, progress=False)}
    assert rows["good.dcm"]["status"] == "eligible"
    assert rows["inside-link.dcm"]["status"] == "duplicate"  # a link inside: read
    assert rows["to-secret"]["status"] == "link-outside-roots"
    assert str(secret) in rows["to-secret"]["reason_detail"]
    assert rows["to-secret"]["sha256"] == ""  # never opened
    assert rows["dangling.dcm"]["status"] == "unreadable"
    assert rows["dangling.dcm"]["reason_detail"].startswith("dangling-link")
    assert rows["pipe"]["status"] == "not-a-regular-file"
    assert "FIFO" in rows["pipe"]["reason_detail"]
    assert rows["folder-link"]["status"] == "not-a-regular-file"
    assert rows["locked"]["status"] == "unreadable"
    assert rows["locked"]["reason_detail"].startswith("file-access: cannot list the folder")
    assert len(rows) == 7
    # asked for: the link outside is read (and is not an image)
    rows = {Path(r["path"]).name: r for r in ingest([root], workers=0, progress=False,
                                                    follow_links_outside=True)}
    assert rows["to-secret"]["status"] == "unreadable"
    assert rows["to-secret"]["reason_detail"].startswith("not-an-image-file")
    walk = walk_roots([root])
    assert str(root / "good.dcm") in walk.files and len(walk.skipped) == 5


def test_cli_follow_links_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _dicom(root / "good.dcm", patient="P1", seed=1)
    _dicom(tmp_path / "elsewhere.dcm", patient="P2", seed=2)
    os.symlink(tmp_path / "elsewhere.dcm", root / "link.dcm")
    for flag, status in (([], "link-outside-roots"), (["--follow-links-outside"], "eligible")):
        out = tmp_path / f"m{len(flag)}.csv"
        result = runner.invoke(app, ["ingest", str(root), "--out", str(out), "--workers", "1",
                                     "--no-progress", "--min-size", "8", *flag])
        assert result.exit_code == 0, result.output
        rows = {Path(r["path"]).name: r for r in read_manifest(out)}
        assert rows["link.dcm"]["status"] == status


def _variant(src: Path, dst: Path, **changes: Any) -> Path:
    ds = pydicom.dcmread(src)
    extra = changes.pop("extra_pixel_bytes", 0)
    high = changes.pop("high_bits", 0)
    for k, v in changes.items():
        setattr(ds, k, v)
    if high:
        arr = np.frombuffer(ds.PixelData, np.uint16).copy()
        arr[:high] |= 0xF000  # values above BitsStored=12 (overlay bits)
        ds.PixelData = arr.tobytes()
    if extra:
        ds.PixelData = ds.PixelData + b"\0" * extra
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_pixel_header_anomalies(tmp_path: Path) -> None:
    base = _dicom(tmp_path / "src" / "base.dcm", patient="P0", seed=3, size=(80, 80))
    d = tmp_path / "d"
    d.mkdir()
    _variant(base, d / "blank.dcm", RescaleSlope="0", RescaleIntercept="100",
             SOPInstanceUID=pydicom.uid.generate_uid())
    _variant(base, d / "bigger.dcm", extra_pixel_bytes=80 * 2 * 20,
             SOPInstanceUID=pydicom.uid.generate_uid())
    _variant(base, d / "overlay.dcm", high_bits=37, SOPInstanceUID=pydicom.uid.generate_uid())
    rows = {Path(r["path"]).name: r for r in ingest([d], workers=0, progress=False,
                                                    verify=True)}
    assert rows["blank.dcm"]["status"] == "blank-image"
    assert "RescaleSlope is 0" in rows["blank.dcm"]["reason_detail"]
    assert rows["bigger.dcm"]["status"] == "eligible"
    assert "3200 bytes are not part of the image" in rows["bigger.dcm"]["reason_detail"]
    assert rows["overlay.dcm"]["status"] == "eligible"
    assert "37 stored value(s) use bits above BitsStored=12" in \
        rows["overlay.dcm"]["reason_detail"]
    # without --verify the header notes are there, the pixel one is not (nothing decoded)
    rows = {Path(r["path"]).name: r for r in ingest([d], workers=0, progress=False)}
    assert "not part of the image" in rows["bigger.dcm"]["reason_detail"]
    assert rows["overlay.dcm"]["reason_detail"] == ""
