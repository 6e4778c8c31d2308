"""schemas/order.schema.json and streams.orders.contract.decode_order give the same verdict on one corpus.

The schema is the language-neutral contract, decode_order its runtime twin.
Every event of the corpus goes through both: jsonschema's Draft 2020-12
validator with format checking (rfc3339-validator checks date-time) and
decode_order with the default Limits. Raw input that is not a JSON object
never reaches the schema: decode_order must reject it on its own.

Known limits of the comparison, on purpose outside the corpus:

* the byte limit (CROSSSELL_MAX_EVENT_BYTES) is stated in the schema's
  description, not in a keyword, so events above it are only rejected at
  runtime;
* Python's ``re`` lets ``$`` match before a final newline, so jsonschema (not
  the ECMA-262 regex the JSON Schema spec names) accepts "EUR\\n" as a
  currency; decode_order, using fullmatch, rejects it as the spec would.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from orders import (
    base_document,
    document_with,
    document_with_line,
    document_without,
    document_without_line_field,
    encode,
    line,
)

from streams.ops.traffic import OrderMaker, invalid_event
from streams.orders.contract import (
    MAX_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_UNIT_PRICE,
    Limits,
    Order,
    Rejection,
    decode_order,
)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "order.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
NOW = 1_795_372_200.0  # 2026-11-22T18:30:00Z
SEEDS = range(30)

VALID, INVALID = True, False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """The event as a JSON object, or None when it is not one (decode_order's job alone)."""
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return document if isinstance(document, dict) else None


def _maker_orders(seed: int) -> list[tuple[str, bytes, bool]]:
    maker = OrderMaker(random.Random(seed))
    return [(f"generated order, seed {seed}, #{n}", encode(maker.order(NOW + n)), VALID) for n in range(2)]


def _generated_invalid(seed: int) -> tuple[str, bytes, bool]:
    maker = OrderMaker(random.Random(seed))
    _, value = invalid_event(random.Random(seed), maker.order(NOW))
    return (f"traffic.invalid_event, seed {seed}", value, INVALID)


# (description, raw bytes, verdict the contract gives by reading it)
CORPUS: list[tuple[str, bytes, bool]] = [
    ("base order", encode(base_document()), VALID),
    ("without optional fields", encode(document_without("channel", "variant")), VALID),
    ("without attribution", encode(document_without_line_field("attribution", 1)), VALID),
    ("integer price", encode(document_with_line(unit_price=3)), VALID),
    ("quantity 2.0", encode(document_with_line(quantity=2.0)), VALID),
    ("quantity 100000", encode(document_with_line(quantity=100_000)), VALID),
    ("tiny positive price", encode(document_with_line(unit_price=1e-9)), VALID),
    ("price of 1e9", encode(document_with_line(unit_price=1_000_000_000)), VALID),
    ("nanosecond fraction", encode(document_with(occurred_at="2026-11-22T18:30:00.123456789Z")), VALID),
    ("offset +02:00", encode(document_with(occurred_at="2026-11-22T20:30:00+02:00")), VALID),
    ("offset -23:59", encode(document_with(occurred_at="2026-11-22T20:30:00-23:59")), VALID),
    ("lower-case t and z", encode(document_with(occurred_at="2026-11-22t18:30:00z")), VALID),
    ("leap day", encode(document_with(occurred_at="2028-02-29T12:00:00Z")), VALID),
    ("year 0001", encode(document_with(occurred_at="0001-01-01T00:00:00Z")), VALID),
    ("longest order_id", encode(document_with(order_id="o" * 128)), VALID),
    ("longest channel", encode(document_with(channel="c" * 64)), VALID),
    ("longest attribution", encode(document_with_line(attribution="a" * 64)), VALID),
    ("longest category", encode(document_with_line(category="k" * 128)), VALID),
    ("500 lines", encode(document_with(items=[line()] * 500)), VALID),
    ("unknown fields", encode(document_with(coupon={"code": "X"}, items=[line(colour="red")])), VALID),
    ("non-ascii labels", encode(document_with(channel="magasin-é", items=[line("p-ü", "küche")])), VALID),
    *(entry for seed in range(5) for entry in _maker_orders(seed)),
    *(
        (f"missing {name}", encode(document_without(name)), INVALID)
        for name in ("order_id", "customer_id", "occurred_at", "currency", "items")
    ),
    *(
        (f"missing line {name}", encode(document_without_line_field(name)), INVALID)
        for name in ("product_id", "category", "unit_price", "quantity")
    ),
    ("order_id is a number", encode(document_with(order_id=7)), INVALID),
    ("customer_id is null", encode(document_with(customer_id=None)), INVALID),
    ("occurred_at is a number", encode(document_with(occurred_at=NOW)), INVALID),
    ("currency is an array", encode(document_with(currency=["EUR"])), INVALID),
    ("items is an object", encode(document_with(items=line())), INVALID),
    ("a line is a string", encode(document_with(items=["p-1"])), INVALID),
    ("channel is null", encode(document_with(channel=None)), INVALID),
    ("variant is a boolean", encode(document_with(variant=False)), INVALID),
    ("unit_price is a string", encode(document_with_line(unit_price="9.99")), INVALID),
    ("unit_price is true", encode(document_with_line(unit_price=True)), INVALID),
    ("quantity is true", encode(document_with_line(quantity=True)), INVALID),
    ("quantity is 1.5", encode(document_with_line(quantity=1.5)), INVALID),
    ("attribution is a number", encode(document_with_line(1, attribution=1)), INVALID),
    ("empty order_id", encode(document_with(order_id="")), INVALID),
    ("empty variant", encode(document_with(variant="")), INVALID),
    ("empty product_id", encode(document_with_line(product_id="")), INVALID),
    ("order_id of 129 characters", encode(document_with(order_id="o" * 129)), INVALID),
    ("channel of 65 characters", encode(document_with(channel="c" * 65)), INVALID),
    ("category of 129 characters", encode(document_with_line(category="k" * 129)), INVALID),
    ("attribution of 65 characters", encode(document_with_line(attribution="a" * 65)), INVALID),
    ("no lines", encode(document_with(items=[])), INVALID),
    ("501 lines", encode(document_with(items=[line()] * 501)), INVALID),
    ("price 0", encode(document_with_line(unit_price=0)), INVALID),
    ("price -0.0", encode(document_with_line(unit_price=-0.0)), INVALID),
    ("price -5", encode(document_with_line(1, unit_price=-5)), INVALID),
    ("price just above 1e9", encode(document_with_line(unit_price=1_000_000_000.01)), INVALID),
    ("price 1e308", encode(document_with_line(unit_price=1e308)), INVALID),
    ("quantity 0", encode(document_with_line(quantity=0)), INVALID),
    ("quantity -1", encode(document_with_line(quantity=-1)), INVALID),
    ("quantity 100001", encode(document_with_line(quantity=100_001)), INVALID),
    ("quantity 100001.0", encode(document_with_line(quantity=100_001.0)), INVALID),
    ("currency eur", encode(document_with(currency="eur")), INVALID),
    ("currency EURO", encode(document_with(currency="EURO")), INVALID),
    ("timestamp without zone", encode(document_with(occurred_at="2026-11-22T18:30:00")), INVALID),
    ("timestamp date only", encode(document_with(occurred_at="2026-11-22")), INVALID),
    ("timestamp month 13", encode(document_with(occurred_at="2026-13-22T18:30:00Z")), INVALID),
    ("timestamp february 30", encode(document_with(occurred_at="2026-02-30T18:30:00Z")), INVALID),
    ("timestamp hour 24", encode(document_with(occurred_at="2026-11-22T24:00:00Z")), INVALID),
    ("timestamp leap second", encode(document_with(occurred_at="2026-12-31T23:59:60Z")), INVALID),
    ("timestamp ten fraction digits", encode(document_with(occurred_at="2026-11-22T18:30:00.1234567891Z")), INVALID),
    ("timestamp year 0000", encode(document_with(occurred_at="0000-01-01T00:00:00Z")), INVALID),
    ("timestamp offset +24:00", encode(document_with(occurred_at="2026-11-22T18:30:00+24:00")), INVALID),
    ("timestamp offset minute 60", encode(document_with(occurred_at="2026-11-22T18:30:00+00:60")), INVALID),
    ("timestamp offset minute 75", encode(document_with(occurred_at="2026-11-22T18:30:00-05:75")), INVALID),
    ("timestamp garbage", encode(document_with(occurred_at="yesterday")), INVALID),
    ("empty bytes", b"", INVALID),
    ("not utf-8", b"\xff\xfe" + encode(base_document()), INVALID),
    ("not json", b"{order_id: 1}", INVALID),
    ("NaN literal", b'{"order_id": NaN}', INVALID),
    ("json array", encode([base_document()]), INVALID),
    ("json null", b"null", INVALID),
    ("json string", b'"o-1"', INVALID),
    *(_generated_invalid(seed) for seed in SEEDS),
]

OBJECTS = [(d, raw, parse_json_object(raw), verdict) for d, raw, verdict in CORPUS if parse_json_object(raw)]
NOT_OBJECTS = [(d, raw) for d, raw, _ in CORPUS if parse_json_object(raw) is None]


def test_schema_is_a_valid_draft_2020_12_schema_with_date_time_checked() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    # Without rfc3339-validator jsonschema silently skips the date-time format.
    assert "date-time" in FormatChecker().checkers


def test_corpus_is_large_and_holds_both_verdicts() -> None:
    verdicts = [verdict for _, _, _, verdict in OBJECTS]
    assert len(CORPUS) >= 40
    assert verdicts.count(VALID) >= 10
    assert verdicts.count(INVALID) >= 30
    assert len(NOT_OBJECTS) >= 5


def test_schema_limits_equal_the_default_limits_and_lengths() -> None:
    properties = SCHEMA["properties"]
    line_properties = properties["items"]["items"]["properties"]
    assert properties["items"]["maxItems"] == Limits().max_items
    assert line_properties["quantity"]["maximum"] == Limits().max_quantity
    assert line_properties["unit_price"]["maximum"] == MAX_UNIT_PRICE
    assert {properties[name]["maxLength"] for name in ("order_id", "customer_id")} == {MAX_ID_LENGTH}
    assert {line_properties[name]["maxLength"] for name in ("product_id", "category")} == {MAX_ID_LENGTH}
    assert {properties[name]["maxLength"] for name in ("channel", "variant")} == {MAX_LABEL_LENGTH}
    assert line_properties["attribution"]["maxLength"] == MAX_LABEL_LENGTH


@pytest.mark.parametrize(
    ("document", "verdict"),
    [pytest.param(document, verdict, id=description) for description, _, document, verdict in OBJECTS],
)
def test_schema_gives_the_verdict_the_corpus_expects(document: dict[str, Any], verdict: bool) -> None:
    assert VALIDATOR.is_valid(document) is verdict, [error.message for error in VALIDATOR.iter_errors(document)]


def _assert_same_verdict(raw: bytes, document: dict[str, Any]) -> None:
    schema_errors = [error.message for error in VALIDATOR.iter_errors(document)]
    decoded = decode_order(raw)
    runtime = "Order" if isinstance(decoded, Order) else f"Rejection({decoded.reason}: {decoded.detail})"
    assert (not schema_errors) == isinstance(decoded, Order), f"schema errors: {schema_errors}; runtime: {runtime}"


@pytest.mark.parametrize(
    ("raw", "document"), [pytest.param(raw, document, id=description) for description, raw, document, _ in OBJECTS]
)
def test_decode_order_returns_an_order_exactly_when_the_schema_accepts(raw: bytes, document: dict[str, Any]) -> None:
    _assert_same_verdict(raw, document)


@pytest.mark.parametrize("raw", [pytest.param(raw, id=description) for description, raw in NOT_OBJECTS])
def test_decode_order_rejects_raw_input_that_is_not_a_json_object(raw: bytes) -> None:
    assert isinstance(decode_order(raw), Rejection)


# --- generated near-valid documents -----------------------------------------------

TOP_LEVEL_FIELDS = ("order_id", "customer_id", "occurred_at", "currency", "channel", "variant", "items")
LINE_FIELDS = ("product_id", "category", "unit_price", "quantity", "attribution")
STRING_FIELDS = ("order_id", "customer_id", "channel", "variant")
LINE_STRING_FIELDS = ("product_id", "category", "attribution")

# No "\n": see the module docstring on Python's "$".
_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n"), max_size=6)
_any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(_text, children, max_size=2),
    max_leaves=4,
)
_lengths = st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129])
_prices = (
    st.floats(-5, 5, allow_nan=False)
    | st.integers(-3, 3)
    | st.sampled_from([0, 0.0, -0.0, 5e-324, 1e-300, 999_999_999.99, 10**9, 1e9 + 0.01, 1e300, 10**20])
)
_quantities = st.integers(-2, 100_002) | st.sampled_from([2.0, 2.5, 100_000.0, 100_001.0, 1e20, -0.0, 0.5])


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    """Mostly well-formed RFC 3339 times, each part sometimes out of range."""
    year = draw(st.sampled_from([0, 1, 1970, 2024, 2026, 2028, 9999]))
    month = draw(st.sampled_from([*range(1, 13), 0, 13]))
    day = draw(st.integers(1, 28) | st.sampled_from([0, 29, 30, 31, 32]))
    hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
    separator = draw(st.sampled_from("TTt "))
    fraction = draw(st.sampled_from(["", ".5", ".250", ".123456", ".123456789", ".1234567891"]))
    offset = st.builds(
        lambda sign, hours, minutes: f"{sign}{hours:02d}:{minutes:02d}",
        st.sampled_from("+-"),
        st.integers(0, 25),
        st.integers(0, 99),
    )
    zone = draw(st.sampled_from(["Z", "z", ""]) | offset)
    return f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


