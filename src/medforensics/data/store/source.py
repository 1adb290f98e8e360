"""Reading the decoded-pixel store: :class:`StoreSource` (an
:class:`~medforensics.data.datasets.ImageSource` over the memory-mapped blob), its paper-variant
view :class:`StorePaperSource`, :func:`open_store` and :func:`bench_patch_reads`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.data.datasets import read_pixels
from medforensics.data.manifest import read_manifest
from medforensics.data.store.format import (
    BLOB_NAME,
    PAPER_SIZE,
    entry_end,
    read_index,
    select_rows,
)
from medforensics.data.transforms import paper_preprocess
from medforensics.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

__all__ = ["StoreSource", "StorePaperSource", "open_store", "bench_patch_reads"]


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
        self._index = read_index(self.store)
        self._entries: dict[str, dict[str, Any]] = self._index["entries"]
        self._paths: dict[str, str] = self._index["paths"]
        self._paper_ok = self._index.get("paper") is not None
        need = max((entry_end(e) for e in self._entries.values()), default=0)
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
        selected, _ = select_rows(rows, splits)
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
                v = np.ndarray((PAPER_SIZE, PAPER_SIZE), np.uint8, buffer=mm,
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

        return paper_preprocess(self.get(path), size=PAPER_SIZE)

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
        return PAPER_SIZE, PAPER_SIZE


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
