"""streams.pairs: the basket of one order, its counts per flush, Space-Saving, confidence and lift."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pairs import sketch
from streams.pairs.basket import PairAccumulator, product_basket
from streams.pairs.recommendations import confidence, lift
from streams.pairs.sketch import SpaceSaving

# --- pairs of one order -----------------------------------------------------


@pytest.mark.parametrize(
    ("product_ids", "expected"),
    [
        ([], ()),
        (["p1"], ("p1",)),
        (["p2", "p1", "p2"], ("p1", "p2")),
        (iter(["b", "c", "a"]), ("a", "b", "c")),
    ],
)
def test_product_basket_is_distinct_and_sorted(product_ids: Any, expected: tuple[str, ...]) -> None:
    assert product_basket(product_ids) == expected


@pytest.mark.parametrize("max_basket", [1, 0, -3])
def test_max_basket_below_two_is_rejected(max_basket: int) -> None:
    with pytest.raises(ValueError, match="max_basket must be at least 2"):
        PairAccumulator(max_basket)


# --- association metrics ----------------------------------------------------


@pytest.mark.parametrize(
    ("n_ab", "n_a", "expected"),
    [(0, 4, 0.0), (1, 4, 0.25), (4, 4, 1.0), (2, 0, 0.0)],
)
def test_confidence_is_share_of_orders_with_a_and_zero_without_them(n_ab: int, n_a: int, expected: float) -> None:
    assert confidence(n_ab, n_a) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("n_ab", "n_a", "n_b", "n", "expected"),
    [
        (10, 20, 50, 100, 1.0),  # independent: 0.1 = 0.2 * 0.5
        (10, 10, 10, 100, 10.0),  # always together
        (0, 10, 10, 100, 0.0),  # never together
        (1, 0, 10, 100, 0.0),  # zero n_a
        (1, 10, 0, 100, 0.0),  # zero n_b: unknown, not independent
        (1, 10, 10, 0, 0.0),  # no orders at all
    ],
)
def test_lift_compares_together_with_chance_and_is_zero_on_zero_denominators(
    n_ab: int, n_a: int, n_b: int, n: int, expected: float
) -> None:
    assert lift(n_ab, n_a, n_b, n) == pytest.approx(expected)


# --- SpaceSaving ------------------------------------------------------------


def _summary(capacity: int | None, stream: Sequence[str | tuple[str, int]]) -> SpaceSaving:
    summary = SpaceSaving(capacity)
    for entry in stream:
        if isinstance(entry, str):
            summary.add(entry)
        else:
            summary.add(*entry)
    return summary


@pytest.mark.parametrize(
    ("capacity", "stream", "expected_top"),
    [
        (3, [], []),
        (3, ["a", "b", "a", "c", "a", "b"], [("a", 3), ("b", 2), ("c", 1)]),
        (3, [("a", 5), ("b", 5), "c"], [("a", 5), ("b", 5), ("c", 1)]),
        (3, ["c", "b", "a"], [("a", 1), ("b", 1), ("c", 1)]),  # ties by item
    ],
)
def test_space_saving_is_exact_below_capacity(
    capacity: int, stream: list[str | tuple[str, int]], expected_top: list[tuple[str, int]]
) -> None:
    summary = _summary(capacity, stream)
    assert summary.top(10) == expected_top
    assert summary.is_exact
    assert all(summary.error(item) == 0 for item, _ in expected_top)
    assert summary.estimate("never-seen") == 0


def test_space_saving_new_item_replaces_the_minimum_and_inherits_its_count_as_error() -> None:
    summary = _summary(2, ["a", "a", "b", "c"])
    assert summary.top(2) == [("a", 2), ("c", 2)]
    assert (summary.estimate("c"), summary.error("c"), summary.guaranteed("c")) == (2, 1, 1)
    assert "b" not in summary
    assert not summary.is_exact


def test_space_saving_evicts_the_smaller_item_among_tied_minimums() -> None:
    summary = _summary(2, ["b", "a", "c"])
    assert "a" not in summary
    assert summary.top(2) == [("c", 2), ("b", 1)]


def test_space_saving_unmonitored_item_estimates_the_largest_count_dropped_once_lossy() -> None:
    summary = _summary(2, ["a", "a", "a", "b", "c", "d"])
    # b was evicted by c (at 1), c by d (at 2): d holds 3 with error 2.
    assert summary.top(2) == [("a", 3), ("d", 3)]
    assert (summary.min_count, summary.floor) == (3, 2)
    assert (summary.estimate("b"), summary.error("b"), summary.guaranteed("b")) == (2, 2, 0)


def test_space_saving_without_a_capacity_counts_everything_exactly() -> None:
    summary = _summary(None, [f"p{n % 500}" for n in range(2000)])
    assert (len(summary), summary.is_exact, summary.floor, summary.capacity) == (500, True, 0, None)
    assert summary.guaranteed_counts() == {f"p{n}": 4 for n in range(500)}


def test_space_saving_resized_below_its_items_keeps_the_largest_and_raises_the_floor() -> None:
    summary = _summary(None, ["a", "a", "a", "b", "b", "c", "d", "d"])
    assert summary.resize(2) == 2
    # a=3 stays; b and d tie at 2 for the last counter: the smaller item stays.
    assert summary.entries() == [("a", 3, 0), ("b", 2, 0)]
    assert (summary.floor, summary.estimate("d"), summary.guaranteed("d"), summary.key_chars) == (2, 2, 0, 2)
    summary.add("e")  # evicts b at 2
    assert summary.entries() == [("a", 3, 0), ("e", 3, 2)]


@pytest.mark.parametrize("step", [1, 3, 50_000])
def test_space_saving_cut_in_steps_keeps_the_smallest_tied_items_and_changes_nothing_until_its_last_step(
        monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Ties at the threshold are sorted a slice at a time and merged: the same items as sorting them all."""
    monkeypatch.setattr(sketch, "CUT_STEP", step)
    rng = random.Random(step)
    summary = SpaceSaving()
    summary.add_many((f"p{rng.randrange(400):03d}", rng.choice((1, 1, 1, 2, 3))) for _ in range(600))
    before = summary.to_dict()
    counts = before["counts"]
    # The reference: the largest counts, ties to the smaller items.
    expected = dict(sorted(counts.items(), key=lambda entry: (-entry[1], entry[0]))[:100])
    steps = summary.resize_in_steps(100)
    taken = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            dropped = done.value
            break
        assert summary.to_dict() == before  # reads between steps see the summary whole
        taken += 1
    assert summary.guaranteed_counts() == expected
    assert dropped == len(counts) - 100
    assert summary.floor == max(count for item, count in counts.items() if item not in expected)
    assert taken >= 2 if step == 1 else taken >= 1


