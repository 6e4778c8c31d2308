"""streams.orders.facts: the primary item, cross-sell or not, and the per-order figures."""

from __future__ import annotations

from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from orders import checked_order

from streams.orders.contract import Item
from streams.orders.facts import order_facts, primary_item

# (description, lines, the line that is primary)
PRIMARY: list[tuple[str, tuple[Item, ...], Item]] = [
    ("a single line", (Item("p-1", "books", 9.0, 1),), Item("p-1", "books", 9.0, 1)),
    (
        "highest value, not highest unit price",
        (Item("p-1", "books", 10.0, 1), Item("p-2", "toys", 3.0, 5)),
        Item("p-2", "toys", 3.0, 5),
    ),
    (
        "highest value among three",
        (Item("p-1", "books", 4.0, 2), Item("p-2", "toys", 9.5, 1), Item("p-3", "garden", 1.0, 9)),
        Item("p-2", "toys", 9.5, 1),
    ),
    (
        "tie on value goes to the smaller product_id",
        (Item("p-2", "books", 10.0, 1), Item("p-1", "toys", 5.0, 2)),
        Item("p-1", "toys", 5.0, 2),
    ),
    (
        "tie on value and product_id goes to the smaller category",
        (Item("p-1", "toys", 10.0, 1), Item("p-1", "books", 10.0, 1)),
        Item("p-1", "books", 10.0, 1),
    ),
    (
        "tie broken by product_id before category",
        (Item("p-9", "apples", 6.0, 1), Item("p-1", "zebras", 6.0, 1)),
        Item("p-1", "zebras", 6.0, 1),
    ),
]


@pytest.mark.parametrize(
    ("lines", "expected"), [pytest.param(lines, expected, id=description) for description, lines, expected in PRIMARY]
)
def test_primary_item_is_the_highest_value_line_with_ties_by_product_then_category(
    lines: tuple[Item, ...], expected: Item
) -> None:
    assert primary_item(lines) == expected


@pytest.mark.parametrize(
    "lines", [pytest.param(lines, id=description) for description, lines, _ in PRIMARY if len(lines) > 1]
)
def test_primary_item_does_not_depend_on_line_order(lines: tuple[Item, ...]) -> None:
    assert {primary_item(tuple(order)) for order in permutations(lines)} == {primary_item(lines)}


# (description, lines, cross-sell order?)
CROSS_SELL: list[tuple[str, tuple[Item, ...], bool]] = [
    ("one line", (Item("p-1", "books", 10.0, 1),), False),
    ("one product, several units", (Item("p-1", "books", 10.0, 3),), False),
    ("another product of the same category", (Item("p-1", "books", 10.0, 1), Item("p-2", "books", 4.0, 1)), False),
    ("the same product on two lines", (Item("p-1", "books", 10.0, 1), Item("p-1", "books", 10.0, 2)), False),
    ("a cheaper line of another category", (Item("p-1", "books", 10.0, 1), Item("p-2", "toys", 1.0, 1)), True),
    (
        "upsell and cross-sell lines together",
        (Item("p-1", "books", 10.0, 1), Item("p-2", "books", 2.0, 1), Item("p-3", "toys", 2.0, 1)),
        True,
    ),
    ("the expensive line of another category", (Item("p-1", "books", 1.0, 1), Item("p-2", "toys", 50.0, 1)), True),
]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [pytest.param(lines, expected, id=description) for description, lines, expected in CROSS_SELL],
)
def test_cross_sell_order_has_a_line_outside_the_primary_category(lines: tuple[Item, ...], expected: bool) -> None:
    assert order_facts(checked_order(*lines)).cross_sell is expected


# books p-1: 20.0 x 2 = 40 (primary); books p-2: 5.0 x 1 = 5 (attributed, upsell);
# toys p-3: 2.5 x 4 = 10 (attributed, cross-sell).
MIXED = (
    Item("p-1", "books", 20.0, 2),
    Item("p-2", "books", 5.0, 1, "cart_upsell"),
    Item("p-3", "toys", 2.5, 4, "pdp_frequently_bought_together"),
)


