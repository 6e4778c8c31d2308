"""Potential: primary products by orders (Space-Saving per window) with their cross-sell rate, per rolling view."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest
from orders import checked_order
from prometheus_client import CollectorRegistry

from streams.orders.config import window_config
from streams.orders.contract import Item
from streams.orders.facts import order_facts
from streams.orders.hit_rate import BestCompanion, listed
from streams.orders.ledger import PartitionLedger
from streams.orders.potential import (
    PrimaryProducts,
    ProductPotential,
    opportunities,
    top_primary_products,
)
from streams.orders.snapshot import take_snapshot
from streams.orders.windows import WindowTotals, agg, initialize
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings


def stream(seed: int, orders: int, products: int) -> list[tuple[str, bool]]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(products)]
    picked = rng.choices([f"p{n:03d}" for n in range(products)], weights, k=orders)
    return [(product, rng.random() < 0.1 + 0.5 * (int(product[1:]) % 3 == 0)) for product in picked]


def fill(events: list[tuple[str, bool]], capacity: int) -> PrimaryProducts:
    products = PrimaryProducts(capacity)
    for product, cross_sell in events:
        products.add(product, cross_sell)
    return products


def test_while_the_products_fit_every_count_and_rate_is_exact() -> None:
    events = stream(1, 500, 20)
    [*rows] = top_primary_products([fill(events, 20)], limit=20)
    orders, cross = Counter(p for p, _ in events), Counter(p for p, c in events if c)
    assert {row.product: (row.orders, row.cross_sell_orders) for row in rows} == {
        p: (orders[p], cross[p]) for p in orders}
    assert all(row.exact and row.orders_upper_bound == row.orders for row in rows)
    assert rows[0].orders == max(orders.values())


@pytest.mark.parametrize("seed", range(5))
def test_beyond_the_capacity_counts_are_bounded_and_the_rate_is_over_orders_seen_since_taken_in(seed: int) -> None:
    windows = [stream(seed * 10 + w, 400, 200) for w in range(6)]
    summaries = [fill(events, 16) for events in windows]
    orders = Counter(p for events in windows for p, _ in events)
    cross = Counter(p for events in windows for p, c in events if c)
    rows = top_primary_products(summaries, limit=10)
    assert len(rows) == 10
    for row in rows:
        assert row.orders <= orders[row.product] <= row.orders_upper_bound
        assert row.cross_sell_orders <= min(cross[row.product], row.orders)
    # The most ordered product is found and ranked first.
    assert rows[0].product == orders.most_common(1)[0][0]


def test_the_cross_sell_count_of_each_window_covers_exactly_the_orders_since_the_product_was_taken_in() -> None:
    products = PrimaryProducts(2)
    for product, cross_sell in [("a", True), ("b", False), ("c", True), ("a", True), ("a", False), ("a", True)]:
        products.add(product, cross_sell)
    # "c" evicts "a" (count 1, the smaller of the tied): estimate 2, error 1. "a" comes back and evicts "b":
    # estimate 2, error 1, then two more: 4 with error 1, so 3 orders seen since taken in, 2 of them cross-sell
    # (its first order, cross-sell, was before it was evicted and is not among them).
    rows = {product: (orders, cross, estimate) for product, orders, cross, estimate in products.rows()}
    assert rows["a"] == (3, 2, 4)
    assert rows["c"] == (1, 1, 2)


def test_a_product_taken_in_again_starts_its_cross_sell_count_afresh() -> None:
    products = PrimaryProducts(1)
    for product, cross_sell in [("a", True), ("b", False), ("a", False)]:
        products.add(product, cross_sell)
    assert list(products.rows()) == [("a", 1, 0, 3)]


def test_state_round_trips_through_json() -> None:
    products = fill(stream(3, 300, 50), 8)
    restored = PrimaryProducts.from_dict(orjson.loads(orjson.dumps(products.to_dict())))
    assert restored == products
    assert list(restored.rows()) == list(products.rows())


def test_a_window_counts_primary_products_only_when_asked_and_old_windows_load_without_them() -> None:
    tv, book = Item("tv", "electronics", 400.0, 1), Item("book", "books", 12.5, 1)
    counting, plain = initialize(), initialize()
    for n, lines in enumerate([(tv, book), (tv,), (book,)]):
        facts = order_facts(checked_order(*lines, order_id=f"o-{n}"))
        agg(counting, facts, 10, products=4)
        agg(plain, facts, 10)
    assert plain.primary_products is None and "primary_products" not in plain.to_dict()
    assert counting.primary_products is not None
    assert sorted(counting.primary_products.rows()) == [("book", 1, 0, 1), ("tv", 2, 1, 2)]
    assert WindowTotals.from_dict(orjson.loads(orjson.dumps(counting.to_dict()))) == counting
    assert WindowTotals.from_dict(plain.to_dict()).primary_products is None


SETTINGS = Settings(rolling_views=(300.0, 3600.0), retention_seconds=7200.0, max_label_values=2,
                    potential_capacity=8, pair_horizons=())
T0 = 1_800_000_000.0


def test_snapshot_metrics_and_json_list_the_top_primary_products_per_view() -> None:
    ledger = PartitionLedger(0, window_config(SETTINGS))
    tv, lamp, book = Item("tv", "electronics", 400.0, 1), Item("lamp", "lighting", 60.0, 1), \
        Item("book", "books", 12.5, 1)
    baskets = [(tv, book), (tv,), (lamp, book), (tv, book), (lamp,), (book,)]
    times = [T0 - 1200, T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]  # the first only in the hour view
    for n, (lines, t) in enumerate(zip(baskets, times, strict=True)):
        ledger.apply(n, checked_order(*lines, order_id=f"o-{n}", occurred_at=t), t)
    snapshot = take_snapshot([ledger], SETTINGS, {})
    assert snapshot.potential["1h"] == [ProductPotential("tv", 3, 3, 2, 2 / 3, True),
                                        ProductPotential("lamp", 2, 2, 1, 0.5, True)]
    assert [row["product"] for row in snapshot.potential_json()["5m"]] == ["lamp", "tv"]  # 2 each: by id
    registry = CollectorRegistry()
    registry.register(CrossSellCollector(lambda: snapshot, SETTINGS))
    assert registry.get_sample_value("crosssell_primary_product_orders", {"window": "1h", "product": "tv"}) == 3
    assert registry.get_sample_value("crosssell_primary_product_cross_sell_orders",
                                     {"window": "5m", "product": "tv"}) == 1
    assert registry.get_sample_value("crosssell_primary_product_orders", {"window": "1h", "product": "book"}) is None


def test_a_lists_best_companion_is_the_highest_lift_ties_to_confidence_then_id() -> None:
    version = listed(0.0, [("cable", 0.4), ("mount", 0.2), ("bag", 0.3)], {"cable": 1.5, "mount": 3.0, "bag": 3.0})
    assert version.best_by_lift == BestCompanion("bag", 3.0, 0.3)
    assert listed(0.0, [("cable", 0.4)]).best_by_lift is None


def row(product: str, orders: int, cross_sell: int) -> ProductPotential:
    return ProductPotential(product, orders, orders, cross_sell, cross_sell / orders, True)


@pytest.mark.parametrize(("rows", "companions", "expected"), [
    # (orders - cross-sell orders) * confidence: volume, a low rate and a strong companion each raise it.
    ([row("tv", 100, 10), row("pan", 200, 150), row("bike", 50, 0)],
     {"tv": BestCompanion("cable", 2.0, 0.5), "pan": BestCompanion("lid", 4.0, 0.9),
      "bike": BestCompanion("lock", 1.5, 0.8)},
     [("pan", 45.0), ("tv", 45.0), ("bike", 40.0)]),
    # No companion held, or one bought with it no more often than chance (lift <= 1): not an opportunity.
    ([row("tv", 100, 10), row("pan", 200, 0)], {"pan": BestCompanion("lid", 1.0, 0.9)}, []),
])
def test_opportunities_rank_plain_orders_times_the_best_companions_confidence(
        rows: list[ProductPotential], companions: dict[str, BestCompanion], expected: list[tuple[str, float]]) -> None:
    found = opportunities(rows, companions, limit=10)
    assert [(o.product, o.score) for o in found] == [(p, pytest.approx(s)) for p, s in expected]


def test_opportunities_keep_the_limit() -> None:
    rows = [row(f"p{n}", 100 + n, 0) for n in range(5)]
    found = opportunities(rows, {r.product: BestCompanion("x", 2.0, 0.5) for r in rows}, limit=2)
    assert [o.product for o in found] == ["p4", "p3"]