def test_space_saving_raised_capacity_takes_new_items_at_the_floor_plus_their_count() -> None:
    summary = _summary(1, ["a", "a", "b"])  # b evicted a at 2: b=3, error 2
    summary.resize(None)
    summary.add("c", 4)
    assert summary.entries() == [("c", 6, 2), ("b", 3, 2)]
    assert (summary.guaranteed("c"), summary.floor, summary.is_exact) == (4, 2, False)


def test_space_saving_full_but_never_evicted_is_still_exact() -> None:
    summary = _summary(2, ["a", "b", "a"])
    assert summary.is_exact
    assert summary.estimate("zzz") == 0


def test_space_saving_total_counts_every_added_occurrence() -> None:
    summary = _summary(1, ["a", ("b", 4), "c"])
    assert summary.total == 6
    assert len(summary) == 1


@pytest.mark.parametrize("k", [0, 1, 2, 10])
def test_space_saving_top_returns_at_most_k_by_count_then_item(k: int) -> None:
    summary = _summary(5, ["x", "y", "y", "z", "z", "w"])
    assert summary.top(k) == [("y", 2), ("z", 2), ("w", 1), ("x", 1)][:k]


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "3"])
def test_space_saving_rejects_a_capacity_that_is_not_a_positive_integer(capacity: Any) -> None:
    with pytest.raises(ValueError, match="capacity must be a positive integer or None"):
        SpaceSaving(capacity)


@pytest.mark.parametrize("count", [0, -2])
def test_space_saving_rejects_a_count_below_one(count: int) -> None:
    with pytest.raises(ValueError, match="count must be at least 1"):
        SpaceSaving(2).add("a", count)


