"""``ForgeryDetector``: one image in, a forgery score, a verdict and a per-pixel map out.

This is the contract the web service (:mod:`medforensics.service`), the case report
(:mod:`medforensics.report.analysis`), the CLI (``medforensics forgery detect``) and the demo code
against::

    det = ForgeryDetector.from_run(run_dir_or_None, source_run=None, device="cpu")
    res = det.detect(pixels, meta)          # pixels: read_image contract, meta: ImageMeta
    res.score, res.verdict, res.forged_area_percent, res.ela_score, res.prob_map
    res.to_dict()                           # JSON-serialisable, without the map

Three ways to get a detector:

* ``from_run(None)`` - **training-free cues** (method ``cues``): copy-move by residual block
  matching + local noise-level inconsistency + noise-texture inconsistency (``texture=False``
  leaves it out) + hard-edged paste seams (``seam=False`` leaves it out) (+ ELA for lossy
  inputs), combined by the documented
  max rule of :mod:`medforensics.forgery.localize`. With ``source_run`` a trained source
  ``patch`` model is slid over the image as a further cue (device-fingerprint inconsistency,
  :mod:`medforensics.forgery.cues.fingerprint`): the cue meant for splices from another
  device. Cue parameters are one mapping ``cue_params={cue: {parameter: value}}`` over the
  registered defaults (:mod:`medforensics.forgery.cues.registry`).
* ``from_run(run)`` of a ``cues`` run (``medforensics forgery train --preset cues``): the same
  cue maps combined by the learned logistic combiner of :mod:`medforensics.forgery.combiner`.
* ``from_run(run)`` of an ``ela-cnn`` run: the paper's ELA-CNN (seed 004) on the ELA image
  (ELA at JPEG q90 of an 8-bit version, enhanced, resized to 128x128): score = its
  probability of "tampered"; map = the ELA cue (:func:`medforensics.forgery.cues.ela.ela_cue`, the
  paper's ELA localization scaled to 0.5 at twice the image's median error level).

Verdict: ``inconclusive`` when the image gives the cues too little to read - smaller than
64 x 64 px, or too small a share carrying measurable noise (flat, clipped / saturated,
synthetic ramps: :mod:`medforensics.forgery.coverage`; the cues' statistics are degenerate
there, so neither their silence nor their firing is evidence); otherwise ``tampered`` when
``score >= threshold`` (:data:`DEFAULT_THRESHOLD`, calibrated to a stated false-alarm rate:
docs/forgery.md), ``inconclusive`` when ``min(threshold, map_threshold) - inconclusive_band
<= score < threshold`` (a cue reached or nearly reached its own decision point, but untouched
images score that high too), ``inconclusive`` too for an image of noise alone (nothing
found, but nothing there to edit either), else ``authentic``. An inconclusive result carries
its reason (``inconclusive_reason``) and every result its ``covered_fraction``: "no evidence
of an edit" is stated only about an image the cues could read.
``forged_area_percent`` is the share of pixels with ``prob_map >= map_threshold`` (0.5), *not*
the paper's "percentage of forgery" (that is ``ela_score``, the mean ELA intensity in % of
8-bit full scale, labelled as such). ``ela_score`` is None where ELA was not run: lossy
inputs whose coding is not JPEG's (ELA does not apply, as for the ELA cue), and images with
nothing to read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.errors import (
    ConfigError,
    InvalidArrayError,
    ModelFileError,
    ReadError,
    RunIntegrityError,
)
from medforensics.forgery.combiner import CueCombiner
from medforensics.forgery.coverage import (
    MIN_COVERED_FRACTION,
    MIN_COVERED_PX,
    MIN_SIDE,
    covered_fraction,
    noise_alone,
)
from medforensics.forgery.cues import check_cue_params, resolve_params
from medforensics.forgery.cues.ela import (
    analyze_ela,
    ela_cnn_input,
    ela_cue,
    lossy_codec,
)
from medforensics.forgery.direction import pair_summary
from medforensics.forgery.localize import (
    DEFAULT_SEAM,
    DEFAULT_TEXTURE,
    DEFAULT_WHITENESS,
    LocalizationResult,
    default_cues,
    localize,
)
from medforensics.forgery.regions import describe_regions
from medforensics.forgery.result import FileResult, ForgeryResult, json_tree
from medforensics.forgery.scoring import SCORE_WINDOW, forged_area_percent, image_score
from medforensics.io import read_image
from medforensics.models.io import load_model
from medforensics.models.runfiles import (
    FORGERY_BOUNDS,
    check_values,
    verify_run,
    worst_integrity,
)
from medforensics.source.predictor import SourcePredictor

# the result records live in forgery/result.py; callers import them from here, the contract
__all__ = [
    "ForgeryResult",
    "ForgeryDetector",
    "DEFAULT_THRESHOLD",
    "DEFAULT_INCONCLUSIVE_BAND",
    "RUN_FILE",
    "TRAINING_FREE",
    "FileResult",
    "detect_files",
    "json_tree",
]

log = logging.getLogger(__name__)

#: Trained forgery presets a run folder can hold (``metadata.json`` ``preset``).
FORGERY_PRESETS: tuple[str, ...] = ("ela-cnn", "cues")

#: score threshold of ``tampered`` for the training-free detector: calibrated to a stated
#: false-alarm rate on untouched simulated and real lossless images by
#: ``bench/forgery_calibrate.py`` (method, measured rates and intervals: docs/forgery.md,
#: "Default threshold"). A learned-combiner run keeps the threshold stored with it.
DEFAULT_THRESHOLD = 0.6
#: width of the ``inconclusive`` score band below ``min(threshold, map_threshold)``: the
#: band reaches from just under the cues' own decision point up to the threshold
DEFAULT_INCONCLUSIVE_BAND = 0.1
#: fingerprint cue: a pixel's patch mean counts at least half of an interior pixel's patches
#: (pixels along the border and next to clipped areas are damped; measured in
#: docs/forgery.md, ``bench/forgery_seeds.py``). The detector's default over the registered 0.
DEFAULT_FINGERPRINT_MIN_COVERAGE = 0.5
#: metadata of a ``cues`` run (the ``ela-cnn`` run keeps its metadata in ``model.json``)
RUN_FILE = "model.json"
#: ``run_dir`` strings meaning the training-free detector (unless a folder of that name exists)
TRAINING_FREE = ("none", "cues")


def _detector_cue_params(cue_params: Mapping[str, Mapping[str, Any]] | None, source: Any
                         ) -> dict[str, dict[str, Any]]:
    """The detector's cue parameters: its fingerprint defaults (``min_coverage``
    :data:`DEFAULT_FINGERPRINT_MIN_COVERAGE`) under the caller's ``cue_params``; the patch side
    is always the source model's (64 without one).

    Raises:
        ConfigError: unknown cue or parameter.
    """
    check_cue_params(cue_params)
    out = {k: dict(v) for k, v in (cue_params or {}).items()}
    patch = int(getattr(source, "patch", 64)) if source is not None else 64
    out["fingerprint"] = {"min_coverage": DEFAULT_FINGERPRINT_MIN_COVERAGE,
                          **out.get("fingerprint", {}), "patch": patch}
    return out


def _source_logprobs(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``patch_logprobs`` callable from a :class:`~medforensics.source.predictor.SourcePredictor`."""
    import torch

    model = predictor.model
    dev = predictor.device
    bs = int(getattr(predictor, "batch_size", 256))

    @torch.no_grad()
    def fn(patches: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(patches), bs):
            x = torch.from_numpy(np.ascontiguousarray(patches[i : i + bs], np.float32))
            outs.append(torch.log_softmax(model(x[:, None].to(dev)).float(), dim=-1).cpu())
        return torch.cat(outs).numpy()

    return fn


