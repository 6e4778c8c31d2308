"""Did it work? Compare two groups of orders: variants of an experiment, or before and after a marker.

A group is known by six exact, mergeable sums (:class:`GroupSums`): orders,
cross-sell orders, revenue and its sum of squares, items and their sum of
squares, each per order. Windows keep them per variant; a rolling view or a
period adds them, and so can Prometheus across workers. Everything a person
reads is derived from them here, with no library beyond the standard one:

* **rate** p = cross-sell orders / orders; **difference** d = p_B - p_A with a
  95 % Agresti-Caffo interval (the Wald interval after adding one cross-sell
  and one other order to each group: near 95 % coverage even at tiny n or a
  rate of 0 or 1, where Wald's interval collapses to a point);
* **relative lift** d / p_A;
* **p-value** of the two-sided two-proportion z-test with the pooled rate,
  z = d / sqrt(p (1 - p) (1/n_A + 1/n_B)); 1 when the pooled rate is 0 or 1
  (no evidence either way);
* **AOV** and **items per order** differences (B - A) with Welch's 95 %
  interval: the standard error sqrt(s_A^2/n_A + s_B^2/n_B) from the sums of
  squares, a t quantile with Welch-Satterthwaite degrees of freedom;
* **orders needed** per group to detect a difference of ``effect`` from the
  control rate (two-sided alpha 0.05, power 0.8): n = 2 ((z_0.975 + z_0.8) / h)^2
  with Cohen's h = |2 asin sqrt(p_A + effect) - 2 asin sqrt(p_A)|, and how
  many more each group still needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
_Z_CONFIDENCE = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)
_Z_ALPHA = NormalDist().inv_cdf(1 - ALPHA / 2)
_Z_POWER = NormalDist().inv_cdf(POWER)
# The six sums of a group, in the order windows store them.
SUM_NAMES = ("orders", "cross_sell_orders", "revenue", "revenue_squares", "items", "items_squares")


class GroupSums(NamedTuple):
    """Exact sums over a group's orders: counts, and per-order revenue and items with their squares."""

    orders: int = 0
    cross_sell_orders: int = 0
    revenue: float = 0.0
    revenue_squares: float = 0.0
    items: int = 0
    items_squares: int = 0

    @classmethod
    def of(cls, stored: Iterable[float]) -> GroupSums:
        return cls(*stored)  # type: ignore[arg-type]  # counts are stored as whole numbers

    def plus(self, other: Iterable[float]) -> GroupSums:
        return GroupSums(*(a + b for a, b in zip(self, other, strict=True)))  # type: ignore[arg-type]

    @property
    def rate(self) -> float:
        return self.cross_sell_orders / self.orders if self.orders else 0.0


def add_order(sums: list[float], cross_sell: bool, revenue: float, items: int) -> None:
    """Fold one order into a stored group (a list in :data:`SUM_NAMES` order), in place."""
    sums[0] += 1
    sums[1] += cross_sell
    sums[2] += revenue
    sums[3] += revenue * revenue
    sums[4] += items
    sums[5] += items * items


def empty_sums() -> list[float]:
    return [0, 0, 0.0, 0.0, 0, 0]


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its 95 % confidence interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """Group B (treatment, or after) against group A (control, or before)."""

    control: str
    treatment: str
    control_rate: float
    treatment_rate: float
    difference: Interval  # rate B - rate A
    relative_lift: float | None  # difference / rate A; None when rate A is 0
    p_value: float
    aov_difference: Interval | None  # None while a group has fewer than 2 orders
    items_per_order_difference: Interval | None
    orders_needed_per_group: int | None  # to detect `effect`; None when it cannot be detected
    more_orders_needed: int | None  # orders still missing in the smaller group
    effect: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def rate_difference(a: GroupSums, b: GroupSums) -> Interval:
    """p_B - p_A with the 95 % Agresti-Caffo interval (Wald with one success and one failure added per group)."""
    estimate = b.rate - a.rate
    pa = (a.cross_sell_orders + 1) / (a.orders + 2)
    pb = (b.cross_sell_orders + 1) / (b.orders + 2)
    se = math.sqrt(pa * (1 - pa) / (a.orders + 2) + pb * (1 - pb) / (b.orders + 2))
    centre = pb - pa
    return Interval(estimate, max(-1.0, centre - _Z_CONFIDENCE * se), min(1.0, centre + _Z_CONFIDENCE * se))


