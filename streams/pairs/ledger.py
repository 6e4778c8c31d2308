"""The pair state of one pairs-topic partition: counts per horizon bucket, read together in views.

Per (horizon, bucket) a :class:`PairBucket` keeps the exact order count N and
two Space-Saving summaries (products, and pairs keyed ``A<US>B``). They count
exactly until the worker's memory budget (streams.pairs.budget) gives them a
capacity; from then on a count may be above the truth by at most the summary's
floor, and its guaranteed part (count - error) is never above it. A bucket
applies each (source partition, outbox sequence, part) once, in order: a
resent outbox (after a crash) or a duplicate part counts nothing. A
:class:`HorizonView` reads the newest buckets of a horizon together and ranks a
product's companions by guaranteed count.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.orders.facts import PAIR_SEPARATOR
from streams.pairs.recommendations import Companion, confidence, lift
from streams.pairs.sketch import SpaceSaving

FLUSHED = "flushed"  # the key that closes a flush of a pairs partition

BucketKey = tuple[str, float]  # (horizon label, bucket start)


@dataclass(slots=True)
class PairBucket:
    products: SpaceSaving
    pairs: SpaceSaving
    orders: int = 0
    # source partition -> [outbox sequence, part] of the newest message applied
    applied: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def empty(cls, product_capacity: int | None = None, pair_capacity: int | None = None) -> PairBucket:
        """A bucket whose summaries count exactly until given a capacity (None: none yet)."""
        return cls(SpaceSaving(product_capacity), SpaceSaving(pair_capacity))

    @property
    def exact(self) -> bool:
        return self.products.is_exact and self.pairs.is_exact

    def apply(self, message: Mapping[str, Any]) -> bool:
        """Fold one outbox message in, once; False when its sequence was applied before."""
        source = str(message["source"])
        position = [message["sequence"], message.get("part", 0)]
        last = self.applied.get(source)
        if last is not None and position <= _position(last):
            return False
        self.applied[source] = position
        self.orders += message["orders"]
        self.products.add_many(message["products"].items())
        self.pairs.add_many([
            (prefix + companion, count)
            for product, companions in message["pairs"].items()
            for prefix in (product + PAIR_SEPARATOR,)
            for companion, count in companions.items()
        ])
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"orders": self.orders, "applied": self.applied, "products": self.products.to_dict(),
                "pairs": self.pairs.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairBucket:
        return cls(SpaceSaving.from_dict(data["products"]), SpaceSaving.from_dict(data["pairs"]),
                   int(data["orders"]), {source: _position(last) for source, last in data["applied"].items()})


def _position(applied: int | list[int]) -> list[int]:
    """[sequence, part]; state written before messages had parts holds the sequence alone, applied whole."""
    return [applied, 2**62] if isinstance(applied, int) else list(applied)


@dataclass(slots=True)
class HorizonView:
    """The buckets of one horizon read together: N, n_A and guaranteed pair counts.

    A pair's guaranteed count over the horizon is the sum of its guaranteed
    counts per bucket (0 where a bucket does not hold it): never above the
    truth, and below it by at most :attr:`error_bound`, the sum of the pair
    summaries' floors. That is also the most a pair the view does not hold can
    have. n_A sums the product summaries' estimates: exact while the view is,
    else never below the truth, so that confidence and lift from a guaranteed
    count are never above theirs.
    """

    horizon: str
    buckets: list[PairBucket]
    _orders_with: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # n_A looked up

    @property
    def orders(self) -> int:
        """N: every order of the horizon (always exact)."""
        return sum(bucket.orders for bucket in self.buckets)

    @property
    def exact(self) -> bool:
        return all(bucket.exact for bucket in self.buckets)

    @property
    def error_bound(self) -> int:
        """The most a guaranteed pair count is below the truth; 0 while exact."""
        return sum(bucket.pairs.floor for bucket in self.buckets)

    @property
    def product_error_bound(self) -> int:
        """The most n_A is above the truth; 0 while the product summaries are exact."""
        return sum(bucket.products.floor for bucket in self.buckets)

    def orders_with(self, product: str) -> int:
        """n_A: orders with ``product`` (an upper bound once the product summaries drop items)."""
        known = self._orders_with.get(product)
        if known is None:
            known = self._orders_with[product] = sum(bucket.products.estimate(product) for bucket in self.buckets)
        return known

    def guaranteed_pairs(self) -> Counter[str]:
        """Every pair any bucket holds (``A<US>B``), with its guaranteed count over the horizon."""
        total: Counter[str] = Counter()
        for bucket in self.buckets:
            total.update(bucket.pairs.guaranteed_counts())
        return total

    def companions(self, min_support: int) -> dict[str, dict[str, int]]:
        """product -> {companion: guaranteed count}, for the pairs with at least ``min_support`` orders."""
        grouped: dict[str, dict[str, int]] = {}
        for key, count in self.guaranteed_pairs().items():
            if count >= min_support:
                product, companion = key.split(PAIR_SEPARATOR, 1)
                of_product = grouped.get(product)
                if of_product is None:
                    grouped[product] = {companion: count}
                else:
                    of_product[companion] = count
        return grouped

    def companions_of(self, product: str) -> dict[str, int]:
        """One product's companions with their guaranteed counts (reads every pair of the view)."""
        prefix = product + PAIR_SEPARATOR
        found: Counter[str] = Counter()
        for bucket in self.buckets:
            for key, count in bucket.pairs.guaranteed_counts(prefix).items():
                found[key[len(prefix):]] += count
        return dict(found)

    def ranked(self, product: str, companions: Mapping[str, int], k: int, min_support: int) -> list[Companion]:
        """Top ``k`` companions of ``product`` with at least ``min_support`` guaranteed orders together.

        Sorted by guaranteed count, then lift, then id; confidence and lift are
        computed from the guaranteed count (README: error bound).
        """
        n_a = self.orders_with(product)
        n = self.orders
        ranked = [
            Companion(companion, count, confidence(count, n_a), lift(count, n_a, self.orders_with(companion), n))
            for companion, count in companions.items() if count >= min_support
        ]
        ranked.sort(key=lambda c: (-c.count, -c.lift, c.product_id))
        return ranked[:k]


