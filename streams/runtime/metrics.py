"""Prometheus metrics, built afresh from a snapshot on every scrape.

A custom collector (as in prometheus_client's own gc_collector) rather than
global Counter/Gauge objects: the top-N label sets are recomputed each scrape
so old series never pile up, and every number comes from the ledgers, so a
rebalance or a restart cannot make the metrics disagree with the state.

Every ratio comes with its numerator and denominator so that Prometheus can
sum across workers before dividing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from streams.customers.summary import CustomerSummary
from streams.orders.contract import REASONS
from streams.orders.experiments import SUM_NAMES
from streams.orders.snapshot import Snapshot, period_group
from streams.orders.windows import ATTRIBUTION_FIGURES, bounded_labels, ratio, top_pairs

# prometheus_client's families, keeping their samples as rows for the /metrics page (exposition.py):
from streams.runtime.exposition import CounterFamily as CounterMetricFamily
from streams.runtime.exposition import GaugeFamily as GaugeMetricFamily
from streams.runtime.hit_rate_metrics import potential_companions, recommendation_hits
from streams.settings import Settings

PREFIX = "crosssell_"


class PairSource(Protocol):
    updates: int

    @property
    def state_bytes(self) -> int: ...

    @property
    def budget_bytes(self) -> int: ...

    def accuracy(self, horizon: str) -> tuple[bool, int]: ...

    def top_pairs(self, horizon: str, limit: int) -> list[dict[str, Any]]: ...


class CrossSellCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], settings: Settings, pairs: PairSource | None = None) -> None:
        self._snapshot = snapshot
        self._settings = settings
        self._pairs = pairs

    def describe(self) -> list[Metric]:
        # Families are dynamic; describing none keeps registration cheap.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from _counters(snap)
        yield from _views(snap, self._settings)
        yield from _experiments(snap, self._settings)
        yield from _attribution(snap, self._settings)
        yield from _potential(snap, self._settings)
        yield from recommendation_hits(snap, self._settings)
        yield from _health(snap, self._settings)
        yield from _detection(snap)
        if self._pairs is not None:
            yield from _product_pairs(self._pairs, self._settings)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


# Cumulative counters are exported per orders partition (label ``partition``): when a
# partition moves to another worker its series moves with it, whole, so that
# sum(rate(...)) over the workers stays the true rate through any rebalance. Totals
# per worker (no label) would show a moved partition's history as a jump on the new
# owner and a reset on the old one, and rate() would count both. The label
# ``assignment`` (when this worker took the partition) makes each spell of ownership
# a series of its own: a partition that comes back to the same worker starts a new
# series instead of resuming the old one with what another worker counted meanwhile.
_PARTITION_COUNTERS = (
    ("events", "Events read from the orders topic, valid or not.", "events"),
    ("orders", "Orders applied to the windows (valid, on time, not duplicate).", "orders"),
    ("cross_sell_orders", "Applied orders with an item outside the primary category.", "cross_sell_orders"),
    ("items", "Units (sum of quantities) in applied orders.", "items"),
    ("revenue", "Revenue of applied orders (unit_price x quantity, order currency).", "revenue"),
    ("cross_sell_revenue", "Revenue of cross-sell items in applied orders.", "cross_sell_revenue"),
    ("events_late", "Events whose window had closed (watermark past end + grace); not applied.", "late"),
    ("events_duplicate", "Events whose order_id was seen within the dedup horizon; not applied.", "duplicates"),
)


def _counters(snap: Snapshot) -> Iterator[Metric]:
    owned = [((str(partition), snap.assignments.get(partition, "")), counters)
             for partition, counters in sorted(snap.partition_counters.items())]
    for name, doc, attribute in _PARTITION_COUNTERS:
        family = CounterMetricFamily(PREFIX + name, doc + " Per orders partition and spell of ownership.",
                                     labels=["partition", "assignment"])
        for labels, counters in owned:
            family.add_metric(labels, getattr(counters, attribute))
        yield family
    invalid = CounterMetricFamily(PREFIX + "events_invalid", "Events rejected by the contract, by reason, "
                                  "orders partition and spell of ownership.",
                                  labels=["reason", "partition", "assignment"])
    for labels, counters in owned:
        for reason in REASONS:
            invalid.add_metric([reason, *labels], counters.invalid.get(reason, 0))
    yield invalid
    dead = CounterMetricFamily(PREFIX + "dead_letters", "Events published to the dead-letter topic by this "
                               "worker process, by reason.", labels=["reason"])
    for reason in REASONS:
        dead.add_metric([reason], snap.dead_letters.get(reason, 0))
    yield dead
    errors = CounterMetricFamily(PREFIX + "dead_letter_errors", "Dead letters the broker refused (sent again "
                                 "without the event's value; the log names each), by reason.", labels=["reason"])
    for reason in REASONS:
        errors.add_metric([reason], snap.dead_letter_errors.get(reason, 0))
    yield errors


_VIEW_GAUGES = (
    ("window_orders", "Orders in the rolling event-time view.", "orders"),
    ("window_cross_sell_orders", "Cross-sell orders in the rolling event-time view.", "cross_sell_orders"),
    ("window_items", "Units in the rolling event-time view.", "items"),
    ("window_revenue", "Revenue in the rolling event-time view.", "revenue"),
    ("window_cross_sell_revenue", "Revenue of cross-sell items in the rolling view.", "cross_sell_revenue"),
    ("window_cross_sell_order_revenue", "Whole revenue of cross-sell orders in the rolling view.",
     "cross_sell_order_revenue"),
)

_BREAKDOWNS = (
    ("primary_category", "category", "by_category"),
    ("channel", "channel", "by_channel"),
    ("variant", "variant", "by_variant"),
)


def _views(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    rate = GaugeMetricFamily(PREFIX + "rate_ratio", "Cross-sell orders / orders in the rolling event-time "
                             "view (0-1) on this worker's partitions.", labels=["window"])
    plain = {name: GaugeMetricFamily(PREFIX + name, doc, labels=["window"]) for name, doc, _ in _VIEW_GAUGES}
    by: dict[str, tuple[GaugeMetricFamily, GaugeMetricFamily]] = {}
    for suffix, label, _ in _BREAKDOWNS:
        by[suffix] = (
            GaugeMetricFamily(f"{PREFIX}window_orders_by_{suffix}", f"Orders in the rolling view by {suffix} "
                              f"(top {settings.max_label_values} plus other).", labels=["window", label]),
            GaugeMetricFamily(f"{PREFIX}window_cross_sell_orders_by_{suffix}", f"Cross-sell orders in the "
                              f"rolling view by {suffix}.", labels=["window", label]),
        )
    pairs = GaugeMetricFamily(PREFIX + "category_pair_orders", "Orders holding both categories, top "
                              f"{settings.top_pairs} pairs of the rolling view.",
                              labels=["window", "category_a", "category_b"])
    for window, totals in snap.views.items():
        rate.add_metric([window], ratio(totals.cross_sell_orders, totals.orders))
        for name, _, attribute in _VIEW_GAUGES:
            plain[name].add_metric([window], getattr(totals, attribute))
        for suffix, _, attribute in _BREAKDOWNS:
            orders_family, cross_family = by[suffix]
            for value, (orders, cross) in bounded_labels(getattr(totals, attribute), settings.max_label_values).items():
                orders_family.add_metric([window, value], orders)
                cross_family.add_metric([window, value], cross)
        for a, b, count in top_pairs(totals.category_pairs, settings.top_pairs):
            pairs.add_metric([window, a, b], count)
    yield rate
    yield from plain.values()
    for families in by.values():
        yield from families
    yield pairs


# The sums an experiment's statistics are computed from (streams/orders/experiments.py), so
# that Prometheus can add them over workers before deriving rates, differences and intervals.
_SUM_DOCS = {
    "orders": "Orders",
    "cross_sell_orders": "Cross-sell orders",
    "revenue": "Revenue (sum of order revenue)",
    "revenue_squares": "Sum of squared order revenue",
    "items": "Units (sum of order items)",
    "items_squares": "Sum of squared order items",
}


def _sum_families(prefix: str, what: str, labels: list[str]) -> list[GaugeMetricFamily]:
    return [GaugeMetricFamily(f"{PREFIX}{prefix}_{name}", f"{_SUM_DOCS[name]} {what}.", labels=labels)
            for name in SUM_NAMES]


def _experiments(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    by_variant = _sum_families("experiment", "in the rolling view by experiment variant (top "
                               f"{settings.max_label_values} plus other)", ["window", "variant"])
    for window, totals in snap.views.items():
        for variant, sums in bounded_labels(totals.variant_sums, settings.max_label_values).items():
            for family, value in zip(by_variant, sums, strict=True):
                family.add_metric([window, variant], value)
    yield from by_variant
    band = GaugeMetricFamily(PREFIX + "benchmark_rate_ratio", "Reference band of a strong cross-sell programme "
                             "(CROSSSELL_BENCHMARK_RATE_LOW/HIGH).", labels=["bound"])
    band.add_metric(["low"], settings.benchmark_rate_low)
    band.add_metric(["high"], settings.benchmark_rate_high)
    yield band
    if snap.marker is None:
        return
    yield GaugeMetricFamily(PREFIX + "experiment_marker_seconds", "Start of the window holding the before/after "
                            "marker (unix seconds).", value=snap.marker)
    by_period = _sum_families("period", "before and after the marker (windows held)", ["period"])
    for period, totals in snap.periods.items():
        for family, value in zip(by_period, period_group(totals), strict=True):
            family.add_metric([period], value)
    yield from by_period


_ATTRIBUTION_DOCS = {
    "lines": "Order lines sold through the recommendation touchpoint",
    "units": "Units sold through the recommendation touchpoint",
    "revenue": "Revenue of the lines the recommendation touchpoint sold",
    "cross_sell_revenue": "Revenue of the cross-sell lines the recommendation touchpoint sold",
    "cross_sell_orders": "Orders with a cross-sell line the recommendation touchpoint sold",
}


def _attribution(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    families = [GaugeMetricFamily(f"{PREFIX}attributed_{name}", f"{_ATTRIBUTION_DOCS[name]}, in the rolling view "
                                  f"(top {settings.max_label_values} touchpoints plus other).",
                                  labels=["window", "touchpoint"]) for name in ATTRIBUTION_FIGURES]
    orders = GaugeMetricFamily(PREFIX + "window_attributed_cross_sell_orders", "Orders with a cross-sell line "
                               "sold by any recommendation touchpoint, in the rolling view.", labels=["window"])
    for window, totals in snap.views.items():
        for touchpoint, figures in bounded_labels(totals.by_touchpoint, settings.max_label_values).items():
            for family, value in zip(families, figures, strict=True):
                family.add_metric([window, touchpoint], value)
        orders.add_metric([window], totals.attributed_cross_sell_orders)
    yield from families
    yield orders


def _potential(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    labels = ["window", "product"]
    orders = GaugeMetricFamily(PREFIX + "primary_product_orders", "Orders whose primary item is the product, "
                               f"top {settings.max_label_values} of the rolling view on this worker's partitions "
                               "(guaranteed: never above the true count).", labels=labels)
    cross = GaugeMetricFamily(PREFIX + "primary_product_cross_sell_orders", "Cross-sell orders among those "
                              "orders of the primary product.", labels=labels)
    for window, rows in snap.potential.items():
        for row in rows:
            orders.add_metric([window, row.product], row.orders)
            cross.add_metric([window, row.product], row.cross_sell_orders)
    yield orders
    yield cross
    yield from potential_companions(snap)


def _health(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    yield GaugeMetricFamily(PREFIX + "partitions_assigned", "Orders-topic partitions this worker owns.",
                            value=len(snap.partitions))
    # The worker checked at start that the topic has exactly this many: the sum of
    # partitions_assigned over the fleet below it means partitions nobody counts.
    yield GaugeMetricFamily(PREFIX + "orders_topic_partitions", "Partitions of the orders topic.",
                            value=settings.partitions)
    yield GaugeMetricFamily(PREFIX + "state_windows", "Window buckets held in state.", value=snap.windows_held)
    if snap.watermark is not None:
        yield GaugeMetricFamily(PREFIX + "event_time_watermark_seconds", "Newest event time seen (unix seconds).",
                                value=snap.watermark)
    lag = GaugeMetricFamily(PREFIX + "consumer_lag_messages", "Messages in the orders topic not yet applied, "
                            "per owned partition.", labels=["partition"])
    for partition, messages in sorted(snap.lag.items()):
        lag.add_metric([str(partition)], messages)
    yield lag
    applied = GaugeMetricFamily(PREFIX + "applied_offset", "Highest orders-topic offset applied (-1: none yet), "
                                "per owned partition; it stands still while the partition is not processed.",
                                labels=["partition"])
    for partition, offset in sorted(snap.applied_offsets.items()):
        applied.add_metric([str(partition)], offset)
    yield applied
    yield GaugeMetricFamily(PREFIX + "flush_pending_events", "Orders applied since the last flush took its changes; "
                            "applying pauses at twice CROSSSELL_FLUSH_MAX_EVENTS while a flush is outstanding.",
                            value=snap.flush.pending)
    yield GaugeMetricFamily(PREFIX + "flush_outstanding", "1 while a flush of the orders waits for the broker.",
                            value=int(snap.flush.outstanding))


def _detection(snap: Snapshot) -> Iterator[Metric]:
    """The fleet's drop test per segment (streams/orders/fleet_detection.py): only its owner exports it."""
    yield GaugeMetricFamily(PREFIX + "drop_owner", "1 on the worker that runs the fleet's drop test (it owns the "
                            "detection topic's one partition) and exports crosssell_drop_*, else 0.",
                            value=1.0 if snap.detection_owner else 0.0)
    if not snap.detection_owner:
        return
    labels = ["segment", "value"]

    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + "drop_" + name, doc, labels=labels)

    statistic = gauge("statistic", "The drop test's statistic (CUSUM of the cross-sell rate against the baseline) "
                      "as a fraction of its threshold: 1 or more is an alarm.")
    alarm = gauge("alarm", "1 while the segment's cross-sell rate is detected below its baseline, else 0.")
    baseline = gauge("baseline_ratio", "The rate the segment is tested against (its trailing day, an hour old, "
                     "less one standard error; or CROSSSELL_EXPECTED_RATE). Absent: no baseline yet.")
    baseline_orders = gauge("baseline_orders", "Orders the baseline was measured on (0: the expected rate).")
    recent = gauge("recent_ratio", "Cross-sell rate of the orders since the evidence of a drop began.")
    recent_orders = gauge("recent_orders", "Orders since the evidence of a drop began (0: no evidence).")
    since = gauge("since_seconds", "Event time the evidence of a drop began (the estimated start of the drop).")
    started = gauge("alarm_started_seconds", "Event time the alarm went on (present only during an alarm).")
    for report in snap.detection:
        values = [report.kind, report.value]
        statistic.add_metric(values, report.statistic)
        alarm.add_metric(values, 1.0 if report.alarm else 0.0)
        if report.baseline is not None:
            baseline.add_metric(values, report.baseline)
        baseline_orders.add_metric(values, report.baseline_orders)
        recent.add_metric(values, report.recent_rate)
        recent_orders.add_metric(values, report.recent_orders)
        if report.since is not None:
            since.add_metric(values, report.since)
        if report.alarm_started is not None:
            started.add_metric(values, report.alarm_started)
    yield from (statistic, alarm, baseline, baseline_orders, recent, recent_orders, since, started)
    if snap.detected_until is not None:
        yield GaugeMetricFamily(PREFIX + "drop_tested_until_seconds", "Event time up to which the drop test "
                                "has seen every tick (the oldest watermark of the fleet's busy partitions).",
                                value=snap.detected_until)
    yield _counter("drop_orders_skipped", "Orders whose counts reached the fleet's drop test after their tick "
                   "was tested (left out of it: fewer orders, no bias).", snap.detection_skipped)


