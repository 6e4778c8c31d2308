"""Check raw order-event bytes against the event contract.

``schemas/order.schema.json`` is the language-neutral contract; this module is
its fast runtime twin (a test feeds one corpus to both and requires the same
verdict). Every input ends as an :class:`Order` or a :class:`Rejection` with a
specific reason and a sentence a person can act on; nothing here raises on
bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

# Rejection reasons (the ``reason`` label of crosssell_events_invalid_total).
EMPTY: Final = "empty"
OVERSIZED: Final = "oversized"
NOT_UTF8: Final = "not_utf8"
NOT_JSON: Final = "not_json"
NOT_OBJECT: Final = "not_object"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
EMPTY_FIELD: Final = "empty_field"
FIELD_TOO_LONG: Final = "field_too_long"
NO_ITEMS: Final = "no_items"
TOO_MANY_ITEMS: Final = "too_many_items"
NON_POSITIVE_PRICE: Final = "non_positive_price"
PRICE_TOO_LARGE: Final = "price_too_large"
NON_POSITIVE_QUANTITY: Final = "non_positive_quantity"
QUANTITY_TOO_LARGE: Final = "quantity_too_large"
BAD_CURRENCY: Final = "bad_currency"
BAD_TIMESTAMP: Final = "bad_timestamp"
# Decided later, against the event-time clock of the partition (see ledger.py).
FUTURE_EVENT_TIME: Final = "future_event_time"
BEFORE_RETENTION: Final = "before_retention"

REASONS: Final = (
    EMPTY, OVERSIZED, NOT_UTF8, NOT_JSON, NOT_OBJECT, MISSING_FIELD, WRONG_TYPE, EMPTY_FIELD,
    FIELD_TOO_LONG, NO_ITEMS, TOO_MANY_ITEMS, NON_POSITIVE_PRICE, PRICE_TOO_LARGE, NON_POSITIVE_QUANTITY,
    QUANTITY_TOO_LARGE, BAD_CURRENCY, BAD_TIMESTAMP, FUTURE_EVENT_TIME, BEFORE_RETENTION,
)

MAX_ID_LENGTH: Final = 128
MAX_LABEL_LENGTH: Final = 64
# Keeps every sum of prices finite (a double overflows near 1.8e308), whatever the quantity.
MAX_UNIT_PRICE: Final = 1_000_000_000

_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
_FRACTION = re.compile(r"\.([0-9]{1,9})")
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int = 65536
    max_items: int = 500
    max_quantity: int = 100_000


@dataclass(frozen=True, slots=True)
class Item:
    product_id: str
    category: str
    unit_price: float
    quantity: int
    attribution: str | None = None

    @property
    def value(self) -> float:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    customer_id: str
    occurred_at: float  # event time, unix seconds
    currency: str
    items: tuple[Item, ...]
    channel: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_order(raw: bytes | None, limits: Limits = Limits()) -> Order | Rejection:
    """Parse and check one event; the result is an Order or a Rejection."""
    if not raw:
        return Rejection(EMPTY, "the event has no value (empty or null message)")
    if len(raw) > limits.max_event_bytes:
        return Rejection(OVERSIZED, f"the event is {len(raw)} bytes; at most {limits.max_event_bytes} are allowed")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            return Rejection(NOT_UTF8, f"the event is not UTF-8 text: {utf.reason} at byte {utf.start}")
        return Rejection(NOT_JSON, f"the event is not JSON: {exc}")
    try:
        return order_from_document(document, limits)
    except _Invalid as invalid:
        return Rejection(invalid.reason, invalid.detail)


def order_from_document(document: Any, limits: Limits = Limits()) -> Order:
    """Build an Order from parsed JSON; raises _Invalid (caught by decode_order)."""
    if type(document) is not dict:
        raise _Invalid(NOT_OBJECT, f"the event must be a JSON object, not {_json_type(document)}")
    order_id = _string(document, "order_id", MAX_ID_LENGTH)
    customer_id = _string(document, "customer_id", MAX_ID_LENGTH)
    occurred_at = _timestamp(document)
    currency = _field(document, "currency", str)
    if _CURRENCY.fullmatch(currency) is None:
        raise _Invalid(BAD_CURRENCY, f"currency is {currency!r}; expected an ISO 4217 code such as EUR or USD")
    raw_items = _field(document, "items", list)
    if not raw_items:
        raise _Invalid(NO_ITEMS, "items is empty; an order needs at least one line")
    if len(raw_items) > limits.max_items:
        raise _Invalid(TOO_MANY_ITEMS, f"the order has {len(raw_items)} lines; at most {limits.max_items} are allowed")
    items = tuple(_item(raw_item, index, limits) for index, raw_item in enumerate(raw_items))
    return Order(
        order_id=order_id,
        customer_id=customer_id,
        occurred_at=occurred_at,
        currency=currency,
        items=items,
        channel=_optional_string(document, "channel", MAX_LABEL_LENGTH),
        variant=_optional_string(document, "variant", MAX_LABEL_LENGTH),
    )


def _item(raw: Any, index: int, limits: Limits) -> Item:
    where = f"items[{index}]"
    if type(raw) is not dict:
        raise _Invalid(WRONG_TYPE, f"{where} must be an object, not {_json_type(raw)}")
    product_id = _string(raw, "product_id", MAX_ID_LENGTH, where)
    category = _string(raw, "category", MAX_ID_LENGTH, where)
    price = raw.get("unit_price", _MISSING)
    if price is _MISSING:
        raise _Invalid(MISSING_FIELD, f"{where}.unit_price is missing")
    if type(price) is not float and type(price) is not int:
        raise _Invalid(WRONG_TYPE, f"{where}.unit_price must be a number, not {_json_type(price)}")
    if not price > 0:
        raise _Invalid(NON_POSITIVE_PRICE, f"{where}.unit_price is {price}; it must be greater than 0")
    if price > MAX_UNIT_PRICE:
        raise _Invalid(PRICE_TOO_LARGE, f"{where}.unit_price is {price}; at most {MAX_UNIT_PRICE} is allowed")
    quantity = raw.get("quantity", _MISSING)
    if quantity is _MISSING:
        raise _Invalid(MISSING_FIELD, f"{where}.quantity is missing")
    if type(quantity) is float and quantity.is_integer():
        quantity = int(quantity)  # JSON Schema's "integer" accepts 2.0
    if type(quantity) is not int:
        raise _Invalid(WRONG_TYPE, f"{where}.quantity must be a whole number, not {_json_type(quantity)}")
    if quantity < 1:
        raise _Invalid(NON_POSITIVE_QUANTITY, f"{where}.quantity is {quantity}; it must be at least 1")
    if quantity > limits.max_quantity:
        raise _Invalid(QUANTITY_TOO_LARGE, f"{where}.quantity is {quantity}; at most {limits.max_quantity} allowed")
    attribution = _optional_string(raw, "attribution", MAX_LABEL_LENGTH, where)
    return Item(product_id, category, float(price), quantity, attribution)


_MISSING: Final = object()


def _field(document: dict[str, Any], name: str, kind: type, where: str = "") -> Any:
    value = document.get(name, _MISSING)
    path = f"{where}.{name}" if where else name
    if value is _MISSING:
        raise _Invalid(MISSING_FIELD, f"{path} is missing")
    if type(value) is not kind:
        raise _Invalid(WRONG_TYPE, f"{path} must be {_TYPE_NAMES[kind]}, not {_json_type(value)}")
    return value


def _string(document: dict[str, Any], name: str, max_length: int, where: str = "") -> str:
    value: str = _field(document, name, str, where)
    _check_length(value, name, max_length, where)
    return value


def _optional_string(document: dict[str, Any], name: str, max_length: int, where: str = "") -> str | None:
    if name not in document:
        return None
    return _string(document, name, max_length, where)


def _check_length(value: str, name: str, max_length: int, where: str) -> None:
    path = f"{where}.{name}" if where else name
    if not value:
        raise _Invalid(EMPTY_FIELD, f"{path} is an empty string")
    if len(value) > max_length:
        raise _Invalid(FIELD_TOO_LONG, f"{path} has {len(value)} characters; at most {max_length} are allowed")


def _timestamp(document: dict[str, Any]) -> float:
    text: str = _field(document, "occurred_at", str)
    if _TIMESTAMP.fullmatch(text) is None:
        raise _Invalid(BAD_TIMESTAMP, f"occurred_at is {text!r}; expected RFC 3339 such as 2026-11-22T18:30:00Z")
    # fromisoformat takes at most 6 fractional digits; RFC 3339 allows more.
    normalised = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        return datetime.fromisoformat(normalised.upper()).timestamp()
    except ValueError as exc:
        raise _Invalid(BAD_TIMESTAMP, f"occurred_at is {text!r}: {exc}") from None


_TYPE_NAMES: Final[dict[type, str]] = {str: "a string", list: "an array", dict: "an object"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)
