"""Saving and loading models as safetensors weights + JSON metadata (never pickles).

A saved model is two files side by side::

    model.safetensors   the state dict (tensors only; safetensors cannot execute code)
    model.json          metadata: how to rebuild the model and what it was trained on

``model.json`` holds (keys marked * are filled in from the model, the rest come from the
caller's ``metadata`` and are ``null`` when not given):

* ``format`` *: ``"medforensics-model/1"``
* ``name`` *, ``model_kwargs`` *, ``num_classes`` *: arguments for
  :func:`medforensics.models.registry.create_model`
* ``input_spec`` *: the model's input spec; ``preprocess`` (default ``input_spec["preprocess"]``)
* ``classes``: class names, index = logit index (length ``num_classes`` when given)
* ``label_column``: manifest column the classes come from (``manufacturer``/``model``/``unit``)
* ``training_manifest_sha256``: hash of the training manifest; ``seed``
* ``software_version`` *, ``created`` * (UTC ISO 8601)
* ``weights_file`` *, ``weights_sha256`` *: checked on load

The record is :class:`medforensics.models.metadata.RunMetadata` (pydantic): ``save_model``
validates what it writes and ``load_model`` what it reads (an old run's ``manifest_sha256``
is read as ``training_manifest_sha256``); the metadata is returned as a plain dict.

Both files are then listed with their SHA-256 in the folder's run manifest ``run.json``
(:func:`medforensics.models.runfiles.record_files`), which the run loaders check.
Any further JSON-serialisable keys of ``metadata`` are kept as given. Keys marked * may be
passed in ``metadata`` only with the value the model gives them (else ConfigError).

:func:`load_model` accepts the run directory, the ``.json`` or the ``.safetensors`` path, and
refuses everything else (``.pt``/``.pth``/``.pkl``/``.bin``/``.ckpt``, missing JSON, hash or
key mismatch) with :class:`~medforensics.errors.ModelFileError`, and input sizes out of
:data:`~medforensics.models.runfiles.MODEL_BOUNDS` with its subclass
:class:`~medforensics.errors.RunIntegrityError`. It never calls ``torch.load`` or ``pickle``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from medforensics import __version__
from medforensics.common.hashing import file_sha256
from medforensics.common.atomic import atomic_write_bytes
from medforensics.errors import ConfigError, ModelFileError
from medforensics.models.constrained import max_constraint_violation
from medforensics.models.metadata import FORMAT, RunMetadata
from medforensics.models.registry import create_model
from medforensics.models.runfiles import MODEL_BOUNDS, check_values, record_files

__all__ = ["save_model", "load_model", "FORMAT", "WEIGHTS_NAME", "META_NAME"]

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
_REFUSED_SUFFIXES = {
    ".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar", ".joblib", ".npy", ".npz"
}
_MODEL_KEYS = ("format", "name", "model_kwargs", "num_classes", "input_spec", "software_version",
               "created", "weights_file", "weights_sha256")


def _jsonish(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists); unserialisable -> repr."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def _paths(run_dir_or_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights, json) paths for a directory, a ``.safetensors`` or a ``.json`` path."""
    p = Path(run_dir_or_path)
    if p.suffix.lower() in _REFUSED_SUFFIXES:
        raise ModelFileError(
            f"{p}: refusing a '{p.suffix}' file; medforensics only reads and writes "
            "safetensors + JSON (pickle-based checkpoints can execute code when loaded)"
        )
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    if p.suffix == ".json":
        return p.with_suffix(".safetensors"), p
    return p / WEIGHTS_NAME, p / META_NAME


def _check_caller_keys(metadata: dict[str, Any], derived: dict[str, Any]) -> None:
    """Refuse caller metadata that sets a model-derived key differently, or bad ``classes``.

    Raises:
        ConfigError: naming the clashing keys, or the expected number of classes.
    """
    clash = [k for k in _MODEL_KEYS if k in metadata and k not in derived]
    clash += [
        k for k, v in derived.items() if k in metadata and _jsonish(metadata[k]) != _jsonish(v)
    ]
    if clash:
        raise ConfigError(
            f"metadata keys {clash} are set from the model/file and must be absent or equal"
        )
    classes, num_classes = metadata.get("classes"), derived["num_classes"]
    if classes is not None and (
        not isinstance(classes, (list, tuple)) or len(classes) != num_classes
    ):
        raise ConfigError(f"classes must be a list of {num_classes} names, got {classes!r}")


