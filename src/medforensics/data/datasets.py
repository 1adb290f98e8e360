"""PyTorch datasets for source-device identification.

* :class:`PatchDataset`: random native-resolution patches (stored values, never resized) for
  training the ``patch`` model. Patch positions depend only on ``(seed, epoch, key)``, so
  an epoch is reproducible and a resumed run sees the same patches.
* :class:`PatchSetDataset`: a fixed set of patches per image (deterministic positions that do
  not change with the epoch), for validation / evaluation: the caller aggregates the per-patch
  outputs into one image-level prediction.
* :class:`PaperImageDataset`: the whole image with the papers' preprocessing (8-bit rescale +
  resize to 256x256; see :func:`medforensics.data.transforms.paper_preprocess`), for the
  ``deep-rsi`` and ``deepmammo`` presets.

Decoding is the slow part, so pixels come from an :class:`ImageSource`. The default
:class:`MemoryImageSource` keeps decoded images in an in-memory LRU (and can pre-decode a small
archive once with :meth:`MemoryImageSource.preload`); an on-disk store can plug in by
implementing the same three methods.

Rows are manifest rows (dicts, see docs/design.md); the datasets read only ``path`` and the
label column. Selecting which rows to use (status, split) is the caller's job.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from medforensics.data.transforms import paper_preprocess, sample_patch_positions
from medforensics.errors import ConfigError
from medforensics.io import read_image

log = logging.getLogger(__name__)

__all__ = [
    "ImageSource",
    "MemoryImageSource",
    "PatchDataset",
    "PatchSetDataset",
    "PaperImageDataset",
    "read_pixels",
    "row_labels",
    "valid_patch_positions",
]

_TRAIN_STREAM = 0x7A71  # seeds training patch positions: (seed, epoch, stream, key)
_EVAL_STREAM = 0x7A72  # seeds evaluation patch positions: (seed, stream, content key)


@runtime_checkable
class ImageSource(Protocol):
    """Where datasets get decoded pixels from (an in-memory cache, an on-disk store, ...).

    Every method returns / describes the pixel contract of :func:`medforensics.io.read_image`:
    float32 (H, W) stored values after the Modality LUT.
    """

    def get(self, path: str) -> np.ndarray:
        """Whole image: float32 (H, W). Must not be modified by the caller."""
        ...

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Window ``[y:y+h, x:x+w]``: float32 (h, w). Raises ConfigError if out of bounds."""
        ...


def read_pixels(path: str) -> np.ndarray:
    """Decode one image with :func:`medforensics.io.read_image` (frame 0).

    Returns:
        float32 (H, W) stored values (pixel contract of docs/design.md).

    Raises:
        medforensics.errors.ReadError: the file cannot be read.
    """
    return read_image(path).pixels


