"""The FastAPI application: endpoints, limits, authentication and error mapping.

Endpoints (every ``/v1`` endpoint needs ``Authorization: Bearer <token>`` when the service was
started with a token; ``/``, ``/static``, ``/health`` and ``/openapi.json`` are open):

=========================  ==========================================================
``GET /``                  the browser page (plain HTML + JS, served locally)
``GET /health``            liveness, version, limits, what is loaded
``GET /v1/models``         presets, classes, file hashes, calibration of the loaded models
``POST /v1/identify``      device verdict of one uploaded image: the ``identify --json`` line
                           (``?preview=true`` adds a PNG)
``POST /v1/forgery``       the ``forgery detect --json`` line plus a heat-map overlay (PNG,
                           base64)
``POST /v1/dicom``         the results as DICOM for a PACS: a ZIP of a Comprehensive SR and a
                           SEG of the forgery map, both referencing the uploaded instance
``POST /v1/report``        self-contained HTML case report (identifiers masked; a service
                           started with ``allow_unmasked_reports`` also honours
                           ``?mask_identifiers=false``, any other answers it with 403)
``GET /openapi.json``      the OpenAPI schema
=========================  ==========================================================

Uploads are ``multipart/form-data`` with the image in the field ``file`` (or a raw body with
``Content-Type: application/dicom``/``application/octet-stream``/``image/png``/...). They are
streamed into a private temporary directory, refused with 413 as soon as they pass the size
limit, and deleted when the analysis is over (also after a timeout). Images whose frame is
larger than ``max_frame_pixels`` are refused from their header before any decoding.

Every error answer is JSON ``{"error": <code>, "detail": <message>}``: 401 (token), 413
(size), 415 (content type), 400 (malformed multipart), 403 (unmasked report not allowed),
422 (unreadable or unsuitable image; ``error`` is the reader's ``ReadError.reason``, e.g.
``not-an-image-file``, ``truncated-pixel-data``, ``too-large``), 501 (report module absent),
503 (no forgery model loaded), 504 (upload + analysis over the time limit). 500 means a bug.

Each analysis runs in a child process forked from the service (``isolation="process"``, the
default): at the time limit it is killed, so an overrunning analysis never keeps a worker
busy after its 504 (:mod:`medforensics.service.isolation`). Slow or silent connections are
bounded by the server's protocol (:mod:`medforensics.service.limits`).

Logs never carry file names, header values or pixel data: an upload is named by its SHA-256
prefix and size.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hmac
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

if importlib.util.find_spec("fastapi") is None:  # the web service is an extra
    raise ImportError("the web service needs the 'serve' extra: "
                      "pip install 'medforensics[serve]'", name="fastapi")

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medforensics.forgery.schema import ForgeryRecord
from medforensics.service.analysis import (
    DEFAULT_MAX_FRAME_PIXELS,
    CaseService,
    InputError,
    NotAvailable,
)
from medforensics.service.isolation import AnalysisTimeout, run_forked
from medforensics.service.uploads import (
    FILE_FIELD,
    RAW_CONTENT_TYPES,
    Upload,
    UploadError,
    receive_upload,
)
from medforensics.source.schema import IdentifyRecord

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_TIMEOUT_S", "STATIC_DIR"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 200 * 2**20
DEFAULT_TIMEOUT_S = 60.0
STATIC_DIR = Path(__file__).resolve().parent / "static"

_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: The case report is self-contained: inline styles and data: images only, no scripts.
_REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


# ---------------------------------------------------------------------- schemas (for OpenAPI)
class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
    detail: str


class Health(BaseModel):
    """Liveness and configuration summary."""

    model_config = ConfigDict(extra="allow")
    status: str
    version: str
    source_model: bool
    forgery_model: bool
    auth_required: bool
    max_upload_bytes: int
    timeout_s: float


class IdentifyResponse(IdentifyRecord):
    """``/v1/identify``: the ``identify --json`` line of the image
    (:class:`medforensics.source.schema.IdentifyRecord`), ``path`` being the uploaded file's
    name; ``preview_png_b64`` only with ``?preview=true``."""

    preview_png_b64: str | None = None


class ForgeryResponse(ForgeryRecord):
    """``/v1/forgery``: the ``forgery detect --json`` line of the image
    (:class:`medforensics.forgery.schema.ForgeryRecord`), ``path`` being the uploaded file's
    name, plus the heat map over the image (``overlay_png_b64``, PNG, base64)."""

    overlay_png_b64: str


class ModelsInfo(BaseModel):
    """Loaded models: available presets, source run (classes, hashes, calibration), forgery."""

    model_config = ConfigDict(extra="allow")
    available_presets: list[str]
    source: dict[str, Any]
    forgery: dict[str, Any] | None = None


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary",
                                                "description": "DICOM, PNG, JPEG or TIFF"}},
                }
            },
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in RAW_CONTENT_TYPES},
        },
    }
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody, "description": HTTPStatus(c).phrase} for c in codes}


# ---------------------------------------------------------------------- errors
class ApiError(Exception):
    """An answer other than 200 (turned into ``{"error", "detail"}`` JSON)."""

    def __init__(self, status: int, reason: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers


def _error_response(status: int, reason: str, detail: str,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": detail}, status_code=status, headers=headers)


def _slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return "error"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.reason, exc.detail, exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error_response(exc.status, exc.reason, exc.detail)

    @app.exception_handler(NotAvailable)
    async def _not_available(_: Request, exc: NotAvailable) -> JSONResponse:
        return _error_response(exc.status, exc.reason, exc.detail)

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        # An over-limit body is not read to its end: tell the client the connection closes.
        headers = {"Connection": "close"} if exc.status == 413 else None
        return _error_response(exc.status, exc.reason, str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(exc.status_code, _slug(exc.status_code), str(exc.detail),
                               getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["/".join(str(x) for x in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                 for e in exc.errors()]
        return _error_response(422, "invalid-request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # A real bug: log the traceback (it holds no upload content) and answer 500.
        kind = getattr(exc, "kind", None) or type(exc).__name__  # AnalysisCrashed: the job's
        log.error("internal error (%s)", kind, exc_info=exc)
        return _error_response(500, "internal-error",
                               f"internal error ({kind}); see the server log")


# ---------------------------------------------------------------------- middleware
class SecurityHeaders:
    """Pure ASGI middleware adding security headers to every HTTP answer.

    ``nosniff``, no referrer, no framing; ``Cache-Control: no-store`` on ``/v1`` answers
    (they describe patient images); a strict Content-Security-Policy on the page (and a
    scriptless one on HTML case reports) unless the endpoint set its own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer"),
                         (b"x-frame-options", b"DENY")]
                if path.startswith("/v1/"):
                    extra.append((b"cache-control", b"no-store"))
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", _PAGE_CSP.encode()))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------- settings and state
@dataclass(frozen=True)
class _Settings:
    """The service's limits and switches, checked once before anything is loaded."""

    max_upload_bytes: int
    timeout_s: float
    workers: int
    token: str | None
    isolation: str
    allow_unmasked_reports: bool
    tmp_root: Path | None

    def public(self) -> dict[str, Any]:
        """What ``/health`` shows of the settings (never the token itself)."""
        return {"max_upload_bytes": self.max_upload_bytes, "timeout_s": self.timeout_s,
                "auth_required": self.token is not None, "isolation": self.isolation,
                "unmasked_reports": self.allow_unmasked_reports}