def _product_pairs(pairs: PairSource, settings: Settings) -> Iterator[Metric]:
    yield _counter("recommendation_updates", "Recommendation messages (lists and tombstones) published.",
                   pairs.updates)
    labels = ["horizon", "product", "companion"]
    orders = GaugeMetricFamily(PREFIX + "product_pair_orders", f"Orders holding both products, top "
                               f"{settings.top_pairs} pairs per horizon on this worker's partitions.", labels=labels)
    confidence = GaugeMetricFamily(PREFIX + "product_pair_confidence", "Confidence of product -> companion "
                                   "(orders with both / orders with product).", labels=labels)
    lift = GaugeMetricFamily(PREFIX + "product_pair_lift", "Lift of product -> companion (confidence / support "
                             "of companion).", labels=labels)
    for horizon in settings.horizon_labels:
        for row in pairs.top_pairs(horizon, settings.top_pairs):
            values = [horizon, row["product"], row["companion"]]
            orders.add_metric(values, row["count"])
            confidence.add_metric(values, row["confidence"])
            lift.add_metric(values, row["lift"])
    yield orders
    yield confidence
    yield lift
    exact = GaugeMetricFamily(PREFIX + "pair_counts_exact", "1 when every product and pair count of the horizon "
                              "on this worker's partitions is exact; 0 once the memory budget made them "
                              "approximate (then listed counts are guaranteed: never above the truth).",
                              labels=["horizon"])
    bound = GaugeMetricFamily(PREFIX + "pair_count_error_bound", "The most a listed companion count of the "
                              "horizon may be below the true count, and the most orders a companion missing "
                              "from the pair counts can have (largest over this worker's partitions); 0 when exact.",
                              labels=["horizon"])
    for horizon in settings.horizon_labels:
        is_exact, error_bound = pairs.accuracy(horizon)
        exact.add_metric([horizon], 1.0 if is_exact else 0.0)
        bound.add_metric([horizon], error_bound)
    yield exact
    yield bound
    yield GaugeMetricFamily(PREFIX + "pair_state_bytes", "Memory the product and pair counts of this worker take, "
                            "as the memory budget accounts it.", value=pairs.state_bytes)
    yield GaugeMetricFamily(PREFIX + "pair_state_budget_bytes", "The memory budget of the product and pair counts "
                            "(CROSSSELL_PAIR_MEMORY_MB).", value=pairs.budget_bytes)


