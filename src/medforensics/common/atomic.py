"""Outputs that are complete or absent: write to a temporary file, then rename.

Every command that writes a result file goes through these helpers, so that a full disk, a
quota, a read-only folder or an interrupted process never leaves a truncated file under the
output's name:

- :func:`atomic_output`: a context manager giving a file object on a temporary file next to
  the target (same folder, so the rename is atomic); on a clean exit the file is flushed,
  synced and renamed over the target; on any error the temporary file is removed.
- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_save_npy`: one-shot
  forms.
- :class:`JsonLinesOutput`: streamed JSON lines. Lines go to ``NAME.partial`` as they come,
  one whole line at a time; :meth:`JsonLinesOutput.close` renames it to ``NAME``. When a
  write fails, the partial file is cut back to its last whole line (so every line in it
  parses) and kept, and the error names it.

Write failures (``OSError``) become :class:`medforensics.errors.OutputWriteError`, which names
the output and says that nothing was left under its name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from medforensics.errors import OutputWriteError

__all__ = [
    "JsonLinesOutput",
    "atomic_output",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "temporary_name",
]

PARTIAL_SUFFIX = ".partial"


def _open_file(path: str | os.PathLike[str], mode: str, **kw: Any) -> IO[Any]:
    """``open`` for every temporary output file (one place for fault injection in tests)."""
    return open(path, mode, **kw)


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """A hidden, unique temporary name next to ``path`` (same folder, same file system)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _sync(fh: IO[Any]) -> None:
    fh.flush()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = None,
                  errors: str | None = None, newline: str | None = None,
                  fsync: bool = True) -> Iterator[IO[Any]]:
    """Write ``path`` whole or not at all.

    Args:
        path: the output file; its folder is created when missing.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding (default UTF-8 in text mode).
        errors: text encoding error handler (e.g. ``"surrogateescape"``).
        newline: as for :func:`open`.
        fsync: sync the data to disk before the rename.

    Yields:
        A file object on a temporary file next to ``path``.

    Raises:
        OutputWriteError: the folder cannot be created, or a write, the sync or the rename
            failed (disk full, ...); the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes new files ('w' or 'wb'), not {mode!r}")
    target = Path(path)
    kw: dict[str, Any] = {}
    if "b" not in mode:
        kw = {"encoding": encoding or "utf-8", "errors": errors, "newline": newline}
    tmp = temporary_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fh = _open_file(tmp, mode, **kw)
    except OSError as exc:
        _remove(tmp)
        raise OutputWriteError(target, exc) from None
    try:
        try:
            yield fh
            if fsync:
                _sync(fh)
        finally:
            fh.close()
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        if isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(target, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_output`. Returns the path."""
    with atomic_output(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      errors: str | None = None) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_output`. Returns the path."""
    with atomic_output(path, "w", encoding=encoding, errors=errors, newline="") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file and rename it to ``path``.

    For writers that take a file object (``PIL.Image.save(fh, format=...)``,
    ``np.save(fh, ...)``). Returns the path.
    """
    with atomic_output(path, "wb") as fh:
        write(fh)
    return Path(path)


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """``np.save`` (no pickles) through :func:`atomic_output`. Returns the path."""
    import numpy as np

    return atomic_write_with(path, lambda fh: np.save(fh, array, allow_pickle=False))


class JsonLinesOutput:
    """Stream JSON lines to ``path``: every line is whole, the final name appears at the end.

    Lines are written to ``path + ".partial"`` and flushed one by one (a reader of the
    partial file sees whole lines only); :meth:`close` syncs and renames it to ``path``. When
    a write fails (disk full, ...), the partial file is cut back to its last whole line and
    kept, and :class:`OutputWriteError` names both files. An interrupted run (Ctrl-C, kill)
    leaves only the partial file, never a ``path`` that looks complete.

    Args:
        path: the final output file (its folder is created when missing).

    Raises:
        OutputWriteError: the partial file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.lines = 0
        self._good = 0  # byte offset of the end of the last whole line
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[bytes] | None = _open_file(self.partial, "wb")
        except OSError as exc:
            raise OutputWriteError(self.path, exc) from None

    def write(self, line: str) -> None:
        """Append one line (``line`` must not hold a newline; one is added)."""
        if self._fh is None:
            raise ValueError(f"{self.partial}: already closed")
        data = (line + "\n").encode("utf-8", "surrogateescape")
        try:
            self._fh.write(data)
            self._fh.flush()
        except OSError as exc:
            self._fail(exc)
        self._good += len(data)
        self.lines += 1

    def _fail(self, exc: OSError) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError, ValueError):
                fh.close()  # may fail again flushing the rest of the buffer
        try:
            os.truncate(self.partial, self._good)
            kept: Path | None = self.partial if self._good else None
        except OSError:
            kept = None
        if kept is None:
            _remove(self.partial)
        raise OutputWriteError(self.path, exc, partial=kept) from None

    def close(self) -> Path:
        """Sync the partial file and rename it to the final name. Returns the final path."""
        if self._fh is None:
            return self.path
        try:
            _sync(self._fh)
            self._fh.close()
            self._fh = None
            os.replace(self.partial, self.path)
        except OSError as exc:
            self._fail(exc)
        return self.path

    def abandon(self) -> None:
        """Stop without publishing: close the partial file (whole lines only) and keep it."""
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError, ValueError):
                fh.close()
            with contextlib.suppress(OSError):
                os.truncate(self.partial, self._good)
