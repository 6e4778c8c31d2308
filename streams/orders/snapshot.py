"""What the worker knows right now, derived from the ledgers of its partitions.

Metrics, the JSON summary and the live page all read a :class:`Snapshot`;
it is rebuilt on demand so nothing exported can drift from the state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.orders.detection import Episode, SegmentReport
from streams.orders.experiments import CONFIDENCE, GroupSums, compare, compare_variants
from streams.orders.hit_rate import HIT_FIGURES, BestCompanion, hit_rate_json
from streams.orders.ledger import Counters, PartitionLedger, Window
from streams.orders.markers import Marker, current_marker, listed
from streams.orders.potential import (
    ProductPotential,
    ProductSums,
    opportunities,
    top_primary_products,
    top_primary_products_of_both,
)
from streams.orders.windows import (
    ATTRIBUTION_FIGURES,
    WindowTotals,
    bounded_labels,
    merge,
    ratio,
    result,
    top_pairs,
    window_start,
)
from streams.settings import Settings, duration_label

OPPORTUNITIES = 10  # listed per view


@dataclass(slots=True)
class FlushState:
    """Where the orders' flushes stand: applying pauses at 2 x CROSSSELL_FLUSH_MAX_EVENTS pending
    while a flush waits for the broker."""

    pending: int = 0  # orders applied since the last flush took its changes
    outstanding: bool = False  # a flush waits for the broker


@dataclass(slots=True)
class Snapshot:
    partitions: list[int]
    watermark: float | None
    counters: Counters
    views: dict[str, WindowTotals]  # rolling view label ("5m") -> merged totals
    # Newest windows, oldest first, merged across partitions; shared with the next snapshot (read only).
    recent: list[tuple[float, WindowTotals]]
    windows_held: int
    dead_letters: dict[str, int]
    lag: dict[int, int] = field(default_factory=dict)
    dead_letter_errors: dict[str, int] = field(default_factory=dict)
    # Each owned partition's own cumulative counters (the metrics export them per partition).
    partition_counters: dict[int, Counters] = field(default_factory=dict)
    # Highest orders-topic offset applied per owned partition: progress that a stale
    # highwater cannot hide (a paused partition's lag stands still; this does too).
    applied_offsets: dict[int, int] = field(default_factory=dict)
    # Before/after a marker: "before" and "after" -> the windows on either side of the marker's
    # window start, merged (empty when no marker is set).
    periods: dict[str, WindowTotals] = field(default_factory=dict)
    marker: float | None = None  # the marker's window start
    marker_used: Marker | None = None  # the marker compared around (streams/orders/markers.py)
    markers: list[Marker] = field(default_factory=list)  # every marker read from the markers topic
    # Rolling view label -> the top primary products by guaranteed orders.
    potential: dict[str, list[ProductPotential]] = field(default_factory=dict)
    # When this worker took each owned partition (an opaque label value; "" when unknown).
    assignments: dict[int, str] = field(default_factory=dict)
    flush: FlushState = field(default_factory=FlushState)
    # Drop detection (streams/orders/detection.py): per segment, the alarms so far, and how far it tested.
    detection_owner: bool = False  # this worker runs the fleet's drop test (streams/orders/fleet_detection.py)
    detection: list[SegmentReport] = field(default_factory=list)
    drop_episodes: list[Episode] = field(default_factory=list)
    detected_until: float | None = None
    detection_skipped: int = 0
    # The best companion (by lift, from the published lists) of the products in `potential`.
    companions: dict[str, BestCompanion] = field(default_factory=dict)
    # The published lists the hit rate checks orders against: products held, and evicted so far.
    lists_held: int | None = None  # None: the hit rate is off
    lists_evicted: int = 0

    def detection_json(self) -> dict[str, Any]:
        return {"owner": self.detection_owner, "detected_until": self.detected_until, "skipped": self.detection_skipped,
                "segments": [asdict(report) for report in self.detection],
                "episodes": [asdict(episode) for episode in self.drop_episodes]}

    def as_json(self, top: int = 10) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "watermark": self.watermark,
            "counters": asdict(self.counters),
            "views": {
                label: {**asdict(result(totals)), "top_category_pairs": top_pairs(totals.category_pairs, top)}
                for label, totals in self.views.items()
            },
            "recent_windows": [
                {"start": start, **asdict(result(totals))} for start, totals in self.recent
            ],
            "windows_held": self.windows_held,
            "dead_letters": self.dead_letters,
        }

    def experiments_json(self, settings: Settings) -> dict[str, Any]:
        """Every rolling view's variants compared with the control, and the periods before and after the marker."""
        effect = settings.experiment_effect
        views = {}
        for label, totals in self.views.items():
            groups = variant_groups(totals)
            views[label] = {
                "variants": {variant: group_json(sums) for variant, sums in sorted(groups.items())},
                "comparisons": [row.as_json() for row in compare_variants(groups, settings.experiment_control, effect)],
            }
        marker: dict[str, Any] | None = None
        if self.marker is not None:
            before, after = (period_group(self.periods.get(name, WindowTotals())) for name in PERIODS)
            used = self.marker_used
            marker = {
                "label": used.text if used is not None else settings.experiment_marker,
                **(used.as_json() if used is not None else {}),
                "window_start": self.marker,
                "before": group_json(before),
                "after": group_json(after),
                "comparison": compare("before", before, "after", after, effect).as_json()
                if before.orders and after.orders else None,
            }
        return {
            "control": settings.experiment_control,
            "effect": effect,
            "confidence": CONFIDENCE,
            "benchmark": {"low": settings.benchmark_rate_low, "high": settings.benchmark_rate_high},
            "views": views,
            "marker": marker,
            "markers": listed(self.markers),
        }

    def potential_json(self) -> dict[str, Any]:
        """Per rolling view: the primary products with most orders, each with its cross-sell rate and its
        best companion by lift (None when no published list of it is held)."""
        def best(product: str) -> dict[str, Any] | None:
            found = self.companions.get(product)
            return found._asdict() if found is not None else None
        return {label: [{**row.as_json(), "best_companion": best(row.product)} for row in rows]
                for label, rows in self.potential.items()}

    def opportunities_json(self, limit: int = OPPORTUNITIES) -> dict[str, Any]:
        """Per rolling view: the top primary products with a strong companion, by orders to gain
        (streams/orders/potential.py)."""
        return {label: [o.as_json() for o in opportunities(rows, self.companions, limit)]
                for label, rows in self.potential.items()}

    def hit_rate_json(self, settings: Settings) -> dict[str, Any]:
        """Per rolling view and variant (and all together): orders whose primary product had a published
        list, the share holding a listed companion, and what the lists promised (streams/orders/hit_rate.py)."""
        views = {}
        for label, totals in self.views.items():
            variants = bounded_labels(totals.recommendation_hits, settings.max_label_values)
            total = [0.0] * len(HIT_FIGURES)
            _add_figures_in(total, totals.recommendation_hits.values())
            views[label] = {"variants": {v: hit_rate_json(f) for v, f in sorted(variants.items())},
                            "total": hit_rate_json(total)}
        return {"on": self.lists_held is not None, "lists_held": self.lists_held,
                "lists_evicted": self.lists_evicted, "capacity": settings.hit_rate_products,
                "horizon": settings.horizon_labels[0] if settings.horizon_labels else None, "views": views}

    def attribution_json(self, settings: Settings) -> dict[str, Any]:
        """Per rolling view: what each recommendation touchpoint sold, and the share of cross-sell it accounts for."""
        return {label: attribution_of(totals, settings.max_label_values) for label, totals in self.views.items()}