class MemoryImageSource:
    """In-memory LRU cache of decoded images (an :class:`ImageSource`).

    Thread-safe. With DataLoader worker processes each worker holds its own cache; images
    pre-decoded with :meth:`preload` before the workers start are shared copy-on-write.

    Args:
        max_bytes: total pixel bytes kept; least recently used images are evicted beyond it.
        reader: ``path -> float32 (H, W)`` decoder (default :func:`read_pixels`).
    """

    def __init__(
        self, max_bytes: int = 2 << 30, reader: Callable[[str], np.ndarray] | None = None
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.reader = reader or read_pixels
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks cannot be pickled (DataLoader workers under spawn)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Pixel bytes currently cached."""
        return self._bytes

    def get(self, path: str) -> np.ndarray:
        """Decoded image, float32 (H, W), read-only view (decoded once while it stays cached)."""
        path = str(path)
        with self._lock:
            arr = self._cache.get(path)
            if arr is not None:
                self._cache.move_to_end(path)
                self.hits += 1
                return arr
        arr = np.ascontiguousarray(self.reader(path), dtype=np.float32)
        if arr.ndim != 2:
            raise ConfigError(f"{path}: expected a 2-D image, reader returned shape {arr.shape}")
        arr.setflags(write=False)
        with self._lock:
            self.misses += 1
            if path not in self._cache:
                self._cache[path] = arr
                self._bytes += arr.nbytes
                while self._bytes > self.max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._bytes -= old.nbytes
        return arr

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Window ``[y:y+h, x:x+w]`` of the image, float32 (h, w) (a copy)."""
        img = self.get(path)
        if y < 0 or x < 0 or y + h > img.shape[0] or x + w > img.shape[1]:
            raise ConfigError(
                f"{path}: crop {h}x{w} at ({y}, {x}) is outside the {img.shape[0]}x"
                f"{img.shape[1]} image"
            )
        return np.array(img[y : y + h, x : x + w], dtype=np.float32)

    def shape(self, path: str) -> tuple[int, int]:
        """Image size ``(H, W)`` (decodes the image if it is not cached)."""
        h, w = self.get(path).shape
        return int(h), int(w)

    def preload(self, paths: Sequence[str]) -> None:
        """Decode ``paths`` now (e.g. a small archive before training). Errors propagate."""
        for p in paths:
            self.get(p)


class RoutedImageSource:
    """An :class:`ImageSource` that serves some paths from a second source.

    Training adds files that are not in the caller's source (the outlier-device images of
    :mod:`medforensics.synth.outliers`); they are decoded by ``extra`` while every other path
    goes to ``main`` unchanged.

    Args:
        main: the caller's source.
        extra_paths: the paths ``extra`` serves.
        extra: their source (default: a :class:`MemoryImageSource` of 512 MB).
    """

    def __init__(self, main: Any, extra_paths: Sequence[str], extra: Any = None) -> None:
        self.main = main
        self.extra_paths = frozenset(str(p) for p in extra_paths)
        self.extra = extra if extra is not None else MemoryImageSource(512 << 20)

    def _pick(self, path: str) -> Any:
        return self.extra if str(path) in self.extra_paths else self.main

    def get(self, path: str) -> np.ndarray:
        """Whole image from the source that serves ``path``."""
        return self._pick(path).get(path)

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Window of the image from the source that serves ``path``."""
        return self._pick(path).crop(path, y, x, h, w)

    def shape(self, path: str) -> tuple[int, int]:
        """Image size ``(H, W)``."""
        src = self._pick(path)
        if hasattr(src, "shape"):
            return src.shape(path)
        h, w = src.get(path).shape
        return int(h), int(w)

    def preload(self, paths: Sequence[str]) -> None:
        """Decode ``paths`` now in the source that serves each."""
        for p in paths:
            self.get(p)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.main, name)


def row_labels(
    rows: Sequence[Mapping[str, Any]], label_column: str | None, classes: Sequence[str]
) -> list[int]:
    """Class index of every row (``-1`` for every row when ``label_column`` is None).

    Raises:
        ConfigError: a row lacks the column, or its value is not one of ``classes``.
    """
    if label_column is None:
        return [-1] * len(rows)
    index = {str(c): i for i, c in enumerate(classes)}
    out = []
    for row in rows:
        if label_column not in row:
            raise ConfigError(f"row {row.get('path')!r} has no column {label_column!r}")
        value = str(row[label_column])
        if value not in index:
            raise ConfigError(
                f"row {row.get('path')!r}: {label_column}={value!r} is not one of the "
                f"{len(classes)} classes"
            )
        out.append(index[value])
    return out


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if len(rows) == 0:
        raise ConfigError("a dataset needs at least one row")
    paths = []
    for row in rows:
        p = row.get("path")
        if not p:
            raise ConfigError(f"manifest row without a path: {dict(row)!r}")
        paths.append(str(p))
    return paths


def valid_patch_positions(
    pixels: np.ndarray,
    patch: int,
    n: int,
    rng: np.random.Generator,
    path: str = "<array>",
    *,
    quiet_shortfall: bool = True,
) -> np.ndarray:
    """Up to ``n`` distinct patch corners in informative areas of an image.

    Uses :func:`medforensics.data.transforms.sample_patch_positions` (avoids flat, saturated
    and collimated areas). If the image has no such area at all, falls back to uniform corners
    over the whole image and logs a warning (the image is not dropped).

    Args:
        pixels: float32 (H, W) stored values.
        patch: patch side.
        n: number of corners wanted (>= 1).
        rng: generator for the draw.
        path: file name for messages.
        quiet_shortfall: do not warn when fewer than ``n`` positions are valid.

    Returns:
        int64 array (k, 2) of (y, x) top-left corners, 1 <= k <= n.

    Raises:
        ConfigError: the image is smaller than one patch.
    """
    h, w = pixels.shape
    if h < patch or w < patch:
        raise ConfigError(
            f"{path}: image {h}x{w} is smaller than the {patch}x{patch} patch; lower the patch "
            "size or exclude small images at ingest (--min-size)"
        )
    tlog = logging.getLogger(sample_patch_positions.__module__)
    level = tlog.level
    if quiet_shortfall:
        # A pool asks for "up to n": getting fewer is expected, not worth a warning per image.
        tlog.setLevel(logging.ERROR)
    try:
        found = sample_patch_positions(pixels, patch, n, rng)
    finally:
        tlog.setLevel(level)
    if len(found) < n:
        log.debug("%s: %d of %d patch positions valid", path, len(found), n)
    if not found:
        log.warning("%s: no informative %dpx patch area; using uniform positions", path, patch)
        ys = rng.integers(0, h - patch + 1, size=n)
        xs = rng.integers(0, w - patch + 1, size=n)
        return np.stack([ys, xs], axis=1).astype(np.int64)
    return np.asarray(found, dtype=np.int64).reshape(-1, 2)


def _image_keys(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Per-row seeds of the patch positions: the file's content, not where it is stored.

    The manifest's ``sha256`` (first 32 bits) when the row has one, so that an archive moved
    to another folder trains on the same patches; else the CRC-32 of the path.
    """
    keys = []
    for row in rows:
        sha = str(row.get("sha256") or "")
        if len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha):
            keys.append(int(sha[:8], 16))
        else:
            keys.append(zlib.crc32(str(row.get("path", "")).encode("utf-8")))
    return keys


