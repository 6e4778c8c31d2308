"""``python -m streams run`` starts its worker again when it exits, as compose's restart policy does.

``run`` is started as a terminal would start it (embedded broker, worker, demo traffic, free
ports); its worker, found among the run's own descendants, is killed with SIGKILL as the kernel
kills a process out of memory. The run must live on, say so, wait for the new worker to recover
from the changelog and count again; and stop as before, leaving no process. A worker that
cannot start again (its web port taken meanwhile: exit code 2) stops ``run`` at once.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from streams.ops.broker import LOOPBACK, free_port
from tests.harness import Worker, wait_until
from tests.integration.test_lifecycle import WAYS, alive, assert_all_gone, clean_env, descendants, start, stop_as


def run_with_demo_traffic(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Worker, Path]:
    """``run`` with demo traffic, once the worker counts events; a Worker scraping what the run's worker serves."""
    env = clean_env(CROSSSELL_WEB_PORT=str(free_port()), CROSSSELL_DATA_DIR=str(tmp_path / "data"),
                    CROSSSELL_LOG_LEVEL="warning")
    log = tmp_path / "run.log"
    process = start([sys.executable, "-m", "streams", "run", "--rate", "20"], env, log, "sending demo orders", 150)
    scraper = Worker(env, log)
    # Enough for a few flushes to be in the changelog: a restarted worker must not count from zero.
    wait_until(lambda: (scraper.sample("crosssell_events_total") or 0) >= 40, 90, "the worker counted no event")
    return process, scraper, log


def the_worker(run: subprocess.Popen[bytes]) -> int:
    """The pid of the run's ``python -m streams worker`` (not the broker's or the generator's)."""
    workers = [pid for pid in descendants(run.pid) if command_line(pid)[-2:] == ["streams", "worker"]]
    assert len(workers) == 1, f"one worker expected among the run's processes, found {workers}"
    return workers[0]


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


def kill_and_wait(pid: int) -> None:
    """SIGKILL ``pid`` and wait until the run reaped it: only then are all its threads gone, and its sockets
    with them (a killed main thread shows as a zombie while the others still exit, holding the web port)."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, f"the worker {pid} was not reaped", interval=0.01)


def ready(scraper: Worker) -> bool:
    try:
        with urllib.request.urlopen(f"{scraper.base_url}/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_run_restarts_a_killed_worker_which_recovers_and_counts_on(tmp_path: Path) -> None:
    process, scraper, log = run_with_demo_traffic(tmp_path)
    started = descendants(process.pid)
    try:
        first = the_worker(process)
        # A scraper's keep-alive connection is open when the worker dies (its socket lingers on the
        # web port): the restarted worker must still find the port free.
        scrape = http.client.HTTPConnection(LOOPBACK, scraper.port, timeout=5)
        scrape.request("GET", "/metrics")
        scrape.getresponse().read()
        counted_before = scraper.sample("crosssell_events_total") or 0
        kill_and_wait(first)

        wait_until(lambda: "worker restarted and ready" in log.read_text(errors="replace")
                   or process.poll() is not None, 150, "the run did not say the worker is back")
        text = log.read_text(errors="replace")
        assert process.poll() is None, f"the run stopped when its worker was killed:\n{text[-3000:]}"
        assert "the worker was killed by SIGKILL; restarting it in 1s" in text, text[-3000:]
        assert ready(scraper), "the restarted worker is not ready"
        second = the_worker(process)
        assert second != first
        started |= descendants(process.pid)
        recovered = scraper.sample("crosssell_events_total") or 0
        assert recovered > 0, "the restarted worker counted from zero: its state was not recovered"
        wait_until(lambda: (scraper.sample("crosssell_events_total") or 0) > max(recovered, counted_before), 90,
                   f"crosssell_events_total did not grow after the restart (from {recovered}, {counted_before} "
                   f"before the kill)")
        assert text.count("restarting it in") == 1
        scrape.close()
    finally:
        stop_as("sigterm", process)
        assert_all_gone(process, started, log)
    assert process.returncode == 0, log.read_text(errors="replace")[-3000:]


@pytest.mark.slow
def test_run_stops_when_the_restarted_worker_exits_with_a_setting_error(tmp_path: Path) -> None:
    process, scraper, log = run_with_demo_traffic(tmp_path)
    started = descendants(process.pid)
    with socket.socket() as squatter:
        try:
            kill_and_wait(the_worker(process))
            # Another program takes the web port while the worker is down: a restart cannot fix that.
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past its closed connections
            squatter.bind((LOOPBACK, scraper.port))
            squatter.listen()
            process.wait(timeout=120)
        finally:
            stop_as("sigterm", process)
            assert_all_gone(process, started, log)
    text = log.read_text(errors="replace")
    assert process.returncode == 2, text[-3000:]
    assert f"CROSSSELL_WEB_PORT={scraper.port}" in text and "in use" in text, text[-3000:]
    assert "a restart cannot fix that: stopping" in text, text[-3000:]
    assert text.count("restarting it in") == 1, "restarted more than once"
    assert "Traceback" not in text


def restarted_worker_started(run: subprocess.Popen[bytes], killed: int) -> bool:
    return any(pid != killed and command_line(pid)[-2:] == ["streams", "worker"] for pid in descendants(run.pid))


@pytest.mark.slow
@pytest.mark.parametrize(("way", "moment"), [("ctrl-c", "back-off"), *((way, "restart") for way in WAYS)])
def test_run_stopped_while_it_restarts_its_worker_leaves_no_process(tmp_path: Path, way: str, moment: str) -> None:
    process, _, log = run_with_demo_traffic(tmp_path)
    started = descendants(process.pid)
    try:
        killed = the_worker(process)
        kill_and_wait(killed)
        wait_until(lambda: "restarting it in" in log.read_text(errors="replace"), 10, "the run did not restart",
                   interval=0.05)
        if moment == "back-off":
            assert not restarted_worker_started(process, killed), "too late: the back-off is over"
        else:  # the new worker runs and recovers, not ready yet
            wait_until(lambda: restarted_worker_started(process, killed), 10, "no new worker started")
            started |= descendants(process.pid)
            assert "worker restarted and ready" not in log.read_text(errors="replace"), "too late: it is ready"
        stop_as(way, process)
        if way != "parent-sigkill":
            # The run stops what it started before it exits, the new worker too: the parent-death
            # signal is only the safety net for a run killed outright.
            process.wait(timeout=90)
            left = {pid for pid in started if alive(pid)}
            assert not left, f"still running when the run exited: {left}"
    finally:
        if process.poll() is None:
            stop_as("sigterm", process)
        assert_all_gone(process, started, log)
