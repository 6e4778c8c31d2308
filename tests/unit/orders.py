"""Order events for the unit tests: one valid base event, its lines, and checked Orders.

Documents are plain dicts as a producer would send them; ``encode`` uses the
standard library's json so the bytes do not come from the code under test.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from streams.orders.contract import Item, Order

BASE_OCCURRED_AT = "2026-11-22T18:30:00Z"


def line(
    product_id: str = "p-1", category: str = "books", unit_price: Any = 12.5, quantity: Any = 1, **extra: Any
) -> dict[str, Any]:
    """One order line as JSON; ``extra`` adds optional fields such as attribution."""
    return {"product_id": product_id, "category": category, "unit_price": unit_price, "quantity": quantity, **extra}


def base_document() -> dict[str, Any]:
    """A valid order event using every field, optional ones included."""
    return {
        "order_id": "o-1",
        "customer_id": "c-1",
        "occurred_at": BASE_OCCURRED_AT,
        "currency": "EUR",
        "channel": "web",
        "variant": "control",
        "items": [line(), line("p-2", "toys", 4.0, 2, attribution="cart_upsell")],
    }


def document_with(**changes: Any) -> dict[str, Any]:
    """The base event with top-level fields replaced (or added)."""
    document = copy.deepcopy(base_document())
    document.update(changes)
    return document


def document_without(*names: str) -> dict[str, Any]:
    """The base event without the named top-level fields."""
    document = base_document()
    for name in names:
        del document[name]
    return document


def document_with_line(index: int = 0, **changes: Any) -> dict[str, Any]:
    """The base event with fields of line ``index`` replaced (or added)."""
    document = base_document()
    document["items"][index].update(changes)
    return document


def document_without_line_field(name: str, index: int = 0) -> dict[str, Any]:
    document = base_document()
    del document["items"][index][name]
    return document


def encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def checked_order(
    *items: Item,
    occurred_at: float = 1_800_000_000.0,
    order_id: str = "o-1",
    channel: str | None = None,
    variant: str | None = None,
) -> Order:
    """An Order as decode_order would return it, built directly (no parsing)."""
    return Order(
        order_id=order_id,
        customer_id="c-1",
        occurred_at=occurred_at,
        currency="EUR",
        items=items or (Item("p-1", "books", 10.0, 1),),
        channel=channel,
        variant=variant,
    )
