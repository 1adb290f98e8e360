"""Running the web application with uvicorn: in the foreground (``medforensics serve``) or in a
background thread (tests, notebooks)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["BackgroundServer", "is_loopback", "loopback_hosts", "serve"]

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


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C).

    Args:
        app: the application from :func:`medforensics.service.app.create_app`.
        host: address to bind; loopback by default.
        port: TCP port.
        log_level: uvicorn log level.
    """
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False,
                proxy_headers=False, timeout_keep_alive=5, limit_concurrency=64)


class BackgroundServer:
    """Context manager running an app with uvicorn in a daemon thread.

    Args:
        app: an ASGI app.
        host: address to bind.
        port: TCP port; 0 picks a free one (read it from :attr:`port` / :attr:`url`).
        start_timeout: seconds to wait for the server to accept connections.

    Example:
        >>> with BackgroundServer(app) as srv:  # doctest: +SKIP
        ...     httpx.get(srv.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 20.0) -> None:
        import uvicorn

        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                server_header=False, lifespan="on")
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
