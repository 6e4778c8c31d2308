"""Customer counts summed over partitions, bounded by first category, and exported with their rates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.customers.ledger import CustomerView
from streams.customers.state import SERIES
from streams.customers.summary import summarize
from streams.runtime.metrics import CustomerCollector


def view(watermark: float, **by_category: tuple[int, ...]) -> CustomerView:
    """A partition's view: per first category, the counts in SERIES order."""
    by = {series: {c: counts[i] for c, counts in by_category.items() if counts[i]} for i, series in enumerate(SERIES)}
    return CustomerView(watermark, {s: sum(by[s].values()) for s in SERIES}, by)


def test_partitions_sum_and_rates_divide_the_sums():
    summary = summarize({0: view(10.0, tv=(10, 3, 4, 5, 1, 2)), 1: view(12.0, tv=(10, 1, 0, 5, 1, 2),
                                                                     pens=(20, 6, 6, 10, 2, 4))}, "30d", 5)
    assert summary.totals == {"customers": 40, "multi": 10, "repeat": 10, "single_first": 20, "later_7d": 4,
                              "later_30d": 8}
    assert summary.rates() == {"cross_sell_rate": 0.25, "repeat_share": 0.25, "later_cross_sell_7d": 0.2,
                               "later_cross_sell_30d": 0.4}
    assert summary.by_first_category["tv"]["customers"] == 20
    assert summary.as_json()["partitions"]["1"]["watermark"] == 12.0


def test_first_categories_beyond_the_limit_are_summed_into_other():
    summary = summarize({0: view(1.0, a=(5, 1, 0, 0, 0, 0), b=(4, 1, 0, 0, 0, 0), c=(3, 1, 0, 0, 0, 0))}, "30d", 2)
    assert set(summary.by_first_category) == {"a", "b", "other"}
    assert summary.by_first_category["other"]["customers"] == 3


def test_no_customers_no_rate():
    assert summarize({}, "30d", 5).rates()["cross_sell_rate"] == 0.0


def test_the_collector_exports_numerators_denominators_and_the_rate():
    summary = summarize({0: view(10.0, tv=(10, 3, 4, 5, 1, 2))}, "30d", 5)
    registry = CollectorRegistry()
    registry.register(CustomerCollector(lambda: summary, lambda: 7))
    assert registry.get_sample_value("crosssell_customers", {"horizon": "30d"}) == 10
    assert registry.get_sample_value("crosssell_customers_multi_category", {"horizon": "30d"}) == 3
    assert registry.get_sample_value("crosssell_customers_later_cross_sell", {"horizon": "30d", "within": "7d"}) == 1
    assert registry.get_sample_value("crosssell_customers_single_category_first_by_first_category",
                                     {"horizon": "30d", "first_category": "tv"}) == 5
    assert registry.get_sample_value("crosssell_customer_cross_sell_ratio", {"horizon": "30d"}) == 0.3
    assert registry.get_sample_value("crosssell_customers_expired_total") == 7
