"""Child processes of the benchmark: start, watch (/proc), and always stop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from streams.ops.supervisor import spawn, stop

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM, the peak resident set size, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise ChildFailed(f"{self.name} exited with code {self.process.returncode}; "
                              f"its log ({self.log_path}) ends:\n{self.log_tail()}")


class ChildFailed(RuntimeError):
    """A benchmark child process died or did not finish in time."""


@dataclass
class Children:
    """Every process the benchmark starts; ``stop_all`` ends them, gracefully first."""

    log_dir: Path
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # Own process group: a Ctrl-C reaches the harness only, which then stops the children in order.
        process = spawn(command, env if env is not None else os.environ, log=log)
        child = Child(name, process, log_path, log)
        self.started.append(child)
        return child

    def stop(self, child: Child, timeout: float = 15.0) -> None:
        stop(child.process, timeout)
        child._log.close()

    def stop_all(self) -> None:
        for child in reversed(self.started):
            try:
                self.stop(child)
            except Exception as exc:
                print(f"bench: could not stop {child.name} (pid {child.pid}): {exc}", file=sys.stderr)
        self.started.clear()


@contextlib.contextmanager
def children(log_dir: Path) -> Iterator[Children]:
    group = Children(log_dir)
    try:
        yield group
    finally:
        group.stop_all()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_until(condition: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(interval)
    return False
