"""streams.orders.snapshot and streams.runtime.metrics: what a worker exports from its ledgers.

The metrics are read through a fresh CollectorRegistry and get_sample_value, as
Prometheus would scrape them; the numbers are worked out by hand from the orders.
"""

from __future__ import annotations

import pytest
from orders import checked_order
from prometheus_client import CollectorRegistry

from streams.orders.config import window_config
from streams.orders.contract import NOT_JSON, Item, Rejection
from streams.orders.detection import DetectionConfig, DropDetector
from streams.orders.ledger import PartitionLedger
from streams.orders.snapshot import Snapshot, take_snapshot
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings

T0 = 1_800_000_000.0  # a window boundary
SETTINGS = Settings(rolling_views=(300.0, 3600.0), retention_seconds=7200.0, max_label_values=1, pair_horizons=())


def ledgers() -> list[PartitionLedger]:
    """Partition 0: a cross-sell order and a plain one in the newest minute, an older order 20 min before.
    Partition 1: one cross-sell order, and an invalid event."""
    first, second = PartitionLedger(0, window_config(SETTINGS)), PartitionLedger(1, window_config(SETTINGS))
    tv, cable = Item("tv", "electronics", 400.0, 1), Item("cable", "cables", 10.0, 2)
    pan = Item("pan", "kitchen", 30.0, 1)
    first.apply(0, checked_order(tv, cable, order_id="a", occurred_at=T0 - 1200, channel="web"), T0)
    first.apply(1, checked_order(tv, cable, order_id="b", occurred_at=T0 + 10, channel="web"), T0 + 10)
    first.apply(2, checked_order(pan, order_id="c", occurred_at=T0 + 20, channel="app"), T0 + 20)
    second.apply(0, checked_order(pan, cable, order_id="d", occurred_at=T0 + 30, variant="treatment"), T0 + 30)
    second.apply(1, Rejection(NOT_JSON, "the event is not JSON"), T0 + 30)
    return [first, second]


def test_the_snapshot_sums_counters_and_anchors_views_at_the_newest_watermark() -> None:
    snapshot = take_snapshot(ledgers(), SETTINGS, dead_letters={NOT_JSON: 1})
    assert snapshot.partitions == [0, 1]
    assert snapshot.watermark == T0 + 30
    assert (snapshot.counters.events, snapshot.counters.orders, snapshot.counters.cross_sell_orders) == (5, 4, 3)
    assert snapshot.counters.invalid == {NOT_JSON: 1}
    five, hour = snapshot.views["5m"], snapshot.views["1h"]
    assert (five.orders, five.cross_sell_orders) == (3, 2)  # the order 20 minutes back is outside 5m
    assert (hour.orders, hour.cross_sell_orders) == (4, 3)
    assert (five.revenue, hour.revenue) == (pytest.approx(420.0 + 30.0 + 50.0), pytest.approx(420.0 * 2 + 30.0 + 50.0))
    assert snapshot.windows_held == 3


def test_the_json_summary_gives_the_rates_a_person_reads() -> None:
    summary = take_snapshot(ledgers(), SETTINGS, dead_letters={}).as_json()
    five = summary["views"]["5m"]
    assert five["rate"] == pytest.approx(2 / 3)
    assert five["average_order_value_with_cross_sell"] == pytest.approx((420.0 + 50.0) / 2)
    assert five["average_order_value_without_cross_sell"] == pytest.approx(30.0)
    assert [w["orders"] for w in summary["recent_windows"]] == [1, 3]


def scrape(snapshot_ledgers: list[PartitionLedger], assignments: dict[int, str] | None = None) -> CollectorRegistry:
    def snapshot() -> Snapshot:
        taken = take_snapshot(snapshot_ledgers, SETTINGS, dead_letters={NOT_JSON: 1})
        taken.assignments = assignments if assignments is not None else {0: "A", 1: "A"}
        return taken

    registry = CollectorRegistry()
    registry.register(CrossSellCollector(snapshot, SETTINGS))
    return registry


def test_counters_and_views_are_exported_with_their_numerators_and_denominators() -> None:
    registry = scrape(ledgers())
    value = registry.get_sample_value
    # Counters per orders partition: a moved partition takes its series with it.
    p0, p1 = {"partition": "0", "assignment": "A"}, {"partition": "1", "assignment": "A"}
    assert (value("crosssell_orders_total", p0), value("crosssell_orders_total", p1)) == (3, 1)
    assert value("crosssell_cross_sell_orders_total", p0) == 2
    assert value("crosssell_events_invalid_total", {"reason": NOT_JSON, **p1}) == 1
    assert value("crosssell_events_invalid_total", {"reason": NOT_JSON, **p0}) == 0
    assert value("crosssell_dead_letters_total", {"reason": NOT_JSON}) == 1
    assert value("crosssell_window_orders", {"window": "5m"}) == 3
    assert value("crosssell_window_cross_sell_orders", {"window": "5m"}) == 2
    assert value("crosssell_rate_ratio", {"window": "1h"}) == pytest.approx(0.75)
    assert value("crosssell_partitions_assigned") == 2
    assert value("crosssell_orders_topic_partitions") == SETTINGS.partitions
    assert value("crosssell_event_time_watermark_seconds") == T0 + 30


