"""SIGKILL the worker at random points while orders flow; the counts stay exact.

A producer thread sends seeded orders (with late, invalid and duplicate
shares) while the worker is killed and restarted with the same app id, again
and again. After the traffic stops and the last worker has read everything,
every crosssell_ sample of /metrics must equal what a fresh PartitionLedger
per partition gives over exactly the events the orders topic holds, in offset
order (read back from the topic). No future events are generated: that one
check uses the wall clock (README, Guarantees).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.harness import (
    SHORT_SESSION,
    Traffic,
    Worker,
    assert_workers_match_truth,
    cluster,
    offline_ledgers,
    read_partitions,
    wait_for_events,
    wait_until,
)

PARTITIONS = 4
RATE = 120.0  # orders/s: a few thousand events per run
KILLS = 3
ENV = {
    "CROSSSELL_PARTITIONS": str(PARTITIONS),
    # Frequent, small flushes: more kills land between a flush's two phases.
    "CROSSSELL_FLUSH_INTERVAL_SECONDS": "200ms",
    "CROSSSELL_FLUSH_MAX_EVENTS": "97",
    # The top primary products are compared too (a mismatch was once seen here with them on).
    "CROSSSELL_POTENTIAL_CAPACITY": "32",
    **SHORT_SESSION,
}


def kill_at_random_point(worker: Worker, rng: random.Random) -> str:
    """Kill the worker while it starts up, or while it processes; returns where."""
    if rng.random() < 0.3:
        time.sleep(rng.uniform(0.2, 6.0))  # starting, joining the group or recovering the table
        where = "startup"
    else:
        wait_until(lambda: worker.sample("crosssell_partitions_assigned") == PARTITIONS, 90,
                   "the worker to own every partition")
        time.sleep(rng.uniform(0.0, 3.0))  # catching up on the backlog, flushing every 97 events
        where = "processing"
    worker.assert_alive()
    worker.kill()
    return where


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 23, 37])
def test_sigkill_at_random_points_keeps_every_count_exact(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with cluster(tmp_path, ENV) as running:
        settings = running.settings
        worker = running.worker().start()
        traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=seed, rate=RATE).start()
        kills = []
        for _ in range(KILLS):
            kills.append(kill_at_random_point(worker, rng))
            worker = running.worker().start()  # the same CROSSSELL_APP_ID: base_env of the cluster
        time.sleep(rng.uniform(1.0, 4.0))
        produced = traffic.stop()
        worker.wait_serving()
        wait_for_events([worker], produced, timeout=120, partitions=PARTITIONS)

        messages = read_partitions(running.bootstrap, settings.orders_topic, PARTITIONS, at_least=produced)
        assert sum(len(m) for m in messages.values()) == produced
        assert traffic.kinds["late"] and traffic.kinds["invalid"] and traffic.kinds["duplicate"], traffic.kinds
        truth = offline_ledgers(settings, messages)
        assert_workers_match_truth([worker], truth, settings)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "Tansu 0.6.0 (the embedded broker) answers ListOffsets(latest) with the base offset of the partition's last "
    "batch + 1, not the offset after its last record. Faust ends table recovery at that end offset "
    "(Recovery._build_highwaters -> aiokafka end_offsets), so a restarted worker misses the rest of the changelog's "
    "last batch: measured, a restarted worker held 10 windows instead of 3 until its first flush re-expired them "
    "(ledger.restore marks itself dirty). Tables without such a self-heal lose the tail of their last batch."))
def test_the_broker_reports_the_end_offset_after_a_batch_of_several_records(tmp_path: Path) -> None:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": "1"}) as running:
        topic = running.settings.orders_topic
        producer = Producer({"bootstrap.servers": running.bootstrap, "linger.ms": 200})
        for _ in range(10):  # one batch: linger collects them
            producer.produce(topic, value=b"{}", partition=0)
        assert producer.flush(10) == 0
        consumer = Consumer({"bootstrap.servers": running.bootstrap, "group.id": "end-offsets"})
        try:
            assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 10)
        finally:
            consumer.close()
