"""Attribution: what each recommendation touchpoint sold, from the order lines to /metrics and the JSON."""

from __future__ import annotations

import pytest
from orders import checked_order
from prometheus_client import CollectorRegistry

from streams.orders.config import window_config
from streams.orders.contract import Item
from streams.orders.facts import Attribution, order_facts
from streams.orders.ledger import PartitionLedger
from streams.orders.snapshot import take_snapshot
from streams.orders.windows import OTHER, WindowTotals, agg, initialize, merge
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings

TV = Item("tv", "electronics", 400.0, 1)
CABLE_PDP = Item("cable", "cables", 10.0, 2, "pdp")
CASE_CART = Item("case", "electronics", 30.0, 1, "cart")  # the primary's own category: not cross-sell
BOOK_PDP = Item("book", "books", 12.5, 1, "pdp")
MUG_EMAIL = Item("mug", "kitchen", 8.0, 3, "email")


def test_each_attributed_line_becomes_an_attribution_saying_whether_it_is_cross_sell() -> None:
    facts = order_facts(checked_order(TV, CABLE_PDP, CASE_CART, BOOK_PDP))
    assert facts.attributions == (Attribution("pdp", 2, 20.0, True), Attribution("cart", 1, 30.0, False),
                                  Attribution("pdp", 1, 12.5, True))
    assert order_facts(checked_order(TV)).attributions == ()
    single = order_facts(checked_order(Item("tv", "electronics", 400.0, 2, "email")))
    assert single.attributions == (Attribution("email", 2, 800.0, False),)


def fold(*orders: tuple[Item, ...], max_tracked: int = 100) -> WindowTotals:
    totals = initialize()
    for n, lines in enumerate(orders):
        agg(totals, order_facts(checked_order(*lines, order_id=f"o-{n}")), max_tracked)
    return totals


def test_a_window_counts_lines_units_revenue_and_cross_sell_orders_per_touchpoint() -> None:
    totals = fold((TV, CABLE_PDP, CASE_CART, BOOK_PDP), (TV, CASE_CART), (TV, MUG_EMAIL), (TV,))
    assert totals.by_touchpoint == {
        "pdp": [2, 3, 32.5, 32.5, 1],  # two lines of one order: that order once
        "cart": [2, 2, 60.0, 0.0, 0],
        "email": [1, 3, 24.0, 24.0, 1],
    }
    assert totals.attributed_cross_sell_orders == 2  # orders 0 and 2; order 1 sold only upsell through "cart"


def test_touchpoints_beyond_the_tracked_labels_go_to_other() -> None:
    totals = fold((TV, CABLE_PDP), (TV, CASE_CART), (TV, MUG_EMAIL), max_tracked=2)
    assert set(totals.by_touchpoint) == {"pdp", "cart", OTHER}
    assert totals.by_touchpoint[OTHER] == [1, 3, 24.0, 24.0, 1]


def test_merged_views_add_touchpoints_and_attributed_orders_and_old_windows_load_without_them() -> None:
    one, two = fold((TV, CABLE_PDP)), fold((TV, BOOK_PDP), (TV, MUG_EMAIL))
    view = merge([one, two])
    assert view.by_touchpoint == {"pdp": [2, 3, 32.5, 32.5, 2], "email": [1, 3, 24.0, 24.0, 1]}
    assert view.attributed_cross_sell_orders == 3
    old = one.to_dict()
    del old["by_touchpoint"], old["attributed_cross_sell_orders"]
    loaded = WindowTotals.from_dict(old)
    assert (loaded.by_touchpoint, loaded.attributed_cross_sell_orders, loaded.orders) == ({}, 0, 1)


SETTINGS = Settings(rolling_views=(300.0,), retention_seconds=3600.0, max_label_values=1, pair_horizons=())
T0 = 1_800_000_000.0


def snapshot_ledgers() -> list[PartitionLedger]:
    ledger = PartitionLedger(0, window_config(SETTINGS))
    for n, lines in enumerate([(TV, CABLE_PDP, BOOK_PDP), (TV, CASE_CART), (TV, MUG_EMAIL), (TV, Item(
            "hdmi", "cables", 5.0, 1))]):
        ledger.apply(n, checked_order(*lines, order_id=f"o-{n}", occurred_at=T0 + n), T0 + n)
    return [ledger]


def test_metrics_export_each_touchpoints_figures_bounded_and_the_attributed_orders() -> None:
    registry = CollectorRegistry()
    registry.register(CrossSellCollector(lambda: take_snapshot(snapshot_ledgers(), SETTINGS, {}), SETTINGS))
    value = registry.get_sample_value
    # One label value (the touchpoint with most lines: pdp), the rest in other.
    assert value("crosssell_attributed_lines", {"window": "5m", "touchpoint": "pdp"}) == 2
    assert value("crosssell_attributed_cross_sell_revenue", {"window": "5m", "touchpoint": "pdp"}) == 32.5
    assert value("crosssell_attributed_cross_sell_orders", {"window": "5m", "touchpoint": "pdp"}) == 1
    assert value("crosssell_attributed_revenue", {"window": "5m", "touchpoint": OTHER}) == 30.0 + 24.0
    assert value("crosssell_attributed_cross_sell_orders", {"window": "5m", "touchpoint": OTHER}) == 1
    assert value("crosssell_window_attributed_cross_sell_orders", {"window": "5m"}) == 2


def test_the_json_gives_each_touchpoints_share_of_cross_sell_revenue() -> None:
    view = take_snapshot(snapshot_ledgers(), SETTINGS, {}).attribution_json(SETTINGS)["5m"]
    cross_sell_revenue = 20.0 + 12.5 + 24.0 + 5.0
    assert view["cross_sell_orders"] == 3 and view["attributed_cross_sell_orders"] == 2
    assert view["share_of_cross_sell_orders"] == pytest.approx(2 / 3)
    assert view["attributed_cross_sell_revenue"] == pytest.approx(32.5 + 24.0)
    assert view["share_of_cross_sell_revenue"] == pytest.approx((32.5 + 24.0) / cross_sell_revenue)
    assert list(view["touchpoints"]) == [OTHER, "pdp"]  # by revenue
    assert view["touchpoints"]["pdp"] == {"lines": 2, "units": 3, "revenue": 32.5, "cross_sell_revenue": 32.5,
                                          "cross_sell_orders": 1,
                                          "share_of_cross_sell_revenue": pytest.approx(32.5 / cross_sell_revenue)}
