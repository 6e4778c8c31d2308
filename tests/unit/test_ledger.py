"""streams.orders.ledger: verdicts, flushes, expiry and exactly-once recovery of one partition, without Kafka.

The changelog is modelled as a dict: a flush first lands its writes and
deletes, then (separately) its meta key, then sends its pair deltas, as
streams.runtime.processors does. A crash can hit between two events, between the two
halves of a flush, or while the pair deltas are sent; the worker then restores
from the dict and replays from a committed offset, which Faust only moves past
events whose flush completed (offset <= meta.offset + 1).
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from orders import checked_order

from streams.ops.traffic import OrderMaker, TrafficShape
from streams.orders.config import WindowConfig
from streams.orders.contract import (
    BEFORE_RETENTION,
    FUTURE_EVENT_TIME,
    NOT_JSON,
    WRONG_TYPE,
    Item,
    Order,
    Rejection,
    decode_order,
)
from streams.orders.ledger import (
    WINDOW,
    Changes,
    Meta,
    PartitionLedger,
    Verdict,
    meta_key,
    outbox_key,
    seen_key,
    window_key,
)
from streams.orders.windows import window_start
from streams.pairs.basket import PairAccumulator
from streams.pairs.ledger import PairBucket
from streams.pairs.outbox import outbox_messages

T0 = 1_800_000_000.0  # a window boundary for 60 s windows
CONFIG = WindowConfig(size=60.0, grace=120.0, retention=3600.0, dedup_horizon=600.0, max_future=300.0)
PRODUCED = T0 + 86_400.0  # records produced long after their event time: none is "in the future"


def order(order_id: str, event_time: float, *items: Item) -> Order:
    return checked_order(*items, order_id=order_id, occurred_at=event_time)


def ledger_after(*events: tuple[int, Order | Rejection], config: WindowConfig = CONFIG) -> PartitionLedger:
    ledger = PartitionLedger(0, config)
    for offset, decoded in events:
        ledger.apply(offset, decoded, PRODUCED)
    return ledger


def window_orders(ledger: PartitionLedger) -> dict[float, int]:
    return {start: window.totals.orders for start, window in ledger.windows.items()}


def durable(value: Any) -> Any:
    """What the changelog gives back: the app stores orjson bytes."""
    return orjson.loads(orjson.dumps(value))


def flushed(ledger: PartitionLedger) -> Changes:
    changes = ledger.take_changes()
    assert changes is not None
    return changes


def restored(changes: list[Changes], config: WindowConfig = CONFIG) -> PartitionLedger:
    table: dict[str, Any] = {}
    for change in changes:  # writes, then meta, then deletes (see Changes)
        table.update(durable(change.writes))
        table[change.meta[0]] = durable(change.meta[1])
        for key in change.deletes:
            table.pop(key, None)
    return PartitionLedger.restore(0, config, table.items())


# --- (a) each offset is applied once ------------------------------------------------------


def test_applying_the_same_offset_twice_is_replayed_and_counted_once() -> None:
    ledger = PartitionLedger(0, CONFIG)
    verdicts = [
        ledger.apply(5, order("o-1", T0), PRODUCED).verdict,
        ledger.apply(5, order("o-1", T0), PRODUCED).verdict,
    ]
    assert verdicts == [Verdict.APPLIED, Verdict.REPLAYED]
    assert (ledger.meta.events, ledger.meta.orders, window_orders(ledger)) == (1, 1, {T0: 1})


def test_an_offset_below_the_last_applied_one_is_replayed_whatever_it_holds() -> None:
    ledger = ledger_after((7, order("o-1", T0)))
    assert ledger.apply(3, order("o-2", T0 + 1), PRODUCED).verdict is Verdict.REPLAYED
    assert (ledger.meta.offset, ledger.meta.orders, ledger.meta.duplicates) == (7, 1, 0)


def test_a_replayed_event_leaves_nothing_to_flush() -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    ledger.take_changes()
    ledger.apply(0, order("o-1", T0), PRODUCED)
    assert ledger.take_changes() is None


def test_an_applied_order_adds_its_figures_to_meta_and_its_window() -> None:
    ledger = ledger_after((0, order("o-1", T0 + 30, Item("p-1", "books", 10.0, 2), Item("p-2", "toys", 2.5, 1))))
    meta = ledger.meta
    assert (meta.orders, meta.cross_sell_orders, meta.items) == (1, 1, 3)
    assert (meta.revenue, meta.cross_sell_revenue, meta.watermark) == (22.5, 2.5, T0 + 30)
    assert (ledger.windows[T0].totals.orders, ledger.windows[T0].offset) == (1, 0)


# --- (b) duplicates -------------------------------------------------------------------


def test_the_same_order_id_at_a_later_offset_is_a_duplicate() -> None:
    ledger = PartitionLedger(0, CONFIG)
    ledger.apply(0, order("o-1", T0), PRODUCED)
    outcome = ledger.apply(1, order("o-1", T0), PRODUCED)
    assert outcome.verdict is Verdict.DUPLICATE
    assert (ledger.meta.duplicates, ledger.meta.orders, ledger.meta.events, window_orders(ledger)) == (1, 1, 2, {T0: 1})


def test_a_retry_with_other_content_is_still_a_duplicate() -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    outcome = ledger.apply(1, order("o-1", T0 + 10, Item("p-9", "garden", 99.0, 3)), PRODUCED)
    assert outcome.verdict is Verdict.DUPLICATE
    assert ledger.meta.revenue == 10.0


def test_other_order_ids_are_not_duplicates() -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    assert ledger.apply(1, order("o-2", T0), PRODUCED).verdict is Verdict.APPLIED


def test_duplicates_are_recognised_after_a_restore() -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    recovered = restored([flushed(ledger)])
    assert recovered.apply(1, order("o-1", T0), PRODUCED).verdict is Verdict.DUPLICATE


# --- (c) late events ------------------------------------------------------------------------


# Window [T0, T0 + 60) with grace 120 closes when the watermark reaches T0 + 180.
@pytest.mark.parametrize(
    ("watermark_after_t0", "verdict"),
    [(0.0, Verdict.APPLIED), (179.0, Verdict.APPLIED), (180.0, Verdict.LATE), (1_000.0, Verdict.LATE)],
)
def test_an_event_is_late_once_the_watermark_passed_its_window_end_plus_grace(
    watermark_after_t0: float, verdict: Verdict
) -> None:
    ledger = ledger_after((0, order("o-1", T0 + watermark_after_t0)))
    assert ledger.apply(1, order("o-2", T0 + 30), PRODUCED).verdict is verdict


def test_a_late_event_is_counted_as_late_and_stays_out_of_windows_and_totals() -> None:
    ledger = ledger_after((0, order("o-1", T0 + 600)), (1, order("o-2", T0)))
    meta = ledger.meta
    assert (meta.late, meta.orders, meta.events, meta.watermark) == (1, 1, 2, T0 + 600)
    assert window_orders(ledger) == {T0 + 600: 1}


def test_a_late_order_id_is_not_remembered_for_deduplication() -> None:
    ledger = ledger_after((0, order("o-1", T0 + 600)), (1, order("o-2", T0)))
    assert ledger.apply(2, order("o-2", T0 + 600), PRODUCED).verdict is Verdict.APPLIED


def test_an_older_event_in_an_open_window_is_applied_without_moving_the_watermark() -> None:
    ledger = ledger_after((0, order("o-1", T0 + 100)), (1, order("o-2", T0 + 30)))
    assert (ledger.meta.watermark, window_orders(ledger)) == (T0 + 100, {T0: 1, T0 + 60: 1})


# --- (d) invalid events -----------------------------------------------------------------------


def test_a_rejection_is_invalid_with_its_reason_counted() -> None:
    ledger = PartitionLedger(0, CONFIG)
    outcome = ledger.apply(0, Rejection(NOT_JSON, "the event is not JSON"), PRODUCED)
    assert (outcome.verdict, outcome.reason, outcome.detail) == (Verdict.INVALID, NOT_JSON, "the event is not JSON")
    assert (ledger.meta.invalid, ledger.meta.events, ledger.meta.orders, ledger.windows) == ({NOT_JSON: 1}, 1, 0, {})


def test_invalid_events_are_counted_per_reason() -> None:
    ledger = ledger_after((0, Rejection(NOT_JSON, "x")), (1, Rejection(WRONG_TYPE, "y")), (2, Rejection(NOT_JSON, "z")))
    assert ledger.meta.invalid == {NOT_JSON: 2, WRONG_TYPE: 1}


@pytest.mark.parametrize(
    ("ahead_of_record", "verdict"),
    [(0.0, Verdict.APPLIED), (300.0, Verdict.APPLIED), (300.5, Verdict.INVALID), (7200.0, Verdict.INVALID)],
)
def test_an_event_more_than_max_future_ahead_of_its_record_timestamp_is_invalid(
    ahead_of_record: float, verdict: Verdict
) -> None:
    ledger = PartitionLedger(0, CONFIG)
    outcome = ledger.apply(0, order("o-1", T0 + ahead_of_record), T0)
    assert outcome.verdict is verdict
    assert ledger.meta.invalid == ({FUTURE_EVENT_TIME: 1} if verdict is Verdict.INVALID else {})


def test_a_future_event_neither_moves_the_watermark_nor_is_remembered() -> None:
    ledger = PartitionLedger(0, CONFIG)
    ledger.apply(0, order("o-1", T0), T0)
    ledger.apply(1, order("o-2", T0 + 3600), T0)
    assert ledger.meta.watermark == T0
    assert ledger.apply(2, order("o-2", T0 + 10), T0).verdict is Verdict.APPLIED


@pytest.mark.parametrize(
    ("ahead_of_clock", "verdict"),
    [(0.0, Verdict.APPLIED), (300.0, Verdict.APPLIED), (300.5, Verdict.INVALID), (73 * 365 * 86400.0, Verdict.INVALID)],
)
def test_an_event_ahead_of_the_workers_clock_is_invalid_even_when_its_record_timestamp_agrees(
    ahead_of_clock: float, verdict: Verdict
) -> None:
    ledger = PartitionLedger(0, CONFIG)
    event_time = T0 + ahead_of_clock
    outcome = ledger.apply(0, order("o-1", event_time), produced_at=event_time, received_at=T0)
    assert outcome.verdict is verdict
    if verdict is Verdict.INVALID:
        assert outcome.reason == FUTURE_EVENT_TIME and "worker's clock" in outcome.detail


def test_an_order_from_a_wrong_clock_leaves_the_watermark_and_the_next_orders_alone() -> None:
    ledger = PartitionLedger(0, CONFIG)
    ledger.apply(0, order("o-0", T0), T0, received_at=T0)
    year_2099 = 4_070_908_800.0
    assert ledger.apply(1, order("o-2099", year_2099), year_2099, received_at=T0 + 1).verdict is Verdict.INVALID
    verdicts = [ledger.apply(2 + n, order(f"o-{n + 1}", T0 + 2 + n), T0 + 2 + n, received_at=T0 + 2 + n).verdict
                for n in range(20)]
    assert verdicts == [Verdict.APPLIED] * 20
    assert ledger.meta.watermark == T0 + 21
    assert ledger.meta.orders == 21 and ledger.meta.invalid == {FUTURE_EVENT_TIME: 1}


# The watermark is T0 + 10000; retention is 3600 s.
@pytest.mark.parametrize(
    ("event_time", "verdict"),
    [(T0 + 10_000 - 3600 - 1, Verdict.INVALID), (T0 + 10_000 - 3600, Verdict.LATE), (T0 + 9_990, Verdict.APPLIED)],
)
def test_an_event_older_than_retention_before_the_watermark_is_invalid(event_time: float, verdict: Verdict) -> None:
    ledger = ledger_after((0, order("o-1", T0 + 10_000)))
    outcome = ledger.apply(1, order("o-2", event_time), PRODUCED)
    assert outcome.verdict is verdict
    assert ledger.meta.invalid == ({BEFORE_RETENTION: 1} if verdict is Verdict.INVALID else {})


# --- flushing ---------------------------------------------------------------------------------


def test_take_changes_is_none_when_nothing_was_applied() -> None:
    assert PartitionLedger(0, CONFIG).take_changes() is None


def test_take_changes_writes_dirty_windows_the_new_seen_segment_and_meta() -> None:
    ledger = ledger_after((0, order("o-1", T0)), (1, order("o-2", T0 + 61)), (2, Rejection(NOT_JSON, "x")))
    changes = flushed(ledger)
    assert set(changes.writes) == {window_key(0, T0), window_key(0, T0 + 60), seen_key(0, 1)}
    assert changes.writes[window_key(0, T0 + 60)]["offset"] == 1
    assert changes.writes[seen_key(0, 1)] == {"ids": {"o-1": [0, T0], "o-2": [1, T0 + 61]}}
    assert (changes.deletes, changes.meta[0], changes.meta[1]["offset"]) == ([], meta_key(0), 2)


def test_take_changes_writes_only_what_changed_since_the_last_flush() -> None:
    ledger = ledger_after((0, order("o-1", T0)), (1, order("o-2", T0 + 61)))
    ledger.take_changes()
    ledger.apply(2, order("o-3", T0 + 62), PRODUCED)
    changes = flushed(ledger)
    assert set(changes.writes) == {window_key(0, T0 + 60), seen_key(0, 2)}
    assert ledger.take_changes() is None


def test_an_invalid_event_alone_still_flushes_meta() -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    ledger.take_changes()
    ledger.apply(1, Rejection(NOT_JSON, "x"), PRODUCED)
    changes = flushed(ledger)
    assert (changes.writes, changes.meta[1]["offset"], changes.meta[1]["invalid"]) == ({}, 1, {NOT_JSON: 1})


def test_restore_from_the_flushed_keys_gives_back_the_same_state() -> None:
    ledger = ledger_after((0, order("o-1", T0)), (1, order("o-2", T0 + 61)), (2, Rejection(NOT_JSON, "x")))
    first = flushed(ledger)
    ledger.apply(3, order("o-3", T0 + 62, Item("p-1", "books", 3.0, 1), Item("p-2", "toys", 1.0, 1)), PRODUCED)
    second = flushed(ledger)
    recovered = restored([first, second])
    assert recovered.meta == ledger.meta
    assert recovered.windows == ledger.windows
    assert recovered.seen == ledger.seen


# --- (f) expiry ---------------------------------------------------------------------------------


# A window [T0, T0 + 60) expires once the watermark reaches T0 + 60 + retention (3600).
@pytest.mark.parametrize(("watermark_after_t0", "expired"), [(3659.0, False), (3660.0, True), (9000.0, True)])
def test_take_changes_deletes_windows_older_than_retention(watermark_after_t0: float, expired: bool) -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    ledger.take_changes()
    ledger.apply(1, order("o-2", T0 + watermark_after_t0), PRODUCED)
    changes = flushed(ledger)
    assert (window_key(0, T0) in changes.deletes, T0 not in ledger.windows) == (expired, expired)


# A seen segment expires once its newest event is more than the dedup horizon (600) behind the watermark.
@pytest.mark.parametrize(("watermark_after_t0", "expired"), [(600.0, False), (600.5, True), (2000.0, True)])
def test_take_changes_deletes_seen_segments_older_than_the_dedup_horizon(
    watermark_after_t0: float, expired: bool
) -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    ledger.take_changes()
    ledger.apply(1, order("o-2", T0 + watermark_after_t0), PRODUCED)
    changes = flushed(ledger)
    assert (seen_key(0, 1) in changes.deletes, "o-1" not in ledger.seen) == (expired, expired)


def test_an_order_id_past_the_dedup_horizon_counts_as_a_new_order() -> None:
    ledger = ledger_after((0, order("o-1", T0)))
    ledger.take_changes()
    ledger.apply(1, order("o-2", T0 + 700), PRODUCED)
    ledger.take_changes()
    assert ledger.apply(2, order("o-1", T0 + 700), PRODUCED).verdict is Verdict.APPLIED


def test_a_seen_segment_lives_as_long_as_its_newest_order() -> None:
    ledger = ledger_after((0, order("o-1", T0)), (1, order("o-2", T0 + 500)))
    ledger.take_changes()
    ledger.apply(2, order("o-3", T0 + 1000), PRODUCED)  # o-1 is 1000 s old, o-2 only 500 s
    ledger.take_changes()
    assert ledger.apply(3, order("o-1", T0 + 1000), PRODUCED).verdict is Verdict.DUPLICATE


# --- (e) crash and recovery -----------------------------------------------------------------------

# Seen segments expire at flush time, so a retry arriving right at the dedup horizon can be a duplicate or
# not depending on when flushes happen (the clean run flushes once, the crashed run often). Duplicates here
# are retries of one of the last 100 fresh orders, at most 100 x 6 s = 600 s old: well inside the 900 s
# horizon, so every verdict is independent of flush timing and the two runs must agree exactly.
CRASH_CONFIG = WindowConfig(
    size=60.0,
    grace=120.0,
    retention=1800.0,
    dedup_horizon=900.0,
    max_future=300.0,
    pair_horizons=(("1h", 3600.0), ("15m", 900.0)),
    pair_slots=6,
    pair_partitions=3,
    potential_capacity=8,  # far below the catalogue's products: primary products are evicted and taken in again
)
STREAM_LENGTH = 800
MAX_GAP = 6.0
FLUSH_CHANCE = 0.08
CRASH_CHANCE = 0.008
CRASH_BEFORE_META_CHANCE = 0.35  # the case the window offsets and the deferred deletes are for
CRASH_BEFORE_DELETES_CHANCE = 0.15
CRASH_WHILE_SENDING_CHANCE = 0.15
MAX_CRASHES = 16
# The broker fails a flush after its take (the worker keeps running): before its meta key is known
# durable (any of its keys stored, or all of them and the meta key with the answer lost), or while
# its pair deltas are sent.
FAIL_CHANCE = 0.2
FAIL_WHILE_SENDING_CHANCE = 0.15
CRASH_KINDS = ("between events", "between writes and meta", "between meta and deletes", "while sending pair deltas")
EXACT_CAPACITY = 100_000  # far above the 120 products of the catalogue: Space-Saving stays exact


def make_stream(seed: int) -> list[tuple[bytes, float]]:
    """(value, record timestamp) of each offset: orders, late, invalid and duplicate ones, and a few
    whose event time is before retention or too far ahead of the record timestamp."""
    rng = random.Random(seed)
    shape = TrafficShape(
        late_share=0.05,
        late_by_seconds=600.0,
        invalid_share=0.05,
        duplicate_share=0.08,
        categories=6,
        products_per_category=20,
    )
    maker = OrderMaker(random.Random(seed), shape)
    now = T0
    stream = []
    for _ in range(STREAM_LENGTH):
        now += rng.uniform(0.0, MAX_GAP)
        roll = rng.random()
        if roll < 0.02:
            stream.append((orjson.dumps(maker.order(now - 2 * CRASH_CONFIG.retention)), now))
        elif roll < 0.03:
            stream.append((orjson.dumps(maker.order(now + 2 * CRASH_CONFIG.max_future)), now))
        else:
            stream.append((maker.event(now)[2], now))
    return stream


class Changelog:
    """The state table as a restarted worker recovers it."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}
        self.deleted = 0
        # The last value written to each window key, deleted or not: a window's final figures, even for
        # windows that expired long before the end of the stream.
        self.final_windows: dict[str, Any] = {}

    def write(self, changes: Changes, only: Callable[[str], bool] = lambda key: True) -> None:
        written = durable({key: value for key, value in changes.writes.items() if only(key)})
        self.table.update(written)
        self.final_windows.update((key, value) for key, value in written.items() if key.split("/")[1] == WINDOW)

    def write_meta(self, changes: Changes) -> None:
        key, meta = changes.meta
        self.table[key] = durable(meta)

    def delete(self, changes: Changes) -> None:
        for key in changes.deletes:
            self.deleted += self.table.pop(key, None) is not None

    def last_applied_offset(self) -> int:
        offset: int = self.table.get(meta_key(0), {}).get("offset", -1)
        return offset

    def recover(self, rng: random.Random) -> PartitionLedger:
        items = list(durable(self.table).items())
        rng.shuffle(items)  # recovery order is not part of the contract
        return PartitionLedger.restore(0, CRASH_CONFIG, items)


