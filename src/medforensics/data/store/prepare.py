"""Writing the decoded-pixel store: :func:`prepare_store` decodes each eligible manifest image
once, in parallel worker processes, and appends it to the blob (see :mod:`medforensics.data.
store` for the layout). Re-running it on the same store decodes only what is new or changed;
a lock file keeps two writers apart, and the index is saved every few seconds so that an
interrupted prepare keeps what it decoded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.common.hashing import file_sha256
from medforensics.common.progress import ProgressReport, library_mode
from medforensics.common.workers import with_parent_watch
from medforensics.data.manifest import read_manifest
from medforensics.data.store.format import (
    ALIGN,
    BLOB_NAME,
    CHECKPOINT_SECONDS,
    INDEX_NAME,
    LOCK_NAME,
    PAPER_SIZE,
    encode_exact,
    entry_end,
    new_index,
    read_index,
    select_rows,
    write_index,
)
from medforensics.data.transforms import paper_preprocess
from medforensics.errors import ConfigError, OutputWriteError, ReadError, StoreError
from medforensics.io import read_image

log = logging.getLogger(__name__)

__all__ = ["PrepareFailure", "PrepareReport", "prepare_store"]

# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareFailure:
    """One image that could not be cached.

    Attributes:
        path: manifest path.
        reason: machine-readable reason: a ReadError reason (``decode-failed``, ...),
            ``sha256-mismatch`` (file changed since the manifest was written), ``file-access``
            or ``reader-bug`` (an unexpected exception; please report).
        detail: human-readable message.
    """

    path: str
    reason: str
    detail: str


@dataclass
class PrepareReport:
    """What :func:`prepare_store` did.

    Attributes:
        store: the store directory.
        n_rows: manifest rows seen.
        n_selected: eligible rows selected (all splits, or those asked for).
        n_decoded: images decoded by this call.
        n_reused: selected rows already in the store with the same sha256 (not decoded).
        n_duplicates: selected rows whose content was already stored under another path.
        failures: images that could not be cached (also in ``index.json``); never fatal.
        skipped: counts of rows not selected, by reason (status, split).
        seconds: wall time.
        bytes_written: bytes appended to the blob.
        workers: decode processes used (0 = in this process).
    """

    store: Path
    n_rows: int = 0
    n_selected: int = 0
    n_decoded: int = 0
    n_reused: int = 0
    n_duplicates: int = 0
    failures: list[PrepareFailure] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bytes_written: int = 0
    workers: int = 0

    @property
    def images_per_second(self) -> float:
        """Decoded images per second of wall time (0 when nothing was decoded)."""
        return self.n_decoded / self.seconds if self.seconds > 0 and self.n_decoded else 0.0

    @property
    def n_cached(self) -> int:
        """Selected rows now served by the store."""
        return self.n_selected - len(self.failures)


class _Lock:
    """``STORE/.prepare.lock`` (O_EXCL): one ``prepare`` per store at a time."""

    def __init__(self, store: Path) -> None:
        self.path = store / LOCK_NAME

    def __enter__(self) -> _Lock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid > 0 and _pid_alive(pid):
                    raise StoreError(
                        f"{self.path.parent}: another prepare (pid {pid}) is writing this store"
                    ) from None
                log.warning("removing stale lock %s (pid %s is gone)", self.path, pid or "?")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise StoreError(f"{self.path}: cannot take the store lock")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# decoding (runs in worker processes)
# --------------------------------------------------------------------------------------------


def _init_worker() -> None:
    """Process-pool initializer: one thread per worker, no pydicom value warnings."""
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def _decode_task(path: str, expected_sha: str, want_pixels: bool, want_paper: bool
                 ) -> dict[str, Any]:
    """Hash and decode one file. Never raises: failures come back as a ``reason``."""
    out: dict[str, Any] = {"path": path, "sha256": "", "pixels": None, "paper": None,
                           "reason": "", "detail": ""}
    try:
        sha = file_sha256(path)
    except OSError as exc:
        out.update(reason="file-access", detail=f"cannot read the file: {exc.strerror or exc}")
        return out
    out["sha256"] = sha
    if expected_sha and sha != expected_sha:
        out.update(reason="sha256-mismatch",
                   detail=f"file sha256 {sha[:12]}... differs from the manifest's "
                   f"{expected_sha[:12]}...; the file changed since ingest (re-run ingest)")
        return out
    try:
        pixels = read_image(path).pixels
        if want_pixels:
            out["pixels"] = encode_exact(pixels)
        if want_paper:
            p = encode_exact(paper_preprocess(pixels, size=PAPER_SIZE))
            if p.dtype != np.uint8 or p.shape != (PAPER_SIZE, PAPER_SIZE):
                raise ConfigError(f"paper_preprocess gave {p.dtype} {p.shape}, not uint8 "
                                  f"({PAPER_SIZE}, {PAPER_SIZE})")
            out["paper"] = p
    except ReadError as exc:
        msg = str(exc)
        if exc.path and msg.startswith(exc.path + ": "):
            msg = msg[len(exc.path) + 2:]
        out.update(reason=exc.reason or "unreadable", detail=msg)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        out.update(reason="reader-bug", detail=f"{type(exc).__name__}: {exc}")
    return out


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


def prepare_store(
    manifest: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    paper: bool = True,
    splits: Iterable[str] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Decode the eligible images of a manifest once into a store (see module docstring).

    Rows with ``status == "eligible"`` are selected (optionally only those whose ``split`` is
    in ``splits``). A row already stored under its path with the same sha256 is not decoded
    again; a row whose content (sha256) is stored under another path is linked to it. Every
    other row is hashed (and checked against the manifest's ``sha256``) and decoded with
    :func:`medforensics.io.read_image` in a process pool. A file that cannot be read is
    reported in the result and in ``index.json`` and the run carries on. Progress is saved
    every 30 s, so an interrupted prepare resumes where it stopped. A row without a
    ``sha256`` value that is already stored under its path is trusted (not hashed again).
    At most two decoded images per worker wait in memory to be written.

    Args:
        manifest: manifest CSV path or its rows (need ``path``, ``status``; ``sha256`` is
            checked when present).
        out: store directory (created if needed).
        workers: decode processes (default: CPU count; 0 or 1 = in this process).
        paper: also cache the 256x256 8-bit paper variant of every image.
        splits: only rows of these splits (e.g. ``("train", "val")``); default all rows.
        progress: report progress: a bar on stderr when it is a terminal, a log line every
            hundred images otherwise.

    Returns:
        A :class:`PrepareReport`.

    Raises:
        ManifestError: the manifest cannot be read.
        StoreError: ``out`` holds a malformed store, or another prepare is writing it.
        ConfigError: ``out`` exists and is not a directory.
    """
    t0 = time.perf_counter()
    store = Path(out)
    if store.exists() and not store.is_dir():
        raise ConfigError(f"{store} exists and is not a directory")
    if isinstance(manifest, (str, os.PathLike)):
        rows: Sequence[Mapping[str, Any]] = read_manifest(manifest)
    else:
        rows = manifest
    selected, skipped = select_rows(rows, splits)
    report = PrepareReport(store=store, n_rows=len(rows), n_selected=len(selected),
                           skipped=dict(skipped))
    store.mkdir(parents=True, exist_ok=True)
    with _Lock(store):
        index = read_index(store) if (store / INDEX_NAME).exists() else new_index(paper)
        if paper and index.get("paper") is None:
            index["paper"] = new_index(True)["paper"]
        entries: dict[str, dict[str, Any]] = index["entries"]
        paths: dict[str, str] = index["paths"]
        failures: dict[str, dict[str, str]] = index["failures"]

        tasks: list[tuple[str, str, bool, bool]] = []
        for path, sha in selected:
            stored_sha = paths.get(path)
            if stored_sha is not None and (not sha or stored_sha == sha) and stored_sha in entries:
                e = entries[stored_sha]
                if not paper or e.get("paper_offset") is not None:
                    report.n_reused += 1
                    failures.pop(path, None)
                    continue
                tasks.append((path, stored_sha, False, True))
                continue
            if sha and sha in entries and (not paper
                                           or entries[sha].get("paper_offset") is not None):
                paths[path] = sha  # same bytes as a stored file: nothing to decode
                failures.pop(path, None)
                report.n_duplicates += 1
                continue
            paths.pop(path, None)
            tasks.append((path, sha, True, paper))
        log.info("prepare %s: %d selected rows, %d already stored, %d duplicates, %d to decode",
                 store, len(selected), report.n_reused, report.n_duplicates, len(tasks))
        _run_tasks(store, index, tasks, workers, progress, report)
        write_index(store, index)
    report.seconds = time.perf_counter() - t0
    log.info("prepare %s: decoded %d images in %.1f s (%.1f images/s), %d failures, %s MB "
             "written", store, report.n_decoded, report.seconds, report.images_per_second,
             len(report.failures), f"{report.bytes_written / 1e6:.1f}")
    return report


