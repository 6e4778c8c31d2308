"""Fold order facts into event-time tumbling windows, and windows into views.

An aggregation here is three small steps, as in Quix Streams: ``initialize``
(an empty :class:`WindowTotals`), ``agg`` (fold one order in) and ``result``
(the figures a person reads). Windows are merged into rolling views (5m, 1h,
24h by default) with :func:`merge`. Nothing here knows about Kafka or storage;
``to_dict``/``from_dict`` give the JSON form the changelog stores.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from itertools import combinations
from typing import Any, TypeVar

from streams.orders.experiments import add_order, empty_sums
from streams.orders.facts import PAIR_SEPARATOR, Attribution, OrderFacts
from streams.orders.potential import PrimaryProducts

N = TypeVar("N", int, float)

OTHER = "other"


def window_start(event_time: float, size: float) -> float:
    """Start of the tumbling window of ``size`` seconds holding ``event_time``."""
    return (event_time // size) * size


def is_late(event_time: float, watermark: float, size: float, grace: float) -> bool:
    """True when the event's window closed: the watermark passed its end plus grace."""
    return window_closed(window_start(event_time, size), watermark, size, grace)


def window_closed(start: float, watermark: float, size: float, grace: float) -> bool:
    """True when the window starting at ``start`` takes no more events: the lateness rule."""
    return start + size + grace <= watermark


@dataclass(slots=True)
class OrderSums:
    """The sums of applied orders, kept per window and per partition: a new measure is added here only."""

    orders: int = 0
    cross_sell_orders: int = 0
    items: int = 0
    revenue: float = 0.0
    cross_sell_revenue: float = 0.0  # revenue of cross-sell items
    cross_sell_order_revenue: float = 0.0  # whole revenue of cross-sell orders
    attributed_items: int = 0

    def add_order(self, facts: OrderFacts) -> None:
        cross_sell = facts.cross_sell
        self.orders += 1
        self.cross_sell_orders += cross_sell
        self.items += facts.items
        self.revenue += facts.revenue
        self.cross_sell_revenue += facts.cross_sell_revenue
        if cross_sell:
            self.cross_sell_order_revenue += facts.revenue
        self.attributed_items += facts.attributed_items

    def add_sums(self, other: OrderSums) -> None:
        for name in ORDER_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


ORDER_SUMS = tuple(f.name for f in fields(OrderSums))


@dataclass(slots=True)
class WindowTotals(OrderSums):
    """One window (or a merged view): the order sums plus the breakdowns a window keeps."""

    # label -> [orders, cross_sell_orders]
    by_category: dict[str, list[int]] = field(default_factory=dict)
    by_channel: dict[str, list[int]] = field(default_factory=dict)
    by_variant: dict[str, list[int]] = field(default_factory=dict)
    # "a<US>b" (a < b) -> orders containing both categories
    category_pairs: dict[str, int] = field(default_factory=dict)
    # variant -> the six sums of streams.orders.experiments.SUM_NAMES (same labels as by_variant).
    # Absent from windows stored before it existed: they load with no experiment sums.
    variant_sums: dict[str, list[float]] = field(default_factory=dict)
    # Recommendation touchpoint -> the figures of ATTRIBUTION_FIGURES, and the orders with an
    # attributed cross-sell line of any touchpoint. Absent from older windows, like variant_sums.
    by_touchpoint: dict[str, list[float]] = field(default_factory=dict)
    attributed_cross_sell_orders: int = 0
    # variant -> the figures of streams.orders.hit_rate.HIT_FIGURES (orders whose primary product had a
    # published list, hits, promised and best confidence). Absent from older windows, like variant_sums.
    recommendation_hits: dict[str, list[float]] = field(default_factory=dict)
    # Orders per primary product, bounded (streams/orders/potential.py); None in a merged view,
    # in older windows, and when CROSSSELL_POTENTIAL_CAPACITY is 0.
    primary_products: PrimaryProducts | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _PLAIN_FIELDS}
        if self.primary_products is not None:
            data["primary_products"] = self.primary_products.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowTotals:
        totals = cls(**{name: data[name] for name in _PLAIN_FIELDS if name in data})
        if data.get("primary_products") is not None:
            totals.primary_products = PrimaryProducts.from_dict(data["primary_products"])
        return totals