PERIODS = ("before", "after")


def _add_figures_in(total: list[float], figures: Any) -> None:
    for row in figures:
        for i, value in enumerate(row):
            total[i] += value


def attribution_of(totals: WindowTotals, limit: int) -> dict[str, Any]:
    touchpoints = bounded_labels(totals.by_touchpoint, limit)
    attributed_revenue = sum(figures[3] for figures in totals.by_touchpoint.values())
    return {
        "touchpoints": {
            touchpoint: {**dict(zip(ATTRIBUTION_FIGURES, figures, strict=True)),
                         "share_of_cross_sell_revenue": ratio(figures[3], totals.cross_sell_revenue)}
            for touchpoint, figures in sorted(touchpoints.items(), key=lambda kv: (-kv[1][2], kv[0]))
        },
        "attributed_cross_sell_orders": totals.attributed_cross_sell_orders,
        "attributed_cross_sell_revenue": attributed_revenue,
        "cross_sell_orders": totals.cross_sell_orders,
        "cross_sell_revenue": totals.cross_sell_revenue,
        "share_of_cross_sell_orders": ratio(totals.attributed_cross_sell_orders, totals.cross_sell_orders),
        "share_of_cross_sell_revenue": ratio(attributed_revenue, totals.cross_sell_revenue),
    }


