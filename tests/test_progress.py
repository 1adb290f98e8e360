"""The progress policy shared by the library and the command line (common/progress.py)."""

from __future__ import annotations

import logging

import pytest

from medforensics.common.progress import (
    ProgressReport,
    iter_progress,
    library_mode,
    tick_progress,
)


def test_redirected_stderr_gets_lines_not_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    lines: list[str] = []
    report = ProgressReport("ingest", 10, None, every=4, emit=lines.append)
    assert report.mode == "lines"
    for n in (3, 3, 3, 1):  # chunks: a line whenever a multiple of 4 is passed, and at the end
        report.advance(n)
    report.close()
    assert [line.split(" (")[0] for line in lines] == [
        "ingest: 6/10 files", "ingest: 9/10 files", "ingest: 10/10 files"]


def test_switched_off_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="medforensics.progress"):
        assert list(iter_progress(range(5), 5, "x", False, every=1)) == list(range(5))
        with tick_progress("y", False, every=1) as tick:
            tick(1, 2)
    assert not caplog.records


def test_library_flag_never_forces_a_bar(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert library_mode(True) is None and library_mode(False) is False
    with caplog.at_level(logging.INFO, logger="medforensics.progress"):
        out = list(iter_progress(range(4), 4, "evaluate", library_mode(True), unit="images",
                                 every=2))
    assert out == [0, 1, 2, 3]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "evaluate: 2/4 images", "evaluate: 4/4 images"]