def _run_tasks(store: Path, index: dict[str, Any], tasks: list[tuple[str, str, bool, bool]],
               workers: int | None, progress: bool, report: PrepareReport) -> None:
    """Decode ``tasks`` (serially or in a process pool) and append results to the blob."""
    entries: dict[str, dict[str, Any]] = index["entries"]
    end = max((entry_end(e) for e in entries.values()), default=0)
    blob_path = store / BLOB_NAME
    if not blob_path.exists():
        blob_path.touch()
    size = blob_path.stat().st_size
    if size < end:
        raise StoreError(f"{blob_path}: blob is {size} bytes but the index needs {end}; the "
                         "store is damaged, delete it and prepare again")
    n_workers = (os.cpu_count() or 1) if workers is None else max(0, int(workers))
    if len(tasks) < 2:
        n_workers = 0
    n_workers = min(n_workers, len(tasks))
    report.workers = n_workers if n_workers > 1 else 0
    # the bar starts with the first decoded image, after the workers were forked
    bar = ProgressReport("prepare", len(tasks), library_mode(progress), unit="images",
                         emit=log.info)
    saved = {"end": end}  # blob bytes the index on disk refers to
    try:
        _fill_blob(store, blob_path, index, tasks, n_workers, report, bar, end, saved)
    except OSError as exc:
        # Disk full (or another write failure): the index on disk still describes the blob
        # up to its last save, so the store stays usable and a later prepare resumes there.
        with contextlib.suppress(OSError):
            os.truncate(blob_path, saved["end"])
        if isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(blob_path, exc) from None


