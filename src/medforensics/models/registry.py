"""Model registry (timm-style): ``register_model``, ``create_model``, ``list_models``, and
each preset's training defaults (``training_defaults``).

Every registered class takes ``num_classes`` as its first keyword and carries a class attribute
``input_spec`` (dict) describing what it expects, e.g. ``{"size": 256, "preprocess":
"paper-8bit"}`` or ``{"patch": 64, "preprocess": "native"}``. :func:`create_model` stores the
registry name, ``num_classes`` and the keyword arguments on the instance (``model_name``,
``num_classes``, ``model_kwargs``) so that :mod:`medforensics.models.io` can rebuild it.

A preset registers its training defaults next to its layers
(``@register_model("deep-rsi", defaults=TrainingDefaults(...))``), each value with the paper
statement it comes from in the model's docstring; the trainers
(:mod:`medforensics.training.engine`, :mod:`medforensics.forgery.train`) read them with
:func:`training_defaults` and keep no tables of their own.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from medforensics.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "get_model_class",
           "TrainingDefaults", "training_defaults"]

_REGISTRY: dict[str, type[nn.Module]] = {}
_DEFAULTS: dict[str, TrainingDefaults] = {}
_BUILTIN_MODULES = ("deep_rsi", "deepmammo", "patch", "ela_cnn")

M = TypeVar("M", bound=type[nn.Module])


@dataclass(frozen=True)
class TrainingDefaults:
    """How a preset is trained when the user does not say otherwise.

    Attributes:
        epochs: total epochs.
        batch_size: training batch (patches for ``patch``, images otherwise).
        lr: learning rate of ``optimizer``.
        optimizer: ``"adam"`` (the only one the trainers build).
        lr_schedule: ``"constant"`` or ``"cosine"`` (per-epoch cosine decay towards 0).
        select: best-epoch rule: ``"bacc"`` (highest validation balanced accuracy, ties to the
            lower loss), ``"loss"`` (lowest validation loss) or ``"acc"`` (highest validation
            accuracy at the 0.5 threshold, ties to the earlier epoch; the two-class ELA-CNN).
        sampling: ``"weighted"`` (class-weighted draws), ``"balanced"`` (balanced batches) or
            ``"shuffle"`` (a seeded permutation per epoch).
        size: side of the resized square input in pixels (image presets), else None.
        patch: side of a native-resolution patch in pixels (``patch``), else None.
        patches_per_image: training patches drawn per image and epoch (``patch``).
        val_patches: fixed patches per validation image (``patch``).
        outlier_devices: procedurally drawn "none of these" devices (0 = off).
        outlier_weight: weight of the outlier-exposure loss term.
        ela_quality: JPEG quality of the ELA re-save (ELA-CNN), else None.
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    select: str = "bacc"
    sampling: str = "weighted"
    size: int | None = None
    patch: int | None = None
    patches_per_image: int | None = None
    val_patches: int | None = None
    outlier_devices: int = 0
    outlier_weight: float = 0.5
    ela_quality: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The defaults as a plain dict (field name -> value)."""
        return dataclasses.asdict(self)


def register_model(name: str, *, defaults: TrainingDefaults | None = None
                   ) -> Callable[[M], M]:
    """Class decorator registering an ``nn.Module`` subclass under ``name``.

    Args:
        name: registry name (the preset).
        defaults: the preset's training defaults (read back by :func:`training_defaults`).
    """

    def deco(cls: M) -> M:
        if not isinstance(getattr(cls, "input_spec", None), dict):
            raise ConfigError(f"model {name!r} must define a class attribute input_spec (dict)")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"model name {name!r} is already registered")
        _REGISTRY[name] = cls
        if defaults is not None:
            _DEFAULTS[name] = defaults
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(f"medforensics.models.{mod}")


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ConfigError listing the known names otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def training_defaults(name: str) -> TrainingDefaults:
    """The training defaults registered with preset ``name``.

    Raises:
        ConfigError: unknown preset, or one registered without defaults.
    """
    get_model_class(name)
    try:
        return _DEFAULTS[name]
    except KeyError:
        raise ConfigError(f"model {name!r} has no registered training defaults") from None


def create_model(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs and model-specific keyword arguments.

    Raises:
        ConfigError: unknown name, ``num_classes < 2`` or an argument the model does not take.
    """
    cls = get_model_class(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    try:
        inspect.signature(cls).bind(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for model {name!r}: {exc}") from None
    model = cls(num_classes=num_classes, **kwargs)
    model.model_name = name
    model.num_classes = num_classes
    model.model_kwargs = dict(kwargs)
    return model
