"""The offline truth of a chaos run: what every worker must export, from exactly what was produced.

Written apart from the code it checks. Only the contract's verdict on an
event's bytes comes from the project (``streams.contract.decode_order``), and
for the hostile corpus the verdict each case declares wins over it (a
disagreement is reported). Everything after that is plain arithmetic here:
the future and retention checks, duplicates, lateness, the primary item,
cross-sell, the windows, the rolling views and the label breakdowns, as the
README defines them.

Per partition, events are taken in offset order, as a worker applies them:

* future: the event time is more than ``max_future`` ahead of the record's
  timestamp or of the wall clock (the run's events are either on time or years
  off, so the clock's exact reading never matters);
* before retention: more than ``retention`` behind the partition's watermark;
* duplicate: its order id was applied before on this partition (ids are never
  expired here: the run asserts that no duplicate's original is near the dedup
  horizon, where expiry would depend on flush timing);
* late: its window's end plus grace is at or behind the watermark;
* otherwise applied: the watermark becomes the newest applied event time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from bench.hostile import DECIDED_BY_CONTRACT, TIME_REASONS, VALID
from streams.orders.contract import REASONS, Limits, Order, Rejection, decode_order
from streams.settings import Settings, duration_label

FUTURE, RETENTION = TIME_REASONS
NONE_LABEL = "none"
OTHER_LABEL = "other"

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


@dataclass(frozen=True, slots=True)
class Record:
    """One message of a topic as read back: where it is and what it holds."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: float  # seconds

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (what counts against a producer's request size)."""
        return len(self.key or b"") + len(self.value or b"") + sum(len(k) + len(v or b"") for k, v in self.headers)


@dataclass(slots=True)
class WindowTruth:
    orders: int = 0
    cross_sell_orders: int = 0
    items: int = 0
    revenue: float = 0.0
    cross_sell_revenue: float = 0.0
    cross_sell_order_revenue: float = 0.0
    # "orders/<label>" and "cross/<label>" (label: category, channel, variant) -> label value -> count
    by: dict[str, Counter[str]] = field(default_factory=lambda: {
        f"{family}/{label}": Counter() for family in ("orders", "cross") for label in ("category", "channel",
                                                                                       "variant")})
    category_pairs: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(slots=True)
class PartitionTruth:
    partition: int
    events: int = 0
    orders: int = 0
    cross_sell_orders: int = 0
    items: int = 0
    revenue: float = 0.0
    cross_sell_revenue: float = 0.0
    late: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    watermark: float | None = None
    windows: dict[float, WindowTruth] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # applied order id -> its event time
    rejected: dict[int, str] = field(default_factory=dict)  # offset -> reason: the dead letters due
    verdicts: list[tuple[int, str]] = field(default_factory=list)  # (offset, applied/late/duplicate/a reason)


@dataclass(slots=True)
class Truth:
    partitions: dict[int, PartitionTruth]
    # Hostile cases whose declared verdict the project's contract does not give, and oracle limits reached.
    corpus_disagreements: list[str] = field(default_factory=list)
    out_of_range: list[str] = field(default_factory=list)

    def total(self, name: str) -> float:
        return float(sum(getattr(p, name) for p in self.partitions.values()))

    def invalid(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for p in self.partitions.values():
            counts.update(p.invalid)
        return counts


@dataclass(frozen=True, slots=True)
class Declared:
    case: str
    expect: str


@dataclass(frozen=True, slots=True)
class Line:
    product_id: str
    category: str
    value: float
    quantity: int


def replay(records: Mapping[int, Sequence[Record]], declared: Mapping[tuple[int, int], Declared],
           settings: Settings, now: float) -> Truth:
    """Every partition's truth, from its records in offset order."""
    limits = Limits(settings.max_event_bytes, settings.max_items, settings.max_quantity)
    truth = Truth({p: PartitionTruth(p) for p in records})
    for p, events in records.items():
        state = truth.partitions[p]
        for record in events:
            _apply(state, record, declared.get((p, record.offset)), limits, settings, now, truth)
        for start, window in state.windows.items():
            # A window tracks at most CROSSSELL_MAX_TRACKED_VALUES labels and pairs, then folds the
            # rest into "other" in arrival order; the truth does not model that.
            if max(len(counts) for counts in [*window.by.values(), window.category_pairs]) >= \
                    settings.max_tracked_values:
                truth.out_of_range.append(f"partition {p} window {start:g}: more distinct labels or category "
                                          f"pairs than CROSSSELL_MAX_TRACKED_VALUES")
    return truth


def _apply(state: PartitionTruth, record: Record, declared: Declared | None, limits: Limits, settings: Settings,
           now: float, truth: Truth) -> None:
    state.events += 1
    decoded = decode_order(record.value, limits)
    reason = decoded.reason if isinstance(decoded, Rejection) else None
    if isinstance(decoded, Order):
        reason = _time_reason(decoded.occurred_at, record.timestamp, state.watermark, settings, now)
    if declared is not None and declared.expect != DECIDED_BY_CONTRACT:
        wanted = None if declared.expect == VALID else declared.expect
        if wanted != reason:
            truth.corpus_disagreements.append(
                f"{declared.case!r} (partition {state.partition}, offset {record.offset}): declared "
                f"{declared.expect}, the contract and clock checks give {reason or VALID}")
            # The declared rejection is the specification; a declared-valid event the decoder
            # rejects cannot be counted as an order (there is no order to count): as decoded.
            if wanted is not None:
                reason = wanted
    if reason is not None:
        state.invalid[reason] += 1
        state.rejected[record.offset] = reason
        state.verdicts.append((record.offset, reason))
        return
    assert isinstance(decoded, Order)
    event_time = decoded.occurred_at
    first_seen = state.seen.get(decoded.order_id)
    if first_seen is not None:
        if state.watermark is not None and first_seen < state.watermark - settings.dedup_horizon_seconds:
            truth.out_of_range.append(f"partition {state.partition} offset {record.offset}: order "
                                      f"{decoded.order_id!r} repeats one older than the dedup horizon")
        state.duplicates += 1
        state.verdicts.append((record.offset, "duplicate"))
        return
    size = settings.window_seconds
    start = event_time // size * size
    if state.watermark is not None and start + size + settings.grace_seconds <= state.watermark:
        state.late += 1
        state.verdicts.append((record.offset, "late"))
        return
    state.seen[decoded.order_id] = event_time
    state.verdicts.append((record.offset, "applied"))
    _count(state, start, decoded, settings)
    if state.watermark is None or event_time > state.watermark:
        state.watermark = event_time


def _time_reason(event_time: float, record_time: float, watermark: float | None, settings: Settings,
                 now: float) -> str | None:
    if event_time > min(record_time, now) + settings.max_future_seconds:
        return FUTURE
    if watermark is not None and event_time < watermark - settings.retention_seconds:
        return RETENTION
    return None


def _count(state: PartitionTruth, start: float, order: Order, settings: Settings) -> None:
    lines = [Line(i.product_id, i.category, i.unit_price * i.quantity, i.quantity) for i in order.items]
    # The primary item: the highest value; ties to the smaller product_id, then category.
    primary = min(lines, key=lambda li: (-li.value, li.product_id, li.category))
    revenue = sum((li.value for li in lines), 0.0)
    cross_revenue = sum((li.value for li in lines if li.category != primary.category), 0.0)
    cross = any(li.category != primary.category for li in lines)
    items = sum(li.quantity for li in lines)
    state.orders += 1
    state.cross_sell_orders += cross
    state.items += items
    state.revenue += revenue
    state.cross_sell_revenue += cross_revenue
    window = state.windows.setdefault(start, WindowTruth())
    window.orders += 1
    window.cross_sell_orders += cross
    window.items += items
    window.revenue += revenue
    window.cross_sell_revenue += cross_revenue
    window.cross_sell_order_revenue += revenue if cross else 0.0
    for kind, label in (("category", primary.category), ("channel", order.channel or NONE_LABEL),
                        ("variant", order.variant or NONE_LABEL)):
        window.by[f"orders/{kind}"][label] += 1
        window.by[f"cross/{kind}"][label] += cross
    for a, b in combinations(sorted({li.category for li in lines}), 2):
        window.category_pairs[(a, b)] += 1


# -- What a worker owning some partitions must export ------------------------------------

COUNTERS = (
    ("crosssell_events_total", "events"), ("crosssell_orders_total", "orders"),
    ("crosssell_cross_sell_orders_total", "cross_sell_orders"), ("crosssell_items_total", "items"),
    ("crosssell_revenue_total", "revenue"), ("crosssell_cross_sell_revenue_total", "cross_sell_revenue"),
    ("crosssell_events_late_total", "late"), ("crosssell_events_duplicate_total", "duplicates"),
)
VIEW_GAUGES = (
    ("crosssell_window_orders", "orders"), ("crosssell_window_cross_sell_orders", "cross_sell_orders"),
    ("crosssell_window_items", "items"), ("crosssell_window_revenue", "revenue"),
    ("crosssell_window_cross_sell_revenue", "cross_sell_revenue"),
    ("crosssell_window_cross_sell_order_revenue", "cross_sell_order_revenue"),
)
BREAKDOWNS = (("primary_category", "category"), ("channel", "channel"), ("variant", "variant"))
PAIR_GAUGE = "crosssell_category_pair_orders"
WATERMARK_GAUGE = "crosssell_event_time_watermark_seconds"
ASSIGNED_GAUGE = "crosssell_partitions_assigned"
INVALID_COUNTER = "crosssell_events_invalid_total"
# Every family the comparison covers: a sample of these on /metrics that the truth lacks is a difference.
COMPARED = frozenset(
    [name for name, _ in COUNTERS] + [name for name, _ in VIEW_GAUGES]
    + [f"crosssell_window{part}_orders_by_{suffix}" for suffix, _ in BREAKDOWNS for part in ("", "_cross_sell")]
    + [PAIR_GAUGE, WATERMARK_GAUGE, ASSIGNED_GAUGE, INVALID_COUNTER, "crosssell_rate_ratio"])
# Sums of prices, compared with a relative tolerance (the worker adds in another order).
INEXACT = ("revenue", "crosssell_rate_ratio")


def expected_samples(owned: Iterable[PartitionTruth], settings: Settings) -> Samples:
    """The compared samples of /metrics of a worker that owns exactly ``owned``."""
    held = list(owned)
    samples: Samples = {}
    # Counters are exported per orders partition.
    for p in held:
        partition = ("partition", str(p.partition))
        for name, attribute in COUNTERS:
            samples[(name, (partition,))] = float(getattr(p, attribute))
        for reason in sorted(set(REASONS) | set(p.invalid)):
            samples[(INVALID_COUNTER, (partition, ("reason", reason)))] = float(p.invalid.get(reason, 0))
    samples[(ASSIGNED_GAUGE, ())] = float(len(held))
    watermarks = [p.watermark for p in held if p.watermark is not None]
    newest = None
    if watermarks:
        samples[(WATERMARK_GAUGE, ())] = max(watermarks)
        size = settings.window_seconds
        newest = max(watermarks) // size * size
    for length in settings.rolling_views:
        label = duration_label(length)
        view = WindowTruth()
        if newest is not None:
            for p in held:
                for start, window in p.windows.items():
                    if start >= newest - length + settings.window_seconds:
                        _add(view, window)
        _view_samples(samples, label, view, settings)
    return samples


def _add(view: WindowTruth, window: WindowTruth) -> None:
    for _, attribute in VIEW_GAUGES:
        setattr(view, attribute, getattr(view, attribute) + getattr(window, attribute))
    for key, counts in window.by.items():
        view.by[key].update(counts)
    view.category_pairs.update(window.category_pairs)


def _view_samples(samples: Samples, label: str, view: WindowTruth, settings: Settings) -> None:
    for name, attribute in VIEW_GAUGES:
        samples[(name, (("window", label),))] = float(getattr(view, attribute))
    samples[("crosssell_rate_ratio", (("window", label),))] = (
        view.cross_sell_orders / view.orders if view.orders else 0.0)
    for suffix, label_name in BREAKDOWNS:
        orders, cross = view.by[f"orders/{label_name}"], view.by[f"cross/{label_name}"]
        for value, (n, c) in _top_labels(orders, cross, settings.max_label_values).items():
            labels = tuple(sorted((("window", label), (label_name, value))))
            samples[(f"crosssell_window_orders_by_{suffix}", labels)] = float(n)
            samples[(f"crosssell_window_cross_sell_orders_by_{suffix}", labels)] = float(c)
    pairs = sorted(view.category_pairs.items(), key=lambda kv: (-kv[1], f"{kv[0][0]}\x1f{kv[0][1]}"))
    for (a, b), n in pairs[:settings.top_pairs]:
        labels = tuple(sorted((("window", label), ("category_a", a), ("category_b", b))))
        samples[(PAIR_GAUGE, labels)] = float(n)


def _top_labels(orders: Counter[str], cross: Counter[str], limit: int) -> dict[str, tuple[int, int]]:
    """The ``limit`` labels with most orders (ties by name), the rest summed as "other" (README, Metrics)."""
    ranked = sorted(orders, key=lambda value: (-orders[value], value))
    if len(ranked) <= limit:
        return {value: (orders[value], cross[value]) for value in ranked}
    kept = [value for value in ranked[:limit] if value != OTHER_LABEL]
    result = {value: (orders[value], cross[value]) for value in kept}
    rest = [value for value in ranked if value not in kept]
    result[OTHER_LABEL] = (sum(orders[v] for v in rest), sum(cross[v] for v in rest))
    return result


def compared(scraped: Samples) -> Samples:
    """The compared samples, without ``assignment`` (when the worker took the partition: no truth knows it)."""
    return {(name, tuple(label for label in labels if label[0] != "assignment")): value
            for (name, labels), value in scraped.items() if name in COMPARED}


def differences(actual: Samples, expected: Samples, rel: float = 1e-9) -> list[str]:
    """One line per sample that differs: exact for counts, within ``rel`` for sums of prices."""
    lines = []
    for key in sorted(set(actual) | set(expected)):
        got, want = actual.get(key), expected.get(key)
        name, labels = key
        shown = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")
        if got is None or want is None:
            lines.append(f"{shown}: worker {got}, truth {want}")
        elif any(part in name for part in INEXACT):
            if not math.isclose(got, want, rel_tol=rel, abs_tol=1e-9):
                lines.append(f"{shown}: worker {got!r}, truth {want!r}")
        elif got != want:
            lines.append(f"{shown}: worker {got:g}, truth {want:g}")
    return lines
