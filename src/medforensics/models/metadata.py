"""The typed record of a trained model: ``model.json`` (:class:`RunMetadata`).

One pydantic model describes what :func:`medforensics.models.io.save_model` writes and
:func:`~medforensics.models.io.load_model` accepts. It checks the structure (required keys,
types, the format tag, a bare weights file name); the numeric ranges of the same file are
checked by :func:`medforensics.models.runfiles.check_values` with ``MODEL_BOUNDS``, before this
model sees the data, and are not repeated here.

The training manifest's hash has one key, ``training_manifest_sha256``. Source runs written
before it was unified stored it as ``manifest_sha256``; that key is accepted on load and moved
to ``training_manifest_sha256`` (a run holding both keeps the new one).

Keys beyond the fields below (``preset``, ``epochs``, ``best_epoch``, ``threshold``, ...) are
kept as given (``extra="allow"``): a trainer adds what describes its run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, field_validator, model_validator

__all__ = ["RunMetadata", "FORMAT", "LEGACY_MANIFEST_KEY", "upgrade_legacy_keys"]

FORMAT = "medforensics-model/1"
#: The old name of ``training_manifest_sha256`` (source runs), accepted on load only.
LEGACY_MANIFEST_KEY = "manifest_sha256"


def upgrade_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` (parsed ``model.json``) with old key names replaced by current ones.

    ``manifest_sha256`` becomes ``training_manifest_sha256`` (kept when both are present and
    the new one is set). For readers of ``model.json`` that take any JSON object (e.g. a
    forgery ``cues`` run); :class:`RunMetadata` applies it on validation.
    """
    data = dict(data)
    if LEGACY_MANIFEST_KEY in data:
        old = data.pop(LEGACY_MANIFEST_KEY)
        if data.get("training_manifest_sha256") is None:
            data["training_manifest_sha256"] = old
    return data


class RunMetadata(BaseModel):
    """``model.json``: how to rebuild a model and what it was trained on.

    Attributes:
        format: ``"medforensics-model/1"``.
        name: registry name for :func:`medforensics.models.registry.create_model`.
        num_classes: outputs of the model (range: ``MODEL_BOUNDS``).
        model_kwargs: keyword arguments for ``create_model``.
        input_spec: the model's input spec (``size``/``patch``/``channels``/``preprocess``).
        weights_file: bare ``.safetensors`` file name next to ``model.json``.
        weights_sha256: SHA-256 (hex) of the weights file, checked on load.
        software_version: medforensics version that wrote the file.
        created: UTC ISO 8601 time of writing.
        classes: class names, index = logit index.
        preprocess: preprocessing name (default: ``input_spec["preprocess"]``).
        label_column: manifest column the classes come from (source models).
        training_manifest_sha256: SHA-256 of the training manifest
            (:func:`medforensics.common.hashing.manifest_sha256`).
        seed: training seed.
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format: Literal["medforensics-model/1"]
    name: str
    num_classes: StrictInt
    model_kwargs: dict[str, Any] = {}
    input_spec: dict[str, Any] = {}
    weights_file: str
    weights_sha256: str
    software_version: str | None = None
    created: str | None = None
    classes: list[str] | None = None
    preprocess: str | None = None
    label_column: str | None = None
    training_manifest_sha256: str | None = None
    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_manifest_key(cls, data: Any) -> Any:
        """Move the old ``manifest_sha256`` key to ``training_manifest_sha256``."""
        return upgrade_legacy_keys(data) if isinstance(data, dict) else data

    @field_validator("weights_file")
    @classmethod
    def _bare_safetensors_name(cls, value: str) -> str:
        """The weights live next to ``model.json``: a bare ``*.safetensors`` name only."""
        if Path(value).name != value or "\\" in value or not value.endswith(".safetensors"):
            raise ValueError(f"weights_file must be a .safetensors file name, got {value!r}")
        return value
