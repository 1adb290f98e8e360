"""Trusted run folders: the run manifest ``RUN/run.json`` and the checks made when a run loads.

A verdict is evidence, so every file it depends on is hashed when written and checked when
read. ``run.json`` lists those files of a run folder with their SHA-256::

    {
      "format": "medforensics-run/1",
      "files": {
        "model.json": "<sha256 hex>",
        "model.safetensors": "<sha256 hex>",
        "calibration.json": "<sha256 hex>",
        "fingerprints/fingerprints.json": "<sha256 hex>",
        "fingerprints/fingerprints.safetensors": "<sha256 hex>"
      },
      "software_version": "...",
      "updated": "<UTC ISO 8601>"
    }

Keys of ``files`` are POSIX paths relative to the run folder; absolute paths, ``..`` and
links leading out of the folder are refused. Every writer of a run file calls
:func:`record_files` after writing it (``save_model``, ``calibrate_run``, ``enroll_units``,
the forgery trainer), which re-hashes those entries and rewrites ``run.json`` atomically
(temporary file, then ``os.replace``); :func:`seal_run` adopts every file of an existing run
at once.

:func:`verify_run` is called by every loader of a run (``SourcePredictor.from_run``,
``calibrate_run``, ``UnitFingerprints.load``, ``ForgeryDetector.from_run``). Its
:class:`RunCheck` says ``"verified"`` (every listed file has its hash and every file of
:data:`INFERENCE_FILES` present is listed), ``"modified"`` (a file changed, vanished or
appeared, and the caller allowed it) or ``"unverified"`` (no ``run.json``: a run written
before run manifests; loaded with a warning). The verdicts made with the run carry that word
as ``run_integrity``. Without ``allow_modified`` a modified run is refused with
:class:`~medforensics.errors.RunIntegrityError` naming the file.

Value checks (:func:`check_values` with the ``*_BOUNDS`` tables) are separate from hashing and
never overridable: a side file whose values would make verdicts meaningless or inference
unbounded (a negative or non-finite temperature, a negative fingerprint threshold, millions
of patches) is refused whether or not the run is verified.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medforensics import __version__
from medforensics.common.hashing import file_sha256
from medforensics.common.jsonio import atomic_write_json
from medforensics.errors import ModelFileError, RunIntegrityError

__all__ = [
    "RUN_MANIFEST", "FORMAT", "INFERENCE_FILES", "VERIFIED", "MODIFIED", "UNVERIFIED",
    "Bound", "RunCheck",
    "record_files", "seal_run", "verify_run", "check_values", "check_patch_budget",
    "worst_integrity", "MAX_N_PATCHES", "MAX_PATCH_PIXELS", "CALIBRATION_BOUNDS",
    "FINGERPRINT_BOUNDS", "MODEL_BOUNDS", "FORGERY_BOUNDS",
]

log = logging.getLogger(__name__)

RUN_MANIFEST = "run.json"
FORMAT = "medforensics-run/1"
VERIFIED, MODIFIED, UNVERIFIED = "verified", "modified", "unverified"

#: Files a loader reads when present. On a run with a manifest each of them must be listed:
#: a file added after the run was written (e.g. a hand-made calibration.json) counts as a
#: modification. A writer of a new kind of side file adds its name here and calls
#: :func:`record_files` after writing it.
INFERENCE_FILES: tuple[str, ...] = (
    "model.json",
    "model.safetensors",
    "calibration.json",
    "openset.safetensors",
    "combiner.safetensors",
    "split.json",
    "fingerprints/fingerprints.json",
    "fingerprints/fingerprints.safetensors",
)

#: Most inference patches per image. 4096 patches of the default 64-px side cover 16.8 M
#: pixels, a 4096 x 4096 image tiled without overlap, so more patches cannot add evidence
#: for any image the patch preset is meant for; the runs here use 8 to 64.
MAX_N_PATCHES = 4096
#: Most pixels in one image's stack of patches (``n_patches * patch**2``): 2**26 float32
#: values are 256 MiB, the memory bound of one image's model input whatever the patch side.
MAX_PATCH_PIXELS = 2**26

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Bound:
    """Allowed values of one number in a JSON side file: finite, ``lo <= v <= hi``, and an
    integer (JSON integer, not ``1e7``) when ``integer``; ``null`` only when ``nullable``."""

    lo: float
    hi: float
    integer: bool = False
    nullable: bool = False


#: ``calibration.json`` (written by ``calibrate_run``). A temperature outside [0.01, 100]
#: either flattens every probability below the UNKNOWN threshold or makes any logit
#: difference a certainty; the fit itself stays within [0.05, 20]. The feature threshold is
#: a distance (about 1 for a typical known patch): negative would reject everything, a huge
#: one would accept everything; ``null`` means none could be set (then nothing is named by
#: the classifier alone).
CALIBRATION_BOUNDS: dict[str, Bound] = {
    "temperature": Bound(0.01, 100.0),
    "unknown_threshold": Bound(0.0, 1.0),
    "target_false_unknown": Bound(0.0, 1.0),
    "n_patches": Bound(1, MAX_N_PATCHES, integer=True),
    "feature_threshold": Bound(0.0, 1e6, nullable=True),
}
#: ``fingerprints/fingerprints.json``: the decision threshold on PCE (or NCC) must be a
#: finite non-negative score; the residual and peak-search settings stay small.
FINGERPRINT_BOUNDS: dict[str, Bound] = {
    "config.threshold": Bound(0.0, math.inf),
    "config.levels": Bound(1, 8, integer=True),
    "config.max_shift": Bound(0, 64, integer=True),
    "config.neighborhood": Bound(1, 255, integer=True),
    "config.window": Bound(0, 65536, integer=True),
}
#: ``model.json`` of a model saved with ``save_model``: input sizes bound the memory of one
#: forward pass.
MODEL_BOUNDS: dict[str, Bound] = {
    "num_classes": Bound(1, 100_000, integer=True),
    "input_spec.patch": Bound(8, 1024, integer=True),
    "input_spec.size": Bound(8, 4096, integer=True),
    "input_spec.channels": Bound(1, 4, integer=True),
}
#: ``model.json`` of a forgery run (both presets).
FORGERY_BOUNDS: dict[str, Bound] = {
    "threshold": Bound(0.0, 1.0),
    "pixel_grid": Bound(1, 64, integer=True),
    "fingerprint_stride": Bound(1, 1024, integer=True),
    "fingerprint_min_coverage": Bound(0.0, 1.0),
    "input_scale": Bound(1e-6, 1.0),
}

_RANK = {VERIFIED: 0, UNVERIFIED: 1, MODIFIED: 2}


def worst_integrity(*statuses: str | None) -> str | None:
    """The least trustworthy of ``statuses`` (modified > unverified > verified); None when
    every one is None (no run involved)."""
    given = [s for s in statuses if s is not None]
    return max(given, key=lambda s: _RANK[s]) if given else None


@dataclass
class RunCheck:
    """Outcome of :func:`verify_run`.

    Attributes:
        run_dir: the run folder.
        status: ``"verified"``, ``"modified"`` or ``"unverified"``.
        problems: ``(file, what is wrong)`` of every failed check (empty unless modified).
        files: the manifest's ``name -> sha256`` (empty when unverified).
    """

    run_dir: Path
    status: str
    problems: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------ writing



def _safe_name(run: Path, name: str, where: object) -> Path:
    """``run / name`` after checking that ``name`` stays inside ``run`` (never overridable).

    Raises:
        RunIntegrityError: absolute path, ``..``, a backslash or drive, or a link whose target
            lies outside the run folder.
    """
    pure = PurePosixPath(name)
    if (not name or "\\" in name or ":" in name or pure.is_absolute()
            or any(part in ("..", "") for part in name.split("/"))):
        raise RunIntegrityError(where, f"path {name!r} points outside the run folder "
                                       "(absolute paths and '..' are refused)")
    path = run.joinpath(*pure.parts)
    if path.exists() or path.is_symlink():
        try:
            inside = path.resolve().is_relative_to(run.resolve())
        except (OSError, RuntimeError):  # unreadable or a link loop
            inside = False
        if not inside:
            raise RunIntegrityError(where, f"{name!r} is a link leading outside the run folder")
    return path


def _read_manifest(run: Path) -> dict[str, str] | None:
    """``files`` of ``RUN/run.json``, None when there is none.

    Raises:
        RunIntegrityError: unreadable or malformed manifest (overridable), unsafe names (not).
    """
    mpath = run / RUN_MANIFEST
    if not mpath.is_file():
        return None
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunIntegrityError(mpath, f"unreadable run manifest ({exc})",
                                overridable=True) from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(files, dict):
        raise RunIntegrityError(mpath, f"not a {FORMAT} run manifest", overridable=True)
    for name, sha in files.items():
        _safe_name(run, str(name), mpath)
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise RunIntegrityError(mpath, f"entry {name!r} has no sha256 hex digest",
                                    overridable=True)
    return {str(k): v for k, v in files.items()}


def _write_manifest(run: Path, files: Mapping[str, str]) -> Path:
    path = run / RUN_MANIFEST
    atomic_write_json(path, {
        "format": FORMAT,
        "files": dict(sorted(files.items())),
        "software_version": __version__,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }, indent=2)
    return path


def record_files(run_dir: str | os.PathLike[str], names: Iterable[str]) -> Path | None:
    """Hash ``names`` (paths relative to ``run_dir``) into ``RUN/run.json`` after writing them.

    Entries of files that no longer exist are dropped; other entries are kept as they are.
    A run without a manifest gets one, unless it already holds files of
    :data:`INFERENCE_FILES` that were written before (a run older than run manifests): those
    cannot be vouched for here, so the run stays unverified (logged) until :func:`seal_run`.

    Args:
        run_dir: the run folder.
        names: files just written, relative POSIX paths.

    Returns:
        The manifest path, or None when the run stays without one.

    Raises:
        RunIntegrityError: a name, or a name in the existing manifest, leading outside the run.
    """
    run = Path(run_dir)
    names = [str(n) for n in names]
    paths = {n: _safe_name(run, n, run / RUN_MANIFEST) for n in names}
    try:
        files = _read_manifest(run)
    except RunIntegrityError as exc:
        if not exc.overridable:
            raise
        log.warning("%s: not updated (%s); the run stays refused (or 'modified') until "
                    "`medforensics seal %s`", exc.path, exc.problem, run)
        return None
    if files is None:
        older = [n for n in INFERENCE_FILES if n not in paths and (run / n).is_file()]
        if older:
            log.warning("%s has no run manifest and holds files written before (%s): it stays "
                        "unverified; check it and run `medforensics seal %s` to vouch for "
                        "it", run, ", ".join(older), run)
            return None
        files = {}
    for name, path in paths.items():
        if path.is_file():
            files[name] = file_sha256(path)
        else:
            files.pop(name, None)
    return _write_manifest(run, files)


def seal_run(run_dir: str | os.PathLike[str]) -> Path:
    """Hash every present file of :data:`INFERENCE_FILES` (and every file already listed)
    into ``RUN/run.json``: the caller vouches for the run as it is now.

    Meant for runs written before run manifests, after their files have been checked.

    Raises:
        ModelFileError: ``run_dir`` is not a folder with a model.
    """
    run = Path(run_dir)
    if not (run / "model.json").is_file():
        raise ModelFileError(f"{run}: not a run folder (model.json not found)")
    try:
        listed = _read_manifest(run) or {}
    except RunIntegrityError:
        listed = {}
    names = set(listed) | {n for n in INFERENCE_FILES if (run / n).is_file()}
    files = {n: file_sha256(_safe_name(run, n, run / RUN_MANIFEST))
             for n in sorted(names) if (run / n).is_file()}
    log.info("sealed %s: %d files", run, len(files))
    return _write_manifest(run, files)


# ------------------------------------------------------------------------------ checking


def verify_run(run_dir: str | os.PathLike[str], *, allow_modified: bool = False,
               subdir: str | None = None) -> RunCheck:
    """Check a run folder against its manifest before any of its files is read.

    Args:
        run_dir: the run folder.
        allow_modified: load a run whose files differ from the manifest (logged; status
            ``"modified"``) instead of refusing it.
        subdir: check only the entries under this sub-folder (e.g. ``"fingerprints"``).

    Returns:
        :class:`RunCheck`. A run without ``run.json`` is ``"unverified"`` (warning logged).

    Raises:
        ModelFileError: ``run_dir`` is not a folder.
        RunIntegrityError: a listed file is missing or changed, a file of
            :data:`INFERENCE_FILES` is present but not listed, or the manifest is malformed
            (unless ``allow_modified``); a listed path leading outside the folder (always).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ModelFileError(f"{run}: run folder not found")

    def wanted(name: str) -> bool:
        return subdir is None or name.startswith(subdir.rstrip("/") + "/")

    for name in INFERENCE_FILES:  # links out of the folder, listed or not, are never followed
        if wanted(name) and ((run / name).exists() or (run / name).is_symlink()):
            _safe_name(run, name, run / name)
    try:
        files = _read_manifest(run)
    except RunIntegrityError as exc:
        if not (exc.overridable and allow_modified):
            raise
        log.warning("loading a run whose manifest is unusable: %s", exc.problem)
        return RunCheck(run, MODIFIED, [(RUN_MANIFEST, exc.problem)])
    if files is None:
        if subdir is None:
            log.warning("%s has no run manifest (%s): its files cannot be checked; verdicts "
                        "made with it say run_integrity 'unverified'. Check the run and "
                        "`medforensics seal` it, or train it again.",
                        run, RUN_MANIFEST)
        return RunCheck(run, UNVERIFIED)
    problems: list[tuple[str, str]] = []
    for name, sha in sorted(files.items()):
        if not wanted(name):
            continue
        path = _safe_name(run, name, run / RUN_MANIFEST)
        if not path.is_file():
            problems.append((name, "listed in run.json but missing"))
        elif file_sha256(path) != sha:
            problems.append((name, "changed since the run was written (sha256 differs "
                                   "from run.json)"))
    for name in INFERENCE_FILES:
        if wanted(name) and name not in files and (run / name).is_file():
            problems.append((name, "not listed in run.json (added after the run was "
                                   "written)"))
    if not problems:
        return RunCheck(run, VERIFIED, [], files)
    if not allow_modified:
        name, what = problems[0]
        more = "".join(f"; also {n}: {w}" for n, w in problems[1:])
        raise RunIntegrityError(run / name, what, overridable=True, more=more)
    for name, what in problems:
        log.warning("loading a modified run (allowed): %s: %s", run / name, what)
    return RunCheck(run, MODIFIED, problems, files)


