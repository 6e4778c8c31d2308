"""A Faust app whose consumer hands each message over without racing it against a rebalance.

Faust's ``Consumer._drain_messages`` delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: it
races the delivery against "a rebalance has started" so that a delivery
blocked by flow control can be abandoned. ``mode``'s ``wait_first`` makes four
tasks and an ``asyncio.wait`` for that, per message; measured, it is about half
of what a bare agent costs (see shared FACTS.md).

Almost every delivery finishes without ever suspending (the stream's queue has
room, flow control is open), so there is nothing to race. :class:`FastPathConsumer`
runs the delivery coroutine up to its first suspension point, in place. If it
completes there, the message is delivered and no task was made. If it
suspends (full stream buffer, producer buffer, flow control), or if a
rebalance is already under way, the rest of the delivery goes through the
original ``wait_first`` race, so flow control behaves exactly as before:
a rebalance still abandons a blocked delivery.

Supported extension points only: an :class:`faust.App` subclass returns a
transport subclass whose ``Consumer`` class attribute is the subclass here
(``Transport.create_consumer`` instantiates ``self.Consumer``). The one method
that changes, ``_drain_messages``, is Faust 0.15.3's own, with the delivery
line replaced; keep it in step when upgrading faust-streaming.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import aiokafka
import faust
from faust import transport as faust_transport
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, ConsumerT, Message, TransportT
from mode import Service, ServiceT

DEFAULT_FETCH_MAX_WAIT = 0.1

__all__ = ["FastPathApp", "FastPathConsumer", "FastPathConsumerThread", "FastPathTransport", "LightMonitor", "TUNED_SETTINGS", "eager_step"]



@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Go on running ``coro``, which already suspended once and yielded ``pending``.

    This is what ``yield from coro`` would do after its first step: hand each
    yielded future to the task running us, pass results and exceptions
    (cancellation included) back in.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    # A native coroutine around the generator: asyncio and mode accept it anywhere.
    return await _resume(coro, pending)


def eager_step(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any] | None:
    """Run ``coro`` until it first suspends.

    Returns None if it finished without suspending (its result is dropped, an
    exception propagates); otherwise a coroutine that finishes it when awaited
    (or run as a task, and cancelled like one).
    """
    try:
        pending = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, pending)


class FastPathConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with a shorter broker-side fetch wait.

    Faust passes ``fetch_max_wait_ms=1500`` to aiokafka and offers no setting
    for it. A broker that holds a fetch for that long when it has nothing new
    (Tansu does) adds up to 1.5 s to every event of a live, not-backlogged
    stream. While there is a backlog, fetches return at once either way.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = cast(FastPathApp, self.app).fetch_max_wait_ms
        if wait is not None:
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError(
                    f"aiokafka {aiokafka.__version__} keeps fetch_max_wait_ms elsewhere; "
                    "update streams/fastpath.py (FastPathConsumerThread) for this version, "
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
        """
        if self.suspend_flow.is_set():
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            return
        rest = eager_step(self.callback(message))
        if rest is not None:
            await self.wait_first(rest, self.suspend_flow.wait())

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
                ait = cast(AsyncIterator[tuple[TP, Message]], getmany(timeout=1.0))

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
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
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

    Consumer: type[ConsumerT] = FastPathConsumer


class LightMonitor(Monitor):
    """Faust's Monitor without its per-message and per-table-access bookkeeping.

    The default Monitor records every message and stream event (timestamps in
    deques, counters per topic-partition) for Faust's own web statistics, which
    this project does not read: its metrics come from the ledgers. Everything
    else (rebalance, commit, send statistics) is kept.
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any,
                            state: dict[str, Any] | None = None) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: Any, key: Any) -> None:
        pass

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        pass


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


class FastPathApp(faust.App):  # type: ignore[misc]
    """A :class:`faust.App` whose Kafka consumer is :class:`FastPathConsumer`.

    Drop-in: the arguments of ``faust.App``, plus ``fetch_max_wait``
    (seconds a fetch may wait at the broker for new data; Faust fixes 1.5 s;
    None keeps that). Starts from :data:`TUNED_SETTINGS`. Other transports
    (a ``confluent://`` URL) are left as Faust makes them.
    """

    def __init__(self, id: str, *, fetch_max_wait: float | None = DEFAULT_FETCH_MAX_WAIT, **options: Any) -> None:
        self.fetch_max_wait_ms = None if fetch_max_wait is None else int(fetch_max_wait * 1000)
        super().__init__(id, **{**TUNED_SETTINGS, **options})

    def _new_transport(self) -> TransportT:
        url = self.conf.broker_consumer[0]
        transport_class = faust_transport.by_url(url)
        if transport_class is aiokafka_driver.Transport:
            transport_class = FastPathTransport
        return transport_class(self.conf.broker_consumer, self)
