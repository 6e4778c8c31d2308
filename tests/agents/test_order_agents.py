"""The Faust wiring, driven by Faust's test driver (``agent.test_context()``).

Events are put straight into the agents (no consumer); what the agents write
(the changelog, dead letters, pair deltas) goes through the app's real producer
to the embedded broker, and is read back with confluent-kafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import combinations
from typing import Any

import faust
import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from confluent_kafka import Consumer, TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from streams.ops.admin import ensure_topics
from streams.ops.broker import EmbeddedBroker
from streams.ops.traffic import rfc3339
from streams.orders.contract import decode_order
from streams.orders.ledger import PartitionLedger
from streams.pairs.basket import PairAccumulator
from streams.pairs.outbox import outbox_messages
from streams.pairs.recommendations import Companion, PublishedState
from streams.runtime import store
from streams.runtime.app import Pipeline, create_pipeline, metrics_registry
from streams.runtime.exposition import TextExposition
from streams.runtime.fastpath import MessageBatch
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings
from tests.harness import unique

PARTITIONS = 2


@pytest.fixture
async def pipeline(broker: EmbeddedBroker, tmp_path: Any) -> AsyncIterator[Pipeline]:
    async with built_pipeline(broker, tmp_path) as built:
        yield built


@pytest.fixture
async def small_messages(broker: EmbeddedBroker, tmp_path: Any) -> AsyncIterator[Pipeline]:
    """A pipeline whose messages may be at most 64 KiB: the splitting shows with small inputs."""
    async with built_pipeline(broker, tmp_path, max_message_bytes=SMALL_LIMIT, max_event_bytes=16_384) as built:
        yield built


SMALL_LIMIT = 65_536


@asynccontextmanager
async def built_pipeline(broker: EmbeddedBroker, tmp_path: Any, **overrides: Any) -> AsyncIterator[Pipeline]:
    settings = Settings(broker_url=broker.url, app_id=unique("agents"), partitions=PARTITIONS,
                        orders_topic=unique("orders"), dead_letter_topic=unique("dead"),
                        pairs_topic=unique("pairs"), recommendations_topic=unique("recs"),
                        data_dir=str(tmp_path), **overrides)
    ensure_topics(broker.bootstrap, settings)
    built = create_pipeline(settings)
    app = built.app
    app.finalize()
    for table in app.tables.values():
        await table.changelog_topic.maybe_declare()
    await app.producer.maybe_start()
    # What a worker does once recovery completes for its assigned partitions.
    built.orders.restore(set(range(PARTITIONS)))
    built.pairs.restore(set(range(PARTITIONS)))
    try:
        yield built
    finally:
        if built.follower is not None:
            built.follower.stop()
        await app.producer.stop()


def order(order_id: str, *lines: tuple[str, str, float, int], t: float | None = None) -> bytes:
    return orjson.dumps({
        "order_id": order_id, "customer_id": "c-1", "occurred_at": rfc3339(t or time.time()), "currency": "EUR",
        "items": [{"product_id": p, "category": c, "unit_price": price, "quantity": q} for p, c, price, q in lines],
    })


def read_all(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("read"), "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    try:
        messages: list[Any] = []
        for _ in range(10):
            batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
            if not batch and messages:
                break
            messages += batch
        return messages
    finally:
        consumer.close()


async def test_an_order_put_into_the_agent_reaches_the_ledger_of_its_partition(pipeline: Pipeline) -> None:
    async with pipeline.app.agents["orders"].test_context() as agent:
        await agent.put(order("o-1", ("tv", "electronics", 400.0, 1), ("cable", "cables", 9.0, 2)), key=b"o-1",
                        partition=1)
    ledger = pipeline.orders.ledgers[1]
    assert (ledger.meta.orders, ledger.meta.cross_sell_orders, ledger.meta.items) == (1, 1, 3)
    assert ledger.meta.cross_sell_revenue == 18.0
    assert pipeline.orders.ledgers[0].meta.events == 0


async def test_a_flush_writes_state_to_the_changelog_partition_named_by_the_key(
        pipeline: Pipeline, broker: EmbeddedBroker) -> None:
    async with pipeline.app.agents["orders"].test_context() as agent:
        await agent.put(order("o-1", ("tv", "electronics", 400.0, 1)), key=b"o-1", partition=1)
        await agent.put(order("o-2", ("pan", "kitchen", 30.0, 1)), key=b"o-2", partition=0)
        await pipeline.orders.flush()
    changelog = pipeline.orders.table.changelog_topic.get_topic_name()
    messages = read_all(broker.bootstrap, changelog)
    assert messages, "the flush wrote nothing to the changelog"
    for message in messages:
        assert int(message.key().split(b"/")[0]) == message.partition()
    meta = {m.partition(): orjson.loads(m.value()) for m in messages if m.key().endswith(b"/meta")}
    assert meta[1]["orders"] == 1 and meta[0]["orders"] == 1


async def test_an_order_applied_while_a_flush_resends_old_pair_deltas_is_stored_with_its_offset(
        pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a restart, the first flush first re-sends the pair deltas its predecessor may not have
    # delivered; the agent goes on applying orders while that send is under way. What the flush
    # stores must be one consistent state: a window holding an order whose offset the stored meta
    # does not cover would count that order again after a crash.
    orders = pipeline.orders
    gate = asyncio.Event()
    monkeypatch.setattr(orders, "_send_pairs", lambda message, *_: asyncio.ensure_future(gate.wait()))
    async with pipeline.app.agents["orders"].test_context() as agent:
        await agent.put(order("o-1", ("tv", "electronics", 400.0, 1), ("cable", "cables", 9.0, 2)), key=b"o-1",
                        partition=0)
        orders.ledgers[0].unsent_outbox = [{"left": "from before the restart"}]
        flushing = asyncio.ensure_future(orders.flush())
        await asyncio.sleep(0.05)  # the flush is now waiting for the re-send
        second = order("o-2", ("pan", "kitchen", 30.0, 1), ("knife", "tools", 12.0, 1))
        await agent.put(second, key=b"o-2", partition=0)
        gate.set()
        await flushing
    live = orders.ledgers[0]
    # A crash now: the new owner restores the stored state and replays what its offset does not cover.
    restored = PartitionLedger.restore(0, live.config, orders.table.items_of_partition(0))
    restored.apply(1, decode_order(second), time.time())
    assert restored.meta.to_dict() == live.meta.to_dict()
    assert {start: w.totals.to_dict() for start, w in restored.windows.items()} == {
        start: w.totals.to_dict() for start, w in live.windows.items()}


async def test_the_agent_applies_events_while_a_flush_is_outstanding_and_acks_them_only_after_theirs(
        broker: EmbeddedBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent hands a flush to the producer and goes on applying while the broker acknowledges
    # it; the events it applied meanwhile belong to the next flush, and are acked only by that one.
    async with built_pipeline(broker, tmp_path, flush_max_events=2) as built:
        orders, table = built.orders, built.orders.table
        gates = [asyncio.Event(), asyncio.Event()]  # the broker's acknowledgements of the first and second flush
        calls = 0
        wait_written = table.wait_written

        async def held_until_the_gate_opens() -> None:
            nonlocal calls
            calls += 1
            await gates[0 if calls <= 2 else 1].wait()  # a flush waits twice: its keys, then its meta key
            await wait_written()

        monkeypatch.setattr(table, "wait_written", held_until_the_gate_opens)
        seen: list[Any] = []
        process = orders.process
        monkeypatch.setattr(orders, "process", lambda event: (seen.append(event), process(event))[1])

        def put(agent: Any, n: int, wait: bool = True) -> Any:
            # Bounded: an agent that waited for its flush here would never apply the event.
            return asyncio.wait_for(agent.put(order(f"o-{n}", ("tv", "electronics", 400.0, 1), ("cable", "cables",
                                    9.0, 1)), key=f"o-{n}".encode(), partition=0, wait=wait), 10)

        def acked() -> list[bool]:
            return [event.message.acked for event in seen]

        async def applied(n: int) -> None:
            while orders.ledgers[0].meta.orders < n:
                await asyncio.sleep(0.01)

        async with built.app.agents["orders"].test_context() as agent:
            for n in (1, 2):  # two pending: the agent starts a flush, and does not wait for it
                await put(agent, n)
            for n in (3, 4, 5, 6):  # applied while that flush is outstanding, up to twice the limit pending
                await put(agent, n)
            assert orders._outstanding is not None and not orders._outstanding.done()
            assert orders.ledgers[0].meta.orders == 6
            assert acked() == [False] * 6
            await put(agent, 7, wait=False)  # the agent waits for the outstanding flush before applying it
            await asyncio.sleep(0.2)
            assert orders.ledgers[0].meta.orders == 6, "applied more than twice the limit past a flush"
            gates[0].set()  # the first flush is durable: its events are acked, the next flush (3-6) starts
            await asyncio.wait_for(applied(7), 10)
            assert acked() == [True] * 2 + [False] * 5
            gates[1].set()
            await asyncio.wait_for(orders.settle(), 10)
            assert acked() == [True] * 6 + [False]
            await orders.flush()
            assert acked() == [True] * 7
        stored = {key: value for key, value in table.items_of_partition(0) if key.endswith("/meta")}
        assert stored["0/meta"]["orders"] == 7 and stored["0/meta"]["offset"] == 6


async def test_an_event_replayed_at_an_applied_offset_is_not_counted_again(pipeline: Pipeline) -> None:
    async with pipeline.app.agents["orders"].test_context() as agent:
        await agent.put(order("o-1", ("tv", "electronics", 400.0, 1)), key=b"o-1")
        agent.sent_offset = 0  # the same source offset again, as after a restart
        await agent.put(order("o-1", ("tv", "electronics", 400.0, 1)), key=b"o-1")
    assert pipeline.orders.ledgers[0].meta.orders == 1
    assert pipeline.orders.ledgers[0].meta.events == 1


async def test_an_invalid_event_is_published_as_a_dead_letter_with_its_reason(
        pipeline: Pipeline, broker: EmbeddedBroker) -> None:
    async with pipeline.app.agents["orders"].test_context() as agent:
        await agent.put(b"{broken", key=b"k-1", headers={"trace": b"abc"})
        await agent.put(order("o-ok", ("tv", "electronics", 400.0, 1)), key=b"o-ok")
        await pipeline.orders.flush()
    messages = read_all(broker.bootstrap, pipeline.orders.settings.dead_letter_topic)
    assert len(messages) == 1
    headers = dict(messages[0].headers())
    assert messages[0].value() == b"{broken" and messages[0].key() == b"k-1"
    assert headers["crosssell.reason"] == b"not_json"
    assert headers["trace"] == b"abc"
    assert pipeline.orders.ledgers[0].meta.invalid == {"not_json": 1}
    assert pipeline.orders.ledgers[0].meta.orders == 1


async def test_a_batch_of_orders_is_applied_whole_and_its_bad_record_dead_lettered_by_its_own_offset(
        pipeline: Pipeline, broker: EmbeddedBroker) -> None:
    topic = pipeline.orders.settings.orders_topic
    values = [order("o-b1", ("tv", "electronics", 400.0, 1), ("cable", "cables", 9.0, 1)), b'["an array"]',
              order("o-b2", ("pan", "kitchen", 30.0, 1))]
    records = [ConsumerRecord(topic, 1, offset, int(time.time() * 1000), 0, f"k-{offset}".encode(), value, None,
                              5, len(value), [("trace", f"t-{offset}".encode())])
               for offset, value in enumerate(values, start=100)]
    batch = MessageBatch(TP(topic, 1), records, generation_id=1)
    pipeline.orders.process(faust.Event(pipeline.app, None, None, {}, batch))
    ledger = pipeline.orders.ledgers[1]
    assert (ledger.meta.offset, ledger.meta.events, ledger.meta.orders) == (102, 3, 2)
    assert ledger.meta.invalid == {"not_object": 1}
    await pipeline.orders.flush()
    letters = [m for m in read_all(broker.bootstrap, pipeline.orders.settings.dead_letter_topic)
               if dict(m.headers())["crosssell.source.partition"] == b"1"]
    assert len(letters) == 1
    headers = dict(letters[0].headers())
    assert (letters[0].key(), letters[0].value()) == (b"k-101", b'["an array"]')
    assert headers["crosssell.source.offset"] == b"101" and headers["trace"] == b"t-101"
    assert headers["crosssell.reason"] == b"not_object"


async def test_pair_deltas_leave_once_per_flush_not_once_per_order(
        pipeline: Pipeline, broker: EmbeddedBroker) -> None:
    async with pipeline.app.agents["orders"].test_context() as agent:
        for n in range(20):
            await agent.put(order(f"o-{n}", ("tv", "electronics", 400.0, 1), ("cable", "cables", 9.0, 1)),
                            key=f"o-{n}".encode())
        await pipeline.orders.flush()
    messages = read_all(broker.bootstrap, pipeline.orders.settings.pairs_topic)
    horizons = len(pipeline.orders.settings.pair_horizons)
    # One message per pairs partition and horizon bucket, for all twenty orders.
    assert len(messages) == PARTITIONS * horizons
    assert sum(orjson.loads(m.value())["orders"] for m in messages) == 20 * horizons * PARTITIONS


async def test_pair_messages_applied_by_the_pairs_agent_count_once(
        pipeline: Pipeline, broker: EmbeddedBroker) -> None:
    message = {"partition": 0, "source": 1, "sequence": 1, "horizon": "24h", "bucket": 0.0, "orders": 3,
               "products": {"a": 2, "b": 2}, "pairs": {"a": {"b": 2}}}
    async with pipeline.app.agents["pairs"].test_context() as agent:
        await agent.put(orjson.dumps(message), partition=0)
        await agent.put(orjson.dumps(message), partition=0)  # a resent outbox
    view = pipeline.pairs.ledgers[0].view("24h")
    assert view.orders == 3
    assert view.companions_of("a") == {"b": 2}
    assert view.exact


async def test_pair_counts_beyond_the_memory_budget_are_published_as_guaranteed_never_above_the_truth(
        broker: EmbeddedBroker, tmp_path: Any) -> None:
    rng = random.Random(9)
    catalogue = [f"product-{n:04d}" for n in range(1500)]
    baskets = [tuple(sorted(set(rng.sample(catalogue, 4)))) for _ in range(6000)]
    together: Counter[tuple[str, str]] = Counter()
    for basket in baskets:
        for a, b in combinations(basket, 2):
            together.update([(a, b), (b, a)])
    async with built_pipeline(broker, tmp_path, pair_memory_mb=1, min_support=1) as built:
        async with built.app.agents["pairs"].test_context() as agent:
            for sequence, first in enumerate(range(0, len(baskets), 500), start=1):
                accumulator = PairAccumulator()
                accumulator.add_baskets(baskets[first:first + 500])
                for message in outbox_messages(0, sequence, {("24h", 0.0): accumulator}, PARTITIONS):
                    await agent.put(orjson.dumps(message), partition=message["partition"])
        budget = built.pairs.budget
        assert budget.usage.cuts > 0 and budget.usage.bytes <= budget.limit_bytes
        exact, bound = built.pairs.accuracy("24h")
        assert not exact and bound > 0
        assert await built.recommender.publish() > 0
        registry = CollectorRegistry()
        registry.register(CrossSellCollector(built.orders.snapshot, built.orders.settings, built.recommender))
        assert registry.get_sample_value("crosssell_pair_counts_exact", {"horizon": "24h"}) == 0
        assert registry.get_sample_value("crosssell_pair_count_error_bound", {"horizon": "24h"}) == bound
        topic = built.orders.settings.recommendations_topic_for("24h")
    listed = 0
    for record in read_all(broker.bootstrap, topic):
        message = orjson.loads(record.value())
        # The bound of the product's pairs partition; the metric has the largest of the worker's.
        assert message["exact"] is False and 0 < message["error_bound"] <= bound
        for companion in message["companions"]:
            true = together[(message["product_id"], companion["product_id"])]
            assert true - message["error_bound"] <= companion["count"] <= true
            listed += 1
    assert listed > 100


async def test_a_stale_top_pairs_ranking_is_redone_in_steps_while_a_scrape_gets_the_last_one(
        broker: EmbeddedBroker, tmp_path: Any) -> None:
    async def put(agent: Any, sequence: int, baskets: list[tuple[str, ...]]) -> None:
        accumulator = PairAccumulator()
        accumulator.add_baskets(baskets)
        for message in outbox_messages(0, sequence, {("24h", 0.0): accumulator}, PARTITIONS):
            await agent.put(orjson.dumps(message), partition=message["partition"])

    async with built_pipeline(broker, tmp_path, min_support=1) as built:
        recommender = built.recommender
        async with built.app.agents["pairs"].test_context() as agent:
            await put(agent, 1, [("p-a", "p-b")] * 30 + [("p-c", "p-d")] * 10)
            first = recommender.top_pairs("24h", 1)  # the first answer is ranked there and then
            assert [(row["product"], row["companion"], row["count"]) for row in first] == [("p-a", "p-b", 30)]
            await put(agent, 2, [("p-c", "p-d")] * 40)
        recommender._ranked_at -= recommender.VIEW_MAX_AGE + 1  # as if that long went by
        ticks, ranked = 0, False

        async def tick() -> None:  # another coroutine on the loop: it runs whenever the ranking yields
            nonlocal ticks
            while not ranked:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        assert recommender.top_pairs("24h", 1) == first  # the scrape does not wait for the new ranking
        assert recommender._refresh is not None
        await recommender._refresh
        ranked = True
        await ticker
        views = PARTITIONS * len(built.pairs.horizons)
        assert ticks >= views - 1  # one step per view, not one long one
        assert [(row["product"], row["companion"], row["count"]) for row in recommender.top_pairs("24h", 1)] == [
            ("p-c", "p-d", 50)]


def record_sizes(messages: list[Any]) -> list[int]:
    return [len(m.key() or b"") + len(m.value() or b"") + sum(len(k) + len(v or b"") for k, v in m.headers() or [])
            for m in messages]


async def test_a_flush_of_huge_baskets_writes_every_record_under_the_limit_and_restores_whole(
        small_messages: Pipeline, broker: EmbeddedBroker) -> None:
    rng = random.Random(5)
    catalogue = [f"product-{n:05d}" for n in range(20_000)]
    async with small_messages.app.agents["orders"].test_context() as agent:
        for n in range(300):
            lines = [(p, f"cat-{i % 7}", 10.0 + i, 1) for i, p in enumerate(rng.sample(catalogue, 50))]
            await agent.put(order(f"o-{n}", *lines), key=f"o-{n}".encode(), partition=n % PARTITIONS)
        await small_messages.orders.flush()
    settings = small_messages.orders.settings
    changelog = read_all(broker.bootstrap, small_messages.orders.table.changelog_topic.get_topic_name())
    pairs = read_all(broker.bootstrap, settings.pairs_topic)
    assert max(record_sizes(changelog)) <= SMALL_LIMIT and max(record_sizes(pairs)) <= SMALL_LIMIT
    assert any(b"/~/" in m.key() for m in changelog), "no value was large enough to be stored in parts"
    assert len(pairs) > PARTITIONS * len(settings.pair_horizons), "no pairs message was sent in parts"
    # What a worker taking the partitions over rebuilds equals what this one holds.
    for partition, ledger in small_messages.orders.ledgers.items():
        restored = PartitionLedger.restore(partition, ledger.config,
                                           small_messages.orders.table.items_of_partition(partition))
        assert restored.meta.to_dict() == ledger.meta.to_dict()
        assert set(restored.seen) == set(ledger.seen)
        assert [m["part"] for m in restored.unsent_outbox if "part" in m], "the outbox was not restored in parts"


async def test_parts_of_a_replaced_value_are_deleted_once_the_new_value_is_written(small_messages: Pipeline) -> None:
    table = small_messages.orders.table
    big = {"ids": {f"order-{n}": [n, 1.5] for n in range(20_000)}}
    table.write({"1/d/1": big})
    await table.wait_written()
    first = {k for k in table.data if k.startswith(b"1/~/")}
    assert len(first) > 1
    table.write({"1/d/1": {"ids": {**big["ids"], "one-more": [1, 2.0]}}})
    table.delete_replaced_parts()
    assert first <= set(table.data), "parts deleted before the manifest that replaced them was durable"
    await table.wait_written()
    table.delete_replaced_parts()  # last in a flush
    await table.wait_written()
    second = {k for k in table.data if k.startswith(b"1/~/")}
    assert second and not second & first
    assert dict(table.items_of_partition(1))["1/d/1"]["ids"]["one-more"] == [1, 2.0]
    table.write({}, ["1/d/1"])
    await table.wait_written()
    table.delete_replaced_parts()
    await table.wait_written()
    assert not [k for k in table.data if k.startswith(b"1/")]


async def test_a_3_mib_event_becomes_a_bounded_dead_letter_with_its_size_and_digest(
        small_messages: Pipeline, broker: EmbeddedBroker) -> None:
    value = b'{"order_id": "' + b"x" * (3 << 20) + b'"}'
    forged = {"crosssell.reason": b"forged", "trace": b"abc"}
    async with small_messages.app.agents["orders"].test_context() as agent:
        await agent.put(value, key=b"k-big", headers=forged)
        await small_messages.orders.flush()
    letters = read_all(broker.bootstrap, small_messages.orders.settings.dead_letter_topic)
    assert len(letters) == 1
    headers: dict[str, list[bytes]] = {}
    for name, header in letters[0].headers():
        headers.setdefault(name, []).append(header)
    assert headers["crosssell.reason"] == [b"oversized"]
    assert headers["original.crosssell.reason"] == [b"forged"] and headers["trace"] == [b"abc"]
    assert headers["crosssell.value.bytes"] == [str(len(value)).encode()]
    assert headers["crosssell.value.sha256"] == [hashlib.sha256(value).hexdigest().encode()]
    assert letters[0].value() == value[:16_384]
    assert record_sizes(letters)[0] <= SMALL_LIMIT


async def test_the_state_table_holds_each_value_in_memory_of_its_own_length(pipeline: Pipeline) -> None:
    # The table keeps a dedup segment for the whole horizon: orjson's output buffer (3.12+:
    # several times the JSON's length, never shrunk) made the worker's memory creep.
    async with pipeline.app.agents["orders"].test_context() as agent:
        for n in range(300):
            await agent.put(order(f"o-{n:04d}", ("tv", "electronics", 400.0, 1)), key=f"o-{n:04d}".encode())
    table = pipeline.orders.table
    tracemalloc.start()
    try:
        await pipeline.orders.flush()
        held = sum(t.size for t in tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, store.__file__)]).traces)
    finally:
        tracemalloc.stop()
    exact = sum(sys.getsizeof(key) + sys.getsizeof(value) for key, value in table.data.items())
    assert max(len(value) for value in table.data.values()) > 5_000  # the seen segment of 300 order ids
    assert exact <= held <= exact + 1024, f"the table holds {held} bytes for {exact} bytes of keys and values"


async def test_publishing_forgets_tombstones_older_than_the_interval(pipeline: Pipeline) -> None:
    # Otherwise the recommender keeps a state for every product that ever had companions.
    now = datetime.now(UTC)
    interval = timedelta(seconds=pipeline.recommender.settings.recommendation_interval_seconds)
    published = pipeline.recommender.published
    published[("24h", "gone-long-ago")] = PublishedState((), now - interval)
    published[("24h", "gone-just-now")] = PublishedState((), now - interval / 2)
    listed = published[("24h", "listed")] = PublishedState((Companion("b", 5, 0.5, 2.0),), now - interval / 2)
    await pipeline.recommender.publish(now)
    assert pipeline.recommender.published == {("24h", "gone-just-now"): PublishedState((), now - interval / 2),
                                              ("24h", "listed"): listed}


class Collected:
    """One collection of a registry, collected again as it was: two renderers get the same families."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = list(registry.collect())

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