_MISSING = object()


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def check_values(path: str | os.PathLike[str], data: Any,
                 bounds: Mapping[str, Bound]) -> None:
    """Check the numbers of a JSON side file against ``bounds`` (never overridable).

    Keys absent from ``data`` are not checked (the loader's default applies); a present key
    must hold a finite number in its range (an integer where required; ``true``/``null``
    and strings are refused).

    Args:
        path: the file (named in the error).
        data: its parsed content.
        bounds: dotted key (``"config.threshold"``) -> :class:`Bound`.

    Raises:
        RunIntegrityError: not a JSON object, or a value of the wrong type or out of range.
    """
    if not isinstance(data, Mapping):
        raise RunIntegrityError(path, "must hold a JSON object")
    for key, b in bounds.items():
        v = _lookup(data, key)
        if v is _MISSING or (v is None and b.nullable):
            continue
        kind = "an integer" if b.integer else "a finite number"
        rng = f"in [{b.lo:g}, {b.hi:g}]" if math.isfinite(b.hi) else f">= {b.lo:g}"
        ok = (isinstance(v, int) if b.integer else isinstance(v, (int, float)))
        ok = ok and not isinstance(v, bool) and math.isfinite(v) and b.lo <= v <= b.hi
        if not ok:
            raise RunIntegrityError(path, f"{key} must be {kind} {rng}, got {v!r} (refused "
                                          "whatever the run manifest says)")


def check_patch_budget(path: str | os.PathLike[str], n_patches: int, patch: int) -> None:
    """Refuse ``n_patches`` patches of side ``patch`` beyond :data:`MAX_PATCH_PIXELS`.

    Raises:
        RunIntegrityError: ``n_patches * patch**2 > MAX_PATCH_PIXELS`` (names ``path``).
    """
    if int(n_patches) * int(patch) ** 2 > MAX_PATCH_PIXELS:
        raise RunIntegrityError(path, f"n_patches {n_patches} of {patch} px exceed "
                                      f"{MAX_PATCH_PIXELS} pixels per image "
                                      f"(at most {MAX_PATCH_PIXELS // int(patch) ** 2})")
