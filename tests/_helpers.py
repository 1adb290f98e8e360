"""Small helpers shared by several test modules.

``tests/`` has no ``__init__.py``, so pytest's default import mode puts it on ``sys.path``:
import with ``from _helpers import one_torch_thread  # noqa: F401``. An autouse fixture
imported into a test module applies to every test of that module.
"""

from __future__ import annotations

from collections.abc import Iterator

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
