"""Scenario traffic (streams/ops/traffic.py): profiles, drops, stalls and bursts, without Kafka."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.ops.traffic import DAY, Drop, OrderMaker, Scenario, Spell, parse_scenario
from streams.orders.contract import Order, decode_order
from streams.orders.facts import order_facts


@pytest.mark.parametrize(("profile", "items", "expected"), [
    ("constant", [], Scenario(5.0)),
    ("diurnal", [], Scenario(5.0, (0.2, 20.0))),
    ("diurnal:1-10", [], Scenario(5.0, (1.0, 10.0))),
    ("constant", ["drop=primary_category:electronics:50%@10m+20m"],
     Scenario(5.0, drops=(Drop("primary_category", "electronics", 0.5, 600.0, 1200.0),))),
    ("constant", ["drop=total:all:1@2h+90s", "stall@1h+10m", "burst=10@3h+5m"],
     Scenario(5.0, drops=(Drop("total", "all", 1.0, 7200.0, 90.0),),
              spells=(Spell(0.0, 3600.0, 600.0), Spell(10.0, 10800.0, 300.0)))),
])
def test_scenarios_parse(profile: str, items: list[str], expected: Scenario) -> None:
    assert parse_scenario(5.0, profile, items) == expected


@pytest.mark.parametrize(("profile", "items", "named"), [
    ("weekly", [], "--profile"),
    ("diurnal:5-1", [], "--profile"),
    ("constant", ["drop=region:eu:0.5@1m+1m"], "--scenario"),
    ("constant", ["drop=total:all:1.5@1m+1m"], "--scenario"),
    ("constant", ["stall@soon+1m"], "--scenario"),
    ("constant", ["nap@1m+1m"], "--scenario"),
])
def test_bad_scenarios_name_the_flag(profile: str, items: list[str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_scenario(5.0, profile, items)


def test_diurnal_rate_runs_from_the_trough_at_midnight_to_the_peak_at_noon() -> None:
    scenario = Scenario(diurnal=(0.2, 20.0))
    assert scenario.rate_at(0.0) == pytest.approx(0.2)
    assert scenario.rate_at(DAY / 2) == pytest.approx(20.0)
    assert scenario.rate_at(DAY) == pytest.approx(0.2)


@pytest.mark.parametrize(("scenario", "seconds", "expected"), [
    (Scenario(5.0), 2000.0, 10_000),
    (Scenario(0.2), 50_000.0, 10_000),
    (Scenario(diurnal=(0.2, 20.0)), DAY, 10.1 * DAY),  # the mean of the profile
    (Scenario(5.0, spells=(Spell(0.0, 500.0, 1000.0),)), 2000.0, 5_000),  # a stall of half the time
    (Scenario(5.0, spells=(Spell(3.0, 0.0, 1000.0),)), 2000.0, 20_000),  # a burst of 3x for half
])
def test_arrivals_follow_the_rate(scenario: Scenario, seconds: float, expected: float) -> None:
    offsets = list(scenario.arrivals(random.Random(1), seconds))
    assert offsets == sorted(offsets) and all(0 <= o < seconds for o in offsets)
    assert len(offsets) == pytest.approx(expected, rel=0.05)


def test_no_order_arrives_during_a_stall() -> None:
    scenario = Scenario(5.0, spells=(Spell(0.0, 100.0, 300.0),))
    assert not [o for o in scenario.arrivals(random.Random(2), 1000.0) if 100.0 <= o < 400.0]


def cross_sell_share(scenario: Scenario, offset: float, segment: tuple[str, str] | None = None,
                     count: int = 4000) -> float:
    maker, rng = OrderMaker(random.Random(5)), random.Random(6)
    cross = orders = 0
    for _ in range(count):
        _, _, value = maker.event(1.7e9, lambda order: scenario.apply(rng, offset, order))
        decoded = decode_order(value)
        assert isinstance(decoded, Order)
        facts = order_facts(decoded)
        document = orjson.loads(value)
        if segment is not None and (facts.primary_category if segment[0] == "primary_category"
                                    else document.get(segment[0])) != segment[1]:
            continue
        orders += 1
        cross += facts.cross_sell
    return cross / orders


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25])
def test_a_drop_takes_its_fraction_of_the_cross_sell_in_its_window(fraction: float) -> None:
    scenario = Scenario(drops=(Drop("total", "all", fraction, 100.0, 100.0),))
    before, during = cross_sell_share(scenario, 50.0), cross_sell_share(scenario, 150.0)
    assert during == pytest.approx(before * (1 - fraction), abs=0.03)
    assert cross_sell_share(scenario, 250.0) == before


@pytest.mark.parametrize("segment", [("primary_category", "electronics"), ("channel", "app"), ("variant", "control")])
def test_a_drop_in_a_segment_leaves_the_others_alone(segment: tuple[str, str]) -> None:
    scenario = Scenario(drops=(Drop(segment[0], segment[1], 1.0, 0.0, 100.0),))
    assert cross_sell_share(scenario, 50.0, segment) == 0.0
    other = ("channel", "web") if segment[0] != "channel" else ("channel", "marketplace")
    assert cross_sell_share(scenario, 50.0, other) > 0.1