def _lines(document: dict[str, Any]) -> list[dict[str, Any]]:
    items = document.get("items")
    return [entry for entry in items if isinstance(entry, dict)] if isinstance(items, list) else []


Mutation = Callable[[st.DrawFn, dict[str, Any]], None]


def _remove_field(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document.pop(draw(st.sampled_from(TOP_LEVEL_FIELDS)), None)


def _remove_line_field(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if lines := _lines(document):
        draw(st.sampled_from(lines)).pop(draw(st.sampled_from(LINE_FIELDS)), None)


def _swap_field(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document[draw(st.sampled_from(TOP_LEVEL_FIELDS))] = draw(_any_json)


def _swap_line_field(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if lines := _lines(document):
        draw(st.sampled_from(lines))[draw(st.sampled_from(LINE_FIELDS))] = draw(_any_json)


def _swap_line(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if isinstance(document.get("items"), list) and document["items"]:
        index = draw(st.integers(0, len(document["items"]) - 1))
        document["items"][index] = draw(_any_json)


def _resize_string(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document[draw(st.sampled_from(STRING_FIELDS))] = "s" * draw(_lengths)


def _resize_line_string(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if lines := _lines(document):
        draw(st.sampled_from(lines))[draw(st.sampled_from(LINE_STRING_FIELDS))] = "é" * draw(_lengths)


def _set_price(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if lines := _lines(document):
        draw(st.sampled_from(lines))["unit_price"] = draw(_prices)


def _set_quantity(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if lines := _lines(document):
        draw(st.sampled_from(lines))["quantity"] = draw(_quantities)


def _set_currency(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document["currency"] = draw(st.text("ABCEURXYZabc1€ ", max_size=4))


def _set_timestamp(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document["occurred_at"] = draw(_timestamps())


def _set_line_count(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document["items"] = [line(f"p-{n}") for n in range(draw(st.sampled_from([0, 1, 2, 499, 500, 501])))]


MUTATIONS: tuple[Mutation, ...] = (
    _remove_field,
    _remove_line_field,
    _swap_field,
    _swap_line_field,
    _swap_line,
    _resize_string,
    _resize_line_string,
    _set_price,
    _set_quantity,
    _set_currency,
    _set_timestamp,
    _set_line_count,
)


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = base_document()
    for _ in range(draw(st.integers(1, 3))):
        draw(st.sampled_from(MUTATIONS))(draw, document)
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_documents())
def test_schema_and_decode_order_agree_on_near_valid_documents(document: dict[str, Any]) -> None:
    raw = encode(document)
    # The byte limit is in the schema's description only (see the module docstring).
    assume(len(raw) <= Limits().max_event_bytes)
    parsed = parse_json_object(raw)
    assert parsed is not None
    _assert_same_verdict(raw, parsed)
