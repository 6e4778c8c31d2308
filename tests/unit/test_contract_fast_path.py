"""streams.orders.contract's fast path: it accepts only what the careful path accepts, with the same Order.

decode_order tries ``_fast_order`` (msgspec, cached timestamp parts) and falls
back to ``_decode_carefully`` (orjson, field-by-field checks) when it gives up.
These tests run both on generated, mutated and byte-damaged events: wherever the
fast path returns an Order, the careful path must return an equal one (floats
compared exactly), so no event's verdict depends on the path it took.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from orders import base_document, document_with, encode, line
from test_contract_fuzz import near_valid_events, valid_orders

from streams.ops.traffic import OrderMaker, rfc3339
from streams.orders.contract import (
    Item,
    Limits,
    Order,
    Rejection,
    _decode_carefully,
    _fast_order,
    _fast_timestamp,
    _Invalid,
    _timestamp,
    decode_order,
)

AGREEMENT = settings(max_examples=400, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = 1_795_372_200.0  # 2026-11-22T18:30:00Z
LIMITS = [Limits(), Limits(max_items=2, max_quantity=3)]


DEFAULT_LIMITS = Limits()


def assert_fast_path_agrees(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """Checks the event on both paths; returns which one decided it (for hypothesis' statistics)."""
    fast = _fast_order(raw, limits)
    careful = _decode_carefully(raw, limits)
    if fast is not None:
        assert careful == fast
        assert [(type(i.unit_price), type(i.quantity)) for i in fast.items] == [(float, int)] * len(fast.items)
    if len(raw) <= limits.max_event_bytes:  # decode_order rejects bigger events before either path
        assert decode_order(raw, limits) == (fast if fast is not None else careful)
    return "fast path" if fast is not None else f"careful path: {getattr(careful, 'reason', 'order')}"


# -- whole events -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_fast_path_takes_the_orders_the_traffic_generator_makes(seed: int) -> None:
    maker = OrderMaker(random.Random(seed))
    for n in range(20):
        raw = orjson.dumps(maker.order(NOW + n * 0.731))
        assert _fast_order(raw, Limits()) is not None
        assert_fast_path_agrees(raw)


@pytest.mark.parametrize(
    "occurred_at",
    ["2026-11-22T18:30:00Z", "2026-11-22t18:30:00z", "2026-11-22T18:30:00.5Z", "2026-11-22T18:30:00.123456789Z",
     "2026-11-22T20:30:00+02:00", "2026-11-21T23:45:10.25-05:30", "0001-01-01T00:00:00+01:00",
     "9999-12-31T23:59:59.999999999-23:59"],
)
def test_fast_path_takes_every_form_of_timestamp(occurred_at: str) -> None:
    raw = encode(document_with(occurred_at=occurred_at))
    assert _fast_order(raw, Limits()) is not None
    assert_fast_path_agrees(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(encode(document_with(coupon="X")), id="unknown top-level field"),
        pytest.param(encode(document_with(items=[line(colour="red")])), id="unknown line field"),
        pytest.param(encode(document_with(items=[line(quantity=2.0)])), id="quantity written as 2.0"),
        pytest.param(encode(document_with(channel=None)), id="null channel"),
        pytest.param(encode(document_with(items=[line(attribution=None)])), id="null attribution"),
        pytest.param(encode(document_with(currency="EUR\n")), id="currency with a final newline"),
        pytest.param(b'{"order_id": "", ' + encode(base_document())[1:], id="empty, then a valid duplicate"),
        pytest.param(encode(base_document())[:-1] + b', "order_id": ""}', id="valid, then an empty duplicate"),
        pytest.param(encode(base_document())[:-1] + b', "order_id": "o-2"}', id="valid duplicates"),
    ],
)
def test_fast_path_leaves_the_unusual_to_the_careful_path(raw: bytes) -> None:
    assert_fast_path_agrees(raw)


@AGREEMENT
@given(valid_orders(), st.sampled_from(LIMITS))
def test_fast_path_agrees_on_valid_orders(document: dict[str, Any], limits: Limits) -> None:
    event(assert_fast_path_agrees(orjson.dumps(document), limits))


@AGREEMENT
@given(near_valid_events(), st.sampled_from(LIMITS))
def test_fast_path_agrees_on_near_valid_events(raw: bytes, limits: Limits) -> None:
    event(assert_fast_path_agrees(raw, limits))


_damage = st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1),
                    st.binary(min_size=1, max_size=3) | st.sampled_from([b"null", b"\\u0000", b"\\ud800", b"e9", b"-",
                                                                           b".0", b" ", b",", b'"', b"\\"]))


@AGREEMENT
@given(valid_orders(), st.lists(_damage, min_size=1, max_size=3))
def test_fast_path_agrees_on_damaged_bytes(document: dict[str, Any], damage: list[tuple[str, float, bytes]]) -> None:
    raw = orjson.dumps(document)
    for kind, where, data in damage:
        at = int(where * len(raw))
        if kind == "insert":
            raw = raw[:at] + data + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + len(data):]
        else:
            raw = raw[:at] + data + raw[at + len(data):]
    event(assert_fast_path_agrees(raw))


_price_texts = (
    st.floats(1e-12, 2e9, allow_nan=False).map(repr)
    | st.floats(1e-12, 2e9, allow_nan=False).map(lambda price: f"{price:.25e}")
    | st.floats(1e-12, 2e9, allow_nan=False).map(lambda price: f"{price:.40f}")
    | st.integers(-5, 2 * 10**9).map(str)
    | st.sampled_from(["1E2", "1e+2", "1.0e-0", "5e-324", "-0", "-0.0", "0.1" + "0" * 400 + "1",
                       "999999999.9999999999999", "1000000000.0000000000001", "1" + "0" * 400, "1e400"])
)
_quantity_texts = st.integers(-2, 100_002).map(str) | st.sampled_from(["2.0", "1e0", "1E2", "-0", str(2**70)])