def variant_groups(totals: WindowTotals) -> dict[str, GroupSums]:
    return {variant: GroupSums.of(sums) for variant, sums in totals.variant_sums.items()}


def period_group(totals: WindowTotals) -> GroupSums:
    """All orders of a period as one group: the sum over its variants."""
    group = GroupSums()
    for sums in totals.variant_sums.values():
        group = group.plus(sums)
    return group


def group_json(sums: GroupSums) -> dict[str, Any]:
    return {
        **sums._asdict(),
        "rate": sums.rate,
        "average_order_value": ratio(sums.revenue, sums.orders),
        "items_per_order": ratio(sums.items, sums.orders),
    }


class WindowMerges:
    """The windows of one start, across partitions, merged; kept while none of them changes.

    A scrape merges every window of every rolling view. Only the newest windows
    still change (a window takes no event once the watermark passed it), so the
    merge of each start is reused until one of its windows folds another event
    (its offset moves) or is replaced (expired, restored): a scrape then merges
    the windows of one or two starts and the starts of each view, not every
    window of every partition. Without it :func:`take_snapshot` merges the same
    way (per start, then the starts), so cached or not a snapshot adds its
    floats in the same order.
    """

    def __init__(self) -> None:
        # start -> (the windows merged and their offsets then, the merge)
        self._merged: dict[float, tuple[list[tuple[Window, int]], WindowTotals]] = {}
        # rolling view label -> (the limit and its older starts with their merges then, the potential
        # sums of their windows, the ids of the best of them)
        self._older: dict[str, tuple[tuple[int, list[tuple[float, WindowTotals]]], ProductSums, list[str]]] = {}
        # the newest start, its merge then and the potential sums of its windows (every view shares them)
        self._newest: tuple[float, WindowTotals, ProductSums] | None = None
        # rolling view label -> (the merges of its starts but the last, their merge)
        self._views: dict[str, tuple[list[tuple[float, WindowTotals]], WindowTotals]] = {}

    def merged(self, start: float, windows: list[Window]) -> WindowTotals:
        held = self._merged.get(start)
        if held is not None:
            seen, totals = held
            if len(seen) == len(windows) and all(window is was and window.offset == offset
                                                 for window, (was, offset) in zip(windows, seen, strict=True)):
                return totals
        totals = merge([window.totals for window in windows])
        self._merged[start] = ([(window, window.offset) for window in windows], totals)
        return totals

    def view(self, label: str, merges: list[tuple[float, WindowTotals]]) -> WindowTotals:
        """:func:`merge` of ``merges`` (start, what :meth:`merged` returned), in their order: the rolling view
        ``label``.

        Only the last start of a view takes events between two scrapes (the newest window, the last a
        ledger added), so the merge of all the others is kept while they are the same starts and the same
        merge objects, and the view adds the last to it. That adds the same numbers in the same order as
        merging all of them: a merge starts from zeros, and adding a kept merge to zeros gives it back.
        """
        if len(merges) < 2:
            return merge(totals for _, totals in merges)
        older = merges[:-1]
        held = self._views.get(label)
        if held is None or not _same_merges(held[0], older):
            held = self._views[label] = (older, merge(totals for _, totals in older))
        return merge([held[1], merges[-1][1]])

    def potential(self, label: str, starts: Sequence[float], windows: dict[float, list[Window]],
                  by_start: dict[float, WindowTotals], limit: int) -> list[ProductPotential]:
        """:func:`top_primary_products` of the windows of ``starts`` (oldest first; the view ``label``),
        given ``by_start`` from :meth:`merged`.

        A scrape re-merged the potential of every window of every view; only the newest start's windows
        change between two scrapes. So the sums of the older starts' windows, and which of them are the
        best, are kept while those starts and their merges are the same objects :meth:`merged` returned
        then (none of their windows folded an event, expired or was restored): a scrape combines those
        best with the newest start's products alone, with the same rows as merging everything.
        """
        if not starts:
            return []
        *older, newest = starts
        key = (limit, [(start, by_start[start]) for start in older])
        held = self._older.get(label)
        if held is None or held[0][0] != limit or not _same_merges(held[0][1], key[1]):
            sums = ProductSums(window.totals.primary_products for start in older for window in windows[start])
            held = self._older[label] = (key, sums, [product for product, _ in sums.best(limit)])
        _, sums, best = held
        newer = self._newest
        if newer is None or newer[0] != newest or newer[1] is not by_start[newest]:
            newer = self._newest = (newest, by_start[newest],
                                    ProductSums(window.totals.primary_products for window in windows[newest]))
        return top_primary_products_of_both(sums, best, newer[2], limit)

    def keep_only(self, starts: Iterable[float]) -> None:
        """Forget the starts no ledger holds any more (expired windows)."""
        kept = set(starts)
        self._merged = {start: held for start, held in self._merged.items() if start in kept}


