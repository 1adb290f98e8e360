"""Analyses in a process of their own, killed when their time is up.

A thread cannot be stopped: an analysis that overruns the service's time limit would keep
its worker busy after the client got its 504, and the next requests would wait behind it.
:func:`run_forked` runs one analysis in a child process forked from the service (so it
shares the models already loaded, copy-on-write, and needs no pickling) and kills it with
SIGKILL at the deadline; the worker is free again at once.

The child sends back one JSON message through a pipe: the result (a JSON value: the verdict
dict or the report's HTML), or the :class:`~medforensics.service.analysis.InputError` /
:class:`~medforensics.service.analysis.NotAvailable` it raised, or the name of any other
exception (logged with its traceback in the child). It exits with the service (parent
death signal), does not keep the service's network connections open, and ignores the
service's Ctrl-C handling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

from medforensics.service.analysis import InputError, NotAvailable

__all__ = ["AnalysisCrashed", "AnalysisTimeout", "run_forked"]

log = logging.getLogger(__name__)


class AnalysisTimeout(Exception):
    """The analysis did not finish before its deadline (its process was killed)."""


class AnalysisCrashed(Exception):
    """The analysis process raised an unexpected exception or died without an answer.

    Attributes:
        kind: the exception's class name, or ``"killed by signal N"`` / ``"exit code N"``.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def _close_sockets(keep: int) -> None:
    """Close inherited sockets (client connections, the listening socket) in the child."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd <= 2 or fd == keep:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


def _child_setup(write_fd: int) -> None:
    from medforensics.common.workers import _set_pdeathsig

    _set_pdeathsig(signal.SIGKILL)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError, ValueError):
        signal.set_wakeup_fd(-1)  # the service's event loop must not hear our signals
    _close_sockets(write_fd)


def _message(job: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    try:
        msg: dict[str, Any] = {"ok": job(*args)}
    except InputError as exc:
        msg = {"input": [exc.reason, exc.detail, exc.status]}
    except NotAvailable as exc:
        msg = {"unavailable": [exc.status, exc.reason, exc.detail]}
    except Exception as exc:
        log.error("analysis failed (%s)", type(exc).__name__, exc_info=exc)
        msg = {"bug": [type(exc).__name__, ""]}
    try:
        return json.dumps(msg).encode("utf-8", "surrogateescape")
    except (TypeError, ValueError) as exc:
        log.error("analysis result is not JSON (%s)", type(exc).__name__)
        return json.dumps({"bug": [type(exc).__name__, "result is not JSON"]}).encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes, or None when the deadline passes first."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int) -> int:
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, 0)[1]
    return 0


def run_forked(job: Callable[..., Any], args: tuple[Any, ...], *, deadline: float) -> Any:
    """Run ``job(*args)`` in a forked child process and return its (JSON) result.

    Args:
        job: the analysis (a bound method of the loaded service, a closure: anything).
        args: its arguments.
        deadline: ``time.monotonic()`` value by which the result must be there.

    Returns:
        The result, after a JSON round trip.

    Raises:
        AnalysisTimeout: the deadline passed (the child was killed) or had passed already.
        InputError, NotAvailable: raised by the job (re-raised here).
        AnalysisCrashed: any other exception in the job, or the child died.
    """
    if time.monotonic() >= deadline:
        raise AnalysisTimeout("the deadline passed before the analysis could start")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            _child_setup(w)
            _write_all(w, _message(job, args))
        except BaseException as exc:  # noqa: BLE001 - the child must reach os._exit
            with contextlib.suppress(Exception):
                log.error("analysis process failed (%s)", type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(0)
    os.close(w)
    killed = False
    try:
        data = _read_until(r, deadline)
        if data is None:
            os.kill(pid, signal.SIGKILL)
            killed = True
    finally:
        os.close(r)
        status = _reap(pid)
    if killed:
        raise AnalysisTimeout("the analysis was stopped at its deadline")
    if not data:
        if os.WIFSIGNALED(status):
            raise AnalysisCrashed(f"killed by signal {os.WTERMSIG(status)}")
        raise AnalysisCrashed(f"exit code {os.WEXITSTATUS(status)}",
                              "the analysis process ended without an answer")
    msg = json.loads(data.decode("utf-8", "surrogateescape"))
    if "ok" in msg:
        return msg["ok"]
    if "input" in msg:
        reason, detail, code = msg["input"]
        raise InputError(reason, detail, int(code))
    if "unavailable" in msg:
        code, reason, detail = msg["unavailable"]
        raise NotAvailable(int(code), reason, detail)
    kind, detail = msg.get("bug", ["unknown", ""])
    raise AnalysisCrashed(str(kind), str(detail))
