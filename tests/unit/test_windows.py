"""streams.orders.windows: window assignment, lateness, folding orders, rolling views and bounded labels."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.ops.traffic import OrderMaker
from streams.orders.contract import Order, decode_order
from streams.orders.facts import OrderFacts, order_facts
from streams.orders.windows import (
    OTHER,
    PAIR_SEPARATOR,
    ViewResult,
    WindowTotals,
    agg,
    bounded_labels,
    initialize,
    is_late,
    merge,
    result,
    top_pairs,
    window_start,
)

UNCAPPED = 1_000


def facts(
    primary: str,
    categories: tuple[str, ...] = (),
    *,
    items: int = 1,
    revenue: float = 10.0,
    cross_sell_revenue: float = 0.0,
    channel: str = "web",
    variant: str = "control",
    attributed_items: int = 0,
) -> OrderFacts:
    """Facts of one order; cross-sell when ``categories`` holds more than the primary category."""
    distinct = tuple(sorted({primary, *categories}))
    return OrderFacts(
        order_id=f"o-{primary}-{revenue}",
        event_time=0.0,
        primary_category=primary,
        cross_sell=len(distinct) > 1,
        items=items,
        revenue=revenue,
        cross_sell_revenue=cross_sell_revenue,
        categories=distinct,
        products=("p-1",),
        channel=channel,
        variant=variant,
        attributed_items=attributed_items,
    )


def fold(orders: list[OrderFacts], max_tracked: int = UNCAPPED) -> WindowTotals:
    totals = initialize()
    for order in orders:
        totals = agg(totals, order, max_tracked)
    return totals


def pair(a: str, b: str) -> str:
    return a + PAIR_SEPARATOR + b


# --- window assignment and lateness --------------------------------------------


@pytest.mark.parametrize(
    ("event_time", "size", "expected"),
    [
        (0.0, 60.0, 0.0),
        (59.999, 60.0, 0.0),
        (60.0, 60.0, 60.0),
        (125.5, 60.0, 120.0),
        (1_800_000_030.25, 60.0, 1_800_000_000.0),
        (3599.0, 3600.0, 0.0),
        (-0.5, 60.0, -60.0),
        (7.4, 1.5, 6.0),
    ],
)
def test_window_start_is_the_start_of_the_tumbling_window_holding_the_event(
    event_time: float, size: float, expected: float
) -> None:
    assert window_start(event_time, size) == expected


# Window [0, 60) with grace 120 closes when the watermark reaches 180.
@pytest.mark.parametrize(
    ("event_time", "watermark", "grace", "expected"),
    [
        (30.0, 0.0, 120.0, False),
        (30.0, 179.999, 120.0, False),
        (30.0, 180.0, 120.0, True),
        (0.0, 180.0, 120.0, True),
        (59.999, 180.0, 120.0, True),
        (60.0, 180.0, 120.0, False),  # next window, open until 240
        (60.0, 240.0, 120.0, True),
        (30.0, 1e9, 120.0, True),
        (500.0, 100.0, 120.0, False),  # ahead of the watermark
        (30.0, 59.999, 0.0, False),
        (30.0, 60.0, 0.0, True),
    ],
)
def test_an_event_is_late_once_the_watermark_reaches_its_window_end_plus_grace(
    event_time: float, watermark: float, grace: float, expected: bool
) -> None:
    assert is_late(event_time, watermark, 60.0, grace) is expected


# --- folding orders -----------------------------------------------------------------

# Four orders, figured by hand below.
ORDERS = [
    facts("books", ("toys",), items=3, revenue=30.0, cross_sell_revenue=10.0, attributed_items=1),
    facts("books", items=1, revenue=20.0, channel="app"),
    facts(
        "toys",
        ("books", "garden"),
        items=4,
        revenue=50.0,
        cross_sell_revenue=15.0,
        variant="treatment",
        attributed_items=2,
    ),
    facts("garden", items=2, revenue=10.0, variant="treatment"),
]


def test_agg_counts_orders_items_revenue_and_cross_sell() -> None:
    totals = fold(ORDERS)
    assert (totals.orders, totals.cross_sell_orders, totals.items, totals.attributed_items) == (4, 2, 10, 3)
    assert (totals.revenue, totals.cross_sell_revenue, totals.cross_sell_order_revenue) == (110.0, 25.0, 80.0)


def test_agg_counts_orders_and_cross_sell_orders_per_primary_category_channel_and_variant() -> None:
    totals = fold(ORDERS)
    assert totals.by_category == {"books": [2, 1], "toys": [1, 1], "garden": [1, 0]}
    assert totals.by_channel == {"web": [3, 2], "app": [1, 0]}
    assert totals.by_variant == {"control": [2, 1], "treatment": [2, 1]}


def test_agg_counts_orders_per_pair_of_categories() -> None:
    assert fold(ORDERS).category_pairs == {
        pair("books", "toys"): 2,
        pair("books", "garden"): 1,
        pair("garden", "toys"): 1,
    }


def test_result_derives_rates_and_averages() -> None:
    assert result(fold(ORDERS)) == ViewResult(
        orders=4,
        cross_sell_orders=2,
        rate=2 / 4,
        items_per_order=10 / 4,
        revenue=110.0,
        cross_sell_revenue=25.0,
        cross_sell_revenue_share=25 / 110,
        average_order_value_with_cross_sell=(30 + 50) / 2,
        average_order_value_without_cross_sell=(20 + 10) / 2,
    )


def test_result_of_an_empty_window_is_all_zero() -> None:
    assert result(initialize()) == ViewResult(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_result_without_plain_orders_has_zero_plain_order_value() -> None:
    view = result(fold([ORDERS[0], ORDERS[2]]))
    assert (view.rate, view.average_order_value_without_cross_sell) == (1.0, 0.0)


def test_agg_puts_new_labels_beyond_max_tracked_into_other() -> None:
    orders = [facts("a"), facts("b"), facts("c"), facts("d", ("e",)), facts("a")]
    assert fold(orders, max_tracked=2).by_category == {"a": [2, 0], "b": [1, 0], OTHER: [2, 1]}


def test_agg_keeps_counting_tracked_labels_once_the_cap_is_reached() -> None:
    orders = [facts("a"), facts("b"), facts("c"), facts("b", ("z",))]
    assert fold(orders, max_tracked=2).by_category["b"] == [2, 1]


def test_agg_stops_adding_category_pairs_at_max_tracked_but_counts_tracked_ones() -> None:
    orders = [facts("a", ("b",)), facts("a", ("c",)), facts("b", ("a",))]
    assert fold(orders, max_tracked=1).category_pairs == {pair("a", "b"): 2}


def test_window_totals_survive_the_json_round_trip_of_the_changelog() -> None:
    totals = fold(ORDERS)
    assert WindowTotals.from_dict(orjson.loads(orjson.dumps(totals.to_dict()))) == totals


# --- rolling views ------------------------------------------------------------------


@pytest.mark.parametrize(
    "split",
    [[[0, 1, 2, 3]], [[0, 1], [2, 3]], [[0], [1], [2], [3]], [[], [3, 1], [], [0, 2]]],
)
def test_merge_of_windows_equals_folding_every_order_into_one_window(split: list[list[int]]) -> None:
    windows = [fold([ORDERS[i] for i in part]) for part in split]
    assert merge(windows) == fold(ORDERS)


def test_merge_of_no_windows_is_an_empty_view() -> None:
    assert merge([]) == initialize()


def test_merge_leaves_its_windows_unchanged() -> None:
    windows = [fold(ORDERS[:2]), fold(ORDERS[2:])]
    before = orjson.dumps([window.to_dict() for window in windows])
    merge(windows)
    assert orjson.dumps([window.to_dict() for window in windows]) == before


def _generated_facts(seed: int, count: int) -> list[OrderFacts]:
    maker = OrderMaker(random.Random(seed))
    decoded = [decode_order(orjson.dumps(maker.order(1_800_000_000.0 + n))) for n in range(count)]
    assert all(isinstance(order, Order) for order in decoded)
    return [order_facts(order) for order in decoded if isinstance(order, Order)]


def _comparable(totals: WindowTotals) -> dict[str, Any]:
    data = totals.to_dict()
    for name in ("revenue", "cross_sell_revenue", "cross_sell_order_revenue"):
        data[name] = pytest.approx(data[name], rel=1e-9)
    for name in ("variant_sums", "by_touchpoint"):
        data[name] = {label: pytest.approx(figures, rel=1e-9) for label, figures in data[name].items()}
    return data


@pytest.mark.parametrize("seed", range(5))
def test_merge_of_randomly_split_generated_orders_equals_one_fold(seed: int) -> None:
    orders = _generated_facts(seed, 200)
    rng = random.Random(seed)
    parts: list[list[OrderFacts]] = [[] for _ in range(rng.randint(1, 12))]
    for order in orders:
        rng.choice(parts).append(order)
    assert merge(fold(part) for part in parts).to_dict() == _comparable(fold(orders))


# --- bounded labels and top pairs -------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "limit", "expected"),
    [
        ({"a": [1, 0], "b": [2, 1]}, 2, {"a": [1, 0], "b": [2, 1]}),
        ({"a": [5, 1], "b": [3, 2], "c": [1, 0], "d": [1, 1]}, 2, {"a": [5, 1], "b": [3, 2], OTHER: [2, 1]}),
        ({"b": [2, 0], "a": [2, 0], "c": [2, 1]}, 2, {"a": [2, 0], "b": [2, 0], OTHER: [2, 1]}),  # ties by name
        ({"a": [5, 0], OTHER: [4, 1], "b": [3, 1], "c": [1, 0]}, 2, {"a": [5, 0], OTHER: [8, 2]}),
        ({"a": [5, 0], "b": [4, 1], OTHER: [1, 1], "c": [1, 0]}, 2, {"a": [5, 0], "b": [4, 1], OTHER: [2, 1]}),
        ({"a": [5, 0], "b": [4, 1]}, 0, {OTHER: [9, 1]}),
    ],
)
def test_bounded_labels_keeps_the_top_labels_by_orders_and_sums_the_rest_into_other(
    counts: dict[str, list[int]], limit: int, expected: dict[str, list[int]]
) -> None:
    assert bounded_labels(counts, limit) == expected


def test_bounded_labels_leaves_its_input_unchanged() -> None:
    counts = {"a": [5, 1], OTHER: [1, 1], "b": [3, 2], "c": [1, 0]}
    before = {label: list(entry) for label, entry in counts.items()}
    bounded_labels(counts, 1)
    assert counts == before


_label_counts = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e", "f", OTHER]),
    st.integers(0, 50).flatmap(lambda orders: st.tuples(st.just(orders), st.integers(0, orders)).map(list)),
)


@given(_label_counts, st.integers(0, 8))
def test_bounded_labels_preserves_totals_and_keeps_the_largest_labels(counts: dict[str, list[int]], limit: int) -> None:
    bounded = bounded_labels(counts, limit)
    assert [sum(e[0] for e in bounded.values()), sum(e[1] for e in bounded.values())] == [
        sum(e[0] for e in counts.values()),
        sum(e[1] for e in counts.values()),
    ]
    named = {label for label in bounded if label != OTHER}
    assert len(named) <= limit
    folded = [counts[label][0] for label in counts if label not in named and label != OTHER]
    assert all(counts[label][0] >= max(folded, default=0) for label in named)


TOP_PAIRS_INPUT = {pair("a", "b"): 3, pair("a", "c"): 5, pair("b", "c"): 3, pair("c", "d"): 1}


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (0, []),
        (1, [("a", "c", 5)]),
        (3, [("a", "c", 5), ("a", "b", 3), ("b", "c", 3)]),
        (10, [("a", "c", 5), ("a", "b", 3), ("b", "c", 3), ("c", "d", 1)]),
    ],
)
def test_top_pairs_orders_by_count_then_names(limit: int, expected: list[tuple[str, str, int]]) -> None:
    assert top_pairs(TOP_PAIRS_INPUT, limit) == expected


def test_top_pairs_ties_compare_the_first_category_before_the_second() -> None:
    # "a" < "ab" as names, although "a<US>z" and "ab<US>c" differ at the second character.
    assert top_pairs({pair("ab", "c"): 2, pair("a", "z"): 2}, 2) == [("a", "z", 2), ("ab", "c", 2)]
