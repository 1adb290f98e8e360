"""The on-disk format of the decoded-pixel store: names, exact encoding, ``index.json``.

Shared by the writer (:mod:`medforensics.data.store.prepare`) and the reader
(:mod:`medforensics.data.store.source`); the layout is described in
:mod:`medforensics.data.store`.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medforensics import __version__
from medforensics.common.atomic import atomic_write_text
from medforensics.errors import ConfigError, StoreError

__all__ = ["FORMAT", "INDEX_NAME", "BLOB_NAME", "LOCK_NAME", "ALIGN", "PAPER_SIZE",
           "CHECKPOINT_SECONDS", "DTYPES", "encode_exact", "identity_preprocess", "new_index",
           "read_index", "entry_end", "write_index", "select_rows"]

FORMAT = "medforensics-store/1"
INDEX_NAME = "index.json"
BLOB_NAME = "pixels.bin"
LOCK_NAME = ".prepare.lock"
ALIGN = 64
PAPER_SIZE = 256
CHECKPOINT_SECONDS = 30.0
#: Exact encodings tried in order (smallest first) for integral values: (dtype, lo, hi).
_INT_DTYPES = (("uint8", 0, 255), ("uint16", 0, 65535), ("int16", -32768, 32767))
DTYPES = {"uint8", "uint16", "int16", "float32"}


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
# index
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_index(paper: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "software_version": __version__,
        "created": _now(),
        "updated": _now(),
        "blob": BLOB_NAME,
        "paper": {"size": PAPER_SIZE, "jpeg_quality": None, "dtype": "uint8",
                  "function": "medforensics.data.transforms.paper_preprocess"} if paper else None,
        "entries": {},
        "paths": {},
        "failures": {},
    }


def read_index(store: Path) -> dict[str, Any]:
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
            ok = (e["dtype"] in DTYPES and len(e["shape"]) == 2
                  and int(e["offset"]) >= 0 and min(int(s) for s in e["shape"]) >= 1)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise StoreError(f"{path}: malformed entry for {sha}: {e!r}")
    return index


def entry_end(e: Mapping[str, Any]) -> int:
    end = int(e["offset"]) + int(np.prod(e["shape"])) * np.dtype(e["dtype"]).itemsize
    if e.get("paper_offset") is not None:
        end = max(end, int(e["paper_offset"]) + PAPER_SIZE * PAPER_SIZE)
    return end


def write_index(store: Path, index: dict[str, Any]) -> None:
    """Write ``index.json`` whole or not at all (OutputWriteError when it cannot be)."""
    index["updated"] = _now()
    atomic_write_text(store / INDEX_NAME, json.dumps(index, separators=(",", ":")),
                      errors="surrogateescape")


def select_rows(rows: Sequence[Mapping[str, Any]], splits: Iterable[str] | None
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