def _same_merges(held: list[tuple[float, WindowTotals]], merges: list[tuple[float, WindowTotals]]) -> bool:
    return len(held) == len(merges) and all(
        start == was_start and totals is was for (start, totals), (was_start, was) in zip(merges, held, strict=True))


def take_snapshot(ledgers: Sequence[PartitionLedger], settings: Settings, dead_letters: dict[str, int],
                  recent: int = 60, dead_letter_errors: dict[str, int] | None = None,
                  markers: Sequence[Marker] = (), merges: WindowMerges | None = None) -> Snapshot:
    """The worker's figures now, from what ``ledgers`` hold, read together; the before/after comparison
    uses the setting's marker, else the latest of ``markers`` (streams/orders/markers.py); ``merges``: the
    per-start merges of the previous call, to reuse."""
    counters = Counters()
    watermarks = [ledger.meta.watermark for ledger in ledgers if ledger.meta.watermark is not None]
    watermark = max(watermarks) if watermarks else None
    windows_by_start: dict[float, list[Window]] = {}
    for ledger in ledgers:
        counters.add(ledger.meta)
        for start, window in ledger.windows.items():
            windows_by_start.setdefault(start, []).append(window)
    kept = merges is not None
    if merges is None:
        merges = WindowMerges()
    else:
        merges.keep_only(windows_by_start)
    by_start = {start: merges.merged(start, windows) for start, windows in windows_by_start.items()}
    size = settings.window_seconds
    views: dict[str, WindowTotals] = {}
    potential: dict[str, list[ProductPotential]] = {}
    newest = window_start(watermark, size) if watermark is not None else None
    for length in settings.rolling_views:
        label = duration_label(length)
        if newest is None:
            views[label] = WindowTotals()
            potential[label] = []
            continue
        first = newest - length + size
        in_view = [(s, totals) for s, totals in by_start.items() if s >= first]
        views[label] = merges.view(label, in_view) if kept else merge(totals for _, totals in in_view)
        if kept:
            potential[label] = merges.potential(label, sorted(s for s in by_start if s >= first), windows_by_start,
                                                by_start, settings.max_label_values)
        else:
            potential[label] = top_primary_products((w.totals.primary_products for s, ws in windows_by_start.items()
                                                     if s >= first for w in ws), settings.max_label_values)
    starts = sorted(by_start)[-recent:]
    used = current_marker(markers, settings.experiment_marker, settings.experiment_marker_time)
    marker_start = window_start(used.at, size) if used is not None else None
    periods: dict[str, WindowTotals] = {}
    if marker_start is not None:
        periods = {
            "before": merge(totals for s, totals in by_start.items() if s < marker_start),
            "after": merge(totals for s, totals in by_start.items() if s >= marker_start),
        }
    return Snapshot(
        partitions=sorted(ledger.partition for ledger in ledgers),
        watermark=watermark,
        counters=counters,
        views=views,
        recent=[(start, by_start[start]) for start in starts],
        windows_held=sum(len(ledger.windows) for ledger in ledgers),
        dead_letters=dead_letters,
        dead_letter_errors=dict(dead_letter_errors or {}),
        partition_counters={ledger.partition: ledger.meta for ledger in ledgers},
        applied_offsets={ledger.partition: ledger.meta.offset for ledger in ledgers},
        periods=periods,
        marker=marker_start,
        marker_used=used,
        markers=list(markers),
        potential=potential,
    )
