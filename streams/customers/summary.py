"""The customer counts of the partitions a worker owns, summed, with their rates: what /metrics and the API show."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.customers.ledger import CustomerView
from streams.customers.state import SERIES
from streams.orders.windows import OTHER, ratio


@dataclass
class CustomerSummary:
    horizon: str
    watermarks: dict[int, float | None]  # customer partition -> newest event time applied
    partitions: dict[int, dict[str, int]]  # customer partition -> totals per series
    totals: dict[str, int]
    by_first_category: dict[str, dict[str, int]]  # first category (top N plus other) -> totals per series

    def rates(self, counts: Mapping[str, int] | None = None) -> dict[str, float]:
        """Customer cross-sell rate, repeat-customer share, later cross-sell within 7 and 30 days."""
        c = self.totals if counts is None else counts
        return {"cross_sell_rate": ratio(c["multi"], c["customers"]),
                "repeat_share": ratio(c["repeat"], c["customers"]),
                "later_cross_sell_7d": ratio(c["later_7d"], c["single_first"]),
                "later_cross_sell_30d": ratio(c["later_30d"], c["single_first"])}

    def as_json(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "totals": self.totals, "rates": self.rates(),
                "by_first_category": {category: {"counts": counts, "rates": self.rates(counts)}
                                      for category, counts in sorted(self.by_first_category.items())},
                "partitions": {str(p): {"watermark": self.watermarks[p], "totals": totals}
                               for p, totals in sorted(self.partitions.items())}}


def summarize(views: Mapping[int, CustomerView], horizon: str, max_labels: int) -> CustomerSummary:
    totals = dict.fromkeys(SERIES, 0)
    by_category: dict[str, list[int]] = {}
    for view in views.values():
        for series, count in view.totals.items():
            totals[series] += count
        for index, series in enumerate(SERIES):
            for category, count in view.by_first_category[series].items():
                by_category.setdefault(category, [0] * len(SERIES))[index] += count
    bounded = _bounded(by_category, max_labels)
    return CustomerSummary(
        horizon, {p: v.watermark for p, v in views.items()}, {p: dict(v.totals) for p, v in views.items()}, totals,
        {category: dict(zip(SERIES, counts, strict=True)) for category, counts in bounded.items()})


def _bounded(counts: dict[str, list[int]], limit: int) -> dict[str, list[int]]:
    """The ``limit`` first categories with most customers (ties by name), the rest summed into "other"."""
    if len(counts) <= limit:
        return counts
    kept = set(heapq.nsmallest(limit, counts, key=lambda c: (-counts[c][0], c))) - {OTHER}
    bounded = {category: counts[category] for category in kept}
    rest = bounded[OTHER] = [0] * len(SERIES)
    for category, values in counts.items():
        if category not in kept:
            for i, value in enumerate(values):
                rest[i] += value
    return bounded