def _fill_blob(store: Path, blob_path: Path, index: dict[str, Any],
               tasks: list[tuple[str, str, bool, bool]], n_workers: int,
               report: PrepareReport, bar: ProgressReport, end: int,
               saved: dict[str, int]) -> None:
    """Decode the tasks and append them to the blob, saving the index every few seconds."""
    last_save = time.monotonic()
    with open(blob_path, "r+b") as blob:
        if blob_path.stat().st_size > end:  # tail of an interrupted prepare, not indexed
            blob.truncate(end)
        state = {"end": end}

        def consume(res: dict[str, Any]) -> None:
            nonlocal last_save
            _store_result(blob, state, index, res, report)
            bar.advance()
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                blob.flush()
                os.fsync(blob.fileno())
                write_index(store, index)
                saved["end"] = state["end"]
                last_save = time.monotonic()

        try:
            if report.workers == 0:
                with _QuietPydicom():
                    for t in tasks:
                        consume(_decode_task(*t))
            else:
                _run_pool(tasks, n_workers, consume)
        finally:
            bar.close()
            blob.flush()
            os.fsync(blob.fileno())


class _QuietPydicom:
    """In-process decoding: pydicom's per-file value warnings off, restored on exit."""

    def __enter__(self) -> None:
        import warnings

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._logger = logging.getLogger("pydicom")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
        self._warnings.__exit__(*exc)


def _run_pool(tasks: list[tuple[str, str, bool, bool]], n_workers: int,
              consume: Any) -> None:
    """Decode in ``n_workers`` processes, keeping at most 2 tasks per worker in flight."""
    pending: dict[Future, tuple[str, str, bool, bool]] = {}
    todo = iter(tasks)
    limit = 2 * n_workers
    # workers exit with this process, also when it is killed (kill -9)
    with ProcessPoolExecutor(max_workers=n_workers, **with_parent_watch(_init_worker)) as pool:
        def submit_more() -> None:
            while len(pending) < limit:
                t = next(todo, None)
                if t is None:
                    return
                pending[pool.submit(_decode_task, *t)] = t

        submit_more()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                t = pending.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by the OS
                    log.warning("%s: worker failed (%r); decoding it here", t[0], exc)
                    res = _decode_task(*t)
                consume(res)
            submit_more()


def _append(blob: Any, state: dict[str, int], arr: np.ndarray) -> int:
    off = -(-state["end"] // ALIGN) * ALIGN
    blob.seek(off)
    blob.write(np.ascontiguousarray(arr).tobytes())
    state["end"] = off + arr.nbytes
    return off


def _store_result(blob: Any, state: dict[str, int], index: dict[str, Any], res: dict[str, Any],
                  report: PrepareReport) -> None:
    entries: dict[str, dict[str, Any]] = index["entries"]
    paths: dict[str, str] = index["paths"]
    failures: dict[str, dict[str, str]] = index["failures"]
    path, sha = res["path"], res["sha256"]
    if res["reason"]:
        paths.pop(path, None)
        failures[path] = {"sha256": sha, "reason": res["reason"], "detail": res["detail"]}
        report.failures.append(PrepareFailure(path, res["reason"], res["detail"]))
        log.warning("%s: not cached (%s): %s", path, res["reason"], res["detail"])
        return
    before = state["end"]
    e = entries.get(sha)
    if e is None:
        if res["pixels"] is None:  # paper-only task for content the index lost: impossible
            raise StoreError(f"{path}: internal error, no pixels for a new entry")
        px: np.ndarray = res["pixels"]
        e = {"shape": [int(px.shape[0]), int(px.shape[1])], "dtype": px.dtype.name,
             "offset": _append(blob, state, px), "paper_offset": None}
        entries[sha] = e
        report.n_decoded += 1
    elif res["pixels"] is not None:
        report.n_duplicates += 1  # same content decoded twice in one run (two paths)
    else:
        report.n_decoded += 1  # paper variant added to an existing entry
    if res["paper"] is not None and e.get("paper_offset") is None:
        e["paper_offset"] = _append(blob, state, res["paper"])
    paths[path] = sha
    failures.pop(path, None)
    report.bytes_written += max(0, state["end"] - before)
