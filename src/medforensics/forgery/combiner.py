"""Learned cue combiner (the ``cues`` preset of ``medforensics forgery train``).

Two small logistic regressions on the cue maps of :func:`medforensics.forgery.localize.localize`:

* **pixel model**: per pixel, features from every cue map (the value and its 15x15 mean; for the
  noise cue also the clipped negative and positive z-score) -> probability that the pixel was
  edited. Fitted on pixels subsampled on a grid from the training split's tampered *and*
  original images (so the prior is the data's). Its intercept is then shifted so that 0.5 is
  the threshold that maximises pixel F1 on the tampered training images (the project's
  convention: every map is 0.5 at its own decision point).
* **image model**: per image, the image score (:func:`~medforensics.forgery.localize.image_score`)
  and the share of pixels >= 0.5 of every cue map, and the pixel model's score on its 4-px
  sampling grid (:func:`grid_score`) -> probability that the image was tampered. Fitted with
  balanced class weights, so 0.5 is a balanced operating point.

The weights are plain tensors saved with safetensors (``combiner.safetensors``) and the feature
names / cue list in ``model.json``; nothing is pickled and applying the combiner needs only
NumPy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.errors import ConfigError, ModelFileError
from medforensics.forgery.metrics import best_f1
from medforensics.forgery.scoring import SCORE_WINDOW, image_score

__all__ = [
    "COMBINER_FILE",
    "CueCombiner",
    "pixel_features",
    "pixel_feature_names",
    "image_features",
    "image_feature_names",
    "fit_combiner",
    "grid_score",
]

log = logging.getLogger(__name__)

COMBINER_FILE = "combiner.safetensors"
_CONTEXT = 15  # side of the mean filter giving each cue's neighbourhood feature


def pixel_feature_names(cues: Sequence[str]) -> list[str]:
    """Names of the per-pixel features for ``cues`` (the order of :func:`pixel_features`)."""
    names: list[str] = []
    for c in cues:
        names += [c, f"{c}_mean{_CONTEXT}"]
        if c == "noise":
            names += ["noise_zlow", "noise_zhigh"]
    return names


def image_feature_names(cues: Sequence[str]) -> list[str]:
    """Names of the per-image features (order of :func:`image_features` + the pixel model's)."""
    names: list[str] = []
    for c in cues:
        names += [f"score_{c}", f"area_{c}"]
    return names + ["score_pixel_model"]


def pixel_features(
    maps: Mapping[str, np.ndarray],
    cues: Sequence[str],
    shape: tuple[int, int],
    noise_z: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel feature stack.

    Args:
        maps: cue name -> float32 (H, W) map in [0, 1]; a missing cue counts as all zeros.
        cues: the cue names, in model order.
        shape: ``(H, W)``.
        noise_z: float (H, W) robust z-score of the noise cue (``localize`` details), or None.

    Returns:
        float32 (H, W, F), every feature in [0, 1]; F = ``len(pixel_feature_names(cues))``.
    """
    feats: list[np.ndarray] = []
    zero = np.zeros(shape, np.float32)
    for c in cues:
        m = np.asarray(maps.get(c, zero), dtype=np.float32)
        feats += [m, ndimage.uniform_filter(m, size=_CONTEXT, mode="reflect")]
        if c == "noise":
            z = zero if noise_z is None else np.asarray(noise_z, dtype=np.float32)
            feats += [np.clip(-z, 0.0, 10.0) / 10.0, np.clip(z, 0.0, 10.0) / 10.0]
    return np.stack(feats, axis=-1).astype(np.float32)


def image_features(maps: Mapping[str, np.ndarray], cues: Sequence[str]) -> np.ndarray:
    """Per-image cue features: image score and share of pixels >= 0.5 of every cue map.

    Returns:
        float32 (2 * len(cues),), values in [0, 1] (a missing cue gives zeros).
    """
    vals: list[float] = []
    for c in cues:
        if c in maps:
            m = np.asarray(maps[c], dtype=np.float32)
            vals += [image_score(m, SCORE_WINDOW), float(np.mean(m >= 0.5))]
        else:
            vals += [0.0, 0.0]
    return np.asarray(vals, dtype=np.float32)


def grid_score(prob_grid: np.ndarray) -> float:
    """Image score of the pixel model on its sampling grid: max of the 3x3 (grid) mean.

    Args:
        prob_grid: float (h, w) pixel-model probabilities at every ``grid``-th pixel.
    """
    g = np.asarray(prob_grid, dtype=np.float32)
    if g.size == 0:
        return 0.0
    return float(ndimage.uniform_filter(g, size=min(3, *g.shape), mode="reflect").max())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


@dataclass
class CueCombiner:
    """Fitted combiner (see module docs).

    Attributes:
        cues: cue names the models were fitted on (their order fixes the features).
        pixel_coef: float64 (F_pixel,) pixel-model weights.
        pixel_intercept: pixel-model intercept (already shifted to the F1-best threshold).
        image_coef: float64 (F_image,) image-model weights.
        image_intercept: image-model intercept.
        info: fit summary (threshold shift, sample counts, training F1 / accuracy).
        grid: pixel sampling step used for the pixel-model image feature.
    """

    cues: list[str]
    pixel_coef: np.ndarray
    pixel_intercept: float
    image_coef: np.ndarray
    image_intercept: float
    info: dict[str, Any]
    grid: int = 4

    def pixel_map(self, maps: Mapping[str, np.ndarray], shape: tuple[int, int],
                  noise_z: np.ndarray | None = None) -> np.ndarray:
        """float32 (H, W) per-pixel probability in [0, 1] (0.5 at the F1-best threshold)."""
        f = pixel_features(maps, self.cues, shape, noise_z)
        logit = f.reshape(-1, f.shape[-1]).astype(np.float64) @ self.pixel_coef
        return _sigmoid(logit + self.pixel_intercept).reshape(shape).astype(np.float32)

    def image_probability(self, maps: Mapping[str, np.ndarray], pixel_prob: np.ndarray) -> float:
        """Probability in [0, 1] that the image was tampered.

        Args:
            maps: the cue maps.
            pixel_prob: float (H, W) output of :meth:`pixel_map`.
        """
        g = self.grid
        return self.image_probability_from(image_features(maps, self.cues),
                                           grid_score(pixel_prob[::g, ::g]))

    def image_probability_from(self, cue_feats: np.ndarray, pixel_score: float) -> float:
        """Image probability from :func:`image_features` and the pixel model's grid score."""
        x = np.concatenate([np.asarray(cue_feats, np.float64), [float(pixel_score)]])
        return float(_sigmoid(np.asarray(x @ self.image_coef + self.image_intercept)))

    # ------------------------------------------------------------------ persistence
    def save(self, run_dir: str | Path) -> Path:
        """Write ``combiner.safetensors`` (tensors only) into ``run_dir``; returns its path."""
        import torch
        from safetensors.torch import save_file

        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            "pixel_coef": torch.from_numpy(np.asarray(self.pixel_coef, np.float64)),
            "pixel_intercept": torch.tensor([float(self.pixel_intercept)], dtype=torch.float64),
            "image_coef": torch.from_numpy(np.asarray(self.image_coef, np.float64)),
            "image_intercept": torch.tensor([float(self.image_intercept)], dtype=torch.float64),
        }
        path = out / COMBINER_FILE
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"cues": ",".join(self.cues)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path, cues: Sequence[str],
             info: dict[str, Any] | None = None, grid: int = 4) -> CueCombiner:
        """Read ``combiner.safetensors`` from ``run_dir``.

        Raises:
            ModelFileError: missing/unreadable file or weights not matching ``cues``.
        """
        from safetensors.numpy import load_file

        path = Path(run_dir) / COMBINER_FILE
        if not path.is_file():
            raise ModelFileError(f"{path}: combiner weights not found")
        try:
            t = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error type
            raise ModelFileError(f"{path}: unreadable safetensors file: {exc}") from None
        need = {"pixel_coef", "pixel_intercept", "image_coef", "image_intercept"}
        if set(t) != need:
            raise ModelFileError(f"{path}: expected tensors {sorted(need)}, got {sorted(t)}")
        cues = list(cues)
        if t["pixel_coef"].shape != (len(pixel_feature_names(cues)),) or \
                t["image_coef"].shape != (len(image_feature_names(cues)),):
            raise ModelFileError(f"{path}: weight shapes do not match the cues {cues}")
        return cls(cues=cues, pixel_coef=t["pixel_coef"].astype(np.float64),
                   pixel_intercept=float(t["pixel_intercept"][0]),
                   image_coef=t["image_coef"].astype(np.float64),
                   image_intercept=float(t["image_intercept"][0]), info=dict(info or {}),
                   grid=int(grid))