class PatchDataset(Dataset):
    """Random native-resolution patches for training (stored values, never resized).

    The dataset has ``len(rows) * patches_per_image`` items; item ``i`` is a patch of image
    ``i // patches_per_image``. A key may also be an ``(index, draw)`` pair (from a sampler
    with ``tag_draws=True``): the position is then seeded by the draw, so an item drawn twice
    in an epoch gives two different patches. Positions depend only on ``(seed, epoch, key)``;
    call :meth:`set_epoch` before each epoch.

    Where patches may come from is decided once per image: the first time an image is used,
    a pool of up to ``pool_size`` distinct corners in its informative area is drawn
    (:func:`valid_patch_positions`, seeded by ``(seed, path)``); each item then picks one
    corner of the pool. This keeps the per-item cost at one crop.

    Args:
        rows: manifest rows (need ``path`` and the label column).
        label_column: label column (e.g. ``"model"``), or None for unlabelled data (label -1).
        classes: class names; a row's class index is its position here.
        patch: patch side in pixels.
        patches_per_image: items per image and epoch.
        seed: run seed.
        image_cache: pixel source (default: a new :class:`MemoryImageSource`).
        transform: optional ``float32 (P, P) -> float32 (P, P)`` applied to each patch.
        pool_size: candidate corners per image (each is checked for validity once per
            image, so a larger pool costs start-up time).

    Items: ``(x, y)`` with ``x`` float32 tensor (1, P, P) of stored values and ``y`` int64
    class index.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        label_column: str | None,
        classes: Sequence[str],
        patch: int = 64,
        patches_per_image: int = 16,
        seed: int = 0,
        image_cache: ImageSource | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        pool_size: int = 64,
    ) -> None:
        if patch < 1 or patches_per_image < 1 or pool_size < 1:
            raise ConfigError("patch, patches_per_image and pool_size must be >= 1")
        self.paths = _check_rows(rows)
        self._keys = _image_keys(rows)
        self.classes = [str(c) for c in classes]
        self.image_targets = row_labels(rows, label_column, self.classes)
        self.patch = int(patch)
        self.patches_per_image = int(patches_per_image)
        self.seed = int(seed)
        self.source: ImageSource = image_cache if image_cache is not None else MemoryImageSource()
        self.transform = transform
        self.pool_size = int(pool_size)
        self._pools: dict[int, np.ndarray] = {}
        self.epoch = 0

    @property
    def targets(self) -> list[int]:
        """Class index of every item (length ``len(self)``), for samplers."""
        k = self.patches_per_image
        return [t for t in self.image_targets for _ in range(k)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (patch positions change with it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths) * self.patches_per_image

    def _resolve(self, key: int | tuple[int, int]) -> tuple[int, np.random.Generator]:
        if isinstance(key, (tuple, list)):
            index, draw = int(key[0]), int(key[1])
            rng = np.random.default_rng([self.seed, self.epoch, _TRAIN_STREAM, 1, draw])
        else:
            index = int(key)
            rng = np.random.default_rng([self.seed, self.epoch, _TRAIN_STREAM, 0, index])
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        return index // self.patches_per_image, rng

    def prepare(self) -> None:
        """Decode every image and compute its position pool now (before forking workers)."""
        for image in range(len(self.paths)):
            self.pool(image)

    def pool(self, image: int) -> np.ndarray:
        """Candidate corners of image ``image``: int64 (k, 2), computed once per image."""
        pool = self._pools.get(image)
        if pool is None:
            path = self.paths[image]
            rng = np.random.default_rng([self.seed, _TRAIN_STREAM, 2, self._keys[image]])
            pool = valid_patch_positions(
                self.source.get(path), self.patch, self.pool_size, rng, path
            )
            self._pools[image] = pool
        return pool

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        image, rng = self._resolve(key)
        path = self.paths[image]
        pool = self.pool(image)
        y, x = pool[int(rng.integers(len(pool)))]
        arr = self.source.crop(path, int(y), int(x), self.patch, self.patch)
        if self.transform is not None:
            arr = self.transform(arr)
        x = torch.from_numpy(np.ascontiguousarray(arr, np.float32))[None]
        return x, self.image_targets[image]


class PatchSetDataset(Dataset):
    """A fixed set of ``n_patches`` patches per image, for image-level evaluation.

    Positions depend only on ``(seed, path)`` (not on the epoch or the row order), so the same
    image is always judged on the same patches. They are drawn in the informative area
    (:func:`valid_patch_positions`); when it holds fewer than ``n_patches`` distinct
    positions, positions are repeated cyclically so every item has ``n_patches`` patches.

    Args:
        rows: manifest rows (need ``path`` and the label column).
        label_column: label column, or None for unlabelled data (label -1).
        classes: class names.
        patch: patch side in pixels.
        n_patches: patches per image.
        seed: seed of the positions.
        image_cache: pixel source (default: a new :class:`MemoryImageSource`).

    Items: ``(x, y)`` with ``x`` float32 tensor (n_patches, 1, P, P) of stored values and
    ``y`` the int class index. A batch is (B, n_patches, 1, P, P).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        label_column: str | None,
        classes: Sequence[str],
        patch: int = 64,
        n_patches: int = 16,
        seed: int = 0,
        image_cache: ImageSource | None = None,
    ) -> None:
        if patch < 1 or n_patches < 1:
            raise ConfigError("patch and n_patches must be >= 1")
        self.paths = _check_rows(rows)
        self._keys = _image_keys(rows)
        self.classes = [str(c) for c in classes]
        self.targets = row_labels(rows, label_column, self.classes)
        self.patch = int(patch)
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.source: ImageSource = image_cache if image_cache is not None else MemoryImageSource()
        self._positions: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def prepare(self) -> None:
        """Decode every image and compute its positions now (before forking workers)."""
        for index in range(len(self.paths)):
            self.positions(index)

    def positions(self, index: int) -> np.ndarray:
        """Top-left corners of image ``index``'s patches: int64 (n_patches, 2), (y, x)."""
        pos = self._positions.get(index)
        if pos is None:
            path = self.paths[index]
            rng = np.random.default_rng([self.seed, _EVAL_STREAM, self._keys[index]])
            pos = valid_patch_positions(
                self.source.get(path), self.patch, self.n_patches, rng, path
            )
            if len(pos) < self.n_patches:
                pos = np.resize(pos, (self.n_patches, 2))
            self._positions[index] = pos
        return pos

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        p = self.patch
        stack = np.stack(
            [self.source.crop(path, int(y), int(x), p, p) for y, x in self.positions(index)]
        )
        return torch.from_numpy(stack.astype(np.float32, copy=False))[:, None], self.targets[index]


