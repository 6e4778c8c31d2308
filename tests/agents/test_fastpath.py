"""The fast-path consumer (streams/runtime/fastpath.py) keeps Faust's delivery guarantees.

Without a broker: the worker's app uses it, a delivery that does not need to
wait is made in place, and one that waits is still abandoned when a rebalance
suspends the flow, as Faust's own ``wait_first`` race does; batches ack every
offset they span. On the embedded broker: tests/integration/test_fastpath_worker.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.runtime.app import create_pipeline
from streams.runtime.fastpath import (
    DEFAULT_BATCH_BUFFER,
    FastPathApp,
    FastPathConsumer,
    FastPathTransport,
    LightMonitor,
    MessageBatch,
    eager_step,
)
from streams.settings import Settings
from tests.harness import unique

PARTITIONS = 4


# -- eager_step: run a coroutine in place until it first suspends ----------------------------------

async def test_eager_step_finishes_a_coroutine_that_never_suspends_in_place() -> None:
    ran: list[str] = []

    async def quick() -> None:
        ran.append("ran")

    assert eager_step(quick()) is None
    assert ran == ["ran"]


async def test_eager_step_returns_the_rest_of_a_coroutine_that_suspends() -> None:
    gate = asyncio.Event()
    steps: list[str] = []

    async def waits() -> str:
        steps.append("before")
        await gate.wait()
        steps.append("after")
        return "result"

    rest = eager_step(waits())
    assert rest is not None and steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    gate.set()
    assert await task == "result"
    assert steps == ["before", "after"]


async def test_eager_step_passes_cancellation_into_the_suspended_coroutine() -> None:
    cancelled = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rest = eager_step(waits())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_eager_step_raises_what_the_coroutine_raises_before_suspending() -> None:
    async def fails() -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        eager_step(fails())


# -- the consumer's delivery ---------------------------------------------------------------------

def test_the_worker_app_consumes_with_the_fast_path_consumer() -> None:
    settings = Settings(broker_url="kafka://127.0.0.1:9", app_id=unique("fastpath"), partitions=PARTITIONS)
    app = create_pipeline(settings).app
    assert isinstance(app, FastPathApp)
    assert isinstance(app.transport, FastPathTransport)
    assert app.transport.Consumer is FastPathConsumer
    assert app.conf.Monitor is LightMonitor  # type: ignore[comparison-overlap]


@pytest.mark.parametrize(("session", "rebalance", "heartbeat"), [(6.0, 6.0, 2.0), (3.0, 4.0, 1.0), (30.0, 30.0, 3.0)])
def test_the_consumer_group_timing_settings_reach_faust(session: float, rebalance: float, heartbeat: float) -> None:
    settings = Settings(broker_url="kafka://127.0.0.1:9", app_id=unique("fastpath"), session_timeout_seconds=session,
                        rebalance_timeout_seconds=rebalance)
    conf = create_pipeline(settings).app.conf
    assert (conf.broker_session_timeout, conf.broker_rebalance_timeout, conf.broker_heartbeat_interval) == (
        session, rebalance, heartbeat)


MESSAGE = SimpleNamespace(tp=TP("orders", 0), offset=0)


@pytest.fixture
async def consumer() -> AsyncIterator[FastPathConsumer]:
    app = FastPathApp(unique("fastpath"), broker="kafka://127.0.0.1:9", store="memory://", web_enabled=False)
    created = app.consumer
    assert isinstance(created, FastPathConsumer)
    yield created


async def test_fetches_wait_at_most_100_ms_at_the_broker_instead_of_faust_s_fixed_1_5_s(
        consumer: FastPathConsumer) -> None:
    client = consumer._new_consumer_thread()._create_worker_consumer(cast(Any, consumer.transport))
    try:
        assert client._fetch_max_wait_ms == 100
    finally:
        await client.stop()


async def test_a_delivery_that_need_not_wait_is_made_in_place_without_tasks(consumer: FastPathConsumer) -> None:
    delivered: list[Any] = []

    async def callback(message: Any) -> None:
        delivered.append(message)

    consumer.callback = callback
    tasks_before = len(asyncio.all_tasks())
    await consumer.deliver(MESSAGE)  # type: ignore[arg-type]
    assert delivered == [MESSAGE]
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_blocked_delivery_still_completes_when_nothing_suspends_the_flow(consumer: FastPathConsumer) -> None:
    room = asyncio.Event()
    delivered: list[Any] = []

    async def callback(message: Any) -> None:
        await room.wait()  # a full stream buffer
        delivered.append(message)

    consumer.callback = callback
    delivery = asyncio.ensure_future(consumer.deliver(MESSAGE))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not delivery.done()
    room.set()
    await asyncio.wait_for(delivery, 5)
    assert delivered == [MESSAGE]


async def test_a_blocked_delivery_is_abandoned_when_a_rebalance_suspends_the_flow(
        consumer: FastPathConsumer) -> None:
    cancelled = asyncio.Event()

    async def callback(message: Any) -> None:
        try:
            await asyncio.Event().wait()  # flow control closed for the rebalance
        except asyncio.CancelledError:
            cancelled.set()
            raise

    consumer.callback = callback
    delivery = asyncio.ensure_future(consumer.deliver(MESSAGE))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    consumer.stop_flow()  # what Faust does when partitions are revoked
    await asyncio.wait_for(delivery, 5)
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_while_the_flow_is_suspended_deliveries_race_the_suspension_as_in_faust(
        consumer: FastPathConsumer) -> None:
    started: list[Any] = []

    async def callback(message: Any) -> None:
        started.append(message)
        await asyncio.Event().wait()

    consumer.callback = callback
    consumer.stop_flow()
    # The delivery returns although the callback never finishes: the suspension won the race.
    await asyncio.wait_for(consumer.deliver(MESSAGE), 5)  # type: ignore[arg-type]
    consumer.resume_flow()
    assert started == [MESSAGE], "the callback was not started: nothing was raced"


@dataclass(eq=False)
class Channel:
    queue: asyncio.Queue[Any]


def stream_buffer_of(consumer: FastPathConsumer, maxsize: int) -> asyncio.Queue[Any]:
    """A stream buffer reading MESSAGE's partition, registered the way the conductor indexes it."""
    buffer: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
    cast(Any, consumer.app.topics)._tp_index[MESSAGE.tp].add(Channel(buffer))
    return buffer


