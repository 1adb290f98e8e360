"""SHA-256 of files and of manifests: the one place the project hashes what a verdict rests on.

Every run file, training manifest and analysed image is identified by these digests, so that a
result can say exactly which bytes it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def file_sha256(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (flat memory for huge files).

    Raises:
        OSError: the file cannot be opened or read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(manifest: str | Path | Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of a manifest file's bytes, or of the canonical JSON of in-memory rows."""
    if isinstance(manifest, (str, Path)):
        return file_sha256(manifest)
    rows = [{str(k): str(v) for k, v in r.items()} for r in manifest]
    return hashlib.sha256(
        json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


_CACHE: dict[tuple[str, int, int], str] = {}


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`file_sha256`, cached on (resolved path, mtime, size) for batches that hash the
    same model files once per image."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        _CACHE[key] = file_sha256(p)
    return _CACHE[key]