# Customer-level counts (streams/customers/): series of the summary -> (metric, help).
_CUSTOMER_GAUGES = (
    ("customers", "customers", "Customers with an order in the horizon (event time, rolling)."),
    ("multi", "customers_multi_category", "Customers with orders from two or more categories in the horizon."),
    ("repeat", "customers_repeat", "Customers with two or more orders in the horizon."),
    ("single_first", "customers_single_category_first",
     "Customers whose first order (first since a gap of a whole horizon) is in the horizon and had one category."),
)
_LATER = (("later_7d", "7d"), ("later_30d", "30d"))


class FlushFailureCollector(Collector):
    """Flushes the broker failed, by the state they write; each is given back and written by the next one."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(PREFIX + "flush_failures", "Flushes the broker failed (a refused or timed-out "
                                     "write), by the state they write (orders, pairs, customers, detection: the "
                                     "fleet's drop test); what they took is written by the next flush.",
                                     labels=["flush"])
        for flush, count in sorted(self._counts().items()):
            family.add_metric([flush], count)
        yield family


class CustomerCollector(Collector):
    """The customer counts of the partitions this worker owns: numerators and denominators, and the rate."""

    def __init__(self, summary: Callable[[], CustomerSummary], expired: Callable[[], int]) -> None:
        self._summary = summary
        self._expired = expired

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        summary = self._summary()
        horizon = summary.horizon
        for series, name, doc in _CUSTOMER_GAUGES:
            family = GaugeMetricFamily(PREFIX + name, doc, labels=["horizon"])
            family.add_metric([horizon], summary.totals[series])
            by = GaugeMetricFamily(PREFIX + name + "_by_first_category", doc + " By the primary category of the "
                                   "first order (top CROSSSELL_MAX_LABEL_VALUES plus other).",
                                   labels=["horizon", "first_category"])
            for category, counts in sorted(summary.by_first_category.items()):
                by.add_metric([horizon, category], counts[series])
            yield family
            yield by
        later = GaugeMetricFamily(PREFIX + "customers_later_cross_sell", "Of the customers_single_category_first, "
                                  "those who bought another category within 7 or 30 days of the first order.",
                                  labels=["horizon", "within"])
        later_by = GaugeMetricFamily(PREFIX + "customers_later_cross_sell_by_first_category", "Later cross-sell "
                                     "customers by the first order's category.",
                                     labels=["horizon", "within", "first_category"])
        for series, within in _LATER:
            later.add_metric([horizon, within], summary.totals[series])
            for category, counts in sorted(summary.by_first_category.items()):
                later_by.add_metric([horizon, within, category], counts[series])
        yield later
        yield later_by
        rate = GaugeMetricFamily(PREFIX + "customer_cross_sell_ratio", "Customers with two or more categories / "
                                 "customers with an order, in the horizon, on this worker's partitions (0-1).",
                                 labels=["horizon"])
        rate.add_metric([horizon], summary.rates()["cross_sell_rate"])
        yield rate
        yield CounterMetricFamily(PREFIX + "customers_expired", "Customers deleted from the customer table once "
                                  "their last order was more than a horizon older than the horizon's oldest bucket "
                                  "(since the worker started).", value=self._expired())