def test_space_saving_round_trips_through_its_dict_and_keeps_evicting_the_same_way() -> None:
    original = _summary(3, ["a", "b", "c", "d", "a", "e", "b", "b"])
    restored = SpaceSaving.from_dict(original.to_dict())
    assert restored == original
    for item in ["f", "g", "a", "h", "c"]:
        original.add(item)
        restored.add(item)
    assert restored == original
    assert restored.to_dict() == original.to_dict()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"capacity": 0, "total": 0, "exact": True, "counters": []}, "'capacity' must be an integer >= 1"),
        ({"capacity": 2, "total": -1, "exact": True, "counters": []}, "'total' must be an integer >= 0"),
        ({"capacity": 2, "total": 0, "exact": "yes", "counters": []}, "'exact' must be true or false"),
        ({"capacity": 1, "total": 2, "exact": True, "counters": [["a", 1, 0], ["b", 1, 0]]}, "more than 'capacity'"),
        ({"capacity": 2, "total": 2, "exact": True, "counters": [["a", 2, 3]]}, "0 <= error <= count"),
        ({"capacity": 2, "total": 2, "exact": True, "counters": [["a", 0, 0]]}, "count >= 1"),
        ({"capacity": 2, "total": 2, "exact": True, "counters": [["a", 1, 0], ["a", 1, 0]]}, "an item twice"),
        ({"capacity": 2, "total": 1, "exact": False, "counters": [["a", 2, 0]]}, "add up to 2"),
        ({"capacity": 2, "total": 3, "exact": True, "counters": [["a", 2, 0]]}, "add up to 2"),
        # The form the budget writes: counts and errors by item, and the floor.
        ({"capacity": None, "total": 1, "floor": 0, "counts": [["a", 1]]}, "must be objects"),
        ({"capacity": None, "total": 1, "floor": 0, "counts": {"a": 0}}, "integer >= 1, got 'a': 0"),
        ({"capacity": None, "total": 1, "floor": 1, "counts": {"a": 2}, "errors": {"a": 3}}, "1 to its item's count"),
        ({"capacity": None, "total": 1, "floor": 1, "counts": {"a": 2}, "errors": {"b": 1}}, "1 to its item's count"),
        ({"capacity": None, "total": 1, "floor": -1, "counts": {"a": 1}}, "'floor' must be an integer >= 0"),
        ({"capacity": None, "total": 3, "floor": 0, "counts": {"a": 2}}, "different while exact"),
        ({"capacity": None, "total": 1, "floor": 1, "counts": {"a": 3}, "errors": {"a": 1}}, "more than it"),
        ({"capacity": None, "total": 9, "floor": 2, "counts": {"a": 1}}, "below the floor 2"),
        ({"capacity": None, "total": 9, "floor": 1, "counts": {"a": 3}, "errors": {"a": 2}}, "error above it"),
        ({"capacity": 1, "total": 2, "floor": 0, "counts": {"a": 1, "b": 1}}, "2 counters, more than 'capacity'"),
    ],
)
def test_space_saving_from_dict_rejects_inconsistent_state_naming_the_field(
    state: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SpaceSaving.from_dict(state)


# --- SpaceSaving properties (hypothesis) ------------------------------------

_ITEMS = "abcdefghij"
_streams = st.lists(st.tuples(st.sampled_from(_ITEMS), st.integers(1, 5)), max_size=200)


def _truth(stream: Sequence[tuple[str, int]]) -> dict[str, int]:
    truth = dict.fromkeys(_ITEMS, 0)
    for item, count in stream:
        truth[item] += count
    return truth


def _assert_space_saving_bounds(summary: SpaceSaving, truth: dict[str, int]) -> None:
    n = sum(truth.values())
    m = summary.capacity
    assert summary.total == n
    assert len(summary) <= m
    assert sum(count for _, count in summary.top(m)) <= n
    for item, true in truth.items():
        estimate = summary.estimate(item)
        assert true <= estimate
        assert (estimate - true) * m <= n  # estimate <= true + N/m, without rounding
        assert summary.error(item) * m <= n
        assert summary.guaranteed(item) <= true
        if true * m > n:
            assert item in summary


@settings(database=None, deadline=None, max_examples=300)
@given(capacity=st.integers(1, 8), stream=_streams)
def test_space_saving_bounds_hold_for_any_stream(capacity: int, stream: list[tuple[str, int]]) -> None:
    summary = SpaceSaving(capacity)
    for item, count in stream:
        summary.add(item, count)
    _assert_space_saving_bounds(summary, _truth(stream))
    assert SpaceSaving.from_dict(summary.to_dict()) == summary


@settings(database=None, deadline=None, max_examples=300)
@given(parts=st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 8)), _streams), min_size=1, max_size=4))
def test_summaries_of_disjoint_streams_add_up_to_bounds_on_their_union(
    parts: list[tuple[int | None, list[tuple[str, int]]]]
) -> None:
    # What a horizon view does with the buckets of a horizon (streams.pairs.ledger.HorizonView).
    summaries = []
    for capacity, part in parts:
        summary = SpaceSaving(capacity)
        summary.add_many(part)
        summaries.append(summary)
    floors = sum(summary.floor for summary in summaries)
    for item, true in _truth([entry for _, part in parts for entry in part]).items():
        guaranteed = sum(summary.guaranteed(item) for summary in summaries)
        assert guaranteed <= true <= guaranteed + floors
        assert true <= sum(summary.estimate(item) for summary in summaries) <= true + floors


