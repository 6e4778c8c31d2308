"""The state of one source partition, applied exactly once per source offset.

A :class:`PartitionLedger` holds everything the worker knows about one
partition of the orders topic: its event-time windows, its cumulative
counters, its event-time watermark and the order ids seen within the dedup
horizon. It is stored as a few keys of a Faust table, all in the changelog
partition of the same number, so a rebalance moves it whole.

Exactness comes from offsets kept *with* the state they produced:

* every window key carries the highest source offset folded into it;
* the meta key carries the highest source offset applied at all, and is
  written last in a flush, after the window and dedup keys are durable.

After a crash the worker replays from the last committed source offset. An
event at or below ``meta.offset`` was fully applied and is skipped. An event
above it replays with the same watermark it first saw (the meta key is the
state as of the last complete flush), so it gets the same verdict (late,
duplicate, applied), and each window key folds it only if it has not
already (its own offset is lower). Nothing is counted twice, nothing lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

from streams.customers.outbox import customer_messages
from streams.orders.config import WindowConfig
from streams.orders.contract import BEFORE_RETENTION, FUTURE_EVENT_TIME, Order, Rejection
from streams.orders.facts import OrderFacts, order_facts
from streams.orders.fleet_detection import detection_messages
from streams.orders.hit_rate import PublishedLists, hit_figures
from streams.orders.windows import OrderSums, WindowTotals, agg, initialize
from streams.pairs.basket import PairAccumulator
from streams.pairs.outbox import outbox_from_state, outbox_messages, outbox_state

# What a pairs record needs besides its JSON value: key, headers, framing.
RECORD_ROOM = 1024

META = "meta"
WINDOW = "w"
SEEN = "d"
OUTBOX = "outbox"


def meta_key(partition: int) -> str:
    return f"{partition}/{META}"


def window_key(partition: int, start: float) -> str:
    return f"{partition}/{WINDOW}/{number_text(start)}"


def number_text(value: float) -> str:
    """``60.0`` -> ``"60"``, ``1.5`` -> ``"1.5"``: exact, and read back by float()."""
    return str(int(value)) if value.is_integer() else repr(value)


def seen_key(partition: int, sequence: int) -> str:
    return f"{partition}/{SEEN}/{sequence}"


def outbox_key(partition: int) -> str:
    return f"{partition}/{OUTBOX}"


class Verdict(Enum):
    APPLIED = "applied"
    REPLAYED = "replayed"  # already applied before a restart: skipped
    INVALID = "invalid"
    LATE = "late"
    DUPLICATE = "duplicate"


class Outcome(NamedTuple):
    """What became of one event. Immutable; a named tuple because one is built
    per applied order, and a frozen dataclass costs several times as much to build."""

    verdict: Verdict
    facts: OrderFacts | None = None
    reason: str = ""
    detail: str = ""


_new_outcome = tuple.__new__
APPLIED = Verdict.APPLIED  # looked up once: attribute access on an Enum class is slow (~0.1 us)
REPLAYED = Outcome(Verdict.REPLAYED)
LATE = Outcome(Verdict.LATE)
DUPLICATE = Outcome(Verdict.DUPLICATE)


@dataclass(slots=True)
class Counters(OrderSums):
    """Cumulative counts of a partition (the order sums, plus what became of every event);
    summed over partitions, of a worker."""

    events: int = 0
    late: int = 0
    duplicates: int = 0
    invalid: dict[str, int] = field(default_factory=dict)

    def add(self, other: Counters) -> None:
        self.add_sums(other)
        self.events += other.events
        self.late += other.late
        self.duplicates += other.duplicates
        for reason, count in other.invalid.items():
            self.invalid[reason] = self.invalid.get(reason, 0) + count


@dataclass(slots=True)
class Meta(Counters):
    """Counters plus where the partition stands: offsets, watermark, sequences."""

    offset: int = -1
    watermark: float | None = None
    seen_sequence: int = 0
    outbox_sequence: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A copy: a flush takes it, then awaits while more events are applied, and writes it after."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["invalid"] = dict(self.invalid)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Meta:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(slots=True)
class Window:
    totals: WindowTotals
    offset: int = -1  # highest source offset folded into this window


@dataclass(slots=True)
class SeenSegment:
    """Order ids first seen in one flush: order_id -> [source offset, event time]."""

    ids: dict[str, list[float]] = field(default_factory=dict)
    # Kept as ids are added: every flush checks every segment for expiry, and a
    # scan of all ids within the dedup horizon each time would dominate the flush.
    newest: float = float("-inf")

    def add(self, order_id: str, offset: int, event_time: float) -> None:
        self.ids[order_id] = [offset, event_time]
        if event_time > self.newest:
            self.newest = event_time

    def kept(self) -> KeptSegment:
        """What stays in memory once the segment is in the changelog: enough to expire it."""
        return KeptSegment(self.newest, tuple(self.ids))


class KeptSegment(NamedTuple):
    """A written seen-segment in memory: its newest event time and its order ids.

    The offsets and event times per id are in the changelog; memory keeps only
    what expiry needs. With ``seen`` mapping an id to its offset alone, an order
    id within the dedup horizon costs ~80 bytes besides the id itself, not ~220
    (tracemalloc, 200,000 orders; tests/unit/test_ledger.py keeps it under 120):
    at the default one-hour horizon the dedup ids are most of a busy worker's memory.
    """

    newest: float
    ids: tuple[str, ...]


@dataclass(slots=True)
class Changes:
    """What one flush writes: ``writes``, then ``meta``, then ``deletes``.

    Expired keys are deleted only after the meta key is durable: a crash before
    the meta lands replays events against the state as of the previous meta,
    which must still hold them.
    """

    writes: dict[str, Any]
    deletes: list[str]
    meta: tuple[str, dict[str, Any]]
    # Pair deltas to send once the meta key is durable (they are also in the outbox key).
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # The starts of the windows written: dirty again if the flush fails (PartitionLedger.give_back).
    windows: list[float] = field(default_factory=list)


class PartitionLedger:
    def __init__(self, partition: int, config: WindowConfig) -> None:
        self.partition = partition
        self.config = config
        self.meta = Meta()
        self.windows: dict[float, Window] = {}
        self.seen: dict[str, int] = {}  # order id -> the source offset it was first seen at
        self.segments: dict[int, KeptSegment] = {}
        self._dirty_windows: set[float] = set()
        self._new_seen = SeenSegment()
        self._dirty = False
        # (event time, basket) of the orders applied since the last flush, for the pair
        # counts: take_changes() counts them per pair bucket, in C, in one go.
        self.pair_orders: list[tuple[float, tuple[str, ...]]] = []
        # (customer, event time, primary category, categories) of the orders applied since the last
        # flush, re-keyed by customer at flush time (streams/customers/outbox.py).
        self.customer_orders: list[tuple[str, float, str, tuple[str, ...]]] = []
        # The orders applied since the last flush, counted per tick for the fleet's drop test at flush time.
        self.detection_orders: list[OrderFacts] = []
        # The watermark of the orders whose detection counts are in an outbox (sent, or sent again after
        # a restore): where the fleet's drop test may take this partition to stand.
        self.reported_watermark: float | None = None
        # The published recommendation lists orders are checked against (streams/orders/hit_rate.py);
        # None: no hit rate. Shared by the ledgers of a worker, set by its order processor.
        self.lists: PublishedLists | None = None
        # Set by restore(): the last flush's pair deltas, which may not have been sent.
        self.unsent_outbox: list[dict[str, Any]] = []
        # What a failed flush took that the next take cannot build again (give_back): its seen-segments,
        # its outbox messages (with their own sequences) and its deletions.
        self._carried_writes: dict[str, Any] = {}
        self._carried_outbox: list[dict[str, Any]] = []
        self._carried_deletes: list[str] = []

    # -- applying events -------------------------------------------------
    def apply(self, offset: int, decoded: Order | Rejection, produced_at: float,
              received_at: float | None = None) -> Outcome:
        """Apply the event at ``offset``; the verdict says what became of it.

        ``produced_at`` is the record's timestamp (when it was produced) and
        ``received_at`` the worker's clock when it read the record. An event time
        more than ``max_future`` ahead of either is rejected, so that no event can
        carry a partition's watermark ahead of the present: a producer with a wrong
        clock stamps its record with the same wrong time, and only the worker's
        clock tells. Every other verdict depends on the stream alone.
        """
        meta = self.meta
        if offset <= meta.offset:
            return REPLAYED
        meta.offset = offset
        meta.events += 1
        self._dirty = True
        if isinstance(decoded, Rejection):
            return self._invalid(decoded.reason, decoded.detail)
        config = self.config
        event_time = decoded.occurred_at
        if event_time > produced_at + config.max_future:
            return self._invalid(
                FUTURE_EVENT_TIME,
                f"occurred_at is {event_time - produced_at:.0f}s after the record was produced; "
                f"at most {config.max_future:g}s is allowed",
            )
        if received_at is not None and event_time > received_at + config.max_future:
            return self._invalid(
                FUTURE_EVENT_TIME,
                f"occurred_at is {event_time - received_at:.0f}s ahead of the worker's clock (and the record "
                f"timestamp agrees: the producer's clock is wrong); at most {config.max_future:g}s is allowed",
            )
        watermark = meta.watermark
        if watermark is not None and event_time < watermark - config.retention:
            return self._invalid(
                BEFORE_RETENTION,
                f"occurred_at is {watermark - event_time:.0f}s before the newest event of the partition; "
                f"windows are kept for {config.retention:g}s",
            )
        order_id = decoded.order_id
        first_seen = self.seen.get(order_id)
        if first_seen is not None and first_seen != offset:
            meta.duplicates += 1
            return DUPLICATE
        size = config.size
        start = (event_time // size) * size  # window_start and window_closed, inline: once per event
        if watermark is not None and start + size + config.grace <= watermark:
            meta.late += 1
            return LATE
        if first_seen is None:
            self.seen[order_id] = offset
            new_seen = self._new_seen
            new_seen.ids[order_id] = [offset, event_time]  # SeenSegment.add, inline
            if event_time > new_seen.newest:
                new_seen.newest = event_time
        facts = order_facts(decoded)
        hit = None
        lists = self.lists
        if lists is not None:
            version = lists.at(facts.primary_product, event_time)
            if version is not None:
                hit = hit_figures(version, facts.products)
        window = self.windows.get(start)  # the window fold, inline: once per event
        if window is None:
            window = self.windows[start] = Window(initialize())
        if offset > window.offset:  # else: folded before a crash, in a flush that did not finish
            agg(window.totals, facts, config.max_tracked, config.potential_capacity, hit)
            window.offset = offset
            self._dirty_windows.add(start)
        # Every applied order is counted, even one whose window fold was skipped
        # after a crash: the outbox of that unfinished flush was never sent.
        if facts.products and config.pair_horizons:
            self.pair_orders.append((event_time, facts.products))
        if config.customer_partitions:
            self.customer_orders.append((decoded.customer_id, event_time, facts.primary_category, facts.categories))
        if config.detection_tick:
            self.detection_orders.append(facts)
        meta.add_order(facts)
        if watermark is None or event_time > watermark:
            meta.watermark = event_time
        return _new_outcome(Outcome, (APPLIED, facts, "", ""))  # Outcome(APPLIED, facts) without its __new__

    def _invalid(self, reason: str, detail: str) -> Outcome:
        invalid = self.meta.invalid
        invalid[reason] = invalid.get(reason, 0) + 1
        return Outcome(Verdict.INVALID, reason=reason, detail=detail)

    # -- flushing ----------------------------------------------------------
    def take_changes(self) -> Changes | None:
        """The table writes that make the changelog hold the state as of now."""
        if not self._dirty:
            return None
        writes, self._carried_writes = self._carried_writes, {}
        deletes, self._carried_deletes = self._carried_deletes, []
        windows = [start for start in self._dirty_windows if start in self.windows]
        for start in windows:
            window = self.windows[start]
            writes[window_key(self.partition, start)] = {"offset": window.offset, **window.totals.to_dict()}
        self._dirty_windows = set()
        if self._new_seen.ids:
            self.meta.seen_sequence += 1
            sequence = self.meta.seen_sequence
            self.segments[sequence] = self._new_seen.kept()
            writes[seen_key(self.partition, sequence)] = {"ids": self._new_seen.ids}
            self._new_seen = SeenSegment()
        outbox, self._carried_outbox = self._carried_outbox, []
        carried = laid_out_end = len(outbox)  # a failed flush's messages, given back (see give_back)
        pairs: dict[str, Any] | None = None
        if self.pair_orders or self.customer_orders or self.detection_orders:
            config = self.config
            self.meta.outbox_sequence += 1
            sequence = self.meta.outbox_sequence
            if self.pair_orders:
                batches = self._pair_batches()
                max_bytes = config.max_message_bytes - RECORD_ROOM
                pairs = outbox_state(batches, config.pair_partitions, max_bytes)
                outbox += outbox_messages(self.partition, sequence, batches, config.pair_partitions, max_bytes)
                laid_out_end = len(outbox)  # the pair deltas: the outbox key keeps what they were laid out from
            if self.customer_orders:
                outbox += customer_messages(self.partition, sequence, self.customer_orders,
                                            config.customer_partitions, config.customer_horizon,
                                            config.customer_max_categories, config.max_message_bytes - RECORD_ROOM)
            if self.detection_orders:
                outbox += detection_messages(self.partition, sequence, self.meta.watermark, self.detection_orders,
                                             config.detection_tick, config.max_tracked,
                                             config.max_message_bytes - RECORD_ROOM)
            self.pair_orders = []
            self.customer_orders = []
            self.detection_orders = []
        if outbox:
            # "pairs" belongs to "sequence" (this flush); "messages" also holds a failed flush's
            # messages (their sequences below this one), kept as sent: restore() sends again
            # every message whose sequence the durable meta key covers.
            writes[outbox_key(self.partition)] = {"sequence": self.meta.outbox_sequence, "pairs": pairs,
                                                  "messages": outbox[:carried] + outbox[laid_out_end:]}
        self.reported_watermark = self.meta.watermark
        deletes.extend(self._expire())
        self._dirty = False
        return Changes(writes, deletes, (meta_key(self.partition), self.meta.to_dict()), outbox, windows)

    def give_back(self, changes: Changes) -> None:
        """The flush of ``changes`` failed before its meta key was known durable: the next take writes it all.

        The broker may hold any part of that flush, or none, or (an error after the
        broker stored it) its meta key: whatever it holds is a state a crash could
        leave, and the next flush's writes supersede it. So its windows are dirty
        again (written as they are then, with every event applied since); its
        seen-segments, deletions and outbox messages are carried into the next take
        as they were, under their own sequence numbers: the sequences are never
        taken back, because a meta key that names them may be durable. Called
        before any other take, so no later flush writes a meta key without them.
        """
        self._dirty = True
        self._dirty_windows.update(start for start in changes.windows if start in self.windows)
        seen = {key: value for key, value in changes.writes.items() if key.split("/")[1] == SEEN}
        self._carried_writes = seen | self._carried_writes
        self._carried_deletes = changes.deletes + self._carried_deletes
        self._carried_outbox = changes.outbox + self._carried_outbox

    def _pair_batches(self) -> dict[tuple[str, float], PairAccumulator]:
        """(horizon, bucket start) -> the counts of the :attr:`pair_orders` in that bucket."""
        parts: dict[tuple[str, float], list[PairAccumulator]] = {}
        for starts, accumulator in self._pair_counts_by_starts().items():
            for (label, _), start in zip(self.config.pair_horizons, starts, strict=True):
                parts.setdefault((label, start), []).append(accumulator)
        batches: dict[tuple[str, float], PairAccumulator] = {}
        for bucket, accumulators in parts.items():
            if len(accumulators) == 1:
                batches[bucket] = accumulators[0]  # may stand for other horizons' buckets too: laid out once
            else:
                merged = batches[bucket] = PairAccumulator(self.config.max_basket)
                for accumulator in accumulators:
                    merged.merge(accumulator)
        return batches

    def _pair_counts_by_starts(self) -> dict[tuple[float, ...], PairAccumulator]:
        """The :attr:`pair_orders` counted once each, by their bucket start in every horizon."""
        config = self.config
        orders = self.pair_orders
        sizes = [seconds / config.pair_slots for _, seconds in config.pair_horizons]
        # window_start(event_time, size), inlined, of every order for every horizon's bucket size.
        starts = zip(*[[event_time // size * size for event_time, _ in orders] for size in sizes], strict=True)
        counts: dict[tuple[float, ...], PairAccumulator] = {}
        # Most orders of a flush share their starts, and come in runs of them.
        for key, run in groupby(zip(starts, orders, strict=True), key=itemgetter(0)):
            accumulator = counts.get(key)
            if accumulator is None:
                accumulator = counts[key] = PairAccumulator(config.max_basket)
            accumulator.add_baskets([basket for _, (_, basket) in run])
        return counts

    def _expire(self) -> Iterator[str]:
        watermark = self.meta.watermark
        if watermark is None:
            return
        oldest_window = watermark - self.config.retention
        for start in [s for s in self.windows if s + self.config.size <= oldest_window]:
            del self.windows[start]
            yield window_key(self.partition, start)
        oldest_seen = watermark - self.config.dedup_horizon
        for sequence in [q for q, segment in self.segments.items() if segment.newest < oldest_seen]:
            for order_id in self.segments.pop(sequence).ids:
                self.seen.pop(order_id, None)
            yield seen_key(self.partition, sequence)

    # -- recovery ------------------------------------------------------------
    @classmethod
    def restore(cls, partition: int, config: WindowConfig, items: Iterable[tuple[str, Any]]) -> PartitionLedger:
        """Rebuild from the table keys of ``partition`` (as recovered from the changelog)."""
        ledger = cls(partition, config)
        outbox: dict[str, Any] | None = None
        for key, value in items:
            _, kind, *rest = key.split("/")
            if kind == META:
                ledger.meta = Meta.from_dict(value)
            elif kind == WINDOW:
                data = dict(value)
                offset = data.pop("offset")
                ledger.windows[float(rest[0])] = Window(WindowTotals.from_dict(data), offset)
            elif kind == OUTBOX:
                outbox = value
            elif kind == SEEN:
                segment = SeenSegment()
                for order_id, (seen_offset, seen_time) in value["ids"].items():
                    segment.add(order_id, seen_offset, seen_time)
                    ledger.seen[order_id] = int(seen_offset)
                ledger.segments[int(rest[0])] = segment.kept()
        # A flush that wrote its seen-segment but not its meta key must not have
        # that segment overwritten by the next flush.
        ledger.meta.seen_sequence = max([ledger.meta.seen_sequence, *ledger.segments])
        # The outbox of the last complete flush may not have reached the pairs topic:
        # send it again (receivers apply a sequence number once, so older ones go first). It
        # may also hold the messages of flushes that failed before it (give_back), under their
        # own sequences. A message with a newer sequence than the meta key's belongs to a flush
        # whose meta key was never written: its events replay and it is rebuilt.
        if outbox is not None:
            covered, sequence = ledger.meta.outbox_sequence, outbox["sequence"]
            pairs = outbox.get("pairs")  # None: no pair deltas, or an outbox written with them as messages
            older = [m for m in outbox["messages"] if m.get("sequence", sequence) < sequence]
            newest = [m for m in outbox["messages"] if m.get("sequence", sequence) >= sequence]
            if pairs is not None:
                newest = outbox_from_state(partition, sequence, pairs) + newest  # as laid out by the flush
            ledger.unsent_outbox = [m for m in older + newest if m.get("sequence", covered) <= covered]
        ledger.reported_watermark = ledger.meta.watermark
        # Keys expired by a flush that crashed after its meta key are deleted by the next one.
        ledger._dirty = True
        return ledger