def two_proportion_p_value(a: GroupSums, b: GroupSums) -> float:
    """Two-sided p-value of the pooled two-proportion z-test; 1.0 when it has no variance to test."""
    if not a.orders or not b.orders:
        return 1.0
    pooled = (a.cross_sell_orders + b.cross_sell_orders) / (a.orders + b.orders)
    variance = pooled * (1 - pooled) * (1 / a.orders + 1 / b.orders)
    if variance <= 0:
        return 1.0
    z = (b.rate - a.rate) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def mean_and_variance(total: float, squares: float, n: int) -> tuple[float, float]:
    """Mean and sample variance (n - 1) from a sum and a sum of squares; the variance never below 0."""
    mean = total / n
    variance = (squares - total * mean) / (n - 1) if n > 1 else 0.0
    return mean, max(0.0, variance)


def welch_difference(a: tuple[float, float, int], b: tuple[float, float, int]) -> Interval | None:
    """mean_B - mean_A with Welch's 95 % interval, from (sum, sum of squares, n) of each group."""
    (sum_a, sq_a, n_a), (sum_b, sq_b, n_b) = a, b
    if n_a < 2 or n_b < 2:
        return None
    mean_a, var_a = mean_and_variance(sum_a, sq_a, n_a)
    mean_b, var_b = mean_and_variance(sum_b, sq_b, n_b)
    estimate = mean_b - mean_a
    va, vb = var_a / n_a, var_b / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(estimate, estimate, estimate)
    df = (va + vb) ** 2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    half = t_quantile(1 - (1 - CONFIDENCE) / 2, df) * se
    return Interval(estimate, estimate - half, estimate + half)


def orders_needed(base_rate: float, effect: float) -> int | None:
    """Orders per group to detect base_rate -> base_rate + effect (two-sided alpha 0.05, power 0.8)."""
    target = base_rate + effect
    if effect == 0 or not 0.0 <= target <= 1.0:
        return None
    h = abs(2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(base_rate)))
    # 2 asin sqrt(p_hat) has variance 1/n; a difference of two groups has 2/n.
    return math.ceil(2 * ((_Z_ALPHA + _Z_POWER) / h) ** 2)


def compare(control: str, a: GroupSums, treatment: str, b: GroupSums, effect: float) -> Comparison:
    difference = rate_difference(a, b)
    needed = orders_needed(a.rate, effect)
    return Comparison(
        control=control,
        treatment=treatment,
        control_rate=a.rate,
        treatment_rate=b.rate,
        difference=difference,
        relative_lift=difference.estimate / a.rate if a.rate else None,
        p_value=two_proportion_p_value(a, b),
        aov_difference=welch_difference((a.revenue, a.revenue_squares, a.orders),
                                        (b.revenue, b.revenue_squares, b.orders)),
        items_per_order_difference=welch_difference((a.items, a.items_squares, a.orders),
                                                    (b.items, b.items_squares, b.orders)),
        orders_needed_per_group=needed,
        more_orders_needed=None if needed is None else max(0, needed - min(a.orders, b.orders)),
        effect=effect,
    )


def control_of(groups: Mapping[str, GroupSums], preferred: str) -> str | None:
    """The control: ``preferred`` if it has orders, else the group with most orders (ties by name)."""
    present = [label for label, sums in groups.items() if sums.orders]
    if preferred in present:
        return preferred
    return min(present, key=lambda label: (-groups[label].orders, label)) if present else None


def compare_variants(groups: Mapping[str, GroupSums], preferred_control: str, effect: float) -> list[Comparison]:
    """Every variant with orders against the control; none when fewer than two variants have orders."""
    control = control_of(groups, preferred_control)
    if control is None:
        return []
    return [compare(control, groups[control], label, sums, effect)
            for label, sums in sorted(groups.items()) if label != control and sums.orders]


# Student's t quantile, from its CDF through the regularized incomplete beta function
# (Numerical Recipes' continued fraction), solved by bisection: exact to ~1e-10, no scipy.

def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile (0.5 < probability < 1) of Student's t with ``df`` degrees of freedom."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _regularized_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return fraction
