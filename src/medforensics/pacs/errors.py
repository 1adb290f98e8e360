"""Exception classes of the PACS side (DICOM objects out, DICOMweb in and out).

All derive from :class:`medforensics.errors.MedForensicsError`; the command line prints their
message and exits with status 2.
"""

from __future__ import annotations

from medforensics.errors import ConfigError, MedForensicsError

__all__ = [
    "DicomBuildError",
    "ForwardError",
    "ListenError",
    "MissingDicomExtraError",
    "PacsAuthError",
    "PacsError",
    "PacsRequestError",
    "PacsServerError",
    "PacsUnreachableError",
    "ScanStateError",
]


class MissingDicomExtraError(ConfigError):
    """An optional package of the ``dicom`` extra is not installed (names the pip command)."""


class DicomBuildError(MedForensicsError):
    """A DICOM result object cannot be built for this source (not DICOM, no SOP Instance
    UID, map shape differs from the image's Rows x Columns, ...)."""


class PacsError(MedForensicsError):
    """A DICOMweb exchange with the PACS failed.

    Attributes:
        url: the request's URL (or the server's base URL).
        status: the HTTP status code, ``None`` when no answer came.
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class PacsUnreachableError(PacsError):
    """No answer from the server: refused connection, unknown host, time-out, TLS failure."""


class PacsAuthError(PacsError):
    """The server refused the credentials (HTTP 401 or 403)."""


class PacsRequestError(PacsError):
    """The server rejected the request (other HTTP 4xx: unknown study, bad query, ...)."""


class PacsServerError(PacsError):
    """The server failed (HTTP 5xx)."""


class ScanStateError(MedForensicsError):
    """The resumable state file of ``pacs scan`` cannot be read or written, or belongs to a
    different server or query."""


class ListenError(MedForensicsError):
    """The DICOM node of ``pacs listen`` cannot start: the address cannot be bound (port in
    use, no permission, unknown host) or its output folder cannot be created."""


class ForwardError(MedForensicsError):
    """Results could not be sent to the forward node: the association was refused or
    aborted, or the node did not accept an object.

    Attributes:
        target: the node, as ``AET@HOST:PORT``.
    """

    def __init__(self, message: str, *, target: str = "") -> None:
        self.target = target
        super().__init__(message)
