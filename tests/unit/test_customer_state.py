"""Per-customer state: merging orders, the bound on categories, and where a customer counts."""

from __future__ import annotations

import itertools

import pytest

from streams.customers.state import OTHER, contributions, later_at, merge, order_state

H = 30 * 86400.0
DAY = 86400.0


def fold(orders: list[tuple[float, str, tuple[str, ...]]], max_categories: int = 8):
    state = None
    for at, primary, categories in orders:
        state = merge(state, order_state(at, primary, categories), H, max_categories)
    return state


@pytest.mark.parametrize(("orders", "expected"), [
    # one single-category order: a customer, single-first, nothing else
    ([(0.0, "laptops", ("laptops",))],
     {("customers", 0.0, "laptops"), ("single_first", 0.0, "laptops")}),
    # a laptop on Monday, a bag on Friday: multi-category, repeat, later cross-sell within 7 and 30 days
    ([(0.0, "laptops", ("laptops",)), (4 * DAY, "bags", ("bags",))],
     {("customers", 4 * DAY, "laptops"), ("repeat", 0.0, "laptops"), ("multi", 0.0, "laptops"),
      ("single_first", 0.0, "laptops"), ("later_7d", 0.0, "laptops"), ("later_30d", 0.0, "laptops")}),
    # the other category 10 days later: later within 30 days only
    ([(0.0, "laptops", ("laptops",)), (10 * DAY, "bags", ("bags",))],
     {("customers", 10 * DAY, "laptops"), ("repeat", 0.0, "laptops"), ("multi", 0.0, "laptops"),
      ("single_first", 0.0, "laptops"), ("later_30d", 0.0, "laptops")}),
    # a two-category first order: multi-category, not in the later cross-sell cohort
    ([(0.0, "tv", ("cables", "tv"))],
     {("customers", 0.0, "tv"), ("multi", 0.0, "tv")}),
    # the same category twice: repeat, not multi
    ([(0.0, "tv", ("tv",)), (DAY, "tv", ("tv",))],
     {("customers", DAY, "tv"), ("repeat", 0.0, "tv"), ("single_first", 0.0, "tv")}),
    # after a gap longer than the horizon the customer starts afresh
    ([(0.0, "tv", ("tv",)), (H + 2 * DAY, "bags", ("bags",))],
     {("customers", H + 2 * DAY, "bags"), ("single_first", H + 2 * DAY, "bags")}),
])
def test_contributions_of_a_customer(orders, expected):
    # bucket of one hour: times above are whole days, so each lands at its own start
    assert set(contributions(fold(orders), 3600.0)) == expected


def test_merge_does_not_depend_on_the_order_of_orders():
    orders = [(5.0, "tv", ("tv",)), (1.0, "bags", ("bags", "tv")), (9.0, "pens", ("pens",)), (3.0, "tv", ("tv",))]
    states = {tuple(contributions(fold(list(p)), 1.0)) for p in itertools.permutations(orders)}
    folded = fold(orders)
    assert len(states) == 1
    assert (folded.orders, folded.first_at, folded.first_primary, folded.last_at, folded.second_at) == \
        (4, 1.0, "bags", 9.0, 5.0)


def test_pre_aggregated_halves_merge_to_the_whole():
    orders = [(float(i), f"c{i % 3}", (f"c{i % 3}",)) for i in range(10)]
    whole = fold(orders)
    halves = merge(fold(orders[:4]), fold(orders[4:]), H, 8)
    assert halves == whole


def test_categories_beyond_the_bound_fold_into_other_keeping_the_newest():
    state = fold([(float(i), f"c{i}", (f"c{i}",)) for i in range(6)], max_categories=3)
    # the first order's single category stays, with the newest other one
    assert set(state.categories) == {"c0", "c5", OTHER}
    assert state.categories[OTHER] == (1.0, 4.0)
    assert later_at(state) == 1.0
    assert ("multi", 4.0, "c0") in contributions(state, 1.0)


def test_round_trip_through_json():
    state = fold([(0.0, "tv", ("cables", "tv")), (2.0, "pens", ("pens",))])
    assert type(state).from_json(state.to_json()) == state