class _PreprocessedReader:
    """``path -> preprocess(pixels)`` (a class, not a closure, so workers can pickle it)."""

    def __init__(
        self, preprocess: Callable[[np.ndarray], np.ndarray], source: ImageSource | None
    ) -> None:
        self.preprocess = preprocess
        self.source = source

    def __call__(self, path: str) -> np.ndarray:
        pixels = self.source.get(path) if self.source is not None else read_pixels(path)
        return self.preprocess(pixels)


class PaperImageDataset(Dataset):
    """Whole images with the papers' preprocessing (Deep-RSI / DeepMammo presets).

    Each image goes through :func:`medforensics.data.transforms.paper_preprocess`: min-max
    rescale to 8-bit (0..255) and resize to 256x256, as both papers did. This destroys most of
    the native noise fingerprint; it exists to reproduce the papers. Preprocessed images
    (256 KiB each) are kept in an in-memory LRU of ``max_bytes``.

    Args:
        rows: manifest rows (need ``path`` and the label column).
        label_column: label column, or None (label -1).
        classes: class names.
        image_cache: pixel source (default: decode with :func:`read_pixels`, no raw cache).
        preprocess: ``float32 (H, W) -> float32 (S, S)`` (default ``paper_preprocess``).
        max_bytes: budget of the preprocessed-image cache.

    Items: ``(x, y)`` with ``x`` float32 tensor (1, 256, 256) in 0..255 and ``y`` int.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        label_column: str | None,
        classes: Sequence[str],
        image_cache: ImageSource | None = None,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        max_bytes: int = 1 << 30,
    ) -> None:
        self.paths = _check_rows(rows)
        self.classes = [str(c) for c in classes]
        self.targets = row_labels(rows, label_column, self.classes)
        if preprocess is None:
            preprocess = paper_preprocess
        self.preprocess = preprocess
        self.source = image_cache
        self._cache = MemoryImageSource(
            max_bytes=max_bytes, reader=_PreprocessedReader(preprocess, image_cache)
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        arr = self._cache.get(self.paths[index])
        return torch.from_numpy(np.array(arr, dtype=np.float32))[None], self.targets[index]