def test_revenue_is_the_sum_of_price_times_quantity_over_all_lines() -> None:
    assert order_facts(checked_order(*MIXED)).revenue == pytest.approx(40 + 5 + 10)


def test_cross_sell_revenue_sums_only_lines_outside_the_primary_category() -> None:
    assert order_facts(checked_order(*MIXED)).cross_sell_revenue == pytest.approx(10)


def test_cross_sell_revenue_follows_the_tie_broken_primary_category() -> None:
    # Equal values: p-1 (toys) is primary, so the books line is the cross-sell one.
    facts = order_facts(checked_order(Item("p-2", "books", 6.0, 1), Item("p-1", "toys", 3.0, 2)))
    assert (facts.primary_category, facts.cross_sell_revenue) == ("toys", pytest.approx(6.0))


def test_an_order_without_cross_sell_has_no_cross_sell_revenue() -> None:
    facts = order_facts(checked_order(Item("p-1", "books", 20.0, 2), Item("p-2", "books", 5.0, 1)))
    assert (facts.cross_sell, facts.cross_sell_revenue) == (False, 0.0)


def test_items_count_units_not_lines() -> None:
    assert order_facts(checked_order(*MIXED)).items == 2 + 1 + 4


def test_attributed_items_count_the_units_of_attributed_lines() -> None:
    assert order_facts(checked_order(*MIXED)).attributed_items == 1 + 4


def test_primary_category_is_the_category_of_the_primary_item() -> None:
    assert order_facts(checked_order(*MIXED)).primary_category == "books"


def test_categories_and_products_are_distinct_and_sorted() -> None:
    lines = (Item("p-9", "toys", 9.0, 1), Item("p-1", "books", 1.0, 1), Item("p-9", "toys", 9.0, 1))
    facts = order_facts(checked_order(*lines))
    assert (facts.categories, facts.products) == (("books", "toys"), ("p-1", "p-9"))


def test_facts_carry_the_order_id_and_event_time() -> None:
    facts = order_facts(checked_order(order_id="o-42", occurred_at=1234.5))
    assert (facts.order_id, facts.event_time) == ("o-42", 1234.5)


@pytest.mark.parametrize(
    ("channel", "variant", "expected"),
    [
        (None, None, ("none", "none")),
        ("app", None, ("app", "none")),
        (None, "treatment", ("none", "treatment")),
        ("web", "control", ("web", "control")),
    ],
)
def test_channel_and_variant_default_to_none(
    channel: str | None, variant: str | None, expected: tuple[str, str]
) -> None:
    facts = order_facts(checked_order(channel=channel, variant=variant))
    assert (facts.channel, facts.variant) == expected


# --- the definitions, computed plainly, against order_facts on random orders ----------------------

_lines = st.lists(
    st.builds(
        Item,
        st.sampled_from(["p-1", "p-2", "p-3"]),
        st.sampled_from(["books", "toys", "garden"]),
        st.sampled_from([1.0, 2.0, 2.5, 5.0]),  # few prices: many ties on value
        st.sampled_from([1, 2, 4]),
        st.sampled_from([None, "cart_upsell"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(database=None, deadline=None, max_examples=300)
@given(lines=_lines)
def test_order_facts_follow_the_definitions_for_any_lines(lines: list[Item]) -> None:
    items = tuple(lines)
    primary = min(items, key=lambda item: (-item.value, item.product_id, item.category))
    cross_sell_lines = [item for item in items if item.category != primary.category]
    facts = order_facts(checked_order(*items))
    assert primary_item(items) == primary
    assert facts.primary_category == primary.category
    assert facts.cross_sell is bool(cross_sell_lines)
    assert facts.items == sum(item.quantity for item in items)
    assert facts.revenue == sum(item.value for item in items)
    assert facts.cross_sell_revenue == sum(item.value for item in cross_sell_lines)
    assert facts.attributed_items == sum(item.quantity for item in items if item.attribution is not None)
    assert facts.categories == tuple(sorted({item.category for item in items}))
    assert facts.products == tuple(sorted({item.product_id for item in items}))
