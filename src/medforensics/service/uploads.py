"""Receiving one uploaded image: streamed to a private temp file, size-limited while streaming.

The request body is never held in memory and never parsed by the framework's form machinery
(which would spool the whole body before any limit could be checked). Instead
:func:`receive_upload` reads the ASGI body stream chunk by chunk, feeds it to a streaming
``multipart/form-data`` parser (python-multipart) or, for a raw body, writes it as it comes,
counts the bytes of the file as they arrive and stops with :class:`UploadTooLarge` as soon as
the limit is passed, without reading the rest. It hashes the file on the way (SHA-256), so
logs can name an upload by a hash prefix instead of its (possibly identifying) file name.

The caller owns the temporary directory and deletes it (see ``service.app``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "FILE_FIELD",
    "RAW_CONTENT_TYPES",
    "Upload",
    "UploadError",
    "UploadTooLarge",
    "receive_upload",
    "safe_filename",
]

#: Name of the multipart form field holding the image.
FILE_FIELD = "file"
#: Content types accepted as a raw (non-multipart) body holding the file itself.
RAW_CONTENT_TYPES = (
    "application/octet-stream",
    "application/dicom",
    "image/png",
    "image/jpeg",
    "image/tiff",
)
#: Multipart overhead allowed on top of the file limit (boundaries, part headers, small fields).
MULTIPART_SLACK = 64 * 1024
_MAX_FILENAME = 200


class UploadError(Exception):
    """The request does not carry an uploadable file.

    Attributes:
        status: HTTP status to answer with (400, 415 or 422).
        reason: machine-readable code for the ``error`` field of the JSON answer.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class UploadTooLarge(UploadError):
    """The upload exceeds the size limit (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "too-large-upload",
            f"the upload exceeds the limit of {limit} bytes ({limit / 2**20:.1f} MiB)",
        )
        self.limit = limit


@dataclass
class Upload:
    """One received file.

    Attributes:
        path: where it was written (inside the caller's temporary directory).
        filename: the client's file name, reduced to a safe base name ("upload" when none).
        size: file size in bytes.
        sha256: hex SHA-256 of the file's bytes.
        content_type: the part's (or body's) declared content type, "" when none.
    """

    path: Path
    filename: str
    size: int
    sha256: str
    content_type: str

    @property
    def tag(self) -> str:
        """Log-safe name of the upload: SHA-256 prefix and size (no file name)."""
        return f"sha256:{self.sha256[:12]} ({self.size} B)"


def safe_filename(name: str | None) -> str:
    """Base name of a client-supplied file name, stripped of directories and control characters.

    Args:
        name: the name as sent (may contain ``/``, ``\\``, ``..``, control characters).

    Returns:
        A printable base name of at most 200 characters, or ``"upload"`` when nothing is left.
    """
    if not name:
        return "upload"
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        return "upload"
    return base[:_MAX_FILENAME]


class _Sink:
    """Writes the file's bytes to disk, hashing and counting them, enforcing the limit."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.hash = hashlib.sha256()
        self.fp: IO[bytes] | None = None

    def open(self) -> None:
        # O_EXCL: never follow or reuse an existing file; 0o600: private to the service user.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.fp = os.fdopen(fd, "wb")

    def write(self, data: bytes | memoryview) -> None:
        if self.fp is None:
            return
        self.size += len(data)
        if self.size > self.limit:
            raise UploadTooLarge(self.limit)
        self.hash.update(data)
        self.fp.write(data)

    def close(self) -> None:
        if self.fp is not None:
            self.fp.close()


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    from python_multipart.multipart import parse_options_header

    main, params = parse_options_header(value)
    return (
        main.decode("latin-1").lower(),
        {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in params.items()},
    )


