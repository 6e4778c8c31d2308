"""The pair state of one pairs-topic partition: counts per horizon bucket, merged into views.

Per (horizon, bucket) a :class:`PairBucket` keeps the exact order count N and
two Space-Saving summaries with fixed capacities (products, and pairs keyed
``A<US>B``), so memory is bounded whatever the catalogue. A bucket applies
each (source partition, outbox sequence, part) once, in order: a resent
outbox (after a crash) or a duplicate part counts nothing. A
:class:`HorizonView` merges the newest buckets of a horizon and ranks a
product's companions.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.orders.facts import PAIR_SEPARATOR
from streams.pairs.recommendations import Companion, confidence, lift
from streams.pairs.sketch import SpaceSaving

FLUSHED = "flushed"  # the key that closes a flush of a pairs partition


@dataclass(slots=True)
class PairBucket:
    products: SpaceSaving
    pairs: SpaceSaving
    orders: int = 0
    # source partition -> [outbox sequence, part] of the newest message applied
    applied: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def empty(cls, product_capacity: int, pair_capacity: int) -> PairBucket:
        return cls(SpaceSaving(product_capacity), SpaceSaving(pair_capacity))

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
    """The buckets of one horizon merged: N, product counts and pair counts."""

    horizon: str
    orders: int
    products: SpaceSaving
    pairs: SpaceSaving

    def companions(self) -> dict[str, list[tuple[str, int, int]]]:
        """product -> [(companion, estimate, error)] from the pair summary."""
        grouped: dict[str, list[tuple[str, int, int]]] = {}
        for key, estimate, error in self.pairs.entries():
            product, companion = key.split(PAIR_SEPARATOR, 1)
            grouped.setdefault(product, []).append((companion, estimate, error))
        return grouped

    def ranked(self, product: str, entries: Iterable[tuple[str, int, int]], k: int,
               min_support: int) -> list[Companion]:
        """Top ``k`` companions of ``product`` with at least ``min_support`` orders together.

        Sorted by count, then lift, then id. Counts are Space-Saving estimates
        capped at n_A (a co-occurrence cannot exceed the orders with A); exact
        while the summaries hold every item (see README: memory bound).
        """
        n_a = self.products.estimate(product)
        ranked = []
        for companion, estimate, error in entries:
            count = min(estimate, n_a)
            if count < min_support:
                continue
            n_b = self.products.estimate(companion)
            ranked.append(Companion(companion, count, confidence(count, n_a), lift(count, n_a, n_b, self.orders),
                                    min(error, count)))
        ranked.sort(key=lambda c: (-c.count, -c.lift, c.product_id))
        return ranked[:k]


class PairLedger:
    """The pair state of one pairs-topic partition: buckets per horizon."""

    def __init__(self, partition: int, horizons: Mapping[str, float], slots: int, product_capacity: int,
                 pair_capacity: int) -> None:
        self.partition = partition
        self.horizons = dict(horizons)
        self.slots = slots
        self.product_capacity = product_capacity
        self.pair_capacity = pair_capacity
        self.buckets: dict[tuple[str, float], PairBucket] = {}
        self._dirty: set[tuple[str, float]] = set()

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

    def take_changes(self) -> tuple[dict[str, bytes | dict[str, Any]], list[str]]:
        writes: dict[str, Any] = {}
        for key in self._dirty:
            bucket = self.buckets.get(key)
            if bucket is not None:
                writes[self.table_key(key)] = bucket.to_dict()
        self._dirty = set()
        deletes = [self.table_key(key) for key in self._expire()]
        return writes, deletes

    def _expire(self) -> list[tuple[str, float]]:
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

    def table_key(self, key: tuple[str, float]) -> str:
        start = key[1]
        return f"{self.partition}/{key[0]}/{int(start) if start.is_integer() else repr(start)}"

    def view(self, horizon: str) -> HorizonView:
        """The newest ``slots`` buckets of ``horizon`` merged."""
        starts = sorted(start for (h, start) in self.buckets if h == horizon)
        products = SpaceSaving(self.product_capacity)
        pairs = SpaceSaving(self.pair_capacity)
        orders = 0
        if starts:
            oldest = starts[-1] - self.horizons[horizon]
            for start in starts:
                if start > oldest:
                    bucket = self.buckets[(horizon, start)]
                    orders += bucket.orders
                    products.merge(bucket.products)
                    pairs.merge(bucket.pairs)
        return HorizonView(horizon, orders, products, pairs)

    @classmethod
    def restore(cls, partition: int, horizons: Mapping[str, float], slots: int, product_capacity: int,
                pair_capacity: int, items: Iterable[tuple[str, Any]]) -> PairLedger:
        ledger = cls(partition, horizons, slots, product_capacity, pair_capacity)
        for key, value in items:
            parts = key.split("/")
            if len(parts) == 3:  # <partition>/<horizon>/<bucket start>; not the flush marker
                ledger.buckets[(parts[1], float(parts[2]))] = PairBucket.from_dict(value)
        return ledger
