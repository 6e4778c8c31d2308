"""The chaos run's offline truth (bench/truth.py) on a hand-made partition, against hand-computed numbers."""

from __future__ import annotations

import orjson
import pytest

from bench.hostile import VALID, YEAR_1970, YEAR_2099, rfc3339
from bench.truth import Declared, Record, Truth, differences, expected_samples, replay
from streams.settings import Settings

T0 = 1_800_000_030.0  # 30 s into a minute
SETTINGS = Settings()


def order(order_id: str, t: float, *lines: tuple[str, str, float, int]) -> bytes:
    return orjson.dumps({
        "order_id": order_id, "customer_id": "c", "occurred_at": rfc3339(t), "currency": "EUR", "channel": "app",
        "items": [{"product_id": p, "category": c, "unit_price": price, "quantity": q} for p, c, price, q in lines]})


EVENTS: list[tuple[bytes | None, float]] = [  # (value, record timestamp)
    (order("A", T0, ("tv", "electronics", 100.0, 1), ("book", "books", 10.0, 2)), T0),  # applied, cross-sell
    (order("A", T0, ("tv", "electronics", 100.0, 1)), T0),  # the same id: duplicate
    (order("B", T0 - 900, ("tv", "electronics", 100.0, 1)), T0),  # its window closed: late
    (order("C", YEAR_2099, ("tv", "electronics", 100.0, 1)), YEAR_2099),  # record agrees, clock does not: future
    (order("D", YEAR_1970, ("tv", "electronics", 100.0, 1)), T0),  # behind the retention
    (b"{not json", T0),
    # Equal line values: the primary is the smaller product_id ("a", in "y"), so "b" in "x" is cross-sell.
    (order("E", T0 + 1, ("b", "x", 10.0, 1), ("a", "y", 5.0, 2)), T0 + 1),
]


def truth(declared: dict[tuple[int, int], Declared] | None = None) -> Truth:
    records = [Record(0, offset, b"k", value, (), ts) for offset, (value, ts) in enumerate(EVENTS)]
    return replay({0: records}, declared or {}, SETTINGS, now=T0 + 10)


def test_each_event_gets_its_verdict_and_the_applied_ones_their_figures() -> None:
    state = truth().partitions[0]
    assert (state.events, state.orders, state.cross_sell_orders, state.items) == (7, 2, 2, 6)
    assert (state.revenue, state.cross_sell_revenue) == (140.0, 30.0)
    assert (state.late, state.duplicates) == (1, 1)
    assert state.rejected == {3: "future_event_time", 4: "before_retention", 5: "not_json"}
    assert state.watermark == T0 + 1


def test_a_worker_exports_the_rolling_views_of_the_partitions_it_owns() -> None:
    samples = expected_samples([truth().partitions[0]], SETTINGS)
    five = (("window", "5m"),)
    assert samples[("crosssell_window_orders", five)] == 2
    assert samples[("crosssell_window_cross_sell_order_revenue", five)] == 140.0
    assert samples[("crosssell_rate_ratio", five)] == 1.0
    assert samples[("crosssell_window_orders_by_primary_category", (("category", "electronics"), *five))] == 1
    assert samples[("crosssell_window_orders_by_primary_category", (("category", "y"), *five))] == 1
    assert samples[("crosssell_window_orders_by_variant", (("variant", "none"), *five))] == 2
    assert samples[("crosssell_category_pair_orders", (("category_a", "books"), ("category_b", "electronics"),
                                                       *five))] == 1
    assert samples[("crosssell_events_invalid_total", (("partition", "0"), ("reason", "not_json")))] == 1
    assert samples[("crosssell_orders_total", (("partition", "0"),))] == 2
    assert samples[("crosssell_event_time_watermark_seconds", ())] == T0 + 1
    assert expected_samples([], SETTINGS)[("crosssell_window_orders", five)] == 0


def test_a_declared_verdict_the_contract_does_not_give_is_reported_and_a_declared_rejection_wins() -> None:
    found = truth({(0, 5): Declared("garbage declared valid", VALID),
                   (0, 6): Declared("an order declared too expensive", "price_too_large")})
    assert len(found.corpus_disagreements) == 2
    state = found.partitions[0]
    assert state.rejected[5] == "not_json"  # no order to count: as decoded
    assert state.rejected[6] == "price_too_large" and state.orders == 1


@pytest.mark.parametrize(("worker", "wanted", "differs"), [
    (120.00000000001, 120.0, False),  # sums of prices in another order
    (121.0, 120.0, True),
])
def test_revenue_is_compared_within_rounding_and_counts_exactly(worker: float, wanted: float, differs: bool) -> None:
    key = ("crosssell_revenue_total", ())
    assert bool(differences({key: worker}, {key: wanted})) is differs
    assert differences({("crosssell_orders_total", ()): 3.0}, {("crosssell_orders_total", ()): 4.0})
