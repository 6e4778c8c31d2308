"""streams.orders.snapshot.WindowMerges: a scrape reuses the merges of windows that did not change.

Each test takes a snapshot with merges kept from earlier snapshots and one
without, after a change that must not be missed, and compares what they export.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import orjson
from orders import checked_order

from streams.orders.config import window_config
from streams.orders.contract import Item
from streams.orders.ledger import PartitionLedger
from streams.orders.snapshot import Snapshot, WindowMerges, take_snapshot
from streams.orders.windows import WindowTotals, merge
from streams.settings import Settings

T0 = 1_800_000_000.0  # a window boundary
SETTINGS = Settings(rolling_views=(300.0, 1800.0), retention_seconds=1800.0, pair_horizons=(), window_seconds=60.0,
                    grace_seconds=600.0)
ITEMS = [Item(f"p{n}", category, 1.5 + n, 1 + n % 3) for n, category in enumerate(["books", "toys", "garden"] * 3)]


def exported(snapshot: Snapshot) -> tuple[object, ...]:
    views = {label: asdict(totals) for label, totals in snapshot.views.items()}
    recent = [(start, asdict(totals)) for start, totals in snapshot.recent]
    return views, recent, asdict(snapshot.counters), snapshot.potential


class Orders:
    """Seeded orders spread over the partitions, each event time a little after the last."""

    def __init__(self, settings: Settings = SETTINGS, partitions: int = 2, seed: int = 7) -> None:
        self.settings = settings
        self.random = random.Random(seed)
        self.ledgers = [PartitionLedger(p, window_config(settings)) for p in range(partitions)]
        self.offsets = [0] * partitions
        self.clock = T0
        self.tables: list[dict[str, Any]] = [{} for _ in range(partitions)]  # each changelog, as flushes left it

    def flush(self) -> None:
        for ledger, table in zip(self.ledgers, self.tables, strict=True):
            changes = ledger.take_changes()
            if changes is None:
                continue
            table.update(orjson.loads(orjson.dumps(changes.writes)))
            table[changes.meta[0]] = orjson.loads(orjson.dumps(changes.meta[1]))
            for key in changes.deletes:
                table.pop(key, None)

    def restored(self) -> list[PartitionLedger]:
        config = window_config(self.settings)
        return [PartitionLedger.restore(p, config, table.items()) for p, table in enumerate(self.tables)]

    def apply(self, count: int, step: float = 7.0, back: float = 0.0) -> None:
        for _ in range(count):
            self.clock += step
            partition = self.random.randrange(2)
            lines = self.random.sample(ITEMS, self.random.randint(1, 3))
            order = checked_order(*lines, order_id=f"o{sum(self.offsets)}", occurred_at=self.clock - back)
            self.ledgers[partition].apply(self.offsets[partition], order, self.clock + 1)
            self.offsets[partition] += 1


def test_kept_merges_export_what_fresh_ones_do_as_events_arrive_in_old_and_new_windows() -> None:
    orders, merges = Orders(), WindowMerges()
    for _ in range(6):
        orders.apply(40)
        assert exported(take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)) == \
            exported(take_snapshot(orders.ledgers, SETTINGS, {}))
        # An event into an older window still open (within the lateness): that start's merge must change.
        orders.apply(1, step=0.0, back=300.0)
        assert exported(take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)) == \
            exported(take_snapshot(orders.ledgers, SETTINGS, {}))


def test_kept_merges_follow_expired_windows_and_restored_ledgers() -> None:
    orders, merges = Orders(), WindowMerges()
    orders.apply(100)
    before = take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)
    orders.apply(300, step=20.0)  # well past the retention: the first windows expire at the flush
    orders.flush()
    after = take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)
    assert exported(after) == exported(take_snapshot(orders.ledgers, SETTINGS, {}))
    assert after.recent[0][0] > before.recent[0][0]  # the oldest windows are gone
    # A restored ledger holds new window objects with the same offsets: merged afresh, and equal.
    restored = orders.restored()
    assert all(r.windows[start] is not ledger.windows[start] for r, ledger in zip(restored, orders.ledgers, strict=True)
               for start in r.windows)
    assert exported(take_snapshot(restored, SETTINGS, {}, merges=merges)) == \
        exported(take_snapshot(orders.ledgers, SETTINGS, {}))


def test_a_partition_gone_is_left_out_of_the_kept_merges() -> None:
    orders, merges = Orders(), WindowMerges()
    orders.apply(80)
    take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)
    one = orders.ledgers[:1]
    assert exported(take_snapshot(one, SETTINGS, {}, merges=merges)) == exported(take_snapshot(one, SETTINGS, {}))


def totals(revenue: float, category: str) -> WindowTotals:
    return WindowTotals(orders=1, revenue=revenue, by_category={category: [1, 0]},
                        variant_sums={"a": [1.0, 0.0, revenue, revenue * revenue, 1.0, 1.0]})


def test_a_kept_view_adds_the_same_floats_in_the_same_order_as_a_fresh_merge() -> None:
    # 1e16 + 1.0 + 1.0 - 1e16 depends on the order of the additions: the view must keep the merges' order.
    merges = WindowMerges()
    windows = [(180.0, totals(1.0, "c")), (0.0, totals(1e16, "a")), (60.0, totals(1.0, "b")),
               (120.0, totals(-1e16, "a"))]
    for last in (totals(0.5, "d"), totals(0.25, "e"), totals(3.0, "a")):  # the newest window takes events
        shown = [*windows, (240.0, last)]
        assert asdict(merges.view("5m", shown)) == asdict(merge(t for _, t in shown))
    windows[1] = (0.0, totals(2e16, "a"))  # an older start merged anew (a late event): not the kept sum
    shown = [*windows, (240.0, last)]
    assert asdict(merges.view("5m", shown)) == asdict(merge(t for _, t in shown))
    assert asdict(merges.view("5m", shown[:1])) == asdict(merge(t for _, t in shown[:1]))
