"""Combine forgery cues into one per-pixel probability map, an image score and a forged area.

The cues are those of the registry (:mod:`medforensics.forgery.cues`; each a float32 (H, W)
map in [0, 1] at native resolution, 0.5 at its own decision point), in its order:

* ``copymove``: :func:`medforensics.forgery.cues.copymove.detect_copy_move` (residual block
  matching, exact-value keypoints and SIFT content matching; lossless or lossy data; both
  copies unless evidence names the pasted one, :mod:`medforensics.forgery.direction`).
* ``noise``: :func:`medforensics.forgery.cues.noise.noise_inconsistency_map` (local
  noise level vs the image's own Poisson-Gaussian noise model).
* ``texture``: :func:`medforensics.forgery.cues.texture.texture_inconsistency_map` (local noise
  *shape* - residual lag correlations, stored-value lattice - vs the image's own distribution);
  in the default cue list when :data:`DEFAULT_TEXTURE` is True.
* ``whiteness``: :func:`medforensics.forgery.cues.whiteness.whiteness_inconsistency_map`
  (residual noise whiter than the image's own at that intensity: a fill given white noise;
  lossless data only); in the default cue list when :data:`DEFAULT_WHITENESS` is True.
* ``seam``: :func:`medforensics.forgery.cues.seam.seam_cue` (blocks outlined by hard, straight,
  pixel-aligned paste seams meeting at right angles; lossless data only); in the default cue
  list when :data:`DEFAULT_SEAM` is True.
* ``ela``: :func:`medforensics.forgery.cues.ela.ela_cue` - only for images that went through lossy
  (JPEG-type) compression, because ELA is a JPEG-domain heuristic; skipped otherwise (noted).
* ``fingerprint``: :func:`medforensics.forgery.cues.fingerprint.fingerprint_llr_map` when a
  patch model callable is supplied; it also gives ``fingerprint_weak``, the same evidence from
  partly clipped patches, scaled to at most 0.45 (below the map threshold).

Cue parameters travel as one mapping ``cue_params: {cue: {parameter: value}}``, merged over
each cue's registered defaults (:func:`medforensics.forgery.cues.registry.resolve_params`).

**Combination rule** (documented, deliberately simple): ``map = max_c (w_c * cue_c)`` with
weights ``w_c`` (default 1). Each cue is already scaled so that 0.5 is its own detection
threshold, so the max keeps every cue's operating point; it is not a calibrated posterior.
Weak maps (``fingerprint_weak``) are added to the map afterwards (``map = max(map, weak)``) but
left out of the image score: they rank pixels for localization, they never make a verdict or a
forged area on their own.
**Image score**: the maximum of the map (without the weak maps) after a ``SCORE_WINDOW`` x
``SCORE_WINDOW`` (17 x 17) mean filter (:mod:`medforensics.forgery.scoring`): an isolated pixel
or a single 16-px noise block cannot make an image "forged"; a region of about 17 x 17 px at
level p gives score ~p (the window's choice is measured in docs/forgery.md).
**Forged area**: ``forged_area_percent = 100 * mean(map >= threshold)`` (threshold 0.5) - the
share of pixels above the map threshold, unlike the paper's "percentage of forgery" (which is
the mean ELA intensity, see :func:`medforensics.dsp.ela.ela_score`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.errors import ConfigError
from medforensics.forgery.cues import (
    CueContext,
    CueOutput,
    CueSpec,
    check_cue_params,
    get_cue,
    list_cues,
    map_names,
    resolve_params,
)
from medforensics.forgery.cues.ela import lossy_codec
from medforensics.forgery.scoring import SCORE_WINDOW, forged_area_percent, image_score
from medforensics.io import read_image

__all__ = [
    "CUES",
    "LocalizationResult",
    "combine_cues",
    "default_cues",
    "image_score",
    "SCORE_WINDOW",
    "forged_area_percent",
    "localize",
    "localize_file",
]

log = logging.getLogger(__name__)

#: every name a cue list may hold (the registry's cues and their extra maps), in order
CUES: tuple[str, ...] = map_names()
#: whether the default cue list (``cues=None``) includes the ``texture`` cue
DEFAULT_TEXTURE = get_cue("texture").default_on
#: whether the default cue list (``cues=None``) includes the ``seam`` cue
DEFAULT_SEAM = get_cue("seam").default_on
#: whether the default cue list (``cues=None``) includes the ``whiteness`` cue
DEFAULT_WHITENESS = get_cue("whiteness").default_on
#: cue maps that shape the map but not the image score
WEAK_CUES: tuple[str, ...] = tuple(w for c in list_cues() for w in get_cue(c).weak)
RULE = "max of cue maps (each 0.5 at its own threshold), weights {weights}"


@dataclass
class LocalizationResult:
    """Output of :func:`localize`.

    Attributes:
        map: float32 (H, W) in [0, 1], combined per-pixel forgery map (native resolution).
        score: image-level score in [0, 1] (see module docs).
        forged_area_percent: share of pixels with ``map >= threshold``, in percent.
        threshold: map threshold used for the area and binary masks.
        cues: the individual cue maps by name.
        cue_scores: image score of every cue map.
        rule: the combination rule in words.
        notes: what was skipped or how something was computed (e.g. the ELA window).
        details: per-cue extra outputs (copy-move shifts, noise fit, ...).
    """

    map: np.ndarray
    score: float
    forged_area_percent: float
    threshold: float
    cues: dict[str, np.ndarray] = field(default_factory=dict)
    cue_scores: dict[str, float] = field(default_factory=dict)
    rule: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """bool (H, W): ``map >= threshold``."""
        return self.map >= self.threshold


def default_cues(*, texture: bool | None = None, seam: bool | None = None, ela: bool = True,
                 fingerprint: bool = False, whiteness: bool | None = None) -> list[str]:
    """The training-free cue list: copymove, noise, texture, whiteness, seam, ela,
    fingerprint(_weak).

    Args:
        texture: include ``texture`` (None = :data:`DEFAULT_TEXTURE`).
        seam: include ``seam`` (None = :data:`DEFAULT_SEAM`).
        whiteness: include ``whiteness`` (None = :data:`DEFAULT_WHITENESS`).
        ela: include ``ela`` (:func:`localize` runs it only on lossy inputs unless the list
            is given explicitly).
        fingerprint: include ``fingerprint`` and ``fingerprint_weak``.
    """
    flags = {"texture": texture, "seam": seam, "ela": ela, "fingerprint": fingerprint,
             "whiteness": whiteness}
    out: list[str] = []
    for name in list_cues():
        spec = get_cue(name)
        on = flags.get(name)
        if on if on is not None else spec.default_on:
            out.extend(spec.maps)
    return out


def combine_cues(cues: dict[str, np.ndarray], weights: dict[str, float] | None = None
                 ) -> np.ndarray:
    """``max_c(w_c * cue_c)`` clipped to [0, 1].

    Args:
        cues: name -> float (H, W) map in [0, 1]; all the same shape.
        weights: name -> weight (default 1 for every cue).

    Returns:
        float32 (H, W) in [0, 1]; zeros if ``cues`` is empty (shape unknown -> ValueError).
    """
    if not cues:
        raise ConfigError("no cue maps to combine")
    shapes = {np.shape(v) for v in cues.values()}
    if len(shapes) != 1:
        raise ConfigError(f"cue maps differ in shape: {shapes}")
    w = weights or {}
    out = None
    for name, m in cues.items():
        v = float(w.get(name, 1.0)) * np.asarray(m, dtype=np.float32)
        out = v if out is None else np.maximum(out, v)
    assert out is not None
    return np.clip(out, 0.0, 1.0).astype(np.float32)



def localize(
    pixels: np.ndarray,
    *,
    lossy: bool = False,
    bits_stored: int | None = None,
    cues: Iterable[str] | None = None,
    patch_logprobs: Callable[[np.ndarray], np.ndarray] | None = None,
    threshold: float = 0.5,
    weights: dict[str, float] | None = None,
    cue_params: Mapping[str, Mapping[str, Any]] | None = None,
    texture: bool | None = None,
    seam: bool | None = None,
    lossy_codec: str | None = None,
    whiteness: bool | None = None,
) -> LocalizationResult:
    """Compute the selected cues on one image and combine them.

    Args:
        pixels: float (H, W) stored values (``read_image`` contract).
        lossy: the image went through lossy compression (``ImageMeta.lossy``); enables ELA.
        bits_stored: bit depth (for the ELA window).
        cues: names from :data:`CUES`; default (:func:`default_cues`): copymove, noise,
            texture (if ``texture``), seam (if ``seam``, lossless inputs), ela (if
            ``lossy``), fingerprint and fingerprint_weak (if ``patch_logprobs`` is given;
            either name computes both).
        patch_logprobs: patch model callable for the fingerprint cue (see
            :func:`~medforensics.forgery.cues.fingerprint.fingerprint_llr_map`).
        threshold: map threshold for the area / mask.
        weights: per-cue weights for the max rule.
        cue_params: ``{cue: {parameter: value}}`` over the cues' registered defaults (e.g.
            ``{"noise": {"extra_blocks": (32,)}, "ela": {"quality": 90}}``; the registry
            lists each cue's parameters: ``get_cue(name).defaults``).
        texture: include the texture cue in the default list (``cues=None``); None =
            :data:`DEFAULT_TEXTURE`.
        seam: include the seam cue in the default list (``cues=None``); None =
            :data:`DEFAULT_SEAM`.
        lossy_codec: with ``lossy``, the kind of lossy coding
            (:func:`~medforensics.forgery.cues.ela.lossy_codec`): ``"other"`` (JPEG 2000,
            JPEG-LS near-lossless, no JPEG grid) leaves ELA and the noise cue out unless
            ``cues`` names them: such coding reshapes the noise by itself. ``"jpeg"`` / None:
            no change.
        whiteness: include the whiteness cue in the default list (``cues=None``; lossless
            inputs); None = :data:`DEFAULT_WHITENESS`.

    Returns:
        :class:`LocalizationResult`.

    Raises:
        ConfigError: unknown cue or cue parameter, or ``fingerprint`` requested without a
            patch model.
    """
    img = np.asarray(pixels, dtype=np.float32)
    explicit = cues is not None
    names = (list(cues) if cues is not None
             else default_cues(texture=texture, seam=seam, whiteness=whiteness,
                               fingerprint=patch_logprobs is not None))
    bad = [c for c in names if c not in CUES]
    if bad:
        raise ConfigError(f"unknown cues {bad}; choose from {', '.join(CUES)}")
    check_cue_params(cue_params)
    specs = list({get_cue(n).name: get_cue(n) for n in names}.values())
    ctx = CueContext(lossy=bool(lossy), lossy_codec=lossy_codec, bits_stored=bits_stored,
                     explicit=explicit, patch_logprobs=patch_logprobs)
    outputs = _run_cues(img, specs, ctx, cue_params)
    maps: dict[str, np.ndarray] = {}
    notes: list[str] = []
    details: dict[str, Any] = {}
    for spec in specs:  # in the order asked for, whatever order they ran in
        out = outputs[spec.name]
        maps.update(out.maps)
        notes.extend(out.notes)
        if out.details is not None:
            details[spec.name] = out.details
    return _combine(img, maps, notes, details, threshold, weights)


def _run_cues(img: np.ndarray, specs: list[CueSpec], ctx: CueContext,
              cue_params: Mapping[str, Mapping[str, Any]] | None) -> dict[str, CueOutput]:
    """Run every cue of ``specs``, each after the listed cues it ``needs`` (the seam cue's
    boxes are evidence for the copy-move direction), with its resolved parameters.

    Raises:
        ConfigError: a cue needs a patch model and ``ctx.patch_logprobs`` is None.
    """
    listed = {s.name: s for s in specs}
    for spec in specs:
        if "patch_logprobs" in spec.needs and ctx.patch_logprobs is None:
            raise ConfigError(f"the {spec.name} cue needs a patch_logprobs callable")
    outputs: dict[str, CueOutput] = {}

    def run(spec: CueSpec) -> None:
        if spec.name in outputs:
            return
        for dep in spec.needs:
            if dep in listed:
                run(listed[dep])
        inputs = {d: outputs[d].result for d in spec.needs if d in outputs}
        params = resolve_params(spec.name, cue_params, lossy=ctx.lossy)
        outputs[spec.name] = spec.fn(img, replace(ctx, inputs=inputs), params)

    for spec in specs:
        run(spec)
    return outputs


def _combine(img: np.ndarray, maps: dict[str, np.ndarray], notes: list[str],
             details: dict[str, Any], threshold: float,
             weights: dict[str, float] | None) -> LocalizationResult:
    """The max rule over the strong cue maps, the image score, then the weak maps (module
    docs)."""
    strong = {k: v for k, v in maps.items() if k not in WEAK_CUES}
    combined = (combine_cues(strong, weights) if strong
                else np.zeros(img.shape, np.float32))
    score = image_score(combined, SCORE_WINDOW)
    for k in WEAK_CUES:
        if k in maps:
            combined = np.maximum(combined, np.minimum(maps[k], 0.5 * np.float32(1 - 1e-6)))
    return LocalizationResult(
        map=combined,
        score=score,
        forged_area_percent=forged_area_percent(combined, threshold),
        threshold=float(threshold),
        cues=maps,
        cue_scores={k: image_score(v, SCORE_WINDOW) for k, v in maps.items()},
        rule=RULE.format(weights=weights or "all 1"),
        notes=notes,
        details=details,
    )


def localize_file(path: str | Path, *, frame: int = 0, **kwargs: Any) -> LocalizationResult:
    """Read an image with :func:`medforensics.io.read_image` and run :func:`localize`.

    ``lossy``, ``lossy_codec`` and ``bits_stored`` come from the image's metadata unless
    given (``lossy`` also when a losslessly stored image shows a JPEG block grid, see
    :func:`medforensics.forgery.cues.ela.lossy_codec`).
    """
    pixels, meta = read_image(path, frame=frame)
    if "lossy" not in kwargs:
        codec = lossy_codec(pixels, meta)[0]
        kwargs["lossy"] = codec is not None
        kwargs.setdefault("lossy_codec", codec)
    kwargs.setdefault("bits_stored", getattr(meta, "bits_stored", None))
    return localize(pixels, **kwargs)