async def test_a_delivery_into_a_full_stream_buffer_waits_for_room_before_the_conductor_sees_it(
        consumer: FastPathConsumer) -> None:
    buffer = stream_buffer_of(consumer, maxsize=1)
    buffer.put_nowait("earlier event")
    delivered: list[Any] = []

    async def callback(message: Any) -> None:
        assert not buffer.full(), "the conductor was handed a message for a full buffer"
        delivered.append(message)

    consumer.callback = callback
    delivery = asyncio.ensure_future(consumer.deliver(MESSAGE))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert delivered == []
    buffer.get_nowait()  # the agent takes an event
    await asyncio.wait_for(delivery, 5)
    assert delivered == [MESSAGE]


async def test_a_delivery_waiting_for_room_is_abandoned_when_a_rebalance_starts(consumer: FastPathConsumer) -> None:
    buffer = stream_buffer_of(consumer, maxsize=1)
    buffer.put_nowait("earlier event")
    started: list[Any] = []

    async def callback(message: Any) -> None:
        started.append(message)
        await asyncio.Event().wait()  # flow control is closed during the rebalance

    consumer.callback = callback
    delivery = asyncio.ensure_future(consumer.deliver(MESSAGE))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert started == [], "the conductor was handed a message for a full buffer"
    consumer.stop_flow()
    await asyncio.wait_for(delivery, 5)  # abandoned, not stuck waiting for room
    consumer.resume_flow()
    assert buffer.qsize() == 1 and buffer.get_nowait() == "earlier event"


# -- batched topics: one message per partition per fetch -------------------------------------------

def record(topic: str, partition: int, offset: int, value: bytes = b"{}") -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka's fetcher hands it over."""
    return ConsumerRecord(topic, partition, offset, 1_700_000_000_000 + offset, 0, b"k", value, None, 1, len(value),
                          [("trace", b"t")])