def top_pairs(grouped: Mapping[str, Mapping[str, int]], limit: int) -> list[tuple[str, str, int]]:
    """The ``limit`` largest (a, b, count) with a < b, by count descending, then a, then b."""
    return heapq.nsmallest(
        limit,
        ((product, companion, count) for product, companions in grouped.items()
         for companion, count in companions.items() if product < companion),
        key=lambda row: (-row[2], row[0], row[1]),
    )


class PairLedger:
    """The pair state of one pairs-topic partition: buckets per horizon.

    ``product_capacity`` and ``pair_capacity`` (deprecated settings) cap every
    bucket's summaries from the start; None leaves them to the memory budget.
    """

    def __init__(self, partition: int, horizons: Mapping[str, float], slots: int,
                 product_capacity: int | None = None, pair_capacity: int | None = None) -> None:
        self.partition = partition
        self.horizons = dict(horizons)
        self.slots = slots
        self.product_capacity = product_capacity
        self.pair_capacity = pair_capacity
        self.buckets: dict[BucketKey, PairBucket] = {}
        self._dirty: set[BucketKey] = set()

    def apply(self, message: Mapping[str, Any]) -> bool:
        key = (str(message["horizon"]), float(message["bucket"]))
        if key[0] not in self.horizons:
            return False
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = PairBucket.empty(self.product_capacity, self.pair_capacity)
        applied = bucket.apply(message)
        if applied:
            self._dirty.add(key)
        return applied

    def summaries(self) -> Iterator[tuple[BucketKey, SpaceSaving, int | None]]:
        """(bucket key, summary, its cap from the settings) of every summary: what the memory budget shares."""
        for key, bucket in self.buckets.items():
            yield key, bucket.products, self.product_capacity
            yield key, bucket.pairs, self.pair_capacity

    def mark_changed(self, key: BucketKey) -> None:
        """The bucket is written again at the next flush (after the budget dropped some of its items)."""
        if key in self.buckets:
            self._dirty.add(key)

    def take_changes(self) -> tuple[dict[str, bytes | dict[str, Any]], list[str]]:
        writes: dict[str, Any] = {}
        for key in self._dirty:
            bucket = self.buckets.get(key)
            if bucket is not None:
                writes[self.table_key(key)] = bucket.to_dict()
        self._dirty = set()
        deletes = [self.table_key(key) for key in self._expire()]
        return writes, deletes

    def _expire(self) -> list[BucketKey]:
        expired = []
        for horizon, seconds in self.horizons.items():
            starts = [start for (h, start) in self.buckets if h == horizon]
            if not starts:
                continue
            oldest = max(starts) - seconds
            expired += [(horizon, start) for start in starts if start <= oldest]
        for key in expired:
            del self.buckets[key]
        return expired

    def table_key(self, key: BucketKey) -> str:
        start = key[1]
        return f"{self.partition}/{key[0]}/{int(start) if start.is_integer() else repr(start)}"

    def view(self, horizon: str) -> HorizonView:
        """The buckets of ``horizon`` within its span of the newest one, read together (nothing is copied)."""
        starts = sorted(start for (h, start) in self.buckets if h == horizon)
        if not starts:
            return HorizonView(horizon, [])
        oldest = starts[-1] - self.horizons[horizon]
        return HorizonView(horizon, [self.buckets[(horizon, start)] for start in starts if start > oldest])

    @classmethod
    def restore(cls, partition: int, horizons: Mapping[str, float], slots: int, product_capacity: int | None,
                pair_capacity: int | None, items: Iterable[tuple[str, Any]]) -> PairLedger:
        """The ledger as its changelog holds it, in the current form or the one before the memory budget."""
        ledger = cls(partition, horizons, slots, product_capacity, pair_capacity)
        for key, value in items:
            parts = key.split("/")
            if len(parts) == 3:  # <partition>/<horizon>/<bucket start>; not the flush marker
                ledger.buckets[(parts[1], float(parts[2]))] = PairBucket.from_dict(value)
        return ledger