@settings(database=None, deadline=None, max_examples=100)
@given(stream=_streams)
def test_space_saving_with_room_for_every_item_counts_exactly(stream: list[tuple[str, int]]) -> None:
    summary = SpaceSaving(len(_ITEMS))
    for item, count in stream:
        summary.add(item, count)
    assert summary.is_exact
    assert {item: summary.estimate(item) for item in _ITEMS} == _truth(stream)


def _assert_floor_bounds(summary: SpaceSaving, truth: dict[str, int]) -> None:
    floor = summary.floor
    assert summary.total == sum(truth.values())
    for item, true in truth.items():
        assert summary.guaranteed(item) <= true <= summary.estimate(item) <= true + floor
        assert summary.error(item) <= floor
    assert summary.is_exact == (floor == 0)
    if summary.is_exact:
        assert summary.guaranteed_counts() == {item: true for item, true in truth.items() if true}


_resizes = st.one_of(st.none(), st.integers(1, 8))


@settings(database=None, deadline=None, max_examples=300)
@given(steps=st.lists(st.one_of(st.tuples(st.just("add"), _streams), st.tuples(st.just("resize"), _resizes),
                                st.tuples(st.just("restore"), st.none())), max_size=12))
def test_space_saving_floor_bounds_every_count_whatever_the_capacity_does(steps: list[Any]) -> None:
    summary = SpaceSaving(None)
    added: list[tuple[str, int]] = []
    for kind, argument in steps:
        if kind == "add":
            summary.add_many(argument)
            added += argument
        elif kind == "resize":
            summary.resize(argument)
        else:
            summary = SpaceSaving.from_dict(summary.to_dict())
        _assert_floor_bounds(summary, _truth(added))


def test_space_saving_reads_the_state_written_before_floors() -> None:
    # As the ledger wrote it before the memory budget: capacity, exact, [item, count, error] by count.
    lossy = SpaceSaving.from_dict({"capacity": 2, "total": 6, "exact": False, "counters": [["a", 3, 0], ["d", 3, 2]]})
    assert (lossy.floor, lossy.capacity, lossy.estimate("b"), lossy.guaranteed("d")) == (3, 2, 3, 1)
    exact = SpaceSaving.from_dict({"capacity": 3, "total": 3, "exact": True, "counters": [["a", 2, 0], ["b", 1, 0]]})
    assert (exact.is_exact, exact.estimate("c"), exact.capacity) == (True, 0, 3)


# --- SpaceSaving against the textbook algorithm --------------------------------
# SpaceSaving files items under lagging levels and sorts a level only when it
# becomes the lowest; add_many() is the batch form of add(). The textbook form
# below scans every counter for the minimum: every observable step must agree.