def test_the_worker_app_delivers_orders_in_batches_into_a_bounded_buffer() -> None:
    settings = Settings(broker_url="kafka://127.0.0.1:9", app_id=unique("fastpath"), partitions=PARTITIONS)
    pipeline = create_pipeline(settings)
    app = cast(FastPathApp, pipeline.app)
    assert app.batched_topics == {settings.orders_topic}
    # The buffer counts batches (each up to broker_max_poll_records orders), not orders.
    assert app.agents["orders"].channel.maxsize == DEFAULT_BATCH_BUFFER
    assert app.agents["pairs"].channel.maxsize is None  # one message each, Faust's stream_buffer_maxsize


async def test_a_batched_topic_s_fetch_becomes_one_message_per_partition(consumer: FastPathConsumer) -> None:
    app = cast(FastPathApp, consumer.app)
    app.batched_topic("orders")
    fetched = {TP("orders", 0): [record("orders", 0, o) for o in (5, 6, 7)],
               TP("orders", 1): [record("orders", 1, 40)]}

    async def fetch(timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        # The cross-thread fetch from the broker, replaced: the broker tests below run the real one.
        return fetched, set(fetched)

    consumer._wait_next_records = fetch  # type: ignore[method-assign]
    messages = [message async for _, message in consumer.getmany(timeout=1.0)]
    assert [type(m) for m in messages] == [MessageBatch, MessageBatch]
    first, second = cast(list[MessageBatch], messages)
    assert (first.tp, first.first_offset, first.offset) == (TP("orders", 0), 5, 7)
    assert first.records == fetched[TP("orders", 0)]
    assert first.timestamp == (1_700_000_000_000 + 7) / 1000  # the last record's, in seconds as Faust's
    assert (second.first_offset, second.offset) == (40, 40)
    assert first.key is None and first.value is None


def test_a_batch_read_in_part_before_keeps_only_the_records_not_yet_read() -> None:
    batch = MessageBatch(TP("orders", 0), [record("orders", 0, o) for o in range(10, 15)], generation_id=1)
    batch.drop_before(12)
    assert [r.offset for r in batch.records] == [12, 13, 14]
    assert (batch.first_offset, batch.offset) == (12, 14)


def acking(consumer: FastPathConsumer, topic: str) -> FastPathConsumer:
    cast(Any, consumer.app.topics)._acking_topics.add(topic)  # what subscribing to the topic does
    return consumer


async def test_acking_a_batch_acks_every_offset_it_spans_once(consumer: FastPathConsumer) -> None:
    acking(consumer, "orders")
    tp = TP("orders", 0)
    batch = MessageBatch(tp, [record("orders", 0, o) for o in (3, 4, 6)], generation_id=1)  # 5: no record
    assert consumer.ack(batch) is True
    assert consumer._acked[tp] == [3, 4, 5, 6]
    assert consumer._n_acked == 4
    assert consumer.ack(batch) is False  # a second ack changes nothing
    assert consumer._acked[tp] == [3, 4, 5, 6] and consumer._n_acked == 4
    assert consumer._new_offset(tp) == 7  # what the next commit writes


async def test_acking_a_batch_skips_offsets_already_committed_or_acked(consumer: FastPathConsumer) -> None:
    acking(consumer, "orders")
    tp = TP("orders", 0)
    consumer._committed_offset[tp] = 12
    single = consumer_message(tp, 13)
    assert consumer.ack(single) is True
    batch = MessageBatch(tp, [record("orders", 0, o) for o in range(10, 16)], generation_id=1)
    assert consumer.ack(batch) is True
    assert sorted(consumer._acked[tp]) == [12, 13, 14, 15]
    assert consumer._n_acked == 4


async def test_a_batch_acked_through_its_event_reaches_the_consumer(consumer: FastPathConsumer) -> None:
    acking(consumer, "orders")
    tp = TP("orders", 2)
    batch = MessageBatch(tp, [record("orders", 2, o) for o in range(0, 3)], generation_id=1)
    batch.incref()  # one stream holds it, as the conductor counts
    assert batch.ack(consumer) is True  # the route Event.ack takes
    assert consumer._acked[tp] == [0, 1, 2]


def consumer_message(tp: TP, offset: int) -> ConsumerMessage:
    """One message as Faust's consumer makes it for one record."""
    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, None, b"{}", None, tp=tp)
