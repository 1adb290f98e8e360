"""Decode-ahead for source inference: read images and build model inputs in worker processes.

:class:`medforensics.source.predictor.SourcePredictor` spends most of its time per file *before* the
model runs: decoding the image (:func:`medforensics.io.read_image`) and choosing the patch
positions (:func:`medforensics.data.transforms.sample_patch_positions`). This module holds
that part as plain functions of the file path (no torch, so worker processes start fast and
small) and :func:`map_ordered`, a bounded, order-keeping process-pool map, so that
``SourcePredictor.predict_paths(paths, workers=N)`` prepares the next files in ``N`` worker
processes while the model runs on the current one.

Memory stays flat: at most ``prefetch`` files are in flight at once, and a worker sends back
only the model input (``n_patches`` x P x P float32 patches, or the 256 x 256 paper image),
not the decoded image, unless the caller asks for the pixels (unit fingerprints need them).

Processes rather than threads: the reader silences pydicom with ``warnings.catch_warnings``,
which is not thread-safe, and the header parsing holds the GIL.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medforensics.common.workers import with_parent_watch
from medforensics.data.transforms import (
    MIN_INFORMATIVE_PATCHES,
    count_informative_windows,
    paper_preprocess,
    sample_patch_positions,
)
from medforensics.dsp.noisetexture import NOISE_SHAPE_MIN_SIDE, image_noise_shape
from medforensics.errors import InvalidArrayError, ReadError
from medforensics.io import read_image

__all__ = ["InputSpec", "Prepared", "image_evidence", "patch_positions", "model_input",
           "shaped_input", "input_noise_shape", "prepare_file", "map_ordered"]

# The fallback warning has always been logged under the predictor's name; keep it there.
log = logging.getLogger("medforensics.source.predictor")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class InputSpec:
    """What a model needs from an image (a predictor's settings, picklable).

    Attributes:
        preset: model name: ``patch``, or a paper preset (``deep-rsi``, ``deepmammo``).
        patch: patch side (``patch`` preset).
        n_patches: patches per image (``patch`` preset).
        seed: seed of the patch positions (the same for every image).
        size: side of the paper presets' resized image.
        noise_shape: also measure the image's noise shape
            (:func:`medforensics.dsp.noisetexture.image_noise_shape`) for the open-set test.
    """

    preset: str
    patch: int = 64
    n_patches: int = 64
    seed: int = 0
    size: int = 256
    noise_shape: bool = False


@dataclass
class Prepared:
    """One file made ready for the model (the result of :func:`prepare_file`).

    Attributes:
        path: the file, as a string.
        inputs: model input, float32: (n, P, P) patches of stored values (``patch``) or the
            (size, size) 0..255 paper image; None when the file failed.
        n_patches: patches in ``inputs`` (1 for paper presets, 0 on failure).
        meta: the reader's :class:`medforensics.io.ImageMeta` (None on failure).
        pixels: the decoded (H, W) float32 image when asked for, else None.
        error: the :class:`ReadError` when the file could not be used, else None.
        evidence: the image's :class:`medforensics.data.transforms.Evidence` (None on
            failure).
        noise_shape: the image's noise shape when the spec asks for it, else None.
    """

    path: str
    inputs: np.ndarray | None
    n_patches: int
    meta: Any
    pixels: np.ndarray | None
    error: ReadError | None
    evidence: Any = None
    noise_shape: np.ndarray | None = None


def image_evidence(pixels: np.ndarray, spec: InputSpec) -> Any:
    """The evidence floor's count for one image (:func:`count_informative_windows`).

    Windows are half the model's patch side (``patch`` preset; 64 px patches for the paper
    presets), so that the informative area is measured finely near blank regions; the
    floor is :data:`MIN_INFORMATIVE_PATCHES` patches' worth of such windows.
    """
    patch = spec.patch if spec.preset == "patch" else 64
    window = max(8, patch // 2)
    required = int(np.ceil(MIN_INFORMATIVE_PATCHES * (patch / window) ** 2))
    return count_informative_windows(pixels, window, required=required)


def patch_positions(pixels: np.ndarray, patch: int, n_patches: int, seed: int
                    ) -> list[tuple[int, int]]:
    """Inference patch corners of one image: textured windows, else uniform draws.

    :func:`medforensics.data.transforms.sample_patch_positions` with a generator seeded by
    ``seed`` only (so an image always gets the same patches); when it finds fewer than
    ``max(4, n_patches // 4)`` usable windows (tiny or mostly blank image) the rest are drawn
    uniformly over the whole image from the same generator, with a warning.

    Args:
        pixels: (H, W) float32 stored values.
        patch: patch side.
        n_patches: positions wanted.
        seed: generator seed.

    Returns:
        ``(y, x)`` top-left corners (``n_patches`` of them unless the sampler found between
        ``max(4, n_patches // 4)`` and ``n_patches`` usable windows).

    Raises:
        InvalidArrayError: the image is smaller than one patch.
    """
    p = patch
    h, w = pixels.shape
    if h < p or w < p:
        raise InvalidArrayError(f"image {h}x{w} is smaller than the model's {p}x{p} patch")
    rng = np.random.default_rng(seed)
    pos = sample_patch_positions(pixels, p, n_patches, rng)
    if len(pos) < max(4, n_patches // 4):
        # Too few textured windows (tiny or mostly blank image): fall back to uniform draws
        # over the whole image, and say so.
        log.warning("only %d usable patches; adding uniformly drawn ones", len(pos))
        ys = rng.integers(0, h - p + 1, size=n_patches - len(pos))
        xs = rng.integers(0, w - p + 1, size=n_patches - len(pos))
        pos = list(pos) + list(zip(ys.tolist(), xs.tolist()))
    return pos


def model_input(pixels: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, int]:
    """The model input of one image.

    Args:
        pixels: (H, W) float32 stored values (pixel contract of ``read_image``).
        spec: the predictor's :class:`InputSpec`.

    Returns:
        ``(inputs, n)``: ``patch`` preset: (n, P, P) float32 patches of stored values at
        :func:`patch_positions`; paper presets: the (size, size) float32 0..255 image of
        :func:`medforensics.data.transforms.paper_preprocess` and n = 1.

    Raises:
        InvalidArrayError: not 2-D, or smaller than one patch.
    """
    if pixels.ndim != 2:
        raise InvalidArrayError(f"expected a (H, W) image, got shape {pixels.shape}")
    if spec.preset == "patch":
        p = spec.patch
        pos = patch_positions(pixels, p, spec.n_patches, spec.seed)
        stack = np.stack([pixels[y : y + p, x : x + p] for y, x in pos]).astype(np.float32)
        return stack, len(pos)

    return paper_preprocess(pixels, size=spec.size), 1


def shaped_input(pixels: np.ndarray, spec: InputSpec
                 ) -> tuple[np.ndarray, int, np.ndarray | None]:
    """``(inputs, n, noise_shape)``: :func:`model_input` and, when ``spec.noise_shape``, the
    image's noise shape (:func:`input_noise_shape`); what the model and its open-set test read.

    Raises:
        InvalidArrayError: as :func:`model_input`.
    """
    inputs, n = model_input(pixels, spec)
    return inputs, n, input_noise_shape(pixels, inputs, spec)


def input_noise_shape(pixels: np.ndarray, inputs: np.ndarray, spec: InputSpec
                      ) -> np.ndarray | None:
    """The image's noise shape for the open-set test, when ``spec.noise_shape``, else None.

    ``patch`` preset: measured on the model's own input patches (informative windows by
    construction; clipped means the whole image's minimum or maximum), a fraction of the
    image's pixels; paper presets and patches under ``NOISE_SHAPE_MIN_SIDE``: on the whole
    image (their input is resized 8-bit, or too small to hold a block).
    """
    if not spec.noise_shape:
        return None
    if spec.preset == "patch" and spec.patch >= NOISE_SHAPE_MIN_SIDE:
        return image_noise_shape(inputs, clip_values=(float(pixels.min()), float(pixels.max())))
    return image_noise_shape(pixels)


def prepare_file(path: str | Path, spec: InputSpec, keep_pixels: bool = False) -> Prepared:
    """Read one file and build its model input; reader failures are returned, not raised.

    Args:
        path: image file (DICOM/PNG/JPEG/TIFF).
        spec: the predictor's :class:`InputSpec`.
        keep_pixels: also return the decoded image (for unit fingerprints).

    Returns:
        A :class:`Prepared`; ``error`` is set (a :class:`ReadError`, also for an image too
        small for the model) when the file cannot be used.
    """
    try:
        img = read_image(path)
        evidence = image_evidence(img.pixels, spec)
        if not evidence.enough():
            # Nothing to read: no model input is built (a tiny image would not even fit).
            return Prepared(str(path), None, 0, img.meta, img.pixels if keep_pixels else None,
                            None, evidence)
        inputs, n, shape = shaped_input(img.pixels, spec)
    except ReadError as exc:
        return Prepared(str(path), None, 0, None, None, exc)
    except InvalidArrayError as exc:
        return Prepared(str(path), None, 0, None, None, ReadError(str(exc), path))
    except Exception as exc:  # noqa: BLE001 - a reader bug on one file must not stop a batch
        log.exception("unexpected error reading %s", path)
        return Prepared(str(path), None, 0, None, None,
                        ReadError(f"unexpected {type(exc).__name__}: {exc}", path))
    return Prepared(str(path), inputs, n, img.meta, img.pixels if keep_pixels else None, None,
                    evidence, shape)


def map_ordered(fn: Callable[[T], R], items: Iterable[T], *, workers: int,
                prefetch: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` in a pool of worker processes, in order, at most ``prefetch`` ahead.

    ``items`` is consumed lazily; at most ``prefetch`` calls are submitted or finished but
    not yet yielded, so memory does not grow with the number of items. An exception raised
    by ``fn`` is raised here, at its item. Closing the generator early cancels what is
    queued and shuts the pool down.

    Args:
        fn: a picklable (module-level) function of one argument.
        items: its arguments.
        workers: worker processes (>= 1; started with ``spawn``, so they import only what
            ``fn`` needs).
        prefetch: calls in flight (default ``2 * workers``; at least 1).

    Yields:
        ``fn(item)`` for every item, in input order.
    """
    n_workers = max(1, int(workers))
    depth = max(1, int(prefetch) if prefetch is not None else 2 * n_workers)
    it = iter(items)
    pending: deque[Future[R]] = deque()

    # workers exit with this process, also when it is killed (kill -9)
    pool = ProcessPoolExecutor(max_workers=n_workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               **with_parent_watch())
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= depth:
                break
        while pending:
            res = pending.popleft().result()
            for item in it:
                pending.append(pool.submit(fn, item))
                break
            yield res
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
