"""Cached training store: decode every image once, then read patches from a memory map.

Decoding DICOM (JPEG 2000, RLE, JPEG-LS, or just parsing) is the slow part of training: a
patch epoch touches every image, often many times. :func:`prepare_store` decodes each eligible
manifest image once, in parallel, into a compact on-disk store; :class:`StoreSource` then serves
whole images and windows from it as an :class:`~medforensics.data.datasets.ImageSource`, so no
training epoch decodes DICOM again and a random patch costs one small memory-mapped read.

Layout (``STORE/``)::

    pixels.bin    one packed blob: every image's values, C order, each entry 64-byte aligned
    index.json    format, per-content entries (shape, dtype, offset), path -> sha256 map,
                  failures of the last prepare, paper-variant settings

Format choice (measured, see the report of ``prepare``/docs): on a 60-image simulated archive
(768-1536 px, 16-bit) random 64x64 patch reads took ~18 us from views into one memory-mapped
blob, ~26 us from one ``.npy`` per image kept open in an LRU, ~590 us when re-opening the
``.npy`` for each read, and ~8 ms when decoding the DICOM each time. One blob also keeps the
file count at two for archives of 10^5 images.

Values. Every entry equals ``medforensics.io.read_image(path).pixels`` (frame 0: float32
stored values after the Modality LUT, MONOCHROME1 inverted, no windowing) bit for bit. It is
stored in the smallest dtype that represents it exactly: ``uint8`` (integers 0..255),
``uint16`` (0..65535), ``int16`` (-32768..32767) or ``float32`` (anything else); the
round trip is verified on the bits before an entry is written. Native bit depth is kept; no
8-bit squashing.

Paper variants. With ``paper=True`` (default) the store also keeps, per image, the papers'
preprocessing :func:`medforensics.data.transforms.paper_preprocess` (min-max to 8-bit, resize to
256x256; destroys the noise fingerprint, exists only to reproduce Deep-RSI / DeepMammo) as
uint8 (256, 256), served by :meth:`StoreSource.paper_source`.

Keys. Entries are content-addressed by the file's sha256; the index maps every manifest
``path`` to the sha256 its bytes had when prepared (checked against the manifest's ``sha256``
column, so a file changed since ingest is reported, not cached). Identical files are stored
once. Re-running ``prepare`` on the same store only decodes what is new or changed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics import __version__
from medforensics.common.atomic import atomic_write_text
from medforensics.common.hashing import file_sha256
from medforensics.common.workers import with_parent_watch
from medforensics.data.datasets import read_pixels
from medforensics.data.manifest import read_manifest
from medforensics.data.transforms import paper_preprocess
from medforensics.errors import ConfigError, OutputWriteError, ReadError, StoreError
from medforensics.io import read_image

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "BLOB_NAME",
    "PrepareFailure",
    "PrepareReport",
    "StoreSource",
    "StorePaperSource",
    "prepare_store",
    "open_store",
    "encode_exact",
    "identity_preprocess",
    "bench_patch_reads",
]

FORMAT = "medforensics-store/1"
INDEX_NAME = "index.json"
BLOB_NAME = "pixels.bin"
_LOCK_NAME = ".prepare.lock"
_ALIGN = 64
_PAPER_SIZE = 256
_CHECKPOINT_SECONDS = 30.0
#: Exact encodings tried in order (smallest first) for integral values: (dtype, lo, hi).
_INT_DTYPES = (("uint8", 0, 255), ("uint16", 0, 65535), ("int16", -32768, 32767))
_DTYPES = {"uint8", "uint16", "int16", "float32"}


# --------------------------------------------------------------------------------------------
# exact encoding
# --------------------------------------------------------------------------------------------


def encode_exact(pixels: np.ndarray) -> np.ndarray:
    """The image in the smallest dtype that gives back exactly the same float32 values.

    Tries uint8, uint16, int16 for integral values in range, else keeps float32. The round
    trip ``result.astype(np.float32)`` is checked bit for bit (so ``-0.0`` or NaN stay float32).

    Args:
        pixels: (H, W) float32 values (other float/int dtypes are converted to float32 first).

    Returns:
        C-contiguous array of the same shape, dtype uint8, uint16, int16 or float32.

    Raises:
        ConfigError: ``pixels`` is not 2-D.
    """
    a = np.ascontiguousarray(pixels, dtype=np.float32)
    if a.ndim != 2:
        raise ConfigError(f"expected a 2-D image, got shape {a.shape}")
    if a.size == 0:
        return a
    lo, hi = float(a.min()), float(a.max())  # NaN if any NaN: then no range test passes
    for name, dlo, dhi in _INT_DTYPES:
        if lo >= dlo and hi <= dhi:
            cand = a.astype(name)
            if (cand.astype(np.float32).view(np.uint32) == a.view(np.uint32)).all():
                return cand
            break  # not integral (or a -0.0): no integer type can hold it
    return a


def identity_preprocess(pixels: np.ndarray) -> np.ndarray:
    """``preprocess`` for datasets fed with already preprocessed images (paper variants).

    Args:
        pixels: float32 (S, S) image, already preprocessed.

    Returns:
        The same values as float32 (no copy when already float32).
    """
    return np.asarray(pixels, dtype=np.float32)


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


# --------------------------------------------------------------------------------------------
# index
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _new_index(paper: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "software_version": __version__,
        "created": _now(),
        "updated": _now(),
        "blob": BLOB_NAME,
        "paper": {"size": _PAPER_SIZE, "jpeg_quality": None, "dtype": "uint8",
                  "function": "medforensics.data.transforms.paper_preprocess"} if paper else None,
        "entries": {},
        "paths": {},
        "failures": {},
    }


def _read_index(store: Path) -> dict[str, Any]:
    """Load and validate ``index.json``; StoreError when missing or malformed."""
    path = store / INDEX_NAME
    if not path.is_file():
        raise StoreError(f"{store}: not a prepared store ({INDEX_NAME} not found); "
                         "run `medforensics prepare MANIFEST --out STORE` first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable store index: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise StoreError(f"{path}: not a {FORMAT} index")
    for key in ("entries", "paths", "failures"):
        if not isinstance(index.get(key), dict):
            raise StoreError(f"{path}: index lacks the {key!r} table")
    blob = index.get("blob")
    if blob != BLOB_NAME:
        raise StoreError(f"{path}: unexpected blob name {blob!r}")
    for sha, e in index["entries"].items():
        try:
            ok = (e["dtype"] in _DTYPES and len(e["shape"]) == 2
                  and int(e["offset"]) >= 0 and min(int(s) for s in e["shape"]) >= 1)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise StoreError(f"{path}: malformed entry for {sha}: {e!r}")
    return index


def _entry_end(e: Mapping[str, Any]) -> int:
    end = int(e["offset"]) + int(np.prod(e["shape"])) * np.dtype(e["dtype"]).itemsize
    if e.get("paper_offset") is not None:
        end = max(end, int(e["paper_offset"]) + _PAPER_SIZE * _PAPER_SIZE)
    return end


def _write_index(store: Path, index: dict[str, Any]) -> None:
    """Write ``index.json`` whole or not at all (OutputWriteError when it cannot be)."""
    index["updated"] = _now()
    atomic_write_text(store / INDEX_NAME, json.dumps(index, separators=(",", ":")),
                      errors="surrogateescape")


class _Lock:
    """``STORE/.prepare.lock`` (O_EXCL): one ``prepare`` per store at a time."""

    def __init__(self, store: Path) -> None:
        self.path = store / _LOCK_NAME

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
            p = encode_exact(paper_preprocess(pixels, size=_PAPER_SIZE))
            if p.dtype != np.uint8 or p.shape != (_PAPER_SIZE, _PAPER_SIZE):
                raise ConfigError(f"paper_preprocess gave {p.dtype} {p.shape}, not uint8 "
                                  f"({_PAPER_SIZE}, {_PAPER_SIZE})")
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


def _select(rows: Sequence[Mapping[str, Any]], splits: Iterable[str] | None
            ) -> tuple[list[tuple[str, str]], Counter[str]]:
    """(path, sha256) of the eligible rows in ``splits`` (all splits when None), deduped."""
    wanted = None if splits is None else {str(s) for s in splits}
    skipped: Counter[str] = Counter()
    out: dict[str, str] = {}
    for row in rows:
        path = str(row.get("path") or "")
        if not path:
            skipped["no path"] += 1
            continue
        status = str(row.get("status") or "")
        if status != "eligible":
            skipped[f"status {status or 'empty'}"] += 1
            continue
        if wanted is not None and str(row.get("split") or "") not in wanted:
            skipped[f"split {row.get('split') or 'none'}"] += 1
            continue
        out[path] = str(row.get("sha256") or "")
    return sorted(out.items()), skipped


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
        progress: tqdm progress bar on stderr.

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
    selected, skipped = _select(rows, splits)
    report = PrepareReport(store=store, n_rows=len(rows), n_selected=len(selected),
                           skipped=dict(skipped))
    store.mkdir(parents=True, exist_ok=True)
    with _Lock(store):
        index = _read_index(store) if (store / INDEX_NAME).exists() else _new_index(paper)
        if paper and index.get("paper") is None:
            index["paper"] = _new_index(True)["paper"]
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
            if sha and sha in entries and (not paper or entries[sha].get("paper_offset") is not None):
                paths[path] = sha  # same bytes as a stored file: nothing to decode
                failures.pop(path, None)
                report.n_duplicates += 1
                continue
            paths.pop(path, None)
            tasks.append((path, sha, True, paper))
        log.info("prepare %s: %d selected rows, %d already stored, %d duplicates, %d to decode",
                 store, len(selected), report.n_reused, report.n_duplicates, len(tasks))
        _run_tasks(store, index, tasks, workers, progress, report)
        _write_index(store, index)
    report.seconds = time.perf_counter() - t0
    log.info("prepare %s: decoded %d images in %.1f s (%.1f images/s), %d failures, %s MB "
             "written", store, report.n_decoded, report.seconds, report.images_per_second,
             len(report.failures), f"{report.bytes_written / 1e6:.1f}")
    return report


def _run_tasks(store: Path, index: dict[str, Any], tasks: list[tuple[str, str, bool, bool]],
               workers: int | None, progress: bool, report: PrepareReport) -> None:
    """Decode ``tasks`` (serially or in a process pool) and append results to the blob."""
    from tqdm.auto import tqdm

    entries: dict[str, dict[str, Any]] = index["entries"]
    end = max((_entry_end(e) for e in entries.values()), default=0)
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
    bar = tqdm(total=len(tasks), unit="img", desc="prepare", disable=not progress, leave=False)
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
               report: PrepareReport, bar: Any, end: int, saved: dict[str, int]) -> None:
    last_save = time.monotonic()
    with open(blob_path, "r+b") as blob:
        if blob_path.stat().st_size > end:  # tail of an interrupted prepare, not indexed
            blob.truncate(end)
        state = {"end": end}

        def consume(res: dict[str, Any]) -> None:
            nonlocal last_save
            _store_result(blob, state, index, res, report)
            bar.update(1)
            if time.monotonic() - last_save > _CHECKPOINT_SECONDS:
                blob.flush()
                os.fsync(blob.fileno())
                _write_index(store, index)
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
    off = -(-state["end"] // _ALIGN) * _ALIGN
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


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


class StoreSource:
    """Pixels from a prepared store: an :class:`~medforensics.data.datasets.ImageSource`.

    Whole images and windows come from one read-only memory map of ``pixels.bin``; a window
    reads only the rows it covers. Thread-safe; picklable (DataLoader workers and DDP ranks
    re-open the map), so it can be handed to ``train(..., image_source=...)``.

    Args:
        store: store directory written by :func:`prepare_store`.
        rows: optional manifest rows to check now: every eligible row must be stored under
            its path with the sha256 of its ``sha256`` column (StoreError otherwise, unless
            ``fallback``).
        fallback: decode images missing from the store with ``read_image`` instead of
            raising (logged once per image). Default False: a missing image is an error, so
            training never silently decodes DICOM.

    Raises:
        StoreError: missing/malformed store, or ``rows`` not covered (without ``fallback``).
    """

    def __init__(self, store: str | os.PathLike[str], *,
                 rows: Sequence[Mapping[str, Any]] | None = None, fallback: bool = False) -> None:
        self.store = Path(store)
        self.fallback = bool(fallback)
        self._index = _read_index(self.store)
        self._entries: dict[str, dict[str, Any]] = self._index["entries"]
        self._paths: dict[str, str] = self._index["paths"]
        self._paper_ok = self._index.get("paper") is not None
        need = max((_entry_end(e) for e in self._entries.values()), default=0)
        size = (self.store / BLOB_NAME).stat().st_size if (self.store / BLOB_NAME).exists() else 0
        if size < need:
            raise StoreError(f"{self.store / BLOB_NAME}: blob is {size} bytes, index needs "
                             f"{need}; the store is damaged")
        self._lock = threading.Lock()
        self._mm: np.memmap | None = None
        self._views: dict[tuple[str, bool], np.ndarray] = {}
        self._warned: set[str] = set()
        if rows is not None:
            self.check_rows(rows)

    # pickling: maps are re-opened lazily in the receiving process
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_mm=None, _views={}, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._paths

    @property
    def paths(self) -> list[str]:
        """Every stored manifest path, sorted."""
        return sorted(self._paths)

    @property
    def has_paper(self) -> bool:
        """True when the store was prepared with paper variants (``paper_source`` usable)."""
        return bool(self._paper_ok)

    @property
    def failures(self) -> dict[str, dict[str, str]]:
        """Failures of the prepare runs: ``path -> {sha256, reason, detail}``."""
        return dict(self._index["failures"])

    def sha256(self, path: str) -> str:
        """The sha256 the file had when it was stored (StoreError if not stored)."""
        try:
            return self._paths[str(path)]
        except KeyError:
            raise self._missing(str(path)) from None

    def _missing(self, path: str) -> StoreError:
        f = self._index["failures"].get(path)
        why = f" (prepare failed: {f['reason']}: {f['detail']})" if f else ""
        return StoreError(f"{path}: not in the store {self.store}{why}; run `medforensics "
                          "prepare` on this manifest again or pass fallback=True")

    def check_rows(self, rows: Sequence[Mapping[str, Any]],
                   splits: Iterable[str] | None = None) -> list[str]:
        """Check that every eligible row (of ``splits``) is stored with its manifest sha256.

        Returns:
            Paths that are missing or stale (only when ``fallback``; they will be decoded).

        Raises:
            StoreError: a stored file's sha256 differs from the row's (stale store), or rows
                are missing and ``fallback`` is False. The message names a few of them.
        """
        selected, _ = _select(rows, splits)
        stale = [p for p, sha in selected if sha and p in self._paths and self._paths[p] != sha]
        missing = [p for p, _ in selected if p not in self._paths]
        if stale:
            raise StoreError(
                f"{len(stale)} file(s) changed since the store was prepared (sha256 differs), "
                f"e.g. {stale[0]}; run `medforensics prepare` again"
            )
        if missing and not self.fallback:
            raise StoreError(
                f"{len(missing)} of {len(selected)} eligible manifest image(s) are not in the "
                f"store {self.store}, e.g. {self._missing(missing[0])}"
            )
        if missing:
            log.warning("%d image(s) are not in the store and will be decoded on use",
                        len(missing))
        return missing

    def _blob(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.store / BLOB_NAME, dtype=np.uint8, mode="r")
        return self._mm

    def _view(self, path: str, paper: bool = False) -> np.ndarray | None:
        key = (path, paper)
        v = self._views.get(key)
        if v is not None:
            return v
        sha = self._paths.get(path)
        if sha is None:
            return None
        e = self._entries[sha]
        with self._lock:
            mm = self._blob()
            if paper:
                if e.get("paper_offset") is None:
                    return None
                v = np.ndarray((_PAPER_SIZE, _PAPER_SIZE), np.uint8, buffer=mm,
                               offset=int(e["paper_offset"]))
            else:
                v = np.ndarray(tuple(e["shape"]), np.dtype(e["dtype"]), buffer=mm,
                               offset=int(e["offset"]))
            self._views[key] = v
        return v

    def _decode(self, path: str) -> np.ndarray:
        if not self.fallback:
            raise self._missing(path)
        if path not in self._warned:
            self._warned.add(path)
            log.warning("%s: not in the store, decoding it (fallback)", path)

        return read_pixels(path)

    def stored(self, path: str) -> np.ndarray:
        """The stored array itself: read-only (H, W) in its storage dtype (no conversion).

        Raises:
            StoreError: not in the store (no fallback here).
        """
        v = self._view(str(path))
        if v is None:
            raise self._missing(str(path))
        return v

    def get(self, path: str) -> np.ndarray:
        """Whole image: float32 (H, W) stored values, equal to ``read_image(path).pixels``.

        Returns a read-only array (a view of the map for float32 entries, else a converted
        copy). Raises StoreError when the image is not stored (unless ``fallback``).
        """
        path = str(path)
        v = self._view(path)
        if v is None:
            return self._decode(path)
        out = np.asarray(v) if v.dtype == np.float32 else v.astype(np.float32)
        out.flags.writeable = False
        return out

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Window ``[y:y+h, x:x+w]``: float32 (h, w) copy; reads only the rows it covers.

        Raises:
            ConfigError: the window is outside the image.
            StoreError: the image is not stored (unless ``fallback``).
        """
        path = str(path)
        v = self._view(path)
        img = v if v is not None else self._decode(path)
        if y < 0 or x < 0 or h < 0 or w < 0 or y + h > img.shape[0] or x + w > img.shape[1]:
            raise ConfigError(
                f"{path}: crop {h}x{w} at ({y}, {x}) is outside the {img.shape[0]}x"
                f"{img.shape[1]} image"
            )
        return np.array(img[y : y + h, x : x + w], dtype=np.float32)

    def shape(self, path: str) -> tuple[int, int]:
        """Image size ``(H, W)`` from the index (no pixel read)."""
        path = str(path)
        sha = self._paths.get(path)
        if sha is None:
            h, w = self._decode(path).shape
            return int(h), int(w)
        h, w = self._entries[sha]["shape"]
        return int(h), int(w)

    def paper(self, path: str) -> np.ndarray:
        """Cached paper variant: float32 (256, 256) integers 0..255, equal to
        ``paper_preprocess(read_image(path).pixels)``.

        Raises:
            StoreError: not stored, or the store was prepared without paper variants (unless
                ``fallback``, which computes it).
        """
        path = str(path)
        v = self._view(path, paper=True)
        if v is not None:
            return v.astype(np.float32)
        if not self.fallback:
            if path in self._paths:
                raise StoreError(f"{self.store}: prepared without paper variants; run "
                                 "`medforensics prepare` again without --no-paper")
            raise self._missing(path)

        return paper_preprocess(self.get(path), size=_PAPER_SIZE)

    def paper_source(self) -> StorePaperSource:
        """An ImageSource whose images are the cached 256x256 paper variants."""
        return StorePaperSource(self)