def fit_combiner(
    pixel_x: Sequence[np.ndarray],
    pixel_y: Sequence[np.ndarray],
    grid_shapes: Sequence[tuple[int, int]],
    image_x: Sequence[np.ndarray],
    image_labels: Sequence[int],
    cues: Sequence[str],
    *,
    grid: int = 4,
    seed: int = 0,
    c_reg: float = 1.0,
) -> CueCombiner:
    """Fit the pixel and image models (see module docs).

    Args:
        pixel_x: per image, float32 (h_i * w_i, F) pixel features at every ``grid``-th pixel
            (:func:`pixel_features` ``[::grid, ::grid]``, row-major).
        pixel_y: per image, bool (h_i * w_i,) edited-pixel labels at the same pixels.
        grid_shapes: per image, ``(h_i, w_i)`` of its sampling grid.
        image_x: per image, :func:`image_features`.
        image_labels: per image, 1 = tampered, 0 = original.
        cues: cue names (feature order).
        grid: the sampling step.
        seed: seed of the solver.
        c_reg: inverse L2 regularisation strength of both regressions.

    Returns:
        :class:`CueCombiner`.

    Raises:
        ConfigError: no tampered or no original image, or no edited pixel.
    """
    from sklearn.linear_model import LogisticRegression

    y_img = np.asarray(image_labels, dtype=int)
    if y_img.sum() == 0 or (1 - y_img).sum() == 0:
        raise ConfigError("the combiner needs tampered and original training images")
    X = np.concatenate(list(pixel_x)).astype(np.float64)
    Y = np.concatenate(list(pixel_y)).astype(bool)
    if Y.sum() == 0:
        raise ConfigError("no edited pixel among the training samples")
    pix = LogisticRegression(C=c_reg, max_iter=2000, random_state=seed)
    pix.fit(X, Y)
    coef = pix.coef_[0].astype(np.float64)
    b = float(pix.intercept_[0])
    # shift so that 0.5 is the F1-best threshold on the tampered images' pixels
    tam = np.concatenate([np.full(len(y), bool(t)) for y, t in zip(pixel_y, y_img)])
    f1, thr = best_f1(_sigmoid(X[tam] @ coef + b), Y[tam])
    thr = float(np.clip(thr, 1e-6, 1 - 1e-6)) if math.isfinite(thr) else 0.5
    b_shifted = b - math.log(thr / (1.0 - thr))
    scores = []
    for x, shp in zip(pixel_x, grid_shapes):
        p = _sigmoid(np.asarray(x, np.float64) @ coef + b_shifted).reshape(shp)
        scores.append(grid_score(p))
    F = np.concatenate([np.stack([np.asarray(v, np.float64) for v in image_x]),
                        np.asarray(scores)[:, None]], axis=1)
    img = LogisticRegression(C=c_reg, max_iter=2000, class_weight="balanced", random_state=seed)
    img.fit(F, y_img)
    comb = CueCombiner(list(cues), coef, b_shifted, img.coef_[0].astype(np.float64),
                       float(img.intercept_[0]), {}, grid=int(grid))
    p_img = _sigmoid(F @ comb.image_coef + comb.image_intercept)
    comb.info = {
        "pixel_samples": int(len(Y)),
        "pixel_positive": int(Y.sum()),
        "pixel_threshold": thr,
        "train_pixel_f1_pooled": float(f1),
        "train_image_accuracy": float(np.mean((p_img >= 0.5) == (y_img == 1))),
        "n_images": int(len(y_img)),
        "pixel_features": pixel_feature_names(cues),
        "image_features": image_feature_names(cues),
        "pixel_coef": [float(v) for v in coef],
        "image_coef": [float(v) for v in comb.image_coef],
    }
    return comb