def _check_settings(*, token: str | None, max_upload_bytes: int, timeout_s: float,
                    workers: int, tmp_dir: str | Path | None, isolation: str,
                    allow_unmasked_reports: bool) -> _Settings:
    """The settings of :func:`create_app`, refused before the models are loaded when they
    cannot work, so a misconfigured service fails at start rather than on its first request.

    Raises:
        medforensics.errors.ConfigError: a limit or switch that cannot be used.
    """
    from medforensics.errors import ConfigError

    if max_upload_bytes < 1:
        raise ConfigError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if token is not None and not token.strip():
        raise ConfigError("token must not be empty")
    if isolation not in ("process", "thread"):
        raise ConfigError(f"isolation must be 'process' or 'thread', got {isolation!r}")
    if isolation == "process" and not hasattr(os, "fork"):
        raise ConfigError("isolation='process' needs os.fork (Linux, macOS); use 'thread'")
    return _Settings(max_upload_bytes=int(max_upload_bytes), timeout_s=float(timeout_s),
                     workers=workers, token=token, isolation=isolation,
                     allow_unmasked_reports=bool(allow_unmasked_reports),
                     tmp_root=Path(tmp_dir) if tmp_dir is not None else None)


class _AnalysisPool:
    """The worker threads that run analyses, created on first use and shut down with the app
    (queued jobs cancelled), so an idle or stopped service holds no threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool, created on first use."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="medforensics-analysis")
        return self._pool

    def shutdown(self) -> None:
        """Stop the pool without waiting for running jobs; queued ones are cancelled."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: the pool is shut down when the app stops."""
        yield
        self.shutdown()


