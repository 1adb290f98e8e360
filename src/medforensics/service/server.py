"""Running the web application with uvicorn: in the foreground (``medforensics serve``) or in a
background thread (tests, notebooks)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from types import TracebackType
from typing import Any

from medforensics.service.limits import ConnectionLimits, guarded_protocol

__all__ = ["BackgroundServer", "ConnectionLimits", "is_loopback", "loopback_hosts", "serve",
           "uvicorn_config"]

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(host: str) -> list[str]:
    """``Host`` header values a loopback service accepts (guards against DNS rebinding)."""
    names = {"127.0.0.1", "localhost", "::1", "[::1]", host.strip("[]")}
    return sorted(names)


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str,
                   limits: ConnectionLimits | None = None, **kw: Any) -> Any:
    """The ``uvicorn.Config`` of the service: h11 with :mod:`medforensics.service.limits`
    (header and body timeouts, capped waiting connections), no server header, no proxy
    headers, 5 s keep-alive."""
    import uvicorn

    lim = limits or ConnectionLimits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False,
                          proxy_headers=False, timeout_keep_alive=5,
                          limit_concurrency=lim.limit_concurrency,
                          http=guarded_protocol(lim), **kw)


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", limits: ConnectionLimits | None = None) -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C).

    Args:
        app: the application from :func:`medforensics.service.app.create_app`.
        host: address to bind; loopback by default.
        port: TCP port.
        log_level: uvicorn log level.
        limits: connection timeouts and caps (:class:`ConnectionLimits` defaults).
    """
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level=log_level,
                                  limits=limits)).run()


class BackgroundServer:
    """Context manager running an app with uvicorn in a daemon thread.

    Args:
        app: an ASGI app.
        host: address to bind.
        port: TCP port; 0 picks a free one (read it from :attr:`port` / :attr:`url`).
        start_timeout: seconds to wait for the server to accept connections.
        limits: connection timeouts and caps, as for :func:`serve`.

    Example:
        >>> with BackgroundServer(app) as srv:  # doctest: +SKIP
        ...     httpx.get(srv.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 20.0, limits: ConnectionLimits | None = None) -> None:
        import uvicorn

        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        config = uvicorn_config(app, host=host, port=port, log_level="warning",
                                limits=limits, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="medforensics-uvicorn",
                                       daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43127``."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        t_end = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > t_end:
                self.server.should_exit = True
                raise RuntimeError("uvicorn did not start (port in use? see the log)")
            time.sleep(0.02)
        sockets = [s for srv in getattr(self.server, "servers", []) for s in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
