"""Fuzzing the contract and the ledger: every input gets a verdict, nothing raises.

Two kinds of input: arbitrary bytes, and near-valid orders (a valid order with
random mutations: keys dropped, types swapped, extreme numbers, long strings,
nested garbage, invalid UTF-8, very many items). Each goes through
``decode_order`` and then ``PartitionLedger.apply`` with increasing offsets;
the verdict must be APPLIED, or INVALID/LATE/DUPLICATE, and every rejection
names a reason from ``contract.REASONS``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streams.ops.traffic import rfc3339
from streams.orders.config import WindowConfig
from streams.orders.contract import MAX_UNIT_PRICE, REASONS, Limits, Order, Rejection, decode_order
from streams.orders.ledger import PartitionLedger, Verdict

FUZZ = settings(max_examples=500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = time.time()
# As the worker runs it by default, pair counting included (streams.orders.ledger.window_config).
CONFIG = WindowConfig(pair_horizons=(("24h", 86400.0), ("7d", 604800.0)), pair_partitions=4)
VERDICTS = {Verdict.APPLIED, Verdict.INVALID, Verdict.LATE, Verdict.DUPLICATE}

# -- valid orders ---------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
event_times = st.floats(NOW - 7200, NOW + 60, allow_nan=False)


@st.composite
def valid_orders(draw: st.DrawFn) -> dict[str, Any]:
    items = draw(st.lists(st.fixed_dictionaries(
        {"product_id": names, "category": st.sampled_from(["books", "toys", "garden", "electronics"]),
         "unit_price": st.floats(0.01, 5000, allow_nan=False) | st.integers(1, 5000),
         "quantity": st.integers(1, 5)},
        optional={"attribution": names},
    ), min_size=1, max_size=6))
    order: dict[str, Any] = {
        "order_id": draw(st.sampled_from(["o-1", "o-2", "o-3"]) | names),  # repeats make duplicates
        "customer_id": draw(names),
        "occurred_at": rfc3339(draw(event_times)),
        "currency": draw(st.sampled_from(["EUR", "USD", "JPY"])),
        "items": items,
    }
    for optional in ("channel", "variant"):
        if draw(st.booleans()):
            order[optional] = draw(names)
    return order


# -- mutations -------------------------------------------------------------------

json_leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
nested_garbage = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
extreme_numbers = st.sampled_from([
    0, -1, -0.0, 0.0, 1e-320, -1e308, 1e308, 1.7976931348623157e308, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
    -(2**63), 10**30, 100_000, 100_001, 1.5, 2.0, 1e20, float("inf"), float("-inf"), float("nan"),
    MAX_UNIT_PRICE, MAX_UNIT_PRICE + 1, MAX_UNIT_PRICE + 0.5,
])
odd_strings = st.sampled_from([
    "", " ", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "y" * 10_000, "z" * 70_000, "\u0000", "\x1f", "é" * 129,
    "\U0001f600" * 100, "2026-11-22T18:30:00Z", "2026-11-22T18:30:00", "2026-02-30T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999999-23:59", "2026-11-22T24:00:00Z",
    "2026-11-22T23:59:60Z", "2026-11-22T18:30:00+99:99", "2026-11-22T18:30:00+05:60", "2026-11-22T18:30:00+24:00",
    "yesterday", "eur", "EURO", "€UR",
])
invalid_utf8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
                                b"\xe2\x82", b"\xc0\xaf"])
TOP_KEYS = ["order_id", "customer_id", "occurred_at", "currency", "channel", "variant", "items"]
ITEM_KEYS = ["product_id", "category", "unit_price", "quantity", "attribution"]
STRING_TOP_KEYS = [key for key in TOP_KEYS if key != "items"]
STRING_ITEM_KEYS = [key for key in ITEM_KEYS if key not in ("unit_price", "quantity")]


def _target(order: dict[str, Any], data: st.DataObject, item_keys: list[str] = ITEM_KEYS,
            top_keys: list[str] = TOP_KEYS) -> tuple[dict[str, Any], str]:
    """A dict to mutate (the order or one of its items) and one of its keys."""
    items = order.get("items")
    if isinstance(items, list) and items and (not top_keys or data.draw(st.booleans())):
        item = items[data.draw(st.integers(0, len(items) - 1))]
        if isinstance(item, dict):
            return item, data.draw(st.sampled_from(item_keys))
    return order, data.draw(st.sampled_from(top_keys or TOP_KEYS))


def mutate(order: dict[str, Any], data: st.DataObject) -> dict[str, Any] | list[Any]:
    kind = data.draw(st.sampled_from([
        "drop", "swap", "number", "string", "garbage", "many_items", "empty_items", "not_object", "extra_key",
    ]))
    if kind == "not_object":
        return data.draw(st.lists(json_leaves, max_size=3))
    if kind == "many_items":
        items = order.get("items")
        line = items[0] if isinstance(items, list) and items else {"product_id": "p", "category": "c",
                                                                    "unit_price": 1, "quantity": 1}
        count = data.draw(st.sampled_from([499, 500, 501, 5000]))
        order["items"] = [dict(line) if isinstance(line, dict) else line for _ in range(count)]
        return order
    if kind == "empty_items":
        order["items"] = data.draw(st.sampled_from([[], {}, None, [[]], [None], [{}]]))
        return order
    if kind == "number":  # mostly where numbers belong, sometimes anywhere
        target, key = _target(order, data, ["unit_price", "quantity"], []) if data.draw(st.booleans()) \
            else _target(order, data)
    elif kind == "string":
        target, key = _target(order, data, STRING_ITEM_KEYS, STRING_TOP_KEYS)
    else:
        target, key = _target(order, data)
    if kind == "drop":
        target.pop(key, None)
    elif kind == "swap":
        target[key] = data.draw(json_leaves | st.lists(json_leaves, max_size=2) | st.just({}))
    elif kind == "number":
        target[key] = data.draw(extreme_numbers)
    elif kind == "string":
        target[key] = data.draw(odd_strings | names)
    elif kind == "garbage":
        target[key] = data.draw(nested_garbage)
    else:
        target[data.draw(st.text(max_size=10))] = data.draw(nested_garbage)
    return order


def serialise(document: Any, data: st.DataObject) -> bytes:
    # The standard library writes what orjson refuses (ints beyond 64 bits, NaN,
    # Infinity), so the decoder sees those too.
    raw = json.dumps(document, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    if data.draw(st.integers(1, 8)) == 8:
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + data.draw(invalid_utf8) + raw[at:]
    return raw


@st.composite
def near_valid_events(draw: st.DrawFn) -> bytes:
    data = draw(st.data())
    order: Any = draw(valid_orders())
    for _ in range(draw(st.integers(0, 3))):
        if not isinstance(order, dict):
            break
        order = mutate(order, data)
    return serialise(order, data)


any_events = st.binary(max_size=300) | near_valid_events()


# -- checks ------------------------------------------------------------------------


def assert_decoded(result: Order | Rejection) -> None:
    event(result.reason if isinstance(result, Rejection) else "order")  # --hypothesis-show-statistics
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert isinstance(result.detail, str) and result.detail
    else:
        assert isinstance(result, Order)


def assert_verdict(ledger: PartitionLedger, offset: int, raw: bytes) -> Verdict:
    decoded = decode_order(raw)
    assert_decoded(decoded)
    outcome = ledger.apply(offset, decoded, NOW)
    event(f"verdict {outcome.verdict.value}")
    assert outcome.verdict in VERDICTS
    if outcome.verdict is Verdict.INVALID:
        assert outcome.reason in REASONS
        assert outcome.detail
    return outcome.verdict


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_decode_to_an_order_or_a_known_rejection(raw: bytes) -> None:
    assert_decoded(decode_order(raw))


@FUZZ
@given(near_valid_events())
def test_near_valid_orders_decode_to_an_order_or_a_known_rejection(raw: bytes) -> None:
    assert_decoded(decode_order(raw))


@FUZZ
@given(st.lists(any_events, min_size=1, max_size=30))
def test_ledger_gives_every_event_a_verdict(events: list[bytes]) -> None:
    ledger = PartitionLedger(0, CONFIG)
    verdicts = [assert_verdict(ledger, offset, raw) for offset, raw in enumerate(events)]
    assert ledger.meta.events == len(events)
    counted = (ledger.meta.orders + ledger.meta.late + ledger.meta.duplicates + sum(ledger.meta.invalid.values()))
    assert counted == len(events)
    assert ledger.meta.orders == verdicts.count(Verdict.APPLIED)


def _round_trip(ledger: PartitionLedger) -> PartitionLedger:
    """The ledger as a restarted worker rebuilds it from the changelog (JSON both ways)."""
    changes = ledger.take_changes()
    assert changes is not None
    stored = {key: orjson.loads(orjson.dumps(value)) for key, value in changes.writes.items()}
    stored[changes.meta[0]] = orjson.loads(orjson.dumps(changes.meta[1]))
    return PartitionLedger.restore(ledger.partition, ledger.config, stored.items())


@FUZZ
@given(st.lists(any_events, min_size=1, max_size=12), st.lists(any_events, min_size=1, max_size=6))
def test_ledger_restored_from_the_changelog_gives_the_same_verdicts(first: list[bytes], then: list[bytes]) -> None:
    straight = PartitionLedger(0, CONFIG)
    restarted = PartitionLedger(0, CONFIG)
    for offset, raw in enumerate(first):
        straight.apply(offset, decode_order(raw), NOW)
        restarted.apply(offset, decode_order(raw), NOW)
    # JSON has no infinity: a sum that overflowed would come back from the changelog as null.
    assert math.isfinite(straight.meta.revenue) and math.isfinite(straight.meta.cross_sell_revenue)
    restarted = _round_trip(restarted)
    for offset, raw in enumerate(then, start=len(first)):
        assert restarted.apply(offset, decode_order(raw), NOW) == straight.apply(offset, decode_order(raw), NOW)
    # The flush sequences count flushes, which the two ledgers did not make alike.
    flushes = {"seen_sequence": 0, "outbox_sequence": 0}
    assert {**restarted.meta.to_dict(), **flushes} == {**straight.meta.to_dict(), **flushes}
    assert {s: w.totals for s, w in restarted.windows.items()} == {s: w.totals for s, w in straight.windows.items()}


def _order(order_id: str, unit_price: float, quantity: int) -> bytes:
    return orjson.dumps({"order_id": order_id, "customer_id": "c", "occurred_at": rfc3339(NOW), "currency": "EUR",
                         "items": [{"product_id": "p", "category": "c", "unit_price": unit_price,
                                    "quantity": quantity}]})


@pytest.mark.parametrize(("unit_price", "quantity"), [(1e308, 2), (1.7976931348623157e308, 1), (2e9, 100_000)])
def test_an_order_whose_revenue_could_overflow_is_rejected(unit_price: float, quantity: int) -> None:
    # Found by this fuzzing: unit_price x quantity overflowed to inf, which the changelog
    # (JSON) stored as null, and the restarted worker crashed on the next event.
    ledger = PartitionLedger(0, CONFIG)
    outcome = ledger.apply(0, decode_order(_order("o-huge", unit_price, quantity)), NOW)
    assert (outcome.verdict, outcome.reason) == (Verdict.INVALID, "price_too_large")


def test_the_largest_allowed_order_keeps_revenue_finite_across_a_restart() -> None:
    biggest = orjson.loads(_order("o-big", 1.0, 1))
    biggest["items"] = [{"product_id": f"p{i}", "category": f"c{i % 7}", "unit_price": MAX_UNIT_PRICE,
                         "quantity": Limits().max_quantity} for i in range(Limits().max_items)]
    raw = orjson.dumps(biggest)
    assert len(raw) <= Limits().max_event_bytes
    ledger = PartitionLedger(0, CONFIG)
    assert ledger.apply(0, decode_order(raw), NOW).verdict is Verdict.APPLIED
    restarted = _round_trip(ledger)
    assert restarted.apply(1, decode_order(_order("o-next", 5.0, 1)), NOW).verdict is Verdict.APPLIED
    assert restarted.meta.revenue == ledger.meta.revenue + 5.0
