"""streams.orders.contract: every rejection reason decode_order can give, and the fields of a valid order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from orders import (
    base_document,
    document_with,
    document_with_line,
    document_without,
    document_without_line_field,
    encode,
    line,
)

from streams.orders.contract import (
    BAD_CURRENCY,
    BAD_TIMESTAMP,
    BEFORE_RETENTION,
    EMPTY,
    EMPTY_FIELD,
    FIELD_TOO_LONG,
    FUTURE_EVENT_TIME,
    MISSING_FIELD,
    NO_ITEMS,
    NON_POSITIVE_PRICE,
    NON_POSITIVE_QUANTITY,
    NOT_JSON,
    NOT_OBJECT,
    NOT_UTF8,
    OVERSIZED,
    PRICE_TOO_LARGE,
    QUANTITY_TOO_LARGE,
    REASONS,
    TOO_MANY_ITEMS,
    WRONG_TYPE,
    Item,
    Limits,
    Order,
    Rejection,
    decode_order,
)

# Reasons the ledger decides against the record timestamp and the watermark, not decode_order.
LEDGER_REASONS = {FUTURE_EVENT_TIME, BEFORE_RETENTION}

BASE_RAW = encode(base_document())
TOP_LEVEL_REQUIRED = ("order_id", "customer_id", "occurred_at", "currency", "items")
LINE_REQUIRED = ("product_id", "category", "unit_price", "quantity")

# (description, raw bytes, expected reason, field the detail must name or None)
REJECTED_WITH_DEFAULT_LIMITS: list[tuple[str, bytes, str, str | None]] = [
    ("empty bytes", b"", EMPTY, None),
    ("byte order mark garbage before the json", b"\xff\xfe" + BASE_RAW, NOT_UTF8, None),
    ("invalid utf-8 inside a string", b'{"order_id": "\xc3\x28"}', NOT_UTF8, None),
    ("truncated json", BASE_RAW[:-1], NOT_JSON, None),
    ("plain text", b"order please", NOT_JSON, None),
    ("whitespace only", b"   ", NOT_JSON, None),
    ("NaN is not json", b'{"order_id": NaN}', NOT_JSON, None),
    ("json array", b"[]", NOT_OBJECT, None),
    ("json string", b'"o-1"', NOT_OBJECT, None),
    ("json null", b"null", NOT_OBJECT, None),
    ("json number", b"42", NOT_OBJECT, None),
    *((f"missing {name}", encode(document_without(name)), MISSING_FIELD, name) for name in TOP_LEVEL_REQUIRED),
    *(
        (f"missing line {name}", encode(document_without_line_field(name)), MISSING_FIELD, f"items[0].{name}")
        for name in LINE_REQUIRED
    ),
    (
        "missing field of the second line",
        encode(document_without_line_field("quantity", 1)),
        MISSING_FIELD,
        "items[1].quantity",
    ),
    ("order_id is a number", encode(document_with(order_id=42)), WRONG_TYPE, "order_id"),
    ("customer_id is null", encode(document_with(customer_id=None)), WRONG_TYPE, "customer_id"),
    ("occurred_at is unix seconds", encode(document_with(occurred_at=1795372200)), WRONG_TYPE, "occurred_at"),
    ("currency is an array", encode(document_with(currency=["EUR"])), WRONG_TYPE, "currency"),
    ("items is an object", encode(document_with(items=line())), WRONG_TYPE, "items"),
    ("a line is a string", encode(document_with(items=["p-1"])), WRONG_TYPE, "items[0]"),
    ("a line is null", encode(document_with(items=[line(), None])), WRONG_TYPE, "items[1]"),
    ("channel is a number", encode(document_with(channel=7)), WRONG_TYPE, "channel"),
    ("variant is a boolean", encode(document_with(variant=True)), WRONG_TYPE, "variant"),
    ("channel is null", encode(document_with(channel=None)), WRONG_TYPE, "channel"),
    ("product_id is a number", encode(document_with_line(product_id=1)), WRONG_TYPE, "items[0].product_id"),
    ("category is null", encode(document_with_line(category=None)), WRONG_TYPE, "items[0].category"),
    ("unit_price is a string", encode(document_with_line(unit_price="12.50")), WRONG_TYPE, "items[0].unit_price"),
    ("unit_price is true", encode(document_with_line(unit_price=True)), WRONG_TYPE, "items[0].unit_price"),
    ("quantity is true", encode(document_with_line(quantity=True)), WRONG_TYPE, "items[0].quantity"),
    ("quantity is false", encode(document_with_line(quantity=False)), WRONG_TYPE, "items[0].quantity"),
    ("quantity is a fraction", encode(document_with_line(quantity=1.5)), WRONG_TYPE, "items[0].quantity"),
    ("quantity is a string", encode(document_with_line(quantity="2")), WRONG_TYPE, "items[0].quantity"),
    (
        "second line quantity is a fraction",
        encode(document_with_line(1, quantity=2.5)),
        WRONG_TYPE,
        "items[1].quantity",
    ),
    ("attribution is a boolean", encode(document_with_line(attribution=False)), WRONG_TYPE, "items[0].attribution"),
    ("order_id is empty", encode(document_with(order_id="")), EMPTY_FIELD, "order_id"),
    ("customer_id is empty", encode(document_with(customer_id="")), EMPTY_FIELD, "customer_id"),
    ("channel is empty", encode(document_with(channel="")), EMPTY_FIELD, "channel"),
    ("variant is empty", encode(document_with(variant="")), EMPTY_FIELD, "variant"),
    ("product_id is empty", encode(document_with_line(product_id="")), EMPTY_FIELD, "items[0].product_id"),
    ("category is empty", encode(document_with_line(category="")), EMPTY_FIELD, "items[0].category"),
    ("attribution is empty", encode(document_with_line(attribution="")), EMPTY_FIELD, "items[0].attribution"),
    ("order_id has 129 characters", encode(document_with(order_id="x" * 129)), FIELD_TOO_LONG, "order_id"),
    ("customer_id has 129 characters", encode(document_with(customer_id="é" * 129)), FIELD_TOO_LONG, "customer_id"),
    ("channel has 65 characters", encode(document_with(channel="w" * 65)), FIELD_TOO_LONG, "channel"),
    ("variant has 65 characters", encode(document_with(variant="v" * 65)), FIELD_TOO_LONG, "variant"),
    (
        "product_id has 129 characters",
        encode(document_with_line(product_id="p" * 129)),
        FIELD_TOO_LONG,
        "items[0].product_id",
    ),
    (
        "category has 129 characters",
        encode(document_with_line(category="c" * 129)),
        FIELD_TOO_LONG,
        "items[0].category",
    ),
    (
        "attribution has 65 characters",
        encode(document_with_line(attribution="a" * 65)),
        FIELD_TOO_LONG,
        "items[0].attribution",
    ),
    ("no lines", encode(document_with(items=[])), NO_ITEMS, "items"),
    ("501 lines", encode(document_with(items=[line()] * 501)), TOO_MANY_ITEMS, None),
    ("price zero", encode(document_with_line(unit_price=0)), NON_POSITIVE_PRICE, "items[0].unit_price"),
    ("price 0.0", encode(document_with_line(unit_price=0.0)), NON_POSITIVE_PRICE, "items[0].unit_price"),
    ("price negative", encode(document_with_line(unit_price=-3.5)), NON_POSITIVE_PRICE, "items[0].unit_price"),
    ("price above 1e9", encode(document_with_line(unit_price=1e9 + 0.01)), PRICE_TOO_LARGE, "items[0].unit_price"),
    ("price 1e308", encode(document_with_line(1, unit_price=1e308)), PRICE_TOO_LARGE, "items[1].unit_price"),
    # Beyond a double: orjson refuses the text, and it is still JSON with a price too large.
    ("price 1e309", encode(document_with_line(unit_price=1e308)).replace(b"1e+308", b"1e309"), PRICE_TOO_LARGE,
     "items[0].unit_price"),
    ("price 10**400", encode(document_with_line(unit_price=1e308)).replace(b"1e+308", b"1" + b"0" * 400),
     PRICE_TOO_LARGE, "items[0].unit_price"),
    ("quantity 10**400",
     encode(document_with_line(quantity=7)).replace(b'"quantity": 7', b'"quantity": 1' + b"0" * 400),
     QUANTITY_TOO_LARGE, "items[0].quantity"),
    ("NaN price", encode(document_with_line(unit_price=1e308)).replace(b"1e+308", b"NaN"), NOT_JSON, None),
    (
        "second line price negative",
        encode(document_with_line(1, unit_price=-1)),
        NON_POSITIVE_PRICE,
        "items[1].unit_price",
    ),
    ("quantity zero", encode(document_with_line(quantity=0)), NON_POSITIVE_QUANTITY, "items[0].quantity"),
    ("quantity negative", encode(document_with_line(quantity=-2)), NON_POSITIVE_QUANTITY, "items[0].quantity"),
    ("quantity -1.0", encode(document_with_line(quantity=-1.0)), NON_POSITIVE_QUANTITY, "items[0].quantity"),
    ("quantity above 100000", encode(document_with_line(quantity=100_001)), QUANTITY_TOO_LARGE, "items[0].quantity"),
    ("currency in lower case", encode(document_with(currency="eur")), BAD_CURRENCY, "currency"),
    ("currency with four letters", encode(document_with(currency="EURO")), BAD_CURRENCY, "currency"),
    ("currency with two letters", encode(document_with(currency="EU")), BAD_CURRENCY, "currency"),
    ("currency with a digit", encode(document_with(currency="E1R")), BAD_CURRENCY, "currency"),
    ("currency is a symbol", encode(document_with(currency="€€€")), BAD_CURRENCY, "currency"),
    ("currency is empty", encode(document_with(currency="")), BAD_CURRENCY, "currency"),
    (
        "timestamp without a zone",
        encode(document_with(occurred_at="2026-11-22T18:30:00")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    ("timestamp is a date only", encode(document_with(occurred_at="2026-11-22")), BAD_TIMESTAMP, "occurred_at"),
    ("timestamp in month 13", encode(document_with(occurred_at="2026-13-01T00:00:00Z")), BAD_TIMESTAMP, "occurred_at"),
    (
        "timestamp on february 30",
        encode(document_with(occurred_at="2026-02-30T00:00:00Z")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    ("timestamp at hour 24", encode(document_with(occurred_at="2026-11-22T24:00:00Z")), BAD_TIMESTAMP, "occurred_at"),
    (
        "timestamp with a leap second",
        encode(document_with(occurred_at="2026-12-31T23:59:60Z")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    (
        "timestamp with a space separator",
        encode(document_with(occurred_at="2026-11-22 18:30:00Z")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    (
        "timestamp with ten fraction digits",
        encode(document_with(occurred_at="2026-11-22T18:30:00.1234567891Z")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    (
        "timestamp offset without colon",
        encode(document_with(occurred_at="2026-11-22T18:30:00+0200")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    (
        "timestamp offset of 24 hours",
        encode(document_with(occurred_at="2026-11-22T18:30:00+24:00")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    (
        "timestamp offset minute 60",
        encode(document_with(occurred_at="2026-11-22T18:30:00+00:60")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    (
        "timestamp offset minute 75",
        encode(document_with(occurred_at="2026-11-22T18:30:00-12:75")),
        BAD_TIMESTAMP,
        "occurred_at",
    ),
    ("timestamp in year 0", encode(document_with(occurred_at="0000-01-01T00:00:00Z")), BAD_TIMESTAMP, "occurred_at"),
    ("timestamp is garbage", encode(document_with(occurred_at="yesterday")), BAD_TIMESTAMP, "occurred_at"),
    ("timestamp is empty", encode(document_with(occurred_at="")), BAD_TIMESTAMP, "occurred_at"),
]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [pytest.param(raw, reason, id=description) for description, raw, reason, _ in REJECTED_WITH_DEFAULT_LIMITS],
)
def test_decode_order_rejects_with_the_specific_reason(raw: bytes, reason: str) -> None:
    decoded = decode_order(raw)
    assert isinstance(decoded, Rejection)
    assert decoded.reason == reason
    assert decoded.detail


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(raw, field, id=description)
        for description, raw, _, field in REJECTED_WITH_DEFAULT_LIMITS
        if field is not None
    ],
)
def test_rejection_detail_names_the_offending_field(raw: bytes, field: str) -> None:
    decoded = decode_order(raw)
    assert isinstance(decoded, Rejection)
    assert field in decoded.detail


def test_decode_order_treats_a_null_message_as_empty() -> None:
    decoded = decode_order(None)
    assert isinstance(decoded, Rejection)
    assert decoded.reason == EMPTY


# (description, raw, limits, expected reason, text the detail must contain)
_SMALL_BASE = encode(document_with(channel="w", variant="v"))
REJECTED_BY_LIMITS: list[tuple[str, bytes, Limits, str, str]] = [
    (
        "one byte over max_event_bytes",
        BASE_RAW,
        Limits(max_event_bytes=len(BASE_RAW) - 1),
        OVERSIZED,
        str(len(BASE_RAW) - 1),
    ),
    ("far over a small max_event_bytes", _SMALL_BASE, Limits(max_event_bytes=16), OVERSIZED, "16"),
    ("more lines than max_items", BASE_RAW, Limits(max_items=1), TOO_MANY_ITEMS, "1"),
    (
        "three lines with max_items 2",
        encode(document_with(items=[line()] * 3)),
        Limits(max_items=2),
        TOO_MANY_ITEMS,
        "3",
    ),
    (
        "quantity above a small max_quantity",
        encode(document_with_line(quantity=6)),
        Limits(max_quantity=5),
        QUANTITY_TOO_LARGE,
        "items[0].quantity",
    ),
    ("second line above max_quantity", BASE_RAW, Limits(max_quantity=1), QUANTITY_TOO_LARGE, "items[1].quantity"),
]


@pytest.mark.parametrize(
    ("raw", "limits", "reason", "mentioned"),
    [
        pytest.param(raw, limits, reason, mentioned, id=description)
        for description, raw, limits, reason, mentioned in REJECTED_BY_LIMITS
    ],
)
def test_decode_order_enforces_its_limits(raw: bytes, limits: Limits, reason: str, mentioned: str) -> None:
    decoded = decode_order(raw, limits)
    assert isinstance(decoded, Rejection)
    assert decoded.reason == reason
    assert mentioned in decoded.detail


@pytest.mark.parametrize(
    ("raw", "limits"),
    [
        pytest.param(BASE_RAW, Limits(max_event_bytes=len(BASE_RAW)), id="exactly max_event_bytes"),
        pytest.param(BASE_RAW, Limits(max_items=2), id="exactly max_items lines"),
        pytest.param(BASE_RAW, Limits(max_quantity=2), id="quantity exactly max_quantity"),
        pytest.param(encode(document_with(items=[line()] * 500)), Limits(), id="500 lines by default"),
        pytest.param(encode(document_with_line(quantity=100_000)), Limits(), id="quantity 100000 by default"),
        pytest.param(encode(document_with_line(unit_price=1_000_000_000)), Limits(), id="price of 1e9"),
    ],
)
def test_decode_order_accepts_events_at_its_limits(raw: bytes, limits: Limits) -> None:
    assert isinstance(decode_order(raw, limits), Order)


def test_rejection_table_covers_every_reason_decode_order_can_give() -> None:
    covered = {reason for _, _, reason, _ in REJECTED_WITH_DEFAULT_LIMITS}
    covered |= {reason for _, _, _, reason, _ in REJECTED_BY_LIMITS}
    assert covered == set(REASONS) - LEDGER_REASONS


# --- valid orders -------------------------------------------------------------


PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE_THIRTY = timezone(-timedelta(hours=5, minutes=30))
BASE_EPOCH = datetime(2026, 11, 22, 18, 30, tzinfo=UTC).timestamp()
BASE_ITEMS = (Item("p-1", "books", 12.5, 1), Item("p-2", "toys", 4.0, 2, "cart_upsell"))
BASE_ORDER = Order("o-1", "c-1", BASE_EPOCH, "EUR", BASE_ITEMS, "web", "control")


def _minimal_document(**changes: Any) -> dict[str, Any]:
    document = document_without("channel", "variant")
    document["items"] = [line()]
    document.update(changes)
    return document


ONE_LINE = (Item("p-1", "books", 12.5, 1),)


def _expected(occurred_at: float = BASE_EPOCH, items: tuple[Item, ...] = ONE_LINE, **fields: Any) -> Order:
    return Order(
        **{"order_id": "o-1", "customer_id": "c-1", "currency": "EUR", **fields}, occurred_at=occurred_at, items=items
    )


# (description, document, expected Order)
VALID: list[tuple[str, dict[str, Any], Order]] = [
    ("every field", base_document(), BASE_ORDER),
    ("no channel, variant or attribution", _minimal_document(), _expected()),
    (
        "integer price",
        _minimal_document(items=[line(unit_price=12)]),
        _expected(items=(Item("p-1", "books", 12.0, 1),)),
    ),
    (
        "quantity written as 2.0",
        _minimal_document(items=[line(quantity=2.0)]),
        _expected(items=(Item("p-1", "books", 12.5, 2),)),
    ),
    (
        "smallest price, largest quantity",
        _minimal_document(items=[line(unit_price=0.01, quantity=100_000)]),
        _expected(items=(Item("p-1", "books", 0.01, 100_000),)),
    ),
    ("millisecond fraction", _minimal_document(occurred_at="2026-11-22T18:30:00.250Z"), _expected(BASE_EPOCH + 0.25)),
    (
        "nanosecond fraction",
        _minimal_document(occurred_at="2026-11-22T18:30:00.123456789Z"),
        _expected(BASE_EPOCH + 123_456_789e-9),
    ),
    ("one fraction digit", _minimal_document(occurred_at="2026-11-22T18:30:00.5Z"), _expected(BASE_EPOCH + 0.5)),
    (
        "offset +02:00",
        _minimal_document(occurred_at="2026-11-22T20:30:00+02:00"),
        _expected(datetime(2026, 11, 22, 20, 30, tzinfo=PLUS_TWO).timestamp()),
    ),
    (
        "offset -05:30 across midnight",
        _minimal_document(occurred_at="2026-11-21T23:45:10-05:30"),
        _expected(datetime(2026, 11, 21, 23, 45, 10, tzinfo=MINUS_FIVE_THIRTY).timestamp()),
    ),
    ("offset +00:00", _minimal_document(occurred_at="2026-11-22T18:30:00+00:00"), _expected()),
    ("lower-case t and z", _minimal_document(occurred_at="2026-11-22t18:30:00z"), _expected()),
    (
        "leap day",
        _minimal_document(occurred_at="2028-02-29T00:00:00Z"),
        _expected(datetime(2028, 2, 29, tzinfo=UTC).timestamp()),
    ),
    (
        "longest ids and labels",
        _minimal_document(
            order_id="o" * 128,
            customer_id="c" * 128,
            channel="w" * 64,
            variant="v" * 64,
            items=[line("p" * 128, "k" * 128, attribution="a" * 64)],
        ),
        _expected(
            items=(Item("p" * 128, "k" * 128, 12.5, 1, "a" * 64),),
            order_id="o" * 128,
            customer_id="c" * 128,
            channel="w" * 64,
            variant="v" * 64,
        ),
    ),
    ("unknown fields are ignored", _minimal_document(coupon="X", items=[line(colour="red")]), _expected()),
    (
        "non-ascii ids",
        _minimal_document(order_id="commande-é-1", items=[line("produit-ü", "küche")]),
        _expected(items=(Item("produit-ü", "küche", 12.5, 1),), order_id="commande-é-1"),
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [pytest.param(encode(document), expected, id=description) for description, document, expected in VALID],
)
def test_decode_order_parses_every_field_of_a_valid_order(raw: bytes, expected: Order) -> None:
    decoded = decode_order(raw)
    assert isinstance(decoded, Order), decoded
    assert decoded.occurred_at == pytest.approx(expected.occurred_at, abs=1e-6)
    assert msgspec.structs.replace(decoded, occurred_at=0.0) == msgspec.structs.replace(expected, occurred_at=0.0)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_minimal_document(items=[line(unit_price=12)]), id="integer price"),
        pytest.param(_minimal_document(items=[line(quantity=2.0)]), id="quantity 2.0"),
    ],
)
def test_decode_order_normalises_price_to_float_and_quantity_to_int(document: dict[str, Any]) -> None:
    decoded = decode_order(encode(document))
    assert isinstance(decoded, Order)
    assert [(type(item.unit_price), type(item.quantity)) for item in decoded.items] == [(float, int)]


# --- never raises -------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_decode_order_turns_any_bytes_into_an_order_or_a_known_rejection(raw: bytes) -> None:
    decoded = decode_order(raw)
    assert isinstance(decoded, Order) or decoded.reason in REASONS


@given(_json_values)
def test_decode_order_turns_any_json_value_into_an_order_or_a_known_rejection(value: Any) -> None:
    decoded = decode_order(encode(value))
    assert isinstance(decoded, Order) or (decoded.reason in REASONS and decoded.detail)
