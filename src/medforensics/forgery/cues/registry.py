"""The forgery cue registry: cue name -> map function + its default parameters.

Every cue module registers its cue with :func:`register_cue` (the way
:mod:`medforensics.models.registry` registers model presets); :func:`medforensics.forgery.
localize.localize` loops over the registry instead of naming cues. A registered cue function
has one signature::

    fn(img: float32 (H, W), ctx: CueContext, params: Mapping[str, Any]) -> CueOutput

``params`` is the cue's parameter mapping: the registered ``defaults`` (on lossy inputs
updated with ``lossy_defaults``), overridden by the caller's ``cue_params[name]``
(:func:`resolve_params`). Callers pass every cue's parameters as one mapping
``cue_params: {cue name: {parameter: value}}``; an unknown cue or parameter name is a
:class:`~medforensics.errors.ConfigError`, not a silently ignored setting.

Order: :func:`list_cues` gives the cues by ``rank`` (the position in the default cue list, and
so the order of cue maps in results); registration order does not matter, because cue modules
import each other's helpers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medforensics.errors import ConfigError

__all__ = [
    "CueContext",
    "CueOutput",
    "CueSpec",
    "register_cue",
    "get_cue",
    "list_cues",
    "map_names",
    "resolve_params",
    "check_cue_params",
    "signature_defaults",
]


@dataclass(frozen=True)
class CueContext:
    """What a cue may know about the image besides its pixels.

    Attributes:
        lossy: the image went through lossy compression (``ImageMeta.lossy`` or a JPEG grid).
        lossy_codec: ``"jpeg"``, ``"other"`` (JPEG 2000, JPEG-LS near-lossless) or None
            (:func:`medforensics.forgery.cues.ela.lossy_codec`).
        bits_stored: bit depth of the stored values, None if unknown.
        explicit: the caller named the cue list; cues then run even where they would skip
            themselves by default (ELA on lossless data, noise on non-JPEG lossy coding).
        patch_logprobs: patch model callable for the fingerprint cue (None: no source model).
        inputs: results of the cues this one ``needs`` that ran before it (name -> the
            ``result`` of their :class:`CueOutput`, None when that cue skipped itself).
    """

    lossy: bool = False
    lossy_codec: str | None = None
    bits_stored: int | None = None
    explicit: bool = False
    patch_logprobs: Callable[[np.ndarray], np.ndarray] | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def non_dct(self) -> bool:
        """Lossy coding that is not JPEG's (no 8 x 8 DCT grid): it reshapes the noise itself."""
        return bool(self.lossy) and self.lossy_codec == "other"


@dataclass
class CueOutput:
    """What one cue gives back to :func:`~medforensics.forgery.localize.localize`.

    Attributes:
        maps: map name -> float32 (H, W) in [0, 1] (usually one map named like the cue;
            empty when the cue skipped itself).
        details: JSON-friendly extras of the cue (``LocalizationResult.details[name]``),
            None for none.
        notes: what was skipped or how something was computed, in words.
        result: the cue's raw result, handed to cues that ``need`` this one.
    """

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    details: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    result: Any = None


CueFn = Callable[[np.ndarray, CueContext, Mapping[str, Any]], CueOutput]


@dataclass(frozen=True)
class CueSpec:
    """One registered cue (see :func:`register_cue` for the fields)."""

    name: str
    fn: CueFn
    defaults: Mapping[str, Any]
    needs: tuple[str, ...]
    context: tuple[str, ...]
    lossy_defaults: Mapping[str, Any]
    maps: tuple[str, ...]
    weak: tuple[str, ...]
    default_on: bool
    rank: int


_REGISTRY: dict[str, CueSpec] = {}


