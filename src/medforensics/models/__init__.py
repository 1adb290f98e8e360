"""Neural models: registry, Bayar-Stamm constrained layer, paper presets and our patch model.

Presets (``list_models()``): ``deep-rsi`` and ``deepmammo`` (paper reproductions on 256x256
8-bit-rescaled images), ``patch`` (native-resolution patches of stored values, ours) and
``ela-cnn`` (forgery classifier on ELA images). Weights are stored as safetensors + JSON
(:mod:`medforensics.models.io`), never pickles.
"""

from medforensics.models.registry import (
    create_model,
    get_model_class,
    list_models,
    register_model,
)

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]
