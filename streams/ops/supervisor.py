"""Child processes that never outlive what started them.

Every process the project starts (the embedded broker, workers, the traffic
generator, the benchmark's and the tests' children) goes through here:

* :func:`spawn` starts it in a session of its own, so a Ctrl-C in the terminal
  reaches only the parent, which then stops its children in order; and, on
  Linux, with a parent-death signal, so that even a parent killed with SIGKILL
  (nothing of it left to clean up) takes its children with it. Linux sends it
  when the *thread* that started the child ends: spawn from the main thread;
* :func:`stop` ends it: SIGTERM to its whole process group, and SIGKILL to the
  group if it has not exited in time, so grandchildren go too;
* :class:`Supervisor` keeps what it started and stops it in reverse order on
  exit, on an error as on success.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when its parent dies; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def spawn(command: Sequence[str], env: Mapping[str, str] | None = None, *, log: IO[bytes] | int | None = None,
          cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, ended by SIGTERM if this process dies; output to ``log``."""
    return subprocess.Popen(
        list(command), env=dict(env) if env is not None else None, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True, preexec_fn=_parent_death_signal(),
    )


def stop(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM to the process group of ``process``; SIGKILL to the group if it has not exited within ``timeout``."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    # Whatever the group still holds (a grandchild that ignored SIGTERM) goes with it.
    _signal_group(process, signal.SIGKILL)


def kill(process: subprocess.Popen[Any]) -> None:
    """SIGKILL to ``process`` alone (a crash, for fault tests), and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    # spawn() made the child the leader of a new group whose id is its pid; the group
    # outlives the child while any grandchild is in it.
    if process.pid != os.getpgrp():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)


class Supervisor:
    """The processes one command started; stopped in reverse order when it exits."""

    def __init__(self, stop_timeout: float = 15.0) -> None:
        self.stop_timeout = stop_timeout
        self.children: list[subprocess.Popen[bytes]] = []

    def spawn(self, command: Sequence[str], env: Mapping[str, str] | None = None, *,
              log: IO[bytes] | int | None = None, cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
        child = spawn(command, env, log=log, cwd=cwd)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        while self.children:
            child = self.children.pop()
            try:
                stop(child, self.stop_timeout)
            except Exception as exc:  # stop the others all the same
                print(f"crosssell: could not stop pid {child.pid}: {exc}", file=sys.stderr)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop_all()


@contextlib.contextmanager
def supervised(stop_timeout: float = 15.0) -> Iterator[Supervisor]:
    with Supervisor(stop_timeout) as supervisor:
        yield supervisor
