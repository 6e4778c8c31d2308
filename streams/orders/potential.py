"""Potential: which primary products bring the most orders, and how often those orders cross-sell.

A window counts orders per primary product in a Space-Saving summary
(streams/pairs/sketch.py) of a fixed capacity, so memory does not grow with the
catalogue, and beside it the cross-sell orders of each monitored product since
it was last taken in. In Space-Saving a monitored product's guaranteed count
(estimate - error) is exactly the orders it had since it was taken in, so the
cross-sell rate over those orders is exact: a rate over a known subset of the
product's orders, never a mix of estimates.

Crash safety: tests/integration/test_crash_recovery.py (a worker SIGKILLed at
random points) runs with a capacity of 32 and compares the top products with an
offline replay. It once found a mismatch in one of six runs (19 cross-sell
orders against 6 for one product); a flush that could store a window's nested
totals ahead of its recorded offset was fixed since (tests/agents reproduce
it), and six runs after it agreed. On by default (CROSSSELL_POTENTIAL_CAPACITY=32):
about 2.5 us of CPU per event (python -m bench.hotpath --potential-capacity 0,32)
and about 5.5 kB per window and partition.

**Opportunities.** Each listed product's best companion is the companion with
the highest lift in its published "frequently bought together" list (the
lists every worker reads for the hit rate, streams/orders/hit_rate.py: top-k by
count above the minimum support, so a rare pair's chance lift does not win).
An opportunity is a top primary product whose best companion is bought with it
more often than chance (lift > 1), ranked by

    score = (orders - cross-sell orders) * confidence(best companion)

the orders of the product that had no cross-sell item, times the share of the
product's orders in which the companion is bought with it: the companion
orders to gain if every plain order took it up at the rate buyers already do.
It grows with volume, with a low cross-sell rate and with a strong companion.

A rolling view adds the windows: guaranteed orders and cross-sell orders add up;
the upper bound of a product's orders adds its estimate where a window monitors
it and the window's floor where it does not.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.orders.hit_rate import BestCompanion
from streams.pairs.sketch import SpaceSaving


class PrimaryProducts:
    """Orders per primary product (Space-Saving) and cross-sell orders of the monitored ones."""

    __slots__ = ("cross_sell", "orders")

    def __init__(self, capacity: int) -> None:
        self.orders = SpaceSaving(capacity)
        self.cross_sell: dict[str, int] = {}  # since the product was last taken into `orders`

    def add(self, product: str, cross_sell: bool) -> None:
        orders = self.orders
        if product not in orders:
            # Taken in (again): its cross-sell orders count from now, as its guaranteed orders do.
            self.cross_sell.pop(product, None)
        orders.add(product)
        if cross_sell:
            self.cross_sell[product] = self.cross_sell.get(product, 0) + 1
            if len(self.cross_sell) > 2 * len(orders):
                self.cross_sell = self._monitored_cross_sell()

    def _monitored_cross_sell(self) -> dict[str, int]:
        orders = self.orders
        return {product: count for product, count in self.cross_sell.items() if product in orders}

    def rows(self) -> Iterable[tuple[str, int, int, int]]:
        """(product, guaranteed orders, cross-sell orders among them, estimated orders) of each monitored product."""
        cross_sell = self.cross_sell
        for product, estimate, error in self.orders.entries():
            yield product, estimate - error, cross_sell.get(product, 0), estimate

    def to_dict(self) -> dict[str, Any]:
        return {"orders": self.orders.to_dict(), "cross_sell": self._monitored_cross_sell()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrimaryProducts:
        products = cls.__new__(cls)
        products.orders = SpaceSaving.from_dict(data["orders"])
        products.cross_sell = dict(data["cross_sell"])
        return products

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrimaryProducts):
            return NotImplemented
        return self.orders == other.orders and self._monitored_cross_sell() == other._monitored_cross_sell()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"PrimaryProducts({self.orders!r})"


@dataclass(frozen=True, slots=True)
class ProductPotential:
    """One primary product over a rolling view."""

    product: str
    orders: int  # guaranteed: never above the true count
    orders_upper_bound: int  # never below the true count
    cross_sell_orders: int  # among the guaranteed orders
    cross_sell_rate: float  # cross_sell_orders / orders
    exact: bool  # orders == the true count

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class ProductSums:
    """Per primary product over some windows: [guaranteed orders, cross-sell orders, estimate where monitored,
    floors of the windows that monitor it]; and the floors of all the windows."""

    __slots__ = ("floors", "products")

    def __init__(self, windows: Iterable[PrimaryProducts | None] = ()) -> None:
        self.products: dict[str, list[int]] = {}
        self.floors = 0
        for window in windows:
            if window is not None:
                self.add(window)

    def add(self, window: PrimaryProducts) -> None:
        products = self.products
        floor = window.orders.floor
        self.floors += floor
        for product, orders, cross_sell, estimate in window.rows():
            entry = products.get(product)
            if entry is None:
                products[product] = [orders, cross_sell, estimate, floor]
            else:
                entry[0] += orders
                entry[1] += cross_sell
                entry[2] += estimate
                entry[3] += floor

    def best(self, limit: int) -> list[tuple[str, list[int]]]:
        """The ``limit`` products with most guaranteed orders (ties by id)."""
        return heapq.nsmallest(limit, self.products.items(), key=_by_orders)


def _by_orders(kv: tuple[str, list[int]]) -> tuple[int, str]:
    return -kv[1][0], kv[0]


def top_primary_products(windows: Iterable[PrimaryProducts | None], limit: int) -> list[ProductPotential]:
    """The ``limit`` primary products with most guaranteed orders over ``windows`` (ties by id)."""
    sums = ProductSums(windows)
    return potential_rows(sums.best(limit), sums.floors)


def top_primary_products_of_both(older: ProductSums, older_best: Iterable[str], newer: ProductSums,
                                 limit: int) -> list[ProductPotential]:
    """:func:`top_primary_products` over the windows of ``older`` and ``newer`` together, given the ids of
    ``older.best(limit)``: the same rows, combining only those products and ``newer``'s.

    Exact because a product's guaranteed orders over both are at least its orders over ``older``: one
    that ``newer`` does not monitor has its ``older`` orders, and if ``limit`` products rank above it in
    ``older`` they rank above it over both. Each candidate's sums and the floors are then the whole ones.
    """
    old, new = older.products, newer.products
    orders = {product: old[product][0] for product in older_best}
    for product, added in new.items():
        was = old.get(product)
        orders[product] = added[0] if was is None else was[0] + added[0]
    best = heapq.nsmallest(limit, orders.items(), key=_by_orders_alone)
    absent = [0, 0, 0, 0]  # a product one side does not monitor adds nothing there
    sums = [(product, [a + b for a, b in zip(old.get(product, absent), new.get(product, absent), strict=True)])
            for product, _ in best]
    return potential_rows(sums, older.floors + newer.floors)


def _by_orders_alone(kv: tuple[str, int]) -> tuple[int, str]:
    return -kv[1], kv[0]


def potential_rows(best: Iterable[tuple[str, list[int]]], floors: int) -> list[ProductPotential]:
    rows = []
    for product, (orders, cross_sell, estimate, monitored_floor) in best:
        # Windows that do not monitor the product may have dropped up to their floor of its orders.
        upper = estimate + floors - monitored_floor
        rows.append(ProductPotential(product, orders, upper, cross_sell, cross_sell / orders if orders else 0.0,
                                     upper == orders))
    return rows


@dataclass(frozen=True, slots=True)
class Opportunity:
    """A high-volume primary product with a strong companion and orders that did not cross-sell."""

    product: str
    orders: int
    cross_sell_rate: float
    companion: str
    lift: float
    confidence: float
    score: float  # (orders - cross-sell orders) * confidence

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def opportunities(rows: Iterable[ProductPotential], companions: Mapping[str, BestCompanion],
                  limit: int) -> list[Opportunity]:
    """The ``limit`` rows with a best companion of lift > 1, by score (ties by product id)."""
    found = []
    for row in rows:
        best = companions.get(row.product)
        if best is None or best.lift <= 1.0:
            continue
        score = (row.orders - row.cross_sell_orders) * best.confidence
        found.append(Opportunity(row.product, row.orders, row.cross_sell_rate, best.product, best.lift,
                                 best.confidence, score))
    found.sort(key=lambda o: (-o.score, o.product))
    return found[:limit]