@AGREEMENT
@given(_price_texts, _quantity_texts)
def test_fast_path_reads_numbers_as_the_careful_path_does(price: str, quantity: str) -> None:
    raw = orjson.dumps(base_document()).replace(b'"unit_price":12.5', f'"unit_price":{price}'.encode()).replace(
        b'"quantity":1', f'"quantity":{quantity}'.encode(), 1)
    assert f'"unit_price":{price}'.encode() in raw
    event(assert_fast_path_agrees(raw))


_characters = st.characters(codec="utf-8") | st.sampled_from(["\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "\U0001f600"])


@AGREEMENT
@given(st.text(_characters, min_size=0, max_size=130), st.booleans(), st.sampled_from(["order_id", "channel"]))
def test_fast_path_reads_strings_as_the_careful_path_does(text: str, ascii_only: bool, field: str) -> None:
    document = base_document()
    document[field] = text
    document["items"][0]["attribution"] = text
    event(assert_fast_path_agrees(json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("escaped", ["\\ud800", "\\udc00", "\\ud800\\u0041", "\\udc00\\ud800", "\\ud83d\\ude00"])
def test_fast_path_reads_surrogate_escapes_as_the_careful_path_does(escaped: str) -> None:
    raw = encode(base_document()).replace(b'"o-1"', f'"o-{escaped}"'.encode())
    assert f'"o-{escaped}"'.encode() in raw
    assert_fast_path_agrees(raw)


def test_an_order_from_the_fast_path_is_an_ordinary_frozen_order() -> None:
    raw = encode(base_document())
    fast = _fast_order(raw, Limits())
    assert type(fast) is Order
    items = (Item("p-1", "books", 12.5, 1), Item("p-2", "toys", 4.0, 2, "cart_upsell"))
    assert fast == Order("o-1", "c-1", NOW, "EUR", items, "web", "control")
    assert hash(fast) == hash(_decode_carefully(raw, Limits()))
    with pytest.raises(AttributeError):
        fast.order_id = "o-2"  # type: ignore[misc]


def test_an_item_is_immutable() -> None:
    item = Item("p-1", "books", 12.5, 2)
    with pytest.raises(AttributeError):
        item.quantity = 3  # type: ignore[misc]
    assert item.value == 25.0


# -- timestamps ---------------------------------------------------------------------


def careful_timestamp(text: str) -> float | None:
    try:
        return _timestamp({"occurred_at": text})
    except _Invalid:
        return None


_digits = st.text("0123456789", min_size=1, max_size=10)


@st.composite
def timestamp_texts(draw: st.DrawFn) -> str:
    """RFC 3339 times and near misses: every part in and out of range, odd digits, cut or padded."""
    moment = draw(st.floats(-62_135_596_800 + 86_400, 253_402_300_799 - 86_400, allow_nan=False))
    text = rfc3339(moment)[:19]
    if draw(st.booleans()):
        year, month, day = draw(st.integers(0, 9999)), draw(st.integers(0, 13)), draw(st.integers(0, 32))
        hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
        separator = draw(st.sampled_from("TTt _"))
        text = f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}"
    fraction = draw(st.sampled_from(["", ".", "."]) | _digits.map(lambda digits: "." + digits))
    offset = st.builds(lambda sign, hours, minutes: f"{sign}{hours}:{minutes}", st.sampled_from(["+", "-", "−", ""]),
                       st.sampled_from(["00", "05", "12", "19", "23", "24", "99", "1", "٠٢"]),
                       st.sampled_from(["00", "30", "45", "59", "60", "7"]))
    zone = draw(st.sampled_from(["Z", "z", "", "ZZ", "+0200", "UTC"]) | offset)
    text += fraction + zone
    if draw(st.integers(0, 9)) == 0:  # an odd character anywhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "٣", "²", "0", " ", "\n", "x"])) + text[at + 1:]
    return text


@settings(max_examples=2000, deadline=None, database=None)
@given(timestamp_texts() | st.text(max_size=40))
def test_fast_timestamp_accepts_and_reads_exactly_what_the_careful_check_does(text: str) -> None:
    expected = careful_timestamp(text)
    event("valid" if expected is not None else "invalid")
    assert _fast_timestamp(text) == expected


@settings(max_examples=500, deadline=None, database=None)
@given(st.floats(-62_135_596_800 + 86_400, 253_402_300_799 - 86_400, allow_nan=False),
       st.sampled_from(["seconds", "milliseconds", "microseconds"]), st.sampled_from(["Z", "+05:30", "-23:59"]))
def test_fast_timestamp_reads_generated_times_exactly(moment: float, timespec: str, zone: str) -> None:
    text = rfc3339(moment).removesuffix("Z")[:19] + {"seconds": "", "milliseconds": ".123",
                                                      "microseconds": ".123456"}[timespec] + zone
    assert _fast_timestamp(text) == careful_timestamp(text)
    assert _fast_timestamp(text) is not None


def test_fast_timestamp_truncates_beyond_microseconds() -> None:
    assert _fast_timestamp("2026-11-22T18:30:00.123456999Z") == NOW + 0.123456
    assert _fast_timestamp("2026-11-22T18:30:00.123456999Z") == careful_timestamp("2026-11-22T18:30:00.123456999Z")


def test_rejections_are_the_careful_paths() -> None:
    raw = encode(document_with(currency="eur"))
    assert _fast_order(raw, Limits()) is None
    assert decode_order(raw) == _decode_carefully(raw, Limits())
    assert isinstance(decode_order(raw), Rejection)