class _TextbookSpaceSaving:
    def __init__(self, capacity: int, state: dict[str, Any] | None = None) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.total = 0
        self.floor = 0  # the largest count evicted
        if state is not None:
            self.total, self.floor = state["total"], state["floor"]
            for item, count in state["counts"].items():
                self.counts[item], self.errors[item] = count, state["errors"].get(item, 0)

    def add(self, item: str, count: int) -> None:
        self.total += count
        if item in self.counts:
            self.counts[item] += count
        elif len(self.counts) < self.capacity:  # a free counter: at the floor, 0 unless the capacity was raised
            self.counts[item], self.errors[item] = self.floor + count, self.floor
        else:
            evicted = min(self.counts, key=lambda key: (self.counts[key], key))
            floor = self.counts.pop(evicted)
            del self.errors[evicted]
            self.counts[item], self.errors[item] = floor + count, floor
            self.floor = max(self.floor, floor)

    def min_count(self) -> int:
        return min(self.counts.values(), default=0)

    def estimate(self, item: str) -> int:
        return self.counts.get(item, self.floor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "total": self.total,
            "floor": self.floor,
            "counts": dict(self.counts),
            "errors": {item: error for item, error in self.errors.items() if error},
        }


_WIDE_ITEMS = [f"p-{i:02d}" for i in range(24)]
_counts = st.tuples(st.sampled_from(_WIDE_ITEMS), st.integers(1, 3))
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _counts),
        st.tuples(st.just("add_many"), st.lists(_counts, max_size=30)),
        st.tuples(st.just("read"), st.sampled_from(_WIDE_ITEMS)),  # finds the minimum between adds
        st.tuples(st.just("restore"), st.none()),
        st.tuples(st.just("resize"), st.integers(1, 10)),
    ),
    max_size=40,
)


@settings(database=None, deadline=None, max_examples=400)
@given(capacity=st.integers(1, 10), steps=_steps)
def test_space_saving_evicts_as_the_textbook_algorithm_step_by_step(capacity: int, steps: list[Any]) -> None:
    summary = SpaceSaving(capacity)
    textbook = _TextbookSpaceSaving(capacity)
    for kind, argument in steps:
        if kind == "add":
            summary.add(*argument)
            textbook.add(*argument)
        elif kind == "add_many":
            summary.add_many(argument)
            for entry in argument:
                textbook.add(*entry)
        elif kind == "read":
            assert summary.min_count == textbook.min_count()
            assert summary.estimate(argument) == textbook.estimate(argument)
            assert summary.floor == textbook.floor
        elif kind == "restore":
            summary = SpaceSaving.from_dict(summary.to_dict())
        else:  # resize keeps its own rule; the summary must then go on evicting as the textbook
            summary.resize(argument)
            textbook = _TextbookSpaceSaving(argument, summary.to_dict())
        assert summary.to_dict() == textbook.to_dict()


@pytest.mark.parametrize("capacity", [1, 3, 1000])
def test_space_saving_add_many_equals_adding_one_by_one(capacity: int) -> None:
    rng = random.Random(capacity)
    batches = [
        [(f"p-{rng.randrange(40)}", rng.choice((1, 1, 2, 5))) for _ in range(rng.randrange(60))] for _ in range(50)
    ]
    one_by_one = SpaceSaving(capacity)
    in_batches = SpaceSaving(capacity)
    for batch in batches:
        for item, count in batch:
            one_by_one.add(item, count)
        in_batches.add_many(batch)
        assert in_batches.to_dict() == one_by_one.to_dict()
        assert in_batches.min_count == one_by_one.min_count


def test_space_saving_add_many_stops_at_a_bad_count_with_the_earlier_adds_done() -> None:
    summary = SpaceSaving(2)
    with pytest.raises(ValueError, match="at least 1, got 0 for item 'c'"):
        summary.add_many([("a", 2), ("b", 1), ("c", 0), ("d", 1)])
    assert (summary.total, summary.top(2)) == (3, [("a", 2), ("b", 1)])


# --- PairAccumulator and delta messages -------------------------------------


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ([], {}),
        ([["a"]], {"a": ("a", 1, {})}),
        (
            [["a", "b"], ["b", "c", "b"], ["a", "b"]],
            {
                "a": ("a", 2, {"b": 2}),
                "b": ("b", 3, {"a": 2, "c": 1}),
                "c": ("c", 1, {"b": 1}),
            },
        ),
    ],
)
def test_accumulator_emits_one_exact_delta_per_distinct_product(
    orders: list[list[str]], expected: dict[str, tuple[str, int, dict[str, int]]]
) -> None:
    accumulator = PairAccumulator()
    for order in orders:
        accumulator.add_order(order)
    assert deltas(accumulator) == expected
    assert accumulator.total_orders == len(orders)


