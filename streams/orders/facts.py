"""Turn a checked order into the facts the windows are built from.

Definitions (the ones analytics vendors use):

* The **primary item** is the line with the highest value, unit_price x
  quantity. Ties are broken by the smaller product_id, then the smaller
  category, so the result does not depend on the order of the lines.
* The order's **primary category** is the primary item's category.
* A **cross-sell item** is a line whose category differs from the primary
  category. A line in the primary's own category is not cross-sell (it is the
  upsell side), whatever its product.
* A **cross-sell order** has at least one cross-sell item.
* **Items** are units: the sum of the lines' quantities.
* **Revenue** is the sum of unit_price x quantity over the lines, in the order
  currency; **cross-sell revenue** is that sum over the cross-sell items only.
"""

from __future__ import annotations

from typing import NamedTuple

from streams.orders.contract import Item, Order

NONE_LABEL = "none"
# Joins the two members of a pair into one key (category pairs in the windows,
# product pairs in the pairs ledger): a control character no id contains.
PAIR_SEPARATOR = "\x1f"


class OrderFacts(NamedTuple):
    """The figures of one order. Immutable; a named tuple rather than a frozen
    dataclass because one is built per order on the hot path, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs
    several times as much."""

    order_id: str
    event_time: float
    primary_category: str
    cross_sell: bool
    items: int
    revenue: float
    cross_sell_revenue: float
    categories: tuple[str, ...]  # distinct, sorted
    products: tuple[str, ...]  # distinct, sorted
    channel: str
    variant: str
    attributed_items: int  # units sold through a recommendation touchpoint
    # One per attributed line: (touchpoint, units, revenue, whether the line is cross-sell).
    attributions: tuple[Attribution, ...] = ()
    primary_product: str = ""  # the primary item's product_id


class Attribution(NamedTuple):
    """A line a recommendation touchpoint sold."""

    touchpoint: str
    units: int
    revenue: float
    cross_sell: bool


def primary_item(items: tuple[Item, ...]) -> Item:
    """The line with the highest value; ties go to the smaller product_id, then category."""
    if not items:
        raise ValueError("an order has at least one line; got none")
    best = items[0]
    best_value = best.unit_price * best.quantity
    for item in items:
        # The order of min() by the key (-value, product_id, category), without a key per line.
        value = item.unit_price * item.quantity
        if value > best_value or (
            value == best_value and (item.product_id, item.category) < (best.product_id, best.category)
        ):
            best, best_value = item, value
    return best


def order_facts(order: Order) -> OrderFacts:
    items = order.items
    if len(items) == 1:
        return _single_line_facts(order, items[0])
    primary = primary_item(items)
    category = primary.category
    revenue = 0.0
    cross_sell_revenue = 0.0
    units = 0
    attributed = 0
    attributions: list[Attribution] = []
    categories: set[str] = set()
    products: set[str] = set()
    for item in items:
        value = item.unit_price * item.quantity
        revenue += value
        units += item.quantity
        if item.category != category:
            cross_sell_revenue += value
        if item.attribution is not None:
            attributed += item.quantity
            attributions.append(Attribution(item.attribution, item.quantity, value, item.category != category))
        categories.add(item.category)
        products.add(item.product_id)
    # Positional: a named tuple takes keyword arguments at three times the cost.
    return OrderFacts(
        order.order_id,
        order.occurred_at,
        category,
        len(categories) > 1,
        units,
        revenue,
        cross_sell_revenue,
        tuple(sorted(categories)),
        tuple(sorted(products)),
        order.channel or NONE_LABEL,
        order.variant or NONE_LABEL,
        attributed,
        tuple(attributions),
        primary.product_id,
    )


def _single_line_facts(order: Order, item: Item) -> OrderFacts:
    # The common one-line order: its own primary item, no cross-sell. The revenue is
    # the general case's float sum (0.0 + value) over one line.
    quantity = item.quantity
    return OrderFacts(
        order.order_id,
        order.occurred_at,
        item.category,
        False,
        quantity,
        0.0 + item.unit_price * quantity,
        0.0,
        (item.category,),
        (item.product_id,),
        order.channel or NONE_LABEL,
        order.variant or NONE_LABEL,
        0 if item.attribution is None else quantity,
        () if item.attribution is None else (Attribution(item.attribution, quantity, 0.0 + item.unit_price * quantity,
                                                         False),),
        item.product_id,
    )