async def test_the_metrics_page_renders_the_worker_registry_as_generate_latest_does_as_the_state_changes(
        pipeline: Pipeline) -> None:
    settings = pipeline.orders.settings
    registry = metrics_registry(settings, pipeline)
    exposition = TextExposition()  # one for the whole test, as the page keeps one: its caches carry over
    shuffle = random.Random(5)
    categories = ["electronics", "cables", 'say "cheese"', "back\\slash", "ünïcödé ✓", "two\nlines"]

    def basket(n: int) -> list[dict[str, Any]]:
        accent = "é" if n % 7 == 0 else ""
        return [{"product_id": f"p-{shuffle.randrange(30)}{accent}",
                 "category": shuffle.choice(categories), "unit_price": round(shuffle.uniform(0.5, 900.0), 2),
                 "quantity": shuffle.randint(1, 3)} for _ in range(shuffle.randint(1, 4))]

    bodies = []
    for first in (0, 300):
        baskets = []
        async with pipeline.app.agents["orders"].test_context() as agent:
            for n in range(first, first + 300):
                items = basket(n)
                baskets.append(tuple(sorted({item["product_id"] for item in items})))
                value = orjson.dumps({"order_id": f"o-{n}", "customer_id": f"c-{n % 40}", "currency": "EUR",
                                      "occurred_at": rfc3339(time.time() - shuffle.uniform(0, 600)), "items": items,
                                      "channel": shuffle.choice(["web", "app", 'q"uote']),
                                      "variant": shuffle.choice(["control", "treatment", "tréatment\\2"])})
                await agent.put(value, key=f"o-{n}".encode(), partition=n % PARTITIONS)
            await pipeline.orders.flush()
        accumulator = PairAccumulator()
        accumulator.add_baskets(baskets)
        async with pipeline.app.agents["pairs"].test_context() as agent:
            for message in outbox_messages(0, first + 1, {("24h", 0.0): accumulator}, PARTITIONS):
                await agent.put(orjson.dumps(message), partition=message["partition"])
        collected = Collected(registry)
        body = exposition.render(collected)
        assert body == generate_latest(collected)  # type: ignore[arg-type]
        bodies.append(body)
    assert bodies[0] != bodies[1]
    assert b'category="say \\"cheese\\""' in bodies[1] and b'variant="tr\xc3\xa9atment\\\\2"' in bodies[1]
    assert b"crosssell_product_pair_orders{" in bodies[1] and b"process_" in bodies[1]
