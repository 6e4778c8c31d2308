"""Space-Saving: the most frequent items of a stream in bounded memory (Metwally et al.).

A summary of capacity m counts exactly while it holds fewer than m distinct
items; beyond that it keeps the m most frequent, each count at most M/m above
the truth (M = everything counted), never below. The pairs ledger keeps one
for products and one for pairs per time bucket.

Nothing here knows about Kafka, Faust or Prometheus; ``to_dict``/``from_dict``
give the JSON form a changelog stores.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeGuard


class SpaceSaving:
    """Space-Saving heavy-hitter summary (Metwally, Agrawal, El Abbadi 2005) with ``capacity`` counters.

    Each monitored item has a count (its estimate) and an error (how much of the
    count may belong to items it replaced). With N = :attr:`total`, the sum of
    all counts added, and m = :attr:`capacity`, for every item x:

    * ``true(x) <= estimate(x) <= true(x) + N/m``;
    * ``guaranteed(x) = estimate(x) - error(x) <= true(x)``, and ``error(x) <= N/m``;
    * every item with ``true(x) > N/m`` is monitored (so it appears in :meth:`top`).

    Until a counter is first evicted by :meth:`add` or dropped by :meth:`merge`
    (so at least while fewer than m items were ever seen) the summary is exact:
    every error is 0 and unseen items estimate 0. After that an unmonitored item
    estimates the smallest count, which bounds what it can have had. The bounds
    survive :meth:`merge`.

    Counts live in a dict. Every monitored item is also filed under one *level*,
    a count it had (``_levels``: count -> items); as counts only grow, the
    level may lag behind the item's count, and an increment costs no more than
    the dict update. Only finding the minimum (for an eviction, or the estimate
    of an unmonitored item) looks at the lowest level: sorted once when it
    becomes the lowest, its smallest item is the minimum if its count is still
    that level, else it is refiled under its count (paid for by an earlier
    increment). When the lowest level runs empty the next one (a small heap of
    level numbers) takes over. An evicted item's successor is filed above the
    lowest level, so an eviction is a few dict and list operations: with most
    adds evicting, this beats a heap of (count, item) keys, whose every push and
    pop compares tuples of equal counts by their items. Ties for the minimum go
    to the smaller item, so state restored by :meth:`from_dict` evicts exactly
    as the original.
    """

    __slots__ = ("_capacity", "_counts", "_errors", "_exact", "_level_heap", "_levels", "_sorted_level", "_total")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"SpaceSaving capacity must be a positive integer, got {capacity!r}")
        self._capacity = capacity
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._levels: dict[int, list[str]] = {}  # count -> items filed there (at most their count)
        self._level_heap: list[int] = []  # the keys of _levels
        self._sorted_level: int | None = None  # the level whose items are sorted, descending
        self._total = 0
        self._exact = True

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def total(self) -> int:
        """N: the sum of every count ever added (and merged in)."""
        return self._total

    @property
    def is_exact(self) -> bool:
        """True while no counter has been evicted or dropped: every estimate is the true count."""
        return self._exact

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, item: object) -> bool:
        return item in self._counts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpaceSaving):
            return NotImplemented
        return (
            self._capacity == other._capacity
            and self._total == other._total
            and self._exact == other._exact
            and self._counts == other._counts
            and self._errors == other._errors
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SpaceSaving(capacity={self._capacity}, total={self._total}, top={self.top(3)!r})"

    def add(self, item: str, count: int = 1) -> None:
        """Count ``count`` more occurrences of ``item``."""
        self.add_many(((item, count),))

    def add_many(self, counts: Iterable[tuple[str, int]]) -> None:
        """:meth:`add` of each (item, count) in turn: the state of adding them one by one, in one loop.

        The form for a message of many counts: it saves a method call and the
        attribute lookups per item, which dominate when most adds evict.
        """
        pending = iter(counts)
        if len(self._counts) < self._capacity:
            self._fill(pending)
        monitored = self._counts
        errors = self._errors
        levels = self._levels
        total = self._total
        # The lowest level, sorted: its last item is the minimum unless that one has grown.
        floor = 0
        floor_items: list[str] = []
        evicting = False
        try:
            for item, count in pending:  # every counter is taken: a new item evicts the minimum
                if count < 1:
                    raise _bad_count(item, count)
                total += count
                current = monitored.get(item)
                if current is not None:
                    monitored[item] = current + count  # its level lags: see _minimum
                    continue
                if not floor_items or monitored[floor_items[-1]] != floor:
                    floor, _ = self._minimum()
                    floor_items = levels[floor]
                evicted = floor_items.pop()
                del monitored[evicted]
                del errors[evicted]
                monitored[item] = raised = floor + count
                errors[item] = floor
                above = levels.get(raised)  # above the lowest level, which stays sorted
                if above is None:
                    levels[raised] = [item]
                    heapq.heappush(self._level_heap, raised)
                else:
                    above.append(item)
                evicting = True
        finally:
            # As far as the adds got, should an item fail (add() would have got as far).
            self._total = total
            if evicting:
                self._exact = False

    def _fill(self, pending: Iterator[tuple[str, int]]) -> None:
        """Add from ``pending`` while a counter is free: a new item takes one, with no error."""
        monitored = self._counts
        for item, count in pending:
            if count < 1:
                raise _bad_count(item, count)
            self._total += count
            current = monitored.get(item)
            if current is not None:
                monitored[item] = current + count
                continue
            monitored[item] = count
            self._errors[item] = 0
            self._file(item, count)
            if len(monitored) == self._capacity:
                return

    def _file(self, item: str, level: int) -> None:
        items = self._levels.get(level)
        if items is None:
            self._levels[level] = [item]
            heapq.heappush(self._level_heap, level)
        else:
            items.append(item)
            if level == self._sorted_level:
                self._sorted_level = None

    def _minimum(self) -> tuple[int, str]:
        """The monitored (count, item) with the smallest count, ties to the smaller item.

        It is the last item of the lowest level (sorted), once items whose count
        grew past their level are refiled under their count.
        """
        counts = self._counts
        levels = self._levels
        level_heap = self._level_heap
        while True:
            level = level_heap[0]
            items = levels[level]
            if level != self._sorted_level:
                items.sort(reverse=True)
                self._sorted_level = level
            while items:
                item = items[-1]
                current = counts[item]
                if current == level:
                    return level, item
                items.pop()
                self._file(item, current)
            heapq.heappop(level_heap)
            del levels[level]
            self._sorted_level = None

    @property
    def min_count(self) -> int:
        """The smallest monitored count; 0 when empty."""
        return self._minimum()[0] if self._counts else 0

    def _unmonitored_bound(self) -> int:
        # What an item that is not monitored can have had at most.
        return 0 if self._exact else self.min_count

    def estimate(self, item: str) -> int:
        """Upper bound of the item's true count (exact while :attr:`is_exact`)."""
        count = self._counts.get(item)
        return count if count is not None else self._unmonitored_bound()

    def error(self, item: str) -> int:
        """How much :meth:`estimate` may exceed the true count (at most N/m)."""
        error = self._errors.get(item)
        return error if error is not None else self._unmonitored_bound()

    def guaranteed(self, item: str) -> int:
        """Lower bound of the item's true count: estimate - error."""
        return self.estimate(item) - self.error(item)

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` largest (item, estimate), by estimate descending then item ascending."""
        if k < 0:
            raise ValueError(f"top(k) needs k >= 0, got {k!r}")
        return heapq.nsmallest(k, self._counts.items(), key=_by_count_then_item)

    def entries(self) -> list[tuple[str, int, int]]:
        """Every monitored (item, estimate, error), in :meth:`top` order."""
        return [(item, count, self._errors[item]) for item, count in self.top(len(self._counts))]

    def merge(self, other: SpaceSaving) -> None:
        """Fold ``other`` (same capacity) into this summary, keeping the documented bounds against the union.

        Mergeable summaries (Agarwal et al. 2012) in the combine-and-prune form
        for Space-Saving (Cafaro et al. 2016): for every item of either summary,
        add the two estimates and the two errors, an item missing from one side
        counting as that side's bound for unmonitored items (its smallest count,
        or 0 while exact), so estimates stay upper bounds; then keep the m
        largest (ties to the smaller item). Per-side overestimation is at most
        N_i/m, so at most N/m in total; and the kept estimates sum to at most N,
        so the new smallest count is at most N/m.
        """
        if other._capacity != self._capacity:
            raise ValueError(
                f"cannot merge SpaceSaving summaries of capacity {self._capacity} and {other._capacity}:"
                " build every summary of one stream with the same capacity"
            )
        mine_bound = self._unmonitored_bound()
        their_bound = other._unmonitored_bound()
        merged: dict[str, tuple[int, int]] = {}
        for item in self._counts.keys() | other._counts.keys():
            merged[item] = (
                self._counts.get(item, mine_bound) + other._counts.get(item, their_bound),
                self._errors.get(item, mine_bound) + other._errors.get(item, their_bound),
            )
        kept = heapq.nsmallest(self._capacity, merged.items(), key=lambda entry: (-entry[1][0], entry[0]))
        self._exact = self._exact and other._exact and len(kept) == len(merged)
        self._total += other._total
        self._load((item, count, error) for item, (count, error) in kept)

    def _load(self, entries: Iterable[tuple[str, int, int]]) -> None:
        self._counts = {}
        self._errors = {}
        for item, count, error in entries:
            self._counts[item] = count
            self._errors[item] = error
        self._levels = {}
        for item, count in self._counts.items():
            self._levels.setdefault(count, []).append(item)
        self._level_heap = list(self._levels)
        heapq.heapify(self._level_heap)
        self._sorted_level = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state: capacity, total, exact, and [item, count, error] in :meth:`top` order."""
        return {
            "capacity": self._capacity,
            "total": self._total,
            "exact": self._exact,
            "counters": [[item, count, error] for item, count, error in self.entries()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceSaving:
        """Rebuild a summary from :meth:`to_dict`; ValueError naming the bad field otherwise."""
        summary = cls(_field_int(data, "capacity", "SpaceSaving", minimum=1))
        summary._total = _field_int(data, "total", "SpaceSaving", minimum=0)
        exact = data.get("exact")
        _require(isinstance(exact, bool), f"SpaceSaving state: 'exact' must be true or false, got {exact!r}")
        summary._exact = bool(exact)
        counters = data.get("counters")
        if not isinstance(counters, list) or len(counters) > summary._capacity:
            raise ValueError(
                f"SpaceSaving state: 'counters' must be a list of at most 'capacity' ({summary._capacity})"
                f" entries, got {counters!r}"
            )
        entries: list[tuple[str, int, int]] = []
        for entry in counters:
            if not (
                isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[0], str)
                and _is_int(entry[1])
                and _is_int(entry[2])
                and 0 <= entry[2] <= entry[1]
                and entry[1] >= 1
            ):
                raise ValueError(
                    f"SpaceSaving state: each counter must be [item, count >= 1, 0 <= error <= count], got {entry!r}"
                )
            entries.append((entry[0], entry[1], entry[2]))
        if len({item for item, _, _ in entries}) != len(entries):
            raise ValueError("SpaceSaving state: 'counters' lists an item twice")
        counted = sum(count for _, count, _ in entries)
        if counted > summary._total or (exact and counted != summary._total):
            raise ValueError(
                f"SpaceSaving state: the counts add up to {counted}, which does not fit 'total'"
                f" {summary._total} (more than it, or different while 'exact')"
            )
        summary._load(entries)
        return summary


def _bad_count(item: str, count: int) -> ValueError:
    return ValueError(f"SpaceSaving.add count must be at least 1, got {count!r} for item {item!r}")


def _by_count_then_item(entry: tuple[str, int]) -> tuple[int, str]:
    return -entry[1], entry[0]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    # Stored state and messages that do not fit are a ValueError whatever the
    # reason, so a caller has one exception to route to its dead letters.
    if not ok:
        raise ValueError(message)


def _field_int(data: Mapping[str, Any], name: str, what: str, *, minimum: int) -> int:
    value = data.get(name)
    if _is_int(value) and value >= minimum:
        return value
    raise ValueError(f"{what}: {name!r} must be an integer >= {minimum}, got {value!r}")
