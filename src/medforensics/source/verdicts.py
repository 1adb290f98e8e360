"""Verdict logic of source-device identification (pure: no I/O, no torch).

Given the *calibrated* class probabilities of one image (see
:mod:`medforensics.eval.calibration`), the model's class names, the device the header claims
and the open-set threshold, :func:`verdict` says whether the pixels support the header:

========================== =====================================================================
``consistent``             the device the pixels name is the claimed device.
``MISMATCH``               the pixels name a *different known* device than the claimed one: the
                           header may have been edited, or the image comes from another machine.
``UNKNOWN``                the pixels match none of the devices this model knows (open-set
                           test failed, or no enrolled unit of the nearest device matches), so
                           the claim can be neither confirmed nor refuted (no mismatch is
                           alleged) and no device is named.
``claim-not-in-model``     the header names a device outside the model's classes: the claim
                           cannot be checked; the device the pixels name is reported.
``no-header-claim``        the header names no device at this level; only the pixels' named
                           device is reported.
``insufficient-evidence``  too little of the image carries readable detector noise (flat,
                           clipped, smooth or tiny): nothing is named, nothing is alleged.
``unreadable``             the file could not be read (:func:`unreadable`, from a ``ReadError``).
========================== =====================================================================

Precedence: unreadable > insufficient-evidence > UNKNOWN > no-header-claim >
claim-not-in-model > consistent / MISMATCH.

A device is **named** (``confident`` true) only when the evidence floor holds and either an
enrolled unit's reference pattern matches (the strongest evidence: the physical unit is
identified), or the classifier's open-set test passes: calibrated max-probability at least
its threshold *and* the feature distance (:mod:`medforensics.source.openset`) at most its
threshold. When the run requires a unit match for classes with enrolled units
(``OpenSetCheck.unit_required``), a nearest class whose enrolled units all fail to match is
not named either: the image may come from an unenrolled unit of that model or from a device
the model never saw, and the pixels cannot tell which.

Header labels are compared after the manifest's normalisation
(:func:`medforensics.data.labels.device_labels`; :func:`header_claim` builds the label
from an ``ImageMeta`` or a manifest row). :func:`match_claim` then matches the label to a
class exactly, else ignoring letter case and repeated whitespace (the ingest merges labels
that differ only by case, :func:`medforensics.data.labels.unify_case_variants`).

Every :class:`Verdict` serialises with :meth:`Verdict.to_dict` (strict JSON);
:func:`format_table` renders a list of verdicts for people.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medforensics.common.jsonio import to_jsonable
from medforensics.data.labels import device_labels
from medforensics.data.transforms import NOISE_ALONE
from medforensics.errors import ConfigError
from medforensics.eval.tables import render_table

__all__ = [
    "CLAIM_NOT_IN_MODEL",
    "CONSISTENT",
    "INSUFFICIENT_EVIDENCE",
    "OpenSetCheck",
    "LEVELS",
    "MISMATCH",
    "NO_HEADER_CLAIM",
    "UNKNOWN",
    "UNREADABLE",
    "VERDICTS",
    "Verdict",
    "format_table",
    "header_claim",
    "insufficient",
    "match_claim",
    "summarise",
    "unreadable",
    "verdict",
]

CONSISTENT = "consistent"
MISMATCH = "MISMATCH"
UNKNOWN = "UNKNOWN"
INSUFFICIENT_EVIDENCE = "insufficient-evidence"
CLAIM_NOT_IN_MODEL = "claim-not-in-model"
NO_HEADER_CLAIM = "no-header-claim"
UNREADABLE = "unreadable"
#: All verdict values.
VERDICTS = (CONSISTENT, MISMATCH, UNKNOWN, CLAIM_NOT_IN_MODEL, NO_HEADER_CLAIM,
            INSUFFICIENT_EVIDENCE, UNREADABLE)

Level = Literal["manufacturer", "model", "unit"]
#: Label levels (manifest columns) a model can be trained on.
LEVELS: tuple[str, ...] = ("manufacturer", "model", "unit")

#: Raw manifest / DICOM keyword columns used by :func:`header_claim` for mapping input.
_RAW_KEYS = ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "StationName")

_PROB_SUM_TOL = 1e-3


@dataclass
class OpenSetCheck:
    """What, beyond the class probabilities, decides whether a device may be named.

    Attributes:
        feature_distance: the image's feature distance (:meth:`FeatureOpenSet.distance`),
            ``None`` when the run has no feature model.
        feature_threshold: its UNKNOWN threshold (``None``: no threshold could be set, e.g.
            too few validation images; then the classifier alone never names a device).
        features_required: whether a missing feature threshold forbids naming (``identify``
            sets it for every run: probabilities alone are no open-set evidence).
        unit_class: the class of the enrolled unit whose pattern matched, or ``None``.
        unit: that unit's label.
        unit_required: the nearest class has enrolled units and the run requires one of
            them to match before that class is named.
        informative: informative windows of the image (evidence floor), ``None`` unknown.
        min_informative: the evidence floor.
        evidence_reason: why windows were not informative (for the message).
        knowledge: what the model knows, e.g. ``"simulated devices"`` (``None``:
            real devices or not recorded).
        threshold_note: a warning about how well the thresholds are backed.
        distance_parts: what the feature distance is made of (block name -> that block's
            own distance), quoted when the distance refuses a name.
    """

    feature_distance: float | None = None
    feature_threshold: float | None = None
    features_required: bool = False
    unit_class: str | None = None
    unit: str | None = None
    unit_required: bool = False
    informative: int | None = None
    min_informative: int = 4
    evidence_reason: str = ""
    knowledge: str | None = None
    threshold_note: str | None = None
    distance_parts: dict[str, float] | None = None


@dataclass
class Verdict:
    """Outcome of checking one image's header claim against its pixels.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        message: one human sentence, e.g.
            ``MISMATCH: header claims model "A", pixels say "B" (p=0.97)``.
        path: the image file, when known.
        level: label level compared (``"manufacturer"``, ``"model"`` or ``"unit"``).
        predicted: the class the pixels point to (arg-max), ``None`` if unreadable.
        probability: its calibrated probability in [0, 1].
        top: the ``top_k`` most probable classes as ``(label, probability)``, descending.
        confident: ``probability >= unknown_threshold`` (``None`` if unreadable).
        header_claim: the normalised label the header claims (``None`` if no claim).
        claim_class: the class name the claim matched (``None`` when outside the classes).
        claim_probability: calibrated probability of ``claim_class`` (``None`` without one).
        unknown_threshold: the open-set threshold used (``None``: no rejection).
        score: the open-set score compared with it (the max probability by default).
        reason: machine-readable reason of an unreadable file (``ReadError.reason``).
        named_by: what named the device: ``"unit-pattern"``, ``"classifier"`` or ``None``
            (nothing named).
        feature_distance: the open-set feature distance (``None`` without a feature model).
        feature_threshold: its threshold.
        informative_windows: informative windows of the image (evidence floor).
        model_knowledge: e.g. ``"simulated devices"``; every message says so too.
    """

    verdict: str
    message: str
    path: str | None = None
    level: str = "model"
    predicted: str | None = None
    probability: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    confident: bool | None = None
    header_claim: str | None = None
    claim_class: str | None = None
    claim_probability: float | None = None
    unknown_threshold: float | None = None
    score: float | None = None
    reason: str | None = None
    named_by: str | None = None
    feature_distance: float | None = None
    feature_threshold: float | None = None
    informative_windows: int | None = None
    model_knowledge: str | None = None

    @property
    def claim_in_classes(self) -> bool | None:
        """Whether the header's claim is one of the model's classes (``None``: no claim)."""
        return None if self.header_claim is None else self.claim_class is not None

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict (``top`` as ``[{"label", "probability"}]``, NaN -> ``None``).

        ``named`` is the device the verdict names (``None`` unless ``confident``);
        ``predicted`` stays the classifier's nearest class, for the record only.
        """
        out = to_jsonable(self)
        out["top"] = [{"label": lab, "probability": to_jsonable(p)} for lab, p in self.top]
        out["claim_in_classes"] = self.claim_in_classes
        out["named"] = self.predicted if self.confident else None
        return out


