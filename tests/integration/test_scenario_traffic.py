"""``python -m streams generate`` with a profile and a scenario, on the embedded broker.

* ``--simulate 2h``: two hours of event time laid out before now, sent at once,
  with the scripted drop of the total's cross-sell between 1 h and 1 h 10 min;
* real time with a stall: no events during it, the rate on either side.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.orders.contract import Order, decode_order
from streams.orders.facts import order_facts
from tests.harness import Cluster, cluster, unique
from tests.integration.test_replay_and_read import command

NO_NOISE = ("--late-share", "0", "--invalid-share", "0", "--duplicate-share", "0")


def read_all(running: Cluster, quiet: float = 3.0) -> list[tuple[float, bytes]]:
    """(record timestamp in seconds, value) of every event of the one orders partition."""
    consumer = Consumer({"bootstrap.servers": running.bootstrap, "group.id": unique("read"),
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(running.settings.orders_topic, 0, OFFSET_BEGINNING)])
    try:
        got: list[tuple[float, bytes]] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
            if batch:
                last = time.monotonic()
            got += [(m.timestamp()[1] / 1000, m.value()) for m in batch]
        return got
    finally:
        consumer.close()


def test_simulate_lays_the_scenario_out_in_event_time_before_now(tmp_path: Path) -> None:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": "1"}) as running:
        started = time.time()
        sent = command(running, "generate", "--simulate", "2h", "--rate", "5", "--seed", "4",
                       "--scenario", "drop=total:all:100%@1h+10m", *NO_NOISE)
        assert sent.returncode == 0, sent.stderr
        assert time.time() - started < 60  # two hours of orders, sent as fast as possible
        events = read_all(running)
    orders = []
    for _, value in events:
        decoded = decode_order(value)
        assert isinstance(decoded, Order)
        orders.append(order_facts(decoded))
    assert len(orders) == pytest.approx(2 * 3600 * 5, rel=0.05)
    times = [o.event_time for o in orders]
    assert times == sorted(times) and times[-1] <= time.time()
    origin = started - 2 * 3600
    assert times[0] - origin < 10 and started - times[-1] < 70
    during = [o for o in orders if origin + 3600 + 5 <= o.event_time < origin + 3600 + 595]
    outside = [o for o in orders if not origin + 3600 <= o.event_time < origin + 4200]
    assert during and not any(o.cross_sell for o in during)
    assert sum(o.cross_sell for o in outside) / len(outside) > 0.2


def test_a_stall_in_real_time_sends_nothing_while_it_lasts(tmp_path: Path) -> None:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": "1"}) as running:
        sent = command(running, "generate", "--rate", "20", "--duration", "6", "--scenario", "stall@2s+2s",
                       *NO_NOISE)
        assert sent.returncode == 0, sent.stderr
        stamps = sorted(stamp for stamp, _ in read_all(running))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) == pytest.approx(2.0, abs=0.5)
    assert len(stamps) == pytest.approx(20 * 4, rel=0.3)
