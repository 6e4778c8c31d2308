"""What the worker knows right now, derived from the ledgers of its partitions.

Metrics, the JSON summary and the live page all read a :class:`Snapshot`;
it is rebuilt on demand so nothing exported can drift from the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.orders.detection import Episode, SegmentReport
from streams.orders.ledger import Counters, PartitionLedger
from streams.orders.windows import WindowTotals, merge, result, top_pairs, window_start
from streams.settings import Settings, duration_label


@dataclass(slots=True)
class Snapshot:
    partitions: list[int]
    watermark: float | None
    counters: Counters
    views: dict[str, WindowTotals]  # rolling view label ("5m") -> merged totals
    recent: list[tuple[float, WindowTotals]]  # newest windows, oldest first
    windows_held: int
    dead_letters: dict[str, int]
    lag: dict[int, int] = field(default_factory=dict)
    dead_letter_errors: dict[str, int] = field(default_factory=dict)
    # Each owned partition's own cumulative counters (the metrics export them per partition).
    partition_counters: dict[int, Counters] = field(default_factory=dict)
    # Highest orders-topic offset applied per owned partition: progress that a stale
    # highwater cannot hide (a paused partition's lag stands still; this does too).
    applied_offsets: dict[int, int] = field(default_factory=dict)
    # When this worker took each owned partition (an opaque label value; "" when unknown).
    assignments: dict[int, str] = field(default_factory=dict)
    # Drop detection (streams/orders/detection.py): per segment, the alarms so far, and how far it tested.
    detection: list[SegmentReport] = field(default_factory=list)
    drop_episodes: list[Episode] = field(default_factory=list)
    detected_until: float | None = None
    detection_skipped: int = 0

    def detection_json(self) -> dict[str, Any]:
        return {"detected_until": self.detected_until, "skipped": self.detection_skipped,
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


def take_snapshot(ledgers: Sequence[PartitionLedger], settings: Settings, dead_letters: dict[str, int],
                  recent: int = 60, dead_letter_errors: dict[str, int] | None = None) -> Snapshot:
    counters = Counters()
    watermarks = [ledger.meta.watermark for ledger in ledgers if ledger.meta.watermark is not None]
    watermark = max(watermarks) if watermarks else None
    by_start: dict[float, list[WindowTotals]] = {}
    for ledger in ledgers:
        counters.add(ledger.meta)
        for start, window in ledger.windows.items():
            by_start.setdefault(start, []).append(window.totals)
    size = settings.window_seconds
    views: dict[str, WindowTotals] = {}
    newest = window_start(watermark, size) if watermark is not None else None
    for length in settings.rolling_views:
        if newest is None:
            views[duration_label(length)] = WindowTotals()
            continue
        first = newest - length + size
        views[duration_label(length)] = merge(t for s, ts in by_start.items() if s >= first for t in ts)
    starts = sorted(by_start)[-recent:]
    return Snapshot(
        partitions=sorted(ledger.partition for ledger in ledgers),
        watermark=watermark,
        counters=counters,
        views=views,
        recent=[(start, merge(by_start[start])) for start in starts],
        windows_held=sum(len(ledger.windows) for ledger in ledgers),
        dead_letters=dead_letters,
        dead_letter_errors=dict(dead_letter_errors or {}),
        partition_counters={ledger.partition: ledger.meta for ledger in ledgers},
        applied_offsets={ledger.partition: ledger.meta.offset for ledger in ledgers},
    )