def register_cue(name: str, *, defaults: Mapping[str, Any], rank: int,
                 needs: Iterable[str] = (), context: Iterable[str] = (),
                 lossy_defaults: Mapping[str, Any] | None = None,
                 maps: Iterable[str] | None = None, weak: Iterable[str] = (),
                 default_on: bool = True) -> Callable[[CueFn], CueFn]:
    """Decorator registering a cue function under ``name``.

    Args:
        name: the cue's name (``cues=[...]``, ``cue_params`` key, result key).
        defaults: parameter -> default value of the cue's map function (build it with
            :func:`signature_defaults` so that the function's signature stays the one copy).
        rank: position in the default cue list (lower first).
        needs: what the cue reads besides the pixels: other cue names (those run first when
            they are in the list; their result arrives in ``ctx.inputs``) and
            ``"patch_logprobs"`` (a source patch model; without one the cue is a
            :class:`~medforensics.errors.ConfigError`).
        context: parameters the cue fills from the image (``lossy``, ``bits_stored``, ...):
            not in ``defaults``, but ``cue_params`` may still set them.
        lossy_defaults: defaults that replace ``defaults`` on lossy inputs.
        maps: names of the maps it yields (default: ``(name,)``); each also selects the cue.
        weak: of ``maps``, those that shape the combined map but never the image score.
        default_on: in the default cue list when the caller does not say.

    Raises:
        ConfigError: the name (or one of its map names) is taken.
    """
    names = tuple(maps) if maps is not None else (name,)

    def deco(fn: CueFn) -> CueFn:
        taken = [n for n in names if n in _REGISTRY]
        if taken:
            raise ConfigError(f"cue name(s) {taken} already registered")
        spec = CueSpec(name=name, fn=fn, defaults=dict(defaults), needs=tuple(needs),
                       context=tuple(context), lossy_defaults=dict(lossy_defaults or {}),
                       maps=names, weak=tuple(weak), default_on=bool(default_on),
                       rank=int(rank))
        for n in names:
            _REGISTRY[n] = spec
        return fn

    return deco


def get_cue(name: str) -> CueSpec:
    """The cue registered under ``name`` (a cue or one of its map names).

    Raises:
        ConfigError: no such cue.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown cue {name!r}; choose from {', '.join(map_names())}"
                          ) from None


def list_cues() -> list[str]:
    """Names of the registered cues, by rank."""
    return [s.name for s in sorted({id(s): s for s in _REGISTRY.values()}.values(),
                                   key=lambda s: s.rank)]


def map_names() -> tuple[str, ...]:
    """Every name a cue list may hold: the cues' map names, by rank."""
    return tuple(m for c in list_cues() for m in _REGISTRY[c].maps)


def check_cue_params(cue_params: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Refuse unknown cue names and unknown parameters in a ``cue_params`` mapping.

    Raises:
        ConfigError: naming the unknown cue or parameters and what is known.
    """
    for name, params in (cue_params or {}).items():
        spec = get_cue(name)
        if name != spec.name:
            raise ConfigError(f"cue_params: give {name!r}'s parameters under {spec.name!r}")
        if not isinstance(params, Mapping):
            raise ConfigError(f"cue_params[{name!r}] must be a mapping, got {params!r}")
        known = set(spec.defaults) | set(spec.context) | set(spec.lossy_defaults)
        bad = sorted(set(params) - known)
        if bad:
            raise ConfigError(f"unknown parameter(s) {bad} of the {name} cue; known: "
                              f"{', '.join(sorted(known))}")


def resolve_params(name: str, cue_params: Mapping[str, Mapping[str, Any]] | None = None,
                   *, lossy: bool = False) -> dict[str, Any]:
    """A cue's parameters: registered defaults, lossy defaults (if ``lossy``), then the
    caller's ``cue_params[name]`` on top."""
    spec = get_cue(name)
    out = dict(spec.defaults)
    if lossy:
        out.update(spec.lossy_defaults)
    out.update((cue_params or {}).get(spec.name) or {})
    return out


def signature_defaults(fn: Callable[..., Any], *, exclude: Iterable[str] = ()
                       ) -> dict[str, Any]:
    """Keyword parameters of ``fn`` that have a default, with that default (minus
    ``exclude``): the registry reads a cue's defaults from its map function's signature."""
    skip = set(exclude)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty and p.name not in skip
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
