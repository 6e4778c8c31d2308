"""streams.orders.fleet_detection: the orders partitions' tick counts merged into one drop test."""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import orjson
import pytest

from streams.orders.detection import TOTAL, DetectionConfig, DropDetector, Segment, count_in, low_watermark
from streams.orders.facts import OrderFacts
from streams.orders.fleet_detection import (
    FleetDetector,
    detection_message,
    detection_messages,
    meta_key,
    status_message,
    tick_rows,
)

T0 = 1_700_000_000.0
CONFIG = DetectionConfig(expected_rate=0.3)


def facts(at: float, cross: bool, category: str = "books", channel: str = "web") -> OrderFacts:
    return OrderFacts("o", at, category, cross, 1, 10.0, 0.0, (category,), ("p",), channel, "control", 0)


def traffic(seconds: float, rate: float, p: float, seed: int = 1, start: float = T0) -> list[OrderFacts]:
    """Orders at ``rate`` per second with cross-sell rate ``p``, in event-time order."""
    rng = random.Random(seed)
    at, found = start, []
    while at < start + seconds:
        at += rng.expovariate(rate)
        found.append(facts(at, rng.random() < p, rng.choice(("books", "games", "garden")),
                           rng.choice(("web", "app"))))
    return found


class Fleet:
    """Orders partitions that flush every ``every`` seconds of event time into a FleetDetector, and one
    DropDetector that sees every order directly (the worker of one partition): they must agree."""

    def __init__(self, partitions: int = 2, every: float = 10.0, config: DetectionConfig = CONFIG) -> None:
        self.partitions, self.every, self.config = partitions, every, config
        self.fleet = FleetDetector(config, partitions)
        self.alone = DropDetector(config)
        self.sequence = [0] * partitions
        self.watermark: list[float | None] = [None] * partitions
        self.sent: list[dict[str, Any]] = []

    def run(self, orders: list[OrderFacts]) -> None:
        batch: list[list[OrderFacts]] = [[] for _ in range(self.partitions)]
        flush_at = orders[0].event_time + self.every
        for n, order in enumerate(orders):
            if order.event_time >= flush_at:
                self.flush(batch)
                batch = [[] for _ in range(self.partitions)]
                flush_at += self.every
            partition = n % self.partitions
            batch[partition].append(order)
            self.alone.observe(order.event_time, order.primary_category, order.channel, order.variant,
                               order.cross_sell)
            self.watermark[partition] = max(self.watermark[partition] or 0.0, order.event_time)
        self.flush(batch)

    def flush(self, batch: list[list[OrderFacts]]) -> None:
        for partition, orders in enumerate(batch):
            if orders:
                self.sequence[partition] += 1
                message = detection_message(partition, self.sequence[partition], self.watermark[partition], orders,
                                            self.config.tick, 200)
            else:
                message = status_message(partition, self.watermark[partition], False)
            self.sent.append(message)
            self.fleet.apply(orjson.loads(orjson.dumps(message)))
        clock = low_watermark([(w, False) for w in self.watermark], self.config.idle)
        if clock is not None:
            self.alone.advance(clock)


def episodes(detector: DropDetector) -> list[tuple[str, str, float]]:
    return [(e.kind, e.value, e.started) for e in detector.episodes]


def test_tick_rows_count_each_order_in_its_tick_and_segments() -> None:
    rows = tick_rows([facts(T0 + 1, True), facts(T0 + 2, False, "games"), facts(T0 + 7, False)], 5.0, 200)
    assert rows == [[T0, [["total", "all", 2, 1], ["primary_category", "books", 1, 1], ["channel", "web", 2, 1],
                          ["variant", "control", 2, 1], ["primary_category", "games", 1, 0]]],
                    [T0 + 5, [["total", "all", 1, 0], ["primary_category", "books", 1, 0],
                              ["channel", "web", 1, 0], ["variant", "control", 1, 0]]]]


def test_tick_rows_fold_values_beyond_the_bound_into_other() -> None:
    rows = tick_rows([facts(T0, False, category) for category in ("a", "b", "c")], 5.0, 2)
    categories = {value: n for kind, value, n, _ in rows[0][1] if kind == "primary_category"}
    assert categories == {"a": 1, "b": 1, "other": 1}


