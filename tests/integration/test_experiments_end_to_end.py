"""Experiments and attribution end to end: generated traffic with known effects, exact sums out of a real worker.

The orders come from the demo generator with a treatment whose cross-sell
propensity is higher by a set amount, spread over ten minutes of event time,
with a before/after marker in the middle. The expected sums are worked out
here from the order documents by plain arithmetic; the worker's /metrics and
/api/experiments must hold exactly them, and the comparison must be the one
the statistics module gives for those sums. A known share of the lines after
the primary carry a recommendation touchpoint; what each touchpoint sold must
come out exactly too.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.ops.traffic import TOUCHPOINTS, OrderMaker, TrafficShape
from streams.orders.experiments import GroupSums, compare
from streams.orders.windows import ATTRIBUTION_FIGURES
from tests.harness import Worker, cluster, labelled_sum, wait_until

PARTITIONS = 2
ORDERS = 2400
SPACING = 0.25  # seconds of event time between orders: ten minutes in all
UPLIFT = 0.15
ATTRIBUTION_SHARE = 0.4
NAMES = ("orders", "cross_sell_orders", "revenue", "revenue_squares", "items", "items_squares")


def figures(document: dict[str, Any]) -> tuple[str, list[float]]:
    """(variant, the six sums of this one order), from the document alone."""
    lines = document["items"]
    revenue = sum(line["unit_price"] * line["quantity"] for line in lines)
    items = sum(line["quantity"] for line in lines)
    cross = len({line["category"] for line in lines}) > 1
    return str(document["variant"]), [1, int(cross), revenue, revenue * revenue, items, items * items]


def add(into: dict[str, list[float]], label: str, sums: list[float]) -> None:
    into[label] = [a + b for a, b in zip(into.get(label, [0] * len(sums)), sums, strict=True)]


class Truth:
    def __init__(self, base: float, marker: float) -> None:
        self.marker_start = marker // 60 * 60
        self.by_view: dict[str, dict[str, list[float]]] = {"5m": {}, "1h": {}}
        self.periods: dict[str, list[float]] = {}
        self.touchpoints: dict[str, list[float]] = {}  # lines, units, revenue, cross-sell revenue, orders
        self.attributed_cross_sell_orders = 0
        self.attributed_lines = self.later_lines = 0
        self.primary_orders: Counter[str] = Counter()
        self.primary_cross_sell: Counter[str] = Counter()
        self.events: list[tuple[bytes, bytes, int | None]] = []
        maker = OrderMaker(random.Random(14), TrafficShape(cross_sell_propensity=0.2, treatment_uplift=UPLIFT,
                                                           attribution_share=ATTRIBUTION_SHARE))
        documents = [(base + n * SPACING, maker.order(base + n * SPACING)) for n in range(ORDERS)]
        newest_window = documents[-1][0] // 60 * 60
        for t, document in documents:
            self.events.append((str(document["order_id"]).encode(), orjson.dumps(document), None))
            variant, sums = figures(document)
            add(self.by_view["1h"], variant, sums)
            if t // 60 * 60 > newest_window - 300:
                add(self.by_view["5m"], variant, sums)
            add(self.periods, "before" if t // 60 * 60 < self.marker_start else "after", sums)
            self.attribute(document["items"])
            # The primary item: the line of highest value, ties to the smaller product_id, then category.
            primary = min(document["items"], key=lambda line: (-line["unit_price"] * line["quantity"],
                                                                line["product_id"], line["category"]))["product_id"]
            self.primary_orders[primary] += 1
            self.primary_cross_sell[primary] += sums[1]

    def attribute(self, lines: list[dict[str, Any]]) -> None:
        # The generator's first line is in the primary category (tests/unit/test_traffic.py holds it to that).
        primary_category = lines[0]["category"]
        sold_cross_sell: set[str] = set()
        self.later_lines += len(lines) - 1
        for line in lines:
            touchpoint = line.get("attribution")
            if touchpoint is None:
                continue
            self.attributed_lines += 1
            value = line["unit_price"] * line["quantity"]
            cross = line["category"] != primary_category
            first_cross_sell_line = cross and touchpoint not in sold_cross_sell
            add(self.touchpoints, touchpoint,
                [1, line["quantity"], value, value if cross else 0.0, int(first_cross_sell_line)])
            if cross:
                sold_cross_sell.add(touchpoint)
        self.attributed_cross_sell_orders += bool(sold_cross_sell)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Truth]]:
    tmp: Path = tmp_path_factory.mktemp("experiments")
    base = (time.time() - 900) // 60 * 60
    truth = Truth(base, marker=base + 300 + 17)
    env = {"CROSSSELL_PARTITIONS": str(PARTITIONS), "CROSSSELL_EXPERIMENT_MARKER": str(base + 300 + 17),
           "CROSSSELL_POTENTIAL_CAPACITY": "32"}
    with cluster(tmp, env) as running_cluster:
        worker = running_cluster.worker().start().wait_serving()
        running_cluster.produce(truth.events)
        wait_until(lambda: worker.sample("crosssell_orders_total") == ORDERS, 90, f"worker to apply {ORDERS} orders")
        yield worker, truth


def test_each_views_variant_sums_on_metrics_are_exactly_the_orders_sent(running: tuple[Worker, Truth]) -> None:
    worker, truth = running
    metrics = worker.metrics()
    for view, variants in truth.by_view.items():
        assert set(variants) == {"control", "treatment"}
        for variant, sums in variants.items():
            got = [labelled_sum(metrics, f"crosssell_experiment_{name}", window=view, variant=variant)
                   for name in NAMES]
            assert got == pytest.approx(sums, rel=1e-9), (view, variant)


def test_the_periods_around_the_marker_hold_exactly_the_orders_before_and_after_its_window(
        running: tuple[Worker, Truth]) -> None:
    worker, truth = running
    metrics = worker.metrics()
    assert labelled_sum(metrics, "crosssell_experiment_marker_seconds") == truth.marker_start
    for period, sums in truth.periods.items():
        got = [labelled_sum(metrics, f"crosssell_period_{name}", period=period) for name in NAMES]
        assert got == pytest.approx(sums, rel=1e-9), period
    assert truth.periods["before"][0] + truth.periods["after"][0] == ORDERS


def test_the_api_compares_treatment_with_control_from_those_sums_and_finds_the_known_effect(
        running: tuple[Worker, Truth]) -> None:
    worker, truth = running
    report = orjson.loads(worker.get("/api/experiments"))
    hour = truth.by_view["1h"]
    control, treatment = GroupSums(*hour["control"]), GroupSums(*hour["treatment"])  # type: ignore[arg-type]
    [row] = report["views"]["1h"]["comparisons"]
    expected = compare("control", control, "treatment", treatment, report["effect"]).as_json()
    assert _close(row, expected)
    # The generator adds UPLIFT to the treatment's propensity; a companion line is sometimes not
    # added (it must stay cheaper than the primary line), so the rate rises by less, but clearly.
    assert row["difference"]["low"] > 0 and row["difference"]["high"] < UPLIFT + 0.05
    assert row["p_value"] < 0.001
    marker = report["marker"]
    assert (marker["before"]["orders"], marker["after"]["orders"]) == (truth.periods["before"][0],
                                                                       truth.periods["after"][0])


def _close(actual: Any, expected: Any) -> bool:
    """Equal, with floats equal to 1e-9 relative, through nested dicts and lists."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        return all(_close(actual[key], value) for key, value in expected.items())
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)
        return True
    assert actual == expected
    return True


