"""Small helpers shared by several test modules.

``tests/`` has no ``__init__.py``, so pytest's default import mode puts it on ``sys.path``:
import with ``from _helpers import one_torch_thread  # noqa: F401``. An autouse fixture
imported into a test module applies to every test of that module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is much faster on a shared 2-core machine.

    Sets ``torch.set_num_threads(1)`` for the test and restores the previous count after it.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def run_torchrun(args: list[str], *, nproc: int = 2, timeout: int = 240,
                 reset: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m torch.distributed.run --standalone`` with ``nproc`` local ranks.

    One thread per rank (``OMP_NUM_THREADS=1``), output captured. Retried once, after
    ``reset()`` (e.g. removing the first attempt's run folder), when a rank was killed by
    SIGABRT: a gloo rank has been seen to abort in process-group teardown after its work was
    done and written (once in a fresh-clone CI run; not reproduced in 24 runs since, idle or
    under full load). Any other failure, or a second abort, is returned as it is.

    Args:
        args: the worker script and its arguments.
        nproc: local ranks.
        timeout: seconds per attempt.
        reset: called before the retry.

    Returns:
        The completed process of the last attempt.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--standalone", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 and "Signal 6 (SIGABRT)" in proc.stdout + proc.stderr:
        if reset is not None:
            reset()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc
