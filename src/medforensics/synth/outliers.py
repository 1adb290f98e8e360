"""Procedurally drawn "none of these" devices for outlier exposure.

A source model trained only on its known devices learns nothing about what an unseen device
looks like, and its softmax then names the nearest known device with full confidence.
Outlier exposure (Hendrycks, Mazeika and Dietterich, ICLR 2019) adds training examples of
other classes with a uniform target, so that the network learns to spread its belief when
the evidence fits none of its classes. Simulated devices are free: this module draws many
devices that are in no label set.

Each outlier device is a simulator unit (:func:`medforensics.synth.simulate.build_devices`
with a seed of its own, so its sensor differs from any archive's), followed by a processing
chain drawn once per device: an output LUT (gamma), a blur or sharpening kernel, extra
(optionally spatially correlated) noise, row/column stripes or grid lines, a slow gain
field, and a bit depth between 8 and 16. Images are written as 16-bit PNG files (stored
values kept) so the ordinary image readers and patch datasets take them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medforensics.errors import ConfigError
from medforensics.io.writers import write_png16
from medforensics.synth.detector import simulate_image
from medforensics.synth.devices import build_devices

__all__ = ["OutlierLook", "draw_look", "apply_look", "write_outlier_images", "OUTLIER_LABEL"]

log = logging.getLogger(__name__)

#: Label of outlier rows in a training manifest (never a class of a model).
OUTLIER_LABEL = "__outlier__"

#: Offset added to a run's seed for the outlier devices' simulator seed.
_SEED_OFFSET = 7_919_003


@dataclass(frozen=True)
class OutlierLook:
    """The processing chain of one outlier device (all drawn by :func:`draw_look`).

    Attributes:
        gamma: output LUT exponent on the image normalised to [0, 1].
        blur: Gaussian blur sigma in px (0 = none).
        sharpen: unsharp-mask amount (0 = none), radius 1.5 px.
        noise: std of added noise as a fraction of the image's value range.
        noise_corr: Gaussian sigma in px of the added noise's correlation (0 = white).
        stripes: std of per-row and per-column offsets, fraction of the range.
        grid_period: period in px of grid lines (0 = none).
        grid_amp: amplitude of the grid lines, fraction of the range.
        gain_field: amplitude of a slow multiplicative gain field.
        bits: output bit depth (8..16).
    """

    gamma: float
    blur: float
    sharpen: float
    noise: float
    noise_corr: float
    stripes: float
    grid_period: int
    grid_amp: float
    gain_field: float
    bits: int


def draw_look(rng: np.random.Generator) -> OutlierLook:
    """Draw one device's processing chain (see :class:`OutlierLook` for the ranges)."""
    return OutlierLook(
        gamma=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        blur=float(rng.choice([0.0, rng.uniform(0.4, 1.5)])),
        sharpen=float(rng.choice([0.0, rng.uniform(0.3, 2.0)])),
        noise=float(rng.choice([0.0, np.exp(rng.uniform(np.log(5e-4), np.log(3e-2)))])),
        noise_corr=float(rng.choice([0.0, rng.uniform(0.5, 2.0)])),
        stripes=float(rng.choice([0.0, 0.0, np.exp(rng.uniform(np.log(2e-4), np.log(5e-3)))])),
        grid_period=int(rng.choice([0, 0, 0, int(rng.integers(3, 12))])),
        grid_amp=float(rng.uniform(5e-4, 5e-3)),
        gain_field=float(rng.choice([0.0, rng.uniform(0.01, 0.15)])),
        bits=int(rng.choice([8, 10, 12, 14, 16])),
    )


def apply_look(image: np.ndarray, look: OutlierLook, rng: np.random.Generator) -> np.ndarray:
    """Pass an image through an outlier device's processing chain.

    Args:
        image: (H, W) stored values, any real dtype.
        look: the device's chain.
        rng: generator of this image's noise.

    Returns:
        (H, W) uint16 stored values in ``0 .. 2**look.bits - 1``.
    """
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    h, w = x.shape
    if look.gain_field > 0:
        field = ndimage.gaussian_filter(rng.standard_normal((h, w)), min(h, w) / 6.0)
        field /= max(float(np.abs(field).max()), 1e-12)
        x = x * (1.0 + look.gain_field * field)
    x = np.clip(x, 0.0, 1.0) ** look.gamma
    if look.blur > 0:
        x = ndimage.gaussian_filter(x, look.blur)
    if look.sharpen > 0:
        x = x + look.sharpen * (x - ndimage.gaussian_filter(x, 1.5))
    if look.noise > 0:
        n = rng.standard_normal((h, w))
        if look.noise_corr > 0:
            n = ndimage.gaussian_filter(n, look.noise_corr)
            n /= max(float(n.std()), 1e-12)
        x = x + look.noise * n
    if look.stripes > 0:
        x = x + look.stripes * (rng.standard_normal((h, 1)) + rng.standard_normal((1, w)))
    if look.grid_period > 0:
        lines = (np.arange(w) % look.grid_period == 0).astype(np.float64)
        x = x + look.grid_amp * lines[None, :]
    top = 2**look.bits - 1
    return np.clip(np.round(x * top), 0, top).astype(np.uint16)


def write_outlier_images(out_dir: str | Path, *, devices: int = 12, images_per_device: int = 4,
                         size: tuple[int, int] = (256, 384), seed: int = 0) -> list[dict]:
    """Write outlier-device images and return their manifest-like rows.

    Args:
        out_dir: folder for ``dev<k>_<i>.png`` files (created; existing files are rewritten).
        devices: number of outlier devices (>= 1).
        images_per_device: images per device (>= 1).
        size: inclusive (min, max) side in px of the square-ish images.
        seed: the run's seed; outlier devices use it plus a fixed offset.

    Returns:
        One dict per image with ``path``, ``status`` ("eligible"), ``look`` (the device's
        chain as a dict) and ``device`` (its index).

    Raises:
        ConfigError: non-positive counts or sizes.
    """
    if devices < 1 or images_per_device < 1:
        raise ConfigError("devices and images_per_device must be >= 1")
    lo, hi = int(size[0]), int(size[1])
    if lo < 64 or hi < lo:
        raise ConfigError(f"size must be an inclusive range with min >= 64, got {size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_seed = int(seed) + _SEED_OFFSET
    units = build_devices(manufacturers=devices, models_per_manufacturer=1,
                          units_per_model=1, seed=base_seed)
    rng = np.random.default_rng(base_seed)
    rows: list[dict] = []
    for k, unit in enumerate(units):
        look = draw_look(rng)
        for i in range(images_per_device):
            h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
            pixels, _ = simulate_image(unit, (h, w), seed=int(rng.integers(2**31)))
            path = out / f"dev{k:03d}_{i:02d}.png"
            write_png16(path, apply_look(pixels, look, rng))
            rows.append({"path": str(path), "status": "eligible", "device": k,
                         "look": asdict(look)})
    log.info("wrote %d outlier images of %d procedurally drawn devices to %s",
             len(rows), devices, out)
    return rows