def test_accumulator_counts_products_beyond_the_basket_cap_without_pairing_them() -> None:
    accumulator = PairAccumulator(max_basket=2)
    accumulator.add_order(["c", "b", "a"])
    assert deltas(accumulator) == {
        "a": ("a", 1, {"b": 1}),
        "b": ("b", 1, {"a": 1}),
        "c": ("c", 1, {}),
    }


def test_accumulator_counts_baskets_at_once_as_order_by_order() -> None:
    rng = random.Random(7)
    orders = [[f"p-{rng.randrange(15)}" for _ in range(rng.randrange(1, 7))] for _ in range(300)]
    by_order = PairAccumulator(max_basket=4)
    for order in orders:
        by_order.add_order(order)
    at_once = PairAccumulator(max_basket=4)
    at_once.add_baskets([product_basket(order) for order in orders[:100]])
    at_once.add_baskets([product_basket(order) for order in orders[100:]])
    assert at_once.total_orders == by_order.total_orders == len(orders)
    assert deltas(at_once) == deltas(by_order)
    assert list(at_once.product_counts()) == sorted(at_once.product_counts())
    for companions in at_once.companion_counts().values():
        assert list(companions) == sorted(companions)


def test_accumulator_merge_equals_counting_both_sides_orders() -> None:
    orders = [["a", "b"], ["b", "c", "d"], ["a"], ["d", "a", "c"]]
    whole = PairAccumulator()
    first, second = PairAccumulator(), PairAccumulator()
    for n, order in enumerate(orders):
        whole.add_order(order)
        (first if n % 2 else second).add_order(order)
    first.merge(second)
    assert (first.total_orders, deltas(first)) == (whole.total_orders, deltas(whole))


_GOOD_DELTA: dict[str, Any] = {"product_id": "a", "bucket_start": 0, "orders_with_product": 2, "companions": {"b": 1}}


# --- oracle: the module against brute force over random orders ---------------

_CATALOGUE = [f"p{rank:03d}" for rank in range(300)]
_ORDERS = 5000


def _random_orders(seed: int, count: int = _ORDERS) -> list[list[str]]:
    """Orders over a Zipf-like catalogue (weight 1/rank^1.1), with repeats and a few planted bundles."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(_CATALOGUE))]
    bundles = [(_CATALOGUE[i], _CATALOGUE[i + 150]) for i in range(0, 30, 3)]
    orders: list[list[str]] = []
    for _ in range(count):
        size = rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 5, 8))
        order = rng.choices(_CATALOGUE, weights, k=size)
        if rng.random() < 0.25:
            order.extend(rng.choice(bundles))
        orders.append(order)
    return orders


Truth = tuple[int, dict[str, int], dict[str, dict[str, int]]]  # N, n_A, n_AB


def _brute_force(orders: list[list[str]]) -> Truth:
    """Co-occurrence counts by brute force: nested loops over each order's distinct products."""
    with_product: dict[str, int] = {}
    together: dict[str, dict[str, int]] = {}
    for order in orders:
        distinct: list[str] = []
        for product in order:
            if product not in distinct:
                distinct.append(product)
        for a in distinct:
            with_product[a] = with_product.get(a, 0) + 1
            for b in distinct:
                if a != b:
                    row = together.setdefault(a, {})
                    row[b] = row.get(b, 0) + 1
    return len(orders), with_product, together


@pytest.fixture(scope="module")
def orders() -> list[list[str]]:
    return _random_orders(seed=20261122)


@pytest.fixture(scope="module")
def truth(orders: list[list[str]]) -> Truth:
    return _brute_force(orders)


def test_oracle_accumulator_deltas_equal_brute_force_counts(orders: list[list[str]], truth: Truth) -> None:
    n, with_product, together = truth
    accumulator = PairAccumulator()
    for order in orders:
        accumulator.add_order(order)
    counted = deltas(accumulator)
    assert accumulator.total_orders == n
    assert {product: orders_with for product, (_, orders_with, _) in counted.items()} == with_product
    assert {product: companions for product, (_, _, companions) in counted.items() if companions} == together




def deltas(accumulator: PairAccumulator) -> dict[str, tuple[str, int, dict[str, int]]]:
    """product -> (product, orders with it, {companion: orders with both}): what a flush sends of each product."""
    companions = accumulator.companion_counts()
    return {product: (product, orders, companions.get(product, {}))
            for product, orders in accumulator.product_counts().items()}
