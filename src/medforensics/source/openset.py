"""Open-set recognition on a source model's penultimate features (pure NumPy, no I/O).

A closed-set classifier's maximum softmax probability saturates on inputs unlike anything it
was trained on: an image from a device the model never saw can get ``p = 1.00`` for the
nearest known device. The features before the last layer keep more of the truth: images of a
known device cluster around that device's mean, and an unseen device's images fall away
from every cluster. :class:`FeatureOpenSet` models the embeddings of each known class as a
Gaussian with one shared (tied) covariance, as in the class-conditional Mahalanobis detector
of Lee et al. (NeurIPS 2018), and scores an image by its distance to the nearest class:

* every patch embedding ``z`` (D,) gets its squared Mahalanobis distance to each class mean,
  ``d2_c = (z - mu_c)^T P (z - mu_c)`` with ``P`` the shrunk inverse of the tied covariance;
* the image's **feature distance** is the median over its patches of ``min_c d2_c``, divided
  by D so that a typical known patch scores about 1 whatever the embedding width. The median
  makes a few odd patches (an edge, a marker) harmless, while an unseen device moves most of
  its patches away.

The UNKNOWN threshold is a split-conformal quantile of the distances of held-out images of
known devices (:func:`conformal_threshold`): with ``n`` such images and a target
false-UNKNOWN rate ``alpha``, at most ``alpha`` of future known-device images exceed it (in
expectation, for exchangeable images). With fewer than ``ceil(1 / alpha) - 1`` images no
finite threshold has that guarantee, and :func:`conformal_threshold` refuses.

How well the threshold rejects devices the model never saw cannot be proven from known
devices; :func:`leave_one_class_out` estimates it by letting each known class play the
unknown one in turn (its mean removed from the model), which is optimistic because the
features were trained with that class; ``bench/openset.py`` measures it properly by
retraining without the held-out device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medforensics.errors import ConfigError

__all__ = [
    "OPENSET_BLOCKS",
    "FeatureOpenSet",
    "TooFewImagesError",
    "conformal_threshold",
    "leave_one_class_out",
    "min_images_for",
]


#: names of a source run's open-set blocks when it has the noise-shape block, in column order
OPENSET_BLOCKS = ("network features", "noise shape")


class TooFewImagesError(ConfigError):
    """Too few held-out images to set a threshold at the requested false-UNKNOWN rate."""


def min_images_for(alpha: float) -> int:
    """Smallest number of known-device scores that can back a conformal threshold at ``alpha``.

    The conformal threshold is the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` scores,
    which exists only when that rank is at most ``n``: ``n >= ceil(1 / alpha) - 1`` (19 for
    5 %).
    """
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ConfigError(f"the false-UNKNOWN rate must be in (0, 1), got {alpha}")
    return max(1, math.ceil(1.0 / a - 1e-9) - 1)


def conformal_threshold(distances: Any, alpha: float = 0.05) -> float:
    """Split-conformal upper threshold of known-device distances.

    Args:
        distances: (n,) float feature distances of held-out images of known devices (higher
            = less like any known device).
        alpha: wanted false-UNKNOWN rate in (0, 1).

    Returns:
        The ``ceil((n + 1)(1 - alpha))``-th smallest distance; rule: ``UNKNOWN <=>
        distance > threshold``.

    Raises:
        TooFewImagesError: fewer than :func:`min_images_for` ``(alpha)`` distances.
        ConfigError: non-finite distances.
    """
    d = np.sort(np.asarray(distances, dtype=np.float64).ravel())
    if not np.all(np.isfinite(d)):
        raise ConfigError("distances contain NaN or infinite values")
    need = min_images_for(alpha)
    if d.size < need:
        raise TooFewImagesError(
            f"{d.size} held-out known-device image(s) cannot back an UNKNOWN threshold at a "
            f"{alpha:.0%} false-UNKNOWN rate: at least {need} are needed (use a larger "
            "validation split, e.g. split --val 0.2, or more patients)"
        )
    rank = math.ceil((d.size + 1) * (1.0 - float(alpha)))
    return float(d[min(rank, d.size) - 1])


@dataclass
class FeatureOpenSet:
    """Tied-covariance Gaussian class model of embeddings (see module docstring).

    The columns may form independent **blocks** (e.g. the network's embedding and the
    image's noise shape, :func:`medforensics.dsp.noisetexture.image_noise_shape`, appended to
    every patch row): each block gets its own tied covariance and its own distance
    ``d2_b / D_b``, and a patch's distance to a class is the *largest* over the blocks - an
    image must look like the same known device in every block. A block whose values are not
    finite in a row (nothing measured) adds no distance for that row.

    Attributes:
        classes: C class names, index = row of ``means``.
        means: (C, D) float64 class means of the patch embeddings.
        precision: (D, D) float64 inverse of the shrunk tied covariance (block-diagonal
            with several blocks).
        shrinkage: weight of the scaled identity in the (first block's) covariance (0..1).
        blocks: widths of the column blocks, summing to D; ``()`` = one block.
    """

    classes: list[str]
    means: np.ndarray
    precision: np.ndarray
    shrinkage: float = 0.0
    blocks: tuple[int, ...] = ()

    @classmethod
    def fit(cls, embeddings: Any, labels: Any, classes: Sequence[str], *,
            shrinkage: float | None = None, blocks: Sequence[int] = ()) -> FeatureOpenSet:
        """Fit class means and the tied covariance on known-device patch embeddings.

        Args:
            embeddings: (N, D) float patch embeddings (training images of known devices).
            labels: (N,) int class index of each row, in ``0..C-1``; every class needs rows.
            classes: the C class names.
            shrinkage: weight ``s`` of ``mean(diag) * I`` in ``(1 - s) * S + s * mean(diag)
                * I`` (S the pooled within-class covariance); ``None`` uses the
                Ledoit-Wolf estimate, which adapts to how many rows back D dimensions
                (per block).
            blocks: widths of independent column blocks (sum D); empty = one block. Rows
                whose values in a block are not all finite are left out of that block's fit;
                in the first block every value must be finite.

        Returns:
            The fitted model.

        Raises:
            ConfigError: shapes disagree, a class has no rows (in some block), or values of
                the first block are not finite.
        """
        z = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(labels)
        names = [str(c) for c in classes]
        if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] < 2:
            raise ConfigError(f"need (N, D) embeddings and (N,) labels, got {z.shape}, {y.shape}")
        widths = _check_blocks(blocks, z.shape[1])
        if not np.all(np.isfinite(z[:, : widths[0]])):
            raise ConfigError("embeddings contain NaN or infinite values")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(names):
            raise ConfigError(f"labels must be class indices in 0..{len(names) - 1}")
        if shrinkage is not None and not 0.0 <= float(shrinkage) <= 1.0:
            raise ConfigError(f"shrinkage must be in [0, 1], got {shrinkage}")
        means = np.zeros((len(names), z.shape[1]))
        precision = np.zeros((z.shape[1], z.shape[1]))
        used: list[float] = []
        for lo, hi in _block_slices(widths):
            zb = z[:, lo:hi]
            ok = np.all(np.isfinite(zb), axis=1)
            means[:, lo:hi], precision[lo:hi, lo:hi], s = _fit_tied(zb[ok], y[ok], names,
                                                                    shrinkage)
            used.append(s)
        return cls(classes=names, means=means, precision=precision, shrinkage=used[0],
                   blocks=tuple(widths) if len(widths) > 1 else ())

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.means.shape[1])

    def patch_distances(self, embeddings: Any, *, exclude: int | None = None) -> np.ndarray:
        """Squared Mahalanobis distance of each patch to each class mean, divided by D.

        Args:
            embeddings: (n, D) float patch embeddings of one image.
            exclude: a class index to leave out (its column is +inf), for leave-one-out.

        Returns:
            (n, C) float64, >= 0 (with several blocks, the largest block distance).
        """
        d2 = np.maximum.reduce([d for d, _ in self._block_d2(embeddings)])
        if exclude is not None:
            d2[:, int(exclude)] = np.inf
        return d2

    def distance(self, embeddings: Any, *, exclude: int | None = None) -> float:
        """The image's feature distance: median over patches of the nearest-class distance.

        Args:
            embeddings: (n, D) float patch embeddings of one image (n >= 1).
            exclude: class index to leave out (see :meth:`patch_distances`).

        Returns:
            float >= 0; about 1 for a typical patch of a known device, larger when the
            patches resemble no known device.
        """
        d2 = self.patch_distances(embeddings, exclude=exclude)
        return float(np.median(d2.min(axis=1)))

    def block_distances(self, embeddings: Any) -> list[float]:
        """Per block, the image's distance to its nearest class in that block alone (median
        over patches), in block order: what each block says, for the verdict's explanation.

        Args:
            embeddings: (n, D) float patch embeddings of one image.

        Returns:
            One float >= 0 per block (0 for a block not measured in this image).
        """
        return self.distance_and_parts(embeddings)[1]

    def distance_and_parts(self, embeddings: Any) -> tuple[float, list[float]]:
        """:meth:`distance` and :meth:`block_distances` of one image from one pass."""
        blocks = self._block_d2(embeddings)
        d2 = np.maximum.reduce([d for d, _ in blocks])
        parts = [float(np.median(d[ok].min(axis=1))) if ok.any() else 0.0 for d, ok in blocks]
        return float(np.median(d2.min(axis=1))), parts

    def _block_d2(self, embeddings: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per block: (n, C) distances ``d2_b / D_b`` (0 for rows the block did not measure)
        and the (n,) bool of rows it measured (all values finite)."""
        z = np.asarray(embeddings, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ConfigError(f"expected (n, {self.dim}) embeddings, got {z.shape}")
        out = []
        for lo, hi in _block_slices(self.blocks or (self.dim,)):
            zb = z[:, lo:hi]
            ok = np.all(np.isfinite(zb), axis=1)
            diff = np.where(ok[:, None], zb, 0.0)[:, None, :] - self.means[None, :, lo:hi]
            db = np.einsum("ncd,de,nce->nc", diff, self.precision[lo:hi, lo:hi], diff) / (hi - lo)
            out.append((np.where(ok[:, None], np.maximum(db, 0.0), 0.0), ok))
        return out

    def nearest(self, embeddings: Any) -> int:
        """Index of the class whose mean the image's patches are closest to (median)."""
        return int(np.argmin(np.median(self.patch_distances(embeddings), axis=0)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Tensors for safetensors: ``means`` (C, D) and ``precision`` (D, D), float32, and
        with several blocks ``blocks`` (int64 widths)."""
        out = {"means": self.means.astype(np.float32),
               "precision": self.precision.astype(np.float32)}
        if self.blocks:
            out["blocks"] = np.asarray(self.blocks, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], classes: Sequence[str],
                    shrinkage: float = 0.0) -> FeatureOpenSet:
        """Rebuild from :meth:`to_arrays` output (shapes checked).

        Raises:
            ConfigError: missing arrays, shapes that disagree with ``classes``, or
                non-finite values.
        """
        try:
            means = np.asarray(arrays["means"], dtype=np.float64)
            precision = np.asarray(arrays["precision"], dtype=np.float64)
        except KeyError as exc:
            raise ConfigError(f"open-set file lacks the array {exc}") from None
        names = [str(c) for c in classes]
        if (means.ndim != 2 or means.shape[0] != len(names)
                or precision.shape != (means.shape[1], means.shape[1])):
            raise ConfigError(
                f"open-set arrays do not fit {len(names)} classes: means {means.shape}, "
                f"precision {precision.shape}"
            )
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(precision))):
            raise ConfigError("open-set arrays contain NaN or infinite values")
        blocks: tuple[int, ...] = ()
        if "blocks" in arrays:
            raw = np.asarray(arrays["blocks"])
            if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
                raise ConfigError(f"open-set blocks must be a 1-D integer array, got {raw!r}")
            blocks = tuple(_check_blocks([int(b) for b in raw], means.shape[1]))
        return cls(classes=names, means=means, precision=precision, shrinkage=float(shrinkage),
                   blocks=blocks if len(blocks) > 1 else ())


def _check_blocks(blocks: Sequence[int], dim: int) -> list[int]:
    """Block widths (positive, summing to ``dim``); empty = one block of ``dim``.

    Raises:
        ConfigError: a width below 1 or a sum other than ``dim``.
    """
    widths = [int(b) for b in blocks] or [dim]
    if min(widths) < 1 or sum(widths) != dim:
        raise ConfigError(f"block widths {widths} must be >= 1 and sum to {dim}")
    return widths


def _block_slices(widths: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, end)`` column ranges of consecutive blocks."""
    ends = np.cumsum(widths)
    return [(int(e - w), int(e)) for w, e in zip(widths, ends)]


def _fit_tied(z: np.ndarray, y: np.ndarray, names: Sequence[str], shrinkage: float | None
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Class means (C, D), shrunk tied precision (D, D) and the shrinkage used, of one block.

    Raises:
        ConfigError: a class without rows.
    """
    counts = np.bincount(y, minlength=len(names))
    if z.shape[0] < 2 or np.any(counts == 0):
        missing = [names[i] for i in np.flatnonzero(counts == 0)]
        raise ConfigError(f"no embeddings for class(es) {missing}")
    means = np.stack([z[y == c].mean(axis=0) for c in range(len(names))])
    centred = z - means[y]
    cov = centred.T @ centred / max(z.shape[0] - len(names), 1)
    s = _ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    scale = float(np.trace(cov)) / cov.shape[0]
    shrunk = (1.0 - s) * cov + s * max(scale, 1e-12) * np.eye(cov.shape[0])
    return means, np.linalg.pinv(shrunk, hermitian=True), s


def _ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit-Wolf (2004) optimal shrinkage of the sample covariance towards a scaled identity.

    Args:
        centred: (N, D) float64 rows with their class mean removed.

    Returns:
        Shrinkage weight in [0, 1].
    """
    n, d = centred.shape
    cov = centred.T @ centred / n
    mu = np.trace(cov) / d
    delta = np.sum((cov - mu * np.eye(d)) ** 2) / d
    x2 = centred**2
    beta = (np.sum(x2.T @ x2) / n - np.sum(cov**2)) / (d * n)
    beta = min(beta, delta)
    return 0.0 if delta <= 0 else float(beta / delta)


def leave_one_class_out(model: FeatureOpenSet, embeddings_per_image: Sequence[Any],
                        labels: Any, alpha: float = 0.05) -> dict[str, Any]:
    """Each known class plays the unseen device in turn, without retraining the features.

    For class ``c``: the threshold is refitted (conformal, ``alpha``) on the other classes'
    images, and ``c``'s images are scored with ``c``'s mean removed; the share of them above
    the threshold is the rate at which a device like ``c`` would be called UNKNOWN.

    Args:
        model: the fitted :class:`FeatureOpenSet`.
        embeddings_per_image: per held-out image, its (n_i, D) patch embeddings.
        labels: (M,) int class index per image.
        alpha: false-UNKNOWN rate of the refitted thresholds.

    Returns:
        ``{"per_class": {name: rate or None}, "mean": float or None, "n_images": M}``;
        ``None`` where a class has no images or the others are too few for a threshold.
    """
    y = np.asarray(labels)
    per_class: dict[str, float | None] = {}
    for c, name in enumerate(model.classes):
        held = [e for e, lab in zip(embeddings_per_image, y) if lab == c]
        rest = [e for e, lab in zip(embeddings_per_image, y) if lab != c]
        if not held:
            per_class[name] = None
            continue
        try:
            thr = conformal_threshold([model.distance(e, exclude=c) for e in rest], alpha)
        except TooFewImagesError:
            per_class[name] = None
            continue
        d_held = np.array([model.distance(e, exclude=c) for e in held])
        per_class[name] = float(np.mean(d_held > thr))
    rates = [r for r in per_class.values() if r is not None]
    return {"per_class": per_class, "mean": float(np.mean(rates)) if rates else None,
            "n_images": int(y.size)}