def test_each_touchpoints_lines_units_revenue_and_cross_sell_orders_are_exactly_those_sent(
        running: tuple[Worker, Truth]) -> None:
    worker, truth = running
    # The generator's share, in the traffic sent (2,400 orders: well within sampling noise of it).
    assert truth.attributed_lines / truth.later_lines == pytest.approx(ATTRIBUTION_SHARE, abs=0.05)
    metrics = worker.metrics()
    assert set(truth.touchpoints) == set(TOUCHPOINTS)
    for touchpoint, figures in truth.touchpoints.items():
        got = [labelled_sum(metrics, f"crosssell_attributed_{name}", window="1h", touchpoint=touchpoint)
               for name in ATTRIBUTION_FIGURES]
        assert got == pytest.approx(figures, rel=1e-9), touchpoint
    assert labelled_sum(metrics, "crosssell_window_attributed_cross_sell_orders", window="1h") \
        == truth.attributed_cross_sell_orders
    view = orjson.loads(worker.get("/api/attribution"))["1h"]
    cross_sell_revenue = labelled_sum(metrics, "crosssell_window_cross_sell_revenue", window="1h")
    assert cross_sell_revenue
    attributed = sum(figures[3] for figures in truth.touchpoints.values())
    assert view["share_of_cross_sell_revenue"] == pytest.approx(attributed / cross_sell_revenue, rel=1e-9)
    assert view["attributed_cross_sell_orders"] == truth.attributed_cross_sell_orders


def test_the_top_primary_products_are_found_with_bounds_that_hold_the_true_counts(
        running: tuple[Worker, Truth]) -> None:
    worker, truth = running
    rows = orjson.loads(worker.get("/api/potential"))["1h"]
    assert rows, "no primary products listed"
    assert rows[0]["product"] == truth.primary_orders.most_common(1)[0][0]
    for row in rows:
        true_orders = truth.primary_orders[row["product"]]
        assert row["orders"] <= true_orders <= row["orders_upper_bound"], row
        assert row["cross_sell_orders"] <= min(truth.primary_cross_sell[row["product"]], row["orders"]), row
        assert row["cross_sell_rate"] == pytest.approx(row["cross_sell_orders"] / row["orders"])
