"""A flush the broker fails after its take loses nothing: the next flush writes what it took.

The failure is injected at the producer boundary, where the worker hands a
record to the Kafka client and gets back a future the broker's answer
resolves: that is the broker, truly outside the worker. Everything else is the
real wiring (Faust's test driver, the app's producer, the embedded broker). The
counts are checked as a restarted worker would see them: a ledger restored from
what the changelog topic holds, read back from the broker, plus the replay of
the events its meta key does not cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError, NotEnoughReplicasError

from streams.ops.broker import EmbeddedBroker
from streams.orders.contract import decode_order
from streams.orders.facts import OrderFacts
from streams.orders.fleet_detection import FleetDetector, detection_message
from streams.orders.ledger import PartitionLedger
from streams.pairs.ledger import PairLedger
from streams.runtime.app import Pipeline
from streams.runtime.processors import OrderProcessor
from streams.runtime.store import PartitionedTable
from tests.agents.test_order_agents import built_pipeline, order, read_all

MINUTE = 60.0


class FailingBroker:
    """The produce requests of one changelog topic, answered with an error for the keys chosen.

    ``refused(key)``: the broker refuses the write; ``answer_lost(key)``: it stores the
    write and the answer is lost (the client sees a timeout).
    """

    def __init__(self, pipeline: Pipeline, table: PartitionedTable, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refused: Callable[[bytes], bool] = lambda key: False
        self.answer_lost: Callable[[bytes], bool] = lambda key: False
        self.failures = 0
        producer = pipeline.app.producer
        changelog = table.changelog_topic.get_topic_name()
        send = producer.send

        async def answered(topic: str, key: bytes, value: bytes | None, *args: Any, **kwargs: Any) -> Any:
            if topic == changelog and self.refused(key):
                return self._failed(NotEnoughReplicasError())
            stored = await send(topic, key, value, *args, **kwargs)
            if topic == changelog and self.answer_lost(key):
                await stored
                return self._failed(KafkaTimeoutError())
            return stored

        monkeypatch.setattr(producer, "send", answered)

    def heal(self) -> None:
        self.refused = self.answer_lost = lambda key: False

    def _failed(self, error: Exception) -> asyncio.Future[Any]:
        self.failures += 1
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answer.set_exception(error)
        return answer


def recorded_events(processor: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The events the agent hands to ``processor.process`` (which still processes them), in order."""
    events: list[Any] = []
    process = processor.process

    def recorded(event: Any) -> None:
        events.append(event)
        process(event)

    monkeypatch.setattr(processor, "process", recorded)
    return events


def stored_state(broker: EmbeddedBroker, table: PartitionedTable) -> list[tuple[str, Any]]:
    """The keys of partition 0 as the table's changelog topic holds them (the last value of each key)."""
    held: dict[str, Any] = {}
    for message in read_all(broker.bootstrap, table.changelog_topic.get_topic_name()):
        key = message.key().decode()
        if not key.startswith("0/"):
            continue
        if message.value() is None:
            held.pop(key, None)
        else:
            held[key] = orjson.loads(message.value())
    return list(held.items())


def restarted(broker: EmbeddedBroker, pipeline: Pipeline, events: list[Any]) -> PartitionLedger:
    """What a worker restarted now holds for partition 0: the changelog, then the uncovered events replayed."""
    ledger = PartitionLedger.restore(0, pipeline.orders.config, stored_state(broker, pipeline.orders.table))
    limits = pipeline.orders.limits
    for event in events:
        message = event.message
        if message.partition == 0:
            ledger.apply(message.offset, decode_order(message.value, limits), message.timestamp)
    return ledger


def assert_same_counts(restored: PartitionLedger, live: PartitionLedger) -> None:
    """The same counters, offset, watermark and windows (sequence numbers are the flushes' bookkeeping)."""
    sequences = {"seen_sequence", "outbox_sequence"}
    assert {k: v for k, v in restored.meta.to_dict().items() if k not in sequences} == {
        k: v for k, v in live.meta.to_dict().items() if k not in sequences}
    assert {start: (w.offset, w.totals.to_dict()) for start, w in restored.windows.items()} == {
        start: (w.offset, w.totals.to_dict()) for start, w in live.windows.items()}