def rows_order_by_order(orders: list[OrderFacts], tick: float, max_values: int) -> list[list[Any]]:
    """tick_rows as its contract reads: each order counted in turn, values beyond the bound as met."""
    ticks: dict[float, dict[Segment, list[int]]] = {}
    seen: dict[str, list[str]] = {"primary_category": [], "channel": [], "variant": []}
    for order in orders:
        counts = ticks.setdefault(order.event_time // tick * tick, {})
        segments = [TOTAL]
        for kind, value in (("primary_category", order.primary_category), ("channel", order.channel),
                            ("variant", order.variant)):
            if value not in seen[kind]:
                if len(seen[kind]) >= max_values:
                    value = "other"
                else:
                    seen[kind].append(value)
            segments.append((kind, value))
        count_in(counts, segments, 1 if order.cross_sell else 0)
    return [[start, [[kind, value, n, c] for (kind, value), (n, c) in counts.items()]]
            for start, counts in sorted(ticks.items())]


@pytest.mark.parametrize("seed", range(20))
def test_tick_rows_equal_counting_order_by_order_in_content_and_order(seed: int) -> None:
    rng = random.Random(seed)
    orders = [OrderFacts("o", T0 + rng.uniform(0, 60) if rng.random() < 0.3 else T0 + n * 0.01,
                         rng.choice("abcdefg"), rng.random() < 0.3, 1, 10.0, 0.0, ("a",), ("p",),
                         rng.choice(("web", "app", "store")), rng.choice(("control", "treatment", "x")), 0)
              for n in range(rng.randint(1, 400))]
    max_values = rng.choice((1, 2, 3, 200))
    assert tick_rows(orders, 5.0, max_values) == rows_order_by_order(orders, 5.0, max_values)


def test_partitions_merged_raise_the_alarms_of_one_test_over_all_orders() -> None:
    fleet = Fleet(partitions=3)
    fleet.run(traffic(3600, 2.0, 0.3) + traffic(600, 2.0, 0.0, seed=2, start=T0 + 3600))
    assert episodes(fleet.fleet.detector) == episodes(fleet.alone)
    assert ("total", "all") in {(kind, value) for kind, value, _ in episodes(fleet.alone)}
    assert fleet.fleet.detector.closed_until == fleet.alone.closed_until
    assert fleet.fleet.detector.dropped == fleet.alone.dropped == 0


def test_a_message_sent_again_counts_once() -> None:
    fleet = FleetDetector(CONFIG, 1)
    message = detection_message(0, 1, T0 + 9, [facts(T0 + 1, True), facts(T0 + 2, False)], 5.0, 200)
    assert fleet.apply(message) is True
    assert fleet.apply(message) is False  # a re-send after a crash
    assert fleet.apply({**message, "sequence": 0}) is False  # an older one, late
    total = next(r for r in fleet.detector.report() if r.kind == "total")
    assert total.baseline == 0.3 and fleet.detector.closed_until == T0 + 5
    assert fleet.detector.segments[("total", "all")].runs[0] in ([1, 0], [0, 0])  # one tick of 2 orders, once
    assert fleet.apply({**message, "sequence": 2, "ticks": []}) is True


def test_a_flush_spanning_a_backlog_is_sent_in_parts_that_count_once_and_as_the_whole() -> None:
    """A backlog's flush spans hours of event time: one message would pass the producer's limit and stop
    every send of the worker. In parts, each under the limit, it tests exactly as the whole."""
    orders = traffic(6 * 3600, 2.0, 0.3)
    whole = detection_message(0, 1, orders[-1].event_time, orders, 5.0, 200)
    parts = detection_messages(0, 1, orders[-1].event_time, orders, 5.0, 200, 65_536)
    assert len(orjson.dumps(whole)) > 65_536 and len(parts) > 2
    assert all(len(orjson.dumps(part)) <= 65_536 for part in parts)
    assert [t for part in parts for t in part["ticks"]] == whole["ticks"]
    assert [part["watermark"] for part in parts] == [None] * (len(parts) - 1) + [whole["watermark"]]
    one, split = FleetDetector(CONFIG, 1), FleetDetector(CONFIG, 1)
    assert one.apply(whole)
    for i, part in enumerate(parts):
        assert split.apply(part)
        if i < len(parts) - 1:  # nothing is tested before the last part is in
            assert split.detector.closed_until is None or split.detector.closed_until <= T0 + 5
        assert not split.apply(part)  # sent again after a crash: counts once
        assert all(not split.apply(earlier) for earlier in parts[:i])
    assert split.detector.closed_until == one.detector.closed_until
    assert split.detector.report() == one.detector.report()
    # the next flush's first part is newer than every part of this one
    assert split.apply(detection_messages(0, 2, None, [], 5.0, 200, 65_536)[0])


def test_a_meta_key_written_before_parts_restores_its_sources() -> None:
    fleet = FleetDetector(CONFIG, 1)
    fleet.apply(detection_message(0, 3, T0 + 9, [facts(T0 + 1, True)], 5.0, 200))
    ticks, meta, _ = fleet.take_changes()
    meta[meta_key()]["sources"] = {p: data[:3] for p, data in meta[meta_key()]["sources"].items()}
    new = FleetDetector.restore(CONFIG, 1, orjson.loads(orjson.dumps([*ticks.items(), *meta.items()])))
    assert new.sources[0].to_list() == [3, T0 + 9, False, 0]
    assert not new.apply(detection_message(0, 3, T0 + 9, [facts(T0 + 1, True)], 5.0, 200))


@pytest.mark.parametrize(("standing", "tested_until"), [
    # (watermark, waiting) of partition 1, while partition 0 sent orders up to T0 + 1,000 s
    ((None, False), T0 + 1000),  # never had an order, nothing waits: it does not hold the test
    ((T0 + 990, False), T0 + 990),  # a little behind: holds the test back
    ((T0 + 100, False), T0 + 1000),  # far behind (more than `idle`) with nothing waiting: idle
    ((T0 + 100, True), T0 + 100),  # far behind with a backlog: holds the test back
])
def test_the_test_waits_for_every_partition_that_is_not_idle(standing: tuple[float | None, bool],
                                                             tested_until: float) -> None:
    fleet = FleetDetector(CONFIG, 2)
    fleet.apply(detection_message(0, 1, T0 + 1000, [facts(T0 + 1000, False)], 5.0, 200))
    assert fleet.clock() is None and fleet.detector.closed_until < T0  # partition 1 has not reported yet
    fleet.apply(status_message(1, *standing))
    assert fleet.detector.closed_until == tested_until // 5 * 5


def test_counts_for_a_tick_already_tested_are_left_out_and_counted() -> None:
    fleet = FleetDetector(CONFIG, 2)
    fleet.apply(status_message(1, T0 + 100, False))
    fleet.apply(detection_message(0, 1, T0 + 2000, [facts(T0 + 2000, False)], 5.0, 200))
    assert fleet.detector.closed_until == T0 + 2000  # partition 1 is idle
    fleet.apply(detection_message(1, 1, T0 + 1500, [facts(T0 + 1500, True), facts(T0 + 1501, False)], 5.0, 200))
    assert fleet.detector.dropped == 2


def restored(fleet: FleetDetector, crash_before_meta: bool = False) -> FleetDetector:
    """A new owner's detector from what the changelog holds after ``fleet``'s flushes."""
    table: dict[str, Any] = getattr(fleet, "_table", {})
    ticks, meta, deletes = fleet.take_changes()
    table.update(ticks)
    if not crash_before_meta:
        table.update(meta)
        for key in deletes:
            table.pop(key, None)
    fleet._table = table  # type: ignore[attr-defined]
    return FleetDetector.restore(fleet.config, fleet.partitions, orjson.loads(orjson.dumps(list(table.items()))))


# An hour's baseline with thresholds cut by the segments' volume: a new owner must find the same cuts.
FEW_ORDERS = DetectionConfig(expected_rate=0.3, baseline_span=3600.0, baseline_lag=600.0, short_lag=300.0,
                             reference_orders=100_000)


@pytest.mark.parametrize(("config", "thresholds_cut"), [(CONFIG, False), (FEW_ORDERS, True)],
                         ids=["day baseline, not full yet", "thresholds cut by volume"])
def test_a_new_owner_goes_on_as_the_old_one_would_have(config: DetectionConfig, thresholds_cut: bool) -> None:
    orders = traffic(5400, 2.0, 0.3) + traffic(900, 2.0, 0.05, seed=3, start=T0 + 5400)
    cut = next(n for n, o in enumerate(orders) if o.event_time > T0 + 5500)  # during the drop's evidence
    before = Fleet(partitions=2, config=config)
    before.run(orders[:cut])
    old = before.fleet
    table_fleet = old
    for _ in range(2):  # flushes at two moments: minutes written, then rewritten
        restored(table_fleet)
    new = restored(old)
    assert new.detector.closed_until == old.detector.closed_until
    assert {p: s.to_list() for p, s in new.sources.items()} == {p: s.to_list() for p, s in old.sources.items()}
    for segment, state in old.detector.segments.items():
        twin = new.detector.segments[segment]
        assert (twin.statistics, twin.since, twin.runs) == (state.statistics, state.since, state.runs), segment
        assert twin.threshold_cut == state.threshold_cut, segment
        assert (state.threshold_cut > 0) is thresholds_cut, segment
    assert [asdict(e) for e in new.detector.episodes] == [asdict(e) for e in old.detector.episodes]
    # Both go on with the same messages: the same alarms, the same baselines.
    after = Fleet(partitions=2, config=config)
    after.sequence, after.watermark = list(before.sequence), list(before.watermark)
    after.fleet = new
    after.run(orders[cut:])
    before.run(orders[cut:])
    assert episodes(after.fleet.detector) == episodes(before.fleet.detector)
    assert [r.baseline for r in after.fleet.detector.report()] == [r.baseline for r in before.fleet.detector.report()]


def test_ticks_written_by_a_flush_that_crashed_before_its_meta_key_are_tested_again() -> None:
    fleet = FleetDetector(CONFIG, 1)
    fleet.apply(detection_message(0, 1, T0 + 30, [facts(T0 + 1, True), facts(T0 + 30, False)], 5.0, 200))
    restored(fleet)  # durable: ticks and meta up to T0 + 30
    fleet.apply(detection_message(0, 2, T0 + 50, [facts(T0 + 40, False), facts(T0 + 50, False)], 5.0, 200))
    new = restored(fleet, crash_before_meta=True)
    assert new.detector.closed_until == T0 + 30 and new.sources[0].sequence == 1
    assert new.apply(detection_message(0, 2, T0 + 50, [facts(T0 + 40, False), facts(T0 + 50, False)], 5.0, 200))
    assert new.detector.closed_until == T0 + 50


def test_a_flush_that_failed_is_written_whole_by_the_next_one() -> None:
    orders = traffic(5400, 2.0, 0.3) + traffic(900, 2.0, 0.05, seed=3, start=T0 + 5400)
    thirds = [orders[n * len(orders) // 3:(n + 1) * len(orders) // 3] for n in range(3)]
    run = Fleet(partitions=2)
    run.run(thirds[0])
    fleet = run.fleet
    restored(fleet)  # a flush that completed
    run.run(thirds[1])
    ticks, _, deletes = fleet.take_changes()  # the broker fails this flush: none of it is stored
    assert ticks, "the failed flush had tick counts to write"
    fleet.give_back(ticks, deletes)
    run.run(thirds[2])  # minutes of the failed flush close meanwhile
    new = restored(fleet)  # the next flush, then a new owner
    assert new.detector.closed_until == fleet.detector.closed_until
    for segment, state in fleet.detector.segments.items():
        twin = new.detector.segments[segment]
        assert (twin.statistics, twin.since, twin.runs) == (state.statistics, state.since, state.runs), segment
    assert [r.baseline for r in new.detector.report()] == [r.baseline for r in fleet.detector.report()]
    assert episodes(new.detector) == episodes(fleet.detector)
