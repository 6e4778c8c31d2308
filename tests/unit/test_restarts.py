"""streams.ops.restarts: when `run` restarts an exited worker, after how long, and when it gives up.

The policy is pure (times passed in); the restarting itself runs real child processes (small
Python scripts standing in for the worker, on a free loopback port), no mocks.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from streams.ops.broker import LOOPBACK, BrokerError, free_port
from streams.ops.restarts import PRODUCER_STOPPED_EXIT, RestartedWorker, RestartPolicy, exit_reason

FINAL = {2: "a bad setting", 3: "the broker is unreachable"}


# (seconds since the first exit, seconds the worker was ready before it exited) -> the wait, or None: give up
@pytest.mark.parametrize(("exits", "expected"), [
    pytest.param([(0, 0)], [1.0], id="first exit: the first delay"),
    pytest.param([(0, 5), (10, 5), (20, 5), (30, 5)], [1.0, 2.0, 4.0, 8.0], id="quick exits double the delay"),
    pytest.param([(0, 0), (1, 0), (3, 0), (7, 0), (15, 0), (31, 0)], [1.0, 2.0, 4.0, 8.0, 16.0, None],
                 id="a worker that never gets ready is given up after 5 restarts"),
    pytest.param([(0, 0), (100, 0), (200, 0), (250, 0), (290, 0), (310, 0)], [1.0, 2.0, 4.0, 8.0, 16.0, 30.0],
                 id="the delay stops at 30 s; only restarts within 300 s count"),
    pytest.param([(0, 0), (10, 0), (100, 61), (110, 0)], [1.0, 2.0, 1.0, 2.0],
                 id="a worker that stayed ready 60 s starts the back-off again"),
    pytest.param([(0, 3600), (3700, 3600), (7400, 3600)], [1.0, 1.0, 1.0], id="rare exits are always restarted"),
])
def test_restart_policy(exits: list[tuple[float, float]], expected: list[float | None]) -> None:
    policy = RestartPolicy()
    assert [policy.next_delay(1000.0 + at, ready_for) for at, ready_for in exits] == expected


def test_a_given_up_policy_stays_given_up_within_the_period() -> None:
    policy = RestartPolicy(max_restarts=1, within=300)
    assert policy.next_delay(0.0, 0.0) == 1.0
    assert policy.next_delay(10.0, 0.0) is None
    assert policy.next_delay(20.0, 0.0) is None
    assert policy.next_delay(301.0, 0.0) == 2.0


@pytest.mark.parametrize(("returncode", "reason"), [
    (-signal.SIGKILL, "was killed by SIGKILL"),
    (1, "exited with code 1"),
    (PRODUCER_STOPPED_EXIT, "exited with code 4 (its producer stopped for good)"),
])
def test_exit_reason_says_how_the_worker_ended(returncode: int, reason: str) -> None:
    assert exit_reason(returncode) == reason


def test_the_producer_watchdogs_exit_code_is_the_one_described() -> None:
    from streams.runtime.app import PRODUCER_STOPPED_EXIT as APP_EXIT

    assert PRODUCER_STOPPED_EXIT == APP_EXIT


def fake_worker(starts: Path, *, exit_code: int | None = None, port: int | None = None) -> list[str]:
    """A child that records its start in ``starts``, then exits with ``exit_code`` or answers 200 on ``port``."""
    body = (f"open({str(starts)!r}, 'a').write('start\\n')\n"
            + (f"sys.exit({exit_code})\n" if exit_code is not None else
               "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
               "class Ready(BaseHTTPRequestHandler):\n"
               "    def do_GET(self):\n"
               "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
               f"HTTPServer(({LOOPBACK!r}, {port}), Ready).serve_forever()\n"))
    return [sys.executable, "-c", "import sys\n" + body]


def count(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0



def test_a_final_exit_code_is_not_restarted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    starts = tmp_path / "starts"
    with RestartedWorker(fake_worker(starts, exit_code=2), {}, f"http://{LOOPBACK}:{free_port()}/", FINAL,
                         RestartPolicy(first_delay=0.01)) as worker:
        assert worker.start(timeout=30) == 2, "the worker's own code, for run to exit with"
        assert "exited with code 2 (a bad setting, see its message above) before serving" in capsys.readouterr().err
        assert worker.keep_up() == 2
    assert count(starts) == 1
    assert "exited with code 2 (a bad setting, see its message above); a restart cannot fix that" in \
        capsys.readouterr().err


def test_a_worker_that_keeps_exiting_is_given_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    starts = tmp_path / "starts"
    with RestartedWorker(fake_worker(starts, exit_code=1), {}, f"http://{LOOPBACK}:{free_port()}/", FINAL,
                         RestartPolicy(first_delay=0.01, max_delay=0.05)) as worker:
        with pytest.raises(BrokerError):
            worker.start(timeout=30)
        assert worker.keep_up() == 1
    assert count(starts) == 1 + 5, "the first start and 5 restarts"
    err = capsys.readouterr().err
    assert err.count("restarting it in") == 5
    assert "after 5 restarts within 300s: giving up" in err


def test_a_killed_worker_is_started_again_and_waited_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    starts, port = tmp_path / "starts", free_port()
    with RestartedWorker(fake_worker(starts, port=port), {}, f"http://{LOOPBACK}:{port}/health/ready", FINAL,
                         RestartPolicy(first_delay=0.01)) as worker:
        worker.start(timeout=30)
        first = worker.process
        assert first is not None and worker.keep_up() is None
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert worker.keep_up() is None, "restarted"
        assert worker.process is not first and worker.process is not None and worker.process.poll() is None
        assert worker.ready_at is not None and worker.ready_at <= time.monotonic()
    assert worker.process.poll() is not None, "stopped with the block"
    assert count(starts) == 2
    err = capsys.readouterr().err
    assert "the worker was killed by SIGKILL; restarting it in 0.01s" in err
    assert "worker restarted and ready" in err
