"""Progress on stderr, one policy for the library and the command line.

A rich bar is drawn on stderr only when it is a terminal (or when a bar is asked for
explicitly); when stderr is redirected, a plain line every ``every`` items says how far the
work is, so logs stay readable; switched off, nothing is shown. The command line prints the
plain lines; library code logs them (INFO), so they follow the caller's logging setup.

``enabled`` everywhere: ``None`` a bar on a terminal, lines otherwise; ``True`` a bar even when
stderr is not a terminal; ``False`` nothing. A library function's ``progress: bool`` maps to
``None`` (on) or ``False`` (off) through :func:`library_mode`, so library code never draws
on a redirected stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Self, TypeVar

__all__ = [
    "PROGRESS_EVERY",
    "ProgressCallback",
    "ProgressReport",
    "iter_progress",
    "library_mode",
    "show_progress",
    "tick_progress",
]

T = TypeVar("T")
log = logging.getLogger("medforensics.progress")

#: Items between two progress lines when stderr is not a terminal.
PROGRESS_EVERY = 100
#: ``(done, total)``: how library functions that work in steps report how far they are.
ProgressCallback = Callable[[int, int], None]


def show_progress(enabled: bool | None) -> bool:
    """Whether to draw a bar: as asked, else only when stderr is a terminal."""
    return sys.stderr.isatty() if enabled is None else bool(enabled)


def library_mode(progress: bool) -> bool | None:
    """A library function's ``progress`` flag as an ``enabled`` value: on means a bar on a
    terminal and log lines otherwise (never a bar on a redirected stderr), off means
    nothing."""
    return None if progress else False


class ProgressReport:
    """How far a piece of work is, reported by :meth:`update` / :meth:`advance`.

    The bar starts with the ``with`` block or at the first update, whichever comes first,
    so code that forks worker processes can create the report before forking and the bar's
    drawing thread still starts after the workers exist.

    Args:
        label: what is being done (shown before the count).
        total: items to do (None: unknown; may be given later by :meth:`update`).
        enabled: see the module docstring.
        unit: the items' plural noun, for the lines and the rate.
        every: items between two lines when there is no bar (0: no lines).
        emit: where lines go (default: an INFO log record).
    """

    def __init__(self, label: str, total: int | None, enabled: bool | None, *,
                 unit: str = "files", every: int = PROGRESS_EVERY,
                 emit: Callable[[str], Any] | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.every = max(0, int(every))
        self.emit = emit or log.info
        self.mode = "off" if enabled is False else ("bar" if show_progress(enabled) else "lines")
        self.done = 0
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0

    # -------------------------------------------------------------- reporting
    def advance(self, n: int = 1, note: str = "") -> None:
        """``n`` more items done; ``note`` is shown next to the bar (e.g. a running loss)."""
        self.update(self.done + n, note=note)

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """``done`` items of ``total`` (the known total when None) are done."""
        self.done = done
        if total is not None:
            self.total = total
        if self.mode == "bar":
            self._start()
            self._bar.update(self._task, completed=done, total=self.total, rate=self.rate(),
                             note=note)
        elif self.mode == "lines" and self._line_due():
            self._last_line = done
            of = "" if self.total is None else f"/{self.total}"
            self.emit(f"{self.label}: {done}{of} {self.unit} ({self.rate()})")

    def _line_due(self) -> bool:
        if not self.every or self.done <= self._last_line:
            return False
        crossed = self.done // self.every > self._last_line // self.every
        last = self.total is not None and self.done == self.total and self.done >= self.every
        return crossed or last

    def rate(self) -> str:
        """Items per second so far, with the unit."""
        return f"{self.done / max(self.seconds, 1e-9):.1f} {self.unit}/s"

    @property
    def seconds(self) -> float:
        """Seconds since the report was created."""
        return time.perf_counter() - self.t0

    # -------------------------------------------------------------- the bar
    def _start(self) -> None:
        if self._bar is not None or self.mode != "bar":
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                             TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(escape(self.label), total=self.total,
                                        completed=self.done, rate="", note="")

    def close(self) -> None:
        """Remove the bar (it is transient); lines need no closing."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_progress(items: Iterable[T], total: int | None, label: str, enabled: bool | None,
                  *, unit: str = "files", every: int = PROGRESS_EVERY,
                  emit: Callable[[str], Any] | None = None) -> Iterator[T]:
    """Yield ``items`` while reporting each one as done (see :class:`ProgressReport`)."""
    if enabled is False:
        yield from items
        return
    with ProgressReport(label, total, enabled, unit=unit, every=every, emit=emit) as report:
        for item in items:
            report.advance()
            yield item


@contextmanager
def tick_progress(label: str, enabled: bool | None, *, unit: str = "files",
                  every: int = PROGRESS_EVERY, emit: Callable[[str], Any] | None = None
                  ) -> Iterator[ProgressCallback]:
    """A ``(done, total)`` callback for functions that report progress that way."""
    with ProgressReport(label, None, enabled, unit=unit, every=every, emit=emit) as report:
        yield lambda done, total: report.update(done, total)
