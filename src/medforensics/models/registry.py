"""Model registry (timm-style): ``register_model``, ``create_model``, ``list_models``.

Every registered class takes ``num_classes`` as its first keyword and carries a class attribute
``input_spec`` (dict) describing what it expects, e.g. ``{"size": 256, "preprocess":
"paper-8bit"}`` or ``{"patch": 64, "preprocess": "native"}``. :func:`create_model` stores the
registry name, ``num_classes`` and the keyword arguments on the instance (``model_name``,
``num_classes``, ``model_kwargs``) so that :mod:`medforensics.models.io` can rebuild it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from medforensics.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "get_model_class"]

_REGISTRY: dict[str, type[nn.Module]] = {}
_BUILTIN_MODULES = ("deep_rsi", "deepmammo", "patch", "ela_cnn")

M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator registering an ``nn.Module`` subclass under ``name``."""

    def deco(cls: M) -> M:
        if not isinstance(getattr(cls, "input_spec", None), dict):
            raise ConfigError(f"model {name!r} must define a class attribute input_spec (dict)")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"model name {name!r} is already registered")
        _REGISTRY[name] = cls
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
