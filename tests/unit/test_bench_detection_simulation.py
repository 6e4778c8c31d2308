"""bench.detection --simulate: the tick-level simulation the thresholds were chosen with."""

from __future__ import annotations

import pytest

from bench.detection import OrderMix, Phase, dropped, simulated_episodes
from streams.ops.traffic import Drop, Scenario
from streams.orders.detection import DetectionConfig

HOUR = 3600.0


@pytest.mark.parametrize(("drop", "offset", "cell", "fraction"), [
    (None, 10.0, ("books", "web", "control"), 0.0),
    (Drop("total", "all", 0.5, 0.0, 60.0), 10.0, ("books", "web", "control"), 0.5),
    (Drop("total", "all", 0.5, 0.0, 60.0), 60.0, ("books", "web", "control"), 0.0),  # over
    (Drop("primary_category", "books", 1.0, 0.0, 60.0), 10.0, ("books", "app", "control"), 1.0),
    (Drop("primary_category", "books", 1.0, 0.0, 60.0), 10.0, ("toys", "app", "control"), 0.0),
    (Drop("channel", "app", 0.25, 5.0, 60.0), 10.0, ("toys", "app", "control"), 0.25),
    (Drop("variant", "treatment", 0.25, 5.0, 60.0), 10.0, ("toys", "app", "control"), 0.0),
])
def test_a_drop_takes_its_fraction_of_the_cross_sells_it_covers(drop: Drop | None, offset: float,
                                                                 cell: tuple[str, str, str], fraction: float) -> None:
    assert dropped(drop, offset, cell) == fraction


def test_a_simulated_collapse_is_detected_and_normal_traffic_is_not() -> None:
    mix = OrderMix.measure(1)
    assert abs(sum(mix.cross_sell[i] * (mix.cumulative[i] - (mix.cumulative[i - 1] if i else 0.0))
                   for i in range(len(mix.cells))) - 0.266) < 0.02  # the generator's rate
    drop = Drop("total", "all", 1.0, 0.0, 600.0)
    phases = [Phase("normal", Scenario(5.0), 2 * HOUR),
              Phase("collapse", Scenario(5.0, drops=(drop,)), 600.0, start=2 * HOUR, drop=drop)]
    episodes = simulated_episodes(phases, 1.7e9, mix, 3, DetectionConfig())
    totals = [e for e in episodes if e["kind"] == "total"]
    assert len(totals) == 1 and 0 < totals[0]["started"] - (1.7e9 + 2 * HOUR) < 60, totals
    assert all(e["started"] >= 1.7e9 + 2 * HOUR for e in episodes), episodes