_PLAIN_FIELDS = tuple(f.name for f in fields(WindowTotals) if f.name != "primary_products")
# What a window keeps per recommendation touchpoint, in this order.
ATTRIBUTION_FIGURES = ("lines", "units", "revenue", "cross_sell_revenue", "cross_sell_orders")


def initialize() -> WindowTotals:
    return WindowTotals()


def agg(totals: WindowTotals, facts: OrderFacts, max_tracked: int, products: int = 0,
        hit: tuple[int, int, float, float] | None = None) -> WindowTotals:
    """Fold one order into a window. Label maps hold at most ``max_tracked`` keys, then "other";
    ``products`` primary products are counted (Space-Saving), none when 0; ``hit``: the order's
    figures against its primary product's published list (streams/orders/hit_rate.py), if it had one."""
    totals.add_order(facts)
    if products:
        if totals.primary_products is None:
            totals.primary_products = PrimaryProducts(products)
        totals.primary_products.add(facts.primary_product, facts.cross_sell)
    cross_sell = int(facts.cross_sell)
    # _count_label, inline for a label counted before (nearly every order): three calls fewer per order.
    entry = totals.by_category.get(facts.primary_category)
    if entry is None:
        _count_label(totals.by_category, facts.primary_category, cross_sell, max_tracked)
    else:
        entry[0] += 1
        entry[1] += cross_sell
    entry = totals.by_channel.get(facts.channel)
    if entry is None:
        _count_label(totals.by_channel, facts.channel, cross_sell, max_tracked)
    else:
        entry[0] += 1
        entry[1] += cross_sell
    entry = totals.by_variant.get(facts.variant)
    if entry is None:
        _count_label(totals.by_variant, facts.variant, cross_sell, max_tracked)
    else:
        entry[0] += 1
        entry[1] += cross_sell
    sums = totals.variant_sums
    variant = facts.variant
    if variant not in sums and len(sums) >= max_tracked:
        variant = OTHER
    add_order(sums.get(variant) or sums.setdefault(variant, empty_sums()), facts.cross_sell, facts.revenue,
              facts.items)
    if facts.attributions:
        _count_attributions(totals, facts.attributions, max_tracked)
    if hit is not None:
        hits = totals.recommendation_hits
        figures = hits.get(variant)
        if figures is None:
            hits[variant] = list(hit)
        else:
            for i, value in enumerate(hit):
                figures[i] += value
    categories = facts.categories
    if len(categories) > 1:
        pairs = totals.category_pairs
        for a, b in combinations(categories, 2):
            key = a + PAIR_SEPARATOR + b
            if key in pairs or len(pairs) < max_tracked:
                pairs[key] = pairs.get(key, 0) + 1
    return totals


def _count_attributions(totals: WindowTotals, attributions: tuple[Attribution, ...], max_tracked: int) -> None:
    touchpoints = totals.by_touchpoint
    sold_cross_sell: set[str] = set()
    for touchpoint, units, revenue, cross_sell in attributions:
        if touchpoint not in touchpoints and len(touchpoints) >= max_tracked:
            touchpoint = OTHER
        entry = touchpoints.get(touchpoint)
        if entry is None:
            entry = touchpoints[touchpoint] = [0, 0, 0.0, 0.0, 0]
        entry[0] += 1
        entry[1] += units
        entry[2] += revenue
        if cross_sell:
            entry[3] += revenue
            if touchpoint not in sold_cross_sell:
                sold_cross_sell.add(touchpoint)
                entry[4] += 1
    if sold_cross_sell:
        totals.attributed_cross_sell_orders += 1


