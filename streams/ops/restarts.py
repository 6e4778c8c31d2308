"""The worker of ``python -m streams run`` comes back when it exits, as compose's restart policy brings it back.

The worker exits on purpose to recover (code 4 when its producer stopped for good, see
streams/runtime/app.py), and any crash (killed for memory, SIGKILL) is recovered exactly from
the changelog when it starts again: the embedded broker keeps the changelogs for as long as
``run`` lives. So ``run`` starts it again with the same command and environment, after a
back-off, and waits until it is ready. It does not when a restart cannot help: a bad setting
(the worker's exit code 2) or an unreachable broker (3), or a worker that keeps exiting.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from streams.ops.broker import BrokerError
from streams.ops.supervisor import spawn, stop

STOP_TIMEOUT = 15.0
# streams.runtime.app.PRODUCER_STOPPED_EXIT (not imported: it would load Faust into `run`).
PRODUCER_STOPPED_EXIT = 4


@dataclass
class RestartPolicy:
    """How long to wait before restarting a worker that exited, or None: give up. Pure: the caller passes the times.

    The wait starts at ``first_delay`` and doubles up to ``max_delay`` while the worker keeps
    exiting soon after it became ready; a worker that stayed ready ``settled_after`` seconds
    starts from ``first_delay`` again. More than ``max_restarts`` exits within ``within``
    seconds is a worker that cannot run: restarting it forever would only hide that.
    """

    first_delay: float = 1.0
    max_delay: float = 30.0
    settled_after: float = 60.0
    max_restarts: int = 5
    within: float = 300.0
    restarted_at: list[float] = field(default_factory=list)
    delay: float = 0.0

    def next_delay(self, now: float, ready_for: float) -> float | None:
        """The wait before restarting a worker that exited at ``now`` after ``ready_for`` seconds ready."""
        recent = [at for at in self.restarted_at if now - at < self.within]
        if len(recent) >= self.max_restarts:
            return None
        settled = ready_for >= self.settled_after or not self.delay
        self.delay = self.first_delay if settled else min(2 * self.delay, self.max_delay)
        self.restarted_at = [*recent, now]
        return self.delay


def exit_reason(returncode: int) -> str:
    """How a process ended, for a person: "exited with code 4 (...)" or "was killed by SIGKILL"."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    if returncode == PRODUCER_STOPPED_EXIT:
        return f"exited with code {returncode} (its producer stopped for good)"
    return f"exited with code {returncode}"


class RestartedWorker:
    """One worker process, started again whenever it exits, until a restart cannot help.

    ``final_exits`` maps the exit codes that are not restarted to what they mean; the worker
    printed its own message for them. Stops the current process on exit from the ``with`` block.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str], ready_url: str,
                 final_exits: Mapping[int, str], policy: RestartPolicy | None = None) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.ready_url = ready_url
        self.final_exits = dict(final_exits)
        self.policy = policy or RestartPolicy()
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_at: float | None = None

    def start(self, timeout: float) -> int | None:
        """Start the worker; None once it is ready. Its exit code if it exits first with one of ``final_exits``
        (its own message said why: ``run`` exits with that code); BrokerError if it exits first otherwise, or is
        not ready in time."""
        process = self._spawn()
        if self._wait_ready(timeout):
            return None
        if process.returncode in self.final_exits:
            _say(f"the worker exited with code {process.returncode} ({self.final_exits[process.returncode]}, "
                 "see its message above) before serving")
            return process.returncode
        raise BrokerError(f"the worker exited with code {process.returncode} before serving {self.ready_url}")

    def keep_up(self) -> int | None:
        """None while the worker runs, after restarting it if it had exited; otherwise the exit code
        for ``run``, once it said why the worker is not restarted."""
        while self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            stop(self.process, STOP_TIMEOUT)  # what its process group may still hold
            if code in self.final_exits:
                _say(f"the worker exited with code {code} ({self.final_exits[code]}, see its message above); "
                     "a restart cannot fix that: stopping")
                return code
            now = time.monotonic()
            delay = self.policy.next_delay(now, now - self.ready_at if self.ready_at is not None else 0.0)
            if delay is None:
                _say(f"the worker {exit_reason(code)} after {self.policy.max_restarts} restarts within "
                     f"{self.policy.within:g}s: giving up. Its log above says why; fix that and start again.")
                return 1
            _say(f"the worker {exit_reason(code)}; restarting it in {delay:g}s "
                 "(it recovers its state from the changelog)")
            time.sleep(delay)
            self._spawn()
            if self._wait_ready(timeout=None):
                _say(f"worker restarted and ready (pid {self.process.pid})")
        return None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, STOP_TIMEOUT)

    def __enter__(self) -> RestartedWorker:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.ready_at = None
        self.process = spawn(self.command, self.env)
        return self.process

    def _wait_ready(self, timeout: float | None) -> bool:
        """True once the worker is ready; False if it exited first. A restarted worker recovers its
        state before it is ready, which takes as long as its changelog: no timeout then."""
        assert self.process is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(self.ready_url, timeout=2) as response:
                if response.status == 200:
                    self.ready_at = time.monotonic()
                    return True
            time.sleep(0.5)
        raise BrokerError(f"the worker did not serve {self.ready_url} within {timeout:g}s")


def _say(message: str) -> None:
    print(f"crosssell: {message}", file=sys.stderr, flush=True)
