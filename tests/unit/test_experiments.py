"""streams.orders.experiments against scipy and statsmodels, at the edges, and by coverage."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize, proportions_ztest

from streams.orders.experiments import (
    GroupSums,
    add_order,
    compare,
    compare_variants,
    control_of,
    empty_sums,
    orders_needed,
    rate_difference,
    t_quantile,
    two_proportion_p_value,
    welch_difference,
)
from streams.orders.windows import OTHER, WindowTotals, agg, bounded_labels, initialize, merge
from tests.unit.test_windows import facts

# (orders A, cross-sell A, orders B, cross-sell B)
PROPORTIONS = [
    (1000, 200, 1000, 240),
    (5000, 900, 4800, 1000),
    (37, 5, 41, 12),
    (3, 1, 4, 3),
    (100, 0, 100, 0),
    (100, 100, 100, 100),
    (50, 0, 60, 60),
    (1, 0, 1, 1),
    (20, 20, 25, 0),
]


@pytest.mark.parametrize(("n_a", "x_a", "n_b", "x_b"), PROPORTIONS)
def test_rate_difference_interval_is_statsmodels_agresti_caffo(n_a: int, x_a: int, n_b: int, x_b: int) -> None:
    interval = rate_difference(GroupSums(n_a, x_a), GroupSums(n_b, x_b))
    low, high = confint_proportions_2indep(x_b, n_b, x_a, n_a, method="agresti-caffo", compare="diff")
    assert interval.estimate == pytest.approx(x_b / n_b - x_a / n_a, abs=1e-12)
    assert interval.low == pytest.approx(max(-1.0, low), abs=1e-9)
    assert interval.high == pytest.approx(min(1.0, high), abs=1e-9)
    assert interval.low < interval.high  # never a point, even at 0 or n successes


@pytest.mark.parametrize(("n_a", "x_a", "n_b", "x_b"), [p for p in PROPORTIONS if 0 < p[1] + p[3] < p[0] + p[2]])
def test_p_value_is_statsmodels_pooled_two_proportion_z_test(n_a: int, x_a: int, n_b: int, x_b: int) -> None:
    _, expected = proportions_ztest([x_b, x_a], [n_b, n_a])
    assert two_proportion_p_value(GroupSums(n_a, x_a), GroupSums(n_b, x_b)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("a", "b"), [(GroupSums(100, 0), GroupSums(80, 0)), (GroupSums(5, 5), GroupSums(9, 9)),
                                      (GroupSums(0, 0), GroupSums(10, 3))])
def test_p_value_is_one_when_the_pooled_rate_leaves_nothing_to_test(a: GroupSums, b: GroupSums) -> None:
    assert two_proportion_p_value(a, b) == 1.0


@pytest.mark.parametrize("df", [1, 2, 3.5, 7, 29.4, 120, 10_000])
def test_t_quantile_is_scipys(df: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)


def _sums(values: list[float]) -> tuple[float, float, int]:
    return sum(values), sum(v * v for v in values), len(values)


@pytest.mark.parametrize("seed", range(4))
def test_welch_interval_from_sums_is_scipys_welch_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = list(rng.lognormal(3.5, 0.8, size=int(rng.integers(2, 400))))
    b = list(rng.lognormal(3.6, 0.9, size=int(rng.integers(2, 400))))
    interval = welch_difference(_sums(a), _sums(b))
    reference = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert interval is not None
    assert interval.estimate == pytest.approx(np.mean(b) - np.mean(a), rel=1e-9)
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high), rel=1e-7)


def test_welch_interval_needs_two_orders_per_group_and_is_a_point_without_spread() -> None:
    assert welch_difference(_sums([5.0]), _sums([1.0, 2.0])) is None
    same = welch_difference(_sums([4.0, 4.0]), _sums([6.0, 6.0, 6.0]))
    assert same is not None and (same.estimate, same.low, same.high) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize(("base", "effect"), [(0.2, 0.02), (0.2, 0.05), (0.05, 0.01), (0.5, -0.1), (0.01, 0.3)])
def test_orders_needed_is_statsmodels_normal_power_for_cohens_h(base: float, effect: float) -> None:
    expected = NormalIndPower().solve_power(proportion_effectsize(base + effect, base), alpha=0.05, power=0.8)
    assert orders_needed(base, effect) == math.ceil(expected - 1e-6)


@pytest.mark.parametrize(("base", "effect"), [(0.2, 0.0), (0.95, 0.1), (0.05, -0.1)])
def test_orders_needed_is_none_for_an_effect_that_cannot_happen(base: float, effect: float) -> None:
    assert orders_needed(base, effect) is None


def test_a_comparison_says_how_many_more_orders_the_smaller_group_needs() -> None:
    result = compare("control", GroupSums(1000, 200), "treatment", GroupSums(800, 180), effect=0.02)
    assert result.orders_needed_per_group == orders_needed(0.2, 0.02)
    assert result.more_orders_needed == orders_needed(0.2, 0.02) - 800  # type: ignore[operator]
    assert result.relative_lift == pytest.approx((0.225 - 0.2) / 0.2)
    assert compare("a", GroupSums(10, 0), "b", GroupSums(10, 2), 0.02).relative_lift is None


def test_the_preferred_control_is_used_when_present_else_the_largest_variant() -> None:
    groups = {"control": GroupSums(5, 1), "b": GroupSums(50, 1), "a": GroupSums(50, 2), "empty": GroupSums()}
    assert control_of(groups, "control") == "control"
    assert control_of(groups, "baseline") == "a"  # ties by name
    assert control_of({"x": GroupSums()}, "control") is None


def test_one_variant_only_gives_no_comparison_and_empty_groups_are_skipped() -> None:
    assert compare_variants({"control": GroupSums(10, 2)}, "control", 0.02) == []
    assert compare_variants({}, "control", 0.02) == []
    rows = compare_variants({"control": GroupSums(10, 2), "b": GroupSums(8, 4), "c": GroupSums()}, "control", 0.02)
    assert [(row.control, row.treatment) for row in rows] == [("control", "b")]


def test_interval_covers_the_true_difference_in_92_to_98_percent_of_200_experiments() -> None:
    rng = random.Random(14)
    true_a, true_b, covered = 0.20, 0.24, 0
    for _ in range(200):
        n_a, n_b = rng.randint(300, 3000), rng.randint(300, 3000)
        x_a = sum(rng.random() < true_a for _ in range(n_a))
        x_b = sum(rng.random() < true_b for _ in range(n_b))
        interval = rate_difference(GroupSums(n_a, x_a), GroupSums(n_b, x_b))
        covered += interval.low <= true_b - true_a <= interval.high
    assert 184 <= covered <= 196, f"covered {covered} of 200"


# --- the sums kept per window -----------------------------------------------------------


def test_a_window_keeps_exact_sums_per_variant() -> None:
    totals = initialize()
    for order in (facts("books", ("toys",), revenue=30.0, items=3, variant="treatment"),
                  facts("books", revenue=10.0, items=1, variant="treatment"),
                  facts("toys", revenue=7.0, items=2, variant="control")):
        agg(totals, order, max_tracked=10)
    assert totals.variant_sums == {"treatment": [2, 1, 40.0, 1000.0, 4, 10], "control": [1, 0, 7.0, 49.0, 2, 4]}


def test_variant_sums_beyond_the_tracked_labels_go_to_other_like_the_variant_counts() -> None:
    totals = initialize()
    for variant in ("a", "b", "c", "b"):
        agg(totals, facts("books", variant=variant), max_tracked=2)
    assert set(totals.variant_sums) == set(totals.by_variant) == {"a", "b", OTHER}
    assert totals.variant_sums[OTHER][0] == 1


def test_merged_variant_sums_add_up_and_bound_to_other_by_orders() -> None:
    one, two = initialize(), initialize()
    agg(one, facts("books", variant="a", revenue=2.0), 10)
    agg(two, facts("books", variant="a", revenue=3.0), 10)
    agg(two, facts("books", variant="b", revenue=4.0), 10)
    view = merge([one, two])
    assert view.variant_sums == {"a": [2, 0, 5.0, 13.0, 2, 2], "b": [1, 0, 4.0, 16.0, 1, 1]}
    assert bounded_labels(view.variant_sums, 1) == {"a": [2, 0, 5.0, 13.0, 2, 2], OTHER: [1, 0, 4.0, 16.0, 1, 1]}


def test_a_window_stored_before_variant_sums_existed_still_loads() -> None:
    stored = initialize()
    agg(stored, facts("books", variant="a"), 10)
    old = stored.to_dict()
    del old["variant_sums"]
    loaded = WindowTotals.from_dict(old)
    assert loaded.variant_sums == {} and loaded.orders == 1
    agg(loaded, facts("books", variant="a"), 10)
    assert loaded.variant_sums == {"a": [1, 0, 10.0, 100.0, 1, 1]}


def test_add_order_folds_one_order_into_stored_sums() -> None:
    sums = empty_sums()
    add_order(sums, True, 12.5, 3)
    add_order(sums, False, 2.0, 1)
    assert GroupSums.of(sums) == GroupSums(2, 1, 14.5, 12.5 * 12.5 + 4.0, 4, 10)
