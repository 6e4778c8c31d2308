"""Inputs that once stopped the worker for good, through a real worker on the embedded broker.

Each of these crash-looped the worker or poisoned a partition before: an event
over 1 MiB (its dead letter copied it), a burst of 50-product baskets (one
pair-delta message of ~5 MB), a backlog after downtime (a first flush of
~1.5 MB), and an order from a producer whose clock says 2099 (record
timestamp included), which carried the partition's watermark 73 years ahead.
Now every message the worker produces stays under CROSSSELL_MAX_MESSAGE_BYTES,
and the counts equal an offline replay of exactly what the topic holds.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streams.ops.traffic import rfc3339
from tests.harness import (
    Cluster,
    assert_workers_match_truth,
    cluster,
    offline_ledgers,
    read_partitions,
    wait_for_events,
    wait_until,
)

PARTITIONS = 2
YEAR_2099 = 4_070_908_800.0


def basket_order(order_id: str, products: list[str], event_time: float) -> bytes:
    return orjson.dumps({
        "order_id": order_id, "customer_id": f"c-{order_id}", "occurred_at": rfc3339(event_time), "currency": "EUR",
        "items": [{"product_id": p, "category": f"cat-{i % 9}", "unit_price": 100.0 - i, "quantity": 1}
                  for i, p in enumerate(products)],
    })


def baskets(rng: random.Random, prefix: str, count: int, size: int, catalogue: int, start: float) -> Iterator[bytes]:
    products = [f"p-{n:06d}" for n in range(catalogue)]
    for n in range(count):
        yield basket_order(f"{prefix}-{n}", rng.sample(products, size), start + n * 0.01)


def send(running: Cluster, values: list[tuple[bytes | None, bytes, float | None]]) -> int:
    """Produce (key, value, record timestamp or None) round-robin over the partitions."""
    producer = Producer({"bootstrap.servers": running.bootstrap, "linger.ms": 5, "acks": "all",
                         "message.max.bytes": 8 << 20})
    for n, (key, value, timestamp) in enumerate(values):
        extra = {} if timestamp is None else {"timestamp": int(timestamp * 1000)}
        producer.produce(running.settings.orders_topic, value=value, key=key, partition=n % PARTITIONS, **extra)
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "events were not delivered"
    return len(values)


@pytest.mark.slow
def test_oversized_events_huge_baskets_a_backlog_and_a_wrong_clock_leave_the_worker_exact(tmp_path: Path) -> None:
    rng = random.Random(10)
    now = time.time()
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": str(PARTITIONS)}) as running:
        worker = running.worker().start().wait_serving()
        big_valid = b'{"order_id": "o-big", "note": "' + b"x" * (1 << 20) + b'"}'
        garbage = bytes(rng.getrandbits(8) for _ in range(3 << 20))
        forged = [("crosssell.reason", b"forged")]
        hostile: list[tuple[bytes | None, bytes, float | None]] = [
            (b"o-big", big_valid, None), (b"garbage", garbage, None),
            (b"o-2099", basket_order("o-2099", ["p-1", "p-2"], YEAR_2099), YEAR_2099),
            (b"o-2099b", basket_order("o-2099b", ["p-1", "p-2"], YEAR_2099), YEAR_2099),
        ]
        produced = send(running, [(None, v, None) for v in baskets(rng, "before", 40, 3, 50, now - 60)])
        produced += send(running, hostile)
        producer = Producer({"bootstrap.servers": running.bootstrap})
        producer.produce(running.settings.orders_topic, value=b"{}", key=b"forged", partition=0, headers=forged)
        assert producer.flush(10) == 0
        produced += 1
        produced += send(running, [(None, v, None) for v in baskets(rng, "burst", 300, 50, 20_000, now - 30)])
        produced += send(running, [(None, v, None) for v in baskets(rng, "after", 40, 3, 50, now)])
        wait_for_events([worker], produced, timeout=180)

        # The wrong clock moved no watermark: the orders after it are in the 5-minute view.
        watermark = worker.sample("crosssell_event_time_watermark_seconds")
        assert watermark is not None and watermark < time.time() + 300
        assert worker.sample("crosssell_events_invalid_total", reason="future_event_time") == 2
        assert worker.sample("crosssell_window_orders", window="5m") == worker.sample("crosssell_orders_total")

        # A restart restores state stored in parts; then a backlog arrives while the worker is down.
        worker.stop()
        produced += send(running, [(None, v, None) for v in baskets(rng, "backlog", 20_000, 8, 50_000, now + 1)])
        worker = running.worker().start().wait_serving()
        wait_for_events([worker], produced, timeout=300)

        messages = read_partitions(running.bootstrap, running.settings.orders_topic, PARTITIONS, at_least=produced)
        assert_workers_match_truth([worker], offline_ledgers(running.settings, messages), running.settings)
        wait_until(lambda: bool(worker.summary()["top_product_pairs"]), 60, "product pairs to be counted")

        letters = running.read_topic(running.settings.dead_letter_topic, expected=4, timeout=60)
        by_key = {m.key(): m for m in letters}  # type: ignore[attr-defined]
        limit = running.settings.max_message_bytes
        for message in letters:
            size = len(message.value()) + sum(len(k) + len(v or b"") for k, v in message.headers() or [])  # type: ignore[attr-defined]
            assert size <= limit
        garbage_headers = dict(by_key[b"garbage"].headers())
        assert garbage_headers["crosssell.value.sha256"] == hashlib.sha256(garbage).hexdigest().encode()
        assert garbage_headers["crosssell.reason"] == b"oversized"
        assert dict(by_key[b"o-2099"].headers())["crosssell.reason"] == b"future_event_time"
        forged_headers = by_key[b"forged"].headers()
        assert [v for k, v in forged_headers if k == "crosssell.reason"] == [b"not_object"] or \
            [v for k, v in forged_headers if k == "crosssell.reason"] == [b"missing_field"]
        assert ("original.crosssell.reason", b"forged") in forged_headers
        worker.assert_alive()
