"""Check raw order-event bytes against the event contract.

``schemas/order.schema.json`` is the language-neutral contract; this module is
its fast runtime twin (a test feeds one corpus to both and requires the same
verdict). Every input ends as an :class:`Order` or a :class:`Rejection` with a
specific reason and a sentence a person can act on; nothing here raises on
bad input.

An event takes one of two paths. The fast path (:func:`_fast_order`) decodes the
usual shape of a valid order straight into typed objects and gives up, without
a reason, on anything else. The careful path (:func:`_decode_carefully`) parses
any JSON and checks field by field, in a fixed order, to name the first thing
wrong. The fast path only accepts what the careful path accepts, with the same
values, so an event's verdict does not depend on the path it took; a property
test compares the two on generated and mutated events.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Final

# msgspec decodes and checks the usual event in one pass of C, building the lines as
# it goes; with it (and the cached timestamp parts below) the "decode" step of
# python -m bench.hotpath fell from ~12 to ~3.4 us of CPU an event, where orjson.loads
# alone takes ~1.8. orjson stays for the careful path: the rejection reasons come from
# its field-by-field checks in a fixed order, and its error messages are in the details.
import msgspec
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

# The pattern of occurred_at in the schema, cut after the seconds (always 19 characters).
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}"
_FRACTION_ZONE = r"(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_TIMESTAMP = re.compile(_DATE_TIME + _FRACTION_ZONE)
_TAIL = re.compile(_FRACTION_ZONE)
_FRACTION = re.compile(r"\.([0-9]{1,9})")
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int = 65536
    max_items: int = 500
    max_quantity: int = 100_000


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_LENGTH)]
if TYPE_CHECKING:
    _OptionalLabel = _Label | None
else:
    # What msgspec reads: a string, or the default None when the field is absent.
    # "_Label | None" would also let an explicit null through, which the contract rejects.
    _OptionalLabel = _Label


class Item(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One order line.

    A frozen msgspec Struct rather than a dataclass: the fast path decodes the
    lines straight into it, and building one by hand costs a tenth of a frozen
    dataclass. The annotations are the contract's rules for a line, applied
    when msgspec decodes (not when an Item is built by hand); a line with a
    field the contract does not name goes to the careful path.
    """

    product_id: _Id
    category: _Id
    unit_price: Annotated[float, msgspec.Meta(gt=0, le=MAX_UNIT_PRICE)]
    quantity: Annotated[int, msgspec.Meta(ge=1)]  # at most Limits.max_quantity, checked after decoding
    attribution: _OptionalLabel = None

    @property
    def value(self) -> float:
        return self.unit_price * self.quantity


class Order(msgspec.Struct, frozen=True, gc=False):
    """A checked order event. A frozen msgspec Struct, as its lines are: built once per
    order on the hot path, it costs a fraction of a frozen dataclass."""

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
    order = _fast_order(raw, limits)
    if order is not None:
        return order
    return _decode_carefully(raw, limits)


class _OrderFields(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """The top level of an event as the fast path decodes it, before the Order is built."""

    order_id: _Id
    customer_id: _Id
    occurred_at: str
    currency: str
    items: Annotated[tuple[Item, ...], msgspec.Meta(min_length=1)]  # at most Limits.max_items, checked after
    channel: _OptionalLabel = None
    variant: _OptionalLabel = None


_FAST_DECODER: Final = msgspec.json.Decoder(_OrderFields)


def _fast_order(raw: bytes, limits: Limits) -> Order | None:
    """The Order when the event has the usual shape and passes every check, else None.

    None says nothing about validity: an unknown field, a quantity written as
    2.0 and every invalid event go to the careful path, which decides them and
    names the reason.
    """
    try:
        decoded = _FAST_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for invalid UTF-8 in a string
        return None
    items = decoded.items
    if len(items) > limits.max_items:
        return None
    max_quantity = limits.max_quantity
    for item in items:
        if item.quantity > max_quantity:
            return None
    if not _is_currency(decoded.currency):
        return None
    occurred_at = _fast_timestamp(decoded.occurred_at)
    if occurred_at is None:
        return None
    return Order(
        decoded.order_id, decoded.customer_id, occurred_at, decoded.currency, items, decoded.channel, decoded.variant
    )


@lru_cache(maxsize=256)
def _is_currency(text: str) -> bool:
    return _CURRENCY.fullmatch(text) is not None


def _fast_timestamp(text: str) -> float | None:
    """Unix seconds of occurred_at, exactly as :func:`_timestamp` gives them, or None to let it decide.

    The text splits into date and time up to the second (19 characters), then
    fraction and zone; each part is checked on its own against the pattern and
    by fromisoformat, and the sum of both is what datetime.timestamp() computes:
    whole microseconds since the epoch divided by 10**6. Neighbouring events
    share the first part and most share a handful of tails, so both are cached.
    """
    seconds = _whole_seconds(text[:19])
    if seconds is None:
        return None
    microseconds = _tail_microseconds(text[19:])
    if microseconds is None:
        return None
    return (seconds * 1_000_000 + microseconds) / 1_000_000


@lru_cache(maxsize=4096)
def _whole_seconds(date_time: str) -> int | None:
    """Unix seconds of 'YYYY-MM-DDTHH:MM:SS' taken as UTC, or None unless _timestamp accepts it followed by Z."""
    text = date_time + "Z"
    if _TIMESTAMP.fullmatch(text) is None:
        return None
    try:
        return int(datetime.fromisoformat(text.upper()).timestamp())
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _tail_microseconds(tail: str) -> int | None:
    """What fraction and zone (".250Z", "+02:00", ...) add to the time in microseconds, or None if malformed."""
    match = _TAIL.fullmatch(tail)
    if match is None:
        return None
    fraction, zone = match.group(1, 2)
    microseconds = int(fraction[1:7].ljust(6, "0")) if fraction else 0  # truncated to 6 digits, as _timestamp does
    if zone in ("Z", "z"):
        return microseconds
    offset = (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 1_000_000
    return microseconds - offset if zone[0] == "+" else microseconds + offset


def _decode_carefully(raw: bytes, limits: Limits) -> Order | Rejection:
    """Parse any JSON and check it field by field: the Order, or a Rejection naming the first fault."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            return Rejection(NOT_UTF8, f"the event is not UTF-8 text: {utf.reason} at byte {utf.start}")
        document = _with_huge_numbers(raw) if "infinity" in str(exc) else None
        if document is None:
            return Rejection(NOT_JSON, f"the event is not JSON: {exc}")
    try:
        return order_from_document(document, limits)
    except _Invalid as invalid:
        return Rejection(invalid.reason, invalid.detail)


def _with_huge_numbers(raw: bytes) -> Any:
    """The document of JSON that holds a number too large for a double (1e309, 10**400), or None.

    orjson refuses such JSON; it is still JSON, and the number is judged where it
    stands (a price or a quantity too large), so it is read again with such
    numbers as infinity.
    """
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
