"""The fast-path consumer on the embedded broker: every event once, every offset committed.

A worker processes every event once and commits all of them, and a second
worker joining mid-stream (a rebalance under load) neither loses nor double
counts an event (without the fast path's re-seek, about a third of such
handovers lost ~1000 events).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.ops.traffic import OrderMaker, TrafficShape
from tests.harness import Cluster, Traffic, Worker, cluster, total, unique, wait_until

PARTITIONS = 4


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": str(PARTITIONS)}) as started:
        yield started


def orders(count: int, seed: int) -> list[tuple[bytes | None, bytes, int | None]]:
    maker = OrderMaker(random.Random(seed), TrafficShape(late_share=0.02, invalid_share=0.02, duplicate_share=0.02))
    now = time.time()
    return [(key, value, None) for _, key, value in (maker.event(now - (count - i) * 0.01) for i in range(count))]


def end_offsets(bootstrap: str, topic: str, messages: int, timeout: float = 30.0) -> dict[int, int]:
    """The offset after the last message of each partition, found by reading all ``messages``.

    Not from ListOffsets: Tansu 0.6.0 answers it (and get_watermark_offsets) with an
    offset short of the end when the last write was a batch of several records.
    """
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ends"), "enable.auto.commit": False})
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        ends = {p: 0 for p in range(PARTITIONS)}
        read = 0
        deadline = time.monotonic() + timeout
        while read < messages:
            assert time.monotonic() < deadline, f"read {read} of {messages} messages of {topic}"
            for message in reader.consume(1000, timeout=0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is None and partition is not None and offset is not None:
                    read += 1
                    ends[partition] = max(ends[partition], offset + 1)
        return ends
    finally:
        reader.close()


def events_counted(workers: list[Worker]) -> float | None:
    return total(workers, "crosssell_events_total")


def assert_all_committed(running: Cluster, sent: int) -> None:
    settings = running.settings
    ends = end_offsets(running.bootstrap, settings.orders_topic, sent)
    wait_until(lambda: running.committed(settings.app_id, settings.orders_topic) == ends, 30,
               f"committed offsets of {settings.app_id} reach the end offsets {ends}")


@pytest.mark.timeout(90)
def test_a_fast_path_worker_processes_every_event_once_and_commits_them_all(running: Cluster) -> None:
    sent = running.produce(orders(20_000, seed=7))
    worker = running.worker().start().wait_serving()
    wait_until(lambda: events_counted([worker]) == sent, 60, f"the worker counts all {sent} events")
    assert_all_committed(running, sent)
    time.sleep(1.5)  # a few flushes later: still exactly once
    assert events_counted([worker]) == sent


@pytest.mark.timeout(120)
def test_a_second_worker_joining_mid_stream_loses_and_double_counts_nothing(running: Cluster) -> None:
    settings = running.settings
    first = running.worker().start().wait_serving()
    traffic = Traffic(running.bootstrap, settings.orders_topic, PARTITIONS, seed=11, rate=3000).start()
    try:
        wait_until(lambda: (events_counted([first]) or 0) > 0, 60, "the first worker is processing")
        # The second worker joins while events keep arriving: the partitions move under load.
        second = running.worker().start().wait_serving()
        wait_until(lambda: (second.sample("crosssell_partitions_assigned") or 0) > 0, 60,
                   "the second worker is given partitions")
        time.sleep(2)
    finally:
        sent = traffic.stop()
    workers = [first, second]
    seen: list[object] = []

    def shared_and_counted() -> bool:
        assigned = [w.sample("crosssell_partitions_assigned") for w in workers]
        counted = [w.sample("crosssell_events_total") for w in workers]
        seen[:] = [assigned, counted]
        return all(a for a in assigned) and sum(a or 0 for a in assigned) == PARTITIONS \
            and sum(c or 0 for c in counted) == sent

    try:
        wait_until(shared_and_counted, 60, f"both workers own partitions and count {sent} events between them")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen [partitions], [events] per worker: {seen}\n"
                             f"first worker's log:\n{first.log_tail(20)}\nsecond's:\n{second.log_tail(20)}") from None
    assert_all_committed(running, sent)
    time.sleep(1.5)
    assert events_counted(workers) == sent
