"""Plain JSON out of results, and files written whole or not at all.

``to_jsonable`` is the single converter from result objects (dataclasses, NumPy values) to
strict JSON; ``atomic_write_json`` writes it whole or not at all
(:mod:`medforensics.common.atomic`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from medforensics.common.atomic import atomic_write_bytes


def to_jsonable(obj: Any) -> Any:
    """Convert a result (dataclass, NumPy array/scalar, dict, list) to plain JSON types.

    Non-finite floats (NaN, +-inf) become ``None`` so that the output is strict JSON.

    Args:
        obj: any nesting of dataclasses, mappings, sequences, NumPy arrays and scalars.

    Returns:
        The same structure built from ``dict``, ``list``, ``str``, ``int``, ``float``,
        ``bool`` and ``None``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (str, type(None))):
        return obj
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **dumps_kw: Any) -> None:
    """:func:`atomic_write_bytes` of ``json.dumps(obj, **dumps_kw)`` plus a newline."""
    atomic_write_bytes(path, (json.dumps(obj, **dumps_kw) + "\n").encode("utf-8"))
