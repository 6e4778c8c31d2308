"""Drop detection in event time (streams/orders/detection.py): table-driven, no Faust."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from streams.orders.detection import (
    OTHER,
    TOTAL,
    DetectionConfig,
    DropDetector,
    Segment,
    low_watermark,
    window_counts,
)
from streams.orders.windows import WindowTotals

HOUR = 3600.0
P0 = 0.26
CATEGORIES = ("books", "electronics", "toys")


@dataclass(frozen=True)
class Phase:
    seconds: float
    rate: float  # orders per second
    cross_sell: Callable[[str], float] = lambda category: P0  # the rate by primary category


def drop_in(category: str | None, drop: float) -> Callable[[str], float]:
    return lambda c: P0 * (1 - drop) if category is None or c == category else P0


def run(phases: list[Phase], config: DetectionConfig | None = None, seed: int = 7,
        detector: DropDetector | None = None, start: float = 0.0) -> DropDetector:
    """Poisson orders through ``phases``, the clock advanced every few orders, as the worker does."""
    rng = random.Random(seed)
    detector = detector or DropDetector(config or DetectionConfig())
    t = start
    for phase in phases:
        end = t + phase.seconds
        while True:
            t += rng.expovariate(phase.rate)
            if t >= end:
                t = end
                break
            category = CATEGORIES[rng.randrange(3)]
            detector.observe(t, category, rng.choice(("web", "app")), "control",
                             rng.random() < phase.cross_sell(category))
            if rng.random() < 0.1:
                detector.advance(t - 1.0)
    detector.advance(t)
    return detector


def alarms(detector: DropDetector) -> list[tuple[str, str, float]]:
    return [(e.kind, e.value, e.started) for e in detector.episodes]


def first_alarm(detector: DropDetector, segment: Segment) -> float | None:
    return next((e.started for e in detector.episodes if (e.kind, e.value) == segment), None)


@pytest.mark.parametrize(("name", "phases"), [
    ("steady 5 orders/s for a day", [Phase(24 * HOUR, 5.0)]),
    ("steady night, 0.2 orders/s for two days", [Phase(48 * HOUR, 0.2)]),
    ("a stall of six hours between busy hours", [Phase(3 * HOUR, 5.0), Phase(6 * HOUR, 1e-9), Phase(3 * HOUR, 5.0)]),
    ("volume that jumps from 0.2 to 50 orders/s", [Phase(6 * HOUR, 0.2), Phase(HOUR, 50.0)]),
])
def test_normal_traffic_raises_no_alarm(name: str, phases: list[Phase]) -> None:
    assert alarms(run(phases)) == []


# (drop, segment category or None for all, orders/s, segment share): detected within 2x the
# z = 4 limit plus a tick of 5 s and the minute the baseline holds still.
@pytest.mark.parametrize(("drop", "category", "rate"), [
    (1.0, None, 5.0), (0.5, None, 5.0), (0.25, None, 5.0),
    (1.0, "books", 5.0), (0.5, "books", 50.0), (0.25, None, 50.0),
    (1.0, None, 0.2),
])
def test_a_drop_is_detected_near_the_limit(drop: float, category: str | None, rate: float) -> None:
    share = 1.0 if category is None else 1 / 3
    limit = 16 * P0 * (1 - P0) / (P0 * drop) ** 2 / (rate * share)
    warm = 26 * HOUR if rate < 1 else 2 * HOUR
    detector = run([Phase(warm, rate), Phase(3 * limit + 600, rate, drop_in(category, drop))])
    segment = TOTAL if category is None else ("primary_category", category)
    started = first_alarm(detector, segment)
    assert started is not None, f"no alarm in {segment}: {alarms(detector)}"
    assert warm < started <= warm + 2 * limit + 15 + 60
    episode = next(e for e in detector.episodes if (e.kind, e.value) == segment)
    assert episode.change <= started and abs(episode.change - warm) < max(limit, 120)
    assert episode.rate < episode.baseline


def test_a_drop_in_one_category_does_not_page_the_others() -> None:
    detector = run([Phase(2 * HOUR, 5.0), Phase(HOUR, 5.0, drop_in("books", 1.0))])
    assert first_alarm(detector, ("primary_category", "books")) is not None
    assert first_alarm(detector, ("primary_category", "toys")) is None
    assert first_alarm(detector, ("primary_category", "electronics")) is None


def test_the_alarm_clears_after_the_rate_recovers() -> None:
    detector = run([Phase(2 * HOUR, 5.0), Phase(600, 5.0, drop_in(None, 1.0)), Phase(HOUR, 5.0)])
    episode = next(e for e in detector.episodes if (e.kind, e.value) == TOTAL)
    assert episode.ended is not None and episode.ended < 2 * HOUR + 600 + 20 * 60
    report = {(r.kind, r.value): r for r in detector.report()}[TOTAL]
    assert not report.alarm and report.alarm_started is None


@pytest.mark.parametrize("minutes_later", [0, 20])
def test_a_collapse_is_reported_from_the_cusum_that_raised_the_alarm(minutes_later: int) -> None:
    """The change point, rate and orders of the alarm are those of the CUSUM that holds it, not of one
    designed for a smaller drop whose run began earlier on normal orders; also once every CUSUM is capped."""
    collapse = 2 * HOUR
    # Two minutes of a 20 % dip first: too little for an alarm, enough to start the 25 % CUSUM's run.
    detector = run([Phase(collapse - 120, 5.0), Phase(120, 5.0, drop_in(None, 0.2)),
                    Phase(60 + 60 * minutes_later, 5.0, drop_in(None, 1.0))])
    report = {(r.kind, r.value): r for r in detector.report()}[TOTAL]
    assert report.alarm and report.since is not None
    assert collapse - 10 <= report.since <= collapse + 10, report
    assert report.recent_rate <= 0.02 and report.recent_orders >= 100, report
    episode = next(e for e in detector.episodes if (e.kind, e.value) == TOTAL)
    assert collapse - 10 <= episode.change <= collapse + 10 and episode.rate <= 0.02, episode


def test_the_baseline_holds_still_during_a_long_drop() -> None:
    detector = run([Phase(26 * HOUR, 1.0), Phase(5 * HOUR, 1.0, drop_in(None, 0.5))])
    report = {(r.kind, r.value): r for r in detector.report()}[TOTAL]
    assert report.alarm
    assert report.baseline is not None and report.baseline > P0 - 0.02


@pytest.mark.parametrize(("expected_rate", "alarmed"), [(0.0, False), (P0, True)])
def test_the_first_minutes_use_the_expected_rate(expected_rate: float, alarmed: bool) -> None:
    # Ten minutes of 1 order/s: too few for a baseline of its own.
    config = DetectionConfig(expected_rate=expected_rate)
    detector = run([Phase(120, 1.0), Phase(480, 1.0, drop_in(None, 1.0))], config)
    assert (first_alarm(detector, TOTAL) is not None) is alarmed


def test_orders_for_a_tested_tick_are_skipped_not_counted() -> None:
    detector = run([Phase(2 * HOUR, 5.0)])
    before = {(r.kind, r.value): r.statistic for r in detector.report()}
    for _ in range(500):  # a burst of late orders without a cross-sell
        detector.observe(HOUR, "books", "web", "control", False)
    detector.advance(2 * HOUR + 10)
    assert detector.dropped == 500
    assert {(r.kind, r.value): r.statistic for r in detector.report()} == before
    assert alarms(detector) == []


def test_a_stall_freezes_the_test() -> None:
    detector = run([Phase(2 * HOUR, 5.0)])
    before = detector.report()
    detector.advance(2 * HOUR)  # the clock does not move: nothing is tested
    assert detector.report() == before


def test_values_beyond_the_limit_are_tested_as_other() -> None:
    detector = DropDetector(DetectionConfig(max_values=2))
    for i, category in enumerate(("a", "b", "c", "d")):
        detector.observe(float(i), category, "web", "control", False)
    detector.advance(100.0)
    values = {value for kind, value in detector.segments if kind == "primary_category"}
    assert values == {"a", "b", OTHER}


def test_replaying_the_windows_rebuilds_the_baseline_and_the_alarm() -> None:
    """A restarted worker rebuilds from its 1-minute windows what the live test had."""
    rng = random.Random(3)
    live = DropDetector(DetectionConfig())
    windows: dict[float, WindowTotals] = {}
    t, drop_at, end = 0.0, 3 * HOUR, 3 * HOUR + 900
    while t < end:
        t += rng.expovariate(5.0)
        cross = rng.random() < (P0 if t < drop_at else 0.0)
        live.observe(t, "books", "web", "control", cross)
        live.advance(t - 1)
        totals = windows.setdefault(t // 60 * 60, WindowTotals())
        totals.orders += 1
        totals.cross_sell_orders += cross
        for labels, value in ((totals.by_category, "books"), (totals.by_channel, "web"),
                              (totals.by_variant, "control")):
            entry = labels.setdefault(value, [0, 0])
            entry[0] += 1
            entry[1] += cross
    rebuilt = DropDetector(DetectionConfig())
    rebuilt.replay(((s, 60.0, window_counts([windows[s]])) for s in sorted(windows)), t)
    live_total = {(r.kind, r.value): r for r in live.report()}[TOTAL]
    total = {(r.kind, r.value): r for r in rebuilt.report()}[TOTAL]
    assert total.alarm and live_total.alarm
    assert total.baseline == pytest.approx(live_total.baseline, abs=0.005)
    assert abs(rebuilt.episodes[0].started - live.episodes[0].started) <= 60


@pytest.mark.parametrize(("partitions", "expected"), [
    ([], None),
    ([(None, False), (None, False)], None),
    ([(100.0, False), (None, False), (90.0, False)], 90.0),  # a partition without orders yet is quiet
    ([(100.0, False), (None, True)], None),  # ... unless it has messages waiting
    ([(5000.0, False), (4990.0, False), (1000.0, False)], 4990.0),  # quiet for over 10 minutes: left out
    ([(5000.0, False), (4990.0, False), (1000.0, True)], 1000.0),  # behind with messages waiting: waited for
    ([(5000.0, False), (4400.0, False)], 4400.0),
])
def test_low_watermark(partitions: list[tuple[float | None, bool]], expected: float | None) -> None:
    assert low_watermark(partitions, idle=600.0) == expected


@pytest.mark.parametrize("config", [DetectionConfig(tick=7.0), DetectionConfig(thresholds=(1.0,)),
                                    DetectionConfig(reference_orders=1e9)])
def test_bad_configurations_are_refused(config: DetectionConfig) -> None:
    with pytest.raises(ValueError):
        DropDetector(config)


def test_statistics_stay_within_the_cap() -> None:
    detector = run([Phase(2 * HOUR, 5.0), Phase(2 * HOUR, 5.0, drop_in(None, 1.0))])
    state = detector.segments[TOTAL]
    assert max(state.statistics) == pytest.approx(detector.config.cap)
    assert all(0.0 <= s <= detector.config.cap for s in state.statistics)
    assert not any(math.isnan(s) for s in state.statistics)


def ticks_at(detector: DropDetector, start: float, seconds: float, orders: int, cross_sell: int,
             tested: list[tuple[float, float, dict[Segment, list[int]]]]) -> float:
    """``orders`` orders (``cross_sell`` of them cross-sell) in every third tick, in the total only."""
    tick = detector.config.tick
    for at in range(int(start), int(start + seconds), int(3 * tick)):
        detector.add_tick(float(at), [("total", "all", orders, cross_sell)])
        tested.extend((s, tick, counts) for s, counts in detector.advance(at + tick))
    return start + seconds


def test_a_slow_drop_leaves_the_baseline_from_its_change_point() -> None:
    """A drop seen only after ``short_lag``: its ticks from the change point on, counted in the baseline
    before the alarm went on, are taken out again, so the baseline after the alarm is the normal rate."""
    detector = DropDetector(DetectionConfig())
    tested: list[tuple[float, float, dict[Segment, list[int]]]] = []
    t = ticks_at(detector, 0.0, 3 * HOUR, 20, 5, tested)  # 1.3 orders/s at 25 %
    t = ticks_at(detector, t, 45 * 60, 20, 4, tested)  # 20 %: the 25 % CUSUM needs ~27 minutes
    t = ticks_at(detector, t, 2 * HOUR, 20, 5, tested)  # normal again, past the baseline's hour of lag
    [episode] = detector.episodes
    assert episode.change == 3 * HOUR
    assert episode.started - episode.change > detector.config.short_lag  # its first ticks were counted
    assert episode.ended is not None and episode.ended + detector.config.baseline_lag < t
    state = detector.segments[TOTAL]
    assert state.baseline is not None and state.baseline_orders > 0
    assert max(state.statistics) == 0.0  # no evidence holds the baseline back: it covers the drop
    measured = 0.25  # only normal ticks counted
    assert state.baseline == pytest.approx(measured - math.sqrt(measured * (1 - measured) / state.baseline_orders))

    rebuilt = DropDetector(DetectionConfig())  # a new owner, from the tested ticks
    rebuilt.replay(tested, t)
    assert [(e.change, e.started, e.ended) for e in rebuilt.episodes] == \
        [(e.change, e.started, e.ended) for e in detector.episodes]
    for replica in (detector, rebuilt):
        ticks_at(replica, t, 5.0, 20, 5, [])
    assert rebuilt.segments[TOTAL].baseline == detector.segments[TOTAL].baseline
    assert rebuilt.segments[TOTAL].baseline_orders == detector.segments[TOTAL].baseline_orders


@pytest.mark.parametrize("arrival", ["segment order", "reversed", "shuffled"])
def test_alarms_of_one_tick_are_listed_in_segment_order_however_the_counts_arrived(arrival: str) -> None:
    """A fleet merges a tick's counts from several flushes, meeting its segments in any order; its alarms
    are listed as one process over every order lists them (tests/integration/test_fleet_detection.py)."""
    segments = [TOTAL, ("channel", "app"), ("channel", "web"), ("primary_category", "books"),
                ("variant", "control"), ("variant", "treatment")]
    rng = random.Random(5)
    detector = DropDetector(DetectionConfig())
    tick = detector.config.tick
    for at in range(0, int(2 * HOUR + 600), int(tick)):
        collapsed = at >= 2 * HOUR
        rows = [(kind, value, 20, 0 if collapsed else 5) for kind, value in segments]
        if arrival == "reversed":
            rows.reverse()
        elif arrival == "shuffled":
            rng.shuffle(rows)
        for row in rows:  # one message per segment, as flushes of several partitions bring them
            detector.add_tick(float(at), [row])
        detector.advance(at + tick)
    listed = [(e.started, e.kind, e.value) for e in detector.episodes]
    assert {(kind, value) for _, kind, value in listed} == set(segments)
    assert listed == sorted(listed)


@pytest.mark.parametrize(("name", "reference", "phases", "cut"), [
    ("no reference: the thresholds as configured", 0.0, [Phase(30 * HOUR, 0.2)], False),
    ("a full day of few orders: cut", 30_000.0, [Phase(30 * HOUR, 0.2)], True),
    ("less than a day of orders: as configured", 30_000.0, [Phase(20 * HOUR, 0.2)], False),
    ("more orders a day than the reference: as configured", 20_000.0, [Phase(30 * HOUR, 1.0)], False),
])
def test_thresholds_are_cut_by_the_log_of_the_orders_a_day_below_the_reference(
        name: str, reference: float, phases: list[Phase], cut: bool) -> None:
    detector = run(phases, DetectionConfig(reference_orders=reference))
    for segment in (TOTAL, ("primary_category", "books")):
        state = detector.segments[segment]
        expected = math.log(reference / state.baseline_orders) if cut else 0.0
        assert state.threshold_cut == pytest.approx(expected), segment
        assert (state.threshold_cut > 0) is cut


def test_a_small_drop_in_a_segment_of_few_orders_is_seen_sooner_with_the_cut() -> None:
    phases = [Phase(30 * HOUR, 0.2), Phase(6 * HOUR, 0.2, drop_in("books", 0.5))]
    books = ("primary_category", "books")
    configured = first_alarm(run(phases, DetectionConfig(reference_orders=0.0)), books)
    cut = first_alarm(run(phases, DetectionConfig(reference_orders=30_000.0)), books)
    assert cut is not None and (configured is None or cut < configured), (cut, configured)
    assert alarms(run(phases[:1], DetectionConfig(reference_orders=30_000.0))) == []