def _count_label(counts: dict[str, list[int]], label: str, cross_sell: int, max_tracked: int) -> None:
    entry = counts.get(label)
    if entry is None:
        if len(counts) >= max_tracked:
            label = OTHER
            entry = counts.get(label)
        if entry is None:
            entry = counts[label] = [0, 0]
    entry[0] += 1
    entry[1] += cross_sell


def merge(windows: Iterable[WindowTotals]) -> WindowTotals:
    """One WindowTotals holding the sum of ``windows`` (a rolling view)."""
    view = WindowTotals()
    for window in windows:
        view.add_sums(window)
        for source, target in (
            (window.by_category, view.by_category),
            (window.by_channel, view.by_channel),
            (window.by_variant, view.by_variant),
        ):
            for label, (orders, cross) in source.items():
                entry = target.setdefault(label, [0, 0])
                entry[0] += orders
                entry[1] += cross
        for key, count in window.category_pairs.items():
            view.category_pairs[key] = view.category_pairs.get(key, 0) + count
        _add_figures(view.variant_sums, window.variant_sums)
        _add_figures(view.by_touchpoint, window.by_touchpoint)
        _add_figures(view.recommendation_hits, window.recommendation_hits)
        view.attributed_cross_sell_orders += window.attributed_cross_sell_orders
    return view


def _add_figures(target: dict[str, list[float]], source: dict[str, list[float]]) -> None:
    """Add each label's figures of ``source`` into ``target``, element by element."""
    for label, figures in source.items():
        present = target.get(label)
        target[label] = list(figures) if present is None else [a + b for a, b in zip(present, figures, strict=True)]


@dataclass(frozen=True, slots=True)
class ViewResult:
    """The figures of a window or rolling view, as a person reads them."""

    orders: int
    cross_sell_orders: int
    rate: float
    items_per_order: float
    revenue: float
    cross_sell_revenue: float
    cross_sell_revenue_share: float
    average_order_value_with_cross_sell: float
    average_order_value_without_cross_sell: float


def result(totals: WindowTotals) -> ViewResult:
    plain_orders = totals.orders - totals.cross_sell_orders
    return ViewResult(
        orders=totals.orders,
        cross_sell_orders=totals.cross_sell_orders,
        rate=ratio(totals.cross_sell_orders, totals.orders),
        items_per_order=ratio(totals.items, totals.orders),
        revenue=totals.revenue,
        cross_sell_revenue=totals.cross_sell_revenue,
        cross_sell_revenue_share=ratio(totals.cross_sell_revenue, totals.revenue),
        average_order_value_with_cross_sell=ratio(totals.cross_sell_order_revenue, totals.cross_sell_orders),
        average_order_value_without_cross_sell=ratio(totals.revenue - totals.cross_sell_order_revenue, plain_orders),
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, and 0.0 for an empty denominator (no orders, no rate)."""
    return numerator / denominator if denominator else 0.0


def bounded_labels(counts: dict[str, list[N]], limit: int) -> dict[str, list[N]]:
    """The ``limit`` labels with most orders (the first figure; ties by name), the rest summed into "other"."""
    if len(counts) <= limit:
        return counts
    keep = heapq.nsmallest(limit, counts, key=lambda label: (-counts[label][0], label))
    kept = set(keep) - {OTHER}
    bounded: dict[str, list[N]] = {label: list(counts[label]) for label in kept}
    for label, figures in counts.items():
        if label not in kept:
            rest = bounded.get(OTHER)
            bounded[OTHER] = list(figures) if rest is None else [a + b for a, b in zip(rest, figures, strict=True)]
    return bounded


def top_pairs(pairs: dict[str, int], limit: int) -> list[tuple[str, str, int]]:
    """The ``limit`` most frequent category pairs as (a, b, orders), ties by name."""
    best = heapq.nsmallest(limit, pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(*key.split(PAIR_SEPARATOR, 1), count) for key, count in best]  # type: ignore[misc]
