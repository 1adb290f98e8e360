"""The real test files the forgery benchmarks use (shared by ``forgery.py`` and
``forgery_independent.py``).

Lossless, single-frame images of at least 256 px, one per distinct image: two files whose
*decoded stored values* are equal (the same image in two transfer syntaxes, e.g. the Fuji RG2
radiograph as JPEG Lossless and as JPEG-LS lossless) count once, the first in path order.
Unreadable files are logged and left out.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.realfiles")


def lossless_real_files(cands: list[Path]) -> list[tuple[Path, Any]]:
    """``(path, header metadata)`` of the distinct lossless single-frame images among ``cands``."""
    from medforensics.io import read_header, read_image

    out, seen = [], {}
    for p in sorted(cands):
        try:
            m = read_header(p)
            if m.lossy or m.n_frames != 1 or min(m.rows, m.cols) < 256:
                continue
            pixels, _ = read_image(p)
        except Exception as exc:  # unreadable: listed in the log, not used
            log.info("real: skip %s (%s)", p.name, exc)
            continue
        digest = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
        if digest in seen:
            log.info("real: skip %s (same pixels as %s)", p.name, seen[digest].name)
            continue
        seen[digest] = p
        out.append((p, m))
    return out
