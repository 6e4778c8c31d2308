"""`python -m streams mark` end to end: every worker reads every marker, and before/after follows the latest.

Two workers share two orders partitions, so each holds only its own orders;
the markers topic is read whole by both. Orders are spread over ten minutes of
event time; a marker is written in the middle, then a later one: the periods
each worker reports must split its orders exactly at the latest marker's
window, and summed over the workers they hold every order.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.ops.broker import free_port
from streams.ops.traffic import OrderMaker, TrafficShape
from tests.harness import REPO, Cluster, Worker, cluster, wait_until

PARTITIONS = 2
ORDERS = 600
SPACING = 1.0  # seconds of event time between orders: ten minutes


def mark(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "mark", *args], env={**os.environ, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, list[Worker], list[float]]]:
    tmp: Path = tmp_path_factory.mktemp("markers")
    base = (time.time() - 900) // 60 * 60
    maker = OrderMaker(random.Random(7), TrafficShape())
    times = [base + n * SPACING for n in range(ORDERS)]
    events = []
    for t in times:
        document = maker.order(t)
        events.append((str(document["order_id"]).encode(), orjson.dumps(document), None))
    with cluster(tmp, {"CROSSSELL_PARTITIONS": str(PARTITIONS), "CROSSSELL_SESSION_TIMEOUT_SECONDS": "6",
                       "CROSSSELL_REBALANCE_TIMEOUT_SECONDS": "6"}) as running_cluster:
        workers = [running_cluster.worker().start() for _ in range(2)]
        for worker in workers:
            worker.wait_serving()
        running_cluster.produce(events)

        def applied() -> bool:
            counts = [w.sample("crosssell_orders_total") or 0 for w in workers]
            return sum(counts) == ORDERS and all(counts)
        wait_until(applied, 120, f"two workers to apply {ORDERS} orders between them")
        yield running_cluster, workers, times


def _periods(worker: Worker) -> dict[str, object] | None:
    return orjson.loads(worker.get("/api/experiments"))["marker"]  # type: ignore[no-any-return]


def test_every_worker_splits_its_orders_at_the_latest_marker(
        running: tuple[Cluster, list[Worker], list[float]]) -> None:
    running_cluster, workers, times = running
    env = running_cluster.base_env
    assert all(_periods(w) is None for w in workers)
    for text, at in (("launched AI assistant", times[0] + 300 + 17), ("moved the widget", times[0] + 420 + 5)):
        done = mark(env, text, "--at", str(at))
        assert done.returncode == 0, done.stderr
        start = at // 60 * 60

        def every_worker_uses_it(text: str = text) -> bool:
            return all((_periods(w) or {}).get("text") == text for w in workers)
        wait_until(every_worker_uses_it, 30, f"both workers to compare around {text!r}")
        reports = [_periods(w) for w in workers]
        before = sum(r["before"]["orders"] for r in reports)  # type: ignore[index]
        after = sum(r["after"]["orders"] for r in reports)  # type: ignore[index]
        assert (before, after) == (sum(t < start for t in times), sum(t >= start for t in times))
        for worker, report in zip(workers, reports, strict=True):
            assert report["window_start"] == start  # type: ignore[index]
            assert report["source"] == "topic"  # type: ignore[index]
            assert worker.sample("crosssell_experiment_marker_seconds") == start
            assert worker.sample("crosssell_period_orders", period="after") == report["after"]["orders"]  # type: ignore[index]
    listed = [orjson.loads(line) for line in mark(env, "--list").stdout.splitlines()]
    assert [row["text"] for row in listed] == ["launched AI assistant", "moved the widget"]
    assert [row["text"] for row in orjson.loads(workers[0].get("/api/experiments"))["markers"]] == \
        ["launched AI assistant", "moved the widget"]


@pytest.mark.parametrize(("args", "complaint"), [
    (("",), "empty"),
    (("launched", "--at", "2999-01-01T00:00:00Z"), "in the future"),
    (("launched", "--at", "yesterday"), "--at='yesterday' is not a time"),
])
def test_a_marker_that_cannot_mean_anything_exits_2_and_writes_nothing(
        running: tuple[Cluster, list[Worker], list[float]], args: tuple[str, ...], complaint: str) -> None:
    running_cluster, workers, _ = running
    before = len(orjson.loads(workers[0].get("/api/experiments"))["markers"])
    done = mark(running_cluster.base_env, *args)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    time.sleep(1)
    assert len(orjson.loads(workers[0].get("/api/experiments"))["markers"]) == before


def test_an_unreachable_broker_exits_3_naming_the_setting() -> None:
    env = {"CROSSSELL_BROKER_URL": f"kafka://127.0.0.1:{free_port()}", "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": "2"}
    done = mark(env, "launched AI assistant")
    assert done.returncode == 3 and "CROSSSELL_BROKER_URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
