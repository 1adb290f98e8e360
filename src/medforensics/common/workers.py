"""Worker processes that do not outlive their parent.

A process pool's workers block on their task queue; when the parent is killed with SIGKILL
(or dies in any way that skips its clean-up) nothing tells them, and they wait forever.
:func:`exit_with_parent` makes the calling process exit when its parent dies:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker as soon as the
  thread that created it exits;
- everywhere (and as a second line on Linux), a daemon thread that checks every
  ``interval`` seconds whether the parent process is still the one it started under, and
  ends the process with ``os._exit`` when it is not.

Use :func:`pool_initializer` (or call :func:`exit_with_parent` first thing in your own
initializer) for ``ProcessPoolExecutor(initializer=...)``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["exit_with_parent", "pool_initializer", "with_parent_watch"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: Seconds between two checks of the parent by the watchdog thread.
WATCH_INTERVAL_S = 1.0


def _set_pdeathsig(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)  # orphaned: the parent died; nothing here is worth finishing


def exit_with_parent(parent: int | None = None, *, interval: float = WATCH_INTERVAL_S) -> None:
    """Make this process exit when its parent process dies.

    Args:
        parent: the parent's pid as the parent saw it (pass ``os.getpid()`` from the parent
            through the initializer's arguments; default ``os.getppid()`` now). When the
            parent is already gone, the process exits at once.
        interval: seconds between two watchdog checks.
    """
    expected = os.getppid() if parent is None else int(parent)
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != expected:  # the parent died before the death signal was set
        os._exit(1)
    t = threading.Thread(target=_watch, args=(expected, interval),
                         name="medforensics-parent-watch", daemon=True)
    t.start()


def pool_initializer(parent: int | None = None,
                     then: Callable[..., Any] | None = None, *args: Any) -> None:
    """Process-pool initializer: :func:`exit_with_parent`, then ``then(*args)`` if given.

    Example:
        ``ProcessPoolExecutor(n, initializer=pool_initializer,
        initargs=(os.getpid(), my_init))``
    """
    exit_with_parent(parent)
    if then is not None:
        then(*args)


def with_parent_watch(initializer: Callable[..., Any] | None = None,
                      initargs: tuple[Any, ...] = ()) -> dict[str, Any]:
    """``initializer``/``initargs`` keyword arguments for a ``ProcessPoolExecutor`` whose
    workers exit with this process, running ``initializer(*initargs)`` after that."""
    return {"initializer": pool_initializer,
            "initargs": (os.getpid(), initializer, *initargs)}
