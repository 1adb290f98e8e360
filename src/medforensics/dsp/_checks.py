"""Argument checks shared by the pure signal-processing functions (no I/O, no logging)."""

from __future__ import annotations

import numpy as np

from medforensics.errors import InvalidArrayError


def as_image(x: object, name: str = "image", *, min_size: int = 1,
             dtype: type = np.float64) -> np.ndarray:
    """Return ``x`` as a finite 2-D floating array (copy only when needed).

    Args:
        x: array-like of shape (H, W), any real dtype.
        name: argument name used in error messages.
        min_size: smallest allowed H and W.
        dtype: floating dtype of the result (float64 for numerics, float32 for storage).

    Returns:
        ``np.ndarray`` of shape (H, W) and dtype ``dtype``.

    Raises:
        InvalidArrayError: not 2-D, smaller than ``min_size``, complex, or non-finite values.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise InvalidArrayError(f"{name} must be a 2-D array (H, W), got shape {a.shape}")
    if np.iscomplexobj(a) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InvalidArrayError(f"{name} must be real-valued, got dtype {a.dtype}")
    if a.shape[0] < min_size or a.shape[1] < min_size:
        raise InvalidArrayError(f"{name} is {a.shape[0]}x{a.shape[1]}; at least "
                                f"{min_size}x{min_size} is required")
    a = a.astype(dtype, copy=False)
    if not np.all(np.isfinite(a)):
        raise InvalidArrayError(f"{name} contains NaN or infinite values")
    return a


def same_shape(a: np.ndarray, b: np.ndarray, names: str = "a, b") -> None:
    """Raise :class:`InvalidArrayError` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise InvalidArrayError(f"{names} must have the same shape, got {a.shape} and {b.shape}")