def test_each_spell_of_ownership_of_a_partition_is_a_series_of_its_own() -> None:
    # Taken again later (another assignment), partition 0's counter is a new series, so that
    # rate() never sees it resume with what another worker counted meanwhile.
    before = scrape(ledgers(), {0: "1000", 1: "1000"}).get_sample_value
    after = scrape(ledgers(), {0: "9000", 1: "1000"}).get_sample_value
    assert before("crosssell_orders_total", {"partition": "0", "assignment": "1000"}) == 3
    assert after("crosssell_orders_total", {"partition": "0", "assignment": "1000"}) is None
    assert after("crosssell_orders_total", {"partition": "0", "assignment": "9000"}) == 3
    assert after("crosssell_orders_total", {"partition": "1", "assignment": "1000"}) == 1


def test_a_breakdown_keeps_the_top_labels_and_folds_the_rest_into_other() -> None:
    # 1h by channel: web 2 orders, app 1, none 1; max_label_values=1 keeps web, the rest is "other".
    samples = {s.labels["channel"]: s.value for m in scrape(ledgers()).collect()
               if m.name == "crosssell_window_orders_by_channel" for s in m.samples if s.labels["window"] == "1h"}
    assert samples == {"web": 2, "other": 2}


def test_no_ledgers_export_zeros_and_no_watermark() -> None:
    value = scrape([]).get_sample_value
    assert value("crosssell_orders_total") is None  # no partition, no series
    assert value("crosssell_window_orders", {"window": "5m"}) == 0
    assert value("crosssell_event_time_watermark_seconds") is None


def test_drop_detection_is_exported_per_segment() -> None:
    """A collapse of the total: the alarm, its statistic, baseline, recent orders and event times."""
    detector = DropDetector(DetectionConfig(expected_rate=0.3))
    for i in range(300):  # 300 orders without a cross-sell, against an expected 30 %
        detector.observe(T0 + i, "books", "web", "control", False)
    detector.advance(T0 + 300)
    snapshot = take_snapshot(ledgers(), SETTINGS, dead_letters={})
    snapshot.detection, snapshot.drop_episodes = detector.report(), list(detector.episodes)
    snapshot.detected_until = detector.closed_until
    snapshot.detection_owner = True
    registry = CollectorRegistry()
    registry.register(CrossSellCollector(lambda: snapshot, SETTINGS))
    total = {"segment": "total", "value": "all"}
    assert registry.get_sample_value("crosssell_drop_owner") == 1.0
    assert registry.get_sample_value("crosssell_drop_alarm", total) == 1.0
    assert registry.get_sample_value("crosssell_drop_statistic", total) >= 1.0
    assert registry.get_sample_value("crosssell_drop_baseline_ratio", total) == 0.3
    assert registry.get_sample_value("crosssell_drop_baseline_orders", total) == 0  # the expected rate
    assert registry.get_sample_value("crosssell_drop_recent_ratio", total) == 0.0
    assert registry.get_sample_value("crosssell_drop_recent_orders", total) == 300
    assert registry.get_sample_value("crosssell_drop_since_seconds", total) == T0
    started = registry.get_sample_value("crosssell_drop_alarm_started_seconds", total)
    assert started is not None and T0 < started <= T0 + 300
    assert registry.get_sample_value("crosssell_drop_tested_until_seconds") == T0 + 300
    # A category without a baseline (no expected rate for segments) is listed, not in alarm.
    books = {"segment": "primary_category", "value": "books"}
    assert registry.get_sample_value("crosssell_drop_alarm", books) == 0.0
    assert registry.get_sample_value("crosssell_drop_baseline_ratio", books) is None
    assert snapshot.detection_json()["episodes"][0]["kind"] == "total"


def test_drop_detection_is_exported_only_by_the_owner_of_the_fleet_test() -> None:
    """A worker that does not own the detection partition says so and exports no segment."""
    snapshot = take_snapshot(ledgers(), SETTINGS, dead_letters={})
    snapshot.detection = DropDetector(DetectionConfig()).report()
    registry = CollectorRegistry()
    registry.register(CrossSellCollector(lambda: snapshot, SETTINGS))
    assert registry.get_sample_value("crosssell_drop_owner") == 0.0
    names = {metric.name for metric in registry.collect()}
    assert not any(name.startswith("crosssell_drop_") and name != "crosssell_drop_owner" for name in names), names
