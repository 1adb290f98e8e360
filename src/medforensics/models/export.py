"""Export a trained model to ONNX, with its metadata, and check it against PyTorch.

:func:`export_onnx` loads a run's model (:func:`medforensics.models.io.load_model`: safetensors
+ JSON, never a pickle), exports it with ``torch.onnx.export`` and writes a single ``.onnx``
file whose graph is:

* input ``pixels``: float32 (N, C, H, W), N dynamic. For the ``patch`` preset (global average
  pooling) H and W are dynamic too (any side >= 16); the paper presets and ``ela-cnn`` take
  their fixed ``input_spec`` size.
* output ``logits``: float32 (N, num_classes), raw logits (softmax gives probabilities). For
  ``patch`` these are per-patch logits; an image's score is the mean over its patches of
  ``log_softmax(logits)`` (:func:`medforensics.models.patch.aggregate_patch_logprobs`), which
  the caller does, as in the Python API.

Preprocessing is not in the graph; the ``metadata_props`` of the ONNX model say what the input
must be (keys: ``medforensics.format``, ``preset``, ``classes`` (JSON list), ``num_classes``,
``label_column``, ``task``, ``input_name``, ``output_name``, ``input_spec`` (JSON: layout,
dtype, shape with symbolic axes, the model's spec), ``preprocess``,
``preprocessing_description``, ``postprocess``, ``model_kwargs`` (JSON), ``weights_sha256`` of
the source safetensors, ``software_version``, ``torch_version``, ``exporter``, ``opset``).
Read them back with :func:`read_onnx_metadata`.

Exporters: ``"dynamo"`` (``torch.export``-based, the default of torch >= 2.9; needs
``onnxscript``) or ``"torchscript"`` (the legacy tracer, deprecated by PyTorch but faster to
run and still working for every preset here).

Parity: :func:`check_parity` runs the exported file with onnxruntime (CPU) on seeded random
inputs in the preset's value range, at several batch sizes (and, for ``patch``, odd spatial
sizes), and compares the logits with PyTorch's. It passes when the largest absolute logit
difference is at most ``tolerance * max(1, max |logit|)`` (default ``tolerance`` 1e-4, i.e. an
absolute 1e-4 for logits up to 1 and a relative 1e-4 beyond) and the arg-max agrees everywhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medforensics import __version__
from medforensics.errors import ConfigError, ModelFileError
from medforensics.models.io import META_NAME, WEIGHTS_NAME, load_model
from medforensics.models.runfiles import verify_run

log = logging.getLogger(__name__)

__all__ = [
    "ONNX_FORMAT",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportResult",
    "ParityReport",
    "export_onnx",
    "export_model",
    "check_parity",
    "read_onnx_metadata",
    "parity_shapes",
    "random_inputs",
]

ONNX_FORMAT = "medforensics-onnx/1"
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
EXPORTERS = ("dynamo", "torchscript")
MIN_OPSET = 17
DEFAULT_OPSET = 18
_MIN_SIDE = 16  # smallest patch side the patch model accepts


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on the same random inputs.

    Attributes:
        shapes: input shapes tried, each (N, C, H, W).
        max_abs_diff: largest |onnx - torch| logit difference over all inputs.
        max_abs_logit: largest |torch logit| (the scale of the comparison).
        allowed: the bound used: ``tolerance * max(1, max_abs_logit)``.
        argmax_agreement: share of inputs whose arg-max class agrees (1.0 expected).
        tolerance: the tolerance asked for.
        passed: ``max_abs_diff <= allowed`` and ``argmax_agreement == 1``.
    """

    shapes: list[tuple[int, ...]]
    max_abs_diff: float
    max_abs_logit: float
    allowed: float
    argmax_agreement: float
    tolerance: float
    passed: bool


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        preset: model preset name.
        exporter: ``dynamo`` or ``torchscript``.
        opset: ONNX opset of the default domain.
        dynamic_axes: input axis index -> symbolic name.
        metadata: the metadata_props written (str -> str).
        parity: the parity check (None when not run).
        seconds: export wall time (without the parity check).
        bytes: file size.
    """

    path: Path
    preset: str
    exporter: str
    opset: int
    dynamic_axes: dict[int, str]
    metadata: dict[str, str] = field(default_factory=dict)
    parity: ParityReport | None = None
    seconds: float = 0.0
    bytes: int = 0


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the 'onnx' package: pip install "
                          "'medforensics[export]'") from None
    return onnx


def _require_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("the parity check needs 'onnxruntime': pip install "
                          "'medforensics[export]' (or pass check=False / --no-check)") from None
    return onnxruntime


def _spec(model: nn.Module) -> dict[str, Any]:
    spec = dict(getattr(model, "input_spec", {}) or {})
    if not spec:
        raise ConfigError("model has no input_spec; was it built with create_model()?")
    return spec


def _is_patch_like(spec: dict[str, Any]) -> bool:
    """Fully convolutional with global pooling: spatial axes may be dynamic."""
    return "patch" in spec and "size" not in spec


def _example_shape(spec: dict[str, Any], batch: int = 2) -> tuple[int, int, int, int]:
    side = int(spec.get("size") or spec.get("patch") or 0)
    if side < 1:
        raise ConfigError(f"input_spec {spec!r} has neither 'size' nor 'patch'")
    return batch, int(spec.get("channels", 1)), side, side


def parity_shapes(model: nn.Module) -> list[tuple[int, int, int, int]]:
    """Input shapes for the parity check: batch 1 and 3 (the export used 2) and, for the
    ``patch``-like models, odd non-square sizes (to exercise the dynamic spatial axes)."""
    spec = _spec(model)
    _, c, s, _ = _example_shape(spec)
    shapes = [(1, c, s, s), (3, c, s, s)]
    if _is_patch_like(spec):
        shapes += [(2, c, s + 33, s + 17), (1, c, max(_MIN_SIDE, s // 2) + 1, 2 * s)]
    return shapes


def random_inputs(model: nn.Module, shape: Sequence[int], rng: np.random.Generator
                  ) -> np.ndarray:
    """Seeded random float32 input in the range the preset sees in use.

    ``native`` (patch): a 12-bit-like level 200..3800 per item plus smooth gradient and
    Gaussian noise (sigma 5..40), rounded to integers. Paper presets and ELA: integers
    0..255. Anything else: standard normal.

    Args:
        model: the model (its ``input_spec["preprocess"]`` decides the range).
        shape: (N, C, H, W).
        rng: generator.

    Returns:
        float32 array of ``shape``.
    """
    n, c, h, w = (int(v) for v in shape)
    pre = _spec(model).get("preprocess")
    if pre == "native":
        level = rng.uniform(200, 3800, size=(n, 1, 1, 1))
        sigma = rng.uniform(5, 40, size=(n, 1, 1, 1))
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        slope = rng.normal(0, 100, size=(n, 1, 2))
        ramp = slope[..., 0, None, None] * yy + slope[..., 1, None, None] * xx
        x = level + ramp + rng.normal(0, 1, size=(n, c, h, w)) * sigma
        return np.rint(np.clip(x, 0, 4095)).astype(np.float32)
    if pre in ("paper-8bit", "ela"):
        return rng.integers(0, 256, size=(n, c, h, w)).astype(np.float32)
    return rng.standard_normal((n, c, h, w)).astype(np.float32)


def _export(model: nn.Module, path: Path, example: torch.Tensor, dynamic: dict[int, str],
            opset: int, exporter: str) -> None:
    """Run torch.onnx.export into ``path`` (one self-contained file)."""
    import warnings

    if exporter == "dynamo":
        shapes = {
            "x": {axis: torch.export.Dim(name, min=1 if axis == 0 else _MIN_SIDE)
                  for axis, name in dynamic.items()}
        }
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                model, (example,), None, dynamo=True, dynamic_shapes=shapes,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                optimize=True, verbose=False,
            )
        if prog is None:
            raise ConfigError("torch.onnx.export(dynamo=True) returned no program")
        prog.save(str(path), external_data=False)
    else:
        axes = {INPUT_NAME: dict(dynamic), OUTPUT_NAME: {0: dynamic.get(0, "batch")}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                do_constant_folding=True,
            )


def _default_opset(onnx_model: Any) -> int:
    for imp in onnx_model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return -1


def export_model(
    model: nn.Module,
    out: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    check: bool = True,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Export an in-memory model (built by ``create_model``) to ONNX; see :func:`export_onnx`.

    Args:
        model: the model; exported in eval mode on CPU (the caller's model is not changed).
        out: ``.onnx`` path to write (parent directories are created).
        metadata: the run's ``model.json`` metadata (classes, label_column, ...), or None.
        opset: ONNX opset (>= 17).
        exporter: ``dynamo`` or ``torchscript``.
        check: run :func:`check_parity` after exporting.
        tolerance: parity tolerance (see module docstring).
        seed: seed of the parity inputs.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ConfigError: bad opset/exporter/out path, onnx or onnxruntime missing, export failed,
            or the parity check failed (the file is removed then).
    """
    import copy

    onnx = _require_onnx()
    path = _checked_target(out, exporter, opset)
    meta = dict(metadata or {})
    spec = _spec(model)
    net = copy.deepcopy(model).to("cpu").eval()
    name = str(getattr(model, "model_name", meta.get("name") or type(model).__name__))
    num_classes = int(getattr(model, "num_classes", meta.get("num_classes") or 0))
    example_shape = _example_shape(spec)
    dynamic = {0: "batch"}
    if _is_patch_like(spec):
        dynamic.update({2: "height", 3: "width"})
    example = torch.from_numpy(random_inputs(net, example_shape, np.random.default_rng(seed)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    seconds = _run_exporter(net, tmp, example, dynamic, int(opset), exporter, name)

    onnx_model = onnx.load(str(tmp))
    got_opset = _default_opset(onnx_model)
    props = _metadata_props(model, meta, spec, name=name, num_classes=num_classes,
                            shape=[dynamic.get(i, int(v)) for i, v in enumerate(example_shape)],
                            dynamic=dynamic, exporter=exporter, opset=got_opset)
    _write_described(onnx, onnx_model, tmp, props,
                     f"medforensics {name} model ({num_classes} classes); see metadata_props")
    parity = _parity_or_remove(net, tmp, tolerance=tolerance, seed=seed) if check else None
    os.replace(tmp, path)
    res = ExportResult(path=path, preset=name, exporter=exporter, opset=got_opset,
                       dynamic_axes=dynamic, metadata=props, parity=parity, seconds=seconds,
                       bytes=path.stat().st_size)
    log.info("exported %s to %s (%s exporter, opset %d, %.1f s, %.1f MB)%s", name, path,
             exporter, got_opset, seconds, res.bytes / 1e6,
             f"; parity max |diff| {parity.max_abs_diff:.2e}" if parity else "")
    return res


def _checked_target(out: str | os.PathLike[str], exporter: str, opset: int) -> Path:
    """The ``.onnx`` path to write, refused before any work when the exporter, the opset or
    the path cannot give a usable file.

    Raises:
        ConfigError: unknown exporter, opset below :data:`MIN_OPSET`, a path that is not a
            ``.onnx`` file name.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if int(opset) < MIN_OPSET:
        raise ConfigError(f"opset must be >= {MIN_OPSET}, got {opset}")
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{path}: the output file name must end in .onnx")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give a file name ending in .onnx")
    return path


def _run_exporter(net: nn.Module, tmp: Path, example: torch.Tensor, dynamic: dict[int, str],
                  opset: int, exporter: str, name: str) -> float:
    """Export ``net`` into ``tmp`` and return the seconds it took; on failure ``tmp`` is
    removed and the error names the other exporter to try.

    Raises:
        ConfigError: the export failed.
    """
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            _export(net, tmp, example, dynamic, opset, exporter)
    except ConfigError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
        tmp.unlink(missing_ok=True)
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ConfigError(f"ONNX export of {name!r} with the {exporter} exporter failed: "
                          f"{type(exc).__name__}: {str(exc)[:500]} (try --exporter {other})"
                          ) from None
    return time.perf_counter() - t0


def _metadata_props(model: nn.Module, meta: dict[str, Any], spec: dict[str, Any], *,
                    name: str, num_classes: int, shape: list[Any], dynamic: dict[int, str],
                    exporter: str, opset: int) -> dict[str, str]:
    """The file's ``metadata_props``: everything a consumer needs to feed the model and read
    its output (classes, input layout and preprocessing, postprocessing, provenance), so the
    ONNX file can be used without the run directory."""
    axis_names = {0: "N", 1: "C", 2: "H", 3: "W"}
    input_spec = {
        "name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "shape": shape,
        "dynamic_axes": {axis_names[i]: n for i, n in dynamic.items()},
        "min_side": _MIN_SIDE if _is_patch_like(spec) else None, "model": spec,
    }
    postprocess = (
        "per-patch logits; image score = mean over patches of log_softmax(logits) "
        "(medforensics.models.patch.aggregate_patch_logprobs)" if name == "patch"
        else "softmax(logits) gives class probabilities"
    )
    classes = meta.get("classes")
    return {
        "medforensics.format": ONNX_FORMAT,
        "preset": name,
        "classes": json.dumps(list(classes) if classes is not None else None),
        "num_classes": str(num_classes),
        "label_column": str(meta.get("label_column") or ""),
        "task": str(meta.get("task") or ""),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_spec": json.dumps(input_spec, sort_keys=True),
        "preprocess": str(meta.get("preprocess") or spec.get("preprocess") or ""),
        "preprocessing_description": str(meta.get("preprocessing_description") or ""),
        "postprocess": postprocess,
        "model_kwargs": json.dumps(meta.get("model_kwargs",
                                            getattr(model, "model_kwargs", {})) or {},
                                   sort_keys=True),
        "weights_sha256": str(meta.get("weights_sha256") or ""),
        "software_version": str(meta.get("software_version") or _version()),
        "torch_version": torch.__version__,
        "exporter": exporter,
        "opset": str(opset),
    }


def _write_described(onnx: Any, onnx_model: Any, tmp: Path, props: dict[str, str],
                     doc: str) -> None:
    """Replace the model's metadata with ``props`` and ``doc``, check it and save it to
    ``tmp``; an invalid model removes ``tmp``.

    Raises:
        ConfigError: the ONNX checker refused the model.
    """
    del onnx_model.metadata_props[:]
    for k, v in props.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx_model.doc_string = doc
    try:
        onnx.checker.check_model(onnx_model)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError subclasses
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"exported ONNX model is invalid: {exc}") from None
    onnx.save(onnx_model, str(tmp))


def _parity_or_remove(net: nn.Module, tmp: Path, *, tolerance: float,
                      seed: int) -> ParityReport:
    """:func:`check_parity` of the written file; ``tmp`` is removed when it fails, so a model
    that computes something else is never left behind.

    Raises:
        ConfigError: the outputs differ beyond ``tolerance`` or the arg-max disagrees.
    """
    try:
        parity = check_parity(net, tmp, tolerance=tolerance, seed=seed)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    if not parity.passed:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"ONNX parity check failed: max |logit diff| {parity.max_abs_diff:.3g} > "
            f"{parity.allowed:.3g} or arg-max agreement {parity.argmax_agreement:.3f} < 1; "
            "nothing written"
        )
    return parity


def _version() -> str:
    return __version__


def export_onnx(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    check: bool = True,
    tolerance: float = 1e-4,
    seed: int = 0,
    allow_modified: bool = False,
) -> ExportResult:
    """Export the model of a run directory to one ONNX file (see module docstring).

    A run directory (or its ``model.json`` / ``model.safetensors``) is first checked against
    its run manifest (:func:`medforensics.models.runfiles.verify_run`).

    Args:
        run: run directory, ``model.json`` or ``model.safetensors`` (any preset: ``patch``,
            ``deep-rsi``, ``deepmammo``, ``ela-cnn``).
        out: ``.onnx`` path to write.
        opset: ONNX opset, >= 17 (default 18).
        exporter: ``dynamo`` (default) or ``torchscript``.
        check: compare onnxruntime with PyTorch on random inputs (default on); on failure
            nothing is written.
        tolerance: parity tolerance (module docstring).
        seed: seed of the example and parity inputs.
        allow_modified: export from a run whose files differ from its run manifest (logged)
            instead of refusing it.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ModelFileError: the run has no loadable model.
        RunIntegrityError: a run file changed since it was written (unless
            ``allow_modified``) or a value out of range.
        ConfigError: see :func:`export_model`.
    """
    p = Path(run)
    if p.is_dir():
        verify_run(p, allow_modified=allow_modified)
    elif p.name in (META_NAME, WEIGHTS_NAME) and p.parent.is_dir():
        verify_run(p.parent, allow_modified=allow_modified)

    model, meta = load_model(run, map_location="cpu")
    return export_model(model, out, meta, opset=opset, exporter=exporter, check=check,
                        tolerance=tolerance, seed=seed)


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    *,
    shapes: Sequence[Sequence[int]] | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """Compare onnxruntime (CPU) with PyTorch logits on seeded random inputs.

    Args:
        model: the PyTorch model (evaluated in eval mode, under ``torch.no_grad``).
        onnx_path: exported file.
        shapes: input shapes (default :func:`parity_shapes`).
        tolerance: see module docstring.
        seed: seed of the inputs (:func:`random_inputs`).

    Returns:
        A :class:`ParityReport`.

    Raises:
        ConfigError: onnxruntime missing, or the session cannot run an input.
    """
    ort = _require_ort()
    net = model.eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph
        raise ModelFileError(f"{onnx_path}: onnxruntime cannot load it: {exc}") from None
    in_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(v) for v in s) for s in (shapes or parity_shapes(net))]
    max_diff = 0.0
    max_logit = 0.0
    agree = 0
    total = 0
    for shape in shapes:
        x = random_inputs(net, shape, rng)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        try:
            got = sess.run(None, {in_name: x})[0]
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"onnxruntime failed on input {shape}: {exc}") from None
        if got.shape != ref.shape:
            raise ConfigError(f"onnxruntime output {got.shape} != torch {ref.shape} for {shape}")
        max_diff = max(max_diff, float(np.max(np.abs(got.astype(np.float64) - ref))))
        max_logit = max(max_logit, float(np.max(np.abs(ref))))
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        total += shape[0]
    allowed = float(tolerance) * max(1.0, max_logit)
    agreement = agree / max(total, 1)
    return ParityReport(shapes=list(shapes), max_abs_diff=max_diff, max_abs_logit=max_logit,
                        allowed=allowed, argmax_agreement=agreement, tolerance=float(tolerance),
                        passed=bool(max_diff <= allowed and agreement == 1.0))


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The medforensics metadata of an exported file, JSON values decoded.

    Returns:
        dict of the metadata_props; ``classes``, ``input_spec`` and ``model_kwargs`` decoded
        from JSON, ``num_classes`` and ``opset`` as int.

    Raises:
        ModelFileError: the file is not an ONNX model or not exported by medforensics.
    """
    onnx = _require_onnx()
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, OSError
        raise ModelFileError(f"{path}: not a readable ONNX file: {exc}") from None
    props: dict[str, Any] = {p.key: p.value for p in m.metadata_props}
    if props.get("medforensics.format") != ONNX_FORMAT:
        raise ModelFileError(f"{path}: not exported by medforensics (no {ONNX_FORMAT} metadata)")
    for k in ("classes", "input_spec", "model_kwargs"):
        props[k] = json.loads(props[k])
    for k in ("num_classes", "opset"):
        props[k] = int(props[k])
    return props
