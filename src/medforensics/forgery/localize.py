"""Combine forgery cues into one per-pixel probability map, an image score and a forged area.

Cues (each a float32 (H, W) map in [0, 1] at native resolution, 0.5 at its own decision point):

* ``copymove``: :func:`medforensics.forgery.cues.copymove.detect_copy_move` (residual block
  matching, exact-value keypoints and SIFT content matching; lossless or lossy data; both
  copies unless evidence names the pasted one, :mod:`medforensics.forgery.direction`).
* ``noise``: :func:`medforensics.forgery.cues.noise.noise_inconsistency_map` (local
  noise level vs the image's own Poisson-Gaussian noise model).
* ``texture``: :func:`medforensics.forgery.cues.texture.texture_inconsistency_map` (local noise
  *shape* - residual lag correlations, stored-value lattice - vs the image's own distribution);
  in the default cue list when :data:`DEFAULT_TEXTURE` is True.
* ``seam``: :func:`medforensics.forgery.cues.seam.seam_cue` (blocks outlined by hard, straight,
  pixel-aligned paste seams meeting at right angles; lossless data only); in the default cue
  list when :data:`DEFAULT_SEAM` is True.
* ``ela``: :func:`medforensics.forgery.cues.ela.ela_cue` - only for images that went through lossy
  (JPEG-type) compression, because ELA is a JPEG-domain heuristic; skipped otherwise (noted).
* ``fingerprint``: :func:`medforensics.forgery.cues.noise.fingerprint_llr_map` when a
  patch model callable is supplied; it also gives ``fingerprint_weak``, the same evidence from
  partly clipped patches, scaled to at most 0.45 (below the map threshold).

**Combination rule** (documented, deliberately simple): ``map = max_c (w_c * cue_c)`` with
weights ``w_c`` (default 1). Each cue is already scaled so that 0.5 is its own detection
threshold, so the max keeps every cue's operating point; it is not a calibrated posterior.
``fingerprint_weak`` is added to the map afterwards (``map = max(map, fingerprint_weak)``) but
left out of the image score: it ranks pixels for localization, it never makes a verdict or a
forged area on its own.
**Image score**: the maximum of the map (without ``fingerprint_weak``) after a
``SCORE_WINDOW`` x ``SCORE_WINDOW`` (17 x 17) mean filter: an isolated pixel or a single 16-px noise block cannot make an image "forged"; a
region of about 17 x 17 px at level p gives score ~p. (With 9 x 9 the noise cue called 13 % of
the untouched simulated originals forged, with 17 x 17 3 %, at the same image AUC.)
**Forged area**: ``forged_area_percent = 100 * mean(map >= threshold)`` (threshold 0.5) - the
share of pixels above the map threshold, unlike the paper's "percentage of forgery" (which is
the mean ELA intensity, see :func:`medforensics.dsp.ela.ela_score`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.cues.copymove import detect_copy_move
from medforensics.forgery.cues.ela import analyze_ela, ela_cue, lossy_codec
from medforensics.forgery.cues.noise import fingerprint_llr_map, noise_inconsistency_map
from medforensics.forgery.cues.seam import SeamSkipped, seam_cue
from medforensics.forgery.cues.texture import texture_inconsistency_map
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

CUES: tuple[str, ...] = ("copymove", "noise", "texture", "seam", "ela", "fingerprint",
                         "fingerprint_weak")
#: whether the default cue list (``cues=None``) includes the ``texture`` cue
DEFAULT_TEXTURE = True
#: whether the default cue list (``cues=None``) includes the ``seam`` cue
DEFAULT_SEAM = True
#: cue maps that shape the map but not the image score
WEAK_CUES: tuple[str, ...] = ("fingerprint_weak",)
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
                 fingerprint: bool = False) -> list[str]:
    """The training-free cue list: copymove, noise, texture, seam, ela, fingerprint(_weak).

    Args:
        texture: include ``texture`` (None = :data:`DEFAULT_TEXTURE`).
        seam: include ``seam`` (None = :data:`DEFAULT_SEAM`).
        ela: include ``ela`` (:func:`localize` runs it only on lossy inputs unless the list
            is given explicitly).
        fingerprint: include ``fingerprint`` and ``fingerprint_weak``.
    """
    use_tex = DEFAULT_TEXTURE if texture is None else bool(texture)
    use_seam = DEFAULT_SEAM if seam is None else bool(seam)
    return (["copymove", "noise"] + (["texture"] if use_tex else [])
            + (["seam"] if use_seam else []) + (["ela"] if ela else [])
            + (["fingerprint", "fingerprint_weak"] if fingerprint else []))


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
    copymove_kw: dict[str, Any] | None = None,
    noise_kw: dict[str, Any] | None = None,
    ela_quality: int = 90,
    fingerprint_kw: dict[str, Any] | None = None,
    texture: bool | None = None,
    texture_kw: dict[str, Any] | None = None,
    seam: bool | None = None,
    seam_kw: dict[str, Any] | None = None,
    lossy_codec: str | None = None,
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
            :func:`~medforensics.forgery.cues.noise.fingerprint_llr_map`).
        threshold: map threshold for the area / mask.
        weights: per-cue weights for the max rule.
        copymove_kw: extra arguments for ``detect_copy_move``.
        noise_kw: extra arguments for ``noise_inconsistency_map``; ``extra_blocks`` (e.g.
            ``(32,)``) also runs it with those block sizes (``min_extent`` = the block) and
            takes the maximum of the maps - an option, not the default.
        ela_quality: JPEG quality of the ELA re-encoding.
        fingerprint_kw: extra arguments for ``fingerprint_llr_map``.
        texture: include the texture cue in the default list (``cues=None``); None =
            :data:`DEFAULT_TEXTURE`.
        texture_kw: extra arguments for ``texture_inconsistency_map``.
        seam: include the seam cue in the default list (``cues=None``); None =
            :data:`DEFAULT_SEAM`.
        seam_kw: extra arguments for :func:`~medforensics.forgery.cues.seam.seam_cue`.
        lossy_codec: with ``lossy``, the kind of lossy coding
            (:func:`~medforensics.forgery.cues.ela.lossy_codec`): ``"other"`` (JPEG 2000,
            JPEG-LS near-lossless, no JPEG grid) leaves ELA and the noise cue out unless
            ``cues`` names them: such coding reshapes the noise by itself. ``"jpeg"`` / None:
            no change.

    Returns:
        :class:`LocalizationResult`.

    Raises:
        ConfigError: unknown cue name, or ``fingerprint`` requested without a patch model.
    """
    img = np.asarray(pixels, dtype=np.float32)
    if cues is None:
        names = default_cues(texture=texture, seam=seam, fingerprint=patch_logprobs is not None)
        explicit = False
    else:
        names = list(cues)
        explicit = True
    bad = [c for c in names if c not in CUES]
    if bad:
        raise ConfigError(f"unknown cues {bad}; choose from {', '.join(CUES)}")
    maps: dict[str, np.ndarray] = {}
    notes: list[str] = []
    non_dct = bool(lossy) and lossy_codec == "other"
    details: dict[str, Any] = {}
    # the seam cue runs first: its paste-seam boxes are one item of evidence for the
    # direction of a copy-move (which area was pasted)
    seam_res: Any = None
    seam_note = ""
    if "seam" in names:
        try:
            seam_res = seam_cue(img, **{"lossy": lossy, **(seam_kw or {})})
        except (SeamSkipped, InvalidArrayError) as exc:
            seam_note = f"seam cue skipped: {exc}"
    for name in names:
        if name == "copymove":
            kw = {"lossy": lossy, **(copymove_kw or {})}
            if seam_res is not None:
                kw.setdefault("paste_boxes", seam_res.boxes)
            cm = detect_copy_move(img, **kw)
            maps[name] = cm.map
            details[name] = {"shifts": cm.shifts, "regions": cm.regions, "score": cm.score}
        elif name == "noise":
            if non_dct and not explicit:
                notes.append("noise cue skipped: JPEG 2000 / JPEG-LS near-lossless coding "
                             "reshapes the noise by itself (smooths some areas, rings at edges)")
                continue
            nkw = dict(noise_kw or {})
            extra = tuple(nkw.pop("extra_blocks", ()))
            try:
                ni = noise_inconsistency_map(img, **nkw)
            except Exception as exc:  # too small image etc.: skip this cue, say so
                notes.append(f"noise cue skipped: {exc}")
                continue
            maps[name] = ni.map
            details[name] = {"fit": ni.fit, "z": ni.z}
            for b in extra:  # coarser blocks: a level change over a larger area, less noisy
                try:
                    nb = noise_inconsistency_map(img, **{**nkw, "block": int(b),
                                                         "min_extent": int(b)})
                except Exception as exc:
                    notes.append(f"noise cue at {b}-px blocks skipped: {exc}")
                    continue
                maps[name] = np.maximum(maps[name], nb.map)
                notes.append(f"noise cue also at {b}-px blocks (map: maximum of the scales)")
        elif name == "texture":
            try:
                # stored-value lattices are evidence only where the stored values are the
                # acquisition's own: a lossy codec's reconstruction (quantised transform or
                # near-lossless residuals) makes its own lattices
                ti = texture_inconsistency_map(
                    img, **{**({"use_lattice": False, "coarse": False} if lossy else {}),
                            **(texture_kw or {})})
            except InvalidArrayError as exc:  # too small image etc.: skip this cue, say so
                notes.append(f"texture cue skipped: {exc}")
                continue
            maps[name] = ti.map
            details[name] = {"features": ti.features, "n_blocks": ti.n_blocks,
                             "n_coarse": ti.n_coarse,
                             "coarse_boxes": [list(b) for b in ti.coarse_boxes]}
            if ti.n_coarse:
                notes.append(f"texture cue: {ti.n_coarse} block(s) of 32 px whose stored values "
                             "sit on a coarse lattice (a region scaled up from fewer grey "
                             "levels and rounded)")
        elif name == "seam":
            if seam_res is None:
                notes.append(seam_note)
                continue
            sr = seam_res
            maps[name] = sr.map
            details[name] = {"boxes": [{"bbox": list(b.box), "corners": b.corners,
                                        "side": b.side} for b in sr.boxes],
                             "n_seams": list(sr.n_seams)}
        elif name == "ela":
            if not lossy and not explicit:
                notes.append("ELA skipped: the image is losslessly stored (ELA is a JPEG-domain "
                             "heuristic)")
                continue
            if non_dct and not explicit:
                notes.append("ELA skipped: the lossy coding is not JPEG's (JPEG 2000, JPEG-LS "
                             "near-lossless, or no JPEG block grid); ELA is a JPEG-domain "
                             "heuristic")
                continue
            er = analyze_ela(img, bits_stored=bits_stored, quality=ela_quality)
            maps[name] = ela_cue(er.ela)
            notes.append(er.note)
            details[name] = {"ela_score": er.score, "window": er.window}
        elif name in ("fingerprint", "fingerprint_weak"):
            if "fingerprint" in maps:
                continue
            if patch_logprobs is None:
                raise ConfigError("the fingerprint cue needs a patch_logprobs callable")
            fp = fingerprint_llr_map(img, patch_logprobs, **(fingerprint_kw or {}))
            maps["fingerprint"] = fp.map
            if fp.weak is not None:
                maps["fingerprint_weak"] = fp.weak
            details["fingerprint"] = {"image_class": fp.image_class}
    strong = {k: v for k, v in maps.items() if k not in WEAK_CUES}
    if not strong:
        combined = np.zeros(img.shape, np.float32)
    else:
        combined = combine_cues(strong, weights)
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
