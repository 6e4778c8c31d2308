"""streams.ops.traffic: generated orders keep the event contract, are reproducible, and follow their shape."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from streams.ops.traffic import TOUCHPOINTS, OrderMaker, TrafficShape, invalid_event
from streams.orders.contract import Order, Rejection, decode_order
from streams.orders.facts import order_facts

NOW = 1_800_000_000.0
SEEDS = range(5)


def decoded_order(raw: bytes) -> Order:
    decoded = decode_order(raw)
    assert isinstance(decoded, Order), decoded
    return decoded


def cross_sell_share(propensity: float, seed: int, count: int = 2000, uplift: float = 0.0) -> float:
    maker = OrderMaker(random.Random(seed), TrafficShape(cross_sell_propensity=propensity, treatment_uplift=uplift))
    orders = [order_facts(decoded_order(orjson.dumps(maker.order(NOW + n)))) for n in range(count)]
    return sum(facts.cross_sell for facts in orders) / count


@pytest.mark.parametrize("seed", SEEDS)
def test_every_generated_order_passes_the_contract_at_its_event_time(seed: int) -> None:
    maker = OrderMaker(random.Random(seed))
    for n in range(200):
        event_time = NOW + n * 0.37
        order = decoded_order(orjson.dumps(maker.order(event_time)))
        assert abs(order.occurred_at - event_time) < 0.001  # millisecond timestamps


@pytest.mark.parametrize("seed", SEEDS)
def test_event_kinds_keep_their_promise(seed: int) -> None:
    shape = TrafficShape(late_share=0.2, late_by_seconds=900.0, invalid_share=0.2, duplicate_share=0.2)
    maker = OrderMaker(random.Random(seed), shape)
    sent: dict[bytes, bytes] = {}
    kinds: Counter[str] = Counter()
    for n in range(400):
        now = NOW + n
        kind, key, value = maker.event(now)
        kinds[kind] += 1
        if kind == "invalid":
            assert isinstance(decode_order(value), Rejection)
        elif kind == "duplicate":
            assert sent[key] == value  # a retry of an order sent before, byte for byte
        else:
            order = decoded_order(value)
            expected_time = now - 900.0 if kind == "late" else now
            assert abs(order.occurred_at - expected_time) < 0.001
            assert key == order.order_id.encode()
            if kind == "order":
                sent[key] = value
    assert set(kinds) == {"order", "late", "invalid", "duplicate"}


@pytest.mark.parametrize("seed", range(40))
def test_invalid_event_is_rejected_by_the_contract_and_keyed_by_the_order_id(seed: int) -> None:
    order = OrderMaker(random.Random(seed)).order(NOW)
    key, value = invalid_event(random.Random(seed), order)
    assert isinstance(decode_order(value), Rejection)
    assert key == str(order["order_id"]).encode()


def test_invalid_events_use_many_malformed_shapes() -> None:
    reasons = set()
    for seed in range(40):
        decoded = decode_order(invalid_event(random.Random(seed), OrderMaker(random.Random(seed)).order(NOW))[1])
        assert isinstance(decoded, Rejection)
        reasons.add(decoded.reason)
    assert len(reasons) >= 8


def test_the_same_seed_gives_the_same_events() -> None:
    shape = TrafficShape(late_share=0.1, invalid_share=0.1, duplicate_share=0.1)
    first, second = OrderMaker(random.Random(7), shape), OrderMaker(random.Random(7), shape)
    assert [first.event(NOW + n) for n in range(300)] == [second.event(NOW + n) for n in range(300)]


def test_different_seeds_give_different_events() -> None:
    first, second = OrderMaker(random.Random(1)), OrderMaker(random.Random(2))
    assert [first.event(NOW + n) for n in range(20)] != [second.event(NOW + n) for n in range(20)]


def test_order_ids_are_unique() -> None:
    maker = OrderMaker(random.Random(3))
    ids = [maker.order(NOW)["order_id"] for _ in range(2000)]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("seed", SEEDS)
def test_propensity_zero_without_uplift_makes_no_cross_sell_orders(seed: int) -> None:
    assert cross_sell_share(0.0, seed) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_sell_share_grows_with_the_propensity_and_never_exceeds_it(seed: int) -> None:
    shares = [cross_sell_share(propensity, seed) for propensity in (0.1, 0.5, 1.0)]
    assert shares == sorted(shares) and len(set(shares)) == 3
    # A cross-sell line is only tried with the propensity: the share is at most it, up to sampling noise
    # (three standard deviations of 2000 draws are below 0.035).
    assert all(share <= propensity + 0.035 for share, propensity in zip(shares, (0.1, 0.5, 1.0), strict=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_propensity_one_makes_a_large_share_of_cross_sell_orders(seed: int) -> None:
    # A companion line must stay cheaper than the primary line (else the category's cheapest product is used,
    # or no line), so the share stays below the propensity.
    assert cross_sell_share(1.0, seed) > 0.4


@pytest.mark.parametrize("seed", SEEDS)
def test_treatment_uplift_adds_cross_sell_to_the_treatment_variant_only(seed: int) -> None:
    maker = OrderMaker(random.Random(seed), TrafficShape(cross_sell_propensity=0.0, treatment_uplift=1.0))
    by_variant: dict[str, list[bool]] = {"control": [], "treatment": []}
    for n in range(1000):
        facts = order_facts(decoded_order(orjson.dumps(maker.order(NOW + n))))
        by_variant[facts.variant].append(facts.cross_sell)
    assert not any(by_variant["control"])
    assert sum(by_variant["treatment"]) > 0.3 * len(by_variant["treatment"])


@pytest.mark.parametrize("seed", SEEDS)
def test_the_first_line_sets_the_primary_category(seed: int) -> None:
    maker = OrderMaker(random.Random(seed), TrafficShape(cross_sell_propensity=0.8, upsell_propensity=0.5))
    for n in range(500):
        order = decoded_order(orjson.dumps(maker.order(NOW + n)))
        assert order_facts(order).primary_category == order.items[0].category


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_the_attribution_share_is_the_share_of_lines_after_the_primary_with_a_touchpoint(share: float) -> None:
    maker = OrderMaker(random.Random(3), TrafficShape(cross_sell_propensity=0.8, attribution_share=share))
    for n in range(300):
        lines = decoded_order(orjson.dumps(maker.order(NOW + n))).items
        assert lines[0].attribution is None
        expected = [TOUCHPOINTS[i % len(TOUCHPOINTS)] if share else None for i in range(len(lines) - 1)]
        assert [line.attribution for line in lines[1:]] == expected


def test_the_attribution_share_does_not_change_which_orders_a_seed_makes() -> None:
    def orders(share: float) -> list[object]:
        maker = OrderMaker(random.Random(5), TrafficShape(attribution_share=share))
        return [[(i["product_id"], i["quantity"]) for i in maker.order(NOW + n)["items"]]  # type: ignore[attr-defined]
                for n in range(200)]

    assert orders(0.0) == orders(0.3) == orders(1.0)
