"""A scrape's potential from kept sums (WindowMerges.potential) equals the potential merged afresh.

The kept sums of a view's older starts must be dropped whenever one of their
windows changes: a late event into an older window, a window expiring, a
restored ledger, a partition gone. Each seeded run below does those in a random
order and compares, after each step, the kept snapshot's potential with the
uncached one (same rows, same order, same upper bounds and ties).
"""

from __future__ import annotations

import dataclasses
import random
from itertools import pairwise

import pytest
import test_window_merges as window_merges

from streams.orders.potential import PrimaryProducts, ProductSums, top_primary_products, top_primary_products_of_both
from streams.orders.snapshot import WindowMerges, take_snapshot
from streams.settings import Settings

# A capacity well below the products a window sees: evictions, floors and inexact upper bounds.
SETTINGS = Settings(rolling_views=(120.0, 300.0, 600.0), retention_seconds=600.0, pair_horizons=(),
                    window_seconds=60.0, grace_seconds=300.0, potential_capacity=4, max_label_values=3)
PARTITIONS = 3


class Orders(window_merges.Orders):
    """Seeded orders over three partitions, of more primary products than the capacity."""

    def __init__(self, seed: int) -> None:
        super().__init__(SETTINGS, PARTITIONS, seed)

    def restore(self) -> None:
        """New ledgers from the changelogs: new window objects, same offsets."""
        self.flush()
        self.ledgers = self.restored()


STEPS = ("newest", "newest", "newest", "late", "next window", "expire", "restore", "partition gone")


@pytest.mark.parametrize("seed", range(8))
def test_kept_potential_equals_the_potential_merged_afresh_as_windows_change_expire_and_restore(seed: int) -> None:
    orders, merges = Orders(seed), WindowMerges()
    inexact = ties = 0
    for _ in range(40):
        step = orders.random.choice(STEPS)
        ledgers = orders.ledgers
        if step == "newest":
            orders.apply(orders.random.randint(1, 15), step=1.0)
        elif step == "late":  # into an older window still within the grace
            orders.apply(orders.random.randint(1, 3), step=0.0, back=orders.random.choice([60.0, 150.0, 280.0]))
        elif step == "next window":
            orders.apply(orders.random.randint(10, 20), step=4.0)
        elif step == "expire":
            orders.apply(orders.random.randint(50, 100), step=7.0)
            orders.flush()
        elif step == "restore":
            orders.restore()
            ledgers = orders.ledgers
        else:  # a snapshot of some partitions only (one revoked); the next step has them all again
            ledgers = ledgers[:orders.random.randint(1, PARTITIONS - 1)]
        kept = take_snapshot(ledgers, SETTINGS, {}, merges=merges).potential
        fresh = take_snapshot(ledgers, SETTINGS, {}).potential
        assert kept == fresh, step
        for rows in fresh.values():
            inexact += sum(not row.exact for row in rows)
            ties += sum(a.orders == b.orders for a, b in pairwise(rows))
    assert inexact and ties  # the runs reach what could go wrong: floors in the bounds, ties by id


def summaries(rng: random.Random, windows: int) -> list[PrimaryProducts | None]:
    """Small windows over a few products: many equal counts, and some windows evicting."""
    found: list[PrimaryProducts | None] = []
    for _ in range(windows):
        if rng.random() < 0.1:
            found.append(None)  # a window without potential (counted before it was on)
            continue
        window = PrimaryProducts(rng.choice([2, 3, 8]))
        for _ in range(rng.randint(0, 12)):
            window.add(f"p{rng.randrange(10)}", rng.random() < 0.3)
        found.append(window)
    return found


@pytest.mark.parametrize("seed", range(200))
def test_the_best_of_the_older_windows_plus_the_newer_ones_products_are_the_top_of_all(seed: int) -> None:
    rng = random.Random(seed)
    windows = summaries(rng, rng.randint(1, 8))
    split, limit = rng.randint(0, len(windows)), rng.randint(0, 6)
    older = ProductSums(windows[:split])
    best = [product for product, _ in older.best(limit)]
    assert top_primary_products_of_both(older, best, ProductSums(windows[split:]), limit) == \
        top_primary_products(windows, limit)


def test_a_scrape_after_events_into_the_newest_windows_sums_only_those_once(monkeypatch: pytest.MonkeyPatch) -> None:
    orders, merges = Orders(1), WindowMerges()
    orders.apply(120, step=4.0)  # eight windows
    take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)
    orders.apply(10, step=0.0)  # the newest start only
    summed: list[PrimaryProducts] = []
    add = ProductSums.add
    monkeypatch.setattr(ProductSums, "add", lambda self, window: (summed.append(window), add(self, window))[1])
    kept = take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges).potential
    newest = max(orders.ledgers[0].windows)
    assert summed and {id(w) for w in summed} == {
        id(ledger.windows[newest].totals.primary_products) for ledger in orders.ledgers if newest in ledger.windows}
    assert len(summed) == sum(newest in ledger.windows for ledger in orders.ledgers)  # once, for every view
    monkeypatch.undo()
    assert kept == take_snapshot(orders.ledgers, SETTINGS, {}).potential


def test_another_limit_is_not_answered_from_the_kept_best() -> None:
    orders, merges = Orders(2), WindowMerges()
    orders.apply(120, step=4.0)
    take_snapshot(orders.ledgers, SETTINGS, {}, merges=merges)
    wider = dataclasses.replace(SETTINGS, max_label_values=8)
    assert take_snapshot(orders.ledgers, wider, {}, merges=merges).potential == \
        take_snapshot(orders.ledgers, wider, {}).potential