class ForgeryDetector:
    """Forgery detector (see module docs). Build it with :meth:`from_run`.

    Args:
        method: ``"cues"`` (training-free max rule), ``"cues-learned"`` or ``"ela-cnn"``.
        threshold: score threshold of the verdict (default :data:`DEFAULT_THRESHOLD`).
        inconclusive_band: the inconclusive score band reaches this far below
            ``min(threshold, map_threshold)`` (0 = no band).
        map_threshold: map threshold of the forged area.
        combiner: the fitted :class:`~medforensics.forgery.combiner.CueCombiner`
            (``cues-learned``).
        ela_model: the loaded ELA-CNN (``ela-cnn``), in eval mode.
        source: a :class:`~medforensics.source.predictor.SourcePredictor` for the fingerprint cue.
        run_dir: the run directory (provenance), None for the training-free detector.
        metadata: the run's metadata.
        device: torch device of the models.
        cue_params: ``{cue: {parameter: value}}`` over the cues' registered defaults
            (:func:`~medforensics.forgery.cues.registry.resolve_params`); e.g.
            ``{"noise": {"extra_blocks": (32,)}, "fingerprint": {"stride": 32}}``. The detector
            adds its own fingerprint defaults: ``patch`` = the source model's patch side and
            ``min_coverage`` = :data:`DEFAULT_FINGERPRINT_MIN_COVERAGE` (pixels covered by few
            scored patches - image border, next to clipped areas - are damped); a learned
            combiner run keeps the ``stride`` and ``min_coverage`` it was trained with (0 for
            runs made before the option). ``ela.quality`` is also that of ``ela_score`` and of
            the ELA-CNN input.
        texture: training-free detector: include the noise-texture cue
            (:func:`~medforensics.forgery.cues.texture.texture_inconsistency_map`); None = the
            default of :data:`medforensics.forgery.localize.DEFAULT_TEXTURE`. The learned
            combiner uses the cues it was trained with.
        seam: training-free detector: include the hard-edged paste seam cue
            (:func:`~medforensics.forgery.cues.seam.seam_cue`); None = the default of
            :data:`medforensics.forgery.localize.DEFAULT_SEAM`.
        whiteness: training-free detector: include the noise-whiteness cue
            (:mod:`~medforensics.forgery.cues.whiteness`); None = the default of
            :data:`medforensics.forgery.localize.DEFAULT_WHITENESS`.
        ela: training-free detector: ``"auto"`` uses the ELA cue for lossy inputs only
            (``meta.lossy``), ``"always"`` on every input (e.g. 8-bit PNG/TIFF that were JPEG
            before: an edit saved losslessly over JPEG history is ELA's textbook case),
            ``"never"`` not at all. The learned combiner always uses ``"auto"`` (as in its
            training).
    """

    def __init__(
        self,
        *,
        method: str = "cues",
        threshold: float = DEFAULT_THRESHOLD,
        inconclusive_band: float = DEFAULT_INCONCLUSIVE_BAND,
        map_threshold: float = 0.5,
        combiner: Any = None,
        ela_model: Any = None,
        source: Any = None,
        run_dir: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
        device: str = "cpu",
        cue_params: Mapping[str, Mapping[str, Any]] | None = None,
        ela: str = "auto",
        texture: bool | None = None,
        seam: bool | None = None,
        whiteness: bool | None = None,
    ) -> None:
        if method not in ("cues", "cues-learned", "ela-cnn"):
            raise ConfigError(f"unknown forgery method {method!r}")
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= map_threshold <= 1.0:
            raise ConfigError("thresholds must lie in [0, 1]")
        if inconclusive_band < 0:
            raise ConfigError("inconclusive_band must be >= 0")
        if method == "cues-learned" and combiner is None:
            raise ConfigError("method 'cues-learned' needs a fitted combiner")
        if method == "ela-cnn" and ela_model is None:
            raise ConfigError("method 'ela-cnn' needs the ELA-CNN model")
        if ela not in ("auto", "always", "never"):
            raise ConfigError(f"ela must be auto, always or never, got {ela!r}")
        self.ela = ela
        self.method = method
        self.threshold = float(threshold)
        self.inconclusive_band = float(inconclusive_band)
        self.map_threshold = float(map_threshold)
        self.inconclusive_from = float(max(
            min(self.threshold, self.map_threshold) - self.inconclusive_band, 0.0)
            if self.inconclusive_band > 0 else self.threshold)
        self.combiner = combiner
        self.ela_model = ela_model
        self.source = source
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.device = device
        #: ``{cue: {parameter: value}}`` handed to every :func:`localize` call (module docs)
        self.cue_params = _detector_cue_params(cue_params, source)
        if not 0.0 <= self.fingerprint_min_coverage <= 1.0:
            raise ConfigError("fingerprint min_coverage must lie in [0, 1]")
        self.texture = DEFAULT_TEXTURE if texture is None else bool(texture)
        self.seam = DEFAULT_SEAM if seam is None else bool(seam)
        self.whiteness = DEFAULT_WHITENESS if whiteness is None else bool(whiteness)
        self._patch_logprobs = None if source is None else _source_logprobs(source)
        #: set by from_run: the run_integrity of every result (see ForgeryResult)
        self.run_integrity: str | None = getattr(source, "run_integrity", None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(
        cls,
        run_dir: str | Path | None,
        *,
        source_run: str | Path | None = None,
        device: str = "cpu",
        allow_modified: bool = False,
        **kw: Any,
    ) -> ForgeryDetector:
        """Load a detector.

        Args:
            run_dir: ``None`` (or ``"none"`` / ``"cues"`` when no such folder exists) for the
                training-free cue detector, or
                a run directory written by :func:`medforensics.forgery.train.train_forgery`.
            source_run: a trained source-identification run (``patch`` preset) for the
                fingerprint cue. A ``cues`` run trained with a source model records its path
                and uses it when ``source_run`` is not given.
            device: torch device.
            allow_modified: load runs (forgery and source) whose files differ from their run
                manifest (results say ``run_integrity: "modified"``) instead of refusing them;
                values out of range are refused either way.
            **kw: passed to the constructor (``threshold``, ``inconclusive_band``, ...); a run's
                own threshold is used unless ``threshold`` is given.

        Raises:
            ModelFileError: the run directory is missing or malformed, or the source model
                is not a ``patch`` model.
            RunIntegrityError: a changed, missing or unlisted run file (unless
                ``allow_modified``), or a value out of range.
        """
        allow = bool(allow_modified)
        source = (cls._load_source(source_run, device, allow) if source_run is not None
                  else None)
        if run_dir is None or (str(run_dir).lower() in TRAINING_FREE
                               and not Path(run_dir).exists()):
            return cls(method="cues", source=source, device=device, **kw)
        run = Path(run_dir)
        meta_path = run / RUN_FILE
        if not meta_path.is_file():
            raise ModelFileError(f"{run}: no forgery run here ({RUN_FILE} not found)")
        check = verify_run(run, allow_modified=allow)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{meta_path}: unreadable ({exc})") from None
        check_values(meta_path, meta, FORGERY_BOUNDS)
        det = cls._from_meta(run, meta, meta_path, source, device, allow, kw)
        det.run_integrity = worst_integrity(check.status, getattr(det.source, "run_integrity",
                                                                  None))
        return det

    @classmethod
    def _from_meta(cls, run: Path, meta: dict[str, Any], meta_path: Path, source: Any,
                   device: str, allow: bool, kw: dict[str, Any]) -> ForgeryDetector:
        """The detector of a checked forgery run's ``model.json``."""
        preset = meta.get("preset") or meta.get("name")
        kw.setdefault("threshold", float(meta.get("threshold", DEFAULT_THRESHOLD)))
        if preset == "ela-cnn":
            model, mmeta = load_model(run, map_location=device)
            return cls(method="ela-cnn", ela_model=model, source=source, run_dir=run,
                       metadata=mmeta, device=device, **kw)
        if preset == "cues":
            if meta.get("format") != "medforensics-forgery-cues/1":
                raise ModelFileError(f"{meta_path}: not a cues combiner run")
            cues = list(meta.get("cues") or [])
            comb = CueCombiner.load(run, cues, meta.get("fit"),
                                    grid=int(meta.get("pixel_grid", 4)))
            if "fingerprint" in cues and source is None:
                rec = meta.get("source_run")
                if not rec or not Path(rec).is_dir():
                    raise ModelFileError(
                        f"{run}: this combiner uses the fingerprint cue; give the source model "
                        f"(source_run= / --source-model); the recorded one ({rec}) is not there"
                    )
                source = cls._load_source(rec, device, allow)
                cls._check_recorded_source(source, meta, meta_path, allow)
            given = {k: dict(v) for k, v in (kw.get("cue_params") or {}).items()}
            given["fingerprint"] = {"stride": int(meta.get("fingerprint_stride", 16)),
                                    "min_coverage": float(meta.get("fingerprint_min_coverage",
                                                                   0.0)),
                                    **given.get("fingerprint", {})}
            kw["cue_params"] = given
            return cls(method="cues-learned", combiner=comb, source=source, run_dir=run,
                       metadata=meta, device=device, **kw)
        raise ModelFileError(f"{meta_path}: unknown forgery preset {preset!r} "
                             f"(choose from {', '.join(FORGERY_PRESETS)})")

    @staticmethod
    def _check_recorded_source(source: Any, meta: Mapping[str, Any], meta_path: Path,
                               allow: bool) -> None:
        """The recorded source run (a path outside the forgery run, checked through its own
        manifest) must still hold the weights the combiner was trained with."""
        want = meta.get("source_weights_sha256")
        got = source.metadata.get("weights_sha256")
        if want is None or got == want:
            return
        err = RunIntegrityError(meta_path, f"the recorded source run {meta.get('source_run')} "
                                "now holds other weights than the combiner was trained with",
                                overridable=True)
        if not allow:
            raise err
        log.warning("loading a modified run (allowed): %s", err.problem)
        source.run_integrity = "modified"

    @staticmethod
    def _load_source(source_run: str | Path, device: str, allow_modified: bool = False) -> Any:
        pred = SourcePredictor.from_run(source_run, device=device,
                                        allow_modified=allow_modified)
        if pred.preset != "patch":
            raise ModelFileError(
                f"{source_run}: the fingerprint cue needs a 'patch' source model (native-"
                f"resolution patches), got preset {pred.preset!r}"
            )
        pred.run_dir = Path(source_run)
        return pred

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that determine the output (recorded in case-report provenance)."""
        return {
            "method": self.method,
            "threshold": self.threshold,
            "inconclusive_band": self.inconclusive_band,
            "map_threshold": self.map_threshold,
            "fingerprint_cue": self.source is not None,
            "source_run": None if self.source is None else str(getattr(self.source, "run_dir",
                                                                       "")),
            # the parameters given over the cues' registered defaults (the fingerprint cue's
            # only where it runs)
            "cue_params": {k: dict(v) for k, v in self.cue_params.items()
                           if k != "fingerprint" or self.source is not None},
            "ela_quality": self.ela_quality,
            "ela_cue": self.ela,
            "texture_cue": self._uses("texture", self.texture),
            "seam_cue": self._uses("seam", self.seam),
        }

    @property
    def fingerprint_stride(self) -> int:
        """Grid step of the fingerprint cue in pixels (from :attr:`cue_params`)."""
        return int(resolve_params("fingerprint", self.cue_params)["stride"])

    @property
    def fingerprint_min_coverage(self) -> float:
        """``min_coverage`` of the fingerprint cue (from :attr:`cue_params`)."""
        return float(resolve_params("fingerprint", self.cue_params)["min_coverage"])

    @property
    def ela_quality(self) -> int:
        """JPEG quality of the ELA re-encoding (ELA cue, ``ela_score``, ELA-CNN input)."""
        return int(resolve_params("ela", self.cue_params)["quality"])

    def _uses(self, cue: str, flag: bool) -> bool:
        """Whether the detector computes ``cue`` (training-free flag or the combiner's cues)."""
        if self.method == "cues":
            return flag
        return self.method == "cues-learned" and cue in self.combiner.cues

    @property
    def cue_names(self) -> list[str]:
        """Cues computed for a lossless input (ELA is added for lossy inputs)."""
        if self.method == "cues-learned":
            return list(self.combiner.cues)
        return default_cues(texture=self.texture, seam=self.seam, whiteness=self.whiteness,
                            ela=False,
                            fingerprint=self.source is not None)

    # ------------------------------------------------------------------ detection
    def verdict_of(self, score: float) -> str:
        """``tampered`` / ``inconclusive`` / ``authentic`` for an image score (of an image the
        cues could read; see :meth:`verdict_and_reason`)."""
        return self.verdict_and_reason(score)[0]

    def verdict_and_reason(self, score: float, covered: float = 1.0,
                           n_pixels: int | None = None, alone: str | None = None
                           ) -> tuple[str, str | None]:
        """Verdict and, for ``inconclusive``, its reason (module docs).

        Args:
            score: the image score (NaN: not analysed).
            covered: covered fraction of the image (0..1).
            n_pixels: the image's pixel count (for the covered-area floor); None = no floor.
            alone: why the image is noise alone (:func:`coverage.noise_alone`), or None: below
                the threshold such an image is ``inconclusive``, not ``authentic``.
        """
        if not math.isfinite(score):
            return "inconclusive", "the image was not analysed"
        area = None if n_pixels is None else covered * n_pixels
        if covered < MIN_COVERED_FRACTION or (area is not None and area < MIN_COVERED_PX):
            # the cues' statistics are degenerate without noise: neither a clean bill nor a
            # cue firing (repeated rounding patterns of a ramp, lattices of a flat area) is
            # evidence here
            return "inconclusive", (
                f"nothing to read: only {100 * covered:.1f} % of the image"
                + ("" if area is None else f" ({int(area)} px)")
                + " carries measurable noise (the rest is flat, clipped / saturated or a "
                "smooth synthetic ramp), so the cues cannot look for an edit"
                + (f" (their score {score:.2f} is not evidence here)"
                   if score >= self.threshold else ""))
        if score >= self.threshold:
            return "tampered", None
        if alone:
            return "inconclusive", alone
        if score >= self.inconclusive_from:
            return "inconclusive", (f"score {score:.3f} is in the inconclusive band "
                                    f"[{self.inconclusive_from:.2f}, {self.threshold:.2f}) "
                                    "below the threshold: weak evidence that untouched images "
                                    "can show too")
        return "authentic", None

    def compute_cues(self, pixels: np.ndarray, *, lossy: bool = False,
                     bits_stored: int | None = None, lossy_codec: str | None = None
                     ) -> LocalizationResult:
        """Cue maps of one image (:func:`medforensics.forgery.localize.localize`; ``lossy_codec``
        as there: ``"other"`` lossy coding gets no ELA and no noise cue).

        Returns:
            :class:`~medforensics.forgery.localize.LocalizationResult` (the training-free
            combination; ``details["noise"]["z"]`` holds the noise z-score map).
        """
        fp = self._patch_logprobs
        if self.method == "cues-learned":
            # the combiner's cues; ELA only for lossy inputs (as in training: else zeros)
            names: list[str] | None = [c for c in self.combiner.cues
                                       if c != "ela" or (lossy and lossy_codec != "other")]
            if "fingerprint" not in names:
                fp = None
        elif self.ela == "auto":
            names = None  # localize's default: copymove, noise, ELA if lossy, fingerprint if fp
        else:
            names = default_cues(texture=self.texture, seam=self.seam, whiteness=self.whiteness,
                                 ela=self.ela == "always", fingerprint=fp is not None)
        return localize(pixels, lossy=lossy, bits_stored=bits_stored, cues=names,
                        patch_logprobs=fp, threshold=self.map_threshold,
                        cue_params=self.cue_params, texture=self.texture, seam=self.seam,
                        whiteness=self.whiteness, lossy_codec=lossy_codec)

    def detect(self, pixels: np.ndarray, meta: Any = None) -> ForgeryResult:
        """Analyse one image (see :meth:`detect_with_cues`, which also returns the cue maps)."""
        return self.detect_with_cues(pixels, meta)[0]

    def detect_with_cues(self, pixels: np.ndarray, meta: Any = None
                         ) -> tuple[ForgeryResult, dict[str, np.ndarray]]:
        """Analyse one image; also return the individual cue maps (for evaluation).

        Args:
            pixels: float32 (H, W) stored values (:func:`medforensics.io.read_image` contract).
            meta: its :class:`~medforensics.io.ImageMeta` (``lossy`` enables the ELA cue,
                ``bits_stored`` chooses 8-bit use or an 8-bit window for ELA); None = a
                lossless image of unknown bit depth.

        Returns:
            ``(result, cue_maps)``: the :class:`ForgeryResult` and name -> float32 (H, W) map
            in [0, 1] of every cue that ran.

        Raises:
            InvalidArrayError: not a 2-D image, or NaN / infinite values.
        """
        img = np.asarray(pixels, dtype=np.float32)
        if img.ndim != 2:
            raise InvalidArrayError(f"expected a 2-D image, got shape {img.shape}")
        if not np.all(np.isfinite(img)):
            raise InvalidArrayError("image contains NaN or infinite values")
        if min(img.shape) < MIN_SIDE:
            return self._not_analysed(img), {}
        covered = covered_fraction(img)
        codec, why = lossy_codec(img, meta)
        lossy = codec is not None
        bits = getattr(meta, "bits_stored", None)
        notes: list[str] = [why] if why else []
        cues: dict[str, float] = {}
        copies: list[dict[str, Any]] = []
        lattice: list[list[int]] = []
        if self.method == "ela-cnn":
            score, prob, ela_score = self._detect_ela_cnn(img, bits, notes, cues, lossy)
            maps = {"ela": prob}
        else:
            loc = self.compute_cues(img, lossy=lossy, bits_stored=bits, lossy_codec=codec)
            maps = dict(loc.cues)
            notes += loc.notes
            cues.update(loc.cue_scores)
            score, prob = self._combine(loc, img.shape, notes)
            ela_score = self._ela_score(img, loc, bits, codec, notes)
            copies = loc.details.get("copymove", {}).get("regions", [])
            lattice = loc.details.get("texture", {}).get("coarse_boxes", [])
        score = float(np.clip(score, 0.0, 1.0))
        prob = np.clip(prob, 0.0, 1.0).astype(np.float32)
        regions = describe_regions(prob, maps, threshold=self.map_threshold, copies=copies,
                                   lattice_boxes=lattice)
        verdict, reason = self.verdict_and_reason(score, covered, img.size, noise_alone(img))
        if verdict == "inconclusive" and reason and reason.startswith("nothing to read"):
            ela_score = None  # nothing to read: an error level of ~0 would say "clean"
            notes = [n for n in notes if not n.startswith("ela_score only")]
            notes.append("ela_score not given: " + reason)
        res = ForgeryResult(
            score=score,
            verdict=verdict,
            forged_area_percent=forged_area_percent(prob, self.map_threshold),
            ela_score=None if ela_score is None else float(ela_score),
            threshold=self.threshold,
            inconclusive_from=self.inconclusive_from,
            map_threshold=self.map_threshold,
            method=self.method,
            prob_map=prob,
            cues=cues,
            notes=notes,
            regions=regions,
            run_integrity=self.run_integrity,
            copy_moves=[pair_summary(c) for c in copies],
            inconclusive_reason=reason,
            covered_fraction=covered,
        )
        return res, maps

    def _not_analysed(self, img: np.ndarray) -> ForgeryResult:
        """The ``inconclusive`` result of an image smaller than the cues need."""
        reason = (f"image {img.shape[0]} x {img.shape[1]} px is too small to analyse (the "
                  f"cues need at least {MIN_SIDE} x {MIN_SIDE} px)")
        return ForgeryResult(
            score=float("nan"), verdict="inconclusive", forged_area_percent=float("nan"),
            ela_score=None, threshold=self.threshold,
            inconclusive_from=self.inconclusive_from, map_threshold=self.map_threshold,
            method=self.method, prob_map=np.zeros(img.shape, np.float32),
            notes=["not analysed: " + reason], inconclusive_reason=reason,
            covered_fraction=0.0)

    def _combine(self, loc: LocalizationResult, shape: tuple[int, ...], notes: list[str]
                 ) -> tuple[float, np.ndarray]:
        """Image score and map from the cue maps: the learned combiner's, or the max rule's
        (already in ``loc``); the rule used is appended to ``notes``."""
        if self.method != "cues-learned":
            notes.append(loc.rule)
            return loc.score, loc.map
        z = loc.details.get("noise", {}).get("z")
        prob = self.combiner.pixel_map(loc.cues, shape, z)
        notes.append("learned logistic combiner of the cue maps "
                     f"({', '.join(self.combiner.cues)})")
        return self.combiner.image_probability(loc.cues, prob), prob

    def _ela_score(self, img: np.ndarray, loc: LocalizationResult, bits: int | None,
                   codec: str | None, notes: list[str]) -> float | None:
        """The paper's ELA score: the ELA cue's when it ran, else computed for the record only
        (noted), None on non-JPEG lossy coding (ELA does not apply there)."""
        if "ela" in loc.details:
            return float(loc.details["ela"]["ela_score"])
        if codec == "other":
            return None  # ELA is a JPEG-domain heuristic: not run on this coding
        er = analyze_ela(img, bits_stored=bits, quality=self.ela_quality)
        notes.append("ela_score only (not used as a cue): " + er.note)
        return er.score

    def _detect_ela_cnn(self, img: np.ndarray, bits: int | None, notes: list[str],
                        cues: dict[str, float], lossy: bool) -> tuple[float, np.ndarray, float]:
        import torch

        spec = dict(self.metadata.get("input_spec") or {})
        size = int(spec.get("size", 128))
        scale = float(self.metadata.get("input_scale", 1.0 / 255.0))
        er = analyze_ela(img, bits_stored=bits, quality=self.ela_quality)
        x = ela_cnn_input(img, bits_stored=bits, size=size, quality=self.ela_quality,
                          ela=er) * scale
        ch = int(spec.get("channels", 1))
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]
        if ch > 1:
            t = t.expand(1, ch, size, size)
        with torch.no_grad():
            p = torch.softmax(self.ela_model(t.to(self.device)).float(), dim=-1)[0, 1].item()
        prob = ela_cue(er.ela)
        cues["ela_cnn"] = float(p)
        cues["ela"] = image_score(prob, SCORE_WINDOW)
        notes.append(er.note)
        notes.append(f"ELA-CNN (paper preset): ELA image resized to {size}x{size}; the map is "
                     "the ELA cue (0.5 where the local error level is twice the image median)")
        if not lossy:
            notes.append("the image is losslessly stored: ELA is a JPEG-domain heuristic and "
                         "mostly shows texture and noise here")
        return float(p), prob, er.score

    def detect_file(self, path: str | Path, *, frame: int = 0) -> ForgeryResult:
        """Read ``path`` with :func:`medforensics.io.read_image` and :meth:`detect` it.

        Raises:
            medforensics.errors.ReadError: unreadable file (the reader's reason).
            InvalidArrayError: see :meth:`detect`.
        """
        pixels, meta = read_image(path, frame=frame)
        return self.detect(pixels, meta)



def detect_files(detector: ForgeryDetector, paths: Any, *, frame: int = 0,
                 write_files: Callable[[ForgeryResult, np.ndarray, str], dict[str, str]]
                 | None = None) -> Any:
    """Analyse files one by one; unreadable ones are reported and the batch goes on.

    Args:
        detector: the detector.
        paths: iterable of image files.
        frame: frame of multi-frame files.
        write_files: called as ``write_files(result, pixels, path)`` for every analysed image,
            returns the files it wrote (``FileResult.files``); the report layer's
            :class:`medforensics.report.images.MapWriter` writes the maps this way, so detection
            never depends on how results are drawn.

    Yields:
        :class:`FileResult` per path, in order. ``reason`` is the reader's reason
        (``not-an-image-file``, ``truncated-pixel-data``, ...) or ``invalid-image`` (too small
        or non-finite for the detector).
    """
    for p in paths:
        path = str(p)
        meta = None
        try:
            pixels, meta = read_image(path, frame=frame)
            res = detector.detect(pixels, meta)
        except ReadError as exc:
            yield FileResult(path, error=str(exc), reason=exc.reason, frame=frame)
            continue
        except InvalidArrayError as exc:
            yield FileResult(path, error=str(exc), reason="invalid-image", meta=meta,
                             frame=frame)
            continue
        files = write_files(res, pixels, path) if write_files is not None else {}
        yield FileResult(path, result=res, files=files, meta=meta, frame=frame)
