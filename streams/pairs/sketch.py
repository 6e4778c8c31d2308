"""Space-Saving: the most frequent items of a stream in bounded memory (Metwally et al.).

A summary counts exactly until it has to drop an item: while its capacity is
unset (the pairs ledger leaves it unset while the memory budget allows), or
while it holds fewer distinct items than its capacity. Beyond that it keeps the
most frequent items, each count never below the truth and above it by at most
the summary's *floor*, the largest count it ever dropped. The pairs ledger
keeps one for products and one for pairs per time bucket.

Nothing here knows about Kafka, Faust or Prometheus; ``to_dict``/``from_dict``
give the JSON form a changelog stores (read back by streams.pairs.sketch_state).
"""

from __future__ import annotations

import heapq
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from streams.pairs.sketch_state import is_int, read_state

_T = TypeVar("_T")

CUT_STEP = 50_000  # tied items a step of a cut sorts (~20 ms on the bench's machine)


class SpaceSaving:
    """Space-Saving heavy-hitter summary (Metwally, Agrawal, El Abbadi 2005).

    Each monitored item has a count (its estimate) and an error (how much of the
    count may belong to items dropped before it came). The *floor* F is the
    largest count ever dropped, by an eviction or :meth:`resize`; 0 until then,
    and the summary is exact while F is 0. For every item x:

    * ``true(x) <= estimate(x) <= true(x) + F``; an unmonitored item estimates F;
    * ``guaranteed(x) = estimate(x) - error(x) <= true(x)``, and ``error(x) <= F``;
    * with N = :attr:`total` and a capacity m that never changed, F <= N/m, so
      every item with ``true(x) > N/m`` is monitored.

    F bounds an unmonitored item because its true count is at most what it had
    when it was last dropped. An item that comes in while counters are free but
    the summary is no longer exact (its capacity was raised) starts, like an
    evicting one, at F plus its count, with error F. Summaries of disjoint
    streams add up: the sums of their guaranteed counts and of their floors
    bound the union (streams.pairs.ledger.HorizonView).

    Counts live in a dict, errors only where they are not 0 (none while exact),
    so an exact summary costs one dict entry per item. Items are filed by
    *level* (``_levels``: count -> items) only from the first eviction on; as
    counts only grow, a level may lag behind its item's count, and an increment
    costs no more than the dict update. Finding the minimum looks at the lowest
    level only: sorted once when it becomes the lowest, its smallest item is the
    minimum if its count is still that level, else it is refiled under its count
    (paid for by an earlier increment). When the lowest level runs empty the
    next one (a small heap of level numbers) takes over. An evicted item's
    successor is filed above the lowest level, so an eviction is a few dict and
    list operations: with most adds evicting, this beats a heap of (count, item)
    keys, whose every push and pop compares tuples of equal counts by their
    items. Ties for the minimum go to the smaller item, so state restored by
    :meth:`from_dict` evicts exactly as the original.
    """

    __slots__ = ("_capacity", "_counts", "_errors", "_floor", "_key_chars", "_level_heap", "_levelled", "_levels",
                 "_sorted_level", "_total")

    def __init__(self, capacity: int | None = None) -> None:
        self._capacity = _checked_capacity(capacity)
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}  # only errors above 0
        self._floor = 0
        self._key_chars = 0  # characters of the monitored items: what their strings take
        self._levels: dict[int, list[str]] = {}  # count -> items filed there (at most their count)
        self._level_heap: list[int] = []  # the keys of _levels
        self._sorted_level: int | None = None  # the level whose items are sorted, descending
        self._levelled = False  # whether _levels files every item (built at the first eviction)
        self._total = 0

    @property
    def capacity(self) -> int | None:
        """The most items monitored; None: no limit (exact whatever comes)."""
        return self._capacity

    @property
    def total(self) -> int:
        """N: the sum of every count ever added."""
        return self._total

    @property
    def floor(self) -> int:
        """F: the largest count ever dropped, which bounds every overcount; 0 while exact."""
        return self._floor

    @property
    def is_exact(self) -> bool:
        """True while no counter has been dropped: every estimate is the true count."""
        return self._floor == 0

    @property
    def key_chars(self) -> int:
        """The characters of the monitored items' names (for memory accounting)."""
        return self._key_chars

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
            and self._floor == other._floor
            and self._counts == other._counts
            and self._errors == other._errors
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"SpaceSaving(capacity={self._capacity}, total={self._total}, floor={self._floor},"
                f" top={self.top(3)!r})")

    def add(self, item: str, count: int = 1) -> None:
        """Count ``count`` more occurrences of ``item``."""
        self.add_many(((item, count),))

    def add_many(self, counts: Iterable[tuple[str, int]]) -> None:
        """:meth:`add` of each (item, count) in turn: the state of adding them one by one, in one loop.

        The form for a message of many counts: it saves a method call and the
        attribute lookups per item, which dominate when most adds evict.
        """
        pending = iter(counts)
        capacity = self._capacity
        if (capacity is None or len(self._counts) < capacity) and not self._fill(pending):
            return  # every item found a counter
        monitored = self._counts
        errors = self._errors
        levels = self._levels
        total = self._total
        key_chars = self._key_chars
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
                errors.pop(evicted, None)
                key_chars += len(item) - len(evicted)
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
            self._key_chars = key_chars
            if evicting:
                # The minimum never decreases, so the last count evicted is the largest.
                self._floor = max(self._floor, floor)

    def _fill(self, pending: Iterator[tuple[str, int]]) -> bool:
        """Add from ``pending`` while a counter is free; True when they ran out first (the rest evicts).

        A new item takes a counter at the floor plus its count, with the floor as
        its error: 0 while the summary is exact.
        """
        monitored = self._counts
        capacity = self._capacity
        floor = self._floor
        levelled = self._levelled
        for item, count in pending:
            if count < 1:
                raise _bad_count(item, count)
            self._total += count
            current = monitored.get(item)
            if current is not None:
                monitored[item] = current + count
                continue
            monitored[item] = floor + count
            self._key_chars += len(item)
            if floor:
                self._errors[item] = floor
            if levelled:
                self._file(item, floor + count)
            if capacity is not None and len(monitored) == capacity:
                return True
        return False

    def _file(self, item: str, level: int) -> None:
        items = self._levels.get(level)
        if items is None:
            self._levels[level] = [item]
            heapq.heappush(self._level_heap, level)
        else:
            items.append(item)
            if level == self._sorted_level:
                self._sorted_level = None

    def _build_levels(self) -> None:
        # In place: add_many holds references to both.
        self._levels.clear()
        for item, count in self._counts.items():
            self._levels.setdefault(count, []).append(item)
        self._level_heap[:] = self._levels
        heapq.heapify(self._level_heap)
        self._sorted_level = None
        self._levelled = True

    def _minimum(self) -> tuple[int, str]:
        """The monitored (count, item) with the smallest count, ties to the smaller item.

        It is the last item of the lowest level (sorted), once items whose count
        grew past their level are refiled under their count.
        """
        if not self._levelled:
            self._build_levels()
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

    def estimate(self, item: str) -> int:
        """Upper bound of the item's true count (exact while :attr:`is_exact`)."""
        count = self._counts.get(item)
        return count if count is not None else self._floor

    def error(self, item: str) -> int:
        """How much :meth:`estimate` may exceed the true count (at most :attr:`floor`)."""
        if item in self._counts:
            return self._errors.get(item, 0)
        return self._floor

    def guaranteed(self, item: str) -> int:
        """Lower bound of the item's true count: estimate - error (0 for an unmonitored item)."""
        return self.estimate(item) - self.error(item)

    def guaranteed_counts(self, prefix: str = "") -> dict[str, int]:
        """The monitored items (those starting with ``prefix``) with their guaranteed counts (at least 1)."""
        if prefix:
            errors = self._errors
            return {item: count - errors.get(item, 0) for item, count in self._counts.items()
                    if item.startswith(prefix)}
        guaranteed = dict(self._counts)
        for item, error in self._errors.items():
            guaranteed[item] -= error
        return guaranteed

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` largest (item, estimate), by estimate descending then item ascending."""
        if k < 0:
            raise ValueError(f"top(k) needs k >= 0, got {k!r}")
        return heapq.nsmallest(k, self._counts.items(), key=_by_count_then_item)

    def entries(self) -> list[tuple[str, int, int]]:
        """Every monitored (item, estimate, error), in :meth:`top` order."""
        errors = self._errors
        return [(item, count, errors.get(item, 0)) for item, count in self.top(len(self._counts))]

    def resize(self, capacity: int | None) -> int:
        """Set the capacity; returns how many items that dropped (their largest count raises the floor).

        A lower capacity than the items held keeps the largest counts, ties to
        the smaller items.
        """
        return finish(self.resize_in_steps(capacity))

    def resize_in_steps(self, capacity: int | None) -> Generator[None, None, int]:
        """:meth:`resize` in steps of at most :data:`CUT_STEP` items each; returns how many items it dropped.

        A cut of a few hundred thousand items in one go held up the event loop
        for ~150 ms: the caller may let it run between two steps. Until the last
        step the summary is as before the cut (reads see it whole); nothing may
        be added to it meanwhile.
        """
        checked = _checked_capacity(capacity)
        counts = self._counts
        if checked is None or len(counts) <= checked:
            self._capacity = checked
            return 0
        ranked = sorted(counts.values(), reverse=True)
        threshold = ranked[checked - 1]  # the smallest count kept
        largest = ranked[checked]  # the largest count dropped
        room_at_threshold = checked - sum(1 for count in ranked[:checked] if count > threshold)
        del ranked
        tied = [item for item, count in counts.items() if count == threshold]
        # The smallest tied items, sorted a slice at a time and merged (Timsort merges two sorted
        # runs in linear time): the tie rule without sorting every tied item in one step.
        smallest: list[str] = []
        for start in range(0, len(tied), CUT_STEP):
            yield
            smallest = sorted(smallest + sorted(tied[start:start + CUT_STEP]))[:room_at_threshold]
        kept_at_threshold = set(smallest)
        del tied, smallest
        yield
        # Rebuilt rather than deleted from: a dict keeps its size when items leave it.
        kept = {item: count for item, count in counts.items()
                if count > threshold or (count == threshold and item in kept_at_threshold)}
        yield
        errors = {item: error for item, error in self._errors.items() if item in kept}
        dropped = len(counts) - len(kept)
        self._capacity = checked
        self._keep(kept, errors, max(self._floor, largest))
        return dropped

    def _load(self, entries: Iterable[tuple[str, int, int]], floor: int) -> None:
        counts: dict[str, int] = {}
        errors: dict[str, int] = {}
        for item, count, error in entries:
            counts[item] = count
            if error:
                errors[item] = error
        self._keep(counts, errors, floor)

    def _keep(self, counts: dict[str, int], errors: dict[str, int], floor: int) -> None:
        """Monitor ``counts`` (errors: those above 0) with floor ``floor``; levels are built at the next eviction."""
        self._counts = counts
        self._errors = errors
        self._key_chars = sum(map(len, counts))
        self._floor = floor
        self._levels = {}
        self._level_heap = []
        self._sorted_level = None
        self._levelled = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state: capacity (null: none), total, floor, counts by item, and the errors that are not 0.

        Plain dicts (copies), in no particular order: a bucket is rewritten on
        every flush, and lists per counter, or sorting, would cost more than
        the writing.
        """
        return {
            "capacity": self._capacity,
            "total": self._total,
            "floor": self._floor,
            "counts": dict(self._counts),
            "errors": dict(self._errors),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceSaving:
        """Rebuild a summary from :meth:`to_dict`, or from the form before floors (streams.pairs.sketch_state)."""
        state = read_state(data)
        summary = cls(state.capacity)
        summary._total = state.total
        summary._load(state.entries, state.floor)
        return summary


def finish(steps: Generator[None, None, _T]) -> _T:
    """Run ``steps`` to the end in one go; what they return."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _checked_capacity(capacity: object) -> int | None:
    if capacity is None or (is_int(capacity) and capacity >= 1):
        return capacity
    raise ValueError(f"SpaceSaving capacity must be a positive integer or None (no limit), got {capacity!r}")


def _bad_count(item: str, count: int) -> ValueError:
    return ValueError(f"SpaceSaving.add count must be at least 1, got {count!r} for item {item!r}")


def _by_count_then_item(entry: tuple[str, int]) -> tuple[int, str]:
    return -entry[1], entry[0]

