"""Connection limits for the web service: clients that send slowly cannot starve the others.

uvicorn times out idle keep-alive connections, but nothing bounds the time a client takes to
send a request's header: a connection that sends half a header and waits stays open forever
and counts against ``limit_concurrency``, so enough of them make every request answer 503.
An ASGI middleware cannot help, since the application only sees a request once its header
is complete. :func:`guarded_protocol` therefore returns an HTTP protocol class (uvicorn's h11
protocol plus these rules) for ``uvicorn.Config(http=...)``:

- **header timeout**: a request header must be complete within ``header_timeout_s`` of the
  connection opening (or of the previous answer on a kept-alive connection); otherwise the
  client gets ``408`` and the connection is closed.
- **body timeout**: while a request body is still arriving, at most ``body_timeout_s`` may
  pass without a byte; once the answer has been sent (e.g. a ``401`` before the body was
  read) the rest of the body has ``body_timeout_s`` in all, then the connection is closed.
- **waiting connections are capped**: connections without a complete header are at most
  ``max_pending`` in all and ``max_pending_per_client`` per client address; over a cap,
  the connection that has waited longest is closed. A client that sends its header at once
  (every real client) is never waiting long, so floods of slow or silent connections evict
  each other and leave room for the requests that arrive whole, including the
  authenticated ones. Requests with a complete header are answered by the application,
  which refuses a missing token at once (401), before reading any body.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["ConnectionLimits", "guarded_protocol"]

log = logging.getLogger(__name__)

_408_BODY = b'{"error": "request-timeout", "detail": "the request header came too slowly"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(_408_BODY)).encode() + b"\r\n\r\n"
        + _408_BODY)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection time limits and caps on connections still sending their header.

    Attributes:
        header_timeout_s: seconds to send a complete request header.
        body_timeout_s: longest pause while a request body is arriving; also the time left
            for the rest of a body the application did not read.
        max_pending: connections without a complete header, over all clients.
        max_pending_per_client: the same, per client address.
        limit_concurrency: uvicorn's cap on connections + running requests (503 above);
            kept above ``max_pending`` so waiting connections alone never reach it.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_pending: int = 64
    max_pending_per_client: int = 16
    limit_concurrency: int = 256

    def __post_init__(self) -> None:
        from medforensics.errors import ConfigError

        if not (self.header_timeout_s > 0 and self.body_timeout_s > 0):
            raise ConfigError("connection timeouts must be positive")
        if not 1 <= self.max_pending_per_client <= self.max_pending < self.limit_concurrency:
            raise ConfigError("need 1 <= max_pending_per_client <= max_pending < "
                              "limit_concurrency")


class _Waiting:
    """The connections still sending their header, oldest first (one per server)."""

    def __init__(self) -> None:
        self.all: OrderedDict[Any, str] = OrderedDict()

    def add(self, conn: Any, client: str, limits: ConnectionLimits) -> None:
        self.all.pop(conn, None)
        self.all[conn] = client
        same = [c for c, who in self.all.items() if who == client]
        while len(same) > limits.max_pending_per_client:
            oldest = same.pop(0)
            oldest.evict("too many connections from one client waiting for their header")
        while len(self.all) > limits.max_pending:
            oldest = next(iter(self.all))
            oldest.evict("too many connections waiting for their header")

    def discard(self, conn: Any) -> None:
        self.all.pop(conn, None)


class _GuardedConnection:
    """The rules of :mod:`medforensics.service.limits` for one connection, mixed into uvicorn's
    h11 protocol by :func:`guarded_protocol` (kept apart so this module imports without the
    ``serve`` extra). The class it is mixed into sets ``limits`` and ``waiting``."""

    limits: ConnectionLimits
    waiting: _Waiting
    _timer: asyncio.TimerHandle | None = None
    _phase = ""  # "header", "body", "drain" or "" (answering)

    # Set by uvicorn's protocol.
    transport: Any
    conn: Any
    cycle: Any
    client: Any
    loop: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        """A new connection: its header is awaited under the header timeout."""
        super().connection_made(transport)  # type: ignore[misc]
        self._got_bytes = False
        self._await_header()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: its timer and its waiting place go with it."""
        self._disarm()
        self.waiting.discard(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        """Bytes arrived: the timers follow the request's new state."""
        self._got_bytes = True
        super().data_received(data)  # type: ignore[misc]
        self._follow_state()

    def on_response_complete(self) -> None:
        """The answer was sent: a body still arriving gets a deadline, else await the next
        header."""
        import h11

        super().on_response_complete()  # type: ignore[misc]
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:
            # answered before the body was read (401, 413, ...): the rest has a deadline
            self._arm("drain", self.limits.body_timeout_s)
        else:
            self._follow_state()

    # -------------------------------------------------------------- bookkeeping
    def _client(self) -> str:
        return self.client[0] if self.client else "?"

    def _await_header(self) -> None:
        self._got_bytes = False
        self._arm("header", self.limits.header_timeout_s)
        self.waiting.add(self, self._client(), self.limits)

    def _follow_state(self) -> None:
        import h11

        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.our_state in (h11.IDLE, h11.DONE):
            if self._phase != "header":
                self._await_header()
            return
        self.waiting.discard(self)
        if state is h11.SEND_BODY and self._phase != "drain":
            self._arm("body", self.limits.body_timeout_s)  # re-armed by every chunk
        elif state is not h11.SEND_BODY and self._phase in ("header", "body"):
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._phase = ""

    def _expired(self) -> None:
        phase = self._phase
        self._timer = None
        if phase == "header":
            self.evict(f"no complete request header within {self.limits.header_timeout_s:g} s",
                       answer=self._got_bytes)
        elif phase in ("body", "drain"):
            self.evict(f"request body stalled for {self.limits.body_timeout_s:g} s")

    def evict(self, why: str, *, answer: bool = False) -> None:
        """Close this connection (with a 408 when a request had begun)."""
        self.waiting.discard(self)
        self._disarm()
        if self.transport is None or self.transport.is_closing():
            return
        log.info("closing a connection from %s: %s", self._client(), why)
        if answer:
            self.transport.write(_408)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits | None = None) -> type:
    """An HTTP protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``.

    Each call gives a new class with its own bookkeeping (use one per server).
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    lim = limits or ConnectionLimits()

    class GuardedH11Protocol(_GuardedConnection, H11Protocol):
        """uvicorn's h11 protocol with header/body timeouts and capped waiting connections."""

        limits = lim
        waiting = _Waiting()

    return GuardedH11Protocol
