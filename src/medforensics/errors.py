"""Exception classes. Every failure a user can meet has its own class and an actionable message.

All exceptions derive from :class:`MedForensicsError`. Reader failures derive from
:class:`ReadError` and carry a short machine-readable ``reason`` (used as the ``status`` /
exclusion reason in manifests and as the error code of the web service).
"""

from __future__ import annotations


class MedForensicsError(Exception):
    """Base class of every error raised by medforensics."""


class ReadError(MedForensicsError):
    """An image file could not be read.

    Attributes:
        reason: short machine-readable reason, e.g. ``"not-dicom"``.
        path: the file concerned (may be ``None`` for in-memory data).
    """

    reason = "unreadable"

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class NotDicomError(ReadError):
    """The file is neither DICOM nor a supported raster format (PNG/JPEG/TIFF)."""

    reason = "not-an-image-file"


class MissingFileMetaError(ReadError):
    """DICOM without preamble/file meta (ACR-NEMA style); readable only with ``force=True``."""

    reason = "no-file-meta"


class NoPixelDataError(ReadError):
    """The DICOM data set has no Pixel Data element."""

    reason = "no-pixel-data"


class TruncatedPixelDataError(ReadError):
    """Pixel Data is shorter than Rows x Columns x Samples x Frames x BitsAllocated requires."""

    reason = "truncated-pixel-data"


class MissingDecoderError(ReadError):
    """The transfer syntax is compressed and no installed plugin can decode it."""

    reason = "no-decoder"


class DecodeError(ReadError):
    """A decoder was found but failed on the (corrupt or non-conformant) compressed stream."""

    reason = "decode-failed"


class UnsupportedPhotometricError(ReadError):
    """Colour or otherwise unsupported Photometric Interpretation for forensic analysis."""

    reason = "unsupported-photometric"


class ImageTooLargeError(ReadError):
    """Declared dimensions are absurd (decompression-bomb guard)."""

    reason = "too-large"


class NotAnImageError(ReadError):
    """The DICOM object is not an image (e.g. a structured report or presentation state)."""

    reason = "not-an-image"


class CorruptHeaderError(ReadError):
    """A DICOM file whose header cannot be parsed (cut short, malformed or inconsistent)."""

    reason = "corrupt-header"


class FileAccessError(ReadError):
    """The file cannot be opened or read (missing, a directory, no permission, I/O error)."""

    reason = "file-access"


class MemoryBudgetError(MedForensicsError):
    """One image would need more working memory for an analysis step than its budget allows
    (or the step ran out of memory). Raised per image: a batch reports it for that file and
    goes on with the next one.

    Attributes:
        reason: ``"over-memory-budget"`` (the verdict's reason).
        needed: estimated bytes (0 when the step ran out of memory without an estimate).
        budget: the budget in bytes.
    """

    reason = "over-memory-budget"

    def __init__(self, message: str, *, needed: int = 0, budget: int = 0) -> None:
        self.needed = int(needed)
        self.budget = int(budget)
        super().__init__(message)


class ManifestError(MedForensicsError):
    """A manifest is missing columns or is otherwise malformed."""


class OutputWriteError(MedForensicsError, OSError):
    """An output file could not be written (disk full, quota, read-only or missing folder,
    no permission). Nothing is left half-written under the output's name.

    Attributes:
        path: the output that could not be written.
        partial: a file next to it that holds the whole records written before the failure
            (streamed JSON lines), or ``None``.
    """

    def __init__(self, path: object, cause: BaseException | str,
                 partial: object | None = None) -> None:
        self.path = str(path)
        self.partial = None if partial is None else str(partial)
        why = cause if isinstance(cause, str) else (getattr(cause, "strerror", None) or cause)
        msg = f"cannot write {self.path}: {why}"
        if self.partial is not None:
            msg += f" (the complete records written so far are in {self.partial})"
        else:
            msg += " (nothing was left under that name)"
        errno_ = getattr(cause, "errno", None)
        OSError.__init__(self, errno_, msg)
        self.args = (msg,)
        self.filename = self.path

    def __str__(self) -> str:
        return str(self.args[0])


class LeakageError(MedForensicsError):
    """A patient, study or file hash appears in more than one split."""


class StoreError(MedForensicsError):
    """A prepared pixel store is missing, malformed, locked by another ``prepare``, stale
    (a file's sha256 differs from the store's) or lacks an image that was asked for."""


class ModelFileError(MedForensicsError):
    """A model directory is missing, malformed, or not safetensors + JSON."""


class ConfigError(MedForensicsError):
    """Invalid arguments or configuration (unknown preset, label column, device, ...)."""


class InvalidArrayError(MedForensicsError, ValueError):
    """An array argument has the wrong dimensionality, is too small, has mismatched shapes
    or contains non-finite values (raised by the pure signal-processing functions)."""


class TamperError(MedForensicsError):
    """The tampering generator cannot process an input (multi-frame, too small for the
    requested region, no textured location found, no donor from another device, ...)."""


class RunIntegrityError(ModelFileError):
    """A run file fails its check: changed since it was written (sha256 differs from the run
    manifest ``run.json``), listed but missing, present but not listed, a path leading out of
    the run folder, or a value out of its allowed range.

    Attributes:
        path: the offending file.
        problem: what is wrong with it.
        overridable: True for hash problems (changed / missing / unlisted files), which
            ``--allow-modified-run`` / ``allow_modified=True`` turns into a warning and a
            ``run_integrity: "modified"`` on every verdict; False for unsafe values and paths
            leading out of the run, which are always refused.
    """

    def __init__(self, path: object, problem: str, *, overridable: bool = False,
                 more: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        self.overridable = overridable
        hint = (" (pass --allow-modified-run, or allow_modified=True in Python, to load it "
                "anyway: its verdicts then say run_integrity 'modified')" if overridable else "")
        super().__init__(f"{self.path}: {problem}{more}{hint}")