def _norm_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _clean_claim(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = " ".join(str(value).split())
    return text or None


def match_claim(claim: str | None, classes: Sequence[str]) -> str | None:
    """The class a (normalised) header label refers to.

    Args:
        claim: normalised label, e.g. ``"GE Senographe DS"``; ``None``/empty gives ``None``.
        classes: the model's class names.

    Returns:
        The exact class name when ``claim`` equals one; otherwise the unique class equal to
        it ignoring case and whitespace runs; otherwise ``None`` (outside the classes).
    """
    text = _clean_claim(claim)
    if text is None:
        return None
    names = [str(c) for c in classes]
    if text in names:
        return text
    key = _norm_key(text)
    hits = [c for c in names if _norm_key(c) == key]
    return hits[0] if len(hits) == 1 else None


def header_claim(source: Any, level: Level = "model") -> str | None:
    """Normalised device label claimed by a header, as the manifest would write it.

    Args:
        source: an :class:`medforensics.io.ImageMeta` (raw ``manufacturer``, ``model``,
            ``serial``, ``station`` attributes), or a mapping such as a manifest row: its
            normalised ``level`` column is used when non-empty (it already carries the
            ingest's case unification), else the raw DICOM keyword columns
            ``Manufacturer``, ``ManufacturerModelName``, ``DeviceSerialNumber``,
            ``StationName`` are normalised.
        level: ``"manufacturer"``, ``"model"`` or ``"unit"``.

    Returns:
        The label, or ``None`` when the header does not name a device at that level.
    """
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    if isinstance(source, Mapping):
        ready = _clean_claim(source.get(level))
        if ready is not None:
            return ready
        raw = [source.get(k) for k in _RAW_KEYS]
    else:
        try:
            raw = [source.manufacturer, source.model, source.serial, source.station]
        except AttributeError as exc:
            raise ConfigError(
                "header_claim needs an ImageMeta or a mapping with DICOM keyword columns"
            ) from exc
    labels = device_labels(*raw)
    return _clean_claim(labels[level])


def _fmt_p(p: float, name: str = "p") -> str:
    if p >= 0.995:
        return f"{name}>0.99"
    if p < 0.005:
        return f"{name}<0.01"
    return f"{name}={p:.2f}"


def _check_probs(probs: Any, classes: Sequence[str]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size != len(classes):
        raise ConfigError(f"probs must be (C,) = ({len(classes)},), got shape {p.shape}")
    if p.size < 2:
        raise ConfigError("need at least 2 classes")
    if not np.all(np.isfinite(p)) or p.min() < -1e-9 or abs(p.sum() - 1.0) > _PROB_SUM_TOL:
        raise ConfigError(
            "probs must be calibrated probabilities summing to 1 (apply_temperature to logits)"
        )
    return p


def verdict(
    probs: Any,
    classes: Sequence[str],
    header_label: str | None,
    unknown_threshold: float | None,
    *,
    path: str | None = None,
    level: Level = "model",
    top_k: int = 3,
    score: float | None = None,
    check: OpenSetCheck | None = None,
) -> Verdict:
    """Compare the header's device claim with what the pixels say.

    Args:
        probs: (C,) float calibrated class probabilities of one image (summing to 1), e.g.
            ``apply_temperature(logits, T)``.
        classes: C class names (normalised labels, as in the manifest).
        header_label: the normalised label the header claims (:func:`header_claim`), or
            ``None``/"" when the header names no device.
        unknown_threshold: probability threshold from
            :func:`medforensics.eval.calibration.fit_unknown_threshold`; the classifier can
            name a device only when ``score >= unknown_threshold``. ``None`` disables it.
        path: file name to carry along (for tables / JSON).
        level: label level of the classes, used in messages.
        top_k: how many (label, probability) pairs to keep in ``top``.
        score: score compared with ``unknown_threshold`` (higher = more confident); default
            ``max(probs)``.
        check: the open-set, unit-pattern and evidence-floor facts (:class:`OpenSetCheck`);
            ``None`` = probabilities only.

    Returns:
        A :class:`Verdict` (see the module docstring for the rules and precedence).

    Raises:
        ConfigError: ``probs`` is not a (C,) probability vector matching ``classes``, or the
            threshold is outside [0, 1].
    """
    names = [str(c) for c in classes]
    p = _check_probs(probs, names)
    chk = check or OpenSetCheck()
    thr = None if unknown_threshold is None else float(unknown_threshold)
    if thr is not None and score is None and not 0.0 <= thr <= 1.0:
        raise ConfigError(f"unknown_threshold must be in [0, 1], got {unknown_threshold}")
    if thr is not None and not math.isfinite(thr):
        raise ConfigError(f"unknown_threshold must be finite, got {unknown_threshold}")
    order = np.argsort(-p, kind="stable")
    k = int(order[0])
    pred, p_max = names[k], float(p[k])
    top = [(names[int(i)], float(p[int(i)])) for i in order[: max(1, int(top_k))]]
    s = p_max if score is None else float(score)
    claim = _clean_claim(header_label)
    claim_class = match_claim(claim, names)
    claim_p = float(p[names.index(claim_class)]) if claim_class is not None else None
    knows = f" [this model knows only {chk.knowledge}]" if chk.knowledge else ""
    note = f" [{chk.threshold_note}]" if chk.threshold_note else ""

    named, named_by, refusal = _decide_name(pred, p_max, s, thr, score is not None, chk)
    confident = named is not None
    common = dict(
        path=None if path is None else str(path), level=level, top=top,
        header_claim=claim, claim_class=claim_class, claim_probability=claim_p,
        unknown_threshold=thr, score=s, named_by=named_by,
        feature_distance=chk.feature_distance, feature_threshold=chk.feature_threshold,
        informative_windows=chk.informative, model_knowledge=chk.knowledge,
    )
    if chk.informative is not None and chk.informative < chk.min_informative:
        msg = _insufficient_message(chk.informative, chk.min_informative, chk.evidence_reason)
        return Verdict(verdict=INSUFFICIENT_EVIDENCE, message=msg + knows, predicted=pred,
                       probability=p_max, confident=False, **common)
    if named is None:
        claim_txt = (f'the header\'s claim "{claim}" can be neither confirmed nor refuted'
                     if claim else "the header names no device")
        if claim and claim_class is None:
            claim_txt += " (it is not one of this model's devices either)"
        msg = (f"{UNKNOWN}: pixels match none of the {len(names)} devices this model knows "
               f"({refusal}); {claim_txt}")
        return Verdict(verdict=UNKNOWN, message=msg + note + knows, predicted=pred,
                       probability=p_max, confident=False, **common)

    p_named = float(p[names.index(named)])
    how = ("an enrolled unit's reference pattern matches"
           + (f" ({chk.unit})" if chk.unit else "") if named_by == "unit-pattern"
           else _fmt_p(p_named))
    best = f'"{named}" ({how})'
    if claim is None:
        kind = NO_HEADER_CLAIM
        msg = f"{kind}: the header names no {level}; pixels say {best}"
    elif claim_class is None:
        kind = CLAIM_NOT_IN_MODEL
        msg = (f'{kind}: header claims {level} "{claim}", which is not among the {len(names)} '
               f"devices this model was trained on, so the claim cannot be checked; pixels say {best}")
    elif claim_class == named:
        kind = CONSISTENT
        msg = f'{kind}: header claims {level} "{claim_class}"; pixels agree ({how})'
    else:
        kind = MISMATCH
        msg = (f'{kind}: header claims {level} "{claim_class}", pixels say {best}; '
               + _fmt_p(claim_p or 0.0, f'p("{claim_class}")'))
    if named_by == "classifier" and check is not None:
        msg += " [named by the classifier alone: no unit pattern confirms it]"
    return Verdict(verdict=kind, message=msg + note + knows, predicted=named,
                   probability=p_named, confident=confident, **common)


def _decide_name(pred: str, p_max: float, s: float, thr: float | None, custom_score: bool,
                 chk: OpenSetCheck) -> tuple[str | None, str | None, str]:
    """``(named class or None, what named it, why nothing was named)`` (see module docstring)."""
    if chk.unit_class is not None:
        return chk.unit_class, "unit-pattern", ""
    if chk.unit_required:
        return None, None, (f'nearest is "{pred}", but none of its enrolled units\' reference '
                            "patterns matches: an unenrolled unit or a device never seen")
    if thr is not None and s < thr:
        what = (f"score {s:.4g} < threshold {thr:.4g}" if custom_score
                else f"p={p_max:.2f} < threshold {thr:.2f}")
        return None, None, f'best "{pred}", {what}'
    if chk.feature_distance is not None and chk.feature_threshold is not None:
        if chk.feature_distance > chk.feature_threshold:
            parts = ("" if not chk.distance_parts else " (" + ", ".join(
                f"{k} {v:.3g}" for k, v in chk.distance_parts.items()) + ")")
            return None, None, (f'nearest "{pred}", but feature distance '
                                f"{chk.feature_distance:.3g} > threshold "
                                f"{chk.feature_threshold:.3g}{parts}")
    elif chk.features_required:
        return None, None, (f'nearest "{pred}", but the run has no open-set threshold '
                            "(not calibrated, or too few validation images to set one)")
    return pred, "classifier", ""


def _insufficient_message(informative: int, required: int, reason: str) -> str:
    """The sentence of an insufficient-evidence verdict."""
    if reason.startswith(NOISE_ALONE):
        return (f"{INSUFFICIENT_EVIDENCE}: the image is {reason}; noise with nothing else "
                "shows no device, so no device is named and the header's claim is neither "
                "confirmed nor refuted")
    why = f" ({reason})" if reason else ""
    return (f"{INSUFFICIENT_EVIDENCE}: only {informative} of the image's windows carry readable "
            f"detector noise (at least {required} needed){why}; no device is named and the "
            "header's claim is neither confirmed nor refuted")


def insufficient(
    path: str | None,
    informative: int,
    *,
    min_informative: int = 4,
    reason: str = "",
    header_label: str | None = None,
    level: Level = "model",
    knowledge: str | None = None,
) -> Verdict:
    """Verdict for a readable image with too little readable detector noise to judge.

    Args:
        path: the file.
        informative: its informative windows (below ``min_informative``).
        min_informative: the evidence floor.
        reason: why windows were rejected (from the evidence count).
        header_label: the header's claim (kept for the record).
        level: label level, for the record.
        knowledge: what the model knows (see :class:`OpenSetCheck`).

    Returns:
        A :class:`Verdict` with ``verdict == "insufficient-evidence"``, nothing named.
    """
    knows = f" [this model knows only {knowledge}]" if knowledge else ""
    return Verdict(
        verdict=INSUFFICIENT_EVIDENCE,
        message=_insufficient_message(informative, min_informative, reason) + knows,
        path=None if path is None else str(path),
        level=level,
        confident=False,
        header_claim=_clean_claim(header_label),
        informative_windows=int(informative),
        model_knowledge=knowledge,
    )


def unreadable(
    error: BaseException,
    path: str | None = None,
    *,
    header_label: str | None = None,
    level: Level = "model",
) -> Verdict:
    """Verdict for a file that could not be read.

    Args:
        error: the exception, normally a :class:`medforensics.errors.ReadError` (its
            ``reason`` is kept; other exceptions get reason ``"unreadable"``).
        path: the file; defaults to ``error.path`` when present.
        header_label: the header's claim if it could still be read (kept for the record).
        level: label level, for the record.

    Returns:
        A :class:`Verdict` with ``verdict == "unreadable"``, ``reason`` and the error message.
    """
    reason = str(getattr(error, "reason", None) or UNREADABLE)
    where = path if path is not None else getattr(error, "path", None)
    return Verdict(
        verdict=UNREADABLE,
        message=f"{UNREADABLE} ({reason}): {error}",
        path=None if where is None else str(where),
        level=level,
        header_claim=_clean_claim(header_label),
        reason=reason,
    )


def summarise(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Count verdicts per kind (every kind present as a key, in :data:`VERDICTS` order)."""
    counts = Counter(v.verdict for v in verdicts)
    return {kind: int(counts.get(kind, 0)) for kind in VERDICTS}


def format_table(
    verdicts: Sequence[Verdict],
    *,
    fmt: Literal["text", "markdown"] = "text",
    details: bool = False,
) -> str:
    """Human-readable table of verdicts.

    Columns: file, verdict, header claim, pixels say (the named device with its probability;
    empty when nothing is named), second choice, note (reason for unreadable, informative
    windows for insufficient evidence, "outside classes" for a claim the model cannot check,
    "unit pattern matches" when a unit named the device). A count line per verdict kind
    follows.

    Args:
        verdicts: verdicts to show, in order.
        fmt: ``"text"`` (aligned columns) or ``"markdown"``.
        details: append each verdict's full sentence, numbered like the rows.

    Returns:
        The text.
    """
    headers = ["#", "File", "Verdict", "Header claim", "Pixels say", "2nd choice", "Note"]
    rows = []
    for i, v in enumerate(verdicts, 1):
        pixels = ("" if v.predicted is None or not v.confident
                  else f"{v.predicted} ({_fmt_p(v.probability or 0.0)})")
        second = (f"{v.top[1][0]} ({_fmt_p(v.top[1][1])})"
                  if len(v.top) > 1 and v.confident else "")
        if v.verdict == UNREADABLE:
            note = v.reason or ""
        elif v.verdict == INSUFFICIENT_EVIDENCE:
            note = f"{v.informative_windows} informative windows"
        elif v.verdict == UNKNOWN:
            note = "matches no known device"
        elif v.verdict == CLAIM_NOT_IN_MODEL:
            note = "claim outside trained classes"
        elif v.verdict == MISMATCH and v.claim_probability is not None:
            note = _fmt_p(v.claim_probability, "p(claim)")
        else:
            note = ""
        if v.named_by == "unit-pattern":
            note = (note + "; " if note else "") + "unit pattern matches"
        rows.append([str(i), v.path or "", v.verdict, v.header_claim or "-", pixels, second,
                     note])
    table = render_table(headers, rows, fmt=fmt, align=["r", "l", "l", "l", "l", "l", "l"])
    counts = summarise(verdicts)
    summary = ", ".join(f"{k}: {n}" for k, n in counts.items() if n)
    parts = [table, f"{len(verdicts)} image(s){': ' + summary if summary else ''}"]
    if details:
        parts.append("\n".join(f"{i}. {v.message}" for i, v in enumerate(verdicts, 1)))
    return "\n\n".join(parts)