def pair_orders_delivered(broker: EmbeddedBroker, pipeline: Pipeline) -> dict[tuple[str, float], int]:
    """Orders of partition 0 counted per (horizon, bucket) by the pair deltas on the pairs topic, once each."""
    counted: dict[tuple[str, float, int, int], int] = {}
    for message in read_all(broker.bootstrap, pipeline.orders.settings.pairs_topic):
        delta = orjson.loads(message.value())
        if delta.get("kind") is None and delta["source"] == 0 and delta["partition"] == 0:
            counted[(delta["horizon"], delta["bucket"], delta["sequence"], delta.get("part", 0))] = delta["orders"]
    totals: dict[tuple[str, float], int] = {}
    for (horizon, bucket, _, _), orders in counted.items():
        totals[(horizon, bucket)] = totals.get((horizon, bucket), 0) + orders
    return totals


@pytest.mark.parametrize("fault", ["window", "meta", "meta_stored"])
@pytest.mark.parametrize("then", ["next flush", "revoke of the other partition"])
async def test_a_flush_the_broker_fails_is_written_whole_by_the_next_one(
        broker: EmbeddedBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, fault: str, then: str) -> None:
    async with built_pipeline(broker, tmp_path) as pipeline:
        orders = pipeline.orders
        failing = FailingBroker(pipeline, orders.table, monkeypatch)
        events = recorded_events(orders, monkeypatch)
        now = time.time()
        window_a, window_b = now - 3 * MINUTE, now - 2 * MINUTE
        window_key = f"0/w/{int(window_b // MINUTE * MINUTE)}".encode()
        lines = (("tv", "electronics", 400.0, 1), ("cable", "cables", 9.0, 2))

        async with pipeline.app.agents["orders"].test_context() as agent:
            async def put(order_id: str, t: float, partition: int = 0) -> None:
                await agent.put(order(order_id, *lines, t=t), key=order_id.encode(), partition=partition)

            await put("o-1", window_a)
            await put("o-2", window_b)
            await put("p-1", window_a, partition=1)
            await orders.flush()
            # The flush the broker fails: it changes both windows, and sends pair deltas.
            await put("o-3", window_a)
            await put("o-4", window_b)
            await agent.put(b"not an order", key=b"bad", partition=0)
            if fault == "window":  # the flush's other keys land
                failing.refused = lambda key: key == window_key
            elif fault == "meta":  # every other key landed
                failing.refused = lambda key: key == b"0/meta"
            else:
                failing.answer_lost = lambda key: key == b"0/meta"
            await orders.flush(wait=False)  # as the agent does: the flush is outstanding
            if then == "revoke of the other partition":
                await asyncio.wait_for(orders.revoke({1}), 20)  # a rebalance waits for the outstanding flush
            else:
                await asyncio.wait_for(wait_until_done(orders), 20)
            failing.heal()
            assert failing.failures == 1
            assert not any(e.message.acked for e in events[3:]), "events of a failed flush were acked"
            # A crash now: the changelog holds what a crash could leave, exact after the replay.
            assert_same_counts(restarted(broker, pipeline, events), orders.ledgers[0])

            await put("o-5", window_a)  # window b does not change again
            await orders.flush()

        live = orders.ledgers[0]
        assert (live.meta.orders, sum(live.meta.invalid.values())) == (5, 1), "the live counts are wrong"
        # A restart now replays nothing: what the changelog holds is every count.
        restored = restarted(broker, pipeline, [])
        assert_same_counts(restored, live)
        # Every applied order reached the pairs topic once, in every horizon.
        per_horizon: dict[str, int] = {}
        for (horizon, _), count in pair_orders_delivered(broker, pipeline).items():
            per_horizon[horizon] = per_horizon.get(horizon, 0) + count
        assert per_horizon == {horizon: 5 for horizon in pipeline.orders.settings.horizon_labels}
        assert all(e.message.acked for e in events if e.message.partition == 0)
        assert orders.flush_failures == 1


