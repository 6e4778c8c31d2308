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

from dataclasses import dataclass

from streams.contract import Item, Order

NONE_LABEL = "none"


@dataclass(frozen=True, slots=True)
class OrderFacts:
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


def primary_item(items: tuple[Item, ...]) -> Item:
    """The line with the highest value; ties go to the smaller product_id, then category."""
    return min(items, key=lambda item: (-item.value, item.product_id, item.category))


def order_facts(order: Order) -> OrderFacts:
    primary = primary_item(order.items)
    category = primary.category
    revenue = 0.0
    cross_sell_revenue = 0.0
    units = 0
    attributed = 0
    for item in order.items:
        value = item.value
        revenue += value
        units += item.quantity
        if item.category != category:
            cross_sell_revenue += value
        if item.attribution is not None:
            attributed += item.quantity
    categories = tuple(sorted({item.category for item in order.items}))
    return OrderFacts(
        order_id=order.order_id,
        event_time=order.occurred_at,
        primary_category=category,
        cross_sell=len(categories) > 1,
        items=units,
        revenue=revenue,
        cross_sell_revenue=cross_sell_revenue,
        categories=categories,
        products=tuple(sorted({item.product_id for item in order.items})),
        channel=order.channel or NONE_LABEL,
        variant=order.variant or NONE_LABEL,
        attributed_items=attributed,
    )
