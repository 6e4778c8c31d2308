"""The agents' state keepers: they apply events to ledgers and flush them to tables.

Faust-aware but free of agent and web definitions (those are in app.py). Each
processor owns the ledgers of the partitions assigned to this worker; a flush
writes what changed, waits until the changelog holds it, and only then acks
the events, so Faust never commits an offset the state does not hold.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import EventT

from streams.customers.outbox import KIND as CUSTOMERS
from streams.orders.config import window_config
from streams.orders.contract import Limits, decode_order
from streams.orders.dead_letters import DeadLetter, dead_letter_record, header_list
from streams.orders.fleet_detection import KIND as DETECTION
from streams.orders.fleet_detection import status_message
from streams.orders.hit_rate import PublishedLists, published_list
from streams.orders.ledger import Changes, PartitionLedger, Verdict
from streams.orders.markers import Marker, decode_marker
from streams.orders.snapshot import FlushState, Snapshot, WindowMerges, take_snapshot
from streams.pairs.budget import PairMemoryBudget
from streams.pairs.ledger import FLUSHED, HorizonView, PairLedger, top_pairs
from streams.pairs.outbox import owner_partition
from streams.pairs.recommendations import (
    Decision,
    PublishedState,
    RecommendationThrottle,
    confidence,
    recommendation_message,
)
from streams.runtime.fleet_detection import DropTestView
from streams.runtime.store import PartitionedTable
from streams.settings import Settings, duration_label

log = logging.getLogger(__name__)


class _Owner(Protocol):
    ledgers: dict[int, Any]
    table: PartitionedTable
    unacked: list[EventT[Any]]


def forget_partitions(owner: _Owner, partitions: set[int]) -> None:
    """Drop what a processor holds of ``partitions``, revoked: their ledgers, table bookkeeping and events.

    Their unacked events are replayed by the new owner; the caller holds the processor's lock.
    """
    for partition in partitions:
        owner.ledgers.pop(partition, None)
    owner.table.forget(partitions)
    owner.unacked = [e for e in owner.unacked if e.message.partition not in partitions]


RETRY_DELAY, RETRY_DELAY_MAX = 0.1, 5.0  # seconds between flushes while the broker fails them


@dataclass(slots=True)
class _Take:
    """What one flush of the orders took: given back to the ledgers if the broker fails it."""

    events: list[EventT[Any]]
    pending: int  # orders in the events
    dead: list[DeadLetter]
    changes: list[tuple[PartitionLedger, Changes]]
    covered: dict[int, int]  # partition -> the offset the take covers
    dead_sent: bool = False
    meta_durable: bool = False


class OrderProcessor:
    """Orders topic → per-partition ledgers → `state` table, dead letters and pair deltas."""

    def __init__(self, settings: Settings, table: PartitionedTable, dead_letters: faust.TopicT,
                 pairs: faust.TopicT, clock: Callable[[], float] = time.time,
                 customers: faust.TopicT | None = None, detection: faust.TopicT | None = None) -> None:
        self.settings = settings
        self.table = table
        self.dead_letters = dead_letters
        self.pairs = pairs
        self.customers = customers
        # The fleet's drop test (streams/orders/fleet_detection.py): where each partition's tick counts
        # and standing go, and the test's view when this worker owns it.
        self.detection = detection
        self.drop_test: Callable[[], DropTestView] = DropTestView
        self._reported: dict[int, tuple[float | None, bool]] = {}  # partition -> the standing last sent
        self.clock = clock
        self.limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
        self.config = window_config(settings)
        self.ledgers: dict[int, PartitionLedger] = {}
        # When this worker took each partition (unix ms): the metrics label its counters
        # with it, so every spell of ownership is a series of its own (streams/runtime/metrics.py).
        self.assignments: dict[int, str] = {}
        self.unacked: list[EventT[Any]] = []
        self.pending = 0  # orders in the unacked events
        self.dead_letter_queue: list[DeadLetter] = []
        self.dead_letters_sent: dict[str, int] = {}
        self.dead_letter_errors: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.highwaters: Callable[[], dict[int, int]] = dict
        # Before/after markers read from the markers topic (streams/runtime/follower.py), by message key.
        self.markers: dict[bytes, Marker] = {}
        # The published recommendation lists, for the hit rate (None: off). The follower's thread
        # only queues messages; the event loop applies them before the next orders.
        self.lists = PublishedLists(settings.hit_rate_products) if settings.hit_rate_products else None
        self.list_messages: collections.deque[tuple[bytes, bytes | None]] = collections.deque()
        self.window_merges = WindowMerges()  # what the last snapshot merged, for the next (scrapes)
        self._outstanding: asyncio.Future[None] | None = None  # the flush waiting for the broker (see flush)
        self.flush_failures = 0  # flushes the broker failed, given back to the ledgers (see flush)
        self._retry_delay = RETRY_DELAY  # before the flush after a failed one (doubles up to RETRY_DELAY_MAX)

    def take_list(self, key: bytes, value: bytes | None) -> None:
        """A message of the recommendations topic (on the follower's thread), queued for the event loop."""
        self.list_messages.append((key, value))

    def _apply_list_messages(self) -> None:
        lists, queue = self.lists, self.list_messages
        assert lists is not None
        while queue:
            key, value = queue.popleft()
            if not value:
                lists.withdraw(key.decode(errors="replace"))
            elif (found := published_list(value)) is not None:
                lists.publish(*found)

    def take_marker(self, key: bytes, value: bytes | None) -> None:
        """A message of the markers topic (on the follower's thread): a marker, or a tombstone removing one."""
        marker = decode_marker(value)
        if marker is None:
            self.markers.pop(key, None)
        else:
            self.markers[key] = marker

    # -- rebalancing ---------------------------------------------------------
    def restore(self, partitions: set[int]) -> None:
        assigned = str(int(self.clock() * 1000))
        for partition in partitions:
            self.ledgers[partition] = ledger = PartitionLedger.restore(
                partition, self.config, self.table.items_of_partition(partition))
            ledger.lists = self.lists
            self.assignments[partition] = assigned
            self._reported.pop(partition, None)  # the next flush says where it stands
        log.info("order ledgers restored for partitions %s", sorted(partitions))

    async def revoke(self, partitions: set[int]) -> None:
        async with self.lock:
            await self.settle_before_dropping()  # its events acked, its writes durable: none replayed
            forget_partitions(self, partitions)
            for partition in partitions:
                self._reported.pop(partition, None)
            self.dead_letter_queue = [d for d in self.dead_letter_queue if d.partition not in partitions]

    # -- the hot path --------------------------------------------------------
    def process(self, event: EventT[Any]) -> None:
        """Apply an event: one order, or a batch of them (a MessageBatch, streams/runtime/fastpath.py)."""
        message = event.message
        ledger = self.ledgers.get(message.partition)
        if ledger is None:
            # Not (or no longer) ours: an event still in flight after its partition was
            # revoked. Left unacked, it is replayed by the partition's owner; a fresh
            # ledger here would overwrite the owner's state in the changelog.
            return
        if self.list_messages:
            self._apply_list_messages()
        records = getattr(message, "records", None)
        received_at = self.clock()
        if records is None:
            self._apply(ledger, message, message.timestamp, received_at)
            self.pending += 1
        else:
            for record in records:  # aiokafka ConsumerRecords: timestamps in ms
                self._apply(ledger, record, record.timestamp / 1000.0, received_at)
            self.pending += len(records)
        self.unacked.append(event)

    def _apply(self, ledger: PartitionLedger, record: Any, timestamp: float, received_at: float) -> None:
        """Apply one record (a Faust Message or an aiokafka ConsumerRecord; ``timestamp`` in seconds)."""
        outcome = ledger.apply(record.offset, decode_order(record.value, self.limits), timestamp, received_at)
        if outcome.verdict is Verdict.INVALID:
            self.dead_letter_queue.append(DeadLetter(
                record.topic, record.partition, record.offset, timestamp, record.key, record.value,
                header_list(record.headers), outcome.reason, outcome.detail))

    def flush_due(self) -> bool:
        """Whether the agent should flush now: enough events pending, and no flush outstanding unless
        the pending events reached twice that (then the agent waits for it before applying more)."""
        limit = self.settings.flush_max_events
        if self.pending < limit:
            return False
        outstanding = self._outstanding
        return outstanding is None or outstanding.done() or self.pending >= 2 * limit

    async def settle(self) -> None:
        """Wait until the outstanding flush (if any) is durable and its events acked; raises what it raised."""
        outstanding = self._outstanding
        if outstanding is not None:
            # Shielded: a waiter cancelled (the agent at a rebalance) must not cancel the flush itself.
            await asyncio.shield(outstanding)
            if self._outstanding is outstanding:
                self._outstanding = None

    async def settle_before_dropping(self) -> None:
        """:meth:`settle` at a revoke or a stop; a flush that failed leaves its events unacked (replayed)."""
        try:
            await self.settle()
        except Exception:
            log.exception("the outstanding flush of the orders failed; its events are replayed by the next owner")
            self._outstanding = None

    async def flush(self, wait: bool = True) -> None:
        """Take what changed and hand it to the producer; its events are acked once the changelog holds it.

        At most one flush is outstanding: this one first waits until the previous one
        is durable. With ``wait`` it also waits for itself; the orders agent passes
        False and goes on applying events while the broker acknowledges the writes.

        Why the state stays exact with a flush outstanding:

        - Taking is atomic. From taking the changes to handing every value to the
          producer nothing awaits, and every value is serialised then (the windows'
          totals are live objects; ``Meta.to_dict`` is a copy, encoded here too). So
          the flush writes the state as of one instant: every event applied before
          it and none after, and the meta key records the offset of the last one.
          An event applied while the flush waits changes only live objects and is
          in the next flush's take, with its event in the next flush's acks.
        - Order. A flush writes its changed keys, waits until the changelog holds
          them, then the meta key, then the pair deltas; the next flush takes only
          after all of that (and the acks) are done. So the changelog never holds
          a later flush's keys before an earlier flush's meta key, and the outbox
          key is overwritten only after the deltas it held were delivered.
        - Acks. An event is acked only by the flush whose take covered it, once
          that flush is durable: Faust commits no offset the changelog does not
          hold. A crash at any point replays from the last committed offset into
          the state of the last meta key written, which skips what it covers.
        - Revoke and stop wait for the outstanding flush (:meth:`settle`) before
          the partitions' ledgers are dropped.
        - Memory: the agent stops applying when ``2 x CROSSSELL_FLUSH_MAX_EVENTS``
          events are pending (:meth:`flush_due`), until the outstanding flush is done.

        Why the state stays exact when the broker fails a flush (an error from the
        producer after the take: a refused or timed-out write):

        - Taking clears each ledger's dirty keys, so a failed flush must give them
          back before anything else takes: :meth:`_flush_failed` runs inside the
          outstanding flush, and the next flush, a revoke and a stop all wait for
          it (:meth:`settle`). A failure before the meta key is known durable gives
          each ledger back what it took (:meth:`PartitionLedger.give_back`: its
          windows dirty again, its seen-segments, deletions and outbox messages
          carried into the next take) and its events to the unacked ones; the next
          flush writes all of it before its meta key. Until then the changelog holds
          what a crash could leave: each window key carries its own offset, the
          meta key is written after its flush's keys, and restore() sends again the
          outbox messages a durable meta key covers. Nothing is acked meanwhile.
        - A failure after the meta key is durable (sending the pair deltas) loses no
          state: the events are acked and the unsent messages go back to the ledgers'
          ``unsent_outbox``, sent before the next take overwrites the outbox key (if
          that send fails, the flush takes nothing and tries again later).
        - Kept partitions are written by the next flush; revoked ones are dropped
          and their new owner restores from the changelog (the crash case); a stop
          writes nothing more, and the restart replays what no durable meta covers.
        - Flushes after a failure wait ``RETRY_DELAY`` seconds, doubling up to
          ``RETRY_DELAY_MAX``; ``crosssell_flush_failures_total`` counts the failures.
        """
        async with self.lock:
            await self.settle()
            # The last complete flush's pair deltas must be delivered before this flush
            # overwrites the outbox key that holds them. First, before anything is taken:
            # the agent goes on applying events while this awaits.
            if not await self._resend_outboxes():
                return
            # From taking the changes to writing them nothing awaits (see above).
            events, self.unacked = self.unacked, []
            pending, self.pending = self.pending, 0
            dead, self.dead_letter_queue = self.dead_letter_queue, []
            changes = [(ledger, c) for ledger in self.ledgers.values() if (c := ledger.take_changes()) is not None]
            # Whether a partition's orders wait to be counted is told against what this flush covers:
            # events applied after the take are not in its counts (the fleet's test must wait for them).
            covered = {partition: ledger.meta.offset for partition, ledger in self.ledgers.items()}
            take = _Take(events, pending, dead, changes, covered)
            if not events and not changes:
                try:
                    await self._report_standing()
                except Exception:
                    log.exception("orders flush: telling the drop test where the partitions stand failed")
                    self._reported.clear()
                return
            try:
                for _, change in changes:
                    self.table.write(change.writes)  # serialised now
            except Exception:
                self._flush_failed(take)
                self._outstanding = asyncio.ensure_future(self._wait_to_retry())
            else:
                meta = orjson.loads(orjson.dumps(dict(c.meta for _, c in changes)))  # a copy of the state as of now
                self._outstanding = asyncio.ensure_future(self._make_durable(take, meta))
        if wait:
            await self.settle()

    async def _resend_outboxes(self) -> bool:
        """Send the ledgers' unsent outbox messages; False (they stay unsent) when the broker fails it."""
        resend = [(ledger, ledger.unsent_outbox) for ledger in self.ledgers.values() if ledger.unsent_outbox]
        for ledger, _ in resend:
            ledger.unsent_outbox = []
        try:
            await asyncio.gather(*(self._send_pairs(m) for _, messages in resend for m in messages))
        except Exception:
            log.exception("orders flush: sending the pair deltas of the last flush failed; trying again later")
            self.flush_failures += 1
            for ledger, messages in resend:
                ledger.unsent_outbox = messages + ledger.unsent_outbox
            await self._wait_to_retry()
            return False
        return True

    async def _make_durable(self, take: _Take, meta: dict[str, Any]) -> None:
        """The rest of a flush, after its take: wait for the changelog, write the meta key, send, ack."""
        try:
            await asyncio.gather(*(self._send_dead_letter(letter) for letter in take.dead))
            take.dead_sent = True
            await self.table.wait_written()
            # The meta key comes after: its offset says "everything up to here is applied".
            self.table.write(meta)
            await self.table.wait_written()
            take.meta_durable = True
            # Expired keys go last, so a replay after a crash still finds them (see Changes);
            # with them the parts of values replaced in this flush.
            self.table.write({}, [key for _, c in take.changes for key in c.deletes])
            self.table.delete_replaced_parts()
            # Pair deltas leave only once the state that produced them is durable; a crash
            # before they are delivered sends them again from the outbox (see ledger.restore).
            await asyncio.gather(*(self._send_pairs(m, take.covered) for _, c in take.changes for m in c.outbox))
            await self._report_standing(take.covered)
        except Exception:
            self._flush_failed(take)  # before anything else can take (see flush)
            await self._wait_to_retry()
            return
        self._retry_delay = RETRY_DELAY
        for event in take.events:
            event.ack()

    def _flush_failed(self, take: _Take) -> None:
        """Give a failed flush back: the next flush writes (or sends) what it did not (see flush)."""
        self.flush_failures += 1
        log.exception("orders flush failed %s", "sending its pair deltas; the next flush sends them again"
                      if take.meta_durable else "before its meta key was durable; the next flush writes it again")
        self._reported.clear()  # the standing may not have been sent: the next flush tells it
        if not take.dead_sent:
            self.dead_letter_queue = take.dead + self.dead_letter_queue  # at least once
        for ledger, change in take.changes:
            if self.ledgers.get(ledger.partition) is not ledger:
                continue  # revoked (a revoke waits for this flush, so not expected): its new owner restores
            if take.meta_durable:
                ledger.unsent_outbox = change.outbox + ledger.unsent_outbox
            else:
                ledger.give_back(change)
        if take.meta_durable:
            for event in take.events:
                event.ack()
        else:
            self.unacked = take.events + self.unacked
            self.pending += take.pending

    async def _wait_to_retry(self) -> None:
        delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, RETRY_DELAY_MAX)
        await asyncio.sleep(delay)

    def _waiting(self, partition: int, highwaters: dict[int, int], covered: dict[int, int] | None = None) -> bool:
        """Whether messages of ``partition`` wait to be read (as the consumer last fetched), or to be
        counted: those past its offset in ``covered`` (what the flush reporting covers), else its ledger's."""
        offset = self.ledgers[partition].meta.offset if covered is None else covered.get(partition, -1)
        return highwaters.get(partition, 0) > offset + 1

    async def _report_standing(self, covered: dict[int, int] | None = None) -> None:
        """Tell the fleet's drop test where each partition stands, when that changed since it was last told:
        the watermark of the orders whose counts were sent, and whether more wait (a backlog holds the test)."""
        if self.detection is None:
            return
        highwaters = self.highwaters()
        sends = []
        for partition, ledger in self.ledgers.items():
            standing = (ledger.reported_watermark, self._waiting(partition, highwaters, covered))
            if self._reported.get(partition) != standing:
                self._reported[partition] = standing
                sends.append(self._send_pairs(status_message(partition, *standing)))
        await asyncio.gather(*sends)

    def _send_pairs(self, message: dict[str, Any], covered: dict[int, int] | None = None) -> asyncio.Future[Any]:
        """Send one outbox message: pair deltas, or customer summaries (streams/customers/outbox.py)."""
        topic: faust.TopicT | None = self.pairs
        kind = message.get("kind")
        if kind == CUSTOMERS:
            topic = self.customers  # None: left in the outbox before CROSSSELL_CUSTOMERS was turned off
        elif kind == DETECTION:
            topic = self.detection
            source = message["source"]
            if "waiting" not in message and source in self.ledgers:  # tick counts: where the partition stands now
                message = {**message, "waiting": self._waiting(source, self.highwaters(), covered)}
        if topic is None:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        fut: asyncio.Future[Any] = topic.send_soon(
            key=str(message["source"]).encode(), value=orjson.dumps(message), partition=message["partition"],
            key_serializer="raw", value_serializer="raw")
        return fut

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        """Publish one dead letter; a refused one goes again without its value, and is counted.

        Transient errors (broker unreachable, leader moving) are retried until
        they pass, as the changelog writes wait: the events stay unacked meanwhile.
        An error that would repeat forever must not stop the worker: the event
        is already counted by its reason, and the log says what was lost.
        """
        rejected_at = self.clock()
        for keep_value in (True, False):
            record = dead_letter_record(letter, rejected_at, self.settings.max_message_bytes,
                                        self.settings.max_event_bytes, keep_value=keep_value)
            error = await self._publish(record.key, record.value, record.headers)
            if error is None:
                if keep_value:
                    self.dead_letters_sent[letter.reason] = self.dead_letters_sent.get(letter.reason, 0) + 1
                return
            self.dead_letter_errors[letter.reason] = self.dead_letter_errors.get(letter.reason, 0) + 1
            log.error("dead letter of %s[%d]@%d (%s) refused%s: %s", letter.topic, letter.partition,
                      letter.offset, letter.reason, "" if keep_value else " even without its value", error)
        log.error("dead letter of %s[%d]@%d not published; the event is counted under %s. Check the topic %r "
                  "exists and accepts messages of %d bytes (CROSSSELL_MAX_MESSAGE_BYTES).", letter.topic,
                  letter.partition, letter.offset, letter.reason, self.settings.dead_letter_topic,
                  self.settings.max_message_bytes)

    async def _publish(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Exception | None:
        """Send to the dead-letter topic and wait for the broker; the error when it refuses for good."""
        delay = 0.1
        while True:
            try:
                sent = await self.dead_letters.send(key=key, value=value, headers=headers, key_serializer="raw",
                                                    value_serializer="raw", force=True)
                await sent
                return None
            except (ProducerSendError, KafkaError) as exc:
                cause = exc.__cause__ if isinstance(exc, ProducerSendError) else exc
                if not getattr(cause, "retriable", False):
                    return exc
                log.warning("dead letter: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def snapshot(self) -> Snapshot:
        if self.list_messages:  # also while no orders come
            self._apply_list_messages()
        snapshot = take_snapshot(list(self.ledgers.values()), self.settings, dead_letters=dict(self.dead_letters_sent),
                                 dead_letter_errors=dict(self.dead_letter_errors),
                                 markers=list(self.markers.values()), merges=self.window_merges)
        highwaters = self.highwaters()
        snapshot.lag = {p: max(0, highwaters[p] - (ledger.meta.offset + 1))
                        for p, ledger in self.ledgers.items() if p in highwaters}
        snapshot.assignments = {p: self.assignments.get(p, "") for p in self.ledgers}
        outstanding = self._outstanding
        snapshot.flush = FlushState(self.pending, outstanding is not None and not outstanding.done())
        drop_test = self.drop_test()
        snapshot.detection_owner = drop_test.owner
        snapshot.detection = drop_test.segments
        snapshot.drop_episodes = drop_test.episodes
        snapshot.detected_until = drop_test.tested_until
        snapshot.detection_skipped = drop_test.skipped
        if self.lists is not None:
            lists = self.lists
            snapshot.lists_held, snapshot.lists_evicted = len(lists.lists), lists.evicted
            for rows in snapshot.potential.values():
                for row in rows:
                    version = lists.newest(row.product)
                    if version is not None and version.best_by_lift is not None:
                        snapshot.companions[row.product] = version.best_by_lift
        return snapshot


class PairProcessor:
    """Pairs topic (repartitioned by product) → per-partition pair ledgers → `pairs` table.

    The ledgers of every partition this worker owns share one memory budget
    (CROSSSELL_PAIR_MEMORY_MB, streams/pairs/budget.py), enforced after each
    message: the state grows by at most one message beyond it. A cut runs in
    steps, letting the event loop run between them.
    """

    def __init__(self, settings: Settings, table: PartitionedTable) -> None:
        self.settings = settings
        self.table = table
        self.horizons = {duration_label(h): h for h in settings.pair_horizons}
        self.ledgers: dict[int, PairLedger] = {}
        self.unacked: list[EventT[Any]] = []
        self.lock = asyncio.Lock()
        self.budget = PairMemoryBudget(settings.pair_memory_bytes)
        self.flush_failures = 0  # flushes the broker failed, given back to the ledgers
        # Deprecated fixed capacities, now caps under the budget (0: none).
        self.product_cap = settings.pair_product_capacity or None
        self.pair_cap = settings.pair_capacity or None
        for name, value in (("PAIR_PRODUCT_CAPACITY", self.product_cap), ("PAIR_CAPACITY", self.pair_cap)):
            if value is not None:
                log.warning("CROSSSELL_%s=%d is deprecated: it caps every pair bucket's summary even when "
                            "CROSSSELL_PAIR_MEMORY_MB (%d) would let it count exactly; unset it to count "
                            "exactly while the budget allows", name, value, settings.pair_memory_mb)

    def restore(self, partitions: set[int]) -> None:
        s = self.settings
        for partition in partitions:
            self.ledgers[partition] = PairLedger.restore(
                partition, self.horizons, s.pair_slots, self.product_cap, self.pair_cap,
                self.table.items_of_partition(partition))
        self.budget.enforce(self.ledgers.values())
        log.info("pair ledgers restored for partitions %s (%.1f MB of pair state)", sorted(partitions),
                 self.budget.usage.bytes / 1e6)

    async def revoke(self, partitions: set[int]) -> None:
        async with self.lock:
            forget_partitions(self, partitions)

    async def process(self, event: EventT[Any]) -> None:
        ledger = self.ledgers.get(event.message.partition)
        if ledger is None:  # revoked while in flight: the owner replays it
            return
        if ledger.apply(orjson.loads(event.value), event.value):
            # A cut of the large summaries took ~150 ms each in one go: in steps, the other
            # agents and the scrapes go on between them (the next message waits for the cut).
            for _ in self.budget.enforce_in_steps(self.ledgers.values(), changed=ledger):
                await asyncio.sleep(0)
        self.unacked.append(event)

    def accuracy(self, horizon: str) -> tuple[bool, int]:
        """Whether every pair count of ``horizon`` this worker holds is exact, and the largest error bound."""
        views = [ledger.view(horizon) for ledger in list(self.ledgers.values())]
        return all(view.exact for view in views), max((view.error_bound for view in views), default=0)

    async def flush(self) -> None:
        """Write what changed; ack the messages once the changelog holds it.

        A flush the broker fails (an error from the producer after the take) is
        given back before the lock is released, so before anything else takes:
        each ledger it took writes those buckets whole at the next flush
        (:meth:`PairLedger.give_back`), and its messages are acked only by that one.
        """
        async with self.lock:
            events, self.unacked = self.unacked, []
            taken: list[PairLedger] = []
            try:
                await self._write_changes(taken)
            except Exception:
                log.exception("pairs flush failed; the next flush writes its buckets again")
                self.flush_failures += 1
                for ledger in taken:
                    if self.ledgers.get(ledger.partition) is ledger:
                        ledger.give_back()
                self.unacked = events + self.unacked
                return
            for event in events:
                event.ack()

    async def _write_changes(self, taken: list[PairLedger]) -> None:
        """Take each ledger's changes (into ``taken``) and wait until the changelog holds them."""
        changed = []
        for partition, ledger in list(self.ledgers.items()):
            writes, deletes = ledger.take_changes()
            taken.append(ledger)
            if writes or deletes:
                changed.append(partition)
            for key, value in writes.items():
                # A bucket's base can hold a few hundred thousand counts (~50 ms to serialise
                # and split): one a step, the agents and scrapes go on in between. What was
                # taken are copies, and a message applied meanwhile is logged at the next flush.
                self.table.write({key: value})
                await asyncio.sleep(0)
            self.table.write({}, deletes)
        self.budget.forget()  # expired buckets are gone: the next message counts every ledger again
        await self.table.wait_written()
        # A one-record batch closes the flush: Tansu 0.6.0 reports a partition's end as
        # the first offset of its last batch + 1, so recovery would skip the rest of a
        # multi-record last batch (tests/integration/test_crash_recovery.py).
        self.table.write({f"{partition}/{FLUSHED}": {"at": time.time()} for partition in changed})
        await self.table.wait_written()
        self.table.delete_replaced_parts()


class Recommender:
    """Publishes "frequently bought together" lists when they change materially."""

    def __init__(self, settings: Settings, pairs: PairProcessor, topics: dict[str, faust.TopicT]) -> None:
        self.settings = settings
        self.pairs = pairs
        self.topics = topics
        self.throttle = RecommendationThrottle(settings.recommendation_interval_seconds,
                                               min_relative_count_change=settings.recommendation_min_change)
        self.published: dict[tuple[str, str], PublishedState] = {}
        self.updates = 0
        # The top pairs of each (pairs partition, horizon), from the last ranking of all lists.
        self._top_pairs: dict[tuple[int, str], list[dict[str, Any]]] = {}
        self._ranked_at = -float("inf")
        self._ranking_seconds = 0.0
        self._refresh: asyncio.Task[Any] | None = None  # a ranking for the top pairs, under way

    # Ranking reads every pair the worker holds: scrapes and the live page reuse the last
    # ranking while it is younger than this, or than 20 rankings took (at most 5 % of a core).
    VIEW_MAX_AGE = 10.0
    PUBLISH_STEP = 500  # products a publication ranks between two turns of the event loop

    @property
    def state_bytes(self) -> int:
        return self.pairs.budget.usage.bytes

    @property
    def budget_bytes(self) -> int:
        return self.pairs.budget.limit_bytes

    def accuracy(self, horizon: str) -> tuple[bool, int]:
        return self.pairs.accuracy(horizon)

    def _views(self) -> list[tuple[int, HorizonView]]:
        return [(q, ledger.view(h)) for q, ledger in list(self.pairs.ledgers.items()) for h in self.pairs.horizons]

    def _rank(self) -> list[tuple[int, HorizonView, dict[str, dict[str, int]]]]:
        """Every view with its companions above the minimum support; keeps their top pairs."""
        ranked: list[tuple[int, HorizonView, dict[str, dict[str, int]]]] = []
        for _ in self._ranking(ranked):
            pass
        return ranked

    async def _rank_in_steps(self) -> list[tuple[int, HorizonView, dict[str, dict[str, int]]]]:
        """:meth:`_rank`, letting the event loop run between two views.

        Ranking reads every pair the worker holds (~0.2-0.5 s with a few hundred
        thousand pairs): in one go it held up every event and every /metrics answer
        meanwhile, the longest steps of the loop and most of p99 at a low rate.
        """
        ranked: list[tuple[int, HorizonView, dict[str, dict[str, int]]]] = []
        for _ in self._ranking(ranked):
            await asyncio.sleep(0)
        return ranked

    def _ranking(self, ranked: list[tuple[int, HorizonView, dict[str, dict[str, int]]]]) -> Iterator[None]:
        """Ranks into ``ranked``, one view per step: a view's pairs are read whole, its buckets unchanged within."""
        spent = 0.0  # in the steps themselves: the loop may run other work for a while between two
        top_pairs_rows: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for q, view in self._views():
            started = time.monotonic()
            pairs = view.guaranteed_pairs()
            grouped = view.companions(self.settings.min_support, pairs)
            top_pairs_rows[(q, view.horizon)] = self._pair_rows(view, top_pairs(pairs, self.settings.top_pairs))
            ranked.append((q, view, grouped))
            spent += time.monotonic() - started
            yield
        self._top_pairs = top_pairs_rows
        self._ranked_at = time.monotonic()
        self._ranking_seconds = spent

    async def publish(self, now: datetime | None = None) -> int:
        """Send the changed lists of the products this worker owns; returns messages sent."""
        now = now or datetime.now(UTC)
        s = self.settings
        sends: list[asyncio.Future[Any]] = []
        for q, view, grouped in await self._rank_in_steps():
            horizon = view.horizon
            candidates = set(grouped) | {
                product for (h, product), state in self.published.items()
                if h == horizon and state.companions and owner_partition(product, s.partitions) == q}
            exact, error_bound = view.exact, view.error_bound
            for n, product in enumerate(sorted(candidates), 1):
                if n % self.PUBLISH_STEP == 0:
                    await asyncio.sleep(0)  # events and scrapes go on between steps of a long publication
                ranked = view.ranked(product, grouped.get(product, {}), s.recommendation_top_k, s.min_support)
                last = self.published.get((horizon, product))
                decision = self.throttle.decide(ranked, last, now)
                if decision is Decision.PUBLISH:
                    value: bytes | None = orjson.dumps(recommendation_message(
                        product, horizon, now, ranked, orders_with_product=view.orders_with(product),
                        total_orders=view.orders, exact=exact, error_bound=error_bound))
                elif decision is Decision.TOMBSTONE:
                    value = None
                else:
                    continue
                sends.append(self.topics[horizon].send_soon(
                    key=product.encode(), value=value, key_serializer="raw", value_serializer="raw"))
                state = self.throttle.state_after(decision, ranked, last, now)
                if state is not None:
                    self.published[(horizon, product)] = state
        self.published = {k: v for k, v in self.published.items() if not self.throttle.forgettable(v, now)}
        await asyncio.gather(*sends)
        self.updates += len(sends)
        return len(sends)

    def recommendations(self, product: str) -> dict[str, Any] | None:
        """The current lists of ``product`` per horizon, or None when another worker owns it."""
        q = owner_partition(product, self.settings.partitions)
        ledger = self.pairs.ledgers.get(q)
        if ledger is None:
            return None
        s = self.settings
        result: dict[str, Any] = {"product_id": product, "horizons": {}}
        for horizon in self.pairs.horizons:
            view = ledger.view(horizon)
            ranked = view.ranked(product, view.companions_of(product), s.recommendation_top_k, s.min_support)
            result["horizons"][horizon] = recommendation_message(
                product, horizon, datetime.now(UTC), ranked, orders_with_product=view.orders_with(product),
                total_orders=view.orders, exact=view.exact, error_bound=view.error_bound)
        return result

    def top_pairs(self, horizon: str, limit: int) -> list[dict[str, Any]]:
        """The most frequent product pairs (a < b) this worker holds, with A→B confidence and lift.

        From the last ranking. Once it is older than :attr:`VIEW_MAX_AGE`, a new one
        starts in steps on the event loop and this answer is the last one's (a scrape
        does not wait for the ranking); ranked here and now only while the last
        ranking found no pairs (a first answer), or outside an event loop.
        """
        age = time.monotonic() - self._ranked_at
        if age > max(self.VIEW_MAX_AGE, 20 * self._ranking_seconds):
            self._refresh_top_pairs()
        rows = [row for (_, h), rows in self._top_pairs.items() if h == horizon for row in rows]
        rows.sort(key=lambda row: (-row["count"], row["product"], row["companion"]))
        return rows[:limit]

    def _refresh_top_pairs(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            return  # under way
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not any(self._top_pairs.values()):
            self._rank()  # nothing to show yet (or no loop to rank on): the answer waits for it
        else:
            self._refresh = loop.create_task(self._rank_in_steps())

    @staticmethod
    def _pair_rows(view: HorizonView, top: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
        rows = []
        for product, companion, count in top:
            n_a, n_b = view.orders_with(product), view.orders_with(companion)
            for c in view.ranked(product, {companion: count}, 1, 1):
                rows.append({"product": product, "companion": companion, "count": c.count, "orders": view.orders,
                             "orders_with_product": n_a, "orders_with_companion": n_b,
                             "support": c.count / view.orders if view.orders else 0.0,
                             "confidence": c.confidence, "confidence_reverse": confidence(c.count, n_b),
                             "lift": c.lift, "horizon": view.horizon})
        return rows
