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


def test_an_order_bridging_a_gap_joins_the_episodes_in_whatever_order_the_orders_came():
    # 0 and 40 days are more than the 30-day horizon apart; the order at day 20 bridges the gap
    orders = [(0.0, "tv", ("tv",)), (40 * DAY, "bags", ("bags",)), (20 * DAY, "pens", ("pens",))]
    states = [fold(list(p)) for p in itertools.permutations(orders)]
    state = states[0]
    assert all(s == state for s in states)
    assert (state.orders, state.first_at, state.first_primary, state.earlier) == (3, 0.0, "tv", ())
    # without the bridge only the newest episode counts, and the older one is kept for a late bridge
    gapped = fold(orders[:2])
    assert (gapped.orders, gapped.first_primary) == (1, "bags")
    assert [e.first_primary for e in gapped.earlier] == ["tv"]
    assert set(contributions(gapped, 3600.0)) == {("customers", 40 * DAY, "bags"), ("single_first", 40 * DAY, "bags")}


@pytest.mark.parametrize(("floor", "kept"), [
    (None, ["tv"]),
    # the episode's last order (day 0) is exactly a horizon before the floor: an order at the floor still bridges
    (H, ["tv"]),
    # more than a horizon before the floor: no order the ledger accepts can bridge it any more
    (H + 1.0, []),
])
def test_an_older_episode_is_dropped_once_no_order_can_bridge_it(floor, kept):
    state = merge(fold([(0.0, "tv", ("tv",))]), order_state(40 * DAY, "bags", ("bags",)), H, 8, floor)
    assert [e.first_primary for e in state.earlier] == kept
    assert state.first_primary == "bags"


def test_episodes_round_trip_through_json_and_old_values_read_without_them():
    state = fold([(0.0, "tv", ("cables", "tv")), (40 * DAY, "pens", ("pens",)), (41 * DAY, "tv", ("tv",))])
    assert len(state.earlier) == 1
    assert type(state).from_json(state.to_json()) == state
    # a value written before episodes were kept: seven items
    newest = state._replace(earlier=())
    assert len(newest.to_json()) == 7
    assert type(state).from_json(newest.to_json()) == newest
