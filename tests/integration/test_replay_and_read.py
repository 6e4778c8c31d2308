"""The user's own data and reading results back, through real commands on the embedded broker.

* A history file of 9,000 orders over six hours of event time, shuffled, is
  replayed (sorted by event time in chunks on disk): the worker counts exactly
  what an offline replay of the sorted orders gives, nothing late.
* ``python -m streams recommendations`` answers at once from the topics
  (partitions assigned, no group join), for all products or one.
* ``python -m streams generate`` keeps low rates (5/s and 0.5/s).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.ops.traffic import OrderMaker, TrafficShape
from tests.harness import (
    REPO,
    Cluster,
    assert_workers_match_truth,
    cluster,
    offline_ledgers,
    read_partitions,
    unique,
    wait_for_events,
    wait_until,
)

PARTITIONS = 2
ORDERS = 9_000
SETTINGS = {
    "CROSSSELL_PARTITIONS": str(PARTITIONS),
    "CROSSSELL_RECOMMENDATION_INTERVAL_SECONDS": "1",
    "CROSSSELL_MIN_SUPPORT": "2",
}


def command(running: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
    env.update(running.base_env)
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def history(path: Path) -> list[dict[str, object]]:
    """9,000 valid orders spread over the last six hours, written to ``path`` in shuffled order."""
    rng = random.Random(21)
    maker = OrderMaker(rng, TrafficShape(cross_sell_propensity=0.6, categories=4, products_per_category=10))
    start = time.time() - 6 * 3600
    orders = [maker.order(start + i * (6 * 3600 / ORDERS)) for i in range(ORDERS)]
    shuffled = orders[:]
    rng.shuffle(shuffled)
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in shuffled))
    return orders


@pytest.mark.slow
def test_a_shuffled_history_replays_exactly_and_its_lists_are_read_back(tmp_path: Path) -> None:
    with cluster(tmp_path, SETTINGS) as running:
        worker = running.worker().start().wait_serving()
        orders = history(tmp_path / "history.ndjson")
        replayed = command(running, "replay", str(tmp_path / "history.ndjson"), "--chunk-lines", "2000")
        assert replayed.returncode == 0, replayed.stderr
        assert "in event-time order" in replayed.stderr and "warning" not in replayed.stderr
        wait_for_events([worker], ORDERS, timeout=120)
        assert worker.sample("crosssell_events_late_total") == 0
        assert worker.sample("crosssell_orders_total") == ORDERS
        messages = read_partitions(running.bootstrap, running.settings.orders_topic, PARTITIONS, at_least=ORDERS)
        assert_workers_match_truth([worker], offline_ledgers(running.settings, messages), running.settings)

        # The recommendations, read back from their topics.
        wait_until(lambda: (worker.sample("crosssell_recommendation_updates_total") or 0) > 0, 60,
                   "recommendations to be published")
        time.sleep(2)
        started = time.monotonic()
        listed = command(running, "recommendations", "--horizon", "24h")
        took = time.monotonic() - started
        assert listed.returncode == 0, listed.stderr
        lists = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert lists and all(doc["horizon"] == "24h" and doc["companions"] for doc in lists)
        assert len({doc["product_id"] for doc in lists}) == len(lists), "one line per product"
        assert took < 15, f"reading the lists took {took:.1f}s"
        product = lists[0]["product_id"]
        one = command(running, "recommendations", product)
        assert one.returncode == 0, one.stderr
        docs = [orjson.loads(line) for line in one.stdout.splitlines()]
        assert {d["product_id"] for d in docs} == {product}
        assert {d["horizon"] for d in docs} <= set(running.settings.horizon_labels)
        assert orders  # the history was written


def test_a_replay_sent_as_it_is_warns_when_much_would_be_late(tmp_path: Path) -> None:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": "1"}) as running:
        history(tmp_path / "history.ndjson")
        replayed = command(running, "replay", str(tmp_path / "history.ndjson"), "--no-sort")
        assert replayed.returncode == 0, replayed.stderr
        assert "warning" in replayed.stderr and "CROSSSELL_GRACE_SECONDS=120s" in replayed.stderr


def timestamps(running: Cluster) -> list[float]:
    consumer = Consumer({"bootstrap.servers": running.bootstrap, "group.id": unique("rate"),
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(running.settings.orders_topic, 0, OFFSET_BEGINNING)])
    try:
        got: list[float] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got += [m.timestamp()[1] / 1000 for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        return sorted(got)
    finally:
        consumer.close()


@pytest.mark.parametrize(("rate", "duration"), [(5.0, 6.0), (0.5, 9.0)])
def test_generate_keeps_a_low_rate(tmp_path: Path, rate: float, duration: float) -> None:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": "1"}) as running:
        sent = command(running, "generate", "--rate", str(rate), "--duration", str(duration), "--late-share", "0",
                       "--invalid-share", "0", "--duplicate-share", "0")
        assert sent.returncode == 0, sent.stderr
        times = timestamps(running)
        measured = (len(times) - 1) / (times[-1] - times[0])
        assert measured == pytest.approx(rate, rel=0.10), f"{len(times)} events: {measured:.2f}/s"
