"""Worker processes exit when their parent is killed (kill -9 of ingest, prepare, identify)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

# Each script starts the command's real process pool with tasks that block for 10 minutes,
# prints "ready" once the workers run, and waits to be killed.
_SCRIPTS = {
    "ingest": """
        import time
        import medforensics.data.manifest as m
        def block(paths, verify, force):
            time.sleep(600)
            return []
        m.scan_chunk = block  # the pool forks: the workers run this
        print("ready", flush=True)
        m._scan_all([str(i) for i in range(8)], 2, "process", 1, False, False, False)
    """,
    "prepare": """
        import time
        import medforensics.data.store.prepare as s
        def block(path, sha, want_pixels, want_paper):
            time.sleep(600)
        s._decode_task = block
        print("ready", flush=True)
        s._run_pool([(str(i), "", True, False) for i in range(4)], 2, lambda res: None)
    """,
    "identify": """
        import time
        from medforensics.source.patches import map_ordered
        print("ready", flush=True)
        for _ in map_ordered(time.sleep, [600] * 4, workers=2):  # spawned workers
            pass
    """,
}


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("command", sorted(_SCRIPTS))
def test_workers_exit_when_parent_is_killed(command: str) -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SCRIPTS[command])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    workers: set[int] = set()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            workers = _children(proc.pid)
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, f"{command}: workers did not start"
        time.sleep(1.0)  # the workers are inside their tasks
        assert all(_alive(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), f"{command}: workers outlived the parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # never leave a stray process behind, whatever happened
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_watchdog_without_death_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback alone (no prctl): a grandchild exits within the check interval."""
    script = textwrap.dedent("""
        import os, sys, time
        import medforensics.common.workers as w
        w._set_pdeathsig = lambda sig: False
        pid = os.fork()
        if pid == 0:
            w.exit_with_parent(interval=0.1)
            time.sleep(600)
            os._exit(0)
        print(pid, flush=True)
        time.sleep(600)
    """)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            text=True)
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        time.sleep(0.5)
        assert _alive(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end and _alive(child):
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if proc.poll() is None:
            proc.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
