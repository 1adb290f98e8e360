"""CPU thread policy of the command line (medforensics.common.runtime)."""

from __future__ import annotations

import pytest
import torch

from medforensics.errors import ConfigError
from medforensics.common.runtime import configure_threads, decode_workers, default_threads


@pytest.fixture()
def restore_threads(monkeypatch: pytest.MonkeyPatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


def test_default_is_half_the_cpus_at_least_one() -> None:
    assert [default_threads(c) for c in (1, 2, 3, 8)] == [1, 1, 1, 4]


def test_precedence_explicit_then_env_then_default(restore_threads) -> None:
    mp = restore_threads
    assert configure_threads(3) == 3 and torch.get_num_threads() == 3
    mp.setenv("OMP_NUM_THREADS", "2")
    assert configure_threads(None) == 2 and torch.get_num_threads() == 2
    mp.delenv("OMP_NUM_THREADS")
    assert configure_threads(None) == default_threads()
    for bad in (0, -1):
        with pytest.raises(ConfigError):
            configure_threads(bad)
    mp.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        configure_threads(None)


def test_cli_threads_option(restore_threads, tmp_path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    torch.set_num_threads(2)
    missing = str(tmp_path / "missing.csv")
    res = CliRunner().invoke(app, ["--threads", "1", "split", missing])
    assert torch.get_num_threads() == 1, res.output
    bad = CliRunner().invoke(app, ["--threads", "0", "split", missing])
    assert bad.exit_code == 2 and "threads must be >= 1" in bad.output


def test_decode_workers_one_per_cpu_for_batches() -> None:
    assert decode_workers(40, cpus=1) == 0          # nothing to overlap with
    assert decode_workers(3, cpus=8) == 0           # too few files to pay for a worker
    assert decode_workers(40, cpus=2) == 2          # decoding is most of the work
    assert decode_workers(40, cpus=3) == 3
    assert decode_workers(40, cpus=64) == 4         # capped