class StorePaperSource:
    """The paper variants of a :class:`StoreSource` as an ImageSource (256x256, 0..255).

    Feed it to :class:`~medforensics.data.datasets.PaperImageDataset` together with
    ``preprocess=identity_preprocess`` (the images are already preprocessed).
    """

    def __init__(self, source: StoreSource) -> None:
        self.source = source

    def get(self, path: str) -> np.ndarray:
        """float32 (256, 256) paper variant (integers 0..255)."""
        return self.source.paper(path)

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Window of the paper variant: float32 (h, w)."""
        img = self.get(path)
        if y < 0 or x < 0 or h < 0 or w < 0 or y + h > img.shape[0] or x + w > img.shape[1]:
            raise ConfigError(f"{path}: crop {h}x{w} at ({y}, {x}) is outside the "
                              f"{img.shape[0]}x{img.shape[1]} paper image")
        return np.array(img[y : y + h, x : x + w], dtype=np.float32)

    def shape(self, path: str) -> tuple[int, int]:
        """Always ``(256, 256)``."""
        return _PAPER_SIZE, _PAPER_SIZE


def open_store(
    store: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
    *,
    splits: Iterable[str] | None = ("train", "val"),
    fallback: bool = False,
) -> StoreSource:
    """Open a store for training and check that it covers a manifest.

    Args:
        store: store directory.
        manifest: manifest CSV path or rows to check (None: no check).
        splits: which rows must be covered (default train and val: what training reads);
            None = every eligible row. Ignored when the manifest has no ``split`` column.
        fallback: see :class:`StoreSource`.

    Returns:
        A :class:`StoreSource`.

    Raises:
        StoreError: missing/malformed/stale store or rows not covered (without fallback).
        ManifestError: the manifest cannot be read.
    """
    src = StoreSource(store, fallback=fallback)
    if manifest is not None:
        if isinstance(manifest, (str, os.PathLike)):
            rows: Sequence[Mapping[str, Any]] = read_manifest(manifest)
        else:
            rows = manifest
        has_split = any(str(r.get("split") or "") for r in rows)
        src.check_rows(rows, splits if has_split else None)
    return src


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------


def bench_patch_reads(source: Any, paths: Sequence[str], *, n: int = 2000, patch: int = 64,
                      seed: int = 0, warmup: int = 0) -> dict[str, float]:
    """Time ``n`` random ``patch`` x ``patch`` crops from an ImageSource.

    Positions are uniform over each image, images uniform over ``paths`` (seeded). Image
    sizes come from ``source.shape`` (before the clock starts).

    Args:
        source: an ImageSource with ``crop`` and ``shape``.
        paths: images to read from (each at least ``patch`` on both sides).
        n: timed reads.
        patch: window side.
        seed: seed of the positions.
        warmup: untimed reads first (e.g. to warm the page cache).

    Returns:
        ``{"patches_per_s", "us_per_patch", "n"}``.

    Raises:
        ConfigError: no paths, n < 1, or an image smaller than the patch.
    """
    if not paths or n < 1:
        raise ConfigError("bench_patch_reads needs at least one path and n >= 1")
    rng = np.random.default_rng(seed)
    shapes = {p: source.shape(p) for p in paths}
    small = [p for p, (h, w) in shapes.items() if h < patch or w < patch]
    if small:
        raise ConfigError(f"{small[0]}: smaller than the {patch}px patch")
    picks = rng.integers(0, len(paths), size=n + warmup)
    jobs = []
    for i in picks:
        p = paths[int(i)]
        h, w = shapes[p]
        jobs.append((p, int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))))
    for p, y, x in jobs[:warmup]:
        source.crop(p, y, x, patch, patch)
    t0 = time.perf_counter()
    for p, y, x in jobs[warmup:]:
        source.crop(p, y, x, patch, patch)
    dt = time.perf_counter() - t0
    return {"patches_per_s": n / dt, "us_per_patch": dt / n * 1e6, "n": float(n)}
