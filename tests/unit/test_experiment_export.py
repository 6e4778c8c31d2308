"""Experiments as a worker exports them: sums on /metrics per view and variant, periods around the marker, JSON."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry
from test_snapshot_and_metrics import SETTINGS, T0, ledgers

from streams.orders.experiments import GroupSums, compare
from streams.orders.snapshot import take_snapshot
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings

# ledgers(): a (T0-1200, none, cross-sell, 420 over 3 units), b (T0+10, none, cross-sell, 420 / 3),
# c (T0+20, none, plain, 30 / 1), d (T0+30, treatment, cross-sell, 50 / 3).
A = B = (1, 1, 420.0, 420.0**2, 3, 9)
C = (1, 0, 30.0, 900.0, 1, 1)
D = (1, 1, 50.0, 2500.0, 3, 9)
NAMES = ("orders", "cross_sell_orders", "revenue", "revenue_squares", "items", "items_squares")


def total(*orders: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sum(figures) for figures in zip(*orders, strict=True))


def scrape(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CrossSellCollector(lambda: take_snapshot(ledgers(), settings, dead_letters={}), settings))
    return registry


def exported(registry: CollectorRegistry, prefix: str, labels: dict[str, str]) -> tuple[float | None, ...]:
    return tuple(registry.get_sample_value(f"crosssell_{prefix}_{name}", labels) for name in NAMES)


def test_every_view_exports_each_variants_sums_bounded_like_the_variant_label() -> None:
    registry = scrape(SETTINGS)  # one label value per breakdown, plus other
    assert exported(registry, "experiment", {"window": "5m", "variant": "none"}) == total(B, C)
    assert exported(registry, "experiment", {"window": "5m", "variant": "other"}) == D
    assert exported(registry, "experiment", {"window": "1h", "variant": "none"}) == total(A, B, C)
    assert registry.get_sample_value("crosssell_experiment_marker_seconds") is None
    assert registry.get_sample_value("crosssell_period_orders", {"period": "before"}) is None


def test_the_benchmark_band_is_exported_from_its_settings() -> None:
    registry = scrape(dataclasses.replace(SETTINGS, benchmark_rate_low=0.2, benchmark_rate_high=0.35))
    assert registry.get_sample_value("crosssell_benchmark_rate_ratio", {"bound": "low"}) == 0.2
    assert registry.get_sample_value("crosssell_benchmark_rate_ratio", {"bound": "high"}) == 0.35


def test_a_marker_splits_the_held_windows_into_before_and_after_at_its_window_start() -> None:
    registry = scrape(dataclasses.replace(SETTINGS, experiment_marker=str(T0 + 5)))
    assert registry.get_sample_value("crosssell_experiment_marker_seconds") == T0
    assert exported(registry, "period", {"period": "before"}) == A
    assert exported(registry, "period", {"period": "after"}) == total(B, C, D)


def test_the_json_compares_each_view_with_the_largest_variant_when_the_control_is_absent() -> None:
    report = take_snapshot(ledgers(), SETTINGS, dead_letters={}).experiments_json(SETTINGS)
    five = report["views"]["5m"]
    assert five["variants"]["none"] == {**dict(zip(NAMES, total(B, C), strict=True)), "rate": 0.5,
                                        "average_order_value": 225.0, "items_per_order": 2.0}
    expected = compare("none", GroupSums(*total(B, C)), "treatment", GroupSums(*D), 0.02).as_json()  # type: ignore[arg-type]
    assert five["comparisons"] == [expected]
    assert report["marker"] is None
    assert (report["control"], report["effect"], report["benchmark"]) == ("control", 0.02, {"low": 0.15, "high": 0.3})


def test_the_json_compares_after_the_marker_with_before() -> None:
    settings = dataclasses.replace(SETTINGS, experiment_marker="2027-01-15T08:00:05Z")
    assert settings.experiment_marker_time == pytest.approx(T0 + 5)
    marker = take_snapshot(ledgers(), settings, dead_letters={}).experiments_json(settings)["marker"]
    assert marker["window_start"] == T0 and marker["label"] == "2027-01-15T08:00:05Z"
    assert (marker["before"]["orders"], marker["after"]["orders"]) == (1, 3)
    comparison = marker["comparison"]
    assert (comparison["control"], comparison["treatment"]) == ("before", "after")
    assert comparison["difference"]["estimate"] == pytest.approx(2 / 3 - 1)
    assert comparison["aov_difference"] is None  # one order before: no spread to estimate


def test_a_marker_with_nothing_on_one_side_has_no_comparison() -> None:
    settings = dataclasses.replace(SETTINGS, experiment_marker=str(T0 + 3600))
    marker = take_snapshot(ledgers(), settings, dead_letters={}).experiments_json(settings)["marker"]
    assert (marker["before"]["orders"], marker["after"]["orders"], marker["comparison"]) == (4, 0, None)