# ---------------------------------------------------------------------- authentication
def _bearer_check(token: str | None) -> Callable[..., Any]:
    """A FastAPI dependency that answers 401 unless the request carries ``token`` as its bearer
    token (compared in constant time, so timing does not reveal the token); a no-op when the
    service has no token."""
    bearer = HTTPBearer(auto_error=False, description="Needed when the service has a token.")
    expected = None if token is None else token.encode("utf-8")

    async def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if expected is None:
            return
        given = b"" if credentials is None else credentials.credentials.encode("utf-8")
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "unauthorized",
                           "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                           headers={"WWW-Authenticate": "Bearer"})

    return require_token


# ---------------------------------------------------------------------- one analysis
class _Analyses:
    """Runs one upload's analysis under the service's limits: the upload is streamed into a
    private directory, the job runs in a worker (a forked child or a thread), and the
    directory is removed when the job is over, also after a timeout."""

    def __init__(self, settings: _Settings, pool: _AnalysisPool) -> None:
        self.settings = settings
        self.pool = pool

    async def __call__(self, request: Request, what: str,
                       job: Callable[[Path, str], Any]) -> tuple[Any, float]:
        """Receive the upload, run ``job(path, filename)`` in a worker, clean up.

        Returns:
            The job's result and the milliseconds from the request to the result.
        """
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s
        tmp = Path(tempfile.mkdtemp(prefix="medforensics-upload-", dir=self.settings.tmp_root))
        fut: concurrent.futures.Future | None = None

        def remove(_: Any = None) -> None:
            shutil.rmtree(tmp, ignore_errors=True)

        try:
            upload = await self._receive(request, what, tmp)
            fut = self._submit(job, upload, deadline - loop.time())
            result = await self._wait(fut, what, upload.tag, deadline, t0)
            ms = 1000 * (time.monotonic() - t0)
            outcome = result.get("verdict", "ok") if isinstance(result, dict) else "ok"
            log.info("%s %s: %s (%.0f ms)", what, upload.tag, outcome, ms)
            return result, ms
        finally:
            if fut is None or fut.done():
                remove()
            else:  # the worker is still busy with the file: delete it when the job ends
                fut.add_done_callback(remove)

    async def _receive(self, request: Request, what: str, tmp: Path) -> Upload:
        """The upload streamed into ``tmp`` within the time and size limits (504, 413, ...)."""
        timeout_s = self.settings.timeout_s
        length = request.headers.get("content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        try:
            return await asyncio.wait_for(
                receive_upload(request.stream(), request.headers.get("content-type", ""),
                               tmp, max_bytes=self.settings.max_upload_bytes,
                               content_length=declared),
                timeout=timeout_s)
        except asyncio.TimeoutError:
            log.warning("%s: upload not received within %.0f s", what, timeout_s)
            raise ApiError(504, "timeout",
                           f"the upload was not received within {timeout_s:g} s") from None
        except ClientDisconnect:
            raise ApiError(400, "client-disconnected", "the client went away") from None
        except UploadError as exc:
            log.info("%s: upload refused (%s)", what, exc.reason)
            raise

    def _submit(self, job: Callable[[Path, str], Any], upload: Upload,
                remaining_s: float) -> concurrent.futures.Future:
        """The job handed to a worker: a forked child killed when ``remaining_s`` is spent, or
        a thread of the service."""
        if self.settings.isolation == "process":
            stop_at = time.monotonic() + max(0.0, remaining_s)
            return self.pool.executor().submit(run_forked, job, (upload.path, upload.filename),
                                               deadline=stop_at)
        return self.pool.executor().submit(job, upload.path, upload.filename)

    async def _wait(self, fut: concurrent.futures.Future, what: str, tag: str,
                    deadline: float, t0: float) -> Any:
        """The job's result, or 504 when ``deadline`` (event-loop time) passes first."""
        timeout_s = self.settings.timeout_s
        loop = asyncio.get_running_loop()
        waiter = asyncio.wrap_future(fut)
        # Mark a late outcome as retrieved so an abandoned job logs nothing spurious.
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        done, _ = await asyncio.wait({waiter}, timeout=max(0.0, deadline - loop.time()))
        if not done:
            fut.cancel()  # a queued job; a running child is killed at its deadline
            log.warning("%s %s: timed out after %.0f s", what, tag, timeout_s)
            raise ApiError(504, "timeout", f"the analysis took longer than {timeout_s:g} s")
        try:
            return waiter.result()
        except AnalysisTimeout:
            log.warning("%s %s: stopped after %.0f s", what, tag, timeout_s)
            raise ApiError(504, "timeout",
                           f"the analysis took longer than {timeout_s:g} s") from None
        except (InputError, NotAvailable) as exc:
            log.info("%s %s: %s (%.0f ms)", what, tag, exc.reason,
                     1000 * (time.monotonic() - t0))
            raise


# ---------------------------------------------------------------------- routes
def _add_page_routes(app: FastAPI, service: CaseService, version: str) -> None:
    """The open routes: the browser page, its static files and ``/health``."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness, version, limits and what is loaded (no token needed)."""
        return {"status": "ok", "version": version, "source_model": True,
                "forgery_model": service.has_forgery, "report": service.has_report,
                **app.state.settings}


def _add_model_routes(app: FastAPI, service: CaseService, auth: list[Any]) -> None:
    """``/v1/models``: what is loaded (token needed)."""

    @app.get("/v1/models", response_model=ModelsInfo, dependencies=auth,
             responses=_errors(401), tags=["models"])
    async def models() -> dict[str, Any]:
        """Available presets, the loaded source run (classes, hashes, calibration) and the
        forgery detector (``null`` when none is loaded)."""
        return service.models_info()


def _add_analysis_routes(app: FastAPI, service: CaseService, analyse: _Analyses,
                         auth: list[Any], allow_unmasked: bool) -> None:
    """The upload routes: ``/v1/identify``, ``/v1/forgery`` and ``/v1/report``. Requests that
    cannot be answered (no forgery model, no report module, unmasking not allowed) are
    refused before their upload is received."""
    upload_errors = _errors(401, 413, 415, 422, 504)

    @app.post("/v1/identify", dependencies=auth, openapi_extra=_UPLOAD_BODY,
              responses={200: {"model": IdentifyResponse}, **upload_errors}, tags=["analysis"])
    async def identify(request: Request, preview: bool = False) -> JSONResponse:
        """Which device made the image? ``consistent`` / ``MISMATCH`` / ``UNKNOWN`` /
        ``claim-not-in-model`` / ``no-header-claim``, with probabilities and the top 3.
        ``preview=true`` adds ``preview_png_b64`` (windowed 8-bit PNG, base64)."""
        result, _ = await analyse(request, "identify",
                                  lambda p, n: service.identify(p, n, preview=preview))
        return JSONResponse(result)

    @app.post("/v1/forgery", dependencies=auth, openapi_extra=_UPLOAD_BODY,
              responses={200: {"model": ForgeryResponse}, **_errors(401, 413, 415, 422, 503, 504)},
              tags=["analysis"])
    async def forgery(request: Request) -> JSONResponse:
        """Was the image altered? Score, verdict, forged area (%), ELA score and the
        localization map as a heat-map overlay (``overlay_png_b64``). 503 without a
        forgery model."""
        if not service.has_forgery:  # refuse before receiving the upload
            raise NotAvailable(503, "no-forgery-model",
                               "no forgery model loaded (start the service with --forgery-model)")
        result, _ = await analyse(request, "forgery", service.forgery)
        return JSONResponse(result)

    @app.post("/v1/dicom", dependencies=auth, openapi_extra=_UPLOAD_BODY,
              response_class=Response,
              responses={200: {"content": {"application/zip": {}}}, **upload_errors},
              tags=["analysis"])
    async def dicom(request: Request) -> Response:
        """The upload's results as DICOM objects for a PACS, zipped: ``sr.dcm`` (Comprehensive
        SR: device verdict, and forgery verdict and flagged areas when a detector is loaded,
        referencing the uploaded instance) and ``seg.dcm`` (the forgery map as a fractional
        SEG). 422 for a PNG/JPEG upload: there is no DICOM instance to reference."""
        result, _ = await analyse(request, "dicom", service.dicom)
        return Response(base64.b64decode(result["zip_b64"]), media_type="application/zip",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{result["filename"]}"'})

    @app.post("/v1/report", dependencies=auth, openapi_extra=_UPLOAD_BODY,
              response_class=HTMLResponse,
              responses={200: {"content": {"text/html": {}}},
                         **_errors(401, 403, 413, 415, 422, 501, 504)}, tags=["analysis"])
    async def report(request: Request, mask_identifiers: bool = True) -> HTMLResponse:
        """Self-contained HTML case report of one image (501 when the report module is not
        part of this installation). Patient and institution identifiers are shown as
        ``masked``; ``mask_identifiers=false`` shows them only when the service was started
        to allow it (``serve --allow-unmasked-reports``), and is refused with 403
        otherwise."""
        if not mask_identifiers and not allow_unmasked:  # refuse before receiving the upload
            raise ApiError(403, "unmasking-not-allowed",
                           "this service masks patient and institution identifiers in every "
                           "report; unmasked reports need a service started with "
                           "--allow-unmasked-reports")
        if not service.has_report:  # refuse before receiving the upload
            raise NotAvailable(501, "report-not-available",
                               "case reports are not available in this installation "
                               "(medforensics.report.html.render_case_report is missing)")
        html, _ = await analyse(request, "report", lambda p, n: service.report(
            p, n, mask_identifiers=mask_identifiers))
        return HTMLResponse(html, headers={"Content-Security-Policy": _REPORT_CSP})


# ---------------------------------------------------------------------- the factory
def create_app(
    source_run: Any,
    forgery_run: Any = None,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int = 1,
    tmp_dir: str | Path | None = None,
    allowed_hosts: list[str] | None = None,
    device: str = "cpu",
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    allow_modified_run: bool = False,
    isolation: str = "process",
    allow_unmasked_reports: bool = False,
) -> FastAPI:
    """Build the web application; the models are loaded here, once.

    Args:
        source_run: trained (and calibrated) source run directory, or a loaded
            :class:`medforensics.source.predictor.SourcePredictor`.
        forgery_run: forgery run directory, ``"cues"`` (the training-free detector, what
            ``medforensics serve`` loads by default), a loaded detector (anything with
            ``detect(pixels, meta)`` returning a ``ForgeryResult``), or ``None``:
            ``/v1/forgery`` then answers 503.
        token: when set, every ``/v1`` request needs ``Authorization: Bearer <token>``
            (compared in constant time); 401 otherwise.
        max_upload_bytes: largest accepted file, in bytes (413 above, checked while streaming).
        timeout_s: longest time for receiving and analysing one upload, in seconds (504 above).
        workers: analyses run at the same time; further requests wait their turn within
            their time limit.
        tmp_dir: where upload directories are created (default: the system temp dir).
        allowed_hosts: accepted ``Host`` header values (DNS-rebinding guard), e.g.
            ``["127.0.0.1", "localhost"]``; ``None`` accepts any.
        device: torch device of the source model.
        max_frame_pixels: largest image frame (Rows x Columns) analysed; larger ones are
            refused from the header (422 ``too-large``) before decoding (memory guard).
        allow_modified_run: load runs whose files differ from their run manifest (answers
            then say ``run_integrity: "modified"``) instead of refusing them.
        isolation: ``"process"`` (default): each analysis runs in a forked child process
            that is killed at the time limit, freeing its worker at once; ``"thread"``: in a
            worker thread of the service (an overrunning analysis then runs on after its
            504 and keeps the worker busy; for tests that inspect in-process state).
        allow_unmasked_reports: honour ``/v1/report?mask_identifiers=false`` (patient and
            institution identifiers shown). Off by default: any token holder could otherwise
            ask for them; such requests then get 403 ``unmasking-not-allowed``.

    Returns:
        The FastAPI app; ``app.state.service`` is the :class:`CaseService`.

    Raises:
        medforensics.errors.ModelFileError: the source run cannot be loaded.
        medforensics.errors.ConfigError: bad limits, or a forgery run without a forgery
            detector in this installation.
    """
    from medforensics import __version__

    settings = _check_settings(token=token, max_upload_bytes=max_upload_bytes,
                               timeout_s=timeout_s, workers=workers, tmp_dir=tmp_dir,
                               isolation=isolation, allow_unmasked_reports=allow_unmasked_reports)
    service = CaseService(source_run, forgery_run, device=device,
                          max_frame_pixels=max_frame_pixels,
                          allow_modified_run=allow_modified_run)
    if settings.tmp_root is not None:
        settings.tmp_root.mkdir(parents=True, exist_ok=True)
    pool = _AnalysisPool(settings.workers)
    app = FastAPI(
        title="medforensics",
        version=__version__,
        description=(
            "Medical-image forensics: which device made an image (header claim vs pixels), "
            "and was it altered? Upload a DICOM/PNG/JPEG/TIFF as multipart field "
            f"'{FILE_FIELD}'. Errors are JSON {{error, detail}}."
        ),
        docs_url=None,  # Swagger UI / ReDoc load from a CDN: not offered (offline service)
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=pool.lifespan,
    )
    app.state.service = service
    app.state.settings = settings.public()
    _install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    auth = [Depends(_bearer_check(settings.token))]
    _add_page_routes(app, service, __version__)
    _add_model_routes(app, service, auth)
    _add_analysis_routes(app, service, _Analyses(settings, pool), auth,
                         settings.allow_unmasked_reports)
    return app