async def wait_until_done(orders: OrderProcessor) -> None:
    """Until the outstanding flush has ended, without waiting on it (that would raise what it raised)."""
    while orders._outstanding is not None and not orders._outstanding.done():
        await asyncio.sleep(0.01)


def pair_message(sequence: int, bucket: float, products: tuple[str, str]) -> bytes:
    a, b = products
    return orjson.dumps({"partition": 0, "source": 1, "sequence": sequence, "horizon": "24h", "bucket": bucket,
                         "orders": 1, "products": {a: 1, b: 1}, "pairs": {a: {b: 1}}})


def bucket_state(ledger: PairLedger) -> dict[Any, Any]:
    return {key: (bucket.orders, bucket.applied, bucket.products.to_dict(), bucket.pairs.to_dict())
            for key, bucket in ledger.buckets.items()}


@pytest.mark.parametrize("fault", ["base", "log"])
async def test_a_pairs_flush_the_broker_fails_is_written_whole_by_the_next_one(
        broker: EmbeddedBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    async with built_pipeline(broker, tmp_path) as pipeline:
        pairs = pipeline.pairs
        failing = FailingBroker(pipeline, pairs.table, monkeypatch)
        bucket_a, bucket_b = 0.0, 3600.0
        events: list[Any] = []
        process = pairs.process

        async def recorded(event: Any) -> None:
            events.append(event)
            await process(event)

        monkeypatch.setattr(pairs, "process", recorded)
        async with pipeline.app.agents["pairs"].test_context() as agent:
            for bucket in (bucket_a, bucket_b):
                await agent.put(pair_message(1, bucket, ("a", "b")), partition=0)
            if fault == "log":
                await pairs.flush()  # the bases: the failed flush writes logs on them
            for bucket in (bucket_a, bucket_b):
                await agent.put(pair_message(2, bucket, ("a", "c")), partition=0)
            failing.refused = lambda key: key.startswith(b"0/24h/3600")  # bucket b's base or log
            with contextlib.suppress(KafkaError):  # raised before the flush gave back what it took
                await pairs.flush()
            failing.heal()
            assert failing.failures == 1
            await agent.put(pair_message(3, bucket_a, ("b", "c")), partition=0)  # bucket b does not change again
            await pairs.flush()
            await pairs.flush()  # the logs the failed flush's bases replaced are deleted now

        live = pairs.ledgers[0]
        restored = PairLedger.restore(0, pairs.horizons, pairs.settings.pair_slots, None, None,
                                      stored_state(broker, pairs.table))
        assert bucket_state(restored) == bucket_state(live)
        assert bucket_state(live)[("24h", bucket_b)][0] == 2
        assert all(event.message.acked for event in events)
        assert pairs.flush_failures == 1


async def test_a_drop_test_flush_the_broker_fails_is_counted_and_written_by_the_next_one(
        broker: EmbeddedBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with built_pipeline(broker, tmp_path) as pipeline:
        detection = pipeline.detection
        assert detection is not None
        detection.restore({0})
        fleet = detection.fleet
        assert fleet is not None
        failing = FailingBroker(pipeline, detection.table, monkeypatch)
        now = time.time()
        orders = [OrderFacts(f"o-{n}", now - 600 + n, "books", n % 3 == 0, 1, 10.0, 0.0, ("books",), ("p",), "web",
                             "control", 0) for n in range(300)]
        for source in range(fleet.partitions):
            fleet.apply(detection_message(source, 1, now - 300, orders, fleet.config.tick, 200))
        failing.refused = lambda key: True
        await detection.flush()
        assert failing.failures >= 1 and detection.flush_failures == 1
        failing.heal()
        await detection.flush()
        assert detection.flush_failures == 1
        restored = FleetDetector.restore(fleet.config, fleet.partitions, stored_state(broker, detection.table))
        assert restored.detector.closed_until == fleet.detector.closed_until > now - 600
        assert [source.to_list() for source in restored.sources.values()] == \
            [source.to_list() for source in fleet.sources.values()]
