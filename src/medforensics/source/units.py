"""Unit-level source identification from detector reference patterns.

One reference pattern (fixed gain non-uniformity, see :mod:`medforensics.dsp.prnu`) is
estimated per acquisition unit from a few of its images. A query image's noise residual is
then correlated with the expected pattern term of every unit ``u``; the Peak-to-Correlation
Energy (PCE) at the zero shift (the grid is anchored at the top-left pixel) is the score.

Pattern model. Radiographs "for presentation" are stored after a logarithm (and a tone
curve), which turns the detector's gain ``1 + K`` into an additive offset ``~ -c K``; the
default ``model="additive"`` therefore estimates ``K`` as the mean residual and correlates
the query residual with ``K``. For linear ("for processing", raw) images use
``model="multiplicative"``: ``K = sum W I / sum I^2`` and the query residual is correlated
with ``I * K`` (docs/source_id.md compares the two models on log-domain images).

Decision (:meth:`UnitFingerprints.identify_unit`): the best-scoring unit if its score
exceeds the threshold, otherwise ``None`` = no enrolled unit's pattern is present (an
unseen unit, a heavily processed/resized image, or too little signal).

Threshold. Default 60 on PCE, the conservative value used in camera forensics (Goljan,
Fridrich and Filler 2009): at the zero shift the PCE of an unrelated image is ~chi-square
with one degree of freedom, so 60 is far in the tail. With validation images of enrolled
units, :meth:`UnitFingerprints.calibrate_threshold` sets the threshold from the scores of
validation images against the *other* units' patterns (the empirical ``1 - target_fpr``
quantile of each image's best non-matching score, never below the chi-square bound for
``target_fpr`` over all enrolled units) and reports the matching scores, so one can see how
much margin remains.

Combination with a model classifier: pass ``candidates=[...]`` (unit labels, or model labels
which select the units ``"<model> #<serial>"`` of the design's label convention).

No file I/O except :meth:`UnitFingerprints.save` / :meth:`UnitFingerprints.load`
(safetensors + JSON). Images are (H, W) arrays of stored values.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import scipy.fft

from medforensics.common.jsonio import atomic_write_json
from medforensics.dsp._checks import as_image
from medforensics.dsp.prnu import (
    PatternAccumulator,
    clip_levels,
    fast_shape,
    pce,
    postprocess_pattern,
    saturation_mask,
    tile_grid,
    window_origin,
    zero_mean_spectrum,
)
from medforensics.dsp.residuals import TILE_MARGIN, noise_residual
from medforensics.errors import (
    ConfigError,
    InvalidArrayError,
    MedForensicsError,
    MemoryBudgetError,
    ModelFileError,
)
from medforensics.models.runfiles import FINGERPRINT_BOUNDS, check_values, verify_run
from medforensics.source.unit_records import (
    PCE_FLOOR,
    FingerprintConfig,
    IdentificationReport,
    MatchScore,
    SkippedImage,
    ThresholdReport,
    threshold_report,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

FORMAT_NAME = "medforensics-unit-fingerprints"
FORMAT_VERSION = 1
WEIGHTS_FILE = "fingerprints.safetensors"
META_FILE = "fingerprints.json"
MIN_OVERLAP = 32
"""Smallest query/pattern overlap (pixels per side) that is scored."""
MEMORY_BUDGET = 1 << 30
"""Default working-memory budget (bytes) of matching one image (:attr:`UnitFingerprints.memory_budget`)."""
UNTILED_PIXELS = 1 << 22
"""Largest compared window whose residual is computed in one piece; larger ones go in tiles."""
RESIDUAL_TILE = 1024
"""Tile side of the residual of larger windows (with ``dsp.residuals.TILE_MARGIN`` context)."""
CORRELATION_TILE = 2048
"""Largest side of one cross-correlation; larger overlaps are correlated tile by tile."""
SPECTRUM_CACHE_BYTES = 128 << 20
"""Pattern spectra kept between queries (additive model), in bytes."""
_WINDOW_BYTES_PER_PIXEL = 24  # residual, mask, zero-mean copy and per-tile pattern term
_RESIDUAL_BYTES_PER_PIXEL = 48  # wavelet denoiser working set, per pixel of one piece



@dataclass
class _Query:
    """A query image prepared once for scoring against many patterns.

    ``image``, ``residual`` (float32) and ``usable`` cover the compared window only, whose
    top-left pixel is ``origin`` in the image (and in every pattern: both are anchored at
    their top-left pixel).
    """

    image: np.ndarray
    residual: np.ndarray
    usable: np.ndarray
    origin: tuple[int, int] = (0, 0)
    cache: dict[tuple, tuple[np.ndarray, float]] = field(default_factory=dict)
    cache_bytes: int = 0


@dataclass
class UnitFingerprints:
    """Reference patterns of acquisition units and the matching logic.

    Attributes:
        config: :class:`FingerprintConfig`.
        patterns: unit -> float32 (H, W) reference pattern (post-processed).
        counts: unit -> int32 (H, W) number of images behind each pixel.
        n_images: unit -> number of images used.
        skipped: images that could not be used in the last :meth:`fit`.
        calibration: the last :class:`ThresholdReport`, if any.
    """

    config: FingerprintConfig = field(default_factory=FingerprintConfig)
    patterns: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    n_images: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedImage] = field(default_factory=list)
    calibration: ThresholdReport | None = None
    memory_budget: int = MEMORY_BUDGET
    """Working memory (bytes) matching one image may take; a query over it raises
    :class:`~medforensics.errors.MemoryBudgetError` (not saved with the patterns)."""
    fft_workers: int = 1
    """Threads of ``scipy.fft`` for the cross-correlations (not saved)."""
    _spectra: "OrderedDict[tuple, tuple[np.ndarray, float]]" = field(
        default_factory=OrderedDict, repr=False, compare=False)
    _spectra_bytes: int = field(default=0, repr=False, compare=False)

    # ------------------------------------------------------------------ fitting
    @property
    def units(self) -> list[str]:
        """Enrolled unit labels, sorted."""
        return sorted(self.patterns)

    def residual(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Noise residual of ``image`` with this object's settings.

        Args:
            image: (H, W) stored values.
            mask: usable pixels (default :func:`~medforensics.dsp.prnu.saturation_mask`);
                the others are 0 in the residual and left out of its row/column means.

        Returns:
            float32 (H, W). Images over :data:`UNTILED_PIXELS` are denoised in tiles of
            :data:`RESIDUAL_TILE` px (bounded working memory; equal to the one-piece
            residual away from the image border, see ``dsp.residuals.wavelet_noise``).
        """
        c = self.config
        m = saturation_mask(image) if mask is None else mask
        size = int(np.asarray(image).size)
        return noise_residual(image, method=c.method, levels=c.levels, wavelet=c.wavelet,
                              mask=m, tile=None if size <= UNTILED_PIXELS else RESIDUAL_TILE)

    def fit(self, images_by_unit: Mapping[str, Iterable[np.ndarray]], *,
            masks_by_unit: Mapping[str, Sequence[np.ndarray | None]] | None = None
            ) -> "UnitFingerprints":
        """Estimate one reference pattern per unit (replaces units already enrolled).

        Images of one unit may differ in size (top-left anchored, per-pixel counts).
        An image that cannot be used (not 2-D, non-finite, too small) is skipped with a
        warning and listed in :attr:`skipped`; a unit left with no usable image is not
        enrolled (also listed).

        Args:
            images_by_unit: unit label -> its (H, W) stored-value images.
            masks_by_unit: optional unit -> per-image usable-pixel masks (True = usable).

        Returns:
            self.

        Raises:
            InvalidArrayError: no unit could be enrolled.
        """
        self.skipped = []
        for unit, images in images_by_unit.items():
            acc = PatternAccumulator(model=self.config.model)
            masks = None if masks_by_unit is None else masks_by_unit.get(unit)
            for i, img in enumerate(images):
                try:
                    arr = as_image(img, min_size=MIN_OVERLAP)
                    usable = saturation_mask(arr)
                    if masks is not None and i >= len(masks):
                        raise InvalidArrayError(f"no mask given for image {i}")
                    if masks is not None and masks[i] is not None:
                        mk = np.asarray(masks[i], dtype=bool)
                        if mk.shape != arr.shape:
                            raise InvalidArrayError(f"mask {mk.shape} does not match image "
                                                    f"{arr.shape}")
                        usable &= mk
                    acc.add(arr, self.residual(arr, usable), mask=usable)
                except MedForensicsError as exc:
                    log.warning("unit %s: image %d skipped: %s", unit, i, exc)
                    self.skipped.append(SkippedImage(unit, i, str(exc)))
            if acc.n_images == 0:
                log.warning("unit %s: no usable image, not enrolled", unit)
                self.skipped.append(SkippedImage(unit, -1, "no usable image"))
                continue
            k, count = acc.pattern()
            self._forget_spectra(unit)
            self.patterns[unit] = postprocess_pattern(k, fft_filter=self.config.fft_filter,
                                                      mask=count > 0)
            self.counts[unit] = count
            self.n_images[unit] = acc.n_images
            log.info("unit %s: pattern %s from %d images", unit, k.shape, acc.n_images)
        if not self.patterns:
            raise InvalidArrayError("no unit could be enrolled: no usable images")
        return self

    # ----------------------------------------------------------------- matching
    def matching_units(self, name: str) -> list[str]:
        """Enrolled units named ``name``, or of the model ``name`` (units are ``"<model> #<serial>"``)."""
        return [u for u in self.units if u == name or u.startswith(f"{name} #")]

    def _select(self, candidates: Sequence[str] | None) -> list[str]:
        if candidates is None:
            return self.units
        chosen: list[str] = []
        for c in candidates:
            hits = self.matching_units(c)
            if not hits:
                raise ConfigError(f"candidate {c!r} matches no enrolled unit or model "
                                  f"(enrolled: {', '.join(self.units)})")
            chosen.extend(h for h in hits if h not in chosen)
        return chosen

    def window_bytes(self, shape: tuple[int, int], units: Sequence[str] | None = None) -> int:
        """Estimated working memory (bytes) of matching an image of ``shape`` against ``units``.

        The compared window is the part of the image the largest candidate pattern covers;
        the estimate counts its residual, mask and pattern term and the denoiser's working
        set (one piece of :data:`RESIDUAL_TILE` px when tiled), not the decoded image itself.
        """
        h, w = self._window(shape, self.units if units is None else units)
        px = h * w
        piece = px if px <= UNTILED_PIXELS else (RESIDUAL_TILE + 2 * TILE_MARGIN) ** 2
        return px * _WINDOW_BYTES_PER_PIXEL + piece * _RESIDUAL_BYTES_PER_PIXEL

    def _window(self, shape: tuple[int, int], units: Sequence[str]) -> tuple[int, int]:
        """Size of the compared window: the overlap with the largest candidate pattern,
        each side capped at ``config.window``."""
        hs = [self.patterns[u].shape[0] for u in units if u in self.patterns]
        ws = [self.patterns[u].shape[1] for u in units if u in self.patterns]
        h, w = min(int(shape[0]), max(hs, default=0)), min(int(shape[1]), max(ws, default=0))
        side = int(self.config.window)
        return (h, w) if side <= 0 else (min(h, side), min(w, side))


    def _prepare(self, image: np.ndarray, residual: np.ndarray | None,
                 units: Sequence[str] | None = None) -> "_Query":
        img = as_image(image, min_size=2, dtype=np.float32)
        units = self.units if units is None else units
        h, w = self._window(img.shape, units)
        h, w = max(h, min(2, img.shape[0])), max(w, min(2, img.shape[1]))
        need = self.window_bytes(img.shape, units)
        if need > self.memory_budget:
            raise MemoryBudgetError(
                f"matching a {img.shape[0]}x{img.shape[1]} image with the unit patterns needs "
                f"~{need / 2**20:.0f} MiB, over the budget of "
                f"{self.memory_budget / 2**20:.0f} MiB", needed=need, budget=self.memory_budget)
        if residual is not None:
            wfull = as_image(residual, "residual", dtype=np.float32)
            if wfull.shape != img.shape:
                raise InvalidArrayError(f"residual {wfull.shape} and image {img.shape} differ "
                                        "in shape")
        top, low = clip_levels(img)
        # the window goes inside the part of the image that every candidate pattern covers
        common = [min([int(img.shape[i])] + [self.patterns[u].shape[i] for u in units
                                              if u in self.patterns]) for i in (0, 1)]
        r0, c0 = window_origin(img, (h, w), (common[0], common[1]), top, low)
        # one more row/column around the window, so the mask's dilation sees its neighbours
        e0, f0 = max(r0 - 1, 0), max(c0 - 1, 0)
        ext = img[e0:min(img.shape[0], r0 + h + 1), f0:min(img.shape[1], c0 + w + 1)]
        usable = saturation_mask(ext, level=top, low_level=low)
        usable = np.ascontiguousarray(usable[r0 - e0:r0 - e0 + h, c0 - f0:c0 - f0 + w])
        win = img[r0:r0 + h, c0:c0 + w]
        wres = (self.residual(win, usable) if residual is None
                else wfull[r0:r0 + h, c0:c0 + w])
        return _Query(win, np.asarray(wres, dtype=np.float32), usable, (r0, c0))

    def _forget_spectra(self, unit: str | None = None) -> None:
        for key in [k for k in self._spectra if unit is None or k[0] == unit]:
            self._spectra_bytes -= self._spectra.pop(key)[0].nbytes

    def _pattern_term(self, q: "_Query", unit: str, rs: slice, cs: slice) -> np.ndarray:
        """The expected pattern term on one tile: ``K`` (or ``I * K``), 0 where not covered."""
        r0, c0 = q.origin
        k = self.patterns[unit][r0:, c0:]
        cnt = self.counts[unit][r0:, c0:]
        e = np.array(k[rs, cs], dtype=np.float32)
        if self.config.model == "multiplicative":
            # I * K, with clipped pixels of I replaced by the mean usable intensity of the
            # whole overlap
            oh, ow = min(q.image.shape[0], k.shape[0]), min(q.image.shape[1], k.shape[1])
            key = ("fill", oh, ow)
            if key not in q.cache:
                i_o, u_o = q.image[:oh, :ow], q.usable[:oh, :ow]
                n = int(np.count_nonzero(u_o))
                fill = float(i_o.sum(where=u_o, dtype=np.float64) / n) if n else 0.0
                q.cache[key] = (np.empty(0), fill)
            fill = q.cache[key][1]
            e *= np.where(q.usable[rs, cs], q.image[rs, cs], np.float32(fill))
        e[cnt[rs, cs] <= 0] = 0.0
        return e

    def _spectrum(self, x: np.ndarray, fshape: tuple[int, int]) -> tuple[np.ndarray, float]:
        f = zero_mean_spectrum(x, fshape, workers=self.fft_workers)
        d = x - np.float32(x.mean(dtype=np.float64))
        return f, float(np.square(d).sum(dtype=np.float64))

    def _score(self, q: "_Query", unit: str) -> MatchScore:
        if unit not in self.patterns:
            raise ConfigError(f"unit {unit!r} is not enrolled")
        k = self.patterns[unit]
        r0, c0 = q.origin
        oh = max(0, min(q.image.shape[0], k.shape[0] - r0))
        ow = max(0, min(q.image.shape[1], k.shape[1] - c0))
        if oh < MIN_OVERLAP or ow < MIN_OVERLAP:
            log.warning("image window %s at %s and pattern of %s overlap only %dx%d px: "
                        "not scored", q.image.shape, q.origin, unit, oh, ow)
            return MatchScore(unit, 0.0, 0.0, (0, 0), (oh, ow), q.origin)
        # Overlaps over CORRELATION_TILE px per side are correlated tile by tile and the
        # spectra's products summed: the surface is the sum of the tiles' circular
        # correlations, whose zero shift is the whole overlap's correlation and whose energy
        # is the sum of the tiles' (tiles are independent under "no common pattern"), so the
        # PCE keeps its chi-square(1) null. One tile (the usual case) is the plain
        # correlation of the overlap, zero-padded to a fast FFT size.
        # Only the residual side is masked with the query's clipped pixels. Masking the
        # pattern side too would give both sides the same support, whose overlap is largest
        # at the zero shift: the PCE energy (taken over all shifts) then underestimates the
        # zero-shift variance and unrelated units score ~2x chi-square(1).
        tiles = tile_grid((oh, ow), CORRELATION_TILE)
        fshape = fast_shape((max(r.stop - r.start for r, _ in tiles),
                             max(c.stop - c.start for _, c in tiles)))
        acc: np.ndarray | None = None
        nw2 = ne2 = 0.0
        additive = self.config.model == "additive"
        for rs, cs in tiles:
            tkey = (rs.start, rs.stop, cs.start, cs.stop, fshape)
            if tkey in q.cache:  # the residual side does not depend on the unit
                fw, n2 = q.cache[tkey]
            else:
                wt = q.residual[rs, cs] * q.usable[rs, cs]
                fw, n2 = self._spectrum(wt, fshape)
                if q.cache_bytes + fw.nbytes <= SPECTRUM_CACHE_BYTES:
                    q.cache[tkey] = (fw, n2)
                    q.cache_bytes += fw.nbytes
            nw2 += n2
            pkey = (unit, id(k), r0, c0) + tkey
            if additive and pkey in self._spectra:
                self._spectra.move_to_end(pkey)
                fe, e2 = self._spectra[pkey]
            else:
                fe, e2 = self._spectrum(self._pattern_term(q, unit, rs, cs), fshape)
                if additive and fe.nbytes <= SPECTRUM_CACHE_BYTES:
                    self._spectra[pkey] = (fe, e2)
                    self._spectra_bytes += fe.nbytes
                    while self._spectra_bytes > SPECTRUM_CACHE_BYTES:
                        self._spectra_bytes -= self._spectra.popitem(last=False)[1][0].nbytes
            ne2 += e2
            prod = fw * np.conj(fe)
            if acc is None:
                acc = prod
            else:
                acc += prod
            del prod
        assert acc is not None
        cc = scipy.fft.irfft2(acc, s=fshape, workers=self.fft_workers)
        del acc
        res = pce(cc, self.config.neighborhood, max_shift=self.config.max_shift)
        nc = float(cc[0, 0]) / math.sqrt(nw2 * ne2) if nw2 > 0 and ne2 > 0 else 0.0
        return MatchScore(unit, res.pce, nc, res.shift, (oh, ow), q.origin)

    def score_unit(self, image: np.ndarray, unit: str, *,
                   residual: np.ndarray | None = None) -> MatchScore:
        """Score one image against one unit's pattern.

        The residual and the expected pattern term (``K``, or ``I * K`` for the
        multiplicative model) are compared on the top-left overlap of image and pattern;
        clipped pixels of the image are zeroed in the residual, pixels not covered by the
        unit's reference images in the pattern term.

        Args:
            image: (H, W) stored values.
            unit: enrolled unit label.
            residual: the image's residual if already computed (:meth:`residual`).

        Returns:
            :class:`MatchScore`; pce = ncc = 0 when the overlap is below ``MIN_OVERLAP``
            pixels per side (logged).

        Raises:
            ConfigError: unknown unit.
            InvalidArrayError: bad image or residual.
        """
        return self._guarded(lambda: self._score(self._prepare(image, residual, [unit]), unit))

    def _guarded(self, run: "Callable[[], _T]") -> "_T":
        """Run a matching step; running out of memory becomes a per-image error."""
        try:
            return run()
        except MemoryError as exc:
            raise MemoryBudgetError(
                "ran out of memory matching the image with the unit patterns (budget "
                f"{self.memory_budget / 2**20:.0f} MiB)", budget=self.memory_budget) from exc

    def match_details(self, image: np.ndarray, *, candidates: Sequence[str] | None = None,
                      residual: np.ndarray | None = None) -> list[MatchScore]:
        """All candidate units' :class:`MatchScore`, best first (by ``config.score``).

        Raises:
            MemoryBudgetError: the image needs more working memory than
                :attr:`memory_budget` (or the step ran out of memory).
        """
        units = self._select(candidates)

        def run() -> list[MatchScore]:
            q = self._prepare(image, residual, units)
            return [self._score(q, u) for u in units]

        scores = self._guarded(run)
        key = self.config.score
        return sorted(scores, key=lambda s: getattr(s, key), reverse=True)

    def match(self, image: np.ndarray, *, candidates: Sequence[str] | None = None
              ) -> list[tuple[str, float]]:
        """``[(unit, score), ...]`` best first; score is PCE or NCC per ``config.score``.

        Args:
            image: (H, W) stored values.
            candidates: restrict to these units / models (see module docstring).
        """
        key = self.config.score
        return [(s.unit, float(getattr(s, key)))
                for s in self.match_details(image, candidates=candidates)]

    def identify_unit(self, image: np.ndarray, threshold: float | None = None, *,
                      candidates: Sequence[str] | None = None) -> tuple[str | None, float]:
        """Decide which enrolled unit made ``image``.

        Args:
            image: (H, W) stored values.
            threshold: decision threshold (default ``config.threshold``).
            candidates: restrict to these units / models.

        Returns:
            ``(unit, score)`` of the best unit when ``score > threshold``, else
            ``(None, best score)``: no enrolled unit's pattern is present.

        Raises:
            MemoryBudgetError: the image needs more working memory than
                :attr:`memory_budget` (see :meth:`window_bytes`).
        """
        unit, best = self.decide_unit(image, threshold, candidates=candidates)
        return unit, float(getattr(best, self.config.score))

    def decide_unit(self, image: np.ndarray, threshold: float | None = None, *,
                    candidates: Sequence[str] | None = None) -> tuple[str | None, MatchScore]:
        """:meth:`identify_unit` with the best unit's whole :class:`MatchScore` (where the
        compared window lies, its size, PCE and NCC), for a verdict that shows its evidence."""
        if not self.patterns:
            raise ConfigError("no unit is enrolled; call fit() or load() first")
        t = self.config.threshold if threshold is None else float(threshold)
        best = self.match_details(image, candidates=candidates)[0]
        return (best.unit if float(getattr(best, self.config.score)) > t else None), best

    def calibrate_threshold(self, val_images_by_unit: Mapping[str, Iterable[np.ndarray]], *,
                            target_fpr: float = 1e-3, apply: bool = True) -> ThresholdReport:
        """Choose the decision threshold from validation images of enrolled units.

        Every validation image is scored against every enrolled unit. Scores against the
        image's own unit are "match" scores; the best score among the *other* units stands in
        for what an image of an unseen unit would get. The threshold is the larger of

        * the empirical ``1 - target_fpr`` quantile of those per-image best non-match
          scores, and
        * the analytic bound: at a fixed shift the PCE of an unrelated pattern is
          ~chi-square(1), so with ``n_units`` candidate patterns and ``n_shifts`` searched
          positions the bound is ``c * z^2``, ``z = Phi^-1(1 - target_fpr / (n_units *
          n_shifts))`` (Bonferroni), where ``c >= 1`` is the variance inflation of the
          signed non-match PCEs over chi-square(1), estimated from the validation images
          (real residuals are not exactly stationary, so the plain ``z^2`` bound accepts
          too many unseen-unit images; with >= 20 non-match comparisons); for NCC
          ``z / sqrt(n_pixels)``.

        and never below :data:`PCE_FLOOR` (60, also the fixed default) for PCE: the
        simulator's null is lighter-tailed than real residuals (docs/source_id.md has the
        values on the simulator).

        Args:
            val_images_by_unit: enrolled unit -> validation images (not used in ``fit``).
            target_fpr: wanted rate at which an image of an unseen unit is attributed to
                some enrolled unit.
            apply: store the threshold in ``config.threshold``.

        Returns:
            :class:`ThresholdReport` (also kept in :attr:`calibration`).

        Raises:
            ConfigError: a validation unit is not enrolled, or no scores.
        """
        if not 0 < target_fpr < 1:
            raise ConfigError("target_fpr must be in (0, 1)")
        key = self.config.score
        match_s: list[float] = []
        non_s: list[float] = []
        best_non: list[float] = []
        correct = total = 0
        n_pix: list[int] = []
        for unit, images in val_images_by_unit.items():
            if unit not in self.patterns:
                raise ConfigError(f"validation unit {unit!r} is not enrolled")
            for img in images:
                details = self.match_details(img)
                total += 1
                correct += int(details[0].unit == unit)
                others = []
                for s in details:
                    (match_s if s.unit == unit else others).append(float(getattr(s, key)))
                    n_pix.append(s.overlap[0] * s.overlap[1])
                non_s += others
                if others:
                    best_non.append(max(others))
        if not match_s:
            raise ConfigError("no validation images given")
        rep = threshold_report(key, match_s, non_s, best_non, min(n_pix), target_fpr=target_fpr,
                               n_tests=(2 * self.config.max_shift + 1) ** 2
                               * max(len(self.patterns), 1),
                               top1_accuracy=correct / total)
        if rep.tpr < 1.0:
            log.warning("threshold %.3g misses %.0f%% of matching validation images",
                        rep.threshold, 100 * (1 - rep.tpr))
        if apply:
            self.config.threshold = rep.threshold
        self.calibration = rep
        return rep

    def evaluate(self, test_images_by_unit: Mapping[str, Iterable[np.ndarray]],
                 unseen_images: Iterable[np.ndarray] = (), *,
                 threshold: float | None = None) -> IdentificationReport:
        """Identification accuracy on held-out images (none of them used in ``fit``).

        Args:
            test_images_by_unit: true unit -> images; units need not be enrolled (images
                of non-enrolled units count as unseen and must be rejected).
            unseen_images: further images of units that are not enrolled.
            threshold: decision threshold (default ``config.threshold``).

        Returns:
            :class:`IdentificationReport`.
        """
        t = self.config.threshold if threshold is None else float(threshold)
        key = self.config.score
        confusion: dict[str, dict[str, int]] = {}
        n = top1 = ok = rej = wrong = n_un = un_rej = 0
        elapsed = 0.0

        def decide(img: np.ndarray) -> tuple[str, str | None]:
            nonlocal elapsed
            t0 = time.perf_counter()
            best = self.match_details(img)[0]
            elapsed += time.perf_counter() - t0
            score = float(getattr(best, key))
            return best.unit, (best.unit if score > t else None)

        groups = [(u, imgs) for u, imgs in test_images_by_unit.items()]
        groups.append(("(unseen)", unseen_images))
        for unit, images in groups:
            for img in images:
                top, got = decide(img)
                row = confusion.setdefault(unit, {})
                row[str(got)] = row.get(str(got), 0) + 1
                if unit in self.patterns:
                    n += 1
                    top1 += int(top == unit)
                    ok += int(got == unit)
                    rej += int(got is None)
                    wrong += int(got is not None and got != unit)
                else:
                    n_un += 1
                    un_rej += int(got is None)
        total = n + n_un
        return IdentificationReport(
            n_images=n, top1_accuracy=top1 / n if n else math.nan,
            accuracy=ok / n if n else math.nan, false_rejects=rej, wrong_unit=wrong,
            n_unseen=n_un, unseen_rejected=un_rej / n_un if n_un else math.nan, threshold=t,
            seconds_per_image=elapsed / total if total else math.nan, confusion=confusion)

    # ---------------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> Path:
        """Write ``fingerprints.safetensors`` (patterns, counts) + ``fingerprints.json``.

        Each file is written to a temporary name and then moved into place. Inside a run,
        the caller records both in the run manifest
        (:func:`medforensics.source.predictor.enroll_units` does).

        Returns:
            the directory.
        """
        import os

        from safetensors.numpy import save_file

        if not self.patterns:
            raise ConfigError("nothing to save: no unit is enrolled")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        units_meta = []
        for i, u in enumerate(self.units):
            tensors[f"pattern.{i}"] = np.ascontiguousarray(self.patterns[u], dtype=np.float32)
            tensors[f"count.{i}"] = np.ascontiguousarray(self.counts[u], dtype=np.int32)
            units_meta.append({"index": i, "unit": u, "n_images": self.n_images.get(u, 0),
                               "shape": list(self.patterns[u].shape)})
        tmp = d / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, d / WEIGHTS_FILE)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "config": asdict(self.config), "units": units_meta,
                "calibration": None if self.calibration is None else asdict(self.calibration)}
        atomic_write_json(d / META_FILE, meta, indent=2, allow_nan=True)
        return d

    @classmethod
    def load(cls, directory: str | Path, *, allow_modified: bool = False,
             verify: bool = True) -> "UnitFingerprints":
        """Read what :meth:`save` wrote.

        When ``directory`` lies in a run folder with a run manifest (``RUN/fingerprints``),
        its files are first checked against their recorded hashes
        (:func:`medforensics.models.runfiles.verify_run`). The settings are always checked
        against :data:`medforensics.models.runfiles.FINGERPRINT_BOUNDS`: the decision
        threshold must be finite and >= 0, else any image would be attributed to a unit.

        Args:
            directory: the folder with ``fingerprints.json`` and ``fingerprints.safetensors``.
            allow_modified: accept files that differ from the run manifest (logged).
            verify: check the run manifest (False when the caller has checked the whole run).

        Raises:
            ModelFileError: files missing, wrong format/version, or inconsistent contents.
            RunIntegrityError: a file changed since enrolment (unless ``allow_modified``) or
                a setting out of range.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        d = Path(directory)
        meta_p, w_p = d / META_FILE, d / WEIGHTS_FILE
        if not meta_p.is_file() or not w_p.is_file():
            raise ModelFileError(f"{d}: expected {META_FILE} and {WEIGHTS_FILE}")
        if verify:
            verify_run(d.parent, allow_modified=allow_modified, subdir=d.name)
        try:
            meta = json.loads(meta_p.read_text())
            if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
                raise ModelFileError(f"{meta_p}: not a {FORMAT_NAME} v{FORMAT_VERSION} file")
            check_values(meta_p, meta, FINGERPRINT_BOUNDS)
            tensors = load_file(str(w_p))
            obj = cls(config=FingerprintConfig(**meta["config"]))
            if obj.config.score == "pce" and obj.config.threshold < PCE_FLOOR:
                log.info("%s: PCE threshold raised to the floor %.0f", meta_p, PCE_FLOOR)
                obj.config.threshold = PCE_FLOOR
            for um in meta["units"]:
                i, u = int(um["index"]), str(um["unit"])
                k, c = tensors[f"pattern.{i}"], tensors[f"count.{i}"]
                if list(k.shape) != list(um["shape"]) or c.shape != k.shape:
                    raise ModelFileError(f"{w_p}: shape mismatch for unit {u!r}")
                obj.patterns[u] = k.astype(np.float32, copy=False)
                obj.counts[u] = c.astype(np.int32, copy=False)
                obj.n_images[u] = int(um.get("n_images", 0))
            if meta.get("calibration"):
                obj.calibration = ThresholdReport(**meta["calibration"])
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, OSError, ConfigError, SafetensorError) as exc:
            raise ModelFileError(f"{d}: malformed fingerprint files ({exc})") from exc
        return obj
