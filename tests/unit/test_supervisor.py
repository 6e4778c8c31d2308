"""streams.ops.supervisor: no child outlives what started it, however that stops.

Real processes (Python children of this test), no mocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.ops.supervisor import Supervisor, spawn, stop

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def read_pid(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.05)
    raise AssertionError(f"no pid written to {path}")


def test_stop_ends_the_child_and_its_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    # The child starts a grandchild in its own group (as Faust's or Tansu's helpers would), then ignores SIGTERM.
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"p = subprocess.Popen({SLEEPER!r}); open({str(pid_file)!r}, 'w').write(f'{{p.pid}}\\n'); "
              "time.sleep(600)")
    child = spawn([sys.executable, "-c", script])
    grandchild = read_pid(pid_file)
    stop(child, timeout=1.0)
    assert child.poll() is not None
    assert wait_gone(grandchild), "the grandchild outlived the stopped child"


def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    parent_script = ("import sys, time; from streams.ops.supervisor import spawn; "
                     f"c = spawn({SLEEPER!r}); open({str(pid_file)!r}, 'w').write(f'{{c.pid}}\\n'); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", parent_script], cwd=Path(__file__).resolve().parents[2])
    try:
        child = read_pid(pid_file)
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(child), "the child outlived its parent's SIGKILL"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_supervisor_stops_its_children_in_reverse_order_on_an_error(tmp_path: Path) -> None:
    order = tmp_path / "order"
    def child(name: str) -> list[str]:
        return [sys.executable, "-c",
                "import signal, sys, time\n"
                f"def bye(*_):\n    open({str(order)!r}, 'a').write({name!r} + '\\n'); sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, bye)\n"
                f"open({str(order)!r} + '.ready', 'a').write('x')\n"
                "time.sleep(600)"]
    started = []
    try:
        with Supervisor(stop_timeout=5) as supervisor:
            started = [supervisor.spawn(child(name)) for name in ("broker", "worker", "generator")]
            deadline = time.monotonic() + 10
            while (Path(str(order) + ".ready").read_text() if Path(str(order) + ".ready").exists() else "") != "xxx":
                assert time.monotonic() < deadline, "children did not start"
                time.sleep(0.05)
            raise RuntimeError("something failed while they ran")
    except RuntimeError:
        pass
    assert all(p.poll() is not None for p in started)
    assert order.read_text().split() == ["generator", "worker", "broker"]
