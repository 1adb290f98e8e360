"""Process-wide CPU thread settings for the command line (and for scripts that want them).

PyTorch's default on CPU is one intra-op thread per core, with OpenMP threads that spin while
they wait. That is fastest on an idle machine and very slow on a shared one: on the 2-core
development machine, with one other busy process, training the ``patch`` model ran at ~100
patches/s with 2 spinning threads against ~1 600 with one thread (``python -c "from
medforensics.models.bench import training_throughput as t; print(t('patch', threads=2))"``).
So the command line defaults to half the usable cores (at least one) with passive waiting,
unless the user chose otherwise (``--threads N`` or ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import logging
import os
import sys

from medforensics.errors import ConfigError

__all__ = ["usable_cpus", "default_threads", "configure_threads", "decode_workers"]

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask where available), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cpus: int | None = None) -> int:
    """Half the usable CPUs, at least 1: leaves room for decode workers and other jobs."""
    return max(1, (usable_cpus() if cpus is None else int(cpus)) // 2)


def decode_workers(n_files: int, cpus: int | None = None, *, min_files: int = 4,
                   max_workers: int = 4) -> int:
    """Decode-ahead worker processes for a batch of ``n_files`` (the default of ``identify``).

    One per usable CPU, at most ``max_workers``; none for fewer than ``min_files`` files
    (starting a worker costs more than it saves) or on one CPU. Decoding is most of the work
    per file, and this process mostly waits for decoded files (the model and the unit step
    take a fraction of a decode), so the workers get every CPU (docs/performance.md).
    """
    n = usable_cpus() if cpus is None else max(1, int(cpus))
    if n_files < min_files or n < 2:
        return 0
    return min(max_workers, n)


def configure_threads(threads: int | None = None) -> int:
    """Set the intra-op thread count of this process (before or after torch is imported).

    Order of precedence: ``threads``; else ``OMP_NUM_THREADS`` from the environment; else
    :func:`default_threads`. ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (idle threads sleep
    instead of spinning); it only takes effect if torch has not been imported yet.

    Args:
        threads: explicit thread count (>= 1) or None.

    Returns:
        The thread count in effect.

    Raises:
        ConfigError: ``threads`` < 1 or a malformed ``OMP_NUM_THREADS``.
    """
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        n = int(threads)
    elif os.environ.get("OMP_NUM_THREADS"):
        try:
            n = int(os.environ["OMP_NUM_THREADS"])
        except ValueError:
            raise ConfigError(
                f"OMP_NUM_THREADS must be an integer, got {os.environ['OMP_NUM_THREADS']!r}"
            ) from None
        if n < 1:
            raise ConfigError(f"OMP_NUM_THREADS must be >= 1, got {n}")
    else:
        n = default_threads()
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    cv2 = sys.modules.get("cv2")  # OpenCV (copy-move feature search) reads the env on import
    if cv2 is not None:
        cv2.setNumThreads(n)
    log.debug("intra-op threads: %d", n)
    return n
