"""A Faust app whose consumer delivers messages in place instead of racing each one.

Faust's ``Consumer._drain_messages`` delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: it
races the delivery against "a rebalance has started" so that a delivery
blocked by flow control can be abandoned. ``mode``'s ``wait_first`` makes four
tasks and an ``asyncio.wait`` for that, per message (see shared FACTS.md).

Almost every delivery finishes without ever suspending (the stream buffer has
room, flow control is open), so there is nothing to race.
:meth:`FastPathConsumer.deliver` runs the delivery coroutine up to its first
suspension point, in place; if it completes there, no task was made. If it
suspends (producer buffer, flow control), or a rebalance is already under way,
the rest goes through the original ``wait_first`` race, so a rebalance still
abandons a blocked delivery. A full stream buffer is waited for before the
conductor sees the message (see ``deliver``).

Making delivery cheap also makes the fetcher spend more of its time in the
cross-thread fetch, where a rebalance can pause partitions under it; Faust then
drops records it already took from aiokafka. :class:`FastPathConsumer` fetches
with a snapshot of the active partitions and seeks back to the committed
offsets when it had to drop records of a partition it still owns (without
this, tests/agents/test_fastpath.py lost ~1000 events in about a third of the
handovers under load).

Batches: a topic made with :meth:`FastPathApp.batched_topic` is delivered as
one :class:`MessageBatch` per partition per fetch instead of one message per
record. The batch goes through Faust's own conductor, stream, flow control and
acking as one message (its offset is its last record's); acking it acks every
offset it spans (:meth:`FastPathConsumer.ack`). Everything Faust does per
message (a Message, an Event, a queue slot, a stream step, an ack) it does once
per few hundred records; the agent loops over ``message.records`` (aiokafka
``ConsumerRecord``: offset, timestamp in ms, key, value, headers).

Other levers, each measured with ``python -m bench --variant`` (bench/README.md):
a lighter Monitor, smaller poll batches into a larger stream buffer
(:data:`TUNED_SETTINGS`) and a 100 ms broker fetch wait instead of Faust's fixed
1.5 s (:class:`FastPathConsumerThread`).

Extension points only: an :class:`faust.App` subclass returns a transport
subclass whose ``Consumer`` class attribute is the subclass here
(``Transport.create_consumer`` instantiates ``self.Consumer``). The methods that
change, ``_drain_messages`` and ``getmany``, are Faust 0.15.3's own with the
changes marked; keep them in step when upgrading faust-streaming.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, ClassVar, cast

import aiokafka
import faust
from faust import transport as faust_transport
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, ConsumerT, Message, TopicT, TransportT
from faust.types.tuples import ack_lock
from mode import Service, ServiceT
from mode.utils.futures import notify

from streams.runtime.batch import MessageBatch
from streams.runtime.eager import eager_step
from streams.runtime.monitor import LightMonitor

DEFAULT_FETCH_MAX_WAIT = 0.1
# Batches a batched topic's stream buffer holds (each up to broker_max_poll_records records).
DEFAULT_BATCH_BUFFER = 8
# How often a delivery waiting for room in a full stream buffer looks again; the agent
# works through a few milliseconds of events in between.
ROOM_POLL_SECONDS = 0.002

__all__ = [
    "TUNED_SETTINGS",
    "FastPathApp",
    "FastPathConsumer",
    "FastPathConsumerThread",
    "FastPathTransport",
    "LightMonitor",
    "MessageBatch",
    "eager_step",
]


class FastPathConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with a shorter broker-side fetch wait.

    Faust passes ``fetch_max_wait_ms=1500`` to aiokafka and offers no setting
    for it. A broker that holds a fetch for that long when it has nothing new
    (Tansu does) adds up to 1.5 s to every event of a live, not-backlogged
    stream. While there is a backlog, fetches return at once either way.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError(
                    f"aiokafka {aiokafka.__version__} keeps fetch_max_wait_ms elsewhere; "
                    "update streams/runtime/fastpath.py (FastPathConsumerThread) for this version, "
                    "or pass fetch_max_wait=None to FastPathApp"
                )
            # The constructor argument, read when the consumer starts (Fetcher(...)).
            consumer._fetch_max_wait_ms = wait
        return consumer


class FastPathConsumer(aiokafka_driver.Consumer):
    """The aiokafka consumer, delivering messages in place while no rebalance is under way."""

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return FastPathConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def deliver(self, message: Message) -> None:
        """Hand ``message`` to the callback (the conductor): in place, unless it must wait.

        While a rebalance is under way (``suspend_flow`` set), or once the
        delivery suspends, it is raced against ``suspend_flow`` as Faust does,
        so a delivery blocked by flow control is abandoned when a rebalance starts.

        A stream buffer that is full is waited for here, before the conductor
        sees the message: the conductor would put into it from a task of its
        own, which abandoning the delivery does not cancel, so the event would
        reach the stream after the rebalance, out of order (a Faust 0.15.3
        hazard that a fast fetcher in front of a slower agent makes common).
        """
        suspended = self.suspend_flow
        if not suspended.is_set() and self._full_buffer(message.tp) is not None:
            await self._wait_for_room(message.tp)
        if suspended.is_set():
            await self.wait_first(self.callback(message), suspended.wait())
            return
        rest = eager_step(cast(Coroutine[Any, Any, None], self.callback(message)))
        if rest is not None:
            await self.wait_first(rest, suspended.wait())

    def ack(self, message: Message) -> bool:
        """Faust's ack, and for a :class:`MessageBatch` the same bookkeeping for every offset it spans."""
        if type(message) is not MessageBatch:
            return super().ack(message)
        with ack_lock:  # as Consumer.ack: the test-and-set and the bookkeeping are one step
            if message.acked:
                return False
            message.acked = True
            if not self.app.topics.acks_enabled_for(message.topic):
                return False
            tp = message.tp
            try:
                committed = self._committed_offset[tp]
                first = message.first_offset if committed is None else max(message.first_offset, committed)
                acked_index = self._acked_index[tp]
                offsets = [offset for offset in range(first, message.offset + 1) if offset not in acked_index]
                self._unacked_messages.discard(message)
                if not offsets:
                    return False
                acked_index.update(offsets)
                self._acked[tp].extend(offsets)
                self._n_acked += len(offsets)
                return True
            finally:
                notify(self._waiting_for_ack)

    def _full_buffer(self, tp: TP) -> Any:
        """The buffer of a stream reading ``tp`` that has no room, if any."""
        conductor = cast(Any, self.app.topics)
        for channel in conductor._tp_index.get(tp, ()):
            queue = channel.queue
            if queue.full():
                return queue
        return None

    async def _wait_for_room(self, tp: TP) -> None:
        """Until every stream buffer of ``tp`` has room, a rebalance starts, or the consumer stops."""
        while self._full_buffer(tp) is not None and not self.suspend_flow.is_set() and not self.should_stop:
            await asyncio.sleep(ROOM_POLL_SECONDS)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # The live set of active partitions goes to the consumer thread, where a rebalance on
        # this thread may empty it first; aiokafka reads an empty set as "every partition" and
        # would hand over records of paused partitions, which getmany then drops. A snapshot
        # (and nothing to fetch when it is empty) keeps the fetch to what was asked for.
        if active_partitions is not None:
            active_partitions = set(active_partitions)
            if not active_partitions:
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust 0.15.3's Consumer.getmany, plus: records it must drop are fetched again,
        and the records of a batched topic come as one :class:`MessageBatch` per partition.

        Faust drops fetched records of a partition that is no longer active (paused
        by a rebalance's recovery) and relies on the rebalance seeking back to the
        committed offsets. When the drop comes after that seek, the records are lost
        to this consumer; seeking to the committed offsets again (what Faust itself
        does when flow stopped) brings them back, at the cost of some replays.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return

        batched_topics: set[str] = getattr(self.app, "batched_topics", set())
        batches = {tp: rs for tp, rs in records.items() if tp.topic in batched_topics and rs}
        if batches:
            records = {tp: rs for tp, rs in records.items() if tp not in batches}
        records_it = self.scheduler.iterate(records)
        to_message = self._to_message  # localize
        if self.flow_active:
            dropped: set[TP] = set()
            for tp, tp_records in batches.items():  # not in Faust: one message per partition
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    records_it = iter(())  # as Faust's loop below: stop handing out this fetch
                    break
                if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                    yield tp, MessageBatch(tp, tp_records, generation_id)
                else:
                    dropped.add(tp)
            for tp, record in records_it:
                if not self.flow_active:
                    break
                new_generation_id = self.app.consumer_generation_id
                if new_generation_id != generation_id:
                    self.log.dev("Generation id changed from %r to %r. Cancelling getmany.",
                                 generation_id, new_generation_id)
                    break
                if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                    highwater_mark = self.highwater(tp)
                    self.app.monitor.track_tp_end_offset(tp, highwater_mark)
                    # convert timestamp to seconds from int milliseconds.
                    yield tp, to_message(tp, record)
                else:
                    dropped.add(tp)
            if dropped and self.flow_active and dropped & self.assignment():
                self.log.info("Fetched records of inactive partitions %s were dropped: seeking to committed offsets",
                              sorted(dropped))
                await self.perform_seek()
        else:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - exercised by tests/agents
        # Faust 0.15.3's Consumer._drain_messages; only the delivery differs (marked below).
        deliver = self.deliver
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            # Not in Faust: a batch is checked by its first record's offset.
                            if type(message) is MessageBatch:
                                if r_offset is not None and message.first_offset < r_offset:
                                    message.drop_before(r_offset)
                                gap = message.first_offset - (r_offset or 0)
                            else:
                                gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # The one change; Faust: await self.wait_first(callback(message), self.suspend_flow.wait())
                            await deliver(message)
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class FastPathTransport(aiokafka_driver.Transport):
    """The aiokafka transport (``kafka://``, ``aiokafka://``) with :class:`FastPathConsumer`."""

    Consumer: ClassVar[type[ConsumerT]] = FastPathConsumer


#: Faust settings FastPathApp starts from; arguments given to it win. Each was measured
#: with ``python -m bench --variant`` (see bench/README.md).
TUNED_SETTINGS: dict[str, Any] = {
    # Faust's Monitor records every message and event for statistics this project does not read.
    "Monitor": LightMonitor,
    # Without a limit one getmany returns everything prefetched (~1 MiB per partition, thousands
    # of events); the part that does not fit in the stream buffer is then delivered one blocked
    # put at a time, the fetcher and the agent taking turns per message. Smaller batches into a
    # buffer with room for a batch above its high-pressure mark never block.
    "broker_max_poll_records": 1000,
    "stream_buffer_maxsize": 16384,
}


class FastPathApp(faust.App):
    """A :class:`faust.App` whose Kafka consumer is :class:`FastPathConsumer`.

    Drop-in: the arguments of ``faust.App``, plus ``fetch_max_wait``
    (seconds a fetch may wait at the broker for new data; Faust fixes 1.5 s;
    None keeps that). Starts from :data:`TUNED_SETTINGS`. Other transports
    (a ``confluent://`` URL) are left as Faust makes them.
    """

    def __init__(self, id: str, *, fetch_max_wait: float | None = DEFAULT_FETCH_MAX_WAIT, **options: Any) -> None:
        self.fetch_max_wait_ms = None if fetch_max_wait is None else int(fetch_max_wait * 1000)
        self.batched_topics: set[str] = set()
        super().__init__(id, **{**TUNED_SETTINGS, **options})

    def batched_topic(self, *topics: str, batch_buffer: int = DEFAULT_BATCH_BUFFER, **options: Any) -> TopicT:
        """``app.topic(...)`` whose records reach its streams as :class:`MessageBatch` messages.

        ``batch_buffer``: how many batches a stream of it buffers (Faust's
        ``stream_buffer_maxsize`` counts messages, and a batch is up to
        ``broker_max_poll_records`` records). An agent of such a topic must handle
        both forms: a batch (``message.records``) and, from ``agent.send``/``put``
        or a transport other than aiokafka, a plain message.
        """
        self.batched_topics.update(topics)
        # What app.topic does, with maxsize: Faust 0.15.3's App.topic accepts maxsize but does
        # not pass it on (tests/agents/test_fastpath.py checks the stream's buffer size).
        topic_class: Any = self.conf.Topic
        return cast(TopicT, topic_class(self, topics=topics, maxsize=batch_buffer, **options))

    def _new_transport(self) -> TransportT:
        url = self.conf.broker_consumer[0]
        transport_class = faust_transport.by_url(url)
        if transport_class is aiokafka_driver.Transport:
            transport_class = FastPathTransport
        return transport_class(self.conf.broker_consumer, self)