def save_model(
    run_dir_or_path: str | os.PathLike[str],
    model: nn.Module,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` (see module docstring for the keys).

    Args:
        run_dir_or_path: a run directory (created if needed; files ``model.safetensors`` and
            ``model.json`` inside) or an explicit ``<stem>.safetensors`` path (``<stem>.json``
            is written next to it).
        model: a model built by :func:`~medforensics.models.registry.create_model`.
        metadata: caller metadata (classes, label_column, training_manifest_sha256, seed, ...).

    Returns:
        Path of the JSON file.

    Raises:
        ConfigError: model not built by ``create_model``, metadata not JSON-serialisable,
            metadata contradicting the model, or ``classes`` of the wrong length.
    """
    metadata = dict(metadata or {})
    name = getattr(model, "model_name", None)
    if name is None:
        raise ConfigError("model was not built with create_model(); its preset name is unknown")
    num_classes = int(getattr(model, "num_classes"))
    weights_path, json_path = _paths(run_dir_or_path)
    input_spec = dict(getattr(model, "input_spec", {}))
    derived = {
        "name": name,
        "num_classes": num_classes,
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "input_spec": input_spec,
        "software_version": __version__,
    }
    _check_caller_keys(metadata, derived)
    classes = metadata.get("classes")

    meta: dict[str, Any] = dict(metadata)
    if meta.get("preprocess") is None:
        meta["preprocess"] = input_spec.get("preprocess")
    meta.update(derived)
    meta.update(
        format=FORMAT,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        weights_file=weights_path.name,
    )
    if classes is not None:
        meta["classes"] = [str(c) for c in classes]
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model metadata is not JSON-serialisable: {exc}") from None
    meta["weights_sha256"] = ""  # filled in once the weights are written
    try:
        meta = RunMetadata.model_validate(meta).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(f"invalid model metadata: {_errors(exc)}") from None

    violation = max_constraint_violation(model)
    if violation > 1e-4:
        log.warning(
            "saving a model whose constrained layers violate the constraint by %.3g "
            "(project_constraints() was not applied after the last step); load_model will "
            "project them, so outputs will differ slightly", violation,
        )
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "medforensics_model": name})
    os.replace(tmp, weights_path)
    meta["weights_sha256"] = file_sha256(weights_path)
    atomic_write_bytes(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    record_files(json_path.parent, [weights_path.name, json_path.name])
    log.info("saved model %s (%d classes) to %s", name, num_classes, weights_path)
    return json_path


def _errors(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``key: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'model.json'}: {e['msg']}"
                     for e in exc.errors())


def _check_safetensors_header(path: Path) -> None:
    """Cheap format check: 8-byte little-endian header length, then a JSON object."""
    with path.open("rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if len(head) < 9:
        raise ModelFileError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n + 8 > size:
        raise ModelFileError(f"{path}: not a safetensors file (bad header)")


def load_model(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved model from safetensors + JSON; returns ``(model, metadata)``.

    The model is rebuilt with ``create_model(name, num_classes, **model_kwargs)``, its weights
    are checked against ``weights_sha256`` and loaded strictly; it is returned in eval mode on
    ``map_location``.

    Args:
        path: run directory, ``model.json`` or ``model.safetensors``.
        map_location: device for the weights (``"cpu"`` by default).

    Raises:
        ModelFileError: refused format (pickle-based suffix), missing/malformed JSON or weights,
            hash mismatch, unknown preset, or state-dict keys/shapes not matching the preset.
        RunIntegrityError: ``num_classes`` or ``input_spec`` sizes out of range.
    """
    weights_path, json_path = _paths(path)
    if not json_path.is_file():
        raise ModelFileError(f"{json_path}: model metadata (model.json) not found")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{json_path}: unreadable model metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{json_path}: not a {FORMAT} metadata file")
    check_values(json_path, meta, MODEL_BOUNDS)
    try:
        meta = RunMetadata.model_validate(meta).model_dump(mode="json")
    except ValidationError as exc:
        raise ModelFileError(f"{json_path}: invalid model metadata: {_errors(exc)}") from None
    weights_path = json_path.parent / meta["weights_file"]
    if not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: weights file not found")
    if file_sha256(weights_path) != meta["weights_sha256"]:
        raise ModelFileError(f"{weights_path}: sha256 does not match model.json (file changed?)")
    _check_safetensors_header(weights_path)

    try:
        kwargs = dict(meta.get("model_kwargs") or {})
        model = create_model(meta["name"], int(meta["num_classes"]), **kwargs)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{json_path}: cannot rebuild model: {exc}") from None
    try:
        state = load_file(str(weights_path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise ModelFileError(f"{weights_path}: unreadable safetensors file: {exc}") from None

    expected = model.state_dict()
    missing_keys = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing_keys or unexpected:
        raise ModelFileError(
            f"{weights_path}: weights do not match preset {meta['name']!r}: "
            f"missing {missing_keys[:5]}, unexpected {unexpected[:5]}"
        )
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ModelFileError(f"{weights_path}: tensor shapes differ from preset for {bad[:5]}")
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    model.eval()
    return model, meta
