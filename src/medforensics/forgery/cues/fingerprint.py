"""Device-fingerprint inconsistency (the ``fingerprint`` cue): a source patch model slid over
the image.

A source-identification *patch* model (:mod:`medforensics.models.patch`) is slid over the
image; patches whose device evidence disagrees with the whole image light up
(:func:`fingerprint_map`). :func:`fingerprint_llr_map` turns this into the ``fingerprint``
cue: a per-patch log-likelihood ratio for another device, scored only on patches that carry
detector noise, plus the ``fingerprint_weak`` map of partly clipped patches. Both are written
against a generic callable ``patch_logprobs(patches) -> (N, C) log-probabilities`` so that any
patch classifier can be plugged in (and tested with a stub); the forgery detector wraps its
source model into one (:class:`medforensics.forgery.detector.ForgeryDetector`). This is the
cue meant for splices from another device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medforensics.dsp.residuals import highpass_residual
from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.cues.noise import sigmoid
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)

__all__ = ["FingerprintInconsistency", "fingerprint_map", "fingerprint_llr_map"]


@dataclass
class FingerprintInconsistency:
    """Output of :func:`fingerprint_map`.

    Attributes:
        map: float32 (H, W) in [0, 1]: mean over the patches covering a pixel of
            ``1 - P(image class | patch)``; 0 where no patch was scored.
        image_class: the class the whole image is attributed to (argmax of the summed patch
            log-probabilities, or the one given).
        patch_logprobs: float32 (ny, nx, C) log-probabilities on the patch grid.
        grid: ``(ys, xs)`` top-left corners of the patch grid.
        weak: :func:`fingerprint_llr_map` only: float32 (H, W) weak-evidence map in
            ``[0, weak_weight]`` (see there), or None.
    """

    map: np.ndarray
    image_class: int
    patch_logprobs: np.ndarray
    grid: tuple[np.ndarray, np.ndarray]
    weak: np.ndarray | None = None


def fingerprint_map(
    pixels: np.ndarray,
    patch_logprobs: Callable[[np.ndarray], np.ndarray],
    *,
    patch: int = 64,
    stride: int = 32,
    batch: int = 64,
    image_class: int | None = None,
) -> FingerprintInconsistency:
    """Slide a source-identification patch model over the image; light up disagreeing regions.

    Args:
        pixels: float (H, W) stored values (``read_image`` contract).
        patch_logprobs: callable taking float32 ``(N, patch, patch)`` stored-value patches and
            returning ``(N, C)`` log-probabilities over devices (any normalisation of the
            patch happens inside the callable, as for :mod:`medforensics.models.patch`).
        patch: patch side in pixels.
        stride: grid step in pixels (the last row/column of patches is aligned to the border).
        batch: patches per call.
        image_class: the image's device class if known (e.g. from the whole-image verdict);
            default: argmax of the summed patch log-probabilities.

    Returns:
        :class:`FingerprintInconsistency`.

    Raises:
        InvalidArrayError: image smaller than one patch, or the callable returns a bad shape.
    """
    img = np.asarray(pixels, dtype=np.float32)
    if img.ndim != 2 or img.shape[0] < patch or img.shape[1] < patch:
        raise InvalidArrayError(f"image {img.shape} is smaller than one {patch}x{patch} patch")
    H, W = img.shape

    def starts(n: int) -> np.ndarray:
        s = list(range(0, n - patch + 1, stride))
        if s[-1] != n - patch:
            s.append(n - patch)
        return np.array(s)

    ys, xs = starts(H), starts(W)
    coords = [(y, x) for y in ys for x in xs]
    out: list[np.ndarray] = []
    for i in range(0, len(coords), batch):
        chunk = coords[i : i + batch]
        arr = np.stack([img[y : y + patch, x : x + patch] for y, x in chunk])
        lp = np.asarray(patch_logprobs(arr), dtype=np.float64)
        if lp.ndim != 2 or lp.shape[0] != len(chunk):
            raise InvalidArrayError(f"patch_logprobs returned shape {lp.shape} for {len(chunk)} "
                                    "patches; expected (N, C)")
        out.append(lp)
    lp_all = np.concatenate(out)
    C = lp_all.shape[1]
    if image_class is None:
        image_class = int(np.argmax(lp_all.sum(axis=0)))
    elif not 0 <= image_class < C:
        raise ConfigError(f"image_class {image_class} outside 0..{C - 1}")
    # normalise defensively (log-softmax) so that exp() is a probability
    lse = np.logaddexp.reduce(lp_all, axis=1, keepdims=True)
    lp_all = lp_all - lse
    p_other = 1.0 - np.exp(lp_all[:, image_class])
    acc = np.zeros((H, W))
    cnt = np.zeros((H, W))
    for (y, x), v in zip(coords, p_other):
        acc[y : y + patch, x : x + patch] += v
        cnt[y : y + patch, x : x + patch] += 1.0
    m = np.where(cnt > 0, acc / np.maximum(cnt, 1.0), 0.0)
    return FingerprintInconsistency(
        map=m.astype(np.float32),
        image_class=int(image_class),
        patch_logprobs=lp_all.reshape(len(ys), len(xs), C).astype(np.float32),
        grid=(ys, xs),
    )


def _patch_means(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, patch: int) -> np.ndarray:
    """Mean of ``values`` over every ``patch`` x ``patch`` window at the grid corners."""
    c = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    c[1:, 1:] = np.cumsum(np.cumsum(values, axis=0), axis=1)
    y0, x0 = ys[:, None], xs[None, :]
    y1, x1 = y0 + patch, x0 + patch
    return (c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0]) / float(patch * patch)


def fingerprint_llr_map(
    pixels: np.ndarray,
    patch_logprobs: Callable[[np.ndarray], np.ndarray],
    *,
    patch: int = 64,
    stride: int = 16,
    batch: int = 64,
    image_class: int | None = None,
    offset: float = 3.0,
    slope: float = 2.0,
    max_clipped: float = 0.05,
    min_level: float = 0.3,
    weak_clipped: float = 0.3,
    weak_weight: float = 0.45,
    min_coverage: float = 0.0,
) -> FingerprintInconsistency:
    """Fingerprint inconsistency as a per-patch log-likelihood ratio (the ``fingerprint`` cue).

    The raw ``1 - P(image class | patch)`` of :func:`fingerprint_map` is high in many
    authentic patches (one 64-px patch carries little device evidence), so the cue uses the
    evidence *for a specific other device*: per patch
    ``llr = max_{c != image class} (log P(c | patch) - log P(image class | patch))`` and
    ``cue = sigmoid(slope * (llr - offset))`` - 0.5 where some other device is ``e**offset``
    (default ~20) times more likely than the image's own. Patches that carry no detector noise
    are not scored (cue 0): more than ``max_clipped`` of their pixels at the image's minimum
    or maximum, or a mean absolute high-pass residual below ``min_level`` x the median over
    patches (flat / blanked areas, where a patch model answers at random, often confidently).
    The image class is the argmax of the summed log-probabilities of the scored patches. A
    pixel's value is the mean cue of the scored patches covering it.

    **Weak evidence** (``weak``): the same cue computed over the patches with up to
    ``weak_clipped`` clipped pixels, times ``weak_weight`` (< 0.5): partly clipped patches are
    less reliable (they raise the false area on untouched images) but they are where an edit
    that pushed values to the range's end lies. Kept below the map threshold, it only ranks
    pixels inside the image (localization) and never makes a verdict or a forged area on its
    own: :func:`medforensics.forgery.localize.localize` adds it to the map but not to the image
    score (its effect on localization is in docs/forgery.md).

    Args:
        pixels: float (H, W) stored values.
        patch_logprobs: see :func:`fingerprint_map`.
        patch: patch side.
        stride: grid step.
        batch: patches per call.
        image_class: the image's device class if known.
        offset: llr (nats) at which the cue is 0.5.
        slope: logistic slope per nat.
        max_clipped: largest tolerated share of clipped pixels in a scored patch.
        min_level: smallest tolerated residual level relative to the median patch.
        weak_clipped: largest share of clipped pixels of a patch in the weak map (<=
            ``max_clipped`` = no weak map).
        weak_weight: value of the weak map where its cue is 1 (keep it below 0.5).
        min_coverage: a pixel's mean is taken over at least this share of the patches that
            cover an interior pixel (``ceil(patch / stride) ** 2``); pixels covered by fewer
            scored patches - along the image border, next to clipped or flat areas - count
            the missing ones as patches without evidence (0 = plain mean).

    Returns:
        :class:`FingerprintInconsistency` (``map`` is the cue described above).
    """
    fm = fingerprint_map(pixels, patch_logprobs, patch=patch, stride=stride, batch=batch,
                         image_class=0)
    img = np.asarray(pixels, dtype=np.float64)
    H, W = img.shape
    ys, xs = fm.grid
    lp = fm.patch_logprobs.astype(np.float64)  # (ny, nx, C), log-softmax normalised
    level = _patch_means(np.abs(highpass_residual(img, "kb")).astype(np.float64), ys, xs, patch)
    clipped = _patch_means(((img <= img.min()) | (img >= img.max())).astype(np.float64),
                           ys, xs, patch)
    ref = float(np.median(level)) if level.size else 0.0
    valid = (clipped <= max_clipped) & (level >= min_level * ref) & (level > 0)
    C = lp.shape[2]
    if image_class is None:
        tot = lp[valid].sum(axis=0) if valid.any() else lp.reshape(-1, C).sum(axis=0)
        image_class = int(np.argmax(tot))
    elif not 0 <= image_class < C:
        raise ConfigError(f"image_class {image_class} outside 0..{C - 1}")
    if C < 2:
        cue = np.zeros(valid.shape)
    else:
        diff = lp - lp[..., image_class : image_class + 1]
        diff[..., image_class] = -np.inf
        cue = sigmoid(slope * (diff.max(axis=2) - offset))
    min_cover = min_coverage * float(-(-patch // stride)) ** 2
    m = _patch_average(cue, valid, ys, xs, patch, (H, W), min_cover)
    weak = None
    if weak_clipped > max_clipped:
        wvalid = (clipped <= weak_clipped) & (level >= min_level * ref) & (level > 0)
        weak = (weak_weight * _patch_average(cue, wvalid, ys, xs, patch, (H, W), min_cover)
                ).astype(np.float32)
    return FingerprintInconsistency(map=m.astype(np.float32), image_class=int(image_class),
                                    patch_logprobs=fm.patch_logprobs, grid=fm.grid, weak=weak)


def _patch_average(cue: np.ndarray, valid: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                   patch: int, shape: tuple[int, int], min_cover: float = 0.0) -> np.ndarray:
    """Per pixel: mean of ``cue`` over the valid patches covering it (0 where none).

    With ``min_cover`` > 1 the sum is divided by at least ``min_cover``: a pixel covered by
    fewer valid patches (image border, next to clipped areas) counts the missing ones as
    patches without evidence.
    """
    acc = np.zeros(shape)
    cnt = np.zeros(shape)
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            if valid[iy, ix]:
                acc[y : y + patch, x : x + patch] += cue[iy, ix]
                cnt[y : y + patch, x : x + patch] += 1.0
    return np.where(cnt > 0, acc / np.maximum(cnt, max(1.0, min_cover)), 0.0)



@register_cue("fingerprint", rank=60, maps=("fingerprint", "fingerprint_weak"),
              weak=("fingerprint_weak",), needs=("patch_logprobs",), default_on=False,
              defaults=signature_defaults(fingerprint_llr_map))
def _fingerprint_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``fingerprint`` cue: :func:`fingerprint_llr_map` with the context's
    patch model; also yields ``fingerprint_weak`` (weak evidence, never the image score)."""
    if ctx.patch_logprobs is None:
        raise ConfigError("the fingerprint cue needs a patch_logprobs callable")
    fp = fingerprint_llr_map(img, ctx.patch_logprobs, **params)
    maps = {"fingerprint": fp.map}
    if fp.weak is not None:
        maps["fingerprint_weak"] = fp.weak
    return CueOutput(maps=maps, details={"image_class": fp.image_class}, result=fp)
