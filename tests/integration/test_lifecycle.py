"""No process outlives the command that started it, however that command stops.

``python -m streams run`` (embedded broker, worker, generator) and ``python -m
streams broker`` are started as a terminal would start them, then stopped by
Ctrl-C (SIGINT to the terminal's process group), SIGTERM, SIGHUP (terminal
closed) or SIGKILL of the command itself; every process they started must be
gone. Also: a busy web port is reported before anything starts, and "worker up"
is printed only once the worker is ready.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streams.ops.broker import LOOPBACK, free_port
from tests.harness import REPO

WAYS = ["ctrl-c", "sigterm", "sighup", "parent-sigkill"]


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def start(command: list[str], env: dict[str, str], log: Path, ready: str, timeout: float) -> subprocess.Popen[bytes]:
    """Start ``command`` as a terminal would (its own process group), once ``ready`` shows in its output."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while ready not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{command} did not print {ready!r}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return process


def stop_as(way: str, process: subprocess.Popen[bytes]) -> None:
    if way == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # the terminal signals its foreground process group
    else:
        process.send_signal({"sigterm": signal.SIGTERM, "sighup": signal.SIGHUP,
                             "parent-sigkill": signal.SIGKILL}[way])


def assert_all_gone(process: subprocess.Popen[bytes], started: set[int], log: Path) -> None:
    try:
        process.wait(timeout=90)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid for pid in started if alive(pid)}
        assert not left, f"left running: {left}; log:\n{log.read_text(errors='replace')[-2000:]}"
    finally:
        for pid in started | {process.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("way", WAYS)
def test_run_leaves_no_process_behind(tmp_path: Path, way: str) -> None:
    env = clean_env(CROSSSELL_WEB_PORT=str(free_port()), CROSSSELL_DATA_DIR=str(tmp_path / "data"),
                    CROSSSELL_LOG_LEVEL="warning")
    log = tmp_path / "run.log"
    process = start([sys.executable, "-m", "streams", "run", "--rate", "5"], env, log, "sending demo orders", 150)
    started = descendants(process.pid)
    assert len(started) >= 3, f"broker, worker and generator expected, found {started}"
    stop_as(way, process)
    assert_all_gone(process, started, log)


@pytest.mark.parametrize("way", WAYS)
def test_broker_leaves_no_process_behind(tmp_path: Path, way: str) -> None:
    log = tmp_path / "broker.log"
    process = start([sys.executable, "-m", "streams", "broker", "--port", str(free_port())], clean_env(), log,
                    "CROSSSELL_BROKER_URL=", 30)
    started = descendants(process.pid)
    assert started, "the embedded broker process was not found"
    stop_as(way, process)
    assert_all_gone(process, started, log)


def test_a_busy_web_port_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "streams", "run"], cwd=REPO, capture_output=True, text=True,
                                env=clean_env(CROSSSELL_WEB_PORT=str(port)), timeout=60, check=False)
    assert result.returncode == 2, result
    assert f"CROSSSELL_WEB_PORT={port}" in result.stderr and "in use" in result.stderr
    assert "embedded broker" not in result.stdout + result.stderr, "something started before the check"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_worker_up_is_printed_once_the_worker_is_ready(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(CROSSSELL_WEB_PORT=str(port), CROSSSELL_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "run.log"
    process = start([sys.executable, "-m", "streams", "run", "--no-demo"], env, log, "worker up", 150)
    started = descendants(process.pid)
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health/ready", timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health/live", timeout=5) as response:
            assert response.status == 200
        text = log.read_text()
        assert re.search(r"no demo traffic; produce orders to 'orders'", text), text
        assert len(started) == 2, f"broker and worker only, found {started}"
    finally:
        stop_as("sigterm", process)
        assert_all_gone(process, started, log)


@pytest.mark.slow
def test_run_replays_the_users_own_history_instead_of_demo_traffic(tmp_path: Path) -> None:
    import random

    import orjson

    from streams.ops.traffic import OrderMaker, TrafficShape

    maker = OrderMaker(random.Random(4), TrafficShape())
    now = time.time()
    (tmp_path / "orders.ndjson").write_bytes(
        b"".join(orjson.dumps(maker.order(now - 600 + i)) + b"\n" for i in reversed(range(500))))
    port = free_port()
    env = clean_env(CROSSSELL_WEB_PORT=str(port), CROSSSELL_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "run.log"
    process = start([sys.executable, "-m", "streams", "run", "--replay", str(tmp_path / "orders.ndjson")], env, log,
                    "the worker keeps running", 150)
    started = descendants(process.pid)
    try:
        deadline = time.monotonic() + 60
        orders = None
        while time.monotonic() < deadline and orders != 500.0:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/summary", timeout=5) as response:
                orders = orjson.loads(response.read())["counters"]["orders"]
            time.sleep(0.5)
        assert orders == 500, f"the worker counted {orders} of the 500 orders replayed"
        assert "replayed" in log.read_text() and "sending demo orders" not in log.read_text()
    finally:
        stop_as("sigterm", process)
        assert_all_gone(process, started, log)
