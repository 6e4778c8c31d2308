"""The metric contract between the worker and the monitoring files.

Names are spelled as PromQL sees them: counters with their ``_total`` suffix.
(prometheus_client's text parser names a counter family without ``_total``;
strip or add it when comparing with a live worker's /metrics. The ``_created``
samples prometheus_client adds to counters are not part of the contract.)

The dashboards and rules may use only these names, the recording rules of
prometheus/rules/, the standard client metrics and Prometheus' own ``up``;
tests/integration/test_monitoring_files.py checks that.
"""

from types import MappingProxyType
from typing import Final

from streams.orders.experiments import SUM_NAMES
from streams.orders.hit_rate import HIT_FIGURES
from streams.orders.windows import ATTRIBUTION_FIGURES

# Every crosssell_* series a worker exports, with its label names.
METRIC_LABELS: Final = MappingProxyType(
    {
        # Counters: cumulative per orders partition and spell of ownership (they move with the partition).
        "crosssell_orders_total": frozenset({"partition", "assignment"}),
        "crosssell_cross_sell_orders_total": frozenset({"partition", "assignment"}),
        "crosssell_items_total": frozenset({"partition", "assignment"}),
        "crosssell_revenue_total": frozenset({"partition", "assignment"}),
        "crosssell_cross_sell_revenue_total": frozenset({"partition", "assignment"}),
        "crosssell_events_invalid_total": frozenset({"reason", "partition", "assignment"}),
        "crosssell_events_late_total": frozenset({"partition", "assignment"}),
        "crosssell_events_duplicate_total": frozenset({"partition", "assignment"}),
        "crosssell_events_total": frozenset({"partition", "assignment"}),
        "crosssell_dead_letters_total": frozenset({"reason"}),
        "crosssell_dead_letter_errors_total": frozenset({"reason"}),
        "crosssell_recommendation_updates_total": frozenset(),
        # Rolling-window gauges (window in 5m, 1h, 24h), per worker.
        "crosssell_rate_ratio": frozenset({"window"}),
        "crosssell_window_orders": frozenset({"window"}),
        "crosssell_window_cross_sell_orders": frozenset({"window"}),
        "crosssell_window_items": frozenset({"window"}),
        "crosssell_window_revenue": frozenset({"window"}),
        "crosssell_window_cross_sell_revenue": frozenset({"window"}),
        "crosssell_window_cross_sell_order_revenue": frozenset({"window"}),
        "crosssell_window_orders_by_primary_category": frozenset({"window", "category"}),
        "crosssell_window_cross_sell_orders_by_primary_category": frozenset({"window", "category"}),
        "crosssell_window_orders_by_channel": frozenset({"window", "channel"}),
        "crosssell_window_cross_sell_orders_by_channel": frozenset({"window", "channel"}),
        "crosssell_window_orders_by_variant": frozenset({"window", "variant"}),
        "crosssell_window_cross_sell_orders_by_variant": frozenset({"window", "variant"}),
        "crosssell_category_pair_orders": frozenset({"window", "category_a", "category_b"}),
        # Experiments: the sums of each variant per rolling view, and of the periods around the marker.
        **{f"crosssell_experiment_{name}": frozenset({"window", "variant"}) for name in SUM_NAMES},
        **{f"crosssell_period_{name}": frozenset({"period"}) for name in SUM_NAMES},
        "crosssell_experiment_marker_seconds": frozenset(),
        "crosssell_benchmark_rate_ratio": frozenset({"bound"}),
        # Attribution: what each recommendation touchpoint sold per rolling view.
        **{f"crosssell_attributed_{name}": frozenset({"window", "touchpoint"}) for name in ATTRIBUTION_FIGURES},
        "crosssell_window_attributed_cross_sell_orders": frozenset({"window"}),
        # Potential: the top primary products of each rolling view.
        "crosssell_primary_product_orders": frozenset({"window", "product"}),
        "crosssell_primary_product_cross_sell_orders": frozenset({"window", "product"}),
        # ... and the best companion (highest lift) of each, from its published list.
        "crosssell_primary_product_companion_lift": frozenset({"product", "companion"}),
        "crosssell_primary_product_companion_confidence": frozenset({"product", "companion"}),
        # Recommendation hit rate: orders checked against their primary product's published list.
        **{f"crosssell_recommendation_{name}": frozenset({"window", "variant"}) for name in HIT_FIGURES},
        "crosssell_recommendation_lists_held": frozenset(),
        "crosssell_recommendation_lists_evicted_total": frozenset(),
        # Top-N product pairs (horizon in 24h, 7d).
        "crosssell_product_pair_orders": frozenset({"horizon", "product", "companion"}),
        "crosssell_product_pair_lift": frozenset({"horizon", "product", "companion"}),
        "crosssell_product_pair_confidence": frozenset({"horizon", "product", "companion"}),
        # Pair counting per horizon: exact or not, and how far a listed count may be below the truth.
        "crosssell_pair_counts_exact": frozenset({"horizon"}),
        "crosssell_pair_count_error_bound": frozenset({"horizon"}),
        "crosssell_pair_state_bytes": frozenset(),
        "crosssell_pair_state_budget_bytes": frozenset(),
        # Customer-level counts over the customer horizon (30d), per worker (CROSSSELL_CUSTOMERS).
        "crosssell_customers": frozenset({"horizon"}),
        "crosssell_customers_multi_category": frozenset({"horizon"}),
        "crosssell_customers_repeat": frozenset({"horizon"}),
        "crosssell_customers_single_category_first": frozenset({"horizon"}),
        "crosssell_customers_later_cross_sell": frozenset({"horizon", "within"}),
        "crosssell_customers_by_first_category": frozenset({"horizon", "first_category"}),
        "crosssell_customers_multi_category_by_first_category": frozenset({"horizon", "first_category"}),
        "crosssell_customers_repeat_by_first_category": frozenset({"horizon", "first_category"}),
        "crosssell_customers_single_category_first_by_first_category": frozenset({"horizon", "first_category"}),
        "crosssell_customers_later_cross_sell_by_first_category": frozenset({"horizon", "within", "first_category"}),
        "crosssell_customer_cross_sell_ratio": frozenset({"horizon"}),
        "crosssell_customers_expired_total": frozenset(),
        # Pipeline state.
        "crosssell_event_time_watermark_seconds": frozenset(),
        "crosssell_consumer_lag_messages": frozenset({"partition"}),
        "crosssell_applied_offset": frozenset({"partition"}),
        # The orders' flushes: pending events, a flush waiting for the broker, flushes the broker failed.
        "crosssell_flush_pending_events": frozenset(),
        "crosssell_flush_outstanding": frozenset(),
        "crosssell_flush_failures_total": frozenset({"flush"}),
        "crosssell_partitions_assigned": frozenset(),
        "crosssell_orders_topic_partitions": frozenset(),
        "crosssell_state_windows": frozenset(),
        # Drop detection per segment (segment: total, primary_category, channel, variant; value: its label).
        "crosssell_drop_statistic": frozenset({"segment", "value"}),
        "crosssell_drop_alarm": frozenset({"segment", "value"}),
        "crosssell_drop_baseline_ratio": frozenset({"segment", "value"}),
        "crosssell_drop_baseline_orders": frozenset({"segment", "value"}),
        "crosssell_drop_recent_ratio": frozenset({"segment", "value"}),
        "crosssell_drop_recent_orders": frozenset({"segment", "value"}),
        "crosssell_drop_since_seconds": frozenset({"segment", "value"}),
        "crosssell_drop_alarm_started_seconds": frozenset({"segment", "value"}),
        "crosssell_drop_tested_until_seconds": frozenset(),
        "crosssell_drop_owner": frozenset(),
        "crosssell_drop_orders_skipped_total": frozenset(),
    }
)

EXPORTED_METRICS: Final[frozenset[str]] = frozenset(METRIC_LABELS)

# Exported by prometheus_client's default collectors (process and GC), which
# the worker's registry is expected to include.
CLIENT_METRIC_PREFIXES: Final = ("process_", "python_")

# Written by Prometheus itself for every scrape target.
PROMETHEUS_METRICS: Final[frozenset[str]] = frozenset({"up"})