class PairReceiver:
    """The pairs-topic side: one bucket per (partition, horizon, bucket), applying each sequence once."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[int, str, float], PairBucket] = {}
        self.ignored = 0

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        for message in durable(messages):
            key = (message["partition"], message["horizon"], message["bucket"])
            if key not in self.buckets:
                self.buckets[key] = PairBucket.empty(EXACT_CAPACITY, EXACT_CAPACITY)
            self.ignored += not self.buckets[key].apply(message)

    def figures(self) -> dict[tuple[int, str, float], tuple[int, list[tuple[str, int]], list[tuple[str, int]]]]:
        assert all(bucket.products.is_exact and bucket.pairs.is_exact for bucket in self.buckets.values())
        return {
            key: (bucket.orders, bucket.products.top(EXACT_CAPACITY), bucket.pairs.top(EXACT_CAPACITY))
            for key, bucket in self.buckets.items()
        }


@dataclass
class Run:
    ledger: PartitionLedger
    receiver: PairReceiver
    changelog: Changelog = field(default_factory=Changelog)
    crashes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    resent: int = 0


def run_once(stream: list[tuple[bytes, float]]) -> Run:
    run = Run(PartitionLedger(0, CRASH_CONFIG), PairReceiver())
    for offset, (value, produced) in enumerate(stream):
        run.ledger.apply(offset, decode_order(value), produced)
    changes = run.ledger.take_changes()  # expiry happens at flush time
    assert changes is not None
    run.changelog.write(changes)
    run.changelog.write_meta(changes)
    run.changelog.delete(changes)
    run.receiver.deliver(changes.outbox)
    return run


def run_with_crashes(stream: list[tuple[bytes, float]], seed: int, failures: bool = False) -> Run:
    """Process ``stream`` with flushes and crashes at random points, as the worker would; with
    ``failures``, the broker also fails flushes, which the worker gives back (OrderProcessor.flush)."""
    rng = random.Random(seed * 1_000_003 + 17)
    run = Run(PartitionLedger(0, CRASH_CONFIG), PairReceiver())
    position = 0

    def crash(kind: str) -> None:
        nonlocal position
        run.crashes[kind] += 1
        run.ledger = run.changelog.recover(rng)
        position = rng.randint(0, run.changelog.last_applied_offset() + 1)  # any committed offset

    def flush(may_crash: bool) -> None:
        # The last complete flush's pair deltas may not have been delivered: they go first.
        run.resent += len(run.ledger.unsent_outbox)
        run.receiver.deliver(run.ledger.unsent_outbox)
        run.ledger.unsent_outbox = []
        changes = run.ledger.take_changes()
        if changes is None:
            return
        if failures and may_crash and rng.random() < FAIL_CHANCE:
            if rng.random() < 0.3:
                run.changelog.write(changes)
                run.changelog.write_meta(changes)
                run.failures["meta stored, its answer lost"] += 1
            else:
                run.changelog.write(changes, only=lambda key: rng.random() < 0.5)
                run.failures["some keys stored"] += 1
            run.ledger.give_back(changes)
            return None
        run.changelog.write(changes)
        if may_crash and rng.random() < CRASH_BEFORE_META_CHANCE:
            return crash("between writes and meta")
        run.changelog.write_meta(changes)
        if may_crash and rng.random() < CRASH_BEFORE_DELETES_CHANCE:
            return crash("between meta and deletes")
        run.changelog.delete(changes)
        if may_crash and changes.outbox and rng.random() < CRASH_WHILE_SENDING_CHANCE:
            run.receiver.deliver(changes.outbox[: rng.randrange(len(changes.outbox))])
            return crash("while sending pair deltas")
        if failures and may_crash and changes.outbox and rng.random() < FAIL_WHILE_SENDING_CHANCE:
            run.receiver.deliver(changes.outbox[: rng.randrange(len(changes.outbox))])
            run.failures["while sending pair deltas"] += 1
            run.ledger.unsent_outbox = changes.outbox + run.ledger.unsent_outbox  # sent before the next take
            return None
        run.receiver.deliver(changes.outbox)

    while position < len(stream):
        value, produced = stream[position]
        run.ledger.apply(position, decode_order(value), produced)
        position += 1
        roll = rng.random()
        may_crash = run.crashes.total() < MAX_CRASHES
        if roll < FLUSH_CHANCE:
            flush(may_crash)
        elif may_crash and roll < FLUSH_CHANCE + CRASH_CHANCE:
            crash("between events")
    flush(may_crash=False)
    return run


def meta_figures(meta: Meta) -> dict[str, Any]:
    """Meta without the sequence numbers, which number flushes and so differ between runs."""
    figures = meta.to_dict()
    del figures["seen_sequence"], figures["outbox_sequence"]
    return figures


def is_expired(ledger: PartitionLedger, start: float) -> bool:
    watermark = ledger.meta.watermark
    return watermark is not None and start + CRASH_CONFIG.size <= watermark - CRASH_CONFIG.retention


def window_figures(ledger: PartitionLedger) -> dict[float, tuple[int, dict[str, Any]]]:
    """Windows within retention. A crash between meta and deletes leaves expired keys in the changelog until
    the next flush with changes deletes them again; an event can no longer reach them (before retention)."""
    return {
        start: (window.offset, window.totals.to_dict())
        for start, window in ledger.windows.items()
        if not is_expired(ledger, start)
    }


@pytest.mark.parametrize("failures", [False, True], ids=["crashes", "crashes and failed flushes"])
@pytest.mark.parametrize("seed", range(30))
def test_crashes_and_replays_give_exactly_the_state_of_one_clean_run(seed: int, failures: bool) -> None:
    stream = make_stream(seed)
    once = run_once(stream)
    crashed = run_with_crashes(stream, seed, failures)
    recovered = crashed.changelog.recover(random.Random(seed))
    assert crashed.crashes["between writes and meta"] >= 1
    assert not failures or crashed.failures["some keys stored"] >= 1, crashed.failures
    assert meta_figures(crashed.ledger.meta) == meta_figures(once.ledger.meta)
    assert window_figures(crashed.ledger) == window_figures(once.ledger)
    assert meta_figures(recovered.meta) == meta_figures(once.ledger.meta)
    assert window_figures(recovered) == window_figures(once.ledger)
    assert crashed.changelog.final_windows == once.changelog.final_windows
    assert crashed.receiver.figures() == once.receiver.figures()


def test_windows_left_behind_by_a_crash_before_the_deletes_are_all_expired() -> None:
    leftovers = []
    for seed in range(30):
        crashed = run_with_crashes(make_stream(seed), seed)
        recovered = crashed.changelog.recover(random.Random(seed))
        leftovers += [
            (ledger, start)
            for ledger in (crashed.ledger, recovered)
            for start in ledger.windows
            if start not in window_figures(ledger)
        ]
    assert all(is_expired(ledger, start) for ledger, start in leftovers)


def test_crash_simulation_exercises_every_verdict_every_crash_kind_expiry_and_resends() -> None:
    crashes: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    late = duplicates = deleted = resent = ignored = 0
    for seed in range(30):
        run = run_with_crashes(make_stream(seed), seed)
        crashes += run.crashes
        invalid += Counter(run.ledger.meta.invalid)
        late += run.ledger.meta.late
        duplicates += run.ledger.meta.duplicates
        deleted += run.changelog.deleted
        resent += run.resent
        ignored += run.receiver.ignored
    assert min(crashes[kind] for kind in CRASH_KINDS) >= 10
    assert invalid[BEFORE_RETENTION] > 0
    assert invalid[FUTURE_EVENT_TIME] > 0
    assert sum(invalid.values()) > invalid[BEFORE_RETENTION] + invalid[FUTURE_EVENT_TIME]
    assert (late > 0, duplicates > 0, deleted > 0, resent > 0, ignored > 0) == (True,) * 5


# --- pair deltas of a flush ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [3, 4])
def test_a_flush_sends_the_pair_deltas_of_its_orders_counted_per_horizon_bucket(seed: int) -> None:
    # The ledger counts each order once for all horizons, at flush time; the outbox must be byte for
    # byte what counting every applied order into each of its (horizon, bucket) accumulators gives.
    rng = random.Random(seed)
    ledger = PartitionLedger(0, CRASH_CONFIG)
    batches: dict[tuple[str, float], PairAccumulator] = {}
    sequence = 0
    spanning = 0  # flushes whose orders span two buckets of a horizon
    for offset, (value, produced) in enumerate(make_stream(seed)):
        outcome = ledger.apply(offset, decode_order(value), produced)
        if outcome.facts is not None:
            for label, seconds in CRASH_CONFIG.pair_horizons:
                key = (label, window_start(outcome.facts.event_time, seconds / CRASH_CONFIG.pair_slots))
                batches.setdefault(key, PairAccumulator(CRASH_CONFIG.max_basket)).add_order(outcome.facts.products)
        if rng.random() < FLUSH_CHANCE:
            changes = flushed(ledger)
            if batches:
                sequence += 1
            expected = outbox_messages(0, sequence, batches, CRASH_CONFIG.pair_partitions)
            assert orjson.dumps(changes.outbox) == orjson.dumps(expected)
            spanning += len(batches) > len(CRASH_CONFIG.pair_horizons)
            batches = {}
    assert spanning > 3


def test_a_restored_ledger_resends_the_pair_deltas_of_its_last_flush_byte_for_byte() -> None:
    # The outbox key keeps each count once; what it lays out again must be what the flush sent.
    ledger = PartitionLedger(0, CRASH_CONFIG)
    for offset, (value, produced) in enumerate(make_stream(3)):
        ledger.apply(offset, decode_order(value), produced)
    changes = flushed(ledger)
    assert any("pairs" in message for message in changes.outbox)
    again = restored([changes], CRASH_CONFIG)
    assert orjson.dumps(again.unsent_outbox) == orjson.dumps(changes.outbox)
    # An outbox key written with every message in full (before it kept counts) restores as it was.
    changes.writes[outbox_key(0)] = {"sequence": changes.writes[outbox_key(0)]["sequence"],
                                     "messages": changes.outbox}
    older = restored([changes], CRASH_CONFIG)
    assert orjson.dumps(older.unsent_outbox) == orjson.dumps(changes.outbox)


# --- recovery corner cases ------------------------------------------------------------------------


def test_a_crash_before_the_meta_of_a_flush_that_expired_a_seen_segment_keeps_the_duplicate_verdict() -> None:
    # The expired segment's delete waits for the meta key, so the replay still finds the first order.
    config = WindowConfig(size=60.0, grace=120.0, retention=86_400.0, dedup_horizon=100.0)
    events = [order("A", T0), order("B", T0 + 200), order("A", T0)]  # the last one is a retry of A
    clean = ledger_after(*enumerate(events), config=config)
    changelog = Changelog()
    ledger = PartitionLedger(0, config)
    ledger.apply(0, events[0], PRODUCED)
    first = flushed(ledger)
    changelog.write(first)
    changelog.write_meta(first)
    changelog.delete(first)
    ledger.apply(1, events[1], PRODUCED)
    ledger.apply(2, events[2], PRODUCED)
    second = flushed(ledger)
    assert seen_key(0, 1) in second.deletes  # A's segment is 200 s behind the watermark, horizon 100 s
    changelog.write(second)  # crash before the meta key is written
    recovered = PartitionLedger.restore(0, config, durable(changelog.table).items())
    for offset in range(changelog.last_applied_offset() + 1, len(events)):
        recovered.apply(offset, events[offset], PRODUCED)
    assert clean.meta.duplicates == 1
    assert meta_figures(recovered.meta) == meta_figures(clean.meta)


@pytest.mark.parametrize("size", [1.5, 0.25, 60.0])
def test_restore_keeps_the_window_starts_of_any_window_size(size: float) -> None:
    config = WindowConfig(size=size)
    ledger = ledger_after((0, order("o-1", 4.6)), (1, order("o-2", 61.3)), config=config)
    assert restored([flushed(ledger)], config).windows == ledger.windows


def test_an_event_too_far_ahead_of_its_record_gets_the_same_verdict_when_replayed() -> None:
    # The verdict depends on the record timestamp, which a replay reads again, not on the worker's clock.
    records = [(order("A", T0 + 400), T0), (order("B", T0 + 400), T0 + 200)]  # window [T0 + 360, T0 + 420)
    changelog = Changelog()
    ledger = PartitionLedger(0, CONFIG)
    verdicts = [ledger.apply(offset, event, produced).verdict for offset, (event, produced) in enumerate(records)]
    assert verdicts == [Verdict.INVALID, Verdict.APPLIED]  # 400 s ahead with 300 s allowed, then 200 s
    changelog.write(flushed(ledger))  # crash before the meta key is written
    recovered = PartitionLedger.restore(0, CONFIG, durable(changelog.table).items())
    replayed = [recovered.apply(offset, event, produced).verdict for offset, (event, produced) in enumerate(records)]
    assert replayed == verdicts
    assert meta_figures(recovered.meta) == meta_figures(ledger.meta)
    assert recovered.meta.orders == sum(window.totals.orders for window in recovered.windows.values())


def test_an_order_id_within_the_dedup_horizon_costs_at_most_120_bytes_of_ledger_memory() -> None:
    # The dedup ids are most of a busy worker's memory (KeptSegment in streams/orders/ledger.py).
    orders = [checked_order(Item(f"p-{n % 500}", "books", 10.0, 1), order_id=f"order-{n:08d}",
                            occurred_at=1_800_000_000.0 + n / 100) for n in range(20_000)]
    tracemalloc.start()
    try:
        ledger = PartitionLedger(0, WindowConfig())
        for offset, order in enumerate(orders):
            ledger.apply(offset, order, 1_800_000_300.0)
            if offset % 2_000 == 1_999:
                ledger.take_changes()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ledger.seen) == 20_000
    assert held / len(ledger.seen) <= 120, f"{held / len(ledger.seen):.0f} bytes per order id"


def test_the_meta_a_flush_takes_is_not_changed_by_events_applied_while_it_is_written() -> None:
    # A flush takes its changes, then awaits the changelog while the agent applies more events;
    # the meta it writes after must still say what was applied up to its own offset.
    ledger = PartitionLedger(0, CONFIG)
    ledger.apply(0, Rejection(NOT_JSON, "x"), PRODUCED)
    changes = ledger.take_changes()
    assert changes is not None
    ledger.apply(1, Rejection(NOT_JSON, "x"), PRODUCED)
    _, meta = changes.meta
    assert (meta["offset"], meta["invalid"]) == (0, {NOT_JSON: 1})