async def _receive_multipart(
    chunks: AsyncIterator[bytes], boundary: str, sink: _Sink, body_limit: int
) -> tuple[str, str]:
    """Stream a multipart body into ``sink``; returns ``(filename, content_type)`` of the file."""
    from python_multipart import MultipartParser
    from python_multipart.exceptions import MultipartParseError

    state: dict = {"headers": {}, "field": b"", "value": b"", "in_file": False, "found": False,
                   "done": False, "filename": "", "ctype": "", "n_headers": 0}

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        key = state["field"].decode("latin-1").strip().lower()
        state["headers"][key] = state["value"].decode("latin-1").strip()
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, params = _header_params(state["headers"].get("content-disposition", ""))
        is_file = params.get("name") == FILE_FIELD and not state["found"]
        state["in_file"] = is_file
        if is_file:
            state["found"] = True
            state["filename"] = params.get("filename", "")
            state["ctype"] = state["headers"].get("content-type", "")
            sink.open()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            sink.write(data[start:end])

    def on_part_end() -> None:
        if state["in_file"]:
            sink.close()
        state["in_file"] = False

    def on_end() -> None:
        state["done"] = True

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    total = 0
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            total += len(chunk)
            if total > body_limit:
                raise UploadTooLarge(sink.limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, "bad-multipart", f"malformed multipart body: {exc}") from None
    finally:
        sink.close()
    if not state["found"]:
        raise UploadError(
            422, "no-file",
            f"the multipart body has no file field named {FILE_FIELD!r} "
            f"(send the image as -F '{FILE_FIELD}=@image.dcm')",
        )
    if not state["done"]:
        raise UploadError(400, "bad-multipart", "the multipart body ends before its closing "
                          "boundary (upload cut short?)")
    return state["filename"], state["ctype"]


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str,
    directory: Path,
    *,
    max_bytes: int,
    content_length: int | None = None,
) -> Upload:
    """Receive one file from a request body into ``directory/upload``.

    Args:
        chunks: the body, as an async iterator of byte chunks (``request.stream()``).
        content_type: the request's ``Content-Type`` header. ``multipart/form-data``: the
            file is the part named ``file``; one of :data:`RAW_CONTENT_TYPES`: the body is
            the file.
        directory: an existing private directory to write into (the caller deletes it).
        max_bytes: size limit of the file in bytes (the whole body may exceed it by at most
            64 KiB of multipart overhead).
        content_length: the declared ``Content-Length``, if any; a declared length over the
            limit is refused before reading anything.

    Returns:
        The :class:`Upload`.

    Raises:
        UploadTooLarge: the file (or body) is larger than allowed; raised as soon as the limit
            is passed, the rest of the body is not read.
        UploadError: unsupported content type (415), malformed multipart body (400) or no
            ``file`` part (422).
    """
    ctype, params = _header_params(content_type or "")
    multipart = ctype == "multipart/form-data"
    body_limit = max_bytes + (MULTIPART_SLACK if multipart else 0)
    if content_length is not None and content_length > body_limit:
        raise UploadTooLarge(max_bytes)
    sink = _Sink(directory / "upload", max_bytes)
    if multipart:
        boundary = params.get("boundary", "")
        if not boundary:
            raise UploadError(400, "bad-multipart", "multipart/form-data without a boundary")
        filename, part_type = await _receive_multipart(chunks, boundary, sink, body_limit)
    elif ctype in RAW_CONTENT_TYPES:
        sink.open()
        try:
            async for chunk in chunks:
                sink.write(chunk)
        finally:
            sink.close()
        filename, part_type = params.get("name", ""), ctype
    else:
        raise UploadError(
            415, "unsupported-media-type",
            f"send the image as multipart/form-data (field {FILE_FIELD!r}) or as a raw body "
            f"with Content-Type one of {', '.join(RAW_CONTENT_TYPES)}; got {ctype or 'none'!r}",
        )
    return Upload(path=sink.path, filename=safe_filename(filename), size=sink.size,
                  sha256=sink.hash.hexdigest(), content_type=part_type)
